"""MuJoCo simulation: the FR3 + Allegro robot, robosuite table scenes, tasks, exploration data.

Offscreen rendering needs ``MUJOCO_GL=egl`` (or ``osmesa``) set before mujoco is first
imported; importing this package sets ``egl`` unless the variable is already set. The task API
is imported on first use, so ``dexwm_ros.sim.episode_format`` loads without MuJoCo.
"""
import importlib
import os

os.environ.setdefault("MUJOCO_GL", "egl")

__all__ = ["BACKENDS", "TASKS", "DexTask", "make_task"]


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module("dexwm_ros.sim.tasks"), name)
    raise AttributeError(f"module 'dexwm_ros.sim' has no attribute {name!r}")
