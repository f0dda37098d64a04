"""Predictor speed: frames/s, TFLOP/s, shared-context speed-up, fraction of matmul peak.

Planner workload (paper appendix B): one 4-frame context, N candidates x T=3 future actions.
For each preset (tiny, S) and dtype (fp32; bf16 = weights cast to bfloat16, the fast CPU path)
it times ``score_candidates`` (shared context keys/values, per-candidate cache) and the plain
``rollout`` (context repeated per candidate, the whole window recomputed every step). To keep
the run to a few minutes on 2 cores both use fewer than 512 candidates; time per candidate is
measured and multiplied by 512 (both paths scale linearly in N once a batch fills the cores).
FLOPs are counted analytically (matmuls and attention, 2 per multiply-add) for the work each
path really does; the matmul peak of this machine is measured at the start and again right
before and after each case (the larger of those two is the reference for that case).

Options: ``--candidates N`` (fast path), ``--baseline-candidates N``, ``--device cuda``.
"""
from __future__ import annotations

import argparse
import time

import torch

from dexwm_ros.core.predictor import CDiTPredictor, PredictorConfig

NUM_CONTEXT, HORIZON, PLANNER_CANDIDATES = 4, 3, 512


def matmul_peak(dtype: torch.dtype, device: str, size: int = 2048, reps: int = 4) -> float:
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(reps):
        start = _now(device)
        a @ b
        best = min(best, _now(device) - start)
    return 2 * size**3 / best / 1e12


