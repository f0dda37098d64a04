"""dexwm-launch stops its whole graph on SIGTERM and SIGINT, and leaves no node behind when it
is killed itself."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from ros_testing import alive, wait_gone

pytestmark = pytest.mark.ros


def _launch() -> tuple[subprocess.Popen, list[int]]:
    launcher = subprocess.Popen([sys.executable, "-u", "-m", "dexwm_ros.nodes.launcher", "sim"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    for line in launcher.stdout:
        started = re.findall(r"\(pid (\d+)\)", line)
        if started:
            pids = [int(p) for p in started]
            break
        assert time.monotonic() < deadline, "the launcher did not start its nodes"
    else:
        pytest.fail("the launcher exited before starting its nodes")
    for line in launcher.stdout:  # wait until the sim node is up and running
        if "sim: task" in line:
            break
        assert time.monotonic() < deadline + 60, "the sim node did not come up"
    return launcher, pids


def _describe(pid: int) -> str:
    """Command line, state and the kernel wait channel of each thread of a process, for a
    failure message."""
    try:
        with open(f"/proc/{pid}/cmdline") as cmdline, open(f"/proc/{pid}/stat") as stat:
            command = cmdline.read().replace(chr(0), " ")
            state = stat.read().split(")")[-1].split()[0]
        threads = []
        for task in sorted(os.listdir(f"/proc/{pid}/task"), key=int):
            with open(f"/proc/{pid}/task/{task}/comm") as comm, \
                    open(f"/proc/{pid}/task/{task}/wchan") as wchan:
                threads.append(f"{comm.read().strip()}: {wchan.read()}")
        return f"{pid} {command} state {state}, threads waiting in {'; '.join(threads)}"
    except OSError:
        return f"{pid} (gone)"


def _kill_left_over(launcher: subprocess.Popen, pids: list[int]) -> None:
    """After a failed test: no launcher or node may leak into the rest of the run."""
    for pid in [launcher.pid, *pids]:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    launcher.wait(timeout=10)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_stops_the_whole_graph(sig, code):
    launcher, pids = _launch()
    try:
        launcher.send_signal(sig)
        assert launcher.wait(timeout=60) == code
        assert wait_gone(pids, 10) == []
    finally:
        _kill_left_over(launcher, pids)


def test_killed_launcher_leaves_no_node_behind():
    launcher, pids = _launch()
    try:
        os.kill(launcher.pid, signal.SIGKILL)
        launcher.wait(timeout=10)
        survivors = wait_gone(pids, 60)  # SIGTERM (PR_SET_PDEATHSIG), then a clean shutdown
        assert survivors == [], [_describe(pid) for pid in survivors]
    finally:
        _kill_left_over(launcher, pids)


BLOCKED_NODE = """
import ctypes
from dexwm_ros.nodes.runner import init_ros
init_ros()
print("ready", flush=True)
mutex = ctypes.create_string_buffer(64)  # a default pthread mutex, locked twice: a deadlock
libc = ctypes.CDLL(None)
libc.pthread_mutex_lock(mutex)
libc.pthread_mutex_lock(mutex)
"""
LAUNCHER = f"""
import os, subprocess, sys, time
from dexwm_ros.nodes.runner import PARENT_ENV
env = dict(os.environ, **{{PARENT_ENV: str(os.getpid())}})
node = subprocess.Popen([sys.executable, "-c", {BLOCKED_NODE!r}], env=env,
                        stdout=subprocess.PIPE, text=True)
assert node.stdout.readline() == "ready\\n"
print(node.pid, flush=True)
time.sleep(600)
"""


def test_node_blocked_in_c_code_still_ends_with_its_launcher():
    """A node whose main thread never returns to Python (its SIGTERM handler cannot run)
    still ends once its launcher is killed: the shutdown deadline starts from another thread."""
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER], stdout=subprocess.PIPE,
                                text=True)
    node = int(launcher.stdout.readline())
    try:
        os.kill(launcher.pid, signal.SIGKILL)
        launcher.wait(timeout=10)
        assert wait_gone([node], 30) == [], _describe(node)
    finally:
        _kill_left_over(launcher, [node])
