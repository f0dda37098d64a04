#!/usr/bin/env python3
"""cem_planner: the PlanToGoal action server (CEM model-predictive control over 23 joints).

Per goal: send the goal image to the world-model server (``set_goal``; the server has it
encoded once by camera_encoder); then per control tick freeze the context
(``snapshot_context``) and let the core MPC session (``dexwm_ros.core.mpc``: appendix B's
shrinking-horizon protocol, the task registry's settings) plan with candidates scored by
``score_actions``; publish the target on ``joint_command``, the whole plan on
``planned_trajectory`` (e.g. for ``dwm_imagination``) and its right-hand keypoints on
``predicted_keypoints`` (``dexwm_ros.nodes.markers``). One goal at a time: a new goal
preempts (aborts) the running one; cancel is honoured within one CEM iteration.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import torch
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import QoSProfile, QoSReliabilityPolicy
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
from visualization_msgs.msg import MarkerArray

from dexwm_ros.action import PlanToGoal
from dexwm_ros.core.actions import ACTION_REPRESENTATIONS
from dexwm_ros.core.kinematics import JOINT_NAMES, RobotKinematics, head_camera
from dexwm_ros.core.mpc import MPCSession
from dexwm_ros.core.planner import CEMConfig
from dexwm_ros.core.planning_cost import CostWeights
from dexwm_ros.core.tasks import TASKS, task_by_code
from dexwm_ros.nodes.action_goals import GoalFailed, finish_goal
from dexwm_ros.nodes.conversions import seconds_to_duration
from dexwm_ros.nodes.markers import plan_markers
from dexwm_ros.nodes.params import (
    ConfigParameters,
    Pending,
    declare,
    declare_torch_threads,
    watch_parameters,
)
from dexwm_ros.nodes.runner import StartupError, run_node
from dexwm_ros.srv import ScoreActions, SetGoal, SnapshotContext

RESULT = PlanToGoal.Result
#: Cost weights that act planner-side (the world-model server holds the others).
PLANNER_COST_FIELDS = ("orientation_weight", "workspace_weight", "workspace_low",
                       "workspace_high")


class CemPlannerNode(Node):
    def __init__(self) -> None:
        super().__init__("cem_planner")
        declare_torch_threads(self)
        self.cem_parameters = ConfigParameters(self, CEMConfig)
        self.cost_parameters = ConfigParameters(self, CostWeights, fields=PLANNER_COST_FIELDS)
        self.task_parameters = {
            spec.name: (
                ConfigParameters(self, CEMConfig, fields=spec.cem_overrides,
                                 prefix=f"{spec.name}.", defaults=spec.cem_overrides),
                ConfigParameters(self, CostWeights, fields=[
                    name for name in spec.cost_overrides if name in PLANNER_COST_FIELDS],
                    prefix=f"{spec.name}.", defaults=spec.cost_overrides))
            for spec in TASKS.values()}
        self.update_settings()
        watch_parameters(self, self.check_parameters, self.update_settings)
        self.max_mpc_steps = declare(self, "max_mpc_steps", 10,
                                     "MPC steps per goal when the goal says 0", low=1,
                                     high=10000, read_only=True)
        self.control_period = declare(self, "control_period", 0.5,
                                      "seconds given to the robot to reach each joint target",
                                      low=0.0, high=60.0, read_only=True)
        self.service_timeout = declare(self, "service_timeout", 30.0,
                                       "seconds to wait for a world-model or encoder reply",
                                       low=0.1, high=600.0, read_only=True)
        self.action_representation = declare(
            self, "action_representation", "keypoint_delta",
            "actions the world model takes: keypoint_delta (132) or rigid_body (57); must match "
            "the checkpoint", read_only=True)
        if self.action_representation not in ACTION_REPRESENTATIONS:
            raise StartupError(f"action_representation must be one of "
                               f"{sorted(ACTION_REPRESENTATIONS)}, got "
                               f"{self.action_representation!r}")
        self.fixed_frame = declare(self, "fixed_frame", "world",
                                   "frame of the predicted keypoint markers", read_only=True)
        self.kinematics = RobotKinematics()
        self.camera = head_camera()
        clients = MutuallyExclusiveCallbackGroup()
        self.set_goal = self.create_client(SetGoal, "set_goal", callback_group=clients)
        self.snapshot = self.create_client(SnapshotContext, "snapshot_context",
                                           callback_group=clients)
        self.score = self.create_client(ScoreActions, "score_actions", callback_group=clients)
        reliable = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE)
        self.command_pub = self.create_publisher(JointTrajectory, "joint_command", reliable)
        self.marker_pub = self.create_publisher(MarkerArray, "predicted_keypoints", reliable)
        self.plan_pub = self.create_publisher(JointTrajectory, "planned_trajectory", reliable)
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
            def run(handle):
                if bytes(handle.goal_id.uuid) in self.preempted:
                    raise GoalFailed(RESULT.ERROR_CANCELED, "preempted by a newer goal")
                return self.run_goal(handle)

            result = finish_goal(handle, run, RESULT, self.get_logger())
            with self.lock:
                self.preempted.discard(bytes(handle.goal_id.uuid))
                if self.active is handle:
                    self.active = None
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
        try:
            task = task_by_code(goal.task).name
        except ValueError as error:
            raise GoalFailed(RESULT.ERROR_INVALID_GOAL, str(error)) from error
        stored = self.call(self.set_goal, SetGoal.Request(goal_image=goal.goal_image),
                           "set goal")
        if not stored.success:
            raise GoalFailed(RESULT.ERROR_INVALID_GOAL, stored.message)

        session = self.make_session(task)
        steps = goal.max_mpc_steps or self.max_mpc_steps
        executed = JointTrajectory(joint_names=list(JOINT_NAMES))
        start = time.monotonic()
        result = RESULT(executed=executed)
        for mpc_step in range(steps):
            context = self.call(self.snapshot, SnapshotContext.Request(), "snapshot context")
            if not context.success:
                raise GoalFailed(RESULT.ERROR_NO_OBSERVATION, context.message, result)
            joints = torch.tensor(context.joint_positions, dtype=torch.float32)
            self.apply_live_parameters(session, task)

            def on_iteration(info, step=mpc_step):
                feedback = PlanToGoal.Feedback(
                    mpc_step=step, cem_iteration=info.iteration, best_cost=info.best_cost,
                    elite_mean_cost=info.elite_mean_cost,
                    elapsed=seconds_to_duration(time.monotonic() - start))
                handle.publish_feedback(feedback)
                return not self.should_stop(handle)

            tick = session.step(joints, self.evaluate, on_iteration)
            if tick.cancelled or self.should_stop(handle):
                reason = "canceled" if handle.is_cancel_requested else "preempted by a newer goal"
                raise GoalFailed(RESULT.ERROR_CANCELED, reason, result)
            self.send_command(tick.target, executed)
            self.publish_plan(joints, tick.plan.joints)
            self.publish_markers(tick.plan.joints)
            result.final_cost = float(tick.plan.cost)
            self.get_logger().info(f"MPC step {mpc_step + 1}/{steps} (horizon {tick.horizon}): "
                                   f"cost {tick.plan.cost:.4f}")
            deadline = time.monotonic() + self.control_period
            while time.monotonic() < deadline:
                if self.should_stop(handle):
                    raise GoalFailed(RESULT.ERROR_CANCELED, "canceled", result)
                time.sleep(0.02)
        return result

    def make_session(self, task: str) -> MPCSession:
        config, weights = self.settings[task]
        return MPCSession(task, config, self.kinematics, self.camera,
                          weights=weights,
                          action_representation=self.action_representation)

    # ------------------------------------------------------------------ parameters

    def planner_settings(self, task: str, pending: Pending | None = None,
                         ) -> tuple[CEMConfig, CostWeights]:
        """The task's CEM settings and planner-side cost weights from the parameters
        (``pending`` ones replacing them): ``<task>.<field>`` (defaults: the task registry's
        overrides) over the plain ``<field>`` (defaults: the dataclasses')."""
        task_cem, task_cost = self.task_parameters[task]
        config = CEMConfig.for_task(task, **{**self.cem_parameters.values(pending),
                                             **task_cem.values(pending)})
        weights = CostWeights.for_task(task, **{**self.cost_parameters.values(pending),
                                                **task_cost.values(pending)})
        return config, weights

    def check_parameters(self, pending: Pending) -> None:
        """A set is refused when it makes the settings of any task invalid."""
        for task in self.task_parameters:
            self.planner_settings(task, pending)

    def update_settings(self) -> None:
        """Every task's settings from the parameters, swapped in at once (a goal's thread reads
        them while parameters are being set)."""
        self.settings = {task: self.planner_settings(task) for task in self.task_parameters}

    def apply_live_parameters(self, session: MPCSession, task: str) -> None:
        """Live parameters take effect at the next MPC step (read-only ones cannot change)."""
        config, weights = self.settings[task]
        session.planner.config = config
        session.weights = weights

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

    def publish_plan(self, current: torch.Tensor, plan_joints: torch.Tensor) -> None:
        """The whole plan on ``planned_trajectory``: the current joints, then each step."""
        points = [JointTrajectoryPoint(positions=q.tolist(),
                                       time_from_start=seconds_to_duration(i * self.control_period))
                  for i, q in enumerate(torch.cat([current[None], plan_joints]))]
        plan = JointTrajectory(joint_names=list(JOINT_NAMES), points=points)
        plan.header.stamp = self.get_clock().now().to_msg()
        self.plan_pub.publish(plan)

    def publish_markers(self, plan_joints: torch.Tensor) -> None:
        keypoints = self.kinematics.keypoints_world(plan_joints).numpy()
        self.marker_pub.publish(plan_markers(keypoints, self.fixed_frame,
                                             self.get_clock().now().to_msg()))


def main(args=None) -> None:
    run_node(CemPlannerNode, args, threads=4)


if __name__ == "__main__":
    main()
