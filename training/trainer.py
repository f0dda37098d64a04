"""Trainers: pre-training, multistep fine-tuning, keypoint-head and latent-decoder training.

One ``Trainer`` runs every mode (``config.mode``):

* ``pretrain``: teacher forcing over the clip (slot s predicts frame s+1, appendix C.1),
  loss = latent MSE + 100 x hand-consistency heatmap loss on the predicted latents (sec. 3.3;
  with ``loss.hc_targets`` also on the target frames' encoder latents);
* ``finetune``: the same loss on an 8-step autoregressive rollout from the first clip frame
  with ground-truth actions (multistep prediction, sec. 3.2 and C.1);
* ``keypoint_head``: the heatmap loss of the keypoint head on encoder latents, predictor frozen;
* ``decoder``: a ``LatentDecoder`` reconstructing frames from their latents (appendix A.4).

AdamW with linear warm-up then cosine decay to ``min_lr``, bf16 autocast, gradient clipping.
Multi-process with ``torchrun`` (DDP; NCCL on GPUs, gloo on CPU). The data order is a pure
function of (seed, step), so a run resumed from a checkpoint (model, optimiser, RNG state,
step) continues exactly as if it had not been interrupted. Checkpoints are written into a
temporary directory that is renamed into place, then ``latest.json`` is replaced atomically.
"""
from __future__ import annotations

import csv
import json
import math
import os
import random
import shutil
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from dexwm_ros.core.actions import ACTION_REPRESENTATIONS, ActionNormalizer
from dexwm_ros.core.checkpoint import save_json
from dexwm_ros.core.encoder import build_encoder
from dexwm_ros.core.keypoint_head import KeypointHead
from dexwm_ros.core.predictor import CDiTPredictor, PredictorConfig
from dexwm_ros.core.world_model import WorldModel
from training.augment import AugmentConfig
from training.config import TrainConfig, save_config
from training.datasets import ClipDataset, ClipDatasetConfig
from training.decoder import LatentDecoder, LatentDecoderConfig
from training.latent_cache import LatentCache, build_latent_cache
from training.onthefly import clip_loader, encode_clip_frames
from training.sampling import ClipSampling

METRIC_FIELDS = ("step", "epoch", "lr", "loss", "state", "hc", "depth", "grad_norm",
                 "samples_per_s")


# ---------------------------------------------------------------------------- distributed
def distributed_context() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the torchrun environment, (0, 1, 0) without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def _barrier():
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


class StepBatches:
    """Batch sampler yielding, for steps ``start..total-1``, this process's share of the global
    batch as ``(epoch, index)`` items. Epoch ``e`` visits the dataset in the order of a
    permutation drawn from ``(seed, e)``; the last incomplete global batch is dropped."""

    def __init__(self, dataset_size: int, global_batch: int, rank: int, world: int, seed: int,
                 start: int, total: int):
        if global_batch % world:
            raise ValueError(f"global batch {global_batch} not divisible by {world} processes")
        self.steps_per_epoch = dataset_size // global_batch
        if self.steps_per_epoch == 0:
            raise ValueError(f"dataset of {dataset_size} clips is smaller than the global "
                             f"batch {global_batch}")
        self.size, self.global_batch = dataset_size, global_batch
        self.rank, self.world = rank, world
        self.seed, self.start, self.total = seed, start, total

    def order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch, 7]).permutation(self.size)

    def batch(self, step: int) -> list[tuple[int, int]]:
        epoch, position = divmod(step, self.steps_per_epoch)
        order = self.order(epoch)[position * self.global_batch : (position + 1) * self.global_batch]
        local = self.global_batch // self.world
        return [(epoch, int(i)) for i in order[self.rank * local : (self.rank + 1) * local]]

    def __iter__(self):
        for step in range(self.start, self.total):
            yield self.batch(step)

    def __len__(self) -> int:
        return max(0, self.total - self.start)


