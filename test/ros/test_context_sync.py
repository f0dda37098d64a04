"""world_model_server pairs each latent with the joint state at its stamp, whichever of the two
topics delivers first, and drops a latent whose joint state is missed."""
import numpy as np
import pytest
import torch
from rclpy.parameter import Parameter
from rclpy.time import Time
from sensor_msgs.msg import JointState

from dexwm_ros.core.kinematics import JOINT_NAMES
from dexwm_ros.core.world_model import build_tiny_world_model
from dexwm_ros.nodes.conversions import latent_to_msg
from dexwm_ros.nodes.world_model_server import WorldModelServer

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def server(tmp_path_factory, ros_node):
    path = tmp_path_factory.mktemp("model") / "tiny"
    build_tiny_world_model(seed=0).save(path)
    node = WorldModelServer(parameter_overrides=[Parameter("model_path", value=str(path)),
                                                 Parameter("sync_tolerance", value=0.1)])
    yield node
    node.destroy_node()


def joint_state(stamp, value):
    msg = JointState(name=list(JOINT_NAMES), position=[value] * len(JOINT_NAMES))
    msg.header.stamp = Time(seconds=stamp).to_msg()
    return msg


def latent(stamp):
    msg = latent_to_msg(torch.zeros(16 * 28, 64), "tiny", (16, 28))
    msg.header.stamp = Time(seconds=stamp).to_msg()
    return msg


def test_latent_waits_for_its_joint_state_then_takes_the_nearest(server):
    server.frames.clear()
    server.on_joint_state(joint_state(10.0, 0.0))
    server.on_latent(latent(10.1))  # its joint state is still on its way
    assert server.frames == []
    server.on_joint_state(joint_state(10.12, 0.5))
    assert len(server.frames) == 1
    stamp, _, joints, _ = server.frames[-1]
    assert stamp == pytest.approx(10.1)
    np.testing.assert_allclose(joints, 0.5)  # 0.02 s away, not the one 0.1 s before


def test_joint_state_first_pairs_at_once_and_a_missed_one_drops_the_latent(server):
    server.frames.clear()
    server.on_joint_state(joint_state(20.0, 0.25))
    server.on_latent(latent(20.0))
    assert len(server.frames) == 1
    server.on_joint_state(joint_state(21.0, 0.0))
    server.on_latent(latent(20.5))  # no joint state within 0.1 s: dropped, not kept pending
    assert len(server.frames) == 1 and server.pending is None
