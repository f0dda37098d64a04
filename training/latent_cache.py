"""On-disk cache of frozen-encoder latents, so training never runs the encoder.

Every grid frame of every episode is encoded once (plus ``variants - 1`` augmented copies, each
with one fixed set of photometric parameters per episode, so a clip drawn from a variant is
augmented consistently) and stored in safetensors shards. ``index.json`` records the encoder
(name, grid, width, preprocessing), the frame pipeline, the dtype and where each episode lives;
it is rewritten atomically after each shard, so an interrupted build resumes where it stopped.
"""
from __future__ import annotations

import json
import zlib
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from dexwm_ros.core.checkpoint import save_json, save_tensors
from training.augment import AugmentConfig, apply_augmentation, sample_params
from training.video import IMAGE_SIZE

CACHE_FORMAT = "dexwm_latent_cache"
CACHE_VERSION = 1
FRAME_PIPELINE = "resize to cover 224x392 (antialiased), centre crop, uint8 RGB"


def encoder_description(encoder) -> dict:
    """What the cache must match: the encoder's identity and preprocessing."""
    description = {
        "name": encoder.name,
        "grid": list(encoder.grid),
        "dim": int(encoder.dim),
        "num_patches": int(encoder.num_patches),
        "image_size": list(IMAGE_SIZE),
        "frame_pipeline": FRAME_PIPELINE,
    }
    preprocessing = getattr(encoder, "preprocessing", None)
    if preprocessing is not None:
        description["preprocessing"] = json.loads(json.dumps(preprocessing))
    return description


def variant_params(episode_name: str, variant: int, augment: AugmentConfig):
    """The fixed augmentation of ``variant`` (>= 1) of an episode."""
    rng = np.random.default_rng([zlib.crc32(episode_name.encode()), variant])
    return sample_params(rng, augment)


class LatentCache:
    """Read access to a built cache (``index.json`` + shards)."""

    def __init__(self, directory: str | Path, expected_encoder: dict | None = None):
        self.directory = Path(directory)
        index_path = self.directory / "index.json"
        if not index_path.exists():
            raise FileNotFoundError(f"no latent cache at {self.directory} (index.json missing)")
        self.index = json.loads(index_path.read_text())
        if self.index.get("format") != CACHE_FORMAT or self.index.get("version") != CACHE_VERSION:
            raise ValueError(f"{index_path}: not a version {CACHE_VERSION} {CACHE_FORMAT}")
        if expected_encoder is not None and self.index["encoder"] != expected_encoder:
            raise ValueError(f"latent cache {self.directory} was built with encoder "
                             f"{self.index['encoder']}, not {expected_encoder}")
        self.variants = int(self.index["variants"])
        self._handles: dict[str, object] = {}

    @property
    def encoder(self) -> dict:
        return self.index["encoder"]

    def has(self, name: str, step: int) -> bool:
        entry = self.index["episodes"].get(name)
        return entry is not None and entry["step"] == step

    def _handle(self, shard: str):
        if shard not in self._handles:
            self._handles[shard] = safe_open(str(self.directory / shard), framework="pt")
        return self._handles[shard]

    def latents(self, name: str, step: int, grid_indices, variant: int = 0) -> torch.Tensor:
        """Latents ``(N, P, D)`` of grid frames ``grid_indices`` of episode ``name``."""
        entry = self.index["episodes"].get(name)
        if entry is None:
            raise KeyError(f"episode {name!r} is not in the latent cache {self.directory}")
        if entry["step"] != step:
            raise ValueError(f"episode {name!r} cached with frame step {entry['step']}, "
                             f"training asks for step {step}: rebuild the cache")
        if not 0 <= variant < self.variants:
            raise ValueError(f"variant {variant} outside [0, {self.variants})")
        idx = np.asarray(grid_indices, dtype=np.int64)
        if idx.min() < 0 or idx.max() >= entry["num_grid"]:
            raise IndexError(f"grid index out of range [0, {entry['num_grid']}) for {name!r}")
        lo, hi = int(idx.min()), int(idx.max()) + 1
        block = self._handle(entry["shard"]).get_slice(f"{entry['key']}/v{variant}")[lo:hi]
        return block[torch.from_numpy(idx - lo)]

    def __getstate__(self):  # open file handles do not cross process boundaries
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state


@torch.no_grad()
def build_latent_cache(entries, encoder, directory: str | Path, variants: int = 1,
                       augment: AugmentConfig | None = None, batch_size: int = 16,
                       dtype: torch.dtype = torch.bfloat16, episodes_per_shard: int = 32,
                       progress: bool = True) -> LatentCache:
    """Encode every grid frame of ``entries`` (``EpisodeEntry``; duplicates are skipped).

    Episodes already in an existing cache built with the same settings are not encoded again.
    """
    if variants < 1:
        raise ValueError(f"variants must be >= 1, got {variants}")
    if variants > 1 and augment is None:
        augment = AugmentConfig()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    settings = {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "encoder": encoder_description(encoder),
        "dtype": str(dtype).removeprefix("torch."),
        "variants": variants,
        "augment": asdict(augment) if variants > 1 else None,
    }
    index_path = directory / "index.json"
    index = {**settings, "episodes": {}}
    if index_path.exists():
        existing = json.loads(index_path.read_text())
        if {k: existing.get(k) for k in settings} != json.loads(json.dumps(settings)):
            raise ValueError(f"{directory} holds a cache built with other settings; "
                             f"use another directory")
        index = existing
    todo, seen = [], set(index["episodes"])
    for entry in entries:
        if entry.episode.name not in seen:
            seen.add(entry.episode.name)
            todo.append(entry)
    shard_number = len({e["shard"] for e in index["episodes"].values()})
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(e.num_grid for e in todo) * variants, desc="encode", unit="frame")
    for start in range(0, len(todo), episodes_per_shard):
        shard = f"shard_{shard_number:05d}.safetensors"
        tensors, placed = {}, {}
        for number, entry in enumerate(todo[start : start + episodes_per_shard]):
            key = f"e{number}"
            per_variant = _encode_episode(entry, encoder, variants, augment, batch_size, dtype,
                                          bar)
            for variant, latents in enumerate(per_variant):
                tensors[f"{key}/v{variant}"] = latents
            placed[entry.episode.name] = {"shard": shard, "key": key, "step": entry.step,
                                          "num_grid": entry.num_grid}
        save_tensors(directory / shard, tensors, metadata={"format": CACHE_FORMAT})
        index["episodes"].update(placed)
        save_json(index_path, index)
        shard_number += 1
    if bar is not None:
        bar.close()
    if not index_path.exists():
        save_json(index_path, index)
    return LatentCache(directory, expected_encoder=settings["encoder"])


def _encode_episode(entry, encoder, variants, augment, batch_size, dtype, bar):
    episode = entry.episode
    params = [None] + [variant_params(episode.name, v, augment) for v in range(1, variants)]
    chunks: list[list[torch.Tensor]] = [[] for _ in range(variants)]
    source = np.arange(entry.num_grid) * entry.step
    for first in range(0, len(source), batch_size):
        frames = torch.as_tensor(episode.frames(source[first : first + batch_size]))
        for variant, p in enumerate(params):
            images = frames if p is None else apply_augmentation(frames, p)
            chunks[variant].append(encoder.encode(images).to("cpu", dtype).contiguous())
            if bar is not None:
                bar.update(len(images))
    return [torch.cat(c) for c in chunks]
