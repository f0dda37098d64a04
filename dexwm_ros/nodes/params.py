"""Parameter declaration with descriptors (description, range, read-only).

``ConfigParameters`` declares the fields of a core config dataclass (``CEMConfig``,
``CostWeights``) as parameters, taking name, default, description, range and read-only flag
from the fields (``dexwm_ros.core.parameters``): the defaults live on the dataclass and a
parameter file only overrides. ``watch_parameters`` refuses a ``ros2 param set`` that would make
a config invalid (the reason names the problem) and applies the accepted ones.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.node import Node

#: Parameter name -> value of the parameters being set, not yet accepted.
Pending = Mapping[str, Any]


def descriptor(name: str, default, description: str, *, low: float | None = None,
               high: float | None = None, read_only: bool = False) -> ParameterDescriptor:
    """A descriptor; ``low``/``high`` give an inclusive range for int and float parameters."""
    described = ParameterDescriptor(description=description, read_only=read_only)
    if low is not None and high is not None:
        if isinstance(default, bool):
            raise TypeError(f"parameter {name}: a bool has no range")
        if isinstance(default, int):
            described.integer_range = [IntegerRange(from_value=int(low), to_value=int(high))]
        else:
            described.floating_point_range = [FloatingPointRange(from_value=float(low),
                                                                 to_value=float(high))]
    return described


def declare(node: Node, name: str, default, description: str, *,
            low: float | None = None, high: float | None = None, read_only: bool = False):
    """Declare ``name`` with a descriptor and return its value."""
    return node.declare_parameter(name, default, descriptor(
        name, default, description, low=low, high=high, read_only=read_only)).value


class ConfigParameters:
    """Fields of the dataclass ``config_type`` as parameters ``prefix + field`` of ``node``.

    ``fields`` picks some fields (default: all); ``defaults`` replaces some fields' defaults
    (e.g. a task's overrides). Fields not marked ``live`` are declared read-only.
    """

    def __init__(self, node: Node, config_type: type, *, fields: Iterable[str] | None = None,
                 prefix: str = "", defaults: Mapping[str, Any] | None = None) -> None:
        known = {f.name: f for f in dataclasses.fields(config_type)}
        names = tuple(known) if fields is None else tuple(fields)
        unknown = sorted(set(names) - set(known))
        if unknown:
            raise ValueError(f"{config_type.__name__} has no fields {unknown}")
        defaults = dict(defaults or {})
        self.node = node
        self.prefix = prefix
        self.fields = {name: known[name] for name in names}
        for name, spec in self.fields.items():
            meta = spec.metadata
            if "description" not in meta:
                raise ValueError(f"{config_type.__name__}.{name} has no parameter metadata")
            default = defaults.get(name, spec.default)
            value = meta["unset"] if default is None else default
            if isinstance(spec.default, float):  # a float parameter even where 1 is written
                value = float(value)
            value = list(value) if isinstance(value, tuple) else value
            low, high = meta["range"] or (None, None)
            description = meta["description"] + (
                f" (unset: {meta['unset']})" if meta["unset"] is not None else "")
            node.declare_parameter(prefix + name, value, descriptor(
                prefix + name, value, description, low=low, high=high,
                read_only=not meta["live"]))

    def values(self, pending: Pending | None = None) -> dict[str, Any]:
        """Field name -> value from the current parameters, ``pending`` ones replacing them."""
        pending = pending or {}
        out = {}
        for name, spec in self.fields.items():
            key = self.prefix + name
            value = pending[key] if key in pending else self.node.get_parameter(key).value
            if spec.metadata["unset"] is not None and value == spec.metadata["unset"]:
                value = None
            elif isinstance(spec.default, tuple):
                value = tuple(value)
            out[name] = value
        return out


def watch_parameters(node: Node, check: Callable[[Pending], None],
                     apply: Callable[[], None] | None = None) -> None:
    """Refuse a parameter set for which ``check(pending)`` raises ``ValueError`` (its message is
    the reason); after an accepted set call ``apply()`` (which reads the new values)."""

    def on_set(parameters) -> SetParametersResult:
        try:
            check({p.name: p.value for p in parameters})
        except ValueError as error:
            return SetParametersResult(successful=False, reason=str(error))
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(on_set)
    if apply is not None:
        node.add_post_set_parameters_callback(lambda _: apply())


def declare_torch_threads(node: Node) -> None:
    """Read-only ``torch_threads``: CPU threads for torch in this process (0 = torch default).

    Several model processes on few cores should each use 1: oversubscribed OpenMP threads make
    small operations orders of magnitude slower.
    """
    import torch

    threads = declare(node, "torch_threads", 0, "CPU threads for torch, 0 = torch default",
                      low=0, high=256, read_only=True)
    if threads:
        torch.set_num_threads(threads)
