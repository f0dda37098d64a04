"""Common main() for the node executables: clear start-up errors, clean and prompt shutdown.

SIGINT and SIGTERM are handled here instead of by rclpy (whose handlers shut the ROS context
down under callbacks that are still running, which then fail with tracebacks). Once the node
and the ROS context are shut down, the process ends without the interpreter's finalization
(``exit_process``): that garbage-collects every module (torch, MuJoCo; seconds on a loaded
machine) and runs the C libraries' exit handlers (Fast DDS, LTTng), after Python's shutdown
watchdog is gone, so a hang there would never end.
"""
from __future__ import annotations

import atexit
import faulthandler
import os
import signal
import sys
import threading
import time
import traceback
from typing import NoReturn

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions

#: Seconds that callbacks still running at SIGINT/SIGTERM get to finish before they are
#: abandoned (e.g. one blocked in a service call whose server is gone).
CALLBACK_GRACE = 2.0
#: Seconds between checks for a stop request while the executor waits for work.
POLL_PERIOD = 0.1
#: Seconds from a stop request until a shutdown that hangs (a thread that never returns, at
#: node destruction or interpreter exit) is cut short: every thread's traceback goes to
#: stderr and the process exits with code 1.
SHUTDOWN_TIMEOUT = 10.0
#: Seconds from a stop request until the kernel ends the process (SIGALRM, default action)
#: should even the traceback dump of ``SHUTDOWN_TIMEOUT`` not end it.
SHUTDOWN_KILL = 15
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StartupError(RuntimeError):
    """A node cannot start (missing file, bad parameter); the message says why."""


class Stopped(BaseException):
    """SIGINT or SIGTERM arrived (a BaseException, like KeyboardInterrupt, so that no
    ``except Exception`` swallows it)."""


def _raise_stopped(signum, frame) -> None:
    raise Stopped(signal.Signals(signum).name)


#: Set by dexwm-launch to its own pid: the node is then tied to the launcher's life.
PARENT_ENV = "DEXWM_LAUNCHER_PID"
#: prctl option: the signal a process gets when its parent dies (linux/prctl.h).
PR_SET_PDEATHSIG = 1
#: Seconds between checks that the launcher is still alive.
LAUNCHER_POLL = 0.5


def _launcher_gone() -> bool:
    """Whether this node was started by dexwm-launch (``PARENT_ENV``) and that has died."""
    launcher = os.environ.get(PARENT_ENV)
    return bool(launcher) and os.getppid() != int(launcher)


def _stop_with_launcher() -> None:
    """Tie this process to the launcher named in ``PARENT_ENV``: SIGTERM when it dies (Linux
    ``PR_SET_PDEATHSIG``; the spin loop also checks ``_launcher_gone``, in case that signal is
    lost or blocked), and a watcher thread that starts the shutdown deadline
    (``_limit_shutdown``) once the launcher is gone. The deadline holds even while the main
    thread is blocked in C code (a render, a DDS call), where neither Python signal handlers
    nor the spin loop get to run."""
    if not os.environ.get(PARENT_ENV):
        return
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if _launcher_gone():  # the launcher died before prctl took effect
        raise Stopped("SIGTERM")
    threading.Thread(target=_watch_launcher, name="launcher-watch", daemon=True).start()


def _watch_launcher() -> None:
    while not _launcher_gone():
        time.sleep(LAUNCHER_POLL)
    _limit_shutdown()


def _limit_shutdown() -> None:
    """From now on the process ends within ``SHUTDOWN_TIMEOUT`` seconds (tracebacks, code 1),
    at the latest ``SHUTDOWN_KILL`` seconds (killed by SIGALRM, whose default action
    ``init_ros`` restores), whatever hangs. Callable from any thread."""
    faulthandler.dump_traceback_later(SHUTDOWN_TIMEOUT, exit=True)
    signal.alarm(SHUTDOWN_KILL)


def init_ros(args=None) -> None:
    """``rclpy.init`` without rclpy's signal handlers; SIGINT/SIGTERM raise ``Stopped``."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _raise_stopped)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    _stop_with_launcher()
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)


def exit_process(code: int, abandon_threads: bool = False) -> NoReturn:
    """End the process with ``code`` as the interpreter would, up to its finalization: wait
    for non-daemon threads (unless ``abandon_threads``: callbacks that are still running),
    run ``atexit`` callbacks, flush stdout/stderr; then ``os._exit``."""
    if not abandon_threads:
        for thread in threading.enumerate():
            if thread is not threading.main_thread() and not thread.daemon:
                thread.join()
        atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe (the launcher is gone)
            pass
    os._exit(code)


def run_node(node_class, args=None, threads: int = 1) -> NoReturn:
    """Create ``node_class()``, spin it until SIGINT or SIGTERM, then end the process
    (``exit_process``).

    Start-up errors (missing model files, bad parameters) are printed as one clear line and
    give exit code 1 instead of a traceback. A signal during start-up exits at once (code 0).
    Afterwards a signal (or, under dexwm-launch, the launcher's death) stops the spinning;
    callbacks still running get ``CALLBACK_GRACE`` seconds to finish while the ROS context is
    still valid, then the node is destroyed and the process exits with code 0 (code 1 when a
    callback raised; its traceback is printed).
    Callbacks still running after the grace (a long computation, a wait for a reply that no
    longer comes) are abandoned. A shutdown still not done after ``SHUTDOWN_TIMEOUT`` seconds
    (a non-daemon thread that never returns, too) prints every thread's traceback and exits
    with code 1, and one still not done after ``SHUTDOWN_KILL`` seconds is killed.
    """
    stop = threading.Event()
    try:
        init_ros(args)
        node = node_class()
        for sig in STOP_SIGNALS:  # inside the try: a signal just before this is Stopped too
            signal.signal(sig, lambda signum, frame: stop.set())
    except (StartupError, FileNotFoundError, ValueError) as error:
        _limit_shutdown()
        print(f"[{node_class.__name__}] cannot start: {error}", flush=True)
        rclpy.try_shutdown()
        exit_process(1)
    except Stopped:
        _limit_shutdown()
        rclpy.try_shutdown()
        exit_process(0)
    executor = (MultiThreadedExecutor(num_threads=threads) if threads > 1
                else SingleThreadedExecutor())
    executor.add_node(node)
    code = 0
    try:
        while not stop.is_set() and rclpy.ok() and not _launcher_gone():
            executor.spin_once(timeout_sec=POLL_PERIOD)
    except ExternalShutdownException:
        pass
    except Exception:
        traceback.print_exc()
        code = 1
    _limit_shutdown()
    finished = threading.Thread(target=executor.shutdown, daemon=True)
    finished.start()
    finished.join(CALLBACK_GRACE)
    if finished.is_alive():
        node.get_logger().warning(f"callbacks still running after {CALLBACK_GRACE:.0f} s; "
                                  "exiting without them")
        exit_process(code, abandon_threads=True)
    node.destroy_node()
    rclpy.try_shutdown()
    exit_process(code)
