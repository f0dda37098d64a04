"""run_node: a shutdown that hangs is cut short, with every thread's traceback on stderr."""
import signal
import subprocess
import sys
import time

import pytest

from dexwm_ros.nodes.runner import SHUTDOWN_TIMEOUT

pytestmark = pytest.mark.ros

HANGING_NODE = """
import threading
from rclpy.node import Node
from dexwm_ros.nodes.runner import run_node

def blocked_forever(event):
    event.wait()

class Hanging(Node):
    def __init__(self):
        super().__init__("hanging")
        # a non-daemon thread that never returns: interpreter exit would wait for it forever
        threading.Thread(target=blocked_forever, args=(threading.Event(),)).start()
        print("up", flush=True)

run_node(Hanging)
"""


def test_hanging_shutdown_exits_with_the_tracebacks():
    process = subprocess.Popen([sys.executable, "-c", HANGING_NODE], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "up"
        process.send_signal(signal.SIGTERM)
        start = time.monotonic()
        _, stderr = process.communicate(timeout=SHUTDOWN_TIMEOUT + 30)
        assert time.monotonic() - start >= SHUTDOWN_TIMEOUT - 1  # a clean exit was attempted
        assert process.returncode == 1
        assert "Timeout" in stderr and "blocked_forever" in stderr
    finally:
        process.kill()
        process.wait()
