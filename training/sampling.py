"""Clip frame sampling (DexWM paper appendix C.1, following PEVA).

A clip is 8 context frames and 1 target. The target is drawn from one of 10 equal segments of
the episode (each clip is visited in 10 segments per epoch so long videos are covered
uniformly); the 8 context frames are distinct frames drawn at random from the 4 s window
before the target, sorted, so the time steps between them are non-uniform.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClipSampling:
    """How clips are drawn from an episode's frame grid."""

    num_context: int = 8
    window_s: float = 4.0
    segments: int = 10

    def window_frames(self, grid_hz: float) -> int:
        """Number of grid frames in the window before the target."""
        frames = int(round(self.window_s * grid_hz))
        if frames < self.num_context:
            raise ValueError(
                f"a {self.window_s} s window at {grid_hz} Hz has {frames} frames, fewer than "
                f"the {self.num_context} context frames; raise sample_hz or window_s"
            )
        return frames

    def min_frames(self) -> int:
        """Shortest episode (in grid frames) that yields a clip."""
        return self.num_context + 1


def grid_step(source_fps: float, sample_hz: float | None) -> int:
    """Source frames per grid frame for an episode at ``source_fps`` sampled at ``sample_hz``."""
    if sample_hz is None:
        return 1
    if sample_hz <= 0 or sample_hz > source_fps + 1e-6:
        raise ValueError(f"sample_hz {sample_hz} must be in (0, source rate {source_fps}]")
    return max(1, int(round(source_fps / sample_hz)))


def segment_bounds(num_grid: int, segment: int, sampling: ClipSampling) -> tuple[int, int]:
    """Inclusive range of target grid indices in ``segment`` of a ``num_grid``-frame episode."""
    first = sampling.num_context
    count = num_grid - first
    if count <= 0:
        raise ValueError(f"episode of {num_grid} frames is too short for a clip")
    if not 0 <= segment < sampling.segments:
        raise ValueError(f"segment {segment} outside [0, {sampling.segments})")
    start = first + (segment * count) // sampling.segments
    end = first + ((segment + 1) * count) // sampling.segments - 1
    return start, max(start, end)


def sample_clip(
    rng: np.random.Generator, num_grid: int, segment: int, grid_hz: float, sampling: ClipSampling
) -> np.ndarray:
    """Sorted grid indices ``(num_context + 1,)``: context frames, then the target."""
    window = sampling.window_frames(grid_hz)
    start, end = segment_bounds(num_grid, segment, sampling)
    target = int(rng.integers(start, end + 1))
    candidates = np.arange(max(0, target - window), target)
    context = np.sort(rng.choice(candidates, size=sampling.num_context, replace=False))
    return np.append(context, target).astype(np.int64)
