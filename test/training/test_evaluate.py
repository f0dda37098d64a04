"""Open-loop evaluation on the simulator fixture, checked against numbers computed by hand.

A freshly initialised predictor has a zero final layer (adaLN-Zero), so every prediction is the
same constant latent; the expected latent L2 and PCK then follow from the encoder latents of
the ground-truth frames and the keypoint head's pixels for that constant latent.
"""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from dexwm_ros.core.encoder import build_encoder
from dexwm_ros.core.keypoint_head import KeypointHead
from dexwm_ros.core.predictor import CDiTPredictor, PredictorConfig
from dexwm_ros.core.world_model import WorldModel
from training.config import EvalConfig, TrainConfig, save_config
from training.datasets import DatasetSpec, clip_actions, discover_episodes
from training.episodes import Episode
from training.evaluate import main, open_loop_evaluation, rollout_starts, sliding_rollout


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


# ---------------------------------------------------------------------------- hand-built model
# The latent of a frame is its state: right wrist in the world (3), camera rotation (9) and
# position (3). The predictor applies the action exactly, reading the action frame (the
# camera of the window's first frame) from the window's first latent, so it predicts every
# frame exactly when the evaluation feeds the right frames and actions in the right camera.
NUM_FRAMES, SLOTS = 40, 4
K = np.array([[150.0, 0.0, 195.5], [0.0, 150.0, 111.5], [0.0, 0.0, 1.0]])


def rodrigues(vectors: torch.Tensor) -> torch.Tensor:
    angle = vectors.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    x, y, z = (vectors / angle).unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).unflatten(-1, (3, 3))
    angle = angle[..., None]
    return torch.eye(3) + angle.sin() * skew + (1 - angle.cos()) * skew @ skew


class StateEpisode(Episode):
    """A turning, moving camera watching a moving right wrist; frame i stores i in a pixel."""

    name, fps, num_frames, hands = "state", 5.0, NUM_FRAMES, (False, True)
    intrinsics = K

    def __init__(self):
        k = np.arange(NUM_FRAMES)
        self.poses = np.tile(np.eye(4), (NUM_FRAMES, 1, 1))
        self.poses[:, :3, :3] = Rotation.from_euler("yx", np.stack([0.04 * k, 0.02 * k], 1)
                                                    ).as_matrix()
        self.poses[:, :3, 3] = np.stack([0.02 * k, 0.01 * k, -0.01 * k], 1)
        in_camera = np.stack([0.1 * np.sin(0.2 * k), 0.05 * np.cos(0.3 * k),
                              0.6 + 0.1 * np.sin(0.1 * k)], 1)
        rotation, position = self.poses[:, :3, :3], self.poses[:, :3, 3]
        self.wrist = np.einsum("nij,nj->ni", rotation, in_camera) + position

    def frames(self, indices):
        out = np.zeros((len(indices), 224, 392, 3), dtype=np.uint8)
        out[:, 0, 0, 0] = indices
        return out

    def keypoints(self, indices):
        out = np.zeros((len(indices), 42, 3))
        out[:, 21:] = self.wrist[indices, None]
        return out

    def camera_to_world(self, indices):
        return self.poses[indices]

    def state(self, indices) -> torch.Tensor:
        return torch.from_numpy(np.concatenate([
            self.wrist[indices], self.poses[indices, :3, :3].reshape(-1, 9),
            self.poses[indices, :3, 3]], 1)).float()[:, None]


class StateEncoder:
    def __init__(self, episode: StateEpisode):
        self.episode = episode

    def encode(self, frames):
        return self.episode.state(frames[:, 0, 0, 0].long().numpy())


class ActionPredictor(torch.nn.Module):
    config = PredictorConfig("custom", latent_dim=15, num_patches=1, dim=4, depth=1, heads=1,
                             num_slots=SLOTS)

    def forward(self, latents, actions):
        first = latents[:, :1, 0, 3:12].unflatten(-1, (3, 3))  # action frame, camera to world
        rows = actions.unflatten(-1, (44, 3))
        wrist, rotation, position = latents[..., 0, :3], latents[..., 0, 3:12], latents[..., 0, 12:]

        def to_world(row):
            return (first @ rows[:, :, row, :, None])[..., 0]

        rotation = rodrigues(to_world(43)) @ rotation.unflatten(-1, (3, 3))
        return torch.cat([wrist + to_world(21), rotation.flatten(-2), position + to_world(42)],
                         -1)[:, :, None]


class ProjectingHead(torch.nn.Module):
    keypoint_depth = False

    def keypoints(self, latents):
        return self.keypoint_pixels(latents), None

    def keypoint_pixels(self, latents):
        wrist, rotation, position = latents[:, 0, :3], latents[:, 0, 3:12], latents[:, 0, 12:]
        camera = (rotation.unflatten(-1, (3, 3)).transpose(-1, -2) @ (wrist - position)[..., None])
        uv = (torch.from_numpy(K).float() @ camera)[..., 0]
        return (uv[:, :2] / uv[:, 2:]).unsqueeze(1).expand(-1, 12, -1)


def test_open_loop_metrics_follow_the_actions_past_the_context_window():
    episode = StateEpisode()
    model = SimpleNamespace(predictor=ActionPredictor(), keypoint_head=ProjectingHead())
    config = EvalConfig(predictions=20, rollouts_per_episode=3, batch_size=2, seed=0)
    results = open_loop_evaluation(model, StateEncoder(episode), [episode], config)
    assert results["num_rollouts"] == 3
    assert max(results["latent_l2"]) < 1e-9  # 20 steps, 16 of them with a sliding window
    assert results["pck@10"] == [1.0] * 20 and results["visible_keypoints"] == [18.0] * 20

    # the same rollout with every action in the first frame's camera (no re-expression)
    # diverges once the window slides, and reading the wrong frames diverges at once
    source = rollout_starts([episode], config)[0][1]
    truth = episode.state(source)
    fixed = clip_actions(episode.keypoints(source), episode.camera_to_world(source), (False, True))
    fixed_windows = [torch.from_numpy(fixed[None, max(0, t + 1 - SLOTS) : t + 1]).float()
                     for t in range(20)]
    with torch.no_grad():
        drifted = sliding_rollout(model.predictor, truth[None, 0], fixed_windows)[0]
        error = ((drifted - truth[1:]) ** 2).mean(dim=(1, 2))
    assert error[:SLOTS].max() < 1e-9 and error[-1] > 1e-3
    shifted = open_loop_evaluation(model, StateEncoder(ShiftedEpisode()), [ShiftedEpisode()],
                                   config)
    assert min(shifted["latent_l2"]) > 1e-6


class ShiftedEpisode(StateEpisode):
    """Frames one step ahead of the poses: a misalignment between frames and actions."""

    def frames(self, indices):
        return super().frames(np.minimum(np.asarray(indices) + 1, NUM_FRAMES - 1))
