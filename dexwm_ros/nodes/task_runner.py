#!/usr/bin/env python3
"""task_runner: a task node in simple-commander style.

Resets the simulator to a seeded episode, sends its goal image as a ``PlanToGoal`` goal, prints
feedback and the result, and exits non-zero when the goal fails (or, with
``require_success``, when the task's success criterion was not met). SIGINT/SIGTERM cancel the
running goal and exit with code 0.
"""
from __future__ import annotations

import signal
import time

import rclpy
from rclpy.node import Node

from dexwm_ros.action import PlanToGoal
from dexwm_ros.core.tasks import CONTROL_HZ, TASK_NAMES, task_spec
from dexwm_ros.nodes.conversions import time_to_seconds
from dexwm_ros.nodes.params import declare
from dexwm_ros.nodes.runner import STOP_SIGNALS, Stopped, exit_process, init_ros
from dexwm_ros.nodes.task_client import ERROR_NAMES, TaskClient

#: Seconds to wait for the planner to accept the cancel of the running goal on a signal.
CANCEL_WAIT = 3.0


class TaskRunner(Node):
    def __init__(self) -> None:
        super().__init__("task_runner")
        self.task = declare(self, "task", "grasp", "reach | grasp | place")
        if self.task not in TASK_NAMES:
            raise ValueError(f"parameter task must be one of {TASK_NAMES}, got {self.task}")
        self.seed = declare(self, "seed", 0, "episode seed", low=0, high=2**31 - 1)
        self.max_mpc_steps = declare(self, "max_mpc_steps", 0,
                                     "MPC steps; 0 = the task's episode length (its "
                                     "max_seconds at the 5 Hz control rate)", low=0, high=10000)
        if self.max_mpc_steps == 0:
            self.max_mpc_steps = task_spec(self.task).max_steps(CONTROL_HZ)
        self.timeout = declare(self, "timeout", 600.0, "seconds before giving up",
                               low=1.0, high=86400.0)
        self.require_success = declare(self, "require_success", False,
                                       "fail unless the task's success criterion holds")
        self.client = TaskClient(self, timeout=self.timeout)

    def say(self, text: str) -> None:
        print(f"[task_runner] {text}", flush=True)

    def on_feedback(self, f) -> None:
        self.say(f"MPC step {f.mpc_step} iteration {f.cem_iteration}: best cost "
                 f"{f.best_cost:.4f}, elite mean {f.elite_mean_cost:.4f}, "
                 f"{time_to_seconds(f.elapsed):.1f} s")

    def run(self) -> int:
        deadline = time.monotonic() + self.timeout
        try:
            goal_image = self.client.reset(self.task, self.seed)
        except (TimeoutError, RuntimeError) as error:
            self.say(str(error))
            return 2
        self.say(f"episode: task {self.task}, seed {self.seed}")
        remaining = max(1.0, deadline - time.monotonic())
        result, _ = self.client.run(goal_image, self.task, self.max_mpc_steps,
                                    stop=lambda status: status.success,
                                    on_feedback=self.on_feedback, observation_timeout=remaining,
                                    timeout=remaining)
        name = ERROR_NAMES.get(result.error_code, str(result.error_code))
        self.say(f"result: {name} {result.error_msg}, final cost {result.final_cost:.4f}, "
                 f"{len(result.executed.points)} joint targets executed")
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            rclpy.spin_once(self, timeout_sec=0.1)  # latest task status
        status = self.client.status
        success = status is not None and status.success
        if status is not None:
            self.say(f"task status: success={success}, distance {status.distance:.3f} m, "
                     f"contact={status.contact}, step {status.step}")
        if result.error_code != PlanToGoal.Result.ERROR_NONE and not success:
            return 1
        return 1 if self.require_success and not success else 0

    def cancel_running_goal(self) -> None:
        """Cancel the running goal, if any, waiting at most ``CANCEL_WAIT`` seconds."""
        if self.client.active is None:
            return
        try:
            self.client.wait(self.client.active.cancel_goal_async(), timeout=CANCEL_WAIT)
            self.say("canceled the running goal")
        except Exception as error:  # noqa: BLE001 - the planner may be stopping as well
            self.say(f"could not cancel the running goal: {error!r}")


def main(args=None) -> None:
    init_ros(args)
    node = None
    try:
        node = TaskRunner()
        code = node.run()
    except (TimeoutError, ValueError) as error:
        print(f"[task_runner] {error}", flush=True)
        code = 1
    except Stopped as stopped:
        for sig in STOP_SIGNALS:  # a second signal does not interrupt the cancel
            signal.signal(sig, signal.SIG_IGN)
        if node is not None:
            node.cancel_running_goal()
        print(f"[task_runner] stopped by {stopped}", flush=True)
        code = 0
    if node is not None:
        node.destroy_node()
    rclpy.try_shutdown()
    exit_process(code)


if __name__ == "__main__":
    main()
