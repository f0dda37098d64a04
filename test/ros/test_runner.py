"""run_node: a shutdown that hangs is cut short, with every thread's traceback on stderr; a node
started by dexwm-launch stops when the launcher dies."""
import os
import signal
import subprocess
import sys
import time

import pytest
from ros_testing import alive, wait_gone

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


QUIET_NODE = """
from rclpy.node import Node
from dexwm_ros.nodes.runner import run_node

class Quiet(Node):
    def __init__(self):
        super().__init__("quiet")
        print("up", flush=True)

run_node(Quiet)
"""

#: A stand-in launcher: it starts the node with SIGTERM blocked (a signal mask survives exec),
#: so that the node's death signal stays pending, as if lost; then waits to be killed.
LAUNCHER_LOSING_SIGNALS = """
import os, signal, subprocess, sys, time
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
env = dict(os.environ, DEXWM_LAUNCHER_PID=str(os.getpid()))
node = subprocess.Popen([sys.executable, "-c", sys.argv[1]], env=env, stdout=subprocess.PIPE,
                        text=True)
assert node.stdout.readline().strip() == "up"
print(node.pid, flush=True)
time.sleep(600)
"""


def test_node_stops_when_its_launcher_dies_even_without_the_death_signal():
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER_LOSING_SIGNALS, QUIET_NODE],
                                stdout=subprocess.PIPE, text=True)
    node = int(launcher.stdout.readline())
    try:
        launcher.kill()
        launcher.wait()
        assert wait_gone([node], SHUTDOWN_TIMEOUT) == [], "the node outlived its launcher"
    finally:
        if alive(node):
            os.kill(node, signal.SIGKILL)