def _now(device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter()


def slot_flops(cfg: PredictorConfig, keys: int) -> float:
    """FLOPs of one slot (P query tokens) through all blocks, attending to ``keys`` earlier
    tokens in cross-attention, plus the final layer and projections."""
    p, d = cfg.num_patches, cfg.dim
    hidden = int(d * cfg.mlp_ratio)
    linear = p * (4 * d * d + 4 * d * d + 2 * d * hidden)  # qkv+proj, q+kv+proj, mlp (MACs)
    attention = 2 * p * p * d + 2 * p * keys * d  # self, cross (QK^T and AV, MACs)
    proj = p * d * d + (2 * p * cfg.latent_dim * d if cfg.latent_dim != d else 0)
    return 2 * (cfg.depth * (linear + attention) + proj)


def fast_path_flops(cfg: PredictorConfig, n: int) -> float:
    p = cfg.num_patches
    shared = sum(slot_flops(cfg, s * p) for s in range(NUM_CONTEXT - 1))
    own = sum(slot_flops(cfg, (NUM_CONTEXT - 1 + t) * p) for t in range(HORIZON))
    return shared + n * own


def rollout_flops(cfg: PredictorConfig, n: int) -> float:
    p = cfg.num_patches
    per_step = [sum(slot_flops(cfg, s * p) for s in range(NUM_CONTEXT + t))
                for t in range(HORIZON)]
    return n * sum(per_step)


def timed(fn, device: str, reps: int = 2) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(reps):
        start = _now(device)
        fn()
        best = min(best, _now(device) - start)
    return best


def run_case(preset: str, dtype: torch.dtype, device: str, n_fast: int, n_base: int) -> dict:
    torch.manual_seed(0)
    latent_dim = 64 if preset == "tiny" else 1024  # tiny encoder / DINOv2-L widths
    cfg = PredictorConfig.from_preset(preset, latent_dim=latent_dim, num_patches=448)
    model = CDiTPredictor(cfg)
    for layer in model.zero_initialized_layers():
        torch.nn.init.normal_(layer.weight, std=0.02)
    model = model.eval().to(device=device, dtype=dtype)
    context = torch.randn(NUM_CONTEXT, 448, latent_dim, device=device)
    context_actions = torch.randn(NUM_CONTEXT - 1, 132, device=device)
    fast_actions = torch.randn(n_fast, HORIZON, 132, device=device)
    base_actions = fast_actions[:n_base]
    with torch.inference_mode():
        fast = timed(lambda: model.score_candidates(context, context_actions, fast_actions),
                     device)
        base = timed(lambda: model.rollout(context.expand(n_base, -1, -1, -1),
                                           context_actions.expand(n_base, -1, -1),
                                           base_actions), device, reps=1)
    return {
        "frames_per_s": n_fast * HORIZON / fast,
        "tflops": fast_path_flops(cfg, n_fast) / fast / 1e12,
        "baseline_tflops": rollout_flops(cfg, n_base) / base / 1e12,
        "fast_per_candidate_s": fast / n_fast,
        "base_per_candidate_s": base / n_base,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--candidates", type=int, default=0,
                        help="fast-path candidates (default: 64 tiny, 8 for S)")
    parser.add_argument("--baseline-candidates", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = args.device
    torch.manual_seed(0)
    peak32 = matmul_peak(torch.float32, device)
    peak16 = matmul_peak(torch.bfloat16, device)
    print(f"device {device}, threads {torch.get_num_threads()}: matmul peak fp32 {peak32:.3f}, "
          f"bf16 {peak16:.3f} TFLOP/s")
    results = {}
    for preset in ("tiny", "S"):
        for dtype_name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            n_fast = args.candidates or (64 if preset == "tiny" else 8)
            n_base = min(args.baseline_candidates, n_fast)
            before = matmul_peak(dtype, device)
            r = run_case(preset, dtype, device, n_fast, n_base)
            # the machine may be shared: compare with the peak measured next to the run
            r["peak"] = max(before, matmul_peak(dtype, device))
            results[(preset, dtype_name)] = r
            speedup = r["base_per_candidate_s"] / r["fast_per_candidate_s"]
            print(f"{preset:>4} {dtype_name}: score_candidates {n_fast} cand: "
                  f"{r['frames_per_s']:.1f} frames/s, {r['tflops']:.3f} TFLOP/s; plain rollout "
                  f"{n_base} cand: {r['baseline_tflops']:.3f} TFLOP/s; per candidate "
                  f"{r['fast_per_candidate_s'] * 1e3:.1f} vs {r['base_per_candidate_s'] * 1e3:.1f}"
                  f" ms (x{speedup:.2f}); 512 candidates ~"
                  f"{r['fast_per_candidate_s'] * PLANNER_CANDIDATES:.1f} s vs "
                  f"{r['base_per_candidate_s'] * PLANNER_CANDIDATES:.1f} s (extrapolated)",
                  flush=True)
    print(f"BENCH matmul_peak_fp32_{device} {peak32:.3f} TFLOP/s")
    print(f"BENCH matmul_peak_bf16_{device} {peak16:.3f} TFLOP/s")
    for (preset, dtype_name), r in results.items():
        tag = f"{preset}_{dtype_name}_{device}"
        print(f"BENCH predictor_frames_per_s_{tag} {r['frames_per_s']:.2f} frames/s")
        print(f"BENCH predictor_tflops_{tag} {r['tflops']:.3f} TFLOP/s")
    for dtype_name in ("fp32", "bf16"):
        r = results[("S", dtype_name)]
        speedup = r["base_per_candidate_s"] / r["fast_per_candidate_s"]
        print(f"BENCH shared_context_speedup_S_{dtype_name}_{device} {speedup:.2f} x")
        print(f"BENCH score_512x3_S_{dtype_name}_{device}_extrapolated "
              f"{r['fast_per_candidate_s'] * PLANNER_CANDIDATES:.1f} s")
    r = results[("S", "bf16")]
    print(f"BENCH matmul_peak_bf16_next_to_S_run_{device} {r['peak']:.3f} TFLOP/s")
    print(f"BENCH predictor_S_bf16_fraction_of_matmul_peak_{device} "
          f"{100 * r['tflops'] / r['peak']:.1f} %")


if __name__ == "__main__":
    main()
