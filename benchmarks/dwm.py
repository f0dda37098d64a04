"""DWM video imagination: what caching the scene conditioning and batching plans save, and the
size of the paper's 5B model.

Tiny random models (``dexwm_ros.dwm.tiny``) on the CPU: time to imagine 4 candidate plans
(a) recomputing the static-scene latents and prompt embeddings for every plan, one plan at a
time, (b) with the cached scene conditioning, one plan at a time, (c) cached and all 4 plans in
one batch. The transformer of CogVideoX-Fun-V1.1-5b-InP widened to the DWM input is built on
the meta device to count its parameters (no weights needed).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

PLANS = 4
STEPS = 10
REPEATS = 3


def best_of(function) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def transformer_5b_parameters() -> int:
    from diffusers import CogVideoXTransformer3DModel

    from dexwm_ros.dwm.model import dwm_channels

    with torch.device("meta"):  # CogVideoX-5B transformer configuration, DWM input width
        model = CogVideoXTransformer3DModel(
            num_attention_heads=48, attention_head_dim=64, in_channels=dwm_channels(16),
            out_channels=16, time_embed_dim=512, text_embed_dim=4096, num_layers=42,
            sample_width=90, sample_height=60, sample_frames=49, patch_size=2,
            max_text_seq_length=226, use_rotary_positional_embeddings=True)
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    from dexwm_ros.dwm.loading import load_pipeline
    from dexwm_ros.dwm.tiny import TINY_VIDEO, write_tiny_base

    torch.set_num_threads(1)
    frames, height, width = TINY_VIDEO
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = load_pipeline(write_tiny_base(Path(tmp) / "base"))
    rng = np.random.default_rng(0)
    static = np.repeat(rng.integers(0, 256, (1, height, width, 3), dtype=np.uint8), frames, 0)
    hands = rng.integers(0, 256, (PLANS, frames, height, width, 3), dtype=np.uint8)
    prompt = "a robot hand grasps the red box"

    def recompute():
        for hand in hands:
            pipeline.imagine(pipeline.prepare_scene(static, prompt), hand, steps=STEPS)

    scene = pipeline.prepare_scene(static, prompt)

    def cached():
        for hand in hands:
            pipeline.imagine(scene, hand, steps=STEPS)

    def batched():
        pipeline.imagine(scene, hands, steps=STEPS)

    results = {name: best_of(fn) for name, fn in
               (("recompute", recompute), ("cached", cached), ("batched", batched))}
    for name, seconds in results.items():
        print(f"{name:10s} {PLANS} plans x {STEPS} steps: {seconds * 1000:.0f} ms")
    params = transformer_5b_parameters()
    print(f"BENCH dwm_tiny_cached_speedup {results['recompute'] / results['cached']:.2f} x")
    print(f"BENCH dwm_tiny_batched_speedup {results['recompute'] / results['batched']:.2f} x")
    print(f"BENCH dwm_tiny_batched_ms_per_plan {results['batched'] * 1000 / PLANS:.1f} ms")
    print(f"BENCH dwm_5b_transformer_params {params / 1e9:.2f} billion")
    print(f"BENCH dwm_5b_transformer_bf16_weights {params * 2 / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
