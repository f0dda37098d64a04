"""Trainers on the simulator fixture: loss goes down, every mode runs and exports, DDP on two
gloo processes matches one process with the same global batch, kill-and-resume reproduces the
uninterrupted loss curve."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from dexwm_ros.core.keypoint_head import KeypointHead
from dexwm_ros.core.predictor import CDiTPredictor, PredictorConfig
from dexwm_ros.core.world_model import WorldModel
from training.config import LossConfig, config_from_dict
from training.decoder import LatentDecoder
from training.trainer import Objective, Trainer

REPO = Path(__file__).resolve().parents[2]


def tiny_config(output: Path, sim_root: Path, cache: Path, **overrides) -> dict:
    config = {
        "mode": "pretrain", "output_dir": str(output), "seed": 0, "precision": "fp32",
        "data": {"datasets": [{"kind": "sim", "root": str(sim_root)}], "augment": False,
                 "num_context": 4},
        "encoder": {"backend": "tiny"},
        "cache": {"directory": str(cache)},
        "model": {"preset": "tiny", "keypoint_head": {"dim": 32, "depth": 1, "heads": 2}},
        "optim": {"lr": 2e-3, "min_lr": 2e-4, "warmup_steps": 2, "batch_size": 2,
                  "max_steps": 20, "weight_decay": 0.0},
        "loss": {"hc_slots": "last"},
        "checkpoint_every": 10, "log_every": 1, "progress": False,
    }
    for key, value in overrides.items():
        node = config
        *parents, last = key.split("__")
        for part in parents:
            node = node[part]
        node[last] = value
    return config


def losses(run: Path) -> list[float]:
    with (run / "metrics.csv").open() as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


def run_cli(config: dict, path: Path, nproc: int = 1, wait: bool = True):
    path.write_text(yaml.safe_dump(config))
    inherited = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    path_entries = [str(REPO)] + [p for p in inherited if p]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(path_entries)}
    if nproc == 1:
        command = [sys.executable, "-m", "training.train", "--config", str(path)]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={nproc}", "-m", "training.train", "--config", str(path)]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    if wait:
        output, _ = process.communicate(timeout=300)
        if process.returncode != 0:
            pytest.fail(f"training exited with {process.returncode}:\n{output[-4000:]}")
    return process


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("latent_cache")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, sim_root, cache_dir):
    run = tmp_path_factory.mktemp("pretrain") / "run"
    config = config_from_dict(tiny_config(run, sim_root[0], cache_dir,
                                          optim__max_steps=15, loss__hc_slots="all"))
    trainer = Trainer(config)
    trainer.fit()
    return run


def test_pretraining_lowers_the_loss_and_writes_the_run(pretrained):
    values = losses(pretrained)
    assert len(values) == 15
    assert sum(values[-3:]) < 0.7 * sum(values[:3])
    for name in ("config.yaml", "loss.png", "checkpoints/latest.json", "model"):
        assert (pretrained / name).exists(), name
    model = WorldModel.load(pretrained / "model")
    assert model.predictor.config.num_slots == 4
    assert not torch.equal(model.predictor.action_std, torch.ones_like(model.predictor.action_std))


@pytest.mark.parametrize("mode", ["finetune", "keypoint_head", "decoder"])
def test_other_modes_train_and_export(mode, pretrained, sim_root, cache_dir, tmp_path):
    init = str(pretrained / "model") if mode != "decoder" else None
    config = config_from_dict(tiny_config(tmp_path / mode, sim_root[0], cache_dir, mode=mode,
                                          model__init_from=init, optim__max_steps=2,
                                          loss__multistep=4))
    trainer = Trainer(config)
    metrics = trainer.fit()
    assert metrics["loss"] > 0 and len(losses(tmp_path / mode)) == 2
    if mode == "decoder":
        decoder = LatentDecoder.load(tmp_path / mode / "decoder")
        assert decoder(torch.zeros(1, 448, trainer.encoder.dim)).shape == (1, 3, 224, 392)
        return
    before = WorldModel.load(pretrained / "model")
    after = WorldModel.load(tmp_path / mode / "model")
    predictor_same = all(torch.equal(a, b) for a, b in zip(
        before.predictor.state_dict().values(), after.predictor.state_dict().values(),
        strict=True))
    assert predictor_same == (mode == "keypoint_head")


def test_ddp_two_processes_match_one_process(sim_root, cache_dir, tmp_path):
    single = tiny_config(tmp_path / "single", sim_root[0], cache_dir, optim__max_steps=3)
    trainer = Trainer(config_from_dict(single))
    trainer.fit()
    double = tiny_config(tmp_path / "ddp", sim_root[0], cache_dir, optim__max_steps=3,
                         optim__batch_size=1)
    run_cli(double, tmp_path / "ddp.yaml", nproc=2)
    torch.testing.assert_close(losses(tmp_path / "ddp"), losses(tmp_path / "single"),
                               rtol=1e-4, atol=1e-6)
    one = load_file(str(tmp_path / "single/checkpoints/step_000000003/model.safetensors"))
    two = load_file(str(tmp_path / "ddp/checkpoints/step_000000003/model.safetensors"))
    assert one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5)


def test_kill_and_resume_reproduces_the_loss_curve(sim_root, cache_dir, tmp_path):
    steps = 12
    reference = tiny_config(tmp_path / "reference", sim_root[0], cache_dir,
                            optim__max_steps=steps, checkpoint_every=2)
    Trainer(config_from_dict(reference)).fit()

    run = tmp_path / "killed"
    config = tiny_config(run, sim_root[0], cache_dir, optim__max_steps=steps, checkpoint_every=2)
    process = run_cli(config, tmp_path / "killed.yaml", wait=False)
    pointer = run / "checkpoints" / "latest.json"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if pointer.exists() and json.loads(pointer.read_text())["step"] >= 4:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL, "training finished before it could be killed"
    killed_at = json.loads(pointer.read_text())["step"]
    assert killed_at < steps

    run_cli(config, tmp_path / "killed.yaml")
    assert json.loads(pointer.read_text())["step"] == steps
    torch.testing.assert_close(losses(run), losses(tmp_path / "reference"), rtol=1e-6, atol=0)


class DoublingPredictor(CDiTPredictor):
    """Hand-built dynamics: the next latent is twice the current one."""

    def forward(self, latents, actions):
        return 2 * latents


def tiny_objective(mode: str, multistep: int = 3) -> Objective:
    predictor = DoublingPredictor(PredictorConfig.from_preset("tiny", latent_dim=8,
                                                              num_patches=448, num_slots=4))
    head = KeypointHead(8, dim=16, depth=1, heads=2)
    return Objective(mode, predictor, head, None, LossConfig(multistep=multistep))


def test_multistep_loss_feeds_its_own_predictions_back():
    """Constant ground-truth frames (all ones): teacher forcing predicts 2 from every true
    frame (MSE 1); the rollout predicts 2, 4, 8 from its own outputs (MSE (1 + 9 + 49) / 3)."""
    latents = torch.ones(2, 5, 448, 8)
    inputs = {"latents": latents, "actions": torch.zeros(2, 4, 132),
              "pixels": torch.zeros(2, 5, 12, 2), "visible": torch.zeros(2, 5, 12, dtype=bool)}
    with torch.no_grad():
        finetune = tiny_objective("finetune")(**inputs)
        pretrain = tiny_objective("pretrain")(**inputs)
    assert finetune["state"].item() == pytest.approx(59 / 3)
    assert pretrain["state"].item() == pytest.approx(1.0)


def test_hand_consistency_averages_over_all_twelve_maps():
    """Paper eq. 5 divides by 12 x H x W: one visible keypoint contributes its map's MSE / 12,
    and a frame without visible keypoints (DROID) contributes nothing but still counts."""
    objective = tiny_objective("keypoint_head")
    torch.manual_seed(0)
    latents = torch.randn(1, 2, 448, 8)
    pixels = torch.tensor([100.0, 50.0]).expand(1, 2, 12, 2)
    visible = torch.zeros(1, 2, 12, dtype=torch.bool)
    visible[0, 0, 7] = True  # one visible keypoint in frame 0, none in frame 1
    with torch.no_grad():
        loss = objective.hand_consistency(latents, pixels, visible)
        predicted = objective.keypoint_head(latents[0, :1])[0, 7]
    rows, cols = torch.meshgrid(torch.arange(224.0), torch.arange(392.0), indexing="ij")
    target = torch.exp(-((cols - 100) ** 2 + (rows - 50) ** 2) / 8)  # sigma 2 px, peak 1
    map_mse = ((predicted - target) ** 2).mean()
    assert loss.item() == pytest.approx(map_mse.item() / 24, rel=1e-5)  # 2 frames x 12 maps
