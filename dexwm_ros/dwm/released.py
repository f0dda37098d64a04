"""Import a DWM checkpoint in the released code's format into a DWM weights directory.

The authors' CogVideoX training saves, per checkpoint folder, ``pytorch_lora_weights.safetensors``
(peft LoRA tensors of the transformer, ``transformer_blocks.N.attn1.to_q.lora_A.weight``, ...)
and ``non_lora_weights.safetensors`` (the other trained tensors: the widened
``patch_embed.proj``), with the same input-channel order as ours. The LoRA rank is read from
the tensors; alpha is not stored there and defaults to the paper's 64 (supplementary A).

    dexwm-dwm-import --checkpoint /models/DWM-CogVideoX-Fun-5b-LoRA --out /models/dwm_weights
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from dexwm_ros.core.checkpoint import CheckpointError, load_tensors, save_json, save_tensors
from dexwm_ros.dwm.model import (
    CONFIG_FILE,
    INPUT_FILE,
    LORA_FILE,
    WEIGHTS_FORMAT,
    WEIGHTS_VERSION,
    LoraSettings,
)

RELEASED_LORA = "pytorch_lora_weights.safetensors"
RELEASED_OTHER = "non_lora_weights.safetensors"
_PROJECTION = ("patch_embed.proj.weight", "patch_embed.proj.bias")


def import_released(checkpoint: str | Path, out: str | Path, alpha: float = 64.0) -> Path:
    """Convert a released checkpoint folder; returns the DWM weights directory ``out``."""
    checkpoint, out = Path(checkpoint), Path(out)
    missing = [n for n in (RELEASED_LORA, RELEASED_OTHER) if not (checkpoint / n).is_file()]
    if missing:
        raise CheckpointError(f"released DWM checkpoint {checkpoint} lacks {', '.join(missing)}")
    lora = load_tensors(checkpoint / RELEASED_LORA)
    other = load_tensors(checkpoint / RELEASED_OTHER)
    odd = sorted(k for k in lora if ".lora_A." not in k and ".lora_B." not in k)
    if odd or not lora:
        raise CheckpointError(f"{checkpoint / RELEASED_LORA}: not peft LoRA tensors "
                              f"(e.g. {odd[:2]})")
    absent = [k for k in _PROJECTION if k not in other]
    if absent:
        raise CheckpointError(f"{checkpoint / RELEASED_OTHER}: missing {absent}")
    unknown = sorted(set(other) - set(_PROJECTION))
    if unknown:
        raise CheckpointError(f"{checkpoint / RELEASED_OTHER}: tensors other than the input "
                              f"projection are not supported: {unknown[:3]}")
    ranks = {t.shape[0] for k, t in lora.items() if ".lora_A." in k}
    if len(ranks) != 1:
        raise CheckpointError(f"{checkpoint / RELEASED_LORA}: LoRA ranks differ: {ranks}")
    # Module paths without the block index, e.g. "attn1.to_q" (peft matches name suffixes).
    targets = sorted({re.sub(r"^transformer_blocks\.\d+\.", "", k.split(".lora_")[0])
                      for k in lora})
    in_channels = other["patch_embed.proj.weight"].shape[1]
    if (in_channels - 1) % 3:
        raise CheckpointError(f"{checkpoint / RELEASED_OTHER}: input projection has "
                              f"{in_channels} channels, not 3 C + 1")
    settings = LoraSettings(rank=ranks.pop(), alpha=alpha, target_modules=tuple(targets))
    out.mkdir(parents=True, exist_ok=True)
    save_tensors(out / LORA_FILE, lora)
    save_tensors(out / INPUT_FILE, {k.rsplit(".", 1)[1]: other[k] for k in _PROJECTION})
    save_json(out / CONFIG_FILE, {
        "format": WEIGHTS_FORMAT, "version": WEIGHTS_VERSION,
        "latent_channels": (in_channels - 1) // 3, "in_channels": in_channels,
        "lora": {"rank": settings.rank, "alpha": settings.alpha,
                 "target_modules": list(settings.target_modules), "dropout": 0.0},
        "imported_from": str(checkpoint)})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dexwm-dwm-import", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="released checkpoint folder (pytorch_lora_weights.safetensors, "
                             "non_lora_weights.safetensors)")
    parser.add_argument("--out", type=Path, required=True, help="DWM weights directory to write")
    parser.add_argument("--alpha", type=float, default=64.0, help="LoRA alpha (paper: 64)")
    args = parser.parse_args(argv)
    print(f"wrote {import_released(args.checkpoint, args.out, args.alpha)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