def learning_rate(step: int, total: int, optim) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``min_lr`` at ``total``."""
    if optim.warmup_steps and step < optim.warmup_steps:
        return optim.lr * (step + 1) / optim.warmup_steps
    span = max(1, total - optim.warmup_steps)
    progress = min(1.0, (step - optim.warmup_steps) / span)
    return optim.min_lr + 0.5 * (optim.lr - optim.min_lr) * (1 + math.cos(math.pi * progress))


# ---------------------------------------------------------------------------- objective
class Objective(nn.Module):
    """Holds the trained modules; ``forward(batch)`` returns the loss terms of ``mode``."""

    def __init__(self, mode: str, predictor: CDiTPredictor | None, head: KeypointHead | None,
                 decoder: LatentDecoder | None, loss_config):
        super().__init__()
        self.mode = mode
        self.predictor, self.keypoint_head, self.decoder = predictor, head, decoder
        self.loss_config = loss_config

    def _head_frames(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        """``(B, T, ...)`` tensors -> ``(B * T', ...)`` over the frames the keypoint-head losses
        read: all ``T``, or only the last with ``loss.hc_slots: last``."""
        if self.loss_config.hc_slots == "last":
            tensors = [t[:, -1:] for t in tensors]
        return [t.flatten(0, 1) for t in tensors]

    def hand_consistency(self, latents, pixels, visible) -> torch.Tensor:
        """Hand-consistency loss (paper eq. 5) of the keypoint head on latents ``(B, T, P, D)``.

        Eq. 5 divides the squared heatmap error by ``12 x H x W``: the mean is over all 12 maps
        of every frame, not over the visible ones, so a frame with one visible hand (or none:
        DROID) weighs no more than one with both. Maps of keypoints that are not visible are
        left out of the sum (their error counts as 0), as in the authors' implementation."""
        latents, pixels, flat_visible = self._head_frames(latents, pixels, visible)
        predicted = self.keypoint_head(latents).float()
        target = self.keypoint_head.target_heatmaps(pixels, flat_visible)
        per_map = (predicted - target).square().mean(dim=(-2, -1))
        return (per_map * flat_visible).sum() / per_map.numel()

    def keypoint_depth(self, latents, depths, visible) -> torch.Tensor:
        """The keypoint head's depth loss (metres, ``KeypointHead.depth_loss``) on latents
        ``(B, T, P, D)``, over the same frames as the hand-consistency loss."""
        return self.keypoint_head.depth_loss(*self._head_frames(latents, depths, visible))

    def forward(self, latents: torch.Tensor, actions: torch.Tensor, pixels: torch.Tensor,
                visible: torch.Tensor, depths: torch.Tensor | None = None,
                frames: torch.Tensor | None = None) -> dict:
        if self.mode == "decoder":
            images = frames.flatten(0, 1).permute(0, 3, 1, 2).float() / 255.0
            recon = self.decoder(latents.flatten(0, 1)).float()
            l1 = F.l1_loss(recon, images)
            mse = F.mse_loss(recon, images)
            return {"loss": l1 + mse, "state": l1.detach(), "hc": mse.detach(),
                    "depth": torch.zeros_like(l1)}
        depth_weight = self.loss_config.depth_weight
        if self.mode == "keypoint_head":
            hc = self.hand_consistency(latents, pixels, visible)
            depth = (self.keypoint_depth(latents, depths, visible) if depth_weight
                     else torch.zeros_like(hc))
            return {"loss": hc + depth_weight * depth, "state": torch.zeros_like(hc),
                    "hc": hc.detach(), "depth": depth.detach()}
        if self.mode == "pretrain":
            predicted = self.predictor(latents[:, :-1], actions)
            steps = predicted.shape[1]
        else:
            steps = self.loss_config.multistep
            predicted = self.predictor.rollout(latents[:, :1], actions[:, :0], actions[:, :steps])
        target = latents[:, 1 : steps + 1]
        state = F.mse_loss(predicted.float(), target.float())
        pixels, visible = pixels[:, 1 : steps + 1], visible[:, 1 : steps + 1]
        hc = self.hand_consistency(predicted, pixels, visible)
        if self.loss_config.hc_targets:  # the head also reads encoder latents (goal images)
            hc = 0.5 * (hc + self.hand_consistency(target, pixels, visible))
        loss = state + self.loss_config.hc_weight * hc
        depth = torch.zeros_like(hc)
        if depth_weight:
            depths = depths[:, 1 : steps + 1]
            depth = self.keypoint_depth(predicted, depths, visible)
            if self.loss_config.hc_targets:
                depth = 0.5 * (depth + self.keypoint_depth(target, depths, visible))
            loss = loss + depth_weight * depth
        return {"loss": loss, "state": state.detach(), "hc": hc.detach(),
                "depth": depth.detach()}


# ---------------------------------------------------------------------------- trainer
class Trainer:
    def __init__(self, config: TrainConfig):
        self.config = config
        self.rank, self.world, local_rank = distributed_context()
        if self.world > 1 and not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend,
                                    timeout=timedelta(seconds=config.collective_timeout_s))
        if torch.cuda.is_available():
            self.device = torch.device("cuda", local_rank)
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        self.output = Path(config.output_dir)
        self.checkpoints = self.output / "checkpoints"
        if self.rank == 0:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
        _barrier()
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        np.random.seed(config.seed)

        self.encoder = build_encoder(config.encoder.backend, weights=config.encoder.weights,
                                     dtype=getattr(torch, config.encoder.dtype),
                                     device=self.device, pool=config.encoder.pool)
        self.cache = self._prepare_cache()
        self.dataset = self._dataset(config.data.datasets, self.cache,
                                     augment=config.data.augment)
        self.objective = self._build_objective().to(self.device)
        self.parameters = [p for p in self.objective.parameters() if p.requires_grad]
        if not self.parameters:
            raise ValueError(f"mode {config.mode}: nothing to train")
        o = config.optim
        self.optimizer = torch.optim.AdamW(self.parameters, lr=o.lr, betas=tuple(o.betas),
                                           weight_decay=o.weight_decay)
        global_batch = o.batch_size * self.world
        steps_per_epoch = len(self.dataset) // global_batch
        self.total_steps = o.max_steps if o.max_steps is not None else o.epochs * steps_per_epoch
        self.global_batch = global_batch
        self.step = 0
        self.model = self.objective
        if self.world > 1:
            self.model = nn.parallel.DistributedDataParallel(
                self.objective, device_ids=[self.device.index] if self.device.type == "cuda"
                else None)

    # -------------------------------------------------------------- setup helpers
    def _dataset(self, specs, cache, augment: bool) -> ClipDataset:
        d = self.config.data
        sampling = ClipSampling(num_context=d.num_context, window_s=d.window_s,
                                segments=d.segments)
        dataset_config = ClipDatasetConfig(sampling=sampling,
                                           augment=AugmentConfig() if augment else None,
                                           seed=self.config.seed,
                                           action_representation=d.action_representation)
        want_frames = cache is None or self.config.mode == "decoder"
        return ClipDataset(specs, dataset_config, cache=cache, frames=want_frames)

    def _prepare_cache(self) -> LatentCache | None:
        """Build (or finish) the latent cache, every process encoding its share of the
        shards; returns once the index is complete (no collective wait while encoding)."""
        c = self.config.cache
        if c.directory is None:
            return None
        plain = self._dataset(self.config.data.datasets, None, augment=False)
        return build_latent_cache(
            plain.unique_entries, self.encoder, c.directory, variants=c.variants,
            batch_size=c.batch_size, storage=c.dtype, episodes_per_shard=c.episodes_per_shard,
            rank=self.rank, world=self.world, stall_timeout_s=self.config.collective_timeout_s,
            progress=self.config.progress, in_memory=c.in_memory)

    def _build_objective(self) -> Objective:
        c = self.config
        mode = c.mode
        if mode == "decoder":
            decoder = LatentDecoder(LatentDecoderConfig(
                latent_dim=self.encoder.dim, grid=tuple(self.encoder.grid), **c.model.decoder))
            return Objective(mode, None, None, decoder, c.loss)
        if c.model.init_from:
            world_model = WorldModel.load(c.model.init_from)
            predictor, head = world_model.predictor, world_model.keypoint_head
            if head is not None and c.model.keypoint_head.get("keypoint_depth"):
                head.add_depth_output()  # a trained head learns depth in this run
            if world_model.encoder_name != self.encoder.name:
                raise ValueError(f"{c.model.init_from} was trained on encoder "
                                 f"{world_model.encoder_name}, config uses {self.encoder.name}")
        else:
            predictor = CDiTPredictor(PredictorConfig.from_preset(
                c.model.preset, latent_dim=self.encoder.dim,
                num_patches=self.encoder.num_patches, num_slots=c.data.num_context,
                action_representation=c.data.action_representation,
                **c.model.action_conditioning))
            head = KeypointHead(self.encoder.dim, **{
                "grid": self.encoder.grid, "patch": self.encoder.token_pixels,
                **c.model.keypoint_head})
            if mode != "keypoint_head" and c.model.action_normalization:
                mean, std = self.action_statistics()
                predictor.set_action_normalization(mean, std)
        if predictor.config.action_representation != c.data.action_representation:
            raise ValueError(f"the predictor takes {predictor.config.action_representation} "
                             f"actions, data.action_representation is "
                             f"{c.data.action_representation}")
        if c.loss.depth_weight and not head.keypoint_depth:
            raise ValueError("loss.depth_weight > 0 needs a keypoint head with a depth output "
                             "(model.keypoint_head.keypoint_depth: true)")
        if mode == "keypoint_head":
            predictor.requires_grad_(False)
        return Objective(mode, predictor, head, None, c.loss)

    def action_statistics(self, max_clips: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-dimension mean/std of the actions of up to ``max_clips`` epoch-0 clips (the
        same on every process)."""
        stride = max(1, len(self.dataset) // max_clips)
        plain = self._dataset(self.config.data.datasets, None, augment=False)
        plain.return_frames = False
        representation = self.config.data.action_representation
        normalizer = ActionNormalizer(ACTION_REPRESENTATIONS[representation])
        for i in range(0, len(plain), stride):
            normalizer.update(plain[(0, i)]["actions"])
        return normalizer.mean, normalizer.std

    # -------------------------------------------------------------- checkpoints
    def _optimizer_tensors(self) -> tuple[dict, dict]:
        state = self.optimizer.state_dict()
        tensors = {f"{pid}.{name}": value for pid, entry in state["state"].items()
                   for name, value in entry.items() if isinstance(value, torch.Tensor)}
        scalars = {f"{pid}.{name}": value for pid, entry in state["state"].items()
                   for name, value in entry.items() if not isinstance(value, torch.Tensor)}
        return tensors, {"param_groups": state["param_groups"], "scalars": scalars}

    def save_checkpoint(self) -> Path:
        final = self.checkpoints / f"step_{self.step:09d}"
        tmp = self.checkpoints / f".tmp_step_{self.step:09d}"
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        _barrier()
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        save_file(rng, str(tmp / f"rng_rank{self.rank}.safetensors"))
        np_state = np.random.get_state()
        (tmp / f"host_rng_rank{self.rank}.json").write_text(json.dumps({
            "python": _jsonable(random.getstate()),
            "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        }))
        _barrier()
        if self.rank == 0:
            model_state = {k: v.detach().cpu().contiguous()
                           for k, v in self.objective.state_dict().items()}
            save_file(model_state, str(tmp / "model.safetensors"))
            tensors, optim_json = self._optimizer_tensors()
            save_file({k: v.cpu().contiguous() for k, v in tensors.items()},
                      str(tmp / "optimizer.safetensors"))
            (tmp / "state.json").write_text(json.dumps({
                "step": self.step, "world_size": self.world, "optimizer": optim_json,
                "total_steps": self.total_steps}, indent=1))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            save_json(self.checkpoints / "latest.json", {"step": self.step, "path": final.name})
            kept = sorted(p for p in self.checkpoints.glob("step_*") if p.is_dir())
            for old in kept[: -self.config.keep_checkpoints]:
                shutil.rmtree(old)
        _barrier()
        return final

    def load_checkpoint(self, directory: Path) -> None:
        state = json.loads((directory / "state.json").read_text())
        model_state = load_file(str(directory / "model.safetensors"), device=str(self.device))
        self.objective.load_state_dict(model_state)
        tensors = load_file(str(directory / "optimizer.safetensors"), device=str(self.device))
        optim_json = state["optimizer"]
        per_param: dict[int, dict] = {}
        for key, value in list(tensors.items()) + list(optim_json["scalars"].items()):
            pid, name = key.split(".", 1)
            if name == "step" and isinstance(value, torch.Tensor):
                value = value.cpu()  # AdamW keeps its step counter on the CPU
            per_param.setdefault(int(pid), {})[name] = value
        self.optimizer.load_state_dict({"state": per_param,
                                        "param_groups": optim_json["param_groups"]})
        rank_file = directory / f"rng_rank{self.rank}.safetensors"
        host_file = directory / f"host_rng_rank{self.rank}.json"
        if not rank_file.exists():  # resumed with more processes than were saved
            rank_file, host_file = (directory / "rng_rank0.safetensors",
                                    directory / "host_rng_rank0.json")
        rng = load_file(str(rank_file))
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        host = json.loads(host_file.read_text())
        random.setstate(_tupled(host["python"]))
        kind, keys, *rest = host["numpy"]
        np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
        self.step = int(state["step"])

    def latest_checkpoint(self) -> Path | None:
        pointer = self.checkpoints / "latest.json"
        if not pointer.exists():
            return None
        return self.checkpoints / json.loads(pointer.read_text())["path"]

    # -------------------------------------------------------------- run bookkeeping
    def _check_or_save_config(self, resuming: bool) -> None:
        path = self.output / "config.yaml"
        if self.rank != 0:
            return
        if resuming and path.exists():
            import yaml

            saved = yaml.safe_load(path.read_text())
            current = self.config.to_dict()
            volatile = {"progress"}
            differ = sorted(k for k in current if k not in volatile and saved.get(k) !=
                            current[k])
            if differ:
                raise ValueError(f"{self.output} holds a run with a different config "
                                 f"({differ}); resume with the same config or a new output_dir")
        save_config(self.config, path)

    def _truncate_metrics(self) -> None:
        path = self.output / "metrics.csv"
        if self.rank != 0 or not path.exists():
            return
        with path.open() as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= self.step]
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=METRIC_FIELDS)
            writer.writeheader()
            writer.writerows(rows)

    def _log(self, row: dict) -> None:
        path = self.output / "metrics.csv"
        new = not path.exists()
        with path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=METRIC_FIELDS)
            if new:
                writer.writeheader()
            writer.writerow(row)

    def plot(self) -> Path | None:
        """``loss.png``: total, latent and hand-consistency losses against the step."""
        path = self.output / "metrics.csv"
        if self.rank != 0 or not path.exists():
            return None
        from training.plots import plot_losses

        return plot_losses(path, self.output / "loss.png")

    # -------------------------------------------------------------- training
    def _batch_to_inputs(self, batch: dict) -> dict:
        device = self.device
        frames = batch.get("frames")
        if "latents" in batch:
            latents = batch["latents"].to(device).float()
        else:
            latents = encode_clip_frames(self.encoder, frames, self.config.encoder.batch_size)
        return {
            "latents": latents,
            "actions": batch["actions"].to(device),
            "pixels": batch["keypoint_pixels"].to(device),
            "visible": batch["keypoint_visible"].to(device),
            "depths": batch["keypoint_depth"].to(device),
            "frames": frames.to(device) if (frames is not None and
                                            self.config.mode == "decoder") else None,
        }

    def train_step(self, batch: dict) -> dict:
        """One optimiser step on a batch; returns scalar metrics (averaged over processes)."""
        self.objective.train()
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.step, self.total_steps, self.config.optim)
        inputs = self._batch_to_inputs(batch)
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16,
                                  enabled=self.config.precision == "bf16")
        with autocast:
            losses = self.model(**inputs)
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.parameters, self.config.optim.grad_clip)
        self.optimizer.step()
        values = torch.stack([losses["loss"].detach().float(), losses["state"].float(),
                              losses["hc"].float(), losses["depth"].float(),
                              grad_norm.detach().float()])
        if self.world > 1:
            dist.all_reduce(values)
            values /= self.world
        self.step += 1
        loss, state, hc, depth, norm = values.tolist()
        return {"loss": loss, "state": state, "hc": hc, "depth": depth, "grad_norm": norm,
                "lr": self.optimizer.param_groups[0]["lr"]}

    def fit(self) -> dict:
        """Train to ``total_steps`` (resuming from the latest checkpoint) and export."""
        latest = self.latest_checkpoint()
        if latest is not None:
            self.load_checkpoint(latest)
        self._check_or_save_config(resuming=latest is not None)
        self._truncate_metrics()
        sampler = StepBatches(len(self.dataset), self.global_batch, self.rank, self.world,
                              self.config.seed, self.step, self.total_steps)
        loader = clip_loader(self.dataset, sampler, self.config.data.num_workers,
                             self.config.data.prefetch_factor, self.device)
        bar = None
        if self.rank == 0 and self.config.progress:
            from tqdm import tqdm

            bar = tqdm(total=self.total_steps, initial=self.step, desc=self.config.mode,
                       unit="step")
        metrics: dict = {}
        tick = time.perf_counter()
        for batch in loader:
            metrics = self.train_step(batch)
            done = self.step
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss']:.4g}")
            last = done == self.total_steps
            if self.rank == 0 and (done % self.config.log_every == 0 or last):
                elapsed = time.perf_counter() - tick
                tick = time.perf_counter()
                steps = done % self.config.log_every or self.config.log_every
                self._log({"step": done, "epoch": (done - 1) // sampler.steps_per_epoch,
                           "lr": metrics["lr"], "loss": metrics["loss"],
                           "state": metrics["state"], "hc": metrics["hc"],
                           "depth": metrics["depth"], "grad_norm": metrics["grad_norm"],
                           "samples_per_s": steps * self.global_batch / max(elapsed, 1e-9)})
            if done % self.config.checkpoint_every == 0 or last:
                self.save_checkpoint()
                self.plot()
        if bar is not None:
            bar.close()
        self.export()
        return metrics

    def export(self) -> Path | None:
        """Write the trained model: ``model/`` (WorldModel) or ``decoder/`` (LatentDecoder)."""
        if self.rank != 0:
            _barrier()
            return None
        if self.config.mode == "decoder":
            path = self.output / "decoder"
            self.objective.decoder.save(path)
        else:
            path = self.output / "model"
            WorldModel(self.objective.predictor, self.objective.keypoint_head,
                       self.encoder.name, self.encoder.backend,
                       self.encoder.preprocessing).save(path)
        _barrier()
        return path

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _jsonable(value):
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value


def _tupled(value):
    if isinstance(value, list):
        return tuple(_tupled(v) for v in value)
    return value
