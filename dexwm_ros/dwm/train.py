"""DWM LoRA fine-tuning on triplets (static scene, hand, interaction, prompt).

Supplementary A: LoRA (rank 64, alpha 64) on the diffusion transformer plus the widened input
projection are trained, everything else is frozen; AdamW, learning rate 1e-4. The loss is the
latent diffusion loss of eq. 3 in the parameterisation of the base model's scheduler
(CogVideoX: v-prediction). VAE latents and prompt embeddings are computed once into
``<output>/cache/`` (``<stem>.safetensors``), then the VAE and T5 are released.

``torchrun --nproc_per_node N -m dexwm_ros.dwm.train --config ...`` trains data-parallel: each
process takes its share of every global batch and the gradients of the trained tensors are
averaged. Re-running the same command resumes from ``checkpoints/latest.json`` (same step,
optimiser state and data order; the noise of sample ``i`` at step ``s`` is drawn from
``(seed, s, i)``, so the run does not depend on the number of processes or micro-batches).
A checkpoint's ``dwm/`` folder and the final ``<output>/dwm/`` are DWM weights directories
that ``load_pipeline(base, dwm_weights=...)`` reads.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from dexwm_ros.core.checkpoint import load_json, load_tensors, save_json, save_tensors
from dexwm_ros.dwm.model import LoraSettings, add_lora, save_dwm_weights, trainable_parameters

METRIC_FIELDS = ("step", "lr", "loss", "grad_norm", "samples_per_s")


@dataclass
class DWMTrainConfig:
    """Training settings (YAML keys of the same names)."""

    base_model: str  # base directory (CogVideoX-Fun-InP layout) or "tiny" (random, for tests)
    triplets: str  # directory written by dexwm-dwm-triplets
    output: str
    lora: LoraSettings = field(default_factory=LoraSettings)
    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 100
    max_grad_norm: float = 1.0
    batch_size: int = 8  # global, over all processes
    micro_batch_size: int = 0  # per process and forward pass (gradient accumulation); 0 = all
    steps: int = 1000
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"  # bfloat16 on GPUs (paper setting)
    gradient_checkpointing: bool = False

    @classmethod
    def from_yaml(cls, path: str | Path) -> DWMTrainConfig:
        import yaml

        data = yaml.safe_load(Path(path).read_text()) or {}
        names = {f.name for f in cls.__dataclass_fields__.values()}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{path}: unknown keys {unknown}; known: {sorted(names)}")
        if "lora" in data:
            lora = dict(data["lora"])
            if "target_modules" in lora:
                lora["target_modules"] = tuple(lora["target_modules"])
            data["lora"] = LoraSettings(**lora)
        if "betas" in data:
            data["betas"] = tuple(data["betas"])
        config = cls(**data)
        config.check()
        return config

    def check(self) -> None:
        for name in ("batch_size", "steps", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")

    def to_json(self) -> dict:
        data = asdict(self)
        data["lora"]["target_modules"] = list(self.lora.target_modules)
        data["betas"] = list(self.betas)
        return data


def diffusion_loss(pipeline, latents: torch.Tensor, conditions: torch.Tensor,
                   prompt_embeds: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
    """Eq. 3 of the paper with the scheduler's target (noise or velocity); sample ``i`` draws
    its timestep and noise from ``generators[i]``."""
    scheduler = pipeline.scheduler
    if len(generators) != latents.shape[0]:
        raise ValueError(f"{len(generators)} generators for {latents.shape[0]} samples")
    timesteps = torch.cat([torch.randint(0, scheduler.config.num_train_timesteps, (1,),
                                         generator=g) for g in generators]).to(latents.device)
    noise = torch.stack([torch.randn(latents.shape[1:], generator=g) for g in generators])
    noise = noise.to(latents.device, latents.dtype)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    prediction = pipeline.predict(noisy, conditions, prompt_embeds, timesteps)
    if scheduler.config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    elif scheduler.config.prediction_type == "epsilon":
        target = noise
    else:
        raise ValueError(f"unsupported prediction type {scheduler.config.prediction_type!r}")
    return F.mse_loss(prediction.float(), target.float())


def learning_rate(step: int, config: DWMTrainConfig) -> float:
    """Linear warm-up, then cosine decay to zero at ``steps``."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return 0.5 * config.lr * (1 + math.cos(math.pi * min(1.0, progress)))


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


