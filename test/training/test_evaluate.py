"""Open-loop evaluation on the simulator fixture, checked against numbers computed by hand.

A freshly initialised predictor has a zero final layer (adaLN-Zero), so every prediction is the
same constant latent; the expected latent L2 and PCK then follow from the encoder latents of
the ground-truth frames and the keypoint head's pixels for that constant latent.
"""
from __future__ import annotations

import json

import numpy as np
import torch

from dexwm_ros.core.encoder import build_encoder
from dexwm_ros.core.keypoint_head import KeypointHead
from dexwm_ros.core.predictor import CDiTPredictor, PredictorConfig
from dexwm_ros.core.world_model import WorldModel
from training.config import EvalConfig, TrainConfig, save_config
from training.datasets import DatasetSpec, discover_episodes
from training.evaluate import main, open_loop_evaluation, rollout_starts


def make_model(encoder) -> WorldModel:
    torch.manual_seed(0)
    predictor = CDiTPredictor(PredictorConfig.from_preset(
        "tiny", latent_dim=encoder.dim, num_patches=encoder.num_patches, num_slots=2))
    head = KeypointHead(encoder.dim, dim=32, depth=1, heads=2)
    return WorldModel(predictor, head, encoder.name, encoder.backend)


def test_open_loop_numbers_match_hand_computation(sim_root):
    root, truths = sim_root
    encoder = build_encoder("tiny")
    model = make_model(encoder)
    episodes = discover_episodes(DatasetSpec("sim", str(root)))
    config = EvalConfig(rollouts_per_episode=2, batch_size=3, seed=5)
    results = open_loop_evaluation(model, encoder, episodes, config)

    assert results["num_rollouts"] == 4
    np.testing.assert_allclose(results["horizon_s"], np.arange(1, 21) * 0.2)
    with torch.no_grad():
        constant = model.predictor.output_proj(torch.zeros(model.predictor.config.dim))
        pixels = model.keypoint_head.keypoint_pixels(constant.expand(1, encoder.num_patches, -1))
    pixels = pixels[0, 6:].double().numpy()  # right wrist + tips (the sim has no left hand)
    squared = np.zeros(20)
    hits = {10: np.zeros(20), 20: np.zeros(20)}
    count = np.zeros(20)
    for number, source in rollout_starts(episodes, config):
        assert np.all(np.diff(source) == 2)  # 5 Hz from a 10 Hz episode
        with torch.no_grad():
            latents = encoder.encode(torch.as_tensor(truths[number]["images"][source])).float()
        squared += ((latents[1:] - constant) ** 2).mean(dim=(1, 2)).double().numpy()
        k = truths[number]["intrinsics"]
        cam = truths[number]["right_camera"][source[1:]][:, [0, 4, 8, 12, 16, 20]]
        gt = np.stack([k[0, 0] * cam[..., 0] / cam[..., 2] + k[0, 2],
                       k[1, 1] * cam[..., 1] / cam[..., 2] + k[1, 2]], axis=-1)
        visible = (gt[..., 0] >= 0) & (gt[..., 0] <= 391) & (gt[..., 1] >= 0) & (gt[..., 1] <= 223)
        distance = np.linalg.norm(gt - pixels, axis=-1)
        count += visible.sum(1)
        for threshold in hits:
            hits[threshold] += ((distance <= threshold) & visible).sum(1)
    np.testing.assert_allclose(results["latent_l2"], squared / 4, rtol=1e-4)
    for threshold in hits:
        np.testing.assert_allclose(results[f"pck@{threshold}"], hits[threshold] / count)
    np.testing.assert_allclose(results["mean"]["latent_l2"], np.mean(squared / 4), rtol=1e-4)
    assert results["visible_keypoints"] == count.tolist()


def test_cli_writes_json_and_plot_and_is_seeded(sim_root, tmp_path):
    root, _ = sim_root
    encoder = build_encoder("tiny")
    make_model(encoder).save(tmp_path / "model")
    config = TrainConfig(output_dir=str(tmp_path))
    config.data.datasets = [DatasetSpec("sim", str(root))]
    config.eval.rollouts_per_episode = 1
    save_config(config, tmp_path / "config.yaml")
    outputs = []
    for name, seed in (("a", 1), ("b", 1)):
        assert main(["--model", str(tmp_path / "model"), "--config", str(tmp_path / "config.yaml"),
                     "--output", str(tmp_path / name), "--set", f"eval.seed={seed}"]) == 0
        assert (tmp_path / name / "open_loop.png").stat().st_size > 0
        outputs.append(json.loads((tmp_path / name / "open_loop.json").read_text()))
    assert outputs[0]["latent_l2"] == outputs[1]["latent_l2"]
    episodes = discover_episodes(DatasetSpec("sim", str(root)))
    starts = [rollout_starts(episodes, EvalConfig(seed=seed))[0][1][0] for seed in range(5)]
    assert len(set(starts)) > 1
    assert len(outputs[0]["pck@20"]) == 20 and outputs[0]["mean"].keys() >= {"pck@10", "pck@20"}
