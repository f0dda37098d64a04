#!/usr/bin/env python3
"""sim: a simulated reach/grasp/place task (MuJoCo) behind the robot's ROS interface.

Publishes ``image`` + ``camera_info`` (head camera), ``joint_states`` and ``task_status`` every
control step; executes the latest ``joint_command``; serves ``reset_task`` (seeded episode) and
``get_goal_image``.
"""
from __future__ import annotations

import numpy as np
from rclpy.node import Node
from rclpy.qos import QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, JointState
from trajectory_msgs.msg import JointTrajectory

from dexwm_ros.core.kinematics import HEAD_CAMERA_FRAME
from dexwm_ros.msg import TaskStatus
from dexwm_ros.nodes.conversions import ordered_positions, rgb_to_image
from dexwm_ros.nodes.params import declare
from dexwm_ros.nodes.runner import run_node
from dexwm_ros.sim import make_task
from dexwm_ros.srv import GetGoalImage, ResetTask

RELIABLE = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE)

#: The task's distance measure in DexTask.status(), per task.
DISTANCE_KEYS = ("keypoint_distance", "wrist_object_distance", "object_goal_distance")


class SimNode(Node):
    def __init__(self) -> None:
        super().__init__("sim")
        task = declare(self, "task", "grasp", "task at start: reach | grasp | place "
                       "(reset_task changes it)", read_only=True)
        seed = declare(self, "seed", 0, "episode seed at start", low=0, high=2**31 - 1,
                       read_only=True)
        self.backend = declare(self, "backend", "robosuite", "robosuite | robocasa",
                               read_only=True)
        self.control_hz = declare(self, "control_hz", 5.0, "control steps per second",
                                  low=0.1, high=100.0, read_only=True)
        self.task = make_task(task, seed=seed, backend=self.backend)
        self.target = self.task.joint_positions()
        self.image_pub = self.create_publisher(Image, "image", qos_profile_sensor_data)
        self.info_pub = self.create_publisher(CameraInfo, "camera_info", qos_profile_sensor_data)
        self.joint_pub = self.create_publisher(JointState, "joint_states", RELIABLE)
        self.status_pub = self.create_publisher(TaskStatus, "task_status", RELIABLE)
        self.create_subscription(JointTrajectory, "joint_command", self.on_command, RELIABLE)
        self.create_service(ResetTask, "reset_task", self.on_reset)
        self.create_service(GetGoalImage, "get_goal_image", self.on_goal_image)
        self.steps = 0
        self.create_timer(1.0 / self.control_hz, self.on_tick)
        self.get_logger().info(f"sim: task {task}, seed {seed}, {self.control_hz} Hz")

    def on_command(self, msg: JointTrajectory) -> None:
        if not msg.points:
            self.get_logger().error("joint_command has no points", throttle_duration_sec=5.0)
            return
        try:
            self.target = ordered_positions(msg.joint_names, msg.points[0].positions,
                                            self.task.joint_names)
        except ValueError as error:
            self.get_logger().error(f"ignoring joint_command: {error}", throttle_duration_sec=5.0)

    def on_tick(self) -> None:
        self.task.step(self.target)
        self.steps += 1
        self.publish_state()

    def publish_state(self) -> None:
        stamp = self.get_clock().now().to_msg()
        joints = JointState(name=list(self.task.joint_names),
                            position=self.task.joint_positions().tolist())
        joints.header.stamp = stamp
        self.joint_pub.publish(joints)
        self.image_pub.publish(rgb_to_image(self.task.render(), stamp, HEAD_CAMERA_FRAME))
        self.info_pub.publish(self.camera_info(stamp))
        status = self.task.status()
        distance = next(status[k] for k in DISTANCE_KEYS if k in status)
        msg = TaskStatus(task=self.task.task_name, seed=int(self.task.seed), step=self.steps,
                         success=bool(status["success"]),
                         consecutive_steps=int(status["consecutive"]), distance=float(distance),
                         contact=bool(status.get("contact", False)))
        msg.header.stamp = stamp
        self.status_pub.publish(msg)

    def camera_info(self, stamp) -> CameraInfo:
        camera = self.task.camera
        k = np.asarray(camera.intrinsics, dtype=float)
        info = CameraInfo(height=camera.height, width=camera.width, distortion_model="plumb_bob",
                          d=[0.0] * 5, k=k.ravel().tolist(),
                          r=np.eye(3).ravel().tolist(),
                          p=np.hstack([k, np.zeros((3, 1))]).ravel().tolist())
        info.header.stamp = stamp
        info.header.frame_id = HEAD_CAMERA_FRAME
        return info

    def on_reset(self, request, response):
        try:
            if request.task and request.task != self.task.task_name:
                self.task = make_task(request.task, seed=request.seed, backend=self.backend)
            else:
                self.task.reset(seed=request.seed)
        except ValueError as error:
            response.success, response.message = False, str(error)
            return response
        self.target = self.task.joint_positions()
        self.steps = 0
        response.goal_image = rgb_to_image(self.task.goal_image(), frame_id=HEAD_CAMERA_FRAME)
        response.success = True
        self.publish_state()
        return response

    def on_goal_image(self, request, response):
        response.goal_image = rgb_to_image(self.task.goal_image(), frame_id=HEAD_CAMERA_FRAME)
        response.success = True
        return response


def main(args=None) -> None:
    run_node(SimNode, args)


if __name__ == "__main__":
    main()
