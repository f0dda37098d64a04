"""Load the DWM pipeline from local files only (nothing is downloaded).

Base model: a directory in the layout of CogVideoX-Fun-V1.1-5b-InP (the base of the released
DWM code; the supplementary, section A, names the V1.5 InP model)::

    transformer/config.json + diffusion_pytorch_model.safetensors (or .safetensors.index.json)
    vae/config.json + diffusion_pytorch_model.safetensors (or .safetensors.index.json)
    text_encoder/config.json + model.safetensors (or model.safetensors.index.json)   (T5)
    tokenizer/tokenizer.json or spiece.model (+ tokenizer_config.json)
    scheduler/scheduler_config.json

Weights must be safetensors (pickled ``.bin`` files are refused). The inpainting transformer
is widened to the DWM input (``dexwm_ros.dwm.model``); the DWM weights directory (LoRA + input
projection) is loaded on top.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from dexwm_ros.dwm.model import load_dwm_weights, widen_patch_embedding
from dexwm_ros.dwm.pipeline import DWMPipeline

SCHEDULERS = ("ddim", "dpm")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_WEIGHTS = {"transformer": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model",
            "text_encoder": "model"}


class BaseModelError(FileNotFoundError):
    """The base-model directory is missing files; the message lists all of them."""


def _weights_problem(folder: Path, stem: str) -> str | None:
    single, index = folder / f"{stem}.safetensors", folder / f"{stem}.safetensors.index.json"
    if single.is_file():
        return None
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (ValueError, KeyError, TypeError) as error:
            return f"{index.relative_to(folder.parent)} is not a valid index ({error})"
        absent = sorted(s for s in shards if not (folder / s).is_file())
        return (f"{folder.name}/ shards {', '.join(absent)}" if absent else None)
    pickled = sorted(p.name for p in folder.glob("*.bin")) if folder.is_dir() else []
    name = f"{folder.name}/{stem}.safetensors (or {stem}.safetensors.index.json + shards)"
    if pickled:
        name += f"; found only pickle files {pickled}, convert them to safetensors"
    return name


def check_base_directory(path: str | Path) -> Path:
    """Raise :class:`BaseModelError` naming everything missing from the base layout."""
    path = Path(path)
    if not path.is_dir():
        raise BaseModelError(f"DWM base model directory {path} does not exist")
    missing = []
    for folder, stem in _WEIGHTS.items():
        if not (path / folder / "config.json").is_file():
            missing.append(f"{folder}/config.json")
        problem = _weights_problem(path / folder, stem)
        if problem:
            missing.append(problem)
    tokenizer = path / "tokenizer"
    if not ((tokenizer / "tokenizer.json").is_file() or (tokenizer / "spiece.model").is_file()):
        missing.append("tokenizer/tokenizer.json or tokenizer/spiece.model")
    if not (path / "scheduler" / "scheduler_config.json").is_file():
        missing.append("scheduler/scheduler_config.json")
    if missing:
        raise BaseModelError(f"DWM base model directory {path} is incomplete (expected the "
                             f"CogVideoX-Fun-V1.1-5b-InP layout); missing: {'; '.join(missing)}")
    return path


def load_pipeline(base_path: str | Path, dwm_weights: str | Path | None = None,
                  device: str | torch.device = "cpu", dtype: str = "float32",
                  scheduler: str = "ddim", vae_slicing: bool = True,
                  vae_tiling: bool = False,
                  text_encoder_device: str | torch.device | None = None) -> DWMPipeline:
    """The DWM pipeline from a base directory and (optionally) a DWM weights directory.

    Without ``dwm_weights`` the widened base model is returned (the hand channels have zero
    weight, as at the start of training). ``text_encoder_device`` (default ``device``) can keep
    the T5 encoder (about 9 GiB in bf16 for the 5B model) off the GPU: prompt embeddings are
    computed once per prompt and cached.
    """
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDDIMScheduler,
        CogVideoXDPMScheduler,
        CogVideoXTransformer3DModel,
    )
    from transformers import AutoTokenizer, T5EncoderModel

    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose from {tuple(DTYPES)}")
    if scheduler not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {scheduler!r}; choose from {SCHEDULERS}")
    base = check_base_directory(base_path)
    if dwm_weights is not None and not Path(dwm_weights).is_dir():
        raise FileNotFoundError(f"DWM weights directory {dwm_weights} does not exist")
    torch_dtype = DTYPES[dtype]
    common = {"local_files_only": True, "use_safetensors": True}
    vae = AutoencoderKLCogVideoX.from_pretrained(base / "vae", torch_dtype=torch_dtype, **common)
    transformer = CogVideoXTransformer3DModel.from_pretrained(
        base / "transformer", torch_dtype=torch_dtype, **common)
    text_encoder = T5EncoderModel.from_pretrained(base / "text_encoder", dtype=torch_dtype,
                                                  **common)
    tokenizer = AutoTokenizer.from_pretrained(base / "tokenizer", local_files_only=True)
    scheduler_class = CogVideoXDDIMScheduler if scheduler == "ddim" else CogVideoXDPMScheduler
    noise_schedule = scheduler_class.from_config(
        json.loads((base / "scheduler" / "scheduler_config.json").read_text()))
    widen_patch_embedding(transformer, int(vae.config.latent_channels))
    if dwm_weights is not None:
        load_dwm_weights(transformer, dwm_weights)
    for module, where in ((vae, device), (transformer, device),
                          (text_encoder, text_encoder_device or device)):
        module.to(where).eval().requires_grad_(False)
    pipeline = DWMPipeline(vae, transformer, noise_schedule, text_encoder, tokenizer)
    pipeline.set_vae_memory_savers(vae_slicing, vae_tiling)
    return pipeline
