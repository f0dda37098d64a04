"""dwm_imagination over DDS: a node process with tiny models answers Imagine goals."""
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from rclpy.action import ActionClient
from rclpy.node import Node
from rclpy.qos import QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import Image
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from dexwm_ros.action import Imagine
from dexwm_ros.core.kinematics import HOME_JOINT_POSITIONS, JOINT_NAMES
from dexwm_ros.nodes.conversions import rgb_to_image, seconds_to_duration
from dexwm_ros.nodes.launcher import start, stop
from dexwm_ros.share import share_path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ros"))
from ros_testing import spin_until  # noqa: E402

pytestmark = pytest.mark.ros
RESULT = Imagine.Result
FRAMES, HEIGHT, WIDTH = 9, 32, 48


@pytest.fixture(scope="module")
def server(tiny_base, tiny_weights, tmp_path_factory):
    output = tmp_path_factory.mktemp("videos")
    params = [f"base_model_path:={tiny_base}", f"dwm_weights_path:={tiny_weights}",
              "device:=cpu", "dtype:=float32", "vae_tiling:=false", "torch_threads:=1",
              f"num_frames:={FRAMES}", f"height:={HEIGHT}", f"width:={WIDTH}",
              "num_inference_steps:=2", f"output_dir:={output}"]
    process = start("dwm_imagination", share_path("config", "dwm_imagination.yaml"), params)
    yield process
    stop({"dwm_imagination": process})


@pytest.fixture(scope="module")
def client(server):
    rclpy.init()
    node = Node("test_dwm_imagination")
    node.frames = []
    node.create_subscription(Image, "imagined_frames", node.frames.append,
                             QoSProfile(depth=100, reliability=QoSReliabilityPolicy.RELIABLE))
    node.action = ActionClient(node, Imagine, "imagine")

    def up():
        assert server.poll() is None, "dwm_imagination exited during start-up (output above)"
        return node.action.server_is_ready()

    assert spin_until(node, up, 120), "dwm_imagination did not come up"
    yield node
    node.destroy_node()
    rclpy.shutdown()


def plan(offset: float) -> JointTrajectory:
    start = np.array(HOME_JOINT_POSITIONS)
    end = start.copy()
    end[7:] += offset
    msg = JointTrajectory(joint_names=list(JOINT_NAMES))
    for seconds, q in ((0.0, start), (1.0, end)):
        msg.points.append(JointTrajectoryPoint(positions=q.tolist(),
                                               time_from_start=seconds_to_duration(seconds)))
    return msg


def camera_image() -> Image:
    rgb = np.random.default_rng(0).integers(0, 256, (64, 112, 3), dtype=np.uint8)
    return rgb_to_image(rgb, frame_id="head_camera_optical_frame")


def send(node, goal):
    feedback = []
    future = node.action.send_goal_async(goal, feedback_callback=lambda m: feedback.append(
        m.feedback))
    assert spin_until(node, future.done, 30)
    handle = future.result()
    assert handle.accepted
    return handle, feedback


def test_no_plan_anywhere_is_an_error(client):
    handle, _ = send(client, Imagine.Goal(image=camera_image()))
    future = handle.get_result_async()
    assert spin_until(client, future.done, 30)
    assert future.result().result.error_code == RESULT.ERROR_NO_PLAN


def test_imagine_publishes_frames_and_writes_one_video_per_plan(client):
    client.frames.clear()
    handle, feedback = send(client, Imagine.Goal(plans=[plan(0.3), plan(0.8)],
                                                 image=camera_image(), prompt="push the can"))
    result_future = handle.get_result_async()
    assert spin_until(client, result_future.done, 120)
    result = result_future.result().result
    assert result.error_code == RESULT.ERROR_NONE, result.error_msg
    assert result.num_frames == FRAMES and len(result.video_paths) == 2
    assert all(Path(p).is_file() for p in result.video_paths)
    assert spin_until(client, lambda: len(client.frames) == 2 * FRAMES, 10)
    frame = client.frames[0]
    assert (frame.height, frame.width, frame.encoding) == (HEIGHT, WIDTH, "rgb8")
    assert frame.header.frame_id == "head_camera_optical_frame"
    assert [(f.step, f.total_steps) for f in feedback] == [(1, 2), (2, 2)]


def test_an_empty_goal_uses_the_latest_image_and_plan(client):
    reliable = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE)
    plans = client.create_publisher(JointTrajectory, "planned_trajectory", reliable)
    images = client.create_publisher(Image, "image", 1)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (plans.get_subscription_count()
                                               and images.get_subscription_count()):
        rclpy.spin_once(client, timeout_sec=0.05)
    for _ in range(5):  # best-effort images: send a few
        plans.publish(plan(0.4))
        images.publish(camera_image())
        rclpy.spin_once(client, timeout_sec=0.1)
    handle, _ = send(client, Imagine.Goal())
    future = handle.get_result_async()
    assert spin_until(client, future.done, 60)
    result = future.result().result
    assert result.error_code == RESULT.ERROR_NONE, result.error_msg
    assert len(result.video_paths) == 1


def test_goal_errors_are_reported(client):
    bad = plan(0.3)
    bad.joint_names = bad.joint_names[:-1]
    handle, _ = send(client, Imagine.Goal(plans=[bad], image=camera_image()))
    future = handle.get_result_async()
    assert spin_until(client, future.done, 30)
    result = future.result().result
    assert result.error_code == RESULT.ERROR_INVALID_GOAL and "plan 0" in result.error_msg


def test_cancel_stops_the_denoising(client):
    handle, feedback = send(client, Imagine.Goal(plans=[plan(0.5)], image=camera_image(),
                                                 num_inference_steps=1000))
    assert spin_until(client, lambda: feedback, 60), "no feedback"
    cancel = handle.cancel_goal_async()
    assert spin_until(client, cancel.done, 10)
    started = time.monotonic()
    future = handle.get_result_async()
    assert spin_until(client, future.done, 30)
    assert time.monotonic() - started < 30
    response = future.result()
    assert response.result.error_code == RESULT.ERROR_CANCELED
    assert response.status == 5  # action_msgs/GoalStatus.STATUS_CANCELED
    assert feedback[-1].step < 1000


def test_missing_model_files_stop_the_node_with_one_clear_line(tmp_path):
    import subprocess

    command = [sys.executable, "-m", "dexwm_ros.nodes.dwm_imagination", "--ros-args",
               "-p", f"base_model_path:={tmp_path / 'none'}", "-p", f"dwm_weights_path:={tmp_path}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "cannot start" in done.stdout and "does not exist" in done.stdout, done.stdout
