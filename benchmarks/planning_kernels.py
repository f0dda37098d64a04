"""The predictor's fp32 CPU inference kernels against the fused kernels used with autograd.

At the planner's shapes with the default world model (N=512 candidates, 28 tokens per frame,
2 heads of 32, MLP width 128): attention of one frame's queries to 28, 56 and 84 keys (its
own frame, and 1 or 2 more as the horizon grows) with ``predictor.attention`` (batched
matmuls and an in-place softmax) against ``F.scaled_dot_product_attention``, and GELU-tanh
as ``predictor.TanhGELU`` (in place, ``x sigmoid(2z)``) against ``F.gelu``. Both pairs compute
the same function; the largest difference is printed. Run with no arguments (under a minute).
"""
from __future__ import annotations

import os
import time

import torch
import torch.nn.functional as F

from dexwm_ros.core.predictor import TanhGELU, attention

CANDIDATES, TOKENS, HEADS, HEAD_DIM, MLP_WIDTH = 512, 28, 2, 32, 128


def median_ms(fn, *args, reps: int = 40) -> float:
    for _ in range(3):
        fn(*args)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return 1000 * sorted(times)[reps // 2]


def main() -> None:
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    generator = torch.Generator().manual_seed(0)
    gelu = TanhGELU()
    with torch.inference_mode():
        for keys in (TOKENS, 2 * TOKENS, 3 * TOKENS):
            q = torch.randn(CANDIDATES, HEADS, TOKENS, HEAD_DIM, generator=generator)
            k, v = (torch.randn(CANDIDATES, HEADS, keys, HEAD_DIM, generator=generator)
                    for _ in range(2))
            fused = median_ms(F.scaled_dot_product_attention, q, k, v)
            ours = median_ms(attention, q, k, v)
            diff = (attention(q, k, v) - F.scaled_dot_product_attention(q, k, v)).abs().max()
            print(f"attention to {keys} keys: fused {fused:.2f} ms, in place {ours:.2f} ms, "
                  f"max difference {diff:.1e}")
            print(f"BENCH attention_{keys}_keys_fused_over_inplace {fused / ours:.2f} x")
        x = 2 * torch.randn(CANDIDATES * TOKENS, MLP_WIDTH, generator=generator)
        fused = median_ms(lambda t: F.gelu(t, approximate="tanh"), x)
        ours = median_ms(gelu, x)
        diff = (gelu(x) - F.gelu(x, approximate="tanh")).abs().max()
        print(f"GELU-tanh: tanh kernel {fused:.2f} ms, in place {ours:.2f} ms, "
              f"max difference {diff:.1e}")
        print(f"BENCH gelu_tanh_kernel_over_inplace {fused / ours:.2f} x")


if __name__ == "__main__":
    main()
