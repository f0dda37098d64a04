"""Two processes exchange a full-size Latent and a PlanToGoal cycle over real DDS."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from dds_peer import DIM, GRID, latent_values
from rclpy.action import ActionClient
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
from ros_testing import spin_until
from sensor_msgs.msg import Image

from dexwm_ros.action import PlanToGoal
from dexwm_ros.msg import Latent

pytestmark = pytest.mark.ros
PEER = Path(__file__).with_name("dds_peer.py")


@pytest.fixture(scope="module")
def peer():
    proc = subprocess.Popen([sys.executable, str(PEER)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    yield proc
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def node(ros_node):
    return ros_node


def test_latent_crosses_processes(peer, node):
    received = []
    qos = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE,
                     durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
    node.create_subscription(Latent, "latents", received.append, qos)
    assert spin_until(node, lambda: received, 30), "no Latent arrived from the peer process"
    msg = received[0]
    assert (msg.grid_height, msg.grid_width, msg.dim) == (*GRID, DIM)
    np.testing.assert_array_equal(np.asarray(msg.data, dtype=np.float32), latent_values())


def send(node, client, goal):
    feedback = []
    future = client.send_goal_async(goal, feedback_callback=lambda f: feedback.append(f.feedback))
    assert spin_until(node, future.done, 20)
    handle = future.result()
    assert handle.accepted
    return handle, feedback


def test_plan_to_goal_result_and_feedback(peer, node):
    client = ActionClient(node, PlanToGoal, "plan_to_goal")
    assert client.wait_for_server(timeout_sec=30)
    goal = PlanToGoal.Goal(task=PlanToGoal.Goal.TASK_GRASP, max_mpc_steps=3)
    goal.goal_image = Image(height=2, width=3, encoding="rgb8", step=9, data=bytes(18))
    handle, feedback = send(node, client, goal)
    result_future = handle.get_result_async()
    assert spin_until(node, result_future.done, 30)
    result = result_future.result().result
    assert result.error_code == PlanToGoal.Result.ERROR_NONE
    assert result.final_cost == pytest.approx(3.0)
    assert list(result.executed.joint_names) == ["j1"]
    assert [f.cem_iteration for f in feedback] == [0, 1, 2]


def test_plan_to_goal_cancel(peer, node):
    client = ActionClient(node, PlanToGoal, "plan_to_goal")
    assert client.wait_for_server(timeout_sec=30)
    handle, feedback = send(node, client, PlanToGoal.Goal(task=PlanToGoal.Goal.TASK_REACH))
    assert spin_until(node, lambda: feedback, 20)
    cancel_future = handle.cancel_goal_async()
    assert spin_until(node, cancel_future.done, 20)
    result_future = handle.get_result_async()
    assert spin_until(node, result_future.done, 20)
    assert result_future.result().result.error_code == PlanToGoal.Result.ERROR_CANCELED
    assert len(feedback) < 200
