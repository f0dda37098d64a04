"""A small client for task nodes (in the style of nav2's simple commander).

``TaskClient`` wraps an rclpy node and talks to the graph: reset the simulator to a seeded
episode (``reset_task``) or fetch its goal image (``get_goal_image``), send a ``PlanToGoal``
goal with a feedback callback, follow ``task_status`` while the goal runs, stop early when a
condition on the status holds (e.g. the task succeeded), cancel, and return the result::

    client = TaskClient(node)
    goal_image = client.reset("grasp", seed=3)
    result, status = client.run(goal_image, "grasp", max_mpc_steps=40,
                                stop=lambda s: s.success)

Used by the ``task_runner`` node and by ``dexwm-eval-sim --ros``. All calls spin the node
themselves, so it must not be spun by an executor elsewhere at the same time.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import rclpy
from rclpy.action import ActionClient
from rclpy.node import Node
from rclpy.qos import QoSProfile, QoSReliabilityPolicy

from dexwm_ros.action import PlanToGoal
from dexwm_ros.core.tasks import task_spec
from dexwm_ros.msg import TaskStatus
from dexwm_ros.srv import GetGoalImage, ResetTask

ERROR_NAMES = {getattr(PlanToGoal.Result, n): n for n in dir(PlanToGoal.Result)
               if n.startswith("ERROR_")}


class TaskClient:
    """Reset episodes, send goals, follow their progress (see the module docstring)."""

    def __init__(self, node: Node, timeout: float = 600.0) -> None:
        self.node = node
        self.timeout = timeout
        self.status: TaskStatus | None = None
        self.statuses: list[TaskStatus] = []
        self.active = None  # the handle of the goal being waited for
        node.create_subscription(TaskStatus, "task_status", self._on_status,
                                 QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE))
        self.reset_client = node.create_client(ResetTask, "reset_task")
        self.goal_image_client = node.create_client(GetGoalImage, "get_goal_image")
        self.action = ActionClient(node, PlanToGoal, "plan_to_goal")

    def _on_status(self, msg: TaskStatus) -> None:
        self.status = msg
        self.statuses.append(msg)

    def wait(self, future, timeout: float | None = None):
        """Spin until ``future`` is done; ``TimeoutError`` after ``timeout`` seconds."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while rclpy.ok() and not future.done():
            if time.monotonic() > deadline:
                raise TimeoutError("timed out waiting for a reply")
            rclpy.spin_once(self.node, timeout_sec=0.05)
        return future.result()

    def _service(self, client, request, what: str):
        if not client.wait_for_service(timeout_sec=self.timeout):
            raise TimeoutError(f"the {what} service '{client.srv_name}' did not appear")
        reply = self.wait(client.call_async(request))
        if not reply.success:
            raise RuntimeError(f"{what} failed: {reply.message}")
        return reply

    def reset(self, task: str, seed: int):
        """Reset the simulator to the episode ``(task, seed)``; returns its goal image."""
        reply = self._service(self.reset_client, ResetTask.Request(task=task, seed=seed),
                              "reset_task")
        self.status, self.statuses = None, []
        return reply.goal_image

    def goal_image(self):
        """The current episode's goal image (``get_goal_image``)."""
        return self._service(self.goal_image_client, GetGoalImage.Request(),
                             "get_goal_image").goal_image

    def send(self, goal_image, task: str, max_mpc_steps: int = 0,
             on_feedback: Callable | None = None):
        """Send a ``PlanToGoal`` goal; returns the accepted goal handle."""
        if not self.action.wait_for_server(timeout_sec=self.timeout):
            raise TimeoutError("the plan_to_goal action server did not appear")
        goal = PlanToGoal.Goal(task=task_spec(task).code, goal_image=goal_image,
                               max_mpc_steps=max_mpc_steps)
        feedback = None if on_feedback is None else (lambda m: on_feedback(m.feedback))
        handle = self.wait(self.action.send_goal_async(goal, feedback_callback=feedback))
        if not handle.accepted:
            raise RuntimeError("plan_to_goal rejected the goal")
        return handle

    def cancel(self, handle) -> None:
        """Ask the planner to cancel ``handle``'s goal (it stops within one CEM iteration)."""
        self.wait(handle.cancel_goal_async())

    def result(self, handle, stop: Callable[[TaskStatus], bool] | None = None,
               timeout: float | None = None) -> PlanToGoal.Result:
        """Wait for the goal's result; cancel it first once ``stop(task_status)`` holds."""
        future = handle.get_result_async()
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        cancelled = False
        self.active = handle  # stays set if the wait is interrupted, so it can be cancelled
        while rclpy.ok() and not future.done():
            if time.monotonic() > deadline:
                raise TimeoutError("timed out waiting for the plan_to_goal result")
            rclpy.spin_once(self.node, timeout_sec=0.05)
            if not cancelled and stop is not None and self.status is not None and \
                    stop(self.status):
                handle.cancel_goal_async()
                cancelled = True
        self.active = None
        return future.result().result

    def run(self, goal_image, task: str, max_mpc_steps: int = 0,
            stop: Callable[[TaskStatus], bool] | None = None,
            on_feedback: Callable | None = None, observation_timeout: float = 0.0,
            timeout: float | None = None) -> tuple[PlanToGoal.Result, TaskStatus | None]:
        """Send a goal and wait for it (see ``result``); returns the result and last status.
        While the planner has no observation yet (``ERROR_NO_OBSERVATION``, e.g. just after
        start-up) the goal is sent again, for up to ``observation_timeout`` seconds."""
        deadline = time.monotonic() + observation_timeout
        while True:
            result = self.result(self.send(goal_image, task, max_mpc_steps, on_feedback), stop,
                                 timeout)
            if (result.error_code != PlanToGoal.Result.ERROR_NO_OBSERVATION
                    or time.monotonic() > deadline):
                return result, self.status
            end = time.monotonic() + 0.5
            while time.monotonic() < end:
                rclpy.spin_once(self.node, timeout_sec=0.05)
