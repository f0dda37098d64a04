"""Helpers for tests that talk to nodes from the test process or watch node processes."""
import time

import rclpy


def spin_until(node, predicate, timeout: float):
    """Spin ``node`` until ``predicate()`` is true or ``timeout`` seconds pass; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate():
        rclpy.spin_once(node, timeout_sec=0.05)
    return predicate()


def observing(node, timeout: float) -> bool:
    """Spin until world_model_server has an observation (latents with their joint state) in
    its context, so that a goal sent next is planned, not refused with ERROR_NO_OBSERVATION."""
    from dexwm_ros.srv import SnapshotContext

    client = node.create_client(SnapshotContext, "snapshot_context")
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if client.service_is_ready():
                future = client.call_async(SnapshotContext.Request())
                if spin_until(node, future.done, deadline - time.monotonic()) and \
                        future.result().success:
                    return True
            spin_until(node, lambda: False, 0.2)
        return False
    finally:
        node.destroy_client(client)


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait up to ``timeout`` seconds for the processes to end; return those still alive."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if alive(p)]
