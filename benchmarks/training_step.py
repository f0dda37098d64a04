"""Training step from the latent cache vs encoding frames on the fly (same model, same batches).

Writes two small simulator episodes, builds the cache once, then times optimiser steps of a
``tiny`` predictor both ways. The encoder is ``DEXWM_BENCH_ENCODER`` (default ``tiny``; a
real-size backend makes the on-the-fly cost, and so the ratio, much larger).
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import default_collate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test" / "training"))

from training_fixtures import write_sim  # noqa: E402

from training.config import config_from_dict  # noqa: E402
from training.trainer import StepBatches, Trainer  # noqa: E402

ENCODER = os.environ.get("DEXWM_BENCH_ENCODER", "tiny")
STEPS = 6
BATCH = 2


def step_seconds(trainer: Trainer, sampler: StepBatches, step: int) -> float:
    """Seconds of one step including reading the batch (latent cache, or video/HDF5 + encoder)."""
    start = time.perf_counter()
    trainer.train_step(default_collate([trainer.dataset[i] for i in sampler.batch(step)]))
    return time.perf_counter() - start


def main() -> None:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for i in range(2):
            write_sim(tmp / "sim" / f"episode_{i}.hdf5", num=40, seed=i)
        base = {
            "output_dir": str(tmp / "run"), "precision": "bf16", "progress": False,
            "data": {"datasets": [{"kind": "sim", "root": str(tmp / "sim")}], "augment": False},
            "encoder": {"backend": ENCODER}, "model": {"preset": "tiny"},
            "optim": {"batch_size": BATCH, "max_steps": 100}, "loss": {"hc_slots": "last"},
        }
        start = time.perf_counter()
        cached = Trainer(config_from_dict({**base, "cache": {"directory": str(tmp / "cache")}}))
        build_s = time.perf_counter() - start
        on_the_fly = Trainer(config_from_dict(base))
        on_the_fly.objective.load_state_dict(cached.objective.state_dict())
        frames = sum(e.num_grid for e in cached.dataset.unique_entries)
        sampler = StepBatches(len(cached.dataset), BATCH, 0, 1, 0, 0, STEPS + 1)
        step_seconds(cached, sampler, 0)  # warm-up
        step_seconds(on_the_fly, sampler, 0)
        cached_s = fly_s = 0.0
        for step in range(1, STEPS + 1):  # interleaved, so load changes hit both alike
            cached_s += step_seconds(cached, sampler, step) / STEPS
            fly_s += step_seconds(on_the_fly, sampler, step) / STEPS
    print(f"encoder={ENCODER} batch={BATCH} clip_frames=9 threads={torch.get_num_threads()} "
          f"cache_build={build_s:.1f}s for {frames} frames")
    print(f"BENCH train_step_from_cache {cached_s:.3f} s")
    print(f"BENCH train_step_encode_on_the_fly {fly_s:.3f} s")
    print(f"BENCH cache_speedup {fly_s / cached_s:.2f} x")
    print(f"BENCH cache_build_per_frame {build_s / frames * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
