"""End to end over DDS: sim, camera_encoder, world_model_server and cem_planner as separate
processes with a tiny world model; goals sent from this process and from task_runner."""
import subprocess
import sys
import time

import pytest
import rclpy
from rclpy.action import ActionClient
from rclpy.qos import QoSProfile, QoSReliabilityPolicy
from ros_testing import observing, spin_until
from sensor_msgs.msg import Image
from trajectory_msgs.msg import JointTrajectory
from visualization_msgs.msg import Marker, MarkerArray

from dexwm_ros.action import PlanToGoal
from dexwm_ros.core.world_model import build_tiny_world_model
from dexwm_ros.msg import Latent
from dexwm_ros.nodes.launcher import start, stop
from dexwm_ros.share import share_path
from dexwm_ros.srv import ResetTask

pytestmark = pytest.mark.ros
RESULT = PlanToGoal.Result
RELIABLE = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE)
SMALL_PLANNER = ["num_samples:=32", "num_elites:=4", "iterations:=3", "control_period:=0.1",
                 "service_timeout:=20.0", "seed:=0"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny"
    build_tiny_world_model(seed=0).save(path)
    return path


@pytest.fixture(scope="module")
def graph(model_dir):
    config = share_path("config", "dexwm.yaml")
    extra = {"world_model_server": [f"model_path:={model_dir}"], "cem_planner": SMALL_PLANNER,
             "sim": ["control_hz:=10.0"]}
    processes = {name: start(name, config, extra.get(name, []))
                 for name in ("sim", "camera_encoder", "world_model_server", "cem_planner")}
    yield {"processes": processes, "config": config, "extra": extra}
    stop(processes)


@pytest.fixture(scope="module")
def node(graph, ros_node):
    node = ros_node
    node.commands, node.markers, node.latents = [], [], []
    node.create_subscription(JointTrajectory, "joint_command", node.commands.append, RELIABLE)
    node.create_subscription(MarkerArray, "predicted_keypoints", node.markers.append, RELIABLE)
    node.create_subscription(Latent, "latents", node.latents.append, RELIABLE)
    node.client = ActionClient(node, PlanToGoal, "plan_to_goal")
    node.reset = node.create_client(ResetTask, "reset_task")
    processes = graph["processes"]

    def up():
        dead = [n for n, p in processes.items() if p.poll() is not None]
        assert not dead, f"{dead} exited during start-up (output above)"
        return node.client.server_is_ready() and node.reset.service_is_ready() and node.latents

    assert spin_until(node, up, 180), "the graph did not come up"
    assert observing(node, 60), "world_model_server has no observation"
    return node


def goal_image(node):
    future = node.reset.call_async(ResetTask.Request(task="grasp", seed=3))
    assert spin_until(node, future.done, 60)
    assert future.result().success
    return future.result().goal_image


def send(node, goal):
    feedback = []
    future = node.client.send_goal_async(goal, feedback_callback=lambda m: feedback.append(
        m.feedback))
    assert spin_until(node, future.done, 30)
    handle = future.result()
    assert handle.accepted
    return handle, feedback


def result_of(node, handle, timeout=180):
    future = handle.get_result_async()
    assert spin_until(node, future.done, timeout), "no result"
    return future.result().result


def test_task_runner_node_completes_a_goal(graph, node):
    commands_before = len(node.commands)
    task = subprocess.run(
        [sys.executable, "-m", "dexwm_ros.nodes.task_runner", "--ros-args", "--params-file",
         str(graph["config"]), "-p", "max_mpc_steps:=2", "-p", "timeout:=300.0"],
        capture_output=True, text=True, timeout=400)
    assert task.returncode == 0, task.stdout + task.stderr
    assert "result: ERROR_NONE" in task.stdout
    assert "MPC step 1 iteration 2" in task.stdout  # feedback every CEM iteration
    assert spin_until(node, lambda: len(node.commands) >= commands_before + 2, 10)
    command = node.commands[-1]
    assert len(command.joint_names) == 23 and len(command.points[0].positions) == 23


def test_markers_follow_rviz_conventions(graph, node):
    assert spin_until(node, lambda: node.markers, 10)
    markers = node.markers[-1].markers
    assert markers[0].action == Marker.DELETEALL
    drawn = markers[1:]
    assert {m.ns for m in drawn} == {"predicted_keypoints", "predicted_hand_skeleton"}
    assert sorted(m.id for m in drawn if m.ns == "predicted_keypoints") == [0, 1, 2]
    for marker in drawn:
        assert all(0.0 <= c <= 1.0 for c in (marker.color.r, marker.color.g, marker.color.b,
                                             marker.color.a))
    assert len(drawn[0].points) == 21


def test_malformed_goals_are_rejected_and_server_keeps_serving(graph, node):
    empty = PlanToGoal.Goal(task=PlanToGoal.Goal.TASK_GRASP, goal_image=Image())
    handle, _ = send(node, empty)
    assert result_of(node, handle).error_code == RESULT.ERROR_INVALID_GOAL
    wrong = Image(height=4, width=4, encoding="yuv422", step=8, data=bytes(32))
    handle, _ = send(node, PlanToGoal.Goal(task=PlanToGoal.Goal.TASK_GRASP, goal_image=wrong))
    result = result_of(node, handle)
    assert result.error_code == RESULT.ERROR_INVALID_GOAL and "yuv422" in result.error_msg
    handle, _ = send(node, PlanToGoal.Goal(task=PlanToGoal.Goal.TASK_REACH,
                                           goal_image=goal_image(node), max_mpc_steps=1))
    assert result_of(node, handle).error_code == RESULT.ERROR_NONE


def test_cancel_mid_plan(graph, node):
    handle, feedback = send(node, PlanToGoal.Goal(task=PlanToGoal.Goal.TASK_GRASP,
                                                  goal_image=goal_image(node),
                                                  max_mpc_steps=100))
    assert spin_until(node, lambda: feedback, 60)
    cancel = handle.cancel_goal_async()
    assert spin_until(node, cancel.done, 30)
    seen = len(feedback)
    result = result_of(node, handle)
    assert result.error_code == RESULT.ERROR_CANCELED
    assert len(feedback) <= seen + 2  # stopped within one CEM iteration


def test_cancel_keeps_the_joint_targets_already_executed(graph, node):
    handle, feedback = send(node, PlanToGoal.Goal(task=PlanToGoal.Goal.TASK_REACH,
                                                  goal_image=goal_image(node),
                                                  max_mpc_steps=100))
    assert spin_until(node, lambda: any(f.mpc_step >= 1 for f in feedback), 120)
    cancel = handle.cancel_goal_async()
    assert spin_until(node, cancel.done, 30)
    result = result_of(node, handle)
    assert result.error_code == RESULT.ERROR_CANCELED
    assert len(result.executed.joint_names) == 23 and len(result.executed.points) >= 1
    assert result.final_cost > 0


def test_new_goal_preempts_the_running_one(graph, node):
    image = goal_image(node)
    first, feedback = send(node, PlanToGoal.Goal(task=PlanToGoal.Goal.TASK_GRASP,
                                                 goal_image=image, max_mpc_steps=100))
    assert spin_until(node, lambda: feedback, 60)
    second, _ = send(node, PlanToGoal.Goal(task=PlanToGoal.Goal.TASK_GRASP, goal_image=image,
                                           max_mpc_steps=1))
    preempted = result_of(node, first)
    assert preempted.error_code == RESULT.ERROR_CANCELED and "preempted" in preempted.error_msg
    assert result_of(node, second).error_code == RESULT.ERROR_NONE


def test_world_model_server_killed_mid_goal(graph, node):
    processes = graph["processes"]
    handle, feedback = send(node, PlanToGoal.Goal(task=PlanToGoal.Goal.TASK_GRASP,
                                                  goal_image=goal_image(node),
                                                  max_mpc_steps=100))
    assert spin_until(node, lambda: feedback, 60)
    processes["world_model_server"].kill()
    processes["world_model_server"].wait()
    result = result_of(node, handle, timeout=60)
    assert result.error_code == RESULT.ERROR_WORLD_MODEL_UNAVAILABLE
    processes["world_model_server"] = start("world_model_server", graph["config"],
                                            graph["extra"]["world_model_server"])
    deadline = time.monotonic() + 120
    while True:  # the planner serves the next goal once the server is back with a context
        handle, _ = send(node, PlanToGoal.Goal(task=PlanToGoal.Goal.TASK_REACH,
                                               goal_image=goal_image(node), max_mpc_steps=1))
        result = result_of(node, handle)
        if result.error_code == RESULT.ERROR_NONE or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    assert result.error_code == RESULT.ERROR_NONE, result.error_msg


def test_camera_encoder_skips_bad_images_and_keeps_running(graph, node):
    from rclpy.qos import qos_profile_sensor_data

    publisher = node.create_publisher(Image, "image", qos_profile_sensor_data)
    bad = [Image(height=4, width=4, encoding="yuv422", step=8, data=bytes(32)),
           Image(height=4, width=4, encoding="rgb8", step=5, data=bytes(20)),
           Image(encoding="rgb8")]
    for image in bad:
        publisher.publish(image)
        rclpy.spin_once(node, timeout_sec=0.1)
    count = len(node.latents)
    assert spin_until(node, lambda: len(node.latents) > count + 2, 30)
    assert graph["processes"]["camera_encoder"].poll() is None
    node.destroy_publisher(publisher)
