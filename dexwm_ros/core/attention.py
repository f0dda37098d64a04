"""Scaled dot-product attention for the predictor, the keypoint head and the action tokens.

On a CPU, the fused kernel (``F.scaled_dot_product_attention``) is slower than the plain
``softmax(q k^T / sqrt(d)) v`` at the small sizes of a CPU world model (a few dozen tokens per
frame, head width 32: about 1.2-1.6x, ``benchmarks/predictor.py``); at paper sizes and on GPUs
the fused kernel wins and is used.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

#: Longest key sequence computed with the plain form on a CPU.
PLAIN_CPU_MAX_KEYS = 256


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``(..., Lq, Dh)``, ``(..., Lk, Dh)``, ``(..., Lk, Dv)`` -> ``(..., Lq, Dv)``, no mask."""
    if q.device.type != "cpu" or k.shape[-2] > PLAIN_CPU_MAX_KEYS:
        return F.scaled_dot_product_attention(q, k, v)
    scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-2, -1))
    return torch.matmul(scores.softmax(dim=-1).to(v.dtype), v)
