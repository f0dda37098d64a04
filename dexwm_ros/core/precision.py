"""Whether bf16 pays off on a device: CPUs without native bf16 arithmetic emulate it."""
from __future__ import annotations

import torch


def slow_bf16_reason(device: str | torch.device) -> str | None:
    """Why bf16 would be slower than fp32 on ``device`` (a CPU without AVX512-BF16 or AMX:
    6x slower for the default model's MPC step on an AVX2 CPU), or None where it is native."""
    if torch.device(device).type != "cpu" or torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return None
    return (f"bf16 requested, but this CPU ({torch.backends.cpu.get_cpu_capability()}) has no "
            "native bf16 arithmetic (AVX512-BF16 or AMX): expect it to be several times slower "
            "than fp32")
