"""Field metadata that makes a config dataclass a set of node parameters.

``parameter(default, description, ...)`` is ``dataclasses.field`` with the facts a parameter
needs kept on the field: a description, an inclusive range (``low``/``high``), whether the value
may change while running (``live``: the users read the field anew at every use, e.g. every
``CEMPlanner.plan`` call or scoring call) and, for an optional field, the value that stands for
``None`` where ``None`` cannot be written (``unset``). ``dexwm_ros.nodes.params`` declares such
fields as ROS parameters.
"""
from __future__ import annotations

from dataclasses import field


def parameter(default, description: str, *, low: float | None = None, high: float | None = None,
              live: bool = False, unset=None):
    """A dataclass field with parameter metadata (see the module docstring)."""
    if (low is None) != (high is None):
        raise ValueError(f"parameter {description!r}: give both low and high, or neither")
    if default is None and unset is None:
        raise ValueError(f"parameter {description!r}: a None default needs an unset value")
    metadata = {"description": description, "live": live, "unset": unset,
                "range": None if low is None else (low, high)}
    return field(default=default, metadata=metadata)
