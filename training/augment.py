"""Clip-consistent photometric augmentation: one set of parameters for every frame of a clip.

Colour jitter (brightness, contrast, saturation, hue), random grayscale and Gaussian blur on
uint8 RGB frames; geometry is never changed, so keypoint targets stay valid.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

_LUMA = torch.tensor([0.299, 0.587, 0.114])
_RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]]
)


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random photometric changes (0 disables one)."""

    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    hue: float = 0.05
    grayscale_p: float = 0.1
    blur_p: float = 0.2
    blur_sigma: tuple[float, float] = (0.1, 2.0)


@dataclass(frozen=True)
class AugmentParams:
    """One draw of augmentation parameters, applied identically to all frames of a clip."""

    brightness: float
    contrast: float
    saturation: float
    hue: float
    grayscale: bool
    blur_sigma: float  # 0 = no blur


def sample_params(rng: np.random.Generator, config: AugmentConfig) -> AugmentParams:
    def factor(strength: float) -> float:
        return float(rng.uniform(1 - strength, 1 + strength)) if strength > 0 else 1.0

    blur = rng.random() < config.blur_p
    return AugmentParams(
        brightness=factor(config.brightness),
        contrast=factor(config.contrast),
        saturation=factor(config.saturation),
        hue=float(rng.uniform(-config.hue, config.hue)) if config.hue > 0 else 0.0,
        grayscale=bool(rng.random() < config.grayscale_p),
        blur_sigma=float(rng.uniform(*config.blur_sigma)) if blur else 0.0,
    )


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(x, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)


def apply_augmentation(frames: np.ndarray | torch.Tensor, params: AugmentParams) -> torch.Tensor:
    """Augment uint8 ``(N, H, W, 3)`` frames with ``params``; returns uint8 ``(N, H, W, 3)``."""
    frames = torch.as_tensor(frames)
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 (N, H, W, 3) frames, got {frames.dtype} {frames.shape}")
    x = frames.permute(0, 3, 1, 2).float() / 255.0
    x = x * params.brightness
    gray = torch.einsum("nchw,c->nhw", x, _LUMA).unsqueeze(1)
    x = (x - gray.mean(dim=(2, 3), keepdim=True)) * params.contrast + gray.mean(
        dim=(2, 3), keepdim=True
    )
    gray = torch.einsum("nchw,c->nhw", x, _LUMA).unsqueeze(1)
    x = gray + (x - gray) * params.saturation
    if params.hue:
        angle = 2 * math.pi * params.hue
        rotation = torch.tensor(
            [
                [1.0, 0.0, 0.0],
                [0.0, math.cos(angle), -math.sin(angle)],
                [0.0, math.sin(angle), math.cos(angle)],
            ]
        )
        transform = torch.linalg.inv(_RGB_TO_YIQ) @ rotation @ _RGB_TO_YIQ
        x = torch.einsum("ij,njhw->nihw", transform, x)
    if params.grayscale:
        x = torch.einsum("nchw,c->nhw", x, _LUMA).unsqueeze(1).expand(-1, 3, -1, -1)
    x = x.clamp(0, 1)
    if params.blur_sigma > 0:
        x = _gaussian_blur(x.contiguous(), params.blur_sigma)
    return (x * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