class DWMTrainer:
    """Cache latents, then train LoRA + input projection; checkpoints and resume."""

    def __init__(self, config: DWMTrainConfig) -> None:
        from dexwm_ros.dwm.loading import load_pipeline
        from dexwm_ros.dwm.triplets import list_triplets

        self.config = config
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if config.device.startswith("cuda") else "gloo")
        if config.batch_size % self.world:
            raise ValueError(f"batch_size {config.batch_size} is not divisible by "
                             f"{self.world} processes")
        local = config.batch_size // self.world
        self.micro_batch = config.micro_batch_size or local
        if local % self.micro_batch:
            raise ValueError(f"the per-process batch {local} is not divisible by "
                             f"micro_batch_size {self.micro_batch}")
        self.device = torch.device(config.device)
        if self.device.type == "cuda":
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        self.output = Path(config.output)
        self.checkpoints = self.output / "checkpoints"
        if self.rank == 0:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
        base = self._base_directory()
        self.samples = list_triplets(config.triplets)
        if len(self.samples) < config.batch_size:
            raise ValueError(f"{len(self.samples)} triplets are fewer than the batch size "
                             f"{config.batch_size}")
        self.pipeline = load_pipeline(base, device=self.device, dtype=config.dtype)
        self._build_cache()
        self.pipeline.vae = self.pipeline.text_encoder = None  # only the cache is needed now
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        transformer = self.pipeline.transformer
        add_lora(transformer, config.lora)
        self.parameters = trainable_parameters(transformer)
        for parameter in self.parameters.values():  # trained tensors in float32
            parameter.data = parameter.data.float()
        if config.gradient_checkpointing:
            transformer.enable_gradient_checkpointing()
        transformer.train()
        self.optimizer = torch.optim.AdamW(list(self.parameters.values()), lr=config.lr,
                                           betas=config.betas,
                                           weight_decay=config.weight_decay)
        self.step = 0
        self.latent_channels = self.pipeline.latent_channels

    # -------------------------------------------------------------- data
    def _base_directory(self) -> Path:
        if self.config.base_model != "tiny":
            return Path(self.config.base_model)
        from dexwm_ros.dwm.tiny import write_tiny_base

        base = self.output / "tiny_base"
        if self.rank == 0 and not (base / "scheduler").is_dir():
            write_tiny_base(base, seed=self.config.seed)
        _barrier()
        return base

    def cache_path(self, stem: str) -> Path:
        return self.output / "cache" / f"{stem}.safetensors"

    def _build_cache(self) -> None:
        from tqdm import tqdm

        from dexwm_ros.dwm.triplets import read_triplet

        (self.output / "cache").mkdir(parents=True, exist_ok=True)
        mine = [s for i, s in enumerate(self.samples)
                if i % self.world == self.rank and not self.cache_path(s.stem).is_file()]
        for info in tqdm(mine, desc="caching DWM latents", unit="triplet",
                         disable=not mine or self.rank != 0):
            videos = read_triplet(info)
            tensors = {name: self.pipeline.encode_video(video)[0]
                       for name, video in videos.items()}
            tensors["prompt_embeds"] = self.pipeline.encode_prompt([info.prompt])[0]
            save_tensors(self.cache_path(info.stem), tensors)
        _barrier()

    def batch(self, step: int) -> list[int]:
        """This process's sample indices for ``step`` (per-epoch permutations of the data)."""
        per_epoch = len(self.samples) // self.config.batch_size
        epoch, position = divmod(step, per_epoch)
        order = np.random.default_rng([self.config.seed, epoch]).permutation(len(self.samples))
        chunk = order[position * self.config.batch_size:(position + 1) * self.config.batch_size]
        local = self.config.batch_size // self.world
        return [int(i) for i in chunk[self.rank * local:(self.rank + 1) * local]]

    def generators(self, indices: list[int]) -> list[torch.Generator]:
        """Noise of sample ``i`` at this step from ``(seed, step, i)``: the same whatever the
        number of processes or micro-batches."""
        return [torch.Generator().manual_seed(int(np.random.SeedSequence(
            [self.config.seed, self.step, i]).generate_state(1)[0])) for i in indices]

    def load_batch(self, indices: list[int]) -> dict[str, torch.Tensor]:
        items = [load_tensors(self.cache_path(self.samples[i].stem), device=self.device)
                 for i in indices]
        dtype = self.pipeline.dtype
        return {name: torch.stack([item[name] for item in items]).to(dtype)
                for name in items[0]}

    def batch_loss(self, batch: dict[str, torch.Tensor], generators: list[torch.Generator]):
        """Loss of a cached batch; frozen weights in ``dtype``, trained ones in float32."""
        conditions = self.pipeline.condition_latents(batch["static"], batch["hand"])
        with torch.autocast(self.device.type, dtype=self.pipeline.dtype,
                            enabled=self.pipeline.dtype != torch.float32):
            return diffusion_loss(self.pipeline, batch["interaction"], conditions,
                                  batch["prompt_embeds"], generators)

    # -------------------------------------------------------------- training
    def train_step(self) -> dict:
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.step, self.config)
        start = time.perf_counter()
        indices = self.batch(self.step)
        self.optimizer.zero_grad(set_to_none=True)
        loss = torch.zeros((), device=self.device)
        for first in range(0, len(indices), self.micro_batch):  # gradient accumulation
            part = indices[first:first + self.micro_batch]
            micro = self.batch_loss(self.load_batch(part), self.generators(part))
            micro = micro * (len(part) / len(indices))
            micro.backward()
            loss += micro.detach()
        grads = [p.grad for p in self.parameters.values() if p.grad is not None]
        if self.world > 1:
            for grad in grads:
                dist.all_reduce(grad)
                grad /= self.world
        norm = torch.nn.utils.clip_grad_norm_(list(self.parameters.values()),
                                              self.config.max_grad_norm)
        self.optimizer.step()
        loss_value = loss
        if self.world > 1:
            dist.all_reduce(loss_value)
            loss_value /= self.world
        self.step += 1
        return {"step": self.step, "lr": self.optimizer.param_groups[0]["lr"],
                "loss": float(loss_value), "grad_norm": float(norm),
                "samples_per_s": self.config.batch_size / (time.perf_counter() - start)}

    def fit(self) -> Path:
        """Train to ``steps`` (resuming if a checkpoint exists); returns the exported weights."""
        from tqdm import tqdm

        latest = self.latest_checkpoint()
        if latest is not None:
            self.load_checkpoint(latest)
        self._check_or_save_config()
        metrics = self.output / "metrics.csv"
        if self.rank == 0 and not metrics.exists():
            with metrics.open("w", newline="") as f:
                csv.writer(f).writerow(METRIC_FIELDS)
        progress = tqdm(total=self.config.steps, initial=self.step, desc="DWM LoRA",
                        unit="step", disable=self.rank != 0)
        while self.step < self.config.steps:
            row = self.train_step()
            progress.update(1)
            progress.set_postfix(loss=f"{row['loss']:.4f}")
            if self.rank == 0:
                with metrics.open("a", newline="") as f:
                    csv.writer(f).writerow([row[k] for k in METRIC_FIELDS])
            if self.step % self.config.checkpoint_every == 0 or self.step == self.config.steps:
                self.save_checkpoint()
        progress.close()
        final = self.output / "dwm"
        if self.rank == 0:
            save_dwm_weights(self.pipeline.transformer, final, self.config.lora,
                             self.latent_channels)
        _barrier()
        return final

    def _check_or_save_config(self) -> None:
        path = self.output / "config.json"
        current = self.config.to_json()
        if path.is_file():
            saved = load_json(path)
            changed = sorted(k for k in current if k not in ("steps", "checkpoint_every",
                                                             "keep_checkpoints")
                             and saved.get(k) != current[k])
            if changed:
                raise ValueError(f"{path}: the run was started with other settings for "
                                 f"{changed}; use a new output directory")
        if self.rank == 0:
            save_json(path, current)

    # -------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> Path:
        final = self.checkpoints / f"step_{self.step:09d}"
        if self.rank == 0:
            tmp = self.checkpoints / f".tmp_step_{self.step:09d}"
            shutil.rmtree(tmp, ignore_errors=True)
            save_dwm_weights(self.pipeline.transformer, tmp / "dwm", self.config.lora,
                             self.latent_channels)
            state = self.optimizer.state_dict()
            names = list(self.parameters)
            tensors, scalars = {}, {}
            for index, entry in state["state"].items():
                for key, value in entry.items():
                    target = tensors if isinstance(value, torch.Tensor) and value.ndim else scalars
                    target[f"{names[index]}/{key}"] = (value if target is tensors
                                                       else float(value))
            save_tensors(tmp / "optimizer.safetensors", tensors)
            save_json(tmp / "state.json", {"step": self.step, "scalars": scalars,
                                           "param_groups": state["param_groups"]})
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            save_json(self.checkpoints / "latest.json", {"path": final.name, "step": self.step})
            for old in sorted(self.checkpoints.glob("step_*"))[:-self.config.keep_checkpoints]:
                shutil.rmtree(old)
        _barrier()
        return final

    def latest_checkpoint(self) -> Path | None:
        pointer = self.checkpoints / "latest.json"
        return self.checkpoints / load_json(pointer)["path"] if pointer.is_file() else None

    def load_checkpoint(self, directory: Path) -> None:
        from peft.utils import set_peft_model_state_dict

        from dexwm_ros.core.checkpoint import load_state_into
        from dexwm_ros.dwm.model import ADAPTER_NAME, INPUT_FILE, LORA_FILE, read_dwm_config

        settings, _ = read_dwm_config(directory / "dwm")
        if settings != self.config.lora:
            raise ValueError(f"{directory}: LoRA settings {settings} differ from the config's "
                             f"{self.config.lora}")
        transformer = self.pipeline.transformer
        set_peft_model_state_dict(transformer, load_tensors(directory / "dwm" / LORA_FILE),
                                  adapter_name=ADAPTER_NAME)
        source = directory / "dwm" / INPUT_FILE
        load_state_into(transformer.patch_embed.proj, load_tensors(source), source)
        state = load_json(directory / "state.json")
        tensors = load_tensors(directory / "optimizer.safetensors", device=self.device)
        index = {name: i for i, name in enumerate(self.parameters)}
        per_parameter: dict[int, dict] = {}
        for key, value in list(tensors.items()) + list(state["scalars"].items()):
            name, entry = key.rsplit("/", 1)
            if name not in index:
                raise ValueError(f"{directory}: optimizer state for unknown tensor {name}")
            if not isinstance(value, torch.Tensor):
                value = torch.tensor(value)  # AdamW keeps its step counter as a tensor
            per_parameter.setdefault(index[name], {})[entry] = value
        self.optimizer.load_state_dict({"state": per_parameter,
                                        "param_groups": state["param_groups"]})
        self.step = int(state["step"])


def main(argv: list[str] | None = None) -> int:
    """``dexwm-dwm-train --config config/dwm_train_tiny.yaml``."""
    parser = argparse.ArgumentParser(prog="dexwm-dwm-train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="training YAML")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a top-level setting (YAML value), repeatable")
    args = parser.parse_args(argv)
    import yaml

    config = DWMTrainConfig.from_yaml(args.config)
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not hasattr(config, key) or key == "lora":
            parser.error(f"--set expects KEY=VALUE with a top-level key, got {item!r}")
        setattr(config, key, yaml.safe_load(value))
    config.check()
    trainer = DWMTrainer(config)
    final = trainer.fit()
    if trainer.rank == 0:
        print(json.dumps({"weights": str(final), "step": trainer.step}))
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
