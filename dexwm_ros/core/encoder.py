"""Frozen image encoders producing patch latents (B, P, D) on a 16 x 28 patch grid.

Paper appendix A.1: DINOv2 ViT-L/14, final-LayerNorm patch tokens (no CLS,
no registers), image resized so that it covers a 224 x 392 crop, centre-cropped, ImageNet
mean/std -> 16 x 28 = 448 tokens. Backends (all through Hugging Face ``transformers``):

* ``"tiny"``: small random DINOv2-style ViT (patch 14, width 64) from a fixed seed, identical
  in every process; for tests and offline demos. Needs no weights.
* ``"tiny_residual"``: the same random ViT, its tokens taken from the residual stream before the
  final LayerNorm. At random initialisation that LayerNorm rescales every token to unit
  variance, so the latent distance to a goal image no longer tracks how far the hand is from
  it: ``benchmarks/goal_ranking.py`` measures Spearman rho 0.00 for ``tiny`` and 0.72 for
  ``tiny_residual`` on nearby hand poses (pool 4; raw pixels in 56 x 56 blocks: 0.73).
* ``"dinov2"``: DINOv2 S/B/L/G (with or without registers), patch 14, crop 224 x 392.
* ``"dinov3"``: DINOv3 ViT, patch 16, crop 256 x 448.
* ``"siglip2"``: SigLIP 2 vision tower, fixed-resolution (``siglip``) or NaFlex (``siglip2``)
  checkpoints; patch 16 -> crop 256 x 448; mean/std 0.5.
* ``"vjepa2"``: V-JEPA 2 encoder; the image is repeated into one 2-frame tubelet; patch 16 ->
  crop 256 x 448.
* ``"blazepalm"``: the convolutional trunk of MediaPipe's palm detector (pretrained on human
  hand images; the ``mediapipe`` 0.10 wheel ships it as a ``.tflite`` file, which
  ``tools/convert_tflite_backbone.py`` converts once at set-up: ``make palm-encoder``), cut at
  the end of its stride-8 backbone stage (128 channels); crop 128 x 224 in [0, 1] as the
  detector expects, so its stride-8 map is the 16 x 28 grid ("patch" 8). At 256 x 448 it ranks
  hand poses a little better (``benchmarks/goal_ranking.py``: rho 0.76 / 0.56 wide / nearby
  against 0.63 / 0.54) but encodes 8x slower on a CPU. ``weights`` is the converted directory.

Every backend keeps the 16 x 28 grid (and so P = 448 and the same field of view, the 4:7 crop);
only the pixel resolution is ``grid x patch``. Keypoint pixels are always given in the 224 x 392
frame of that crop.

``pool`` (1, 2 or 4) average-pools the 16 x 28 grid in k x k blocks (4: a 4 x 7 grid of 28
tokens, each covering 56 x 56 pixels of the crop): a coarser latent grid for world models that
must plan fast on a CPU. It is part of the encoder's name (``tiny_pool4``) and preprocessing.

Other image sizes: the image is scaled (bilinear, antialiased) by
``max(crop_h / H, crop_w / W)`` so that it covers the crop, then centre-cropped. For images
wider than 7:4 (e.g. 16:9) this is "short side to 224" as in the paper and the sides are
cropped; narrower images (4:3, square, portrait) are scaled so the width fills 392 and the top
and bottom are cropped.

``weights`` is a local directory (loaded with ``local_files_only``) or a hub id (resolved
through the local Hugging Face cache or the network). Only safetensors weights are read; a
missing directory, a checkpoint of another model family, or a checkpoint that leaves any
encoder weight uninitialised raises ``EncoderWeightsError``.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

GRID = (16, 28)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)
UNIT_MEAN, UNIT_STD = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
TINY_ENCODER_DIM = 64
TINY_SEED = 0
BACKENDS = ("tiny", "tiny_residual", "dinov2", "dinov3", "siglip2", "vjepa2", "blazepalm")
TINY_BACKENDS = ("tiny", "tiny_residual")
POOLS = (1, 2, 4)
RESIZE_RULE = "scale to cover crop (bilinear, antialias), centre crop"

_DEFAULT_PATCH = {"tiny": 14, "tiny_residual": 14, "dinov2": 14, "dinov3": 16, "siglip2": 16,
                  "vjepa2": 16, "blazepalm": 8}
_MODEL_TYPES = {
    "dinov2": ("dinov2", "dinov2_with_registers"),
    "dinov3": ("dinov3_vit",),
    "siglip2": ("siglip", "siglip_vision_model", "siglip2", "siglip2_vision_model"),
    "vjepa2": ("vjepa2",),
}


class EncoderWeightsError(ValueError):
    """Encoder weights are missing, unreadable or do not match the requested backend."""


def _check_pool(pool: int) -> int:
    if pool not in POOLS:
        raise ValueError(f"encoder pool must be one of {POOLS}, got {pool!r}")
    return pool


def preprocessing_info(backend: str, patch: int | None = None, pool: int = 1) -> dict:
    """How images are prepared for ``backend`` and how its grid is pooled (stored in world
    model configs)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown encoder backend {backend!r}; choose from {BACKENDS}")
    patch = patch or _DEFAULT_PATCH[backend]
    mean, std = {"siglip2": (SIGLIP_MEAN, SIGLIP_STD),
                 "blazepalm": (UNIT_MEAN, UNIT_STD)}.get(backend, (IMAGENET_MEAN, IMAGENET_STD))
    return {"image_size": [GRID[0] * patch, GRID[1] * patch], "resize": RESIZE_RULE,
            "mean": list(mean), "std": list(std), "pool": _check_pool(pool)}


