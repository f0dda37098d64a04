"""How the package's action servers end a goal: one error code per failure, never a crash."""
from __future__ import annotations

from collections.abc import Callable


class GoalFailed(Exception):
    """Ends a goal with ``code``, an ``ERROR_*`` constant of the action's result; ``result``
    is what the goal achieved until then (e.g. the joint targets already executed)."""

    def __init__(self, code: int, message: str, result=None) -> None:
        super().__init__(message)
        self.code = code
        self.result = result


def finish_goal(handle, run_goal: Callable, result_type, logger):
    """Run ``run_goal(handle)`` and end the goal: succeeded on ``ERROR_NONE``, canceled when
    the client asked for it, aborted otherwise (unexpected exceptions become
    ``ERROR_INTERNAL``, logged, and the server keeps serving). Returns the result."""
    result = result_type()
    try:
        result = run_goal(handle)
    except GoalFailed as failure:
        if failure.result is not None:
            result = failure.result
        result.error_code, result.error_msg = failure.code, str(failure)
    except Exception as error:  # noqa: BLE001 - report, keep serving
        logger.error(f"goal failed: {error!r}")
        result.error_code, result.error_msg = result_type.ERROR_INTERNAL, repr(error)
    if result.error_code == result_type.ERROR_NONE:
        handle.succeed()
    elif result.error_code == result_type.ERROR_CANCELED and handle.is_cancel_requested:
        handle.canceled()
    else:
        handle.abort()
    logger.info(f"goal finished: code {result.error_code} {result.error_msg}".rstrip())
    return result
