"""Keep freed memory in the process while planning.

One CEM iteration allocates and frees tensors of several MB (the candidates' activations and
key/value buffers) dozens of times. With glibc's default trimming the freed top of the heap
goes back to the system, and every new tensor then page-faults its pages in again. Keeping
``TOP_PAD_BYTES`` of free heap instead makes the default model's MPC step about 1.2x faster on
2 cores (``benchmarks/allocator.py``); the price is up to that much resident memory that the
process no longer returns. Other allocators (musl, macOS) are left as they are.
"""
from __future__ import annotations

import ctypes
import sys

#: glibc ``mallopt`` parameter number (malloc.h) and the free heap kept at its top
M_TOP_PAD = -2
TOP_PAD_BYTES = 256 << 20


def retain_freed_memory() -> bool:
    """Ask glibc to keep ``TOP_PAD_BYTES`` of freed heap; True if it took effect."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return mallopt(M_TOP_PAD, TOP_PAD_BYTES) == 1
