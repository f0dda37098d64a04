"""Latent-to-image decoder for looking at predicted latents (paper appendix A.4).

A ViT over the patch latents whose tokens are each unpatchified to a 14 x 14 RGB patch, as in
the RAE recipe the paper follows. Trained with L1 + MSE pixel losses (the paper adds LPIPS and
an adversarial loss; LPIPS needs pretrained VGG weights, which this project does not download).
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn


@dataclass
class LatentDecoderConfig:
    latent_dim: int
    grid: tuple[int, int] = (16, 28)
    patch: int = 14
    dim: int = 256
    depth: int = 4
    heads: int = 8


class LatentDecoder(nn.Module):
    """``forward(latents (B, P, D)) -> images (B, 3, H, W)`` in [0, 1]."""

    def __init__(self, config: LatentDecoderConfig):
        super().__init__()
        self.config = config
        c = config
        tokens = c.grid[0] * c.grid[1]
        self.proj = nn.Linear(c.latent_dim, c.dim)
        self.pos = nn.Parameter(torch.randn(1, tokens, c.dim) * 0.02)
        layer = nn.TransformerEncoderLayer(c.dim, c.heads, 4 * c.dim, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, c.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(c.dim)
        self.head = nn.Linear(c.dim, c.patch * c.patch * 3)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        c = self.config
        if latents.ndim != 3 or latents.shape[1:] != (c.grid[0] * c.grid[1], c.latent_dim):
            raise ValueError(f"decoder expects latents (B, {c.grid[0] * c.grid[1]}, "
                             f"{c.latent_dim}), got {tuple(latents.shape)}")
        x = self.head(self.norm(self.blocks(self.proj(latents) + self.pos)))
        x = x.view(-1, c.grid[0], c.grid[1], c.patch, c.patch, 3)
        x = x.permute(0, 5, 1, 3, 2, 4).reshape(-1, 3, c.grid[0] * c.patch, c.grid[1] * c.patch)
        return torch.sigmoid(x)

    def save(self, directory: str | Path) -> None:
        """``model.safetensors`` + ``config.json``, replacing ``directory`` atomically."""
        directory = Path(directory)
        tmp = directory.with_name(f".{directory.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"))
        (tmp / "config.json").write_text(json.dumps(asdict(self.config), indent=1))
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)

    @classmethod
    def load(cls, directory: str | Path, device="cpu") -> LatentDecoder:
        directory = Path(directory)
        data = json.loads((directory / "config.json").read_text())
        data["grid"] = tuple(data["grid"])
        model = cls(LatentDecoderConfig(**data))
        model.load_state_dict(load_file(str(directory / "model.safetensors"), device=str(device)))
        return model.to(device)
