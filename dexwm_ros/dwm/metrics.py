"""Video metrics of the DWM paper (Table 1): PSNR, SSIM, LPIPS and DreamSim.

All four compare a generated video with the ground truth frame by frame and average over
frames. PSNR is capped at ``PSNR_CAP_DB`` (identical frames). SSIM is Wang et al. (2004) with an
11 x 11 Gaussian window (sigma 1.5) per RGB channel.

The learned metrics load their weights from local files only (the ``lpips`` and ``dreamsim``
packages need torchvision, timm or open_clip and download weights, none of which work here):

* LPIPS (Zhang et al. 2018), AlexNet variant: one safetensors file holding the AlexNet
  convolutions under torchvision's names (``features.{0,3,6,8,10}.{weight,bias}``) and the
  LPIPS linear heads under the lpips package's names (``lin{0..4}.model.1.weight``).
* DreamSim (Fu et al. 2023): a directory with ``dreamsim.json`` listing its backbones, each a
  transformers vision model directory (``vit``: ViTModel, class token after the final norm,
  e.g. DINO ViT-B/16; ``clip``: CLIPVisionModelWithProjection, projected image embedding),
  with its input normalisation. The embedding is the concatenation over backbones; the
  distance is one minus the cosine similarity.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dexwm_ros.core.checkpoint import (
    CheckpointError,
    load_json,
    load_state_into,
    load_tensors,
    require,
    save_json,
)

PSNR_CAP_DB = 100.0
DREAMSIM_FILE = "dreamsim.json"
DREAMSIM_FORMAT = "dexwm_dreamsim"


def _check_pair(generated: np.ndarray, reference: np.ndarray) -> None:
    for name, video in (("generated", generated), ("reference", reference)):
        if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
            raise ValueError(f"{name} video must be uint8 (F, H, W, 3), got {video.dtype} "
                             f"{video.shape}")
    if generated.shape != reference.shape:
        raise ValueError(f"generated {generated.shape} and reference {reference.shape} differ")


def _to_unit(video: np.ndarray) -> torch.Tensor:
    """uint8 ``(F, H, W, 3)`` -> float ``(F, 3, H, W)`` in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(video)).permute(0, 3, 1, 2).double() / 255.0


def psnr(generated: np.ndarray, reference: np.ndarray) -> float:
    """Mean per-frame PSNR in dB (8-bit range), each frame capped at ``PSNR_CAP_DB``."""
    _check_pair(generated, reference)
    diff = generated.astype(np.float64) - reference.astype(np.float64)
    mse = (diff ** 2).reshape(len(diff), -1).mean(axis=1)
    values = [PSNR_CAP_DB if m == 0 else min(PSNR_CAP_DB, 10 * math.log10(255.0 ** 2 / m))
              for m in mse]
    return float(np.mean(values))


