"""Helpers for tests that talk to nodes from the test process."""
import time

import rclpy


def spin_until(node, predicate, timeout: float):
    """Spin ``node`` until ``predicate()`` is true or ``timeout`` seconds pass; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate():
        rclpy.spin_once(node, timeout_sec=0.05)
    return predicate()
