"""Hand-consistency keypoint head, heatmap targets, HC loss and PCK.

Paper section 3.3 and appendix A.3. Latents (B, P, D) -> Linear(D, dim) +
learned positions -> ``depth`` pre-norm transformer blocks -> LayerNorm -> Linear to
``patch*patch*num_maps`` per patch -> ``num_maps`` heatmaps of (grid_h*patch, grid_w*patch) =
(224, 392). Maps: left wrist + thumb..little tips (0-5), right (6-11), i.e. HAND21 indices
``actions.WRIST_AND_TIPS`` of each hand. Pixels are (u, v) = (column, row).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NUM_MAPS = 12


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(),
                                 nn.Linear(int(dim * mlp_ratio), dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(self.norm1(x)).unflatten(-1, (self.heads, -1)).transpose(1, 2).chunk(
            3, dim=-1)
        attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(-2)
        x = x + self.proj(attn)
        return x + self.mlp(self.norm2(x))


class KeypointHead(nn.Module):
    """Latents -> wrist/fingertip heatmaps. ``heads`` defaults to 16 (paper appendix A.3)."""

    def __init__(self, latent_dim: int, grid: tuple[int, int] = (16, 28), patch: int = 14,
                 num_maps: int = NUM_MAPS, dim: int = 256, depth: int = 6, heads: int = 16):
        super().__init__()
        if dim % heads:
            raise ValueError(f"KeypointHead: dim {dim} not divisible by heads {heads}")
        self.latent_dim, self.grid, self.patch = latent_dim, tuple(grid), patch
        self.num_maps, self.dim, self.depth, self.heads = num_maps, dim, depth, heads
        self.image_size = (grid[0] * patch, grid[1] * patch)
        self.input_proj = nn.Linear(latent_dim, dim)
        self.pos_embed = nn.Parameter(torch.randn(1, grid[0] * grid[1], dim) * 0.02)
        self.blocks = nn.ModuleList(_Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.output = nn.Linear(dim, patch * patch * num_maps)

    def config(self) -> dict:
        return {"latent_dim": self.latent_dim, "grid": list(self.grid), "patch": self.patch,
                "num_maps": self.num_maps, "dim": self.dim, "depth": self.depth,
                "heads": self.heads}

    def patch_logits(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, P, D) -> (B, gh, gw, num_maps, patch, patch) (heatmaps before un-patchifying)."""
        expected = (self.grid[0] * self.grid[1], self.latent_dim)
        if latents.dim() != 3 or tuple(latents.shape[1:]) != expected:
            raise ValueError(f"KeypointHead: expected latents (B, {expected[0]}, {expected[1]}), "
                             f"got {tuple(latents.shape)}")
        x = self.input_proj(latents.to(self.pos_embed.dtype)) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        out = self.output(self.norm(x))
        return out.view(latents.shape[0], *self.grid, self.num_maps, self.patch, self.patch)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, P, D) -> heatmaps (B, num_maps, H, W)."""
        maps = self.patch_logits(latents)  # (B, gh, gw, K, p, p)
        return maps.permute(0, 3, 1, 4, 2, 5).reshape(latents.shape[0], self.num_maps,
                                                      *self.image_size)

    def keypoint_pixels(self, latents: torch.Tensor, chunk_size: int = 32) -> torch.Tensor:
        """Argmax (u, v) pixel of each map, ``(B, num_maps, 2)`` float, ``chunk_size`` latents
        at a time. The argmax runs on the patch layout directly (max within each patch, then
        over patches), so full-resolution maps are never rearranged in memory."""
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        results = []
        gw, p = self.grid[1], self.patch
        for chunk in latents.split(chunk_size):
            maps = self.patch_logits(chunk).flatten(-2).flatten(1, 2)  # (b, P, K, p*p)
            best_in_patch, pixel_in_patch = maps.max(dim=-1)  # (b, P, K)
            patch_index = best_in_patch.argmax(dim=1, keepdim=True)  # (b, 1, K)
            pixel = pixel_in_patch.gather(1, patch_index).squeeze(1)
            patch_index = patch_index.squeeze(1)
            row = (patch_index // gw) * p + pixel // p
            col = (patch_index % gw) * p + pixel % p
            results.append(torch.stack([col, row], dim=-1).float())
        return torch.cat(results)


def gaussian_heatmaps(pixels: torch.Tensor, visible: torch.Tensor,
                      size: tuple[int, int] = (224, 392), sigma: float = 2.0) -> torch.Tensor:
    """Unnormalised Gaussian targets (peak 1 at the keypoint), ``(B, K, H, W)``.

    ``pixels`` (B, K, 2) as (u, v); ``visible`` (B, K) bool; invisible keypoints get all-zero
    maps (paper appendix A.3: sigma 2 px)."""
    if pixels.dim() != 3 or pixels.shape[-1] != 2 or tuple(visible.shape) != pixels.shape[:2]:
        raise ValueError(f"gaussian_heatmaps: expected pixels (B, K, 2) and visible (B, K), got "
                         f"{tuple(pixels.shape)} and {tuple(visible.shape)}")
    height, width = size
    rows = torch.arange(height, dtype=pixels.dtype, device=pixels.device)
    cols = torch.arange(width, dtype=pixels.dtype, device=pixels.device)
    du = (cols - pixels[..., 0:1]).square()  # (B, K, W)
    dv = (rows - pixels[..., 1:2]).square()  # (B, K, H)
    maps = torch.exp(-(dv[..., :, None] + du[..., None, :]) / (2 * sigma**2))
    return maps * visible.to(maps.dtype)[..., None, None]


def heatmap_loss(pred: torch.Tensor, target: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """HC loss (paper eq. 5) over visible maps only: mean squared error over the pixels of the
    maps whose keypoint is visible (0 if none is)."""
    if pred.shape != target.shape or pred.dim() != 4 or tuple(visible.shape) != pred.shape[:2]:
        raise ValueError(f"heatmap_loss: expected pred and target (B, K, H, W) and visible "
                         f"(B, K), got {tuple(pred.shape)}, {tuple(target.shape)}, "
                         f"{tuple(visible.shape)}")
    mask = visible.to(pred.dtype)
    per_map = (pred - target).square().mean(dim=(-2, -1))
    return (per_map * mask).sum() / mask.sum().clamp_min(1)


def pck(pred_px: torch.Tensor, gt_px: torch.Tensor, visible: torch.Tensor,
        threshold_px: float) -> float:
    """Fraction of visible keypoints predicted within ``threshold_px`` pixels (inclusive).
    Invisible keypoints are left out of numerator and denominator; NaN if none is visible."""
    if pred_px.shape != gt_px.shape or pred_px.shape[-1] != 2 or \
            tuple(visible.shape) != pred_px.shape[:-1]:
        raise ValueError(f"pck: expected pred_px and gt_px (..., 2) and visible (...), got "
                         f"{tuple(pred_px.shape)}, {tuple(gt_px.shape)}, {tuple(visible.shape)}")
    visible = visible.bool()
    count = int(visible.sum())
    if count == 0:
        return float("nan")
    hit = (pred_px.float() - gt_px.float()).norm(dim=-1) <= threshold_px
    return float((hit & visible).sum()) / count