def ssim(generated: np.ndarray, reference: np.ndarray, window: int = 11,
         sigma: float = 1.5) -> float:
    """Mean per-frame SSIM (Gaussian window, constants K1 = 0.01, K2 = 0.03)."""
    _check_pair(generated, reference)
    if min(generated.shape[1:3]) < window:
        raise ValueError(f"frames {generated.shape[1:3]} are smaller than the {window}-px window")
    x, y = _to_unit(generated), _to_unit(reference)
    coords = torch.arange(window, dtype=torch.float64) - (window - 1) / 2
    g = torch.exp(-coords ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(3, 1, window, window)

    def blur(t):
        return F.conv2d(t, kernel, groups=3)

    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    index = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return float(index.mean())


class _LinearHead(nn.Module):
    """LPIPS per-layer weights (a 1x1 convolution; the lpips package's ``lin*.model``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))


class LPIPS(nn.Module):
    """LPIPS distance with the AlexNet backbone; ``forward`` takes RGB in [-1, 1]."""

    CHANNELS = (64, 192, 384, 256, 256)
    TAPS = (1, 4, 7, 9, 11)  # indices of the ReLUs whose outputs are compared

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(),
            nn.MaxPool2d(3, stride=2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(),
            nn.MaxPool2d(3, stride=2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU())
        for i, channels in enumerate(self.CHANNELS):
            self.add_module(f"lin{i}", _LinearHead(channels))
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None],
                             persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450])[None, :, None, None],
                             persistent=False)

    @classmethod
    def from_file(cls, path: str | Path) -> LPIPS:
        model = cls()
        load_state_into(model, load_tensors(path), path)
        return model.eval().requires_grad_(False)

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.shift) / self.scale
        taps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.TAPS:
                taps.append(x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10))
        return taps

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Distance per image pair ``(N,)`` for images ``(N, 3, H, W)``."""
        total = 0.0
        for i, (fa, fb) in enumerate(zip(self._taps(a), self._taps(b), strict=True)):
            head = getattr(self, f"lin{i}").model
            total = total + head((fa - fb) ** 2).mean(dim=(2, 3))
        return total[:, 0]


class DreamSim(nn.Module):
    """DreamSim distance from local transformers backbones (see the module docstring)."""

    def __init__(self, branches: list[tuple[str, nn.Module, torch.Tensor, torch.Tensor]],
                 image_size: int, normalize_embeds: bool) -> None:
        super().__init__()
        self.kinds = [kind for kind, *_ in branches]
        self.backbones = nn.ModuleList([model for _, model, *_ in branches])
        for i, (_, _, mean, std) in enumerate(branches):
            self.register_buffer(f"mean{i}", mean.view(1, 3, 1, 1), persistent=False)
            self.register_buffer(f"std{i}", std.view(1, 3, 1, 1), persistent=False)
        self.image_size, self.normalize_embeds = image_size, normalize_embeds

    @classmethod
    def from_directory(cls, directory: str | Path) -> DreamSim:
        from transformers import CLIPVisionModelWithProjection, ViTModel

        directory = Path(directory)
        source = directory / DREAMSIM_FILE
        config = load_json(source)
        if config.get("format") != DREAMSIM_FORMAT:
            raise CheckpointError(f"{source}: not a {DREAMSIM_FORMAT} file")
        entries = require(config, "branches", list, source)
        if not entries:
            raise CheckpointError(f"{source}: no branches")
        branches = []
        for i, entry in enumerate(entries):
            where = f"{source}: branches[{i}]"
            kind = require(entry, "kind", str, where)
            path = directory / require(entry, "path", str, where)
            if kind not in ("vit", "clip"):
                raise CheckpointError(f"{where}: kind must be 'vit' or 'clip', got {kind!r}")
            if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
                raise CheckpointError(f"{where}: {path} needs config.json and model.safetensors")
            if kind == "vit":
                model = ViTModel.from_pretrained(path, add_pooling_layer=False,
                                                 local_files_only=True, use_safetensors=True)
            else:
                model = CLIPVisionModelWithProjection.from_pretrained(
                    path, local_files_only=True, use_safetensors=True)
            stats = [torch.tensor(require(entry, key, list, where), dtype=torch.float32)
                     for key in ("mean", "std")]
            if any(s.shape != (3,) for s in stats):
                raise CheckpointError(f"{where}: mean and std need 3 values")
            branches.append((kind, model, *stats))
        model = cls(branches, int(require(config, "image_size", int, source)),
                    bool(require(config, "normalize_embeds", bool, source)))
        return model.eval().requires_grad_(False)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Embeddings ``(N, D)`` of RGB images ``(N, 3, H, W)`` in [0, 1]."""
        x = F.interpolate(images, size=(self.image_size, self.image_size), mode="bicubic",
                          align_corners=False, antialias=True).clamp(0, 1)
        parts = []
        for i, (kind, backbone) in enumerate(zip(self.kinds, self.backbones, strict=True)):
            inputs = (x - getattr(self, f"mean{i}")) / getattr(self, f"std{i}")
            if kind == "vit":
                feature = backbone(pixel_values=inputs).last_hidden_state[:, 0]
            else:
                feature = backbone(pixel_values=inputs).image_embeds
            if self.normalize_embeds:
                feature = F.normalize(feature, dim=-1)
                feature = feature - feature.mean(dim=-1, keepdim=True)
            parts.append(feature)
        return torch.cat(parts, dim=-1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return 1 - F.cosine_similarity(self.embed(a), self.embed(b), dim=-1)


@torch.no_grad()
def video_metrics(generated: np.ndarray, reference: np.ndarray, lpips: LPIPS | None = None,
                  dreamsim: DreamSim | None = None, chunk: int = 8) -> dict[str, float]:
    """PSNR, SSIM and (when given) LPIPS and DreamSim of one video pair, averaged over frames."""
    out = {"psnr": psnr(generated, reference), "ssim": ssim(generated, reference)}
    for name, model, scale in (("lpips", lpips, 2.0), ("dreamsim", dreamsim, 1.0)):
        if model is None:
            continue
        values = []
        for start in range(0, len(generated), chunk):
            a = _to_unit(generated[start:start + chunk]).float()
            b = _to_unit(reference[start:start + chunk]).float()
            if scale == 2.0:  # LPIPS takes [-1, 1]
                a, b = a * 2 - 1, b * 2 - 1
            values.append(model(a, b))
        out[name] = float(torch.cat(values).mean())
    return out


def main(argv: list[str] | None = None) -> int:
    """``dexwm-dwm-metrics``: metrics of generated videos against references, as JSON."""
    parser = argparse.ArgumentParser(prog="dexwm-dwm-metrics", description=main.__doc__)
    parser.add_argument("--generated", type=Path, required=True,
                        help="an mp4 or a directory of mp4 files")
    parser.add_argument("--reference", type=Path, required=True,
                        help="an mp4, a directory with mp4 files of the same names, or a "
                             "triplet directory (<stem>/interaction.mp4)")
    parser.add_argument("--lpips-weights", type=Path, help="LPIPS AlexNet safetensors file")
    parser.add_argument("--dreamsim", type=Path, help="DreamSim directory (dreamsim.json)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    from training.video import read_frames, video_info

    def reference(stem: str) -> Path:
        flat = args.reference / f"{stem}.mp4"
        return flat if flat.is_file() else args.reference / stem / "interaction.mp4"

    if args.generated.is_dir():
        pairs = [(p.stem, p, reference(p.stem)) for p in sorted(args.generated.glob("*.mp4"))]
    else:
        pairs = [(args.generated.stem, args.generated, args.reference)]
    if not pairs:
        parser.error(f"no mp4 files in {args.generated}")
    absent = [str(ref) for _, _, ref in pairs if not ref.is_file()]
    if absent:
        parser.error(f"reference videos missing: {', '.join(absent)}")
    lpips = LPIPS.from_file(args.lpips_weights) if args.lpips_weights else None
    dreamsim = DreamSim.from_directory(args.dreamsim) if args.dreamsim else None

    def read(path: Path) -> np.ndarray:
        return read_frames(path, range(video_info(path).num_frames), out=None)

    per_video = {name: video_metrics(read(gen), read(ref), lpips, dreamsim)
                 for name, gen, ref in pairs}
    keys = next(iter(per_video.values())).keys()
    mean = {k: float(np.mean([v[k] for v in per_video.values()])) for k in keys}
    save_json(args.out, {"mean": mean, "videos": per_video, "psnr_cap_db": PSNR_CAP_DB})
    print(f"{len(per_video)} video(s): " + ", ".join(f"{k} {v:.4f}" for k, v in mean.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
