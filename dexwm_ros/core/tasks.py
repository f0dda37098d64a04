"""The task registry: one record per manipulation task, read by every part of the package.

A ``TaskSpec`` holds what the planner, the cost, the simulator, the ROS nodes and the evaluator
need to know about a task: its name and ``PlanToGoal`` action code, the CEM and cost overrides
of the DexWM paper (appendix B), whether the CEM mean starts from the reference grasp motion,
the success criterion of appendix C.4 and how long it must hold, and the episode length.
The simulator's goal motion of each task lives in ``dexwm_ros.sim.goal_motions`` under the
same name. Adding a task: one record here plus its goal motion there.

Success (appendix C.4), measured by the simulator every control step and held for
``hold_seconds`` (the paper: 10 consecutive steps at its 10 Hz, "approximately 1 second"):

* reach: mean distance of the wrist and the 4 fingertips to their goal positions < 15 cm;
* grasp: wrist-object distance < 20 cm and hand-object contact;
* place: the object within 10 cm of its goal position.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

Measurements = Mapping[str, float | bool]


@dataclass(frozen=True)
class TaskSpec:
    """One task. ``criterion(measurements)`` says whether success holds at this instant;
    ``distance_key`` names the measurement reported as the task distance (metres)."""

    name: str
    code: int
    distance_key: str
    criterion: Callable[[Measurements], bool]
    cem_overrides: Mapping[str, float] = field(default_factory=dict)
    cost_overrides: Mapping[str, float] = field(default_factory=dict)
    reference_grasp_init: bool = False
    hold_seconds: float = 1.0
    max_seconds: float = 12.0

    def hold_steps(self, control_hz: float) -> int:
        """Consecutive control steps that make ``hold_seconds`` at ``control_hz``."""
        return max(1, math.ceil(self.hold_seconds * control_hz - 1e-9))

    def max_steps(self, control_hz: float) -> int:
        """Control steps of one episode at ``control_hz``."""
        return max(1, round(self.max_seconds * control_hz))


#: Default control rate (Hz): the world model's frame rate (paper section 4.2, 5 Hz).
CONTROL_HZ = 5.0

REACH_THRESHOLD = 0.15
GRASP_DISTANCE = 0.20
PLACE_THRESHOLD = 0.10

TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            name="reach", code=0, distance_key="keypoint_distance",
            criterion=lambda m: m["keypoint_distance"] < REACH_THRESHOLD,
            max_seconds=12.0,
        ),
        TaskSpec(
            name="grasp", code=1, distance_key="wrist_object_distance",
            criterion=lambda m: m["wrist_object_distance"] < GRASP_DISTANCE and bool(m["contact"]),
            # the paper adds an end-effector orientation term for grasping without its weight;
            # 0.1 per radian is our choice
            cost_overrides={"orientation_weight": 0.1},
            reference_grasp_init=True,
            max_seconds=16.0,
        ),
        TaskSpec(
            name="place", code=2, distance_key="object_goal_distance",
            criterion=lambda m: m["object_goal_distance"] < PLACE_THRESHOLD,
            cem_overrides={"hand_sigma": 0.01},
            max_seconds=16.0,
        ),
    )
}
TASK_NAMES: tuple[str, ...] = tuple(TASKS)


def task_spec(name: str) -> TaskSpec:
    """The record of task ``name``; a clear error for an unknown name."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose from {TASK_NAMES}")
    return TASKS[name]


def task_by_code(code: int) -> TaskSpec:
    """The record whose ``PlanToGoal`` action code is ``code``."""
    for spec in TASKS.values():
        if spec.code == code:
            return spec
    raise ValueError(f"unknown task code {code}; known: "
                     f"{ {s.code: s.name for s in TASKS.values()} }")
