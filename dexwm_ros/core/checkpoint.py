"""Safe checkpoint files: safetensors tensors + a JSON config, written atomically.

Nothing here unpickles: tensors come from safetensors, settings from JSON. Every failure raises
``CheckpointError`` naming the file and the field or tensor at fault.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt or does not match the model it should build."""


def _atomic_write(path: Path, write) -> None:
    """``write(tmp_path)`` then rename onto ``path`` (readers never see half a file)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor],
                 metadata: dict[str, str] | None = None) -> None:
    path = Path(path)
    flat = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    _atomic_write(path, lambda tmp: save_file(flat, str(tmp), metadata=metadata))


def save_json(path: str | Path, data: dict) -> None:
    path = Path(path)
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    _atomic_write(path, lambda tmp: tmp.write_text(text))


def load_json(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object at the top level")
    return data


def require(data: dict, key: str, kind: type | tuple[type, ...], source: str | Path):
    """``data[key]`` checked against ``kind``; ``source`` names the file (and parent field)."""
    if key not in data:
        raise CheckpointError(f"{source}: missing field '{key}'")
    value = data[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
        raise CheckpointError(f"{source}: field '{key}' has type {type(value).__name__}")
    return value


def load_tensors(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: corrupt or not a safetensors file ({err})") from err


def load_state_into(module: torch.nn.Module, tensors: dict[str, torch.Tensor],
                    source: str | Path) -> None:
    """Copy ``tensors`` into ``module``'s parameters and buffers, requiring the exact key set
    and shapes; tensors are cast to each destination's dtype."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise CheckpointError(f"{source}: missing tensor '{missing[0]}'"
                              + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        raise CheckpointError(f"{source}: unexpected tensor '{unexpected[0]}'"
                              + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1
                                 else ""))
    for name, want in expected.items():
        got = tensors[name]
        if got.shape != want.shape:
            raise CheckpointError(f"{source}: tensor '{name}' has shape {tuple(got.shape)}, "
                                  f"the config expects {tuple(want.shape)}")
        if not (got.is_floating_point() and torch.isfinite(got).all()):
            raise CheckpointError(f"{source}: tensor '{name}' is not finite floating point")
    module.load_state_dict({name: t.to(expected[name].dtype) for name, t in tensors.items()})
