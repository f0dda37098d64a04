#!/usr/bin/env python3
"""cem_planner: the PlanToGoal action server (CEM model-predictive control over 23 joints).

Per goal: encode the goal image (camera_encoder ``encode_image``), store it in the world-model
server (``set_goal``); then per MPC step freeze the context (``snapshot_context``), run CEM with
candidates scored by ``score_actions``, publish the first joint target on ``joint_command`` and
the plan's right-hand keypoints on ``predicted_keypoints``. One goal at a time: a new goal
preempts (aborts) the running one; cancel is honoured within one CEM iteration.
"""
from __future__ import annotations

import sys
import threading
import time

import numpy as np
import torch
from geometry_msgs.msg import Point
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import QoSProfile, QoSReliabilityPolicy
from std_msgs.msg import ColorRGBA
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
from visualization_msgs.msg import Marker, MarkerArray

from dexwm_ros.action import PlanToGoal
from dexwm_ros.core.kinematics import JOINT_NAMES, RobotKinematics, head_camera
from dexwm_ros.core.planner import CEMConfig, CEMPlanner
from dexwm_ros.core.planning_cost import CostWeights, OrientationCost
from dexwm_ros.nodes.conversions import TASK_CODES, image_to_rgb, seconds_to_duration
from dexwm_ros.nodes.params import declare, declare_torch_threads
from dexwm_ros.nodes.runner import run_node
from dexwm_ros.srv import EncodeImage, ScoreActions, SetGoal, SnapshotContext

TASKS = {code: name for name, code in TASK_CODES.items()}
RESULT = PlanToGoal.Result
#: Bones of the 21-keypoint hand drawn in rviz: wrist to each knuckle, then along each finger.
HAND_BONES = [(0, 1 + 4 * f) for f in range(5)] + [
    (1 + 4 * f + j, 2 + 4 * f + j) for f in range(5) for j in range(3)]


