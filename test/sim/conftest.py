"""Offscreen MuJoCo rendering must be chosen before mujoco is imported."""
import os

os.environ.setdefault("MUJOCO_GL", "egl")
