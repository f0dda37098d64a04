"""On-disk cache of frozen-encoder latents, so training never runs the encoder.

Every grid frame of every episode is encoded once (plus ``variants - 1`` augmented copies, each
with one fixed set of photometric parameters per episode, so a clip drawn from a variant is
augmented consistently) and stored in safetensors shards of ``episodes_per_shard`` episodes.

Sharded build (any number of processes, e.g. every ``torchrun`` rank): the episodes still to
encode are split into shards in a fixed order, independent of the number of processes; each
process encodes the shards assigned to it (balanced by frame count) and writes, per shard,
``shard_NNNNN.safetensors`` then its manifest ``shard_NNNNN.json``, both atomically. A shard
whose manifest matches the build settings is finished and never encoded again, so a killed
build resumes where it stopped and the result equals a one-process build. Processes wait for
each other on the file system, not in a collective: a wait fails only when no shard finished
for ``stall_timeout_s`` seconds. Process 0 then writes ``index.json`` atomically: the encoder
(name, grid, width, compute dtype, preprocessing), the frame pipeline, the storage dtype and
where each episode lives.

Storage: ``float32``, ``bfloat16`` (default), ``float16``, or ``int8``: each patch vector
quantised symmetrically to 8 bits with its own float32 scale (absmax / 127), about half of
bfloat16 (``bytes_per_frame``).
"""
from __future__ import annotations

import hashlib
import json
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from dexwm_ros.core.checkpoint import save_json, save_tensors
from training.augment import AugmentConfig, apply_augmentation, sample_params
from training.video import IMAGE_SIZE

CACHE_FORMAT = "dexwm_latent_cache"
CACHE_VERSION = 2
FRAME_PIPELINE = "resize to cover 224x392 (antialiased), centre crop, uint8 RGB"
STORAGE_DTYPES = ("float32", "bfloat16", "float16", "int8")


def encoder_description(encoder) -> dict:
    """What the cache must match: the encoder's identity, precision and preprocessing."""
    description = {
        "name": encoder.name,
        "grid": list(encoder.grid),
        "dim": int(encoder.dim),
        "num_patches": int(encoder.num_patches),
        "compute_dtype": str(encoder.dtype).removeprefix("torch."),
        "image_size": list(IMAGE_SIZE),
        "frame_pipeline": FRAME_PIPELINE,
    }
    preprocessing = getattr(encoder, "preprocessing", None)
    if preprocessing is not None:
        description["preprocessing"] = json.loads(json.dumps(preprocessing))
    return description


def bytes_per_frame(num_patches: int, dim: int, storage: str) -> int:
    """Bytes one cached frame takes in ``storage`` (int8: values plus one float32 scale per
    patch)."""
    if storage not in STORAGE_DTYPES:
        raise ValueError(f"cache dtype {storage!r} not in {STORAGE_DTYPES}")
    if storage == "int8":
        return num_patches * (dim + 4)
    return num_patches * dim * getattr(torch, storage).itemsize


