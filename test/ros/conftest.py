"""An rclpy node in the test process, one per test module."""
import pytest
import rclpy
from rclpy.node import Node


@pytest.fixture(scope="module")
def ros_node(request):
    rclpy.init()
    node = Node(request.module.__name__.rsplit(".", 1)[-1])
    yield node
    node.destroy_node()
    rclpy.shutdown()
