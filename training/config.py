"""Training/evaluation configuration: nested dataclasses loaded from YAML, unknown keys rejected."""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from training.datasets import DatasetSpec

MODES = ("pretrain", "finetune", "keypoint_head", "decoder")


@dataclass
class DataConfig:
    datasets: list[DatasetSpec] = field(default_factory=list)
    num_context: int = 8  # appendix C.1
    window_s: float = 4.0
    segments: int = 10
    augment: bool = True
    # actions the predictor is trained on: keypoint_delta (DexWM) or rigid_body (DexAC sec. 4.3)
    action_representation: str = "keypoint_delta"
    num_workers: int = 0  # DataLoader processes decoding video (on the fly) or reading the cache
    prefetch_factor: int = 4  # batches each worker prepares ahead (with num_workers > 0)


@dataclass
class EncoderConfig:
    backend: str = "tiny"
    weights: str | None = None
    dtype: str = "float32"  # float32 or bfloat16 (weights cast, forward under autocast)
    batch_size: int = 64  # frames per encoder forward pass when encoding on the fly
    pool: int = 1  # k x k average pooling of the 16 x 28 patch grid (1, 2 or 4)


@dataclass
class CacheConfig:
    directory: str | None = None  # None: encode frames on the fly
    variants: int = 1  # 1 = unaugmented latents only; more = augmented copies per episode
    dtype: str = "bfloat16"  # storage: float32, bfloat16, float16 or int8 (about half of bf16)
    batch_size: int = 16
    episodes_per_shard: int = 32  # unit of work of a sharded build, and of its resumption
    in_memory: bool = False  # read the whole cache into RAM (small caches: faster batches)


@dataclass
class ModelConfig:
    preset: str = "tiny"
    init_from: str | None = None  # WorldModel directory (fine-tuning, keypoint-head training)
    keypoint_head: dict = field(default_factory=dict)  # extra KeypointHead arguments
    decoder: dict = field(default_factory=dict)  # LatentDecoderConfig fields
    # DexAC PredictorConfig fields (action_tokenizer, local_refinement, global_modulation, ...)
    action_conditioning: dict = field(default_factory=dict)
    action_normalization: bool = True  # per-dimension mean/std from the training data


@dataclass
class OptimConfig:
    lr: float = 1e-4
    min_lr: float = 1e-7  # cosine end (appendix C.1: 1e-4 -> 1e-7)
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 0
    grad_clip: float = 1.0
    batch_size: int = 16  # per process
    epochs: int = 40
    max_steps: int | None = None  # overrides epochs


@dataclass
class LossConfig:
    hc_weight: float = 100.0  # lambda of the hand-consistency loss (section 3.3)
    multistep: int = 8  # autoregressive steps of the fine-tuning loss (section 3.2)
    hc_slots: str = "all"  # "all" predicted frames or only the "last" (saves memory)
    # also on the target frames' encoder latents (averaged with the predictions' term), so the
    # keypoint head decodes encoder latents as well as predicted ones (the planner decodes both)
    hc_targets: bool = False
    # not in the paper: weight of the keypoint head's depth loss (mean absolute error in metres;
    # needs model.keypoint_head.keypoint_depth), on the same latents as the hand-consistency loss
    depth_weight: float = 0.0


@dataclass
class EvalConfig:
    datasets: list[DatasetSpec] = field(default_factory=list)  # empty: the training data
    predictions: int = 20  # 20 steps at 5 Hz = 4 s (section 4.2)
    hz: float = 5.0
    rollouts_per_episode: int = 4
    batch_size: int = 8
    seed: int = 0


@dataclass
class TrainConfig:
    mode: str = "pretrain"
    output_dir: str = "runs/default"
    seed: int = 0
    precision: str = "bf16"  # bf16 autocast or fp32
    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    log_every: int = 10
    progress: bool = True
    collective_timeout_s: float = 1800.0  # torch.distributed timeout; also the longest a
    # process waits without any other process finishing a latent-cache shard

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r} not in {MODES}")
        if self.precision not in ("bf16", "fp32"):
            raise ValueError(f"precision {self.precision!r} must be 'bf16' or 'fp32'")
        if self.encoder.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"encoder.dtype {self.encoder.dtype!r} must be 'float32' or "
                             f"'bfloat16'")
        if self.collective_timeout_s <= 0:
            raise ValueError(f"collective_timeout_s must be > 0, got {self.collective_timeout_s}")
        if self.loss.hc_slots not in ("all", "last"):
            raise ValueError(f"loss.hc_slots {self.loss.hc_slots!r} must be 'all' or 'last'")
        if not (math.isfinite(self.loss.depth_weight) and self.loss.depth_weight >= 0):
            raise ValueError(f"loss.depth_weight must be finite and >= 0, got "
                             f"{self.loss.depth_weight!r}")
        if self.mode == "finetune" and not 1 <= self.loss.multistep <= self.data.num_context:
            raise ValueError(f"loss.multistep {self.loss.multistep} must be in "
                             f"[1, data.num_context={self.data.num_context}]")

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _build(cls, data, where: str):
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def _convert(hint, value, where: str):
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, where)
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list, got {type(value).__name__}")
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        return tuple(value)
    if hint is float and isinstance(value, int | float | str) and not isinstance(value, bool):
        return float(value)
    if hint is int and not (isinstance(value, int) and not isinstance(value, bool)):
        raise ValueError(f"{where}: expected an integer, got {value!r}")
    return value


def config_from_dict(data: dict) -> TrainConfig:
    return _build(TrainConfig, data, "config")


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config; ``overrides`` are ``dotted.key=yaml_value`` strings."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} must look like key.sub=value")
        node = data
        *parents, last = key.split(".")
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if isinstance(node, list):
            node[int(last)] = yaml.safe_load(raw)
        else:
            node[last] = yaml.safe_load(raw)
    return config_from_dict(data)


def save_config(config: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
