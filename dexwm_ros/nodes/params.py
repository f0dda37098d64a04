"""Parameter declaration with descriptors (description, range, read-only)."""
from __future__ import annotations

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node


def declare(node: Node, name: str, default, description: str, *,
            low: float | None = None, high: float | None = None, read_only: bool = False):
    """Declare ``name`` with a descriptor and return its value.

    ``low``/``high`` give an inclusive range for int and float parameters.
    """
    descriptor = ParameterDescriptor(description=description, read_only=read_only)
    if low is not None and high is not None:
        if isinstance(default, bool):
            raise TypeError(f"parameter {name}: a bool has no range")
        if isinstance(default, int):
            descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=int(high))]
        else:
            descriptor.floating_point_range = [FloatingPointRange(from_value=float(low),
                                                                  to_value=float(high))]
    return node.declare_parameter(name, default, descriptor).value


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
