#!/usr/bin/env python3
"""grasp_task: a task node in simple-commander style.

Resets the simulator to a seeded episode, sends its goal image as a ``PlanToGoal`` goal, prints
feedback and the result, and exits non-zero when the goal fails (or, with
``require_success``, when the task's success criterion was not met).
"""
from __future__ import annotations

import sys
import time

import rclpy
from rclpy.action import ActionClient
from rclpy.node import Node
from rclpy.qos import QoSProfile, QoSReliabilityPolicy

from dexwm_ros.action import PlanToGoal
from dexwm_ros.core.tasks import TASK_NAMES, task_spec
from dexwm_ros.msg import TaskStatus
from dexwm_ros.nodes.conversions import time_to_seconds
from dexwm_ros.nodes.params import declare
from dexwm_ros.srv import ResetTask

ERROR_NAMES = {getattr(PlanToGoal.Result, n): n for n in dir(PlanToGoal.Result)
               if n.startswith("ERROR_")}


class GraspTask(Node):
    def __init__(self) -> None:
        super().__init__("grasp_task")
        self.task = declare(self, "task", "grasp", "reach | grasp | place")
        if self.task not in TASK_NAMES:
            raise ValueError(f"parameter task must be one of {TASK_NAMES}, got {self.task}")
        self.seed = declare(self, "seed", 0, "episode seed", low=0, high=2**31 - 1)
        self.max_mpc_steps = declare(self, "max_mpc_steps", 0,
                                     "MPC steps (0 = planner parameter)", low=0, high=10000)
        self.timeout = declare(self, "timeout", 600.0, "seconds before giving up",
                               low=1.0, high=86400.0)
        self.require_success = declare(self, "require_success", False,
                                       "fail unless the task's success criterion holds")
        self.status: TaskStatus | None = None
        self.create_subscription(TaskStatus, "task_status", self.on_status,
                                 QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE))
        self.reset_client = self.create_client(ResetTask, "reset_task")
        self.action = ActionClient(self, PlanToGoal, "plan_to_goal")

    def on_status(self, msg: TaskStatus) -> None:
        self.status = msg

    def wait(self, future, deadline: float):
        while rclpy.ok() and not future.done():
            if time.monotonic() > deadline:
                raise TimeoutError("timed out waiting for a reply")
            rclpy.spin_once(self, timeout_sec=0.1)
        return future.result()

    def say(self, text: str) -> None:
        print(f"[grasp_task] {text}", flush=True)

    def run(self) -> int:
        deadline = time.monotonic() + self.timeout
        if not self.reset_client.wait_for_service(timeout_sec=self.timeout):
            self.say("the sim's reset_task service did not appear")
            return 2
        reset = self.wait(self.reset_client.call_async(
            ResetTask.Request(task=self.task, seed=self.seed)), deadline)
        if not reset.success:
            self.say(f"reset failed: {reset.message}")
            return 2
        self.say(f"episode: task {self.task}, seed {self.seed}")
        if not self.action.wait_for_server(timeout_sec=self.timeout):
            self.say("the plan_to_goal action server did not appear")
            return 2
        goal = PlanToGoal.Goal(task=task_spec(self.task).code, goal_image=reset.goal_image,
                               max_mpc_steps=self.max_mpc_steps)
        while True:
            result = self.send(goal, deadline)
            if result.error_code != PlanToGoal.Result.ERROR_NO_OBSERVATION:
                break
            self.say("no observation yet, retrying in 1 s")
            time.sleep(1.0)
            if time.monotonic() > deadline:
                break
        name = ERROR_NAMES.get(result.error_code, str(result.error_code))
        self.say(f"result: {name} {result.error_msg}, final cost {result.final_cost:.4f}, "
                 f"{len(result.executed.points)} joint targets executed")
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            rclpy.spin_once(self, timeout_sec=0.1)  # latest task status
        success = self.status is not None and self.status.success
        if self.status is not None:
            self.say(f"task status: success={success}, distance {self.status.distance:.3f} m, "
                     f"contact={self.status.contact}, step {self.status.step}")
        if result.error_code != PlanToGoal.Result.ERROR_NONE:
            return 1
        return 1 if self.require_success and not success else 0

    def send(self, goal, deadline: float) -> PlanToGoal.Result:
        def on_feedback(message):
            f = message.feedback
            self.say(f"MPC step {f.mpc_step} iteration {f.cem_iteration}: best cost "
                     f"{f.best_cost:.4f}, elite mean {f.elite_mean_cost:.4f}, "
                     f"{time_to_seconds(f.elapsed):.1f} s")

        handle = self.wait(self.action.send_goal_async(goal, feedback_callback=on_feedback),
                           deadline)
        if not handle.accepted:
            return PlanToGoal.Result(error_code=PlanToGoal.Result.ERROR_INTERNAL,
                                     error_msg="goal rejected")
        return self.wait(handle.get_result_async(), deadline).result


def main(args=None) -> None:
    rclpy.init(args=args)
    try:
        node = GraspTask()
        code = node.run()
    except (TimeoutError, ValueError) as error:
        print(f"[grasp_task] {error}", flush=True)
        code = 1
    except KeyboardInterrupt:
        code = 130
    rclpy.try_shutdown()
    sys.exit(code)


if __name__ == "__main__":
    main()