def pooled_name(name: str, pool: int) -> str:
    """Encoder name with its pooling (``tiny`` -> ``tiny_pool4``; unchanged for pool 1)."""
    return name if _check_pool(pool) == 1 else f"{name}_pool{pool}"


class ImageEncoder(nn.Module):
    """Frozen backbone + preprocessing. ``encode`` returns final-norm patch tokens, average
    pooled ``pool x pool`` (``grid`` is the pooled grid; ``token_pixels`` the crop pixels
    one latent token covers)."""

    def __init__(self, model: nn.Module, backend: str, name: str, patch: int, dim: int,
                 dtype: torch.dtype = torch.float32, num_prefix_tokens: int = 0,
                 tubelet: int = 1, pool: int = 1):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.pool = _check_pool(pool)
        self.backend, self.name, self.patch, self.dim = backend, pooled_name(name, pool), patch, dim
        self.grid = (GRID[0] // pool, GRID[1] // pool)
        self.num_patches = self.grid[0] * self.grid[1]
        self.token_pixels = patch * pool
        self.image_size = (GRID[0] * patch, GRID[1] * patch)
        self.dtype = dtype
        self.num_prefix_tokens = num_prefix_tokens
        self.tubelet = tubelet
        self.preprocessing = preprocessing_info(backend, patch, pool)
        self.register_buffer("mean", torch.tensor(self.preprocessing["mean"]).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(self.preprocessing["std"]).view(1, 3, 1, 1),
                             persistent=False)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def preprocess(self, images) -> torch.Tensor:
        """uint8 RGB ``(H, W, 3)`` or ``(B, H, W, 3)`` (numpy or torch) -> normalised float32
        ``(B, 3, *image_size)`` on the encoder's device (see module docstring for sizes)."""
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(np.ascontiguousarray(images))
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a numpy array or torch tensor, got "
                            f"{type(images).__name__}")
        if images.dim() == 3:
            images = images[None]
        if images.dim() != 4 or images.shape[-1] != 3 or images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8 RGB (H, W, 3) or (B, H, W, 3), got "
                             f"{images.dtype} {tuple(images.shape)}")
        if min(images.shape[1:3]) < 1:
            raise ValueError(f"images must not be empty, got {tuple(images.shape)}")
        x = images.to(self.device).permute(0, 3, 1, 2).float().div_(255)
        height, width = x.shape[-2:]
        crop_h, crop_w = self.image_size
        if (height, width) != (crop_h, crop_w):
            scale = max(crop_h / height, crop_w / width)
            size = (max(crop_h, round(height * scale)), max(crop_w, round(width * scale)))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
            top, left = (size[0] - crop_h) // 2, (size[1] - crop_w) // 2
            x = x[..., top:top + crop_h, left:left + crop_w]
        return ((x - self.mean) / self.std).contiguous()

    @torch.inference_mode()
    def encode(self, images, batch_size: int = 16) -> torch.Tensor:
        """Patch latents ``(B, P, D)`` float32 of uint8 images (any size, see ``preprocess``)
        or of already preprocessed float ``(B, 3, *image_size)`` tensors; ``batch_size``
        images per forward pass; bf16 encoders run under bf16 autocast."""
        if isinstance(images, torch.Tensor) and images.is_floating_point():
            if images.dim() != 4 or tuple(images.shape[1:]) != (3, *self.image_size):
                raise ValueError(f"preprocessed images must be (B, 3, {self.image_size[0]}, "
                                 f"{self.image_size[1]}), got {tuple(images.shape)}")
            pixels, needs_preprocess = images, False
        else:
            pixels, needs_preprocess = images, True
            if isinstance(images, np.ndarray | torch.Tensor) and images.ndim == 3:
                pixels = images[None]
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        outputs = []
        for start in range(0, len(pixels), batch_size):
            batch = pixels[start:start + batch_size]
            batch = self.preprocess(batch) if needs_preprocess else batch.to(self.device)
            autocast = (torch.autocast(self.device.type, dtype=self.dtype)
                        if self.dtype != torch.float32 else contextlib.nullcontext())
            with autocast:
                tokens = self._patch_tokens(batch.to(self.dtype))
            outputs.append(tokens.float())
        if not outputs:
            return torch.empty(0, self.num_patches, self.dim, device=self.device)
        return torch.cat(outputs)

    def _patch_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.backend == "vjepa2":
            video = pixels[:, None].expand(-1, self.tubelet, -1, -1, -1)
            tokens = self.model(pixel_values_videos=video, skip_predictor=True).last_hidden_state
        elif self.backend == "siglip2" and self.model.config.model_type.startswith("siglip2"):
            batch, p = pixels.shape[0], self.patch
            patches = pixels.view(batch, 3, GRID[0], p, GRID[1], p).permute(0, 2, 4, 3, 5, 1)
            patches = patches.reshape(batch, self.num_patches, p * p * 3)
            mask = torch.ones(batch, self.num_patches, dtype=torch.int32, device=pixels.device)
            shapes = torch.tensor([GRID] * batch, dtype=torch.long, device=pixels.device)
            tokens = self.model(pixel_values=patches, pixel_attention_mask=mask,
                                spatial_shapes=shapes).last_hidden_state
        elif self.backend == "siglip2":
            tokens = self.model(pixel_values=pixels,
                                interpolate_pos_encoding=True).last_hidden_state
        elif self.backend == "blazepalm":
            features = F.avg_pool2d(self.model(pixels), self.patch // self.model.stride)
            tokens = features.flatten(2).transpose(1, 2)
        else:
            tokens = self.model(pixel_values=pixels).last_hidden_state
        tokens = tokens[:, self.num_prefix_tokens:]
        full = GRID[0] * GRID[1]
        if tokens.shape[1:] != (full, self.dim):
            raise RuntimeError(f"{self.name}: backbone returned {tuple(tokens.shape)} tokens, "
                               f"expected (B, {full}, {self.dim})")
        if self.pool > 1:
            grid = tokens.transpose(1, 2).unflatten(-1, GRID)
            tokens = F.avg_pool2d(grid, self.pool).flatten(2).transpose(1, 2)
        return tokens


def _tiny_model() -> nn.Module:
    from transformers import Dinov2Config, Dinov2Model

    config = Dinov2Config(hidden_size=TINY_ENCODER_DIM, num_hidden_layers=2,
                          num_attention_heads=4, mlp_ratio=2, patch_size=14, image_size=224)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        return Dinov2Model(config)


def _load_pretrained(backend: str, weights: str | Path | None):
    """Load the backbone for ``backend``; every failure is an ``EncoderWeightsError``."""
    from transformers import AutoConfig

    if weights is None:
        raise EncoderWeightsError(f"encoder backend {backend!r} needs weights= (a local "
                                  f"directory or a Hugging Face hub id); none were given")
    weights = str(weights)
    looks_local = Path(weights).exists() or weights.startswith((".", "/", "~")) \
        or weights.count("/") > 1
    if looks_local and not Path(weights).expanduser().is_dir():
        raise EncoderWeightsError(f"encoder weights directory {weights!r} not found")
    source = str(Path(weights).expanduser()) if looks_local else weights
    try:
        config = AutoConfig.from_pretrained(source, local_files_only=looks_local)
    except (OSError, ValueError, KeyError) as err:
        raise EncoderWeightsError(f"cannot read an encoder config from {weights!r}: {err}") \
            from err
    model_type = config.model_type
    if model_type not in _MODEL_TYPES[backend]:
        raise EncoderWeightsError(f"{weights!r} holds a {model_type!r} model, not a {backend} "
                                  f"encoder (expected one of {_MODEL_TYPES[backend]})")
    model_cls = _model_class(backend, model_type)
    try:
        model, info = model_cls.from_pretrained(source, local_files_only=looks_local,
                                                use_safetensors=True, output_loading_info=True)
    except (OSError, ValueError, RuntimeError) as err:
        raise EncoderWeightsError(f"cannot load {backend} weights from {weights!r}: {err}") \
            from err
    problems = {k: v for k, v in info.items()
                if k in ("missing_keys", "mismatched_keys", "error_msgs") and v}
    if problems:
        raise EncoderWeightsError(f"{weights!r} does not fully initialise the {backend} encoder "
                                  f"(never using random weights): {problems}")
    return model


def _load_tflite_graph(weights: str | Path | None):
    """The converted palm-detector trunk in ``weights``; failures are ``EncoderWeightsError``."""
    from dexwm_ros.core.tflite_graph import TFLiteGraph, TFLiteGraphError

    if weights is None:
        raise EncoderWeightsError("encoder backend 'blazepalm' needs weights= (the directory "
                                  "written by `make palm-encoder`); none were given")
    try:
        graph = TFLiteGraph.load(weights)
    except TFLiteGraphError as err:
        raise EncoderWeightsError(str(err)) from err
    if _DEFAULT_PATCH["blazepalm"] % graph.stride:
        raise EncoderWeightsError(f"{weights}: the converted layer has stride {graph.stride}; "
                                  f"the grid needs a stride dividing {_DEFAULT_PATCH['blazepalm']}")
    return graph


def _model_class(backend: str, model_type: str):
    import transformers as tf

    if backend == "dinov2":
        return tf.Dinov2WithRegistersModel if "registers" in model_type else tf.Dinov2Model
    if backend == "dinov3":
        return tf.DINOv3ViTModel
    if backend == "siglip2":
        return tf.Siglip2VisionModel if model_type.startswith("siglip2") else tf.SiglipVisionModel
    return tf.VJEPA2Model


_SIZE_NAMES = {
    "dinov2": {384: "s", 768: "b", 1024: "l", 1536: "g"},
    "dinov3": {384: "s", 768: "b", 1024: "l", 1280: "h", 4096: "7b"},
    "siglip2": {768: "base", 1024: "large", 1152: "so400m", 1536: "giant"},
    "vjepa2": {1024: "vitl", 1280: "vith", 1408: "vitg"},
}


def _encoder_name(backend: str, config) -> str:
    size = _SIZE_NAMES[backend].get(config.hidden_size)
    patch = config.patch_size
    if size is None:
        return f"{backend}_d{config.hidden_size}_p{patch}"
    if backend in ("dinov2", "dinov3"):
        registers = getattr(config, "num_register_tokens", 0)
        suffix = "_reg" if backend == "dinov2" and registers else ""
        return f"{backend}_vit{size}{patch}{suffix}"
    return f"{backend}_{size}_p{patch}"


def build_encoder(backend: str = "tiny", weights: str | Path | None = None,
                  dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                  pool: int = 1) -> ImageEncoder:
    """Build a frozen encoder (see module docstring). ``dtype`` float32 or bfloat16 (weights
    cast, forward under autocast); ``pool`` the grid's average pooling."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown encoder backend {backend!r}; choose from {BACKENDS}")
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"encoder dtype must be float32, bfloat16 or float16, got {dtype}")
    if backend in TINY_BACKENDS:
        if weights is not None:
            raise ValueError(f"the {backend!r} encoder is random by design and takes no weights")
        model, name = _tiny_model(), backend
        if backend == "tiny_residual":
            model.layernorm = nn.Identity()
    elif backend == "blazepalm":
        graph = _load_tflite_graph(weights)
        encoder = ImageEncoder(graph, backend, backend, _DEFAULT_PATCH[backend],
                               graph.output_channels, dtype, pool=pool)
        encoder.model.to(dtype)
        return encoder.to(device)
    else:
        model = _load_pretrained(backend, weights)
        name = _encoder_name(backend, model.config)
    config = model.config
    prefix = 0
    if backend in (*TINY_BACKENDS, "dinov2", "dinov3"):
        prefix = 1 + getattr(config, "num_register_tokens", 0)
    tubelet = getattr(config, "tubelet_size", 1) if backend == "vjepa2" else 1
    encoder = ImageEncoder(model, backend, name, config.patch_size, config.hidden_size, dtype,
                           num_prefix_tokens=prefix, tubelet=tubelet, pool=pool)
    encoder.model.to(dtype)
    return encoder.to(device)
