"""MuJoCo simulation: the FR3 + Allegro robot, robosuite table scenes, tasks, exploration data.

Offscreen rendering needs ``MUJOCO_GL=egl`` (or ``osmesa``) set before mujoco is first
imported; importing this package sets ``egl`` unless the variable is already set.
"""
import os

os.environ.setdefault("MUJOCO_GL", "egl")

from dexwm_ros.sim.tasks import BACKENDS, TASKS, DexTask, make_task  # noqa: E402

__all__ = ["BACKENDS", "TASKS", "DexTask", "make_task"]
