"""The DWM transformer: input-channel layout, the widened patch embedding and LoRA weights.

Channel layout of the transformer input (per latent frame, ``C`` = VAE latent channels):
``[noisy C | mask 1 | static-scene C | hand C]``. The first ``2C + 1`` channels are the
CogVideoX-Fun inpainting model's own input (noisy latents, mask, masked video); DWM feeds the
static-scene latents as the masked video with a mask that keeps every pixel (supplementary D:
"a full mask m = 1, all pixels known", i.e. an all-zero inpainting mask) and appends the
hand-video latents (main paper, section 2: conditions concatenated channel-wise). The patch
embedding is widened with zero weights for the hand channels, so before training the model is
exactly the inpainting model.

DWM weights (supplementary A: LoRA rank 64, alpha 64, plus the trained input projection) are a
directory: ``dwm_config.json``, ``lora.safetensors`` (peft LoRA tensors of the attention
projections) and ``patch_embed.safetensors`` (the whole widened input projection).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from dexwm_ros.core.checkpoint import (
    CheckpointError,
    load_json,
    load_state_into,
    load_tensors,
    require,
    save_json,
    save_tensors,
)

ADAPTER_NAME = "dwm"
CONFIG_FILE = "dwm_config.json"
LORA_FILE = "lora.safetensors"
INPUT_FILE = "patch_embed.safetensors"
WEIGHTS_FORMAT = "dexwm_dwm_weights"
WEIGHTS_VERSION = 1


def inpainting_channels(latent_channels: int) -> int:
    """Input channels of the CogVideoX-Fun inpainting transformer: noisy + mask + masked video."""
    return 2 * latent_channels + 1


def dwm_channels(latent_channels: int) -> int:
    """Input channels of the DWM transformer: the inpainting input plus the hand latents."""
    return 3 * latent_channels + 1


def widen_patch_embedding(transformer, latent_channels: int) -> None:
    """Widen an inpainting transformer's patch embedding to the DWM input, new weights zero.

    A transformer that already has the DWM width is left as it is.
    """
    config = transformer.config
    if config.patch_size_t is not None:
        raise ValueError("the transformer has a temporal patch size (CogVideoX 1.5 layout); "
                         "DWM here uses the CogVideoX-Fun V1.1 layout (2-D patches)")
    base, wide = inpainting_channels(latent_channels), dwm_channels(latent_channels)
    if config.in_channels == wide:
        return
    if config.in_channels != base:
        raise ValueError(f"the transformer has {config.in_channels} input channels; an "
                         f"inpainting model with {latent_channels} latent channels has {base} "
                         f"(DWM: {wide})")
    old = transformer.patch_embed.proj
    new = nn.Conv2d(wide, old.out_channels, kernel_size=old.kernel_size, stride=old.stride,
                    bias=old.bias is not None, device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, :base] = old.weight
        if old.bias is not None:
            new.bias.copy_(old.bias)
    transformer.patch_embed.proj = new
    transformer.register_to_config(in_channels=wide)


def keep_all_mask(latents: torch.Tensor, scaling_factor: float) -> torch.Tensor:
    """Mask channel ``(B, F, 1, h, w)`` for latents ``(B, F, C, h, w)`` keeping every pixel.

    The inpainting models take ``(1 - m) * scaling_factor`` for a pixel mask ``m`` (1 =
    regenerate), resized to the latent grid; keeping everything (``m = 0``) gives a constant.
    """
    return torch.full_like(latents[:, :, :1], float(scaling_factor))


@dataclass(frozen=True)
class LoraSettings:
    """LoRA on the attention projections (supplementary A: rank 64, alpha 64)."""

    rank: int = 64
    alpha: float = 64.0
    target_modules: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.rank < 1 or self.alpha <= 0:
            raise ValueError(f"LoRA rank must be >= 1 and alpha > 0, got {self.rank}, "
                             f"{self.alpha}")
        if not self.target_modules:
            raise ValueError("LoRA needs at least one target module")


def add_lora(transformer, settings: LoraSettings) -> None:
    """Inject a fresh LoRA adapter (``B = 0``, so the output is unchanged)."""
    from peft import LoraConfig

    transformer.add_adapter(LoraConfig(
        r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules), init_lora_weights=True),
        adapter_name=ADAPTER_NAME)


def trainable_parameters(transformer) -> dict[str, nn.Parameter]:
    """Freeze everything except the LoRA tensors and the widened input projection."""
    trainable = {}
    for name, parameter in transformer.named_parameters():
        train = "lora_" in name or name.startswith("patch_embed.proj.")
        parameter.requires_grad_(train)
        if train:
            trainable[name] = parameter
    if not any("lora_" in name for name in trainable):
        raise ValueError("the transformer has no LoRA adapter; call add_lora first")
    return trainable


def save_dwm_weights(transformer, directory: str | Path, settings: LoraSettings,
                     latent_channels: int) -> Path:
    """Write the DWM weights directory read by :func:`load_dwm_weights`."""
    from peft.utils import get_peft_model_state_dict

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lora = get_peft_model_state_dict(transformer, adapter_name=ADAPTER_NAME)
    save_tensors(directory / LORA_FILE, lora)
    save_tensors(directory / INPUT_FILE, transformer.patch_embed.proj.state_dict())
    save_json(directory / CONFIG_FILE, {
        "format": WEIGHTS_FORMAT, "version": WEIGHTS_VERSION,
        "latent_channels": latent_channels,
        "in_channels": int(transformer.config.in_channels),
        "lora": {**asdict(settings), "target_modules": list(settings.target_modules)},
    })
    return directory


def read_dwm_config(directory: str | Path) -> tuple[LoraSettings, int]:
    """LoRA settings and latent channels of a DWM weights directory (files checked)."""
    directory = Path(directory)
    missing = [name for name in (CONFIG_FILE, LORA_FILE, INPUT_FILE)
               if not (directory / name).is_file()]
    if missing:
        raise CheckpointError(f"DWM weights directory {directory} lacks {', '.join(missing)}")
    source = directory / CONFIG_FILE
    config = load_json(source)
    if config.get("format") != WEIGHTS_FORMAT or config.get("version") != WEIGHTS_VERSION:
        raise CheckpointError(f"{source}: not a {WEIGHTS_FORMAT} v{WEIGHTS_VERSION} file")
    lora = require(config, "lora", dict, source)
    settings = LoraSettings(
        rank=require(lora, "rank", int, f"{source}: lora"),
        alpha=float(require(lora, "alpha", (int, float), f"{source}: lora")),
        target_modules=tuple(require(lora, "target_modules", list, f"{source}: lora")),
        dropout=float(require(lora, "dropout", (int, float), f"{source}: lora")))
    return settings, require(config, "latent_channels", int, source)


def load_dwm_weights(transformer, directory: str | Path) -> LoraSettings:
    """Add the LoRA adapter and load the LoRA and input-projection tensors of ``directory``."""
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

    directory = Path(directory)
    settings, latent_channels = read_dwm_config(directory)
    if transformer.config.in_channels != dwm_channels(latent_channels):
        raise CheckpointError(
            f"{directory}: weights for {dwm_channels(latent_channels)} input channels, the "
            f"transformer has {transformer.config.in_channels}")
    add_lora(transformer, settings)
    expected = get_peft_model_state_dict(transformer, adapter_name=ADAPTER_NAME)
    lora = load_tensors(directory / LORA_FILE, device=transformer.device)
    missing = sorted(set(expected) - set(lora))
    unexpected = sorted(set(lora) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{directory / LORA_FILE}: LoRA tensors do not match the "
                              f"transformer (missing {missing[:2]}, unexpected {unexpected[:2]})")
    for name, tensor in lora.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(f"{directory / LORA_FILE}: tensor '{name}' has shape "
                                  f"{tuple(tensor.shape)}, expected "
                                  f"{tuple(expected[name].shape)}")
    set_peft_model_state_dict(transformer, lora, adapter_name=ADAPTER_NAME)
    load_state_into(transformer.patch_embed.proj, load_tensors(directory / INPUT_FILE),
                    directory / INPUT_FILE)
    return settings
