"""Common main() for the node executables: clear start-up errors, clean shutdown."""
from __future__ import annotations

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor


class StartupError(RuntimeError):
    """A node cannot start (missing file, bad parameter); the message says why."""


def run_node(node_class, args=None, threads: int = 1) -> int:
    """Create ``node_class()``, spin it, return a process exit code.

    Start-up errors (missing model files, bad parameters) are printed as one clear line and
    give exit code 1 instead of a traceback.
    """
    rclpy.init(args=args)
    try:
        node = node_class()
    except (StartupError, FileNotFoundError, ValueError) as error:
        print(f"[{node_class.__name__}] cannot start: {error}", flush=True)
        rclpy.try_shutdown()
        return 1
    executor = MultiThreadedExecutor(num_threads=threads) if threads > 1 else None
    try:
        if executor is None:
            rclpy.spin(node)
        else:
            executor.add_node(node)
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if rclpy.ok():
            raise
        # A callback interrupted by shutdown (SIGINT/SIGTERM) is not an error.
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