class GoalFailed(Exception):
    """Ends a goal with an error code of PlanToGoal.Result."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class CemPlannerNode(Node):
    def __init__(self) -> None:
        super().__init__("cem_planner")
        declare_torch_threads(self)
        self.cem = {
            "horizon": declare(self, "horizon", 3, "planning horizon T (steps)", low=1, high=8),
            "num_samples": declare(self, "num_samples", 512, "CEM samples N per iteration",
                                   low=2, high=8192),
            "num_elites": declare(self, "num_elites", 10, "CEM elites K", low=1, high=1024),
            "iterations": declare(self, "iterations", 10, "CEM iterations L per MPC step",
                                  low=1, high=100),
            "arm_sigma": declare(self, "arm_sigma", 0.3, "initial std of arm joints (rad)",
                                 low=1e-4, high=3.0),
            "hand_sigma": declare(self, "hand_sigma", 0.1,
                                  "initial std of hand joints (rad); place uses "
                                  "place_hand_sigma", low=1e-4, high=3.0),
            "momentum": declare(self, "momentum", 0.0, "blend of the previous mean/std",
                                low=0.0, high=0.99),
            "sampler": declare(self, "sampler", "cem", "cem (paper) or icem (colored noise, "
                               "elite reuse)"),
        }
        self.place_hand_sigma = declare(self, "place_hand_sigma", 0.01,
                                        "hand std for the place task", low=1e-4, high=3.0)
        self.seed = declare(self, "seed", -1, "sampler seed, -1 = random", low=-1,
                            high=2**31 - 1)
        self.max_mpc_steps = declare(self, "max_mpc_steps", 10,
                                     "MPC steps per goal when the goal says 0", low=1,
                                     high=10000)
        self.control_period = declare(self, "control_period", 0.5,
                                      "seconds given to the robot to reach each joint target",
                                      low=0.0, high=60.0)
        self.service_timeout = declare(self, "service_timeout", 30.0,
                                       "seconds to wait for a world-model or encoder reply",
                                       low=0.1, high=600.0)
        self.orientation_weight = declare(self, "orientation_weight", 0.1,
                                          "grasp: weight of the wrist rotation (rad) to the "
                                          "wrist rotation at goal start", low=0.0, high=100.0)
        self.fixed_frame = declare(self, "fixed_frame", "world",
                                   "frame of the predicted keypoint markers")
        self.kinematics = RobotKinematics()
        self.camera = head_camera()
        clients = MutuallyExclusiveCallbackGroup()
        self.encode = self.create_client(EncodeImage, "encode_image", callback_group=clients)
        self.set_goal = self.create_client(SetGoal, "set_goal", callback_group=clients)
        self.snapshot = self.create_client(SnapshotContext, "snapshot_context",
                                           callback_group=clients)
        self.score = self.create_client(ScoreActions, "score_actions", callback_group=clients)
        reliable = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE)
        self.command_pub = self.create_publisher(JointTrajectory, "joint_command", reliable)
        self.marker_pub = self.create_publisher(MarkerArray, "predicted_keypoints", reliable)
        self.lock = threading.Lock()
        self.active = None
        self.preempted: set = set()
        self.execution = threading.Lock()
        self.server = ActionServer(
            self, PlanToGoal, "plan_to_goal", self.execute,
            goal_callback=lambda _: GoalResponse.ACCEPT,
            handle_accepted_callback=self.on_accepted,
            cancel_callback=lambda _: CancelResponse.ACCEPT,
            callback_group=ReentrantCallbackGroup())

    # ------------------------------------------------------------------ goal bookkeeping

    def on_accepted(self, handle) -> None:
        with self.lock:
            if self.active is not None:
                self.preempted.add(bytes(self.active.goal_id.uuid))
            self.active = handle
        handle.execute()

    def should_stop(self, handle) -> bool:
        return handle.is_cancel_requested or bytes(handle.goal_id.uuid) in self.preempted

    def execute(self, handle):
        with self.execution:  # the preempted goal finishes first
            result = RESULT()
            try:
                if bytes(handle.goal_id.uuid) in self.preempted:
                    raise GoalFailed(RESULT.ERROR_CANCELED, "preempted by a newer goal")
                result = self.run_goal(handle)
            except GoalFailed as failure:
                result.error_code, result.error_msg = failure.code, str(failure)
            except Exception as error:  # noqa: BLE001 - report, keep serving
                self.get_logger().error(f"goal failed: {error!r}")
                result.error_code, result.error_msg = RESULT.ERROR_INTERNAL, repr(error)
            if result.error_code == RESULT.ERROR_NONE:
                handle.succeed()
            elif result.error_code == RESULT.ERROR_CANCELED and handle.is_cancel_requested:
                handle.canceled()
            else:
                handle.abort()
            with self.lock:
                self.preempted.discard(bytes(handle.goal_id.uuid))
                if self.active is handle:
                    self.active = None
            self.get_logger().info(f"goal finished: code {result.error_code} "
                                   f"{result.error_msg}".rstrip())
            return result

    # ------------------------------------------------------------------ services

    def call(self, client, request, what: str):
        """Call a service and wait; a missing server or a timeout fails the goal."""
        if not client.wait_for_service(timeout_sec=min(self.service_timeout, 2.0)):
            raise GoalFailed(RESULT.ERROR_WORLD_MODEL_UNAVAILABLE,
                             f"service '{client.srv_name}' ({what}) is not available")
        done = threading.Event()
        future = client.call_async(request)
        future.add_done_callback(lambda _: done.set())
        if not done.wait(self.service_timeout) or future.result() is None:
            client.remove_pending_request(future)
            raise GoalFailed(RESULT.ERROR_WORLD_MODEL_UNAVAILABLE,
                             f"no reply from '{client.srv_name}' ({what}) within "
                             f"{self.service_timeout:.1f} s")
        return future.result()

    # ------------------------------------------------------------------ planning

    def run_goal(self, handle) -> PlanToGoal.Result:
        goal = handle.request
        task = TASKS.get(goal.task)
        if task is None:
            raise GoalFailed(RESULT.ERROR_INVALID_GOAL, f"unknown task {goal.task}")
        try:
            image_to_rgb(goal.goal_image)
        except ValueError as error:
            raise GoalFailed(RESULT.ERROR_INVALID_GOAL, f"goal image: {error}") from error
        encoded = self.call(self.encode, EncodeImage.Request(image=goal.goal_image),
                            "goal encoding")
        if not encoded.success:
            raise GoalFailed(RESULT.ERROR_INVALID_GOAL, encoded.message)
        stored = self.call(self.set_goal, SetGoal.Request(goal=encoded.latent), "set goal")
        if not stored.success:
            raise GoalFailed(RESULT.ERROR_INVALID_GOAL, stored.message)

        planner = self.make_planner(task)
        steps = goal.max_mpc_steps or self.max_mpc_steps
        executed = JointTrajectory(joint_names=list(JOINT_NAMES))
        start = time.monotonic()
        result = RESULT(executed=executed)
        for mpc_step in range(steps):
            context = self.call(self.snapshot, SnapshotContext.Request(), "snapshot context")
            if not context.success:
                raise GoalFailed(RESULT.ERROR_NO_OBSERVATION, context.message)
            joints = torch.tensor(context.joint_positions, dtype=torch.float32)
            if task == "grasp" and mpc_step == 0 and self.orientation_weight > 0:
                planner.extra_cost = self.orientation_cost(joints)
            observed = self.kinematics.keypoints_camera(joints, self.camera)

            def on_iteration(info, step=mpc_step):
                feedback = PlanToGoal.Feedback(
                    mpc_step=step, cem_iteration=info.iteration, best_cost=info.best_cost,
                    elite_mean_cost=info.elite_mean_cost,
                    elapsed=seconds_to_duration(time.monotonic() - start))
                handle.publish_feedback(feedback)
                return not self.should_stop(handle)

            plan = planner.plan(joints, observed, self.evaluate, on_iteration)
            if plan.cancelled or self.should_stop(handle):
                reason = "canceled" if handle.is_cancel_requested else "preempted by a newer goal"
                raise GoalFailed(RESULT.ERROR_CANCELED, reason)
            self.send_command(plan.joints[0], executed)
            self.publish_markers(plan.joints)
            result.final_cost = float(plan.cost)
            self.get_logger().info(f"MPC step {mpc_step + 1}/{steps}: cost {plan.cost:.4f}")
            deadline = time.monotonic() + self.control_period
            while time.monotonic() < deadline:
                if self.should_stop(handle):
                    raise GoalFailed(RESULT.ERROR_CANCELED, "canceled")
                time.sleep(0.02)
        return result

    def make_planner(self, task: str) -> CEMPlanner:
        overrides = dict(self.cem, seed=None if self.seed < 0 else self.seed)
        if task == "place":
            overrides["hand_sigma"] = self.place_hand_sigma
        config = CEMConfig.for_task(task, **overrides)
        return CEMPlanner(config, lambda q: self.kinematics.keypoints_camera(q, self.camera),
                          self.kinematics.lower, self.kinematics.upper)

    def orientation_cost(self, joints: torch.Tensor) -> OrientationCost:
        target = self.kinematics.wrist_pose_world(joints)[:3, :3]
        weights = CostWeights.for_task("grasp", orientation_weight=self.orientation_weight)
        return OrientationCost(self.kinematics.wrist_pose_world, target, weights)

    def evaluate(self, actions: torch.Tensor, joints: torch.Tensor) -> torch.Tensor:
        num, horizon = actions.shape[:2]
        request = ScoreActions.Request(num_candidates=num, horizon=horizon)
        request.actions = actions.detach().float().contiguous().numpy().ravel()
        reply = self.call(self.score, request, "score candidates")
        if not reply.success:
            raise GoalFailed(RESULT.ERROR_WORLD_MODEL_UNAVAILABLE,
                             f"world model could not score: {reply.message}")
        return torch.from_numpy(np.asarray(reply.costs, dtype=np.float32))

    # ------------------------------------------------------------------ outputs

    def send_command(self, target: torch.Tensor, executed: JointTrajectory) -> None:
        point = JointTrajectoryPoint(positions=target.tolist(),
                                     time_from_start=seconds_to_duration(self.control_period))
        command = JointTrajectory(joint_names=list(JOINT_NAMES), points=[point])
        command.header.stamp = self.get_clock().now().to_msg()
        self.command_pub.publish(command)
        done = JointTrajectoryPoint(positions=target.tolist(), time_from_start=seconds_to_duration(
            self.control_period * (len(executed.points) + 1)))
        executed.points.append(done)

    def publish_markers(self, plan_joints: torch.Tensor) -> None:
        keypoints = self.kinematics.keypoints_world(plan_joints).numpy()
        stamp = self.get_clock().now().to_msg()
        markers = MarkerArray(markers=[Marker(action=Marker.DELETEALL)])
        horizon = len(keypoints)
        for step, points in enumerate(keypoints):
            shade = (step + 1) / horizon  # later steps brighter
            colour = ColorRGBA(r=0.2, g=0.4 + 0.6 * shade, b=1.0 - 0.5 * shade, a=0.9)
            spheres = Marker(ns="predicted_keypoints", id=step, type=Marker.SPHERE_LIST,
                             action=Marker.ADD, color=colour)
            spheres.points = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in points]
            spheres.scale.x = spheres.scale.y = spheres.scale.z = 0.015
            bones = Marker(ns="predicted_hand_skeleton", id=step, type=Marker.LINE_LIST,
                           action=Marker.ADD, color=colour)
            bones.points = [spheres.points[i] for bone in HAND_BONES for i in bone]
            bones.scale.x = 0.004
            for marker in (spheres, bones):
                marker.header.frame_id = self.fixed_frame
                marker.header.stamp = stamp
                marker.pose.orientation.w = 1.0
                markers.markers.append(marker)
        self.marker_pub.publish(markers)


def main(args=None) -> None:
    sys.exit(run_node(CemPlannerNode, args, threads=4))


if __name__ == "__main__":
    main()