def quantize_int8(latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(..., D)`` latents -> int8 values and float32 scales ``(..., 1)`` (symmetric absmax
    per vector); ``values * scales`` approximates the latents within ``scales / 2``."""
    latents = latents.float()
    scales = latents.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12) / 127.0
    values = torch.round(latents / scales).clamp_(-127, 127).to(torch.int8)
    return values, scales


def variant_params(episode_name: str, variant: int, augment: AugmentConfig):
    """The fixed augmentation of ``variant`` (>= 1) of an episode."""
    rng = np.random.default_rng([zlib.crc32(episode_name.encode()), variant])
    return sample_params(rng, augment)


class LatentCache:
    """Read access to a built cache (``index.json`` + shards). ``in_memory`` loads each shard
    whole on first use (about 5x faster reads of small caches; needs the cache's size in
    RAM) instead of reading slices from the memory-mapped file."""

    def __init__(self, directory: str | Path, expected_encoder: dict | None = None,
                 in_memory: bool = False):
        self.directory = Path(directory)
        self.in_memory = in_memory
        index_path = self.directory / "index.json"
        if not index_path.exists():
            raise FileNotFoundError(f"no latent cache at {self.directory} (index.json missing)")
        self.index = json.loads(index_path.read_text())
        if self.index.get("format") != CACHE_FORMAT or self.index.get("version") != CACHE_VERSION:
            raise ValueError(f"{index_path}: not a version {CACHE_VERSION} {CACHE_FORMAT}; "
                             f"rebuild it in another directory")
        if expected_encoder is not None and self.index["encoder"] != expected_encoder:
            raise ValueError(f"latent cache {self.directory} was built with encoder "
                             f"{self.index['encoder']}, not {expected_encoder}")
        self.variants = int(self.index["variants"])
        self.storage = self.index["dtype"]
        self._handles: dict[str, object] = {}

    @property
    def encoder(self) -> dict:
        return self.index["encoder"]

    def _handle(self, shard: str):
        if shard not in self._handles:
            path = str(self.directory / shard)
            self._handles[shard] = (load_file(path) if self.in_memory
                                    else safe_open(path, framework="pt"))
        return self._handles[shard]

    def _rows(self, shard: str, key: str, lo: int, hi: int) -> torch.Tensor:
        handle = self._handle(shard)
        if self.in_memory:
            return handle[key][lo:hi]
        return handle.get_slice(key)[lo:hi]

    def latents(self, name: str, step: int, grid_indices, variant: int = 0) -> torch.Tensor:
        """Latents ``(N, P, D)`` of grid frames ``grid_indices`` of episode ``name`` (int8
        caches: dequantised to float32)."""
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
        rows = torch.from_numpy(idx - lo)
        name_in_shard = f"{entry['key']}/v{variant}"
        block = self._rows(entry["shard"], name_in_shard, lo, hi)[rows]
        if self.storage == "int8":
            scales = self._rows(entry["shard"], f"{name_in_shard}/scale", lo, hi)[rows]
            return block.float() * scales
        return block

    def __getstate__(self):  # open file handles do not cross process boundaries
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state


@dataclass
class Shard:
    """One planned shard: its number, the episodes it holds and the process that encodes it."""

    number: int
    entries: list
    rank: int = 0

    @property
    def name(self) -> str:
        return f"shard_{self.number:05d}"

    @property
    def frames(self) -> int:
        return sum(e.num_grid for e in self.entries)


def plan_shards(entries, cached: set[str], first_number: int, episodes_per_shard: int,
                world: int) -> list[Shard]:
    """Shards of the ``entries`` not in ``cached`` (duplicates skipped), in entry order, and
    their processes: the largest shards first, each to the least-loaded process."""
    if episodes_per_shard < 1:
        raise ValueError(f"episodes_per_shard must be >= 1, got {episodes_per_shard}")
    todo, seen = [], set(cached)
    for entry in entries:
        if entry.episode.name not in seen:
            seen.add(entry.episode.name)
            todo.append(entry)
    shards = [Shard(first_number + n, todo[start : start + episodes_per_shard])
              for n, start in enumerate(range(0, len(todo), episodes_per_shard))]
    load = [0] * world
    for shard in sorted(shards, key=lambda s: (-s.frames, s.number)):
        shard.rank = min(range(world), key=lambda r: (load[r], r))
        load[shard.rank] += shard.frames
    return shards


@torch.no_grad()
def build_latent_cache(entries, encoder, directory: str | Path, variants: int = 1,
                       augment: AugmentConfig | None = None, batch_size: int = 16,
                       storage: str = "bfloat16", episodes_per_shard: int = 32, rank: int = 0,
                       world: int = 1, stall_timeout_s: float = 1800.0, poll_s: float = 0.5,
                       progress: bool = True, in_memory: bool = False) -> LatentCache:
    """Encode every grid frame of ``entries`` (``EpisodeEntry``) as process ``rank`` of
    ``world`` (see the module docstring); every process returns once the index is complete.

    Episodes already in an existing cache built with the same settings are not encoded again.
    """
    if variants < 1:
        raise ValueError(f"variants must be >= 1, got {variants}")
    if storage not in STORAGE_DTYPES:
        raise ValueError(f"cache dtype {storage!r} not in {STORAGE_DTYPES}")
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside [0, world size {world})")
    if variants > 1 and augment is None:
        augment = AugmentConfig()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    settings = json.loads(json.dumps({
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "encoder": encoder_description(encoder),
        "dtype": storage,
        "variants": variants,
        "augment": asdict(augment) if variants > 1 else None,
    }))
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    index_path = directory / "index.json"
    index = {**settings, "episodes": {}}
    if index_path.exists():
        existing = json.loads(index_path.read_text())
        if {k: existing.get(k) for k in settings} != settings:
            raise ValueError(f"{directory} holds a cache built with other settings; "
                             f"use another directory")
        index = existing
    numbers = [int(e["shard"].removeprefix("shard_").removesuffix(".safetensors"))
               for e in index["episodes"].values()]
    plan = plan_shards(entries, set(index["episodes"]), max(numbers, default=-1) + 1,
                       episodes_per_shard, world)
    finished = {s.number for s in plan if _finished(directory, s, digest)}
    mine = [s for s in plan if s.rank == rank and s.number not in finished]
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=sum(s.frames for s in mine) * variants, unit="frame",
                   desc=f"encode (process 0 of {world})")
    for shard in mine:
        _encode_shard(directory, shard, encoder, variants, augment, batch_size, storage,
                      digest, world, bar)
    if bar is not None:
        bar.close()
    if world > 1:
        _wait_for_shards(directory, plan, digest, stall_timeout_s, poll_s)
    if rank == 0 and (plan or not index_path.exists()):
        for shard in plan:
            for number, entry in enumerate(shard.entries):
                index["episodes"][entry.episode.name] = {
                    "shard": f"{shard.name}.safetensors", "key": f"e{number}",
                    "step": entry.step, "num_grid": entry.num_grid}
        save_json(index_path, index)
        for leftover in directory.glob(".shard_*.tmp-*"):  # writes cut short by a kill
            leftover.unlink(missing_ok=True)
    elif rank != 0:
        names = {e.episode.name for s in plan for e in s.entries}
        _wait_for_index(index_path, names, stall_timeout_s, poll_s)
    return LatentCache(directory, expected_encoder=settings["encoder"], in_memory=in_memory)


def _finished(directory: Path, shard: Shard, digest: str) -> bool:
    """Whether ``shard`` was written by a build with these settings and episodes."""
    manifest = directory / f"{shard.name}.json"
    if not manifest.exists() or not (directory / f"{shard.name}.safetensors").exists():
        return False
    try:
        record = json.loads(manifest.read_text())
    except json.JSONDecodeError:
        return False
    return (record.get("settings") == digest
            and record.get("episodes") == [e.episode.name for e in shard.entries])


def _encode_shard(directory, shard, encoder, variants, augment, batch_size, storage, digest,
                  world, bar):
    start = time.perf_counter()
    tensors = {}
    for number, entry in enumerate(shard.entries):
        per_variant = _encode_episode(entry, encoder, variants, augment, batch_size, storage,
                                      bar)
        for variant, stored in enumerate(per_variant):
            for suffix, tensor in stored.items():
                tensors[f"e{number}/v{variant}{suffix}"] = tensor
    save_tensors(directory / f"{shard.name}.safetensors", tensors,
                 metadata={"format": CACHE_FORMAT})
    save_json(directory / f"{shard.name}.json", {
        "settings": digest, "episodes": [e.episode.name for e in shard.entries],
        "frames": shard.frames * variants, "rank": shard.rank, "world": world,
        "seconds": round(time.perf_counter() - start, 3)})


def _encode_episode(entry, encoder, variants, augment, batch_size, storage,
                    bar) -> list[dict[str, torch.Tensor]]:
    """Per variant, the stored tensors of one episode on the CPU: ``{"": latents}``, plus
    ``"/scale"`` for int8 (converted batch by batch, never holding float32 latents)."""
    episode = entry.episode
    params = [None] + [variant_params(episode.name, v, augment) for v in range(1, variants)]
    chunks: list[list[dict]] = [[] for _ in range(variants)]
    source = np.arange(entry.num_grid) * entry.step
    for first in range(0, len(source), batch_size):
        frames = torch.as_tensor(episode.frames(source[first : first + batch_size]))
        for variant, p in enumerate(params):
            images = frames if p is None else apply_augmentation(frames, p)
            latents = encoder.encode(images, batch_size=batch_size)
            if storage == "int8":
                values, scales = quantize_int8(latents)
                chunks[variant].append({"": values.cpu(), "/scale": scales.cpu()})
            else:
                chunks[variant].append({"": latents.to(getattr(torch, storage)).cpu()})
            if bar is not None:
                bar.update(len(images))
    return [{k: torch.cat([c[k] for c in variant]) for k in variant[0]} for variant in chunks]


def _wait_for_shards(directory: Path, plan: list[Shard], digest: str, stall_timeout_s: float,
                     poll_s: float) -> None:
    """Poll until every shard of ``plan`` is finished; fail when none finished for
    ``stall_timeout_s`` seconds."""
    missing = list(plan)
    last_progress = time.monotonic()
    while True:
        still = [s for s in missing if not _finished(directory, s, digest)]
        if not still:
            return
        if len(still) < len(missing):
            last_progress = time.monotonic()
        missing = still
        if time.monotonic() - last_progress > stall_timeout_s:
            ranks = sorted({s.rank for s in missing})
            names = [s.name for s in missing[:8]]
            raise TimeoutError(
                f"latent cache {directory}: no shard finished in {stall_timeout_s:.0f} s; "
                f"{len(missing)} missing (e.g. {names}) from process(es) {ranks}. A process "
                f"may have died: run the same command again to resume the build")
        time.sleep(poll_s)


def _wait_for_index(index_path: Path, names: set[str], stall_timeout_s: float,
                    poll_s: float) -> None:
    """Poll until process 0 has written an index holding ``names``."""
    deadline = time.monotonic() + stall_timeout_s
    while True:
        if index_path.exists():
            try:
                if names <= set(json.loads(index_path.read_text())["episodes"]):
                    return
            except (json.JSONDecodeError, KeyError):
                pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{index_path}: process 0 did not write the merged index within "
                               f"{stall_timeout_s:.0f} s after every shard was finished")
        time.sleep(poll_s)
