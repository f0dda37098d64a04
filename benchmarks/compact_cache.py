"""What the 8-bit latent cache costs in accuracy, next to the storage it saves (tiny setting).

Renders exploration episodes in the simulator (random hand targets and hand open/close; 6 for
training, 2 held out), then trains the tiny setting (``config/train_tiny.yaml``: tiny encoder
and predictor; a narrower keypoint head to fit a few minutes) from a bfloat16 cache and from
an int8 cache with the same seed, plus a second bfloat16 run with another seed for the
run-to-run spread, and evaluates each open loop on the held-out episodes (paper section 4.2:
20 predictions at 5 Hz, latent L2 and PCK@20 against the projected ground truth, the encoder
run on the frames). Also reports the int8 round-trip error of the latents and the bytes per
frame, for the tiny encoder and for DINOv2-L (448 x 1024) at the paper's scale.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from dexwm_ros.core.encoder import build_encoder  # noqa: E402
from dexwm_ros.core.kinematics import RobotKinematics  # noqa: E402
from dexwm_ros.core.world_model import WorldModel  # noqa: E402
from dexwm_ros.sim.episode_format import episode_path, write_episode  # noqa: E402
from dexwm_ros.sim.exploration import MODES, generate_episode  # noqa: E402
from dexwm_ros.sim.tasks import make_task  # noqa: E402
from training.config import EvalConfig, load_config  # noqa: E402
from training.datasets import DatasetSpec, discover_episodes  # noqa: E402
from training.evaluate import open_loop_evaluation  # noqa: E402
from training.latent_cache import LatentCache, bytes_per_frame  # noqa: E402
from training.trainer import Trainer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TRAIN_EPISODES, HELD_OUT, STEPS = 6, 2, 40
TRAIN_STEPS = 120
HEAD = "model.keypoint_head={dim: 64, depth: 2, heads: 4}"  # a quarter of the default width
PAPER_FRAMES = 829 * 3600 * 5  # EgoDex at 5 Hz


def render_episodes(out: Path) -> None:
    kinematics = RobotKinematics()
    with make_task("grasp", seed=0) as task:
        for i in range(TRAIN_EPISODES + HELD_OUT):
            folder = out / ("train" if i < TRAIN_EPISODES else "held_out")
            episode = generate_episode(task, kinematics, MODES[1 + i % 2], seed=i,
                                       steps=STEPS)
            write_episode(episode_path(folder, i), **episode)


def train(tmp: Path, storage: str, seed: int) -> tuple[Path, Path]:
    """Train the tiny setting from a ``storage`` cache; returns (model dir, cache dir)."""
    run, cache = tmp / f"run_{storage}_{seed}", tmp / f"cache_{storage}"
    config = load_config(REPO / "config" / "train_tiny.yaml", [
        f"data.datasets.0.root={tmp / 'train'}", f"cache.directory={cache}",
        f"cache.dtype={storage}", f"output_dir={run}", f"seed={seed}",
        f"optim.max_steps={TRAIN_STEPS}", HEAD, "progress=false"])
    trainer = Trainer(config)
    try:
        trainer.fit()
    finally:
        trainer.close()
    return run / "model", cache


def cache_bytes_per_frame(cache: Path) -> float:
    index = LatentCache(cache).index
    frames = sum(e["num_grid"] for e in index["episodes"].values())
    return sum(p.stat().st_size for p in cache.glob("shard_*.safetensors")) / frames


def main() -> None:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        render_episodes(tmp)
        print(f"rendered {TRAIN_EPISODES + HELD_OUT} episodes x {STEPS} steps in "
              f"{time.perf_counter() - start:.0f} s")
        held_out = discover_episodes(DatasetSpec(kind="sim", root=str(tmp / "held_out")))
        encoder = build_encoder("tiny")  # the tiny setting's encoder
        results, caches = {}, {}
        for storage, seed in (("bfloat16", 0), ("int8", 0), ("bfloat16", 1)):
            start = time.perf_counter()
            model_dir, caches[storage] = train(tmp, storage, seed)
            results[storage, seed] = open_loop_evaluation(
                WorldModel.load(model_dir), encoder, held_out,
                EvalConfig(rollouts_per_episode=4))["mean"]
            print(f"{storage} seed {seed}: trained and evaluated in "
                  f"{time.perf_counter() - start:.0f} s: {results[storage, seed]}")
        exact = LatentCache(caches["bfloat16"])
        compact = LatentCache(caches["int8"])
        error = total = 0.0
        for name, entry in exact.index["episodes"].items():
            grid = list(range(entry["num_grid"]))
            reference = exact.latents(name, entry["step"], grid).float()
            error += (compact.latents(name, entry["step"], grid) - reference).square().sum()
            total += reference.square().sum()
        sizes = {s: cache_bytes_per_frame(c) for s, c in caches.items()}
    base, int8, other = results["bfloat16", 0], results["int8", 0], results["bfloat16", 1]
    print(f"train steps={TRAIN_STEPS} threads={torch.get_num_threads()} "
          f"held-out rollouts={len(held_out) * 4}")
    print(f"BENCH int8_latent_relative_rms_error {100 * float(error / total) ** 0.5:.3f} %")
    for metric in ("latent_l2", "pck@20"):
        print(f"BENCH open_loop_{metric}_bfloat16 {base[metric]:.5f} mean")
        print(f"BENCH open_loop_{metric}_int8 {int8[metric]:.5f} mean")
        print(f"BENCH open_loop_{metric}_change_int8 {int8[metric] - base[metric]:+.5f} mean")
        print(f"BENCH open_loop_{metric}_change_other_seed {other[metric] - base[metric]:+.5f} "
              f"mean")
    print(f"BENCH cache_bytes_per_frame_tiny_bfloat16 {sizes['bfloat16']:.0f} B")
    print(f"BENCH cache_bytes_per_frame_tiny_int8 {sizes['int8']:.0f} B")
    print(f"BENCH cache_storage_saved_int8 {100 * (1 - sizes['int8'] / sizes['bfloat16']):.1f} %")
    for storage in ("bfloat16", "int8"):
        tb = PAPER_FRAMES * bytes_per_frame(448, 1024, storage) / 1e12
        print(f"BENCH egodex_5hz_dinov2l_cache_{storage} {tb:.1f} TB")


if __name__ == "__main__":
    main()
