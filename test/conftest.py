"""Shared test set-up: every test run talks DDS on its own ROS domain."""
import os
import random

# One domain per test run (set before any rclpy import), inherited by node subprocesses.
os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 100)))
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
