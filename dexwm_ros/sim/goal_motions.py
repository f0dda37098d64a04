"""Scripted motions that make each task's start and goal states by physics.

A ``Motion`` holds ``(S, 23)`` joint targets, one per control step, executed by
``DexTask.step`` from the episode's start state, and the waypoints between its segments;
its optional lead-in targets run before that, from the drawn scene, and end where the episode
starts.
Every goal image is the last frame of its task's goal motion actually simulated in the
episode's scene (the paper's goals are frames of
recorded demonstrations, so they show states that physics reached):

* reach: the hand moves to an IK target above the table with a random hand pose;
* grasp: approach above the target object, descend, close the hand on it and hold;
* place: the episode starts with the hand engaged with the target object (its lead-in brings
  the pre-shaped hand down behind it), and the hand pushes it 15-25 cm across the table to a
  free spot (the paper's episodes start with the object grasped and carry it, section 4.5;
  see ``place_goal`` for why we push).

``GOAL_MOTIONS`` is keyed by the task names of ``dexwm_ros.core.tasks``. Each motion
function returns the joint targets, or ``None`` when this draw cannot work (e.g. no reachable
target), in which case the episode is resampled deterministically.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from dexwm_ros.sim.scene import OBJECT_REGION, TABLE_TOP_Z

if TYPE_CHECKING:
    from dexwm_ros.sim.tasks import DexTask

#: Hand joint presets (16,): index, middle, ring (abduction, 3 flexions), thumb.
HAND_OPEN = np.array([0.0, 0.1, 0.1, 0.1] * 3 + [0.6, 0.1, 0.1, 0.1])
HAND_CLOSED = np.array([0.0, 1.3, 1.3, 1.0] * 3 + [1.3, 0.9, 0.9, 0.9])
#: Claw pre-shape for top-down grasps: curled fingertips ~0.17 m below and ~0.1 m in front
#: of the wrist (palm side, world +x with ``HAND_DOWN``).
HAND_PRESHAPE = np.array([0.0, 0.6, 0.6, 0.4] * 3 + [1.0, 0.5, 0.4, 0.4])
#: Wrist orientation with the hand pointing down and the palm facing +x (world).
HAND_DOWN = np.array([[1.0, 0, 0], [0, -1.0, 0], [0, 0, -1.0]])
#: Top-down grasp: the wrist sits behind the object along -x; the pre-shaped fingertips reach
#: ``GRASP_TIP_DROP`` below the wrist, and go down to ``GRASP_TIP_FRACTION`` of the object's
#: height (at least ``GRASP_TIP_MIN`` above the table).
GRASP_WRIST_OFFSET = np.array([-0.06, 0.0, 0.0])
GRASP_TIP_DROP = 0.17
GRASP_TIP_FRACTION = 0.35
GRASP_TIP_MIN = 0.012
#: Height of the approach above the grasp (or push) pose.
APPROACH_HEIGHT = 0.12
#: Push (``place``): the pre-shaped fingertips this high above the table, the wrist this far
#: behind the object's near side.
PUSH_TIP_HEIGHT = 0.025
PUSH_STANDOFF = 0.11
#: Seconds the hand holds still behind the object at the end of the place lead-in.
LEAD_IN_SETTLE = 0.4


def yaw_rotation(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


@dataclass(frozen=True)
class Motion:
    """Joint targets ``(S, 23)``, one per control step, and the segment ends they pass
    through (``waypoints`` ``(W, 23)``, the last one where the motion ends); ``lead_in``
    ``(S0, 23)`` targets, when given, run before the episode starts and end at its start."""

    targets: np.ndarray
    waypoints: np.ndarray
    lead_in: np.ndarray | None = None


def interpolate(start: np.ndarray, segments: list[tuple[np.ndarray, float]],
                control_hz: float) -> Motion:
    """Linear from ``start`` through each ``(target, seconds)`` segment."""
    out, previous = [], np.asarray(start, float)
    for target, seconds in segments:
        steps = max(1, round(seconds * control_hz))
        fractions = np.arange(1, steps + 1)[:, None] / steps
        out.append(previous + fractions * (np.asarray(target, float) - previous))
        previous = np.asarray(target, float)
    waypoints = [np.asarray(t, float) for t, _ in segments]
    distinct = [w for i, w in enumerate(waypoints)
                if i == 0 or not np.allclose(w, waypoints[i - 1])]
    return Motion(np.concatenate(out), np.stack(distinct))


def grasp_wrist_position(task: DexTask, k: int, xy: np.ndarray | None = None,
                         lift: float = 0.0) -> np.ndarray:
    """Wrist position of a top-down grasp of object ``k`` (at ``xy``, default where it is)."""
    height = task.scene.object_heights[k]
    tips = TABLE_TOP_Z + max(GRASP_TIP_MIN, GRASP_TIP_FRACTION * height)
    xy = task.object_positions[k, :2] if xy is None else np.asarray(xy, float)
    return np.array([xy[0], xy[1], tips + GRASP_TIP_DROP + lift]) + GRASP_WRIST_OFFSET


def _ik(task: DexTask, position, hand, q_init, rotation=HAND_DOWN) -> np.ndarray | None:
    q, err = task.wrist_ik(position, rotation, hand, q_init=q_init)
    return q if err < 0.01 else None


def grasp_segments(task: DexTask, k: int, start: np.ndarray, xy: np.ndarray | None = None
                   ) -> list[tuple[np.ndarray, float]] | None:
    """Approach above object ``k`` (at ``xy``, default where it is), descend with the
    pre-shaped hand, close it."""
    above = _ik(task, grasp_wrist_position(task, k, xy, lift=APPROACH_HEIGHT), HAND_PRESHAPE,
                start)
    if above is None:
        return None
    down = _ik(task, grasp_wrist_position(task, k, xy), HAND_PRESHAPE, above)
    if down is None:
        return None
    closed = down.copy()
    closed[7:] = HAND_CLOSED
    return [(above, 1.2), (down, 0.8), (closed, 0.8)]


# ---------------------------------------------------------------------------- reach

def reach_goal(task: DexTask, rng: np.random.Generator) -> Motion | None:
    """Move to a reachable IK target above the table, at least 25 cm (mean keypoint) away."""
    (x0, x1), (y0, y1) = OBJECT_REGION
    start_q = task.joint_positions()
    start = task.keypoint_positions()
    for _ in range(30):
        target = rng.uniform([x0, y0, TABLE_TOP_Z + 0.25], [x1, y1, TABLE_TOP_Z + 0.4])
        rotation = HAND_DOWN @ yaw_rotation(rng.uniform(-0.5, 0.5))
        hand = rng.uniform(HAND_OPEN, 0.6 * HAND_CLOSED + 0.4 * HAND_OPEN)
        q = _ik(task, target, hand, start_q, rotation)
        if q is None:
            continue
        if np.linalg.norm(task.keypoint_positions_at(q) - start, axis=1).mean() > 0.25:
            return interpolate(start_q, [(q, 2.0)], task.control_hz)
    return None


# ---------------------------------------------------------------------------- grasp

def grasp_goal(task: DexTask, rng: np.random.Generator) -> Motion | None:
    """Approach, close the hand on the target object, and hold it there."""
    start = task.joint_positions()
    segments = grasp_segments(task, task.target_object, start)
    if segments is None:
        return None
    closed = segments[-1][0]
    return interpolate(start, segments + [(closed, task.hold_seconds + 0.4)], task.control_hz)


# ---------------------------------------------------------------------------- place

def place_goal(task: DexTask, rng: np.random.Generator) -> Motion | None:
    """Push the target object 15-25 cm across the table to a free spot, palm first.

    The lead-in brings the hand (pointing down, pre-shaped, palm towards the push direction)
    down behind the object, where the episode starts; the motion then pushes it along the
    table. The paper's place episodes "begin with the object already grasped" (section 4.5)
    and carry it; our Allegro model cannot yet hold these objects off the table (see the
    README), so the episode starts with the hand ready to push instead, and the object moves
    by pushing.
    """
    k = task.target_object
    (x0, x1), (y0, y1) = OBJECT_REGION
    origin = task.object_positions[k]
    radius = task.scene.object_radii[k]
    others = [j for j in range(len(task.object_positions)) if j != k]
    start = task.joint_positions()
    for _ in range(30):
        angle, distance = rng.uniform(-math.pi, math.pi), rng.uniform(0.15, 0.25)
        push = np.array([math.cos(angle), math.sin(angle), 0.0])
        goal_xy = origin[:2] + distance * push[:2]
        inside = x0 <= goal_xy[0] <= x1 and y0 <= goal_xy[1] <= y1
        free = all(np.linalg.norm(goal_xy - task.object_positions[j, :2]) >
                   task.scene.object_radii[j] + radius + 0.08 for j in others)
        if not (inside and free):
            continue
        segments = push_segments(task, k, angle, distance, start)
        if segments is None:
            continue
        (behind, _), (pushed, push_seconds) = segments[1:]
        lead_in = interpolate(start, segments[:2] + [(behind, LEAD_IN_SETTLE)], task.control_hz)
        push = interpolate(behind, [(pushed, push_seconds), (pushed, task.hold_seconds + 0.4)],
                           task.control_hz)
        return Motion(push.targets, push.waypoints, lead_in.targets)
    return None


def push_wrist_position(task: DexTask, k: int, angle: float, travel: float,
                        lift: float = 0.0, origin: np.ndarray | None = None) -> np.ndarray:
    """Wrist position of a push of object ``k`` (at ``origin``, default where it is) towards
    world yaw ``angle`` after ``travel`` metres (0: the pre-shaped fingertips just behind the
    object, at ``PUSH_TIP_HEIGHT``)."""
    push = np.array([math.cos(angle), math.sin(angle), 0.0])
    origin = task.object_positions[k] if origin is None else np.asarray(origin, float)
    point = origin + push * (travel - task.scene.object_radii[k] - PUSH_STANDOFF)
    point[2] = TABLE_TOP_Z + PUSH_TIP_HEIGHT + GRASP_TIP_DROP + lift
    return point


def push_segments(task: DexTask, k: int, angle: float, distance: float, start: np.ndarray,
                  origin: np.ndarray | None = None) -> list[tuple[np.ndarray, float]] | None:
    """Come down behind object ``k`` (at ``origin``, default where it is; palm towards yaw
    ``angle``) and push it ``distance`` metres along the table."""
    rotation = yaw_rotation(angle) @ HAND_DOWN
    above = _ik(task, push_wrist_position(task, k, angle, 0.0, APPROACH_HEIGHT, origin),
                HAND_PRESHAPE, start, rotation)
    if above is None:
        return None
    behind = _ik(task, push_wrist_position(task, k, angle, 0.0, origin=origin), HAND_PRESHAPE,
                 above, rotation)
    if behind is None:
        return None
    pushed = _ik(task, push_wrist_position(task, k, angle, distance, origin=origin),
                 HAND_PRESHAPE, behind, rotation)
    if pushed is None:
        return None
    return [(above, 1.2), (behind, 0.8), (pushed, 1.0 + 5.0 * distance)]


GoalMotion = Callable[["DexTask", np.random.Generator], "Motion | None"]

#: The goal motion of each task, keyed by the task names of ``dexwm_ros.core.tasks``.
GOAL_MOTIONS: dict[str, GoalMotion] = {
    "reach": reach_goal,
    "grasp": grasp_goal,
    "place": place_goal,
}
