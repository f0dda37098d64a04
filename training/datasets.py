"""Training clips from EgoDex, DROID, simulator episodes and the released RoboCasa data.

A clip is ``num_context + 1`` frames (8 context + target, appendix C.1) with:

* ``actions`` ``(S - 1, 132)``: keypoint deltas between consecutive clip frames expressed in
  the first frame's camera (``build_actions``); the rows of a hand the episode lacks are 0,
* ``keypoint_pixels`` ``(S, 12, 2)`` and ``keypoint_visible`` ``(S, 12)``: wrist and five
  fingertips of each hand (left 0-5, right 6-11) projected into each frame's own 224 x 392
  image, the targets of the hand-consistency heatmaps (built on the training device with
  ``gaussian_heatmaps``, which keeps 12 x 224 x 392 maps per frame out of the data pipeline),
* ``latents`` ``(S, P, D)`` from a latent cache, and/or ``frames`` uint8 ``(S, 224, 392, 3)``
  decoded from video (clip-consistent augmentation applied),
* ``keypoint_depth`` ``(S, 12)``: the same keypoints' camera-frame depth (metres), the targets
  of the keypoint head's depth output (``KeypointHead.depth_loss``).

Randomness depends only on ``(seed, epoch, index)``: the same item is the same clip in any
process, worker or resumed run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from dexwm_ros.core.actions import WRIST_AND_TIPS, build_actions, build_rigid_actions
from training.augment import AugmentConfig, apply_augmentation, sample_params
from training.episodes import DroidEpisode, EgoDexEpisode, Episode, SimEpisode
from training.robocasa_data import robocasa_episodes
from training.sampling import ClipSampling, grid_step, sample_clip
from training.video import IMAGE_SIZE

#: Rows of the 42 hand keypoints that get heatmaps: left wrist + tips, right wrist + tips.
HEATMAP_ROWS = tuple(WRIST_AND_TIPS) + tuple(21 + i for i in WRIST_AND_TIPS)
DATASET_KINDS = ("egodex", "droid", "sim", "robocasa")


@dataclass
class DatasetSpec:
    """One data source of a training mix."""

    kind: str
    root: str
    sample_hz: float | None = None  # rate clips are drawn at; None = the source's own rate
    repeat: int = 1  # mixing weight: each episode appears ``repeat`` times per epoch
    camera: str = "ext1"  # DROID camera: ext1, ext2 or wrist
    intrinsics: list | None = None  # DROID: [fx, fy, cx, cy] at native resolution
    min_confidence: float = 0.5  # EgoDex: tracking confidence below which a keypoint is hidden
    max_episodes: int | None = None

    def __post_init__(self):
        if self.kind not in DATASET_KINDS:
            raise ValueError(f"dataset kind {self.kind!r} not in {DATASET_KINDS}")
        if self.repeat < 1:
            raise ValueError(f"dataset repeat must be >= 1, got {self.repeat}")


def discover_episodes(spec: DatasetSpec) -> list[Episode]:
    """All episodes under ``spec.root`` (a directory tree, or one episode's file/directory)."""
    root = Path(spec.root)
    if not root.exists():
        raise FileNotFoundError(f"{spec.kind} dataset root {root} does not exist")

    def rel(path: Path) -> str:
        return str(path.relative_to(root)) if path != root else path.name

    episodes: list[Episode]
    if spec.kind == "egodex":
        files = [root] if root.is_file() else sorted(root.rglob("*.hdf5"))
        episodes = [EgoDexEpisode(p, name=f"egodex/{rel(p.with_suffix(''))}",
                                  min_confidence=spec.min_confidence) for p in files]
    elif spec.kind == "droid":
        dirs = [root] if (root / "trajectory.h5").exists() else sorted(
            p.parent for p in root.rglob("trajectory.h5"))
        episodes = [DroidEpisode(d, camera=spec.camera, name=f"droid/{rel(d)}/{spec.camera}",
                                 intrinsics=spec.intrinsics) for d in dirs]
    elif spec.kind == "robocasa":
        episodes = robocasa_episodes(root)
    else:
        files = [root] if root.is_file() else sorted(
            list(root.rglob("*.hdf5")) + list(root.rglob("*.h5")))
        episodes = [SimEpisode(p, name=f"sim/{rel(p.with_suffix(''))}") for p in files]
    if spec.max_episodes is not None:
        episodes = episodes[: spec.max_episodes]
    if not episodes:
        raise ValueError(f"no {spec.kind} episodes found under {root}")
    return episodes


def project_keypoints(points_world: np.ndarray, camera_to_world: np.ndarray,
                      intrinsics: np.ndarray, valid: np.ndarray,
                      image_size: tuple[int, int] = IMAGE_SIZE
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels ``(N, K, 2)`` (u, v) of world points ``(N, K, 3)`` seen by cameras ``(N, 4, 4)``,
    visibility ``(N, K)`` (valid, in front of the camera and inside the image) and depth
    ``(N, K)`` (camera-frame z, metres)."""
    rot = camera_to_world[:, :3, :3]
    trans = camera_to_world[:, None, :3, 3]
    cam = np.einsum("nji,nkj->nki", rot, points_world - trans)
    z = cam[..., 2]
    safe_z = np.where(z > 1e-6, z, 1.0)
    uv = np.einsum("ij,nkj->nki", intrinsics[:2, :2], cam[..., :2] / safe_z[..., None])
    uv = uv + intrinsics[:2, 2]
    height, width = image_size
    inside = (uv[..., 0] >= 0) & (uv[..., 0] <= width - 1) & (uv[..., 1] >= 0) & (
        uv[..., 1] <= height - 1)
    return uv, valid & (z > 1e-6) & inside, z


def clip_actions(keypoints: np.ndarray, camera_to_world: np.ndarray,
                 hands: tuple[bool, bool], representation: str = "keypoint_delta") -> np.ndarray:
    """``(S - 1, 132)`` actions of a clip; rows of an absent hand are zero. With
    ``representation="rigid_body"`` the ``(S - 1, 57)`` ``build_rigid_actions`` instead."""
    if representation == "rigid_body":
        return build_rigid_actions(torch.from_numpy(keypoints), torch.from_numpy(camera_to_world),
                                   hands).numpy()
    if representation != "keypoint_delta":
        raise ValueError(f"unknown action representation {representation!r}")
    actions = build_actions(torch.from_numpy(keypoints), torch.from_numpy(camera_to_world))
    actions = actions.numpy().reshape(len(keypoints) - 1, 44, 3).copy()
    for present, rows in zip(hands, (slice(0, 21), slice(21, 42)), strict=True):
        if not present:
            actions[:, rows] = 0.0
    return actions.reshape(len(keypoints) - 1, 132)


@dataclass
class EpisodeEntry:
    """An episode as sampled for training: grid step and number of grid frames."""

    episode: Episode
    step: int
    num_grid: int

    @property
    def grid_hz(self) -> float:
        return self.episode.fps / self.step


@dataclass
class ClipDatasetConfig:
    sampling: ClipSampling = field(default_factory=ClipSampling)
    augment: AugmentConfig | None = None
    seed: int = 0
    action_representation: str = "keypoint_delta"


class ClipDataset(Dataset):
    """Clips from a mix of sources; item ``i`` is segment ``i % segments`` of entry
    ``i // segments``. Items are ``(epoch, index)`` pairs (a bare index means epoch 0)."""

    def __init__(self, specs: list[DatasetSpec], config: ClipDatasetConfig | None = None,
                 cache=None, frames: bool | None = None):
        self.config = config or ClipDatasetConfig()
        self.cache = cache
        self.return_frames = (cache is None) if frames is None else frames
        self.unique_entries: list[EpisodeEntry] = []
        self.entries: list[int] = []  # into unique_entries, with repeats
        self.skipped: list[str] = []
        sampling = self.config.sampling
        for spec in specs:
            for episode in discover_episodes(spec):
                step = grid_step(episode.fps, spec.sample_hz)
                num_grid = (episode.num_frames - 1) // step + 1
                if num_grid < sampling.min_frames():
                    self.skipped.append(episode.name)
                    continue
                sampling.window_frames(episode.fps / step)
                self.entries.extend([len(self.unique_entries)] * spec.repeat)
                self.unique_entries.append(EpisodeEntry(episode, step, num_grid))
        if not self.entries:
            raise ValueError(f"no episode is long enough for a clip of "
                             f"{sampling.min_frames()} frames (skipped {self.skipped})")

    def __len__(self) -> int:
        return len(self.entries) * self.config.sampling.segments

    def clip_indices(self, epoch: int, index: int) -> tuple[int, np.ndarray,
                                                            np.random.Generator]:
        """Index into ``unique_entries``, grid indices, and the item's generator (after
        drawing the frames)."""
        if not 0 <= index < len(self):
            raise IndexError(f"clip index {index} out of range [0, {len(self)})")
        position, segment = divmod(index, self.config.sampling.segments)
        entry_index = self.entries[position]
        entry = self.unique_entries[entry_index]
        rng = np.random.default_rng([self.config.seed, epoch, index])
        grid = sample_clip(rng, entry.num_grid, segment, entry.grid_hz, self.config.sampling)
        return entry_index, grid, rng

    def __getitem__(self, key) -> dict[str, torch.Tensor]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        entry_index, grid, rng = self.clip_indices(int(epoch), int(index))
        entry = self.unique_entries[entry_index]
        episode = entry.episode
        source = grid * entry.step
        keypoints = episode.keypoints(source)
        poses = episode.camera_to_world(source)
        valid = episode.keypoint_valid(source)
        pixels, visible, depths = project_keypoints(keypoints[:, HEATMAP_ROWS], poses,
                                                    episode.intrinsics, valid[:, HEATMAP_ROWS])
        sample = {
            "actions": torch.from_numpy(clip_actions(
                keypoints, poses, episode.hands, self.config.action_representation)).float(),
            "keypoint_pixels": torch.from_numpy(pixels).float(),
            "keypoint_visible": torch.from_numpy(visible),
            "keypoint_depth": torch.from_numpy(depths).float(),
            "frame_indices": torch.from_numpy(source),
            "entry": torch.tensor(entry_index),
        }
        augment = self.config.augment
        if self.cache is not None:
            variant = int(rng.integers(self.cache.variants)) if augment else 0
            sample["latents"] = self.cache.latents(episode.name, entry.step, grid, variant)
        if self.return_frames:
            frames = episode.frames(source)
            if augment is not None:
                frames = apply_augmentation(frames, sample_params(rng, augment))
            sample["frames"] = torch.as_tensor(frames)
        return sample
