"""Hand-consistency keypoint head, heatmap targets, HC loss and PCK.

Paper section 3.3 and appendix A.3. Latents (B, P, D) -> Linear(D, dim) +
learned positions -> ``depth`` pre-norm transformer blocks -> LayerNorm -> Linear to
``(patch/stride)^2 * num_maps`` per latent token -> ``num_maps`` heatmaps of
(grid_h*patch, grid_w*patch) / stride; ``patch`` is the crop pixels one token covers (14 for
DINOv2's 16 x 28 grid: 224 x 392 maps, the paper's). ``stride`` > 1 gives coarser maps (e.g. a
pooled 4 x 7 grid, patch 56, stride 8: 28 x 49 maps) for heads that must run fast on a CPU;
targets are then drawn at that resolution with ``sigma / stride`` (at least one map cell).
Maps: left wrist + thumb..little tips (0-5), right (6-11), i.e. HAND21 indices
``actions.WRIST_AND_TIPS`` of each hand. Pixels are (u, v) = (column, row).

Not in the paper: with ``keypoint_depth`` the head also regresses each keypoint's camera-frame
depth (metres) with a linear layer over all its token features (``depth_loss``; hand size and
occlusion span several tokens), so that a planning cost can tell a hand at the goal from one
on the same camera rays nearer or farther away (the image-plane keypoints alone cannot; see
``planning_cost.CostWeights.keypoint_depth_weight``).
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
                 num_maps: int = NUM_MAPS, dim: int = 256, depth: int = 6, heads: int = 16,
                 stride: int = 1, keypoint_depth: bool = False):
        super().__init__()
        if dim % heads:
            raise ValueError(f"KeypointHead: dim {dim} not divisible by heads {heads}")
        if not isinstance(stride, int) or stride < 1 or patch % stride:
            raise ValueError(f"KeypointHead: stride {stride!r} must be a positive divisor of "
                             f"patch {patch}")
        self.latent_dim, self.grid, self.patch = latent_dim, tuple(grid), patch
        self.num_maps, self.dim, self.depth, self.heads = num_maps, dim, depth, heads
        self.stride, self.cells = stride, patch // stride
        self.image_size = (grid[0] * patch, grid[1] * patch)
        self.map_size = (grid[0] * self.cells, grid[1] * self.cells)
        self.input_proj = nn.Linear(latent_dim, dim)
        self.pos_embed = nn.Parameter(torch.randn(1, grid[0] * grid[1], dim) * 0.02)
        self.blocks = nn.ModuleList(_Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.output = nn.Linear(dim, self.cells * self.cells * num_maps)
        self.depth_output: nn.Linear | None = None
        if keypoint_depth:
            self.add_depth_output()

    @property
    def keypoint_depth(self) -> bool:
        return self.depth_output is not None

    def add_depth_output(self, initial_depth: float = 0.8) -> None:
        """Add the depth regression (metres; bias ``initial_depth``) to this head, e.g. to a
        trained head before fine-tuning it with ``depth_loss``."""
        if self.depth_output is None:
            tokens = self.grid[0] * self.grid[1]
            self.depth_output = nn.Linear(tokens * self.dim, self.num_maps).to(self.output.weight)
            nn.init.zeros_(self.depth_output.weight)
            nn.init.constant_(self.depth_output.bias, initial_depth)

    def config(self) -> dict:
        return {"latent_dim": self.latent_dim, "grid": list(self.grid), "patch": self.patch,
                "num_maps": self.num_maps, "dim": self.dim, "depth": self.depth,
                "heads": self.heads, "stride": self.stride, "keypoint_depth": self.keypoint_depth}

    def target_heatmaps(self, pixels: torch.Tensor, visible: torch.Tensor,
                        sigma: float = 2.0) -> torch.Tensor:
        """Training targets ``(B, K, *map_size)`` for crop pixels ``(B, K, 2)``: Gaussians of
        ``sigma`` crop pixels (at least one map cell) at this head's map resolution."""
        cells = (pixels + 0.5) / self.stride - 0.5
        return gaussian_heatmaps(cells, visible, self.map_size, max(sigma / self.stride, 1.0))

    def features(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, P, D) latents -> (B, P, dim) token features that the output layers read."""
        expected = (self.grid[0] * self.grid[1], self.latent_dim)
        if latents.dim() != 3 or tuple(latents.shape[1:]) != expected:
            raise ValueError(f"KeypointHead: expected latents (B, {expected[0]}, {expected[1]}), "
                             f"got {tuple(latents.shape)}")
        x = self.input_proj(latents.to(self.pos_embed.dtype)) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def patch_logits(self, latents: torch.Tensor, maps: tuple[int, ...] | None = None,
                     features: torch.Tensor | None = None) -> torch.Tensor:
        """(B, P, D) -> (B, gh, gw, K, cells, cells) (maps before un-patchifying) of all maps
        or only of ``maps`` (K = len(maps): only their rows of the output layer run);
        ``features`` (from ``features(latents)``) skips the transformer."""
        x = self.features(latents) if features is None else features
        if maps is None:
            out, count = self.output(x), self.num_maps
        else:
            rows = self._output_rows(tuple(maps))
            out = F.linear(x, self.output.weight[rows], self.output.bias[rows])
            count = len(maps)
        return out.view(latents.shape[0], *self.grid, count, self.cells, self.cells)

    def _output_rows(self, maps: tuple[int, ...]) -> torch.Tensor:
        if any(not 0 <= m < self.num_maps for m in maps):
            raise ValueError(f"KeypointHead: maps {maps} outside [0, {self.num_maps})")
        per_map = self.cells * self.cells
        return torch.cat([torch.arange(m * per_map, (m + 1) * per_map) for m in maps]).to(
            self.output.weight.device)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, P, D) -> heatmaps (B, num_maps, *map_size)."""
        return self._unpatchify(self.patch_logits(latents))

    def depths(self, features: torch.Tensor, maps: tuple[int, ...] | None = None
               ) -> torch.Tensor:
        """(B, P, dim) features -> (B, K) depth (metres) of each map's keypoint (all maps, or
        ``maps`` only)."""
        if self.depth_output is None:
            raise ValueError("KeypointHead: this head has no depth output (keypoint_depth)")
        flat = features.flatten(1)
        if maps is None:
            return self.depth_output(flat)
        rows = torch.as_tensor(maps, device=features.device)
        return F.linear(flat, self.depth_output.weight[rows], self.depth_output.bias[rows])

    def depth_loss(self, latents: torch.Tensor, depths: torch.Tensor, visible: torch.Tensor
                   ) -> torch.Tensor:
        """Mean absolute depth error (metres) of the visible keypoints: latents (B, P, D),
        depths and visible (B, K)."""
        predicted = self.depths(self.features(latents)).float()
        mask = visible.to(predicted.dtype)
        return ((predicted - depths.float()).abs() * mask).sum() / mask.sum().clamp_min(1)

    def _unpatchify(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, gh, gw, K, c, c) -> (B, K, *map_size)."""
        return logits.permute(0, 3, 1, 4, 2, 5).reshape(len(logits), logits.shape[3],
                                                        *self.map_size)

    def keypoint_pixels(self, latents: torch.Tensor, chunk_size: int = 128,
                        maps: tuple[int, ...] | None = None) -> torch.Tensor:
        """``keypoints`` without the depths: ``(B, K, 2)`` crop pixels."""
        return self.keypoints(latents, chunk_size, maps, with_depth=False)[0]

    def keypoints(self, latents: torch.Tensor, chunk_size: int = 128,
                  maps: tuple[int, ...] | None = None, with_depth: bool = True
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(u, v) crop pixel of each map (or of ``maps`` only, which computes only those),
        ``(B, K, 2)`` float, and with a depth output (and ``with_depth``) each keypoint's
        depth ``(B, K)`` (else None); ``chunk_size`` latents at a time. The argmax runs on the patch
        layout directly (max within each token's cells, then over tokens), so full-resolution
        (stride 1) maps are never rearranged: there it is the argmax pixel. At coarser strides
        the small maps are un-patchified and the argmax cell is refined by the weighted mean of
        its 3 x 3 neighbourhood (positive values), so that keypoints move continuously between
        cells."""
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        with_depth = with_depth and self.keypoint_depth
        results, depths = [], []
        gw, c = self.grid[1], self.cells
        for chunk in latents.split(chunk_size):
            features = self.features(chunk)
            logits = self.patch_logits(chunk, maps, features)
            flat = logits.flatten(-2).flatten(1, 2)  # (b, P, K, c*c)
            best_in_patch, pixel_in_patch = flat.max(dim=-1)  # (b, P, K)
            patch_index = best_in_patch.argmax(dim=1, keepdim=True)  # (b, 1, K)
            pixel = pixel_in_patch.gather(1, patch_index).squeeze(1)
            patch_index = patch_index.squeeze(1)
            row = (patch_index // gw) * c + pixel // c
            col = (patch_index % gw) * c + pixel % c
            cells = torch.stack([col, row], dim=-1).float()
            if self.stride > 1:
                cells = self._refine(self._unpatchify(logits), row, col)
            pixels = (cells + 0.5) * self.stride - 0.5
            results.append(pixels)
            if with_depth:
                depths.append(self.depths(features, maps).float())
        return torch.cat(results), (torch.cat(depths) if with_depth else None)

    def _refine(self, maps: torch.Tensor, row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
        """Weighted mean (u, v) cell of the positive values in the 3 x 3 around each argmax."""
        height, width = self.map_size
        offsets = torch.arange(-1, 2, device=maps.device)
        rows = (row[..., None] + offsets).clamp(0, height - 1)  # (b, K, 3)
        cols = (col[..., None] + offsets).clamp(0, width - 1)
        batch = torch.arange(len(maps), device=maps.device)[:, None, None, None]
        key = torch.arange(maps.shape[1], device=maps.device)[None, :, None, None]
        window = maps[batch, key, rows[..., :, None], cols[..., None, :]].float().clamp_min(0)
        total = window.sum(dim=(-2, -1))
        safe = total.clamp_min(1e-12)
        u = (window * cols[..., None, :]).sum(dim=(-2, -1)) / safe
        v = (window * rows[..., :, None]).sum(dim=(-2, -1)) / safe
        empty = total <= 1e-12
        u = torch.where(empty, col.float(), u)
        v = torch.where(empty, row.float(), v)
        return torch.stack([u, v], dim=-1)


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
