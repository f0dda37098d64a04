"""TaskClient against a running sim node: reset_task and get_goal_image agree, errors are clear."""
import pytest
from ros_testing import spin_until

from dexwm_ros.nodes.launcher import start, stop
from dexwm_ros.nodes.task_client import TaskClient
from dexwm_ros.share import share_path

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def client(ros_node):
    sim = start("sim", share_path("config", "dexwm.yaml"), ["control_hz:=10.0"])
    client = TaskClient(ros_node, timeout=60.0)

    def up():
        assert sim.poll() is None, "sim exited during start-up (output above)"
        return client.goal_image_client.service_is_ready() and client.status is not None

    assert spin_until(ros_node, up, 120), "the sim did not come up"
    yield client
    stop({"sim": sim})


def test_goal_image_is_the_goal_of_the_current_episode(client):
    reach = client.reset("reach", seed=1)
    fetched = client.goal_image()
    assert (fetched.height, fetched.width, fetched.encoding) == (reach.height, reach.width,
                                                                 "rgb8")
    assert bytes(fetched.data) == bytes(reach.data)

    grasp = client.reset("grasp", seed=2)
    fetched = client.goal_image()
    assert bytes(fetched.data) == bytes(grasp.data) != bytes(reach.data)


def test_a_failed_reset_names_the_problem(client):
    with pytest.raises(RuntimeError, match="reset_task failed: .*fly"):
        client.reset("fly", seed=0)
