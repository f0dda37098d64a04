"""Peer process for test_dds_roundtrip: publishes one Latent and serves PlanToGoal."""
import sys
import time

import numpy as np
import rclpy
from rclpy.action import ActionServer, CancelResponse
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy

from dexwm_ros.action import PlanToGoal
from dexwm_ros.msg import Latent

GRID = (16, 28)
DIM = 1024


def latent_values() -> np.ndarray:
    """The values the peer sends; the test recomputes them to compare."""
    return np.arange(GRID[0] * GRID[1] * DIM, dtype=np.float32) / 1000.0


class Peer(Node):
    def __init__(self) -> None:
        super().__init__("dds_peer")
        qos = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE,
                         durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
        self.publisher = self.create_publisher(Latent, "latents", qos)
        msg = Latent(encoder="test", grid_height=GRID[0], grid_width=GRID[1], dim=DIM)
        msg.header.frame_id = "head_camera"
        msg.data = latent_values()
        self.publisher.publish(msg)
        self.server = ActionServer(self, PlanToGoal, "plan_to_goal", self.execute,
                                   cancel_callback=lambda _: CancelResponse.ACCEPT)

    def execute(self, handle):
        goal = handle.request
        for iteration in range(200):
            if handle.is_cancel_requested:
                handle.canceled()
                return PlanToGoal.Result(error_code=PlanToGoal.Result.ERROR_CANCELED,
                                         error_msg="canceled")
            feedback = PlanToGoal.Feedback(mpc_step=0, cem_iteration=iteration,
                                           best_cost=1.0 / (iteration + 1))
            handle.publish_feedback(feedback)
            if goal.max_mpc_steps and iteration + 1 >= goal.max_mpc_steps:
                break
            time.sleep(0.05)
        handle.succeed()
        result = PlanToGoal.Result(error_code=PlanToGoal.Result.ERROR_NONE,
                                   final_cost=float(goal.goal_image.width))
        result.executed.joint_names = ["j1"]
        return result


def main() -> None:
    rclpy.init()
    node = Peer()
    executor = MultiThreadedExecutor()
    executor.add_node(node)
    print("ready", flush=True)
    try:
        executor.spin()
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    sys.exit(0)


if __name__ == "__main__":
    main()
