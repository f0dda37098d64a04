"""Open-loop evaluation (paper section 4.2): one context frame, then 20 autoregressive
predictions at 5 Hz (4 s) driven by ground-truth actions. The predictor sees at most
``num_slots`` frames; once the rollout is longer, its window slides past the first frame and
every step's actions are re-expressed in the camera of the window's first frame, the frame
training expresses them in (``build_actions``; this matters for a moving camera such as
EgoDex's). At each 0.2 s step: latent L2 (the
per-element MSE of eq. 4) and PCK@10 / PCK@20 of the keypoint head on the predicted latents
against the projected ground truth, counting visible keypoints only. The same metrics of the
repeat-last-latent baseline (the context frame's latent as every prediction) are reported
beside them under ``baseline``; with a depth head (``KeypointHead.keypoint_depth``) also the
mean absolute depth error of the visible keypoints (``depth_error_m``). Rollout start frames
are drawn from a seeded generator. Results go to JSON plus a PNG plot.

CLI: ``dexwm-eval --model RUN/model --config config/train_x.yaml [--output DIR]``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from dexwm_ros.core.world_model import WorldModel
from training.config import EvalConfig, load_config
from training.datasets import HEATMAP_ROWS, clip_actions, discover_episodes, project_keypoints
from training.plots import plot_open_loop

PCK_THRESHOLDS = (10, 20)


def rollout_starts(episodes, config: EvalConfig) -> list[tuple[int, np.ndarray]]:
    """``(episode number, source frame indices (predictions + 1,))`` of every rollout."""
    rng = np.random.default_rng(config.seed)
    rollouts = []
    for number, episode in enumerate(episodes):
        step = max(1, int(round(episode.fps / config.hz)))
        span = config.predictions * step
        if episode.num_frames <= span:
            continue
        count = min(config.rollouts_per_episode, episode.num_frames - span)
        starts = np.sort(rng.choice(episode.num_frames - span, size=count, replace=False))
        rollouts += [(number, start + np.arange(config.predictions + 1) * step)
                     for start in starts]
    if not rollouts:
        raise ValueError(f"no episode is longer than {config.predictions} steps at "
                         f"{config.hz} Hz")
    return rollouts


def window_actions(keypoints: np.ndarray, camera_to_world: np.ndarray,
                   hands: tuple[bool, bool], num_slots: int,
                   representation: str = "keypoint_delta") -> list[np.ndarray]:
    """For each prediction step ``t`` (frame ``t`` -> ``t + 1``) the actions ``(n, A)`` of
    its window, frames ``max(0, t + 1 - num_slots) .. t + 1``, in the window's first camera."""
    steps = len(keypoints) - 1
    firsts = [max(0, t + 1 - num_slots) for t in range(steps)]
    return [clip_actions(keypoints[first : t + 2], camera_to_world[first : t + 2], hands,
                         representation)
            for t, first in enumerate(firsts)]


def sliding_rollout(predictor, first_latent: torch.Tensor,
                    step_actions: list[torch.Tensor]) -> torch.Tensor:
    """Autoregressive rollout from ``first_latent`` (B, P, D); ``step_actions[t]`` (B, n, A)
    are step ``t``'s window actions (``window_actions``), its window the last ``n`` frames.
    Returns the predictions (B, T, P, D)."""
    frames = [first_latent]
    for actions in step_actions:
        window = torch.stack(frames[-actions.shape[1]:], dim=1)
        frames.append(predictor(window, actions)[:, -1].to(first_latent.dtype))
    return torch.stack(frames[1:], dim=1)


@torch.no_grad()
def open_loop_evaluation(world_model: WorldModel, encoder, episodes, config: EvalConfig,
                         device="cpu") -> dict:
    """Metrics per horizon step and averaged; see the module docstring."""
    predictor = world_model.predictor.to(device).eval()
    head = world_model.keypoint_head.to(device).eval()
    rollouts = rollout_starts(episodes, config)
    steps = config.predictions
    num_slots = predictor.config.num_slots
    squared = {name: torch.zeros(steps, dtype=torch.float64) for name in ("model", "baseline")}
    correct = {(name, t): torch.zeros(steps, dtype=torch.float64)
               for name in ("model", "baseline") for t in PCK_THRESHOLDS}
    depth_error = {name: torch.zeros(steps, dtype=torch.float64) for name in squared}
    visible_count = torch.zeros(steps, dtype=torch.float64)
    for first in range(0, len(rollouts), config.batch_size):
        chunk = rollouts[first : first + config.batch_size]
        latents, actions, pixels, visible, depths = [], [], [], [], []
        for number, source in chunk:
            episode = episodes[number]
            frames = torch.as_tensor(episode.frames(source)).to(device)
            latents.append(encoder.encode(frames).float().clone())
            keypoints = episode.keypoints(source)
            poses = episode.camera_to_world(source)
            valid = episode.keypoint_valid(source)
            actions.append(window_actions(keypoints, poses, episode.hands, num_slots,
                                          predictor.config.action_representation))
            px, vis, z = project_keypoints(keypoints[:, HEATMAP_ROWS], poses,
                                           episode.intrinsics, valid[:, HEATMAP_ROWS])
            pixels.append(torch.from_numpy(px))
            visible.append(torch.from_numpy(vis))
            depths.append(torch.from_numpy(z))
        latents = torch.stack(latents)
        step_actions = [torch.from_numpy(np.stack(per_step)).float().to(device)
                        for per_step in zip(*actions, strict=True)]
        gt_px = torch.stack(pixels)[:, 1:]
        gt_depth = torch.stack(depths)[:, 1:]
        vis = torch.stack(visible)[:, 1:]
        visible_count += vis.sum(dim=(0, 2))
        predicted = sliding_rollout(predictor, latents[:, 0], step_actions)
        model_px, model_depth = head.keypoints(predicted.flatten(0, 1))
        model_px = model_px.unflatten(0, predicted.shape[:2])
        # the baseline repeats the context latent: decode it once
        baseline_px, baseline_depth = head.keypoints(latents[:, 0])
        baseline_px = baseline_px[:, None].expand(-1, steps, -1, -1)
        predictions = {"model": (predicted, model_px, model_depth),
                       "baseline": (latents[:, :1].expand(-1, steps, -1, -1), baseline_px,
                                    baseline_depth)}
        for name, (predicted, predicted_px, predicted_depth) in predictions.items():
            if predicted_depth is not None:
                predicted_depth = predicted_depth.view(len(chunk), -1, predicted_depth.shape[-1])
                error = (predicted_depth.double().cpu() - gt_depth).abs() * vis
                depth_error[name] += error.sum(dim=(0, 2))
            squared[name] += ((predicted - latents[:, 1:]) ** 2).mean(dim=(2, 3)).sum(0) \
                .double().cpu()
            predicted_px = predicted_px.double().cpu()
            distance = (predicted_px - gt_px).norm(dim=-1)
            for threshold in PCK_THRESHOLDS:
                correct[name, threshold] += ((distance <= threshold) & vis).sum(dim=(0, 2))
    results = {
        "horizon_s": [round((t + 1) / config.hz, 6) for t in range(steps)],
        "num_rollouts": len(rollouts),
        "visible_keypoints": visible_count.tolist(),
        "seed": config.seed,
        "hz": config.hz,
    }
    for name in ("model", "baseline"):
        metrics = results if name == "model" else results.setdefault("baseline", {})
        latent_l2 = (squared[name] / len(rollouts)).tolist()
        metrics["latent_l2"] = latent_l2
        mean, final = metrics.setdefault("mean", {}), metrics.setdefault("final", {})
        for threshold in PCK_THRESHOLDS:
            hits = correct[name, threshold]
            per_step = torch.where(visible_count > 0, hits / visible_count.clamp(min=1),
                                   torch.full_like(visible_count, float("nan")))
            metrics[f"pck@{threshold}"] = per_step.tolist()
            total = visible_count.sum()
            mean[f"pck@{threshold}"] = float(hits.sum() / total) if total > 0 else float("nan")
            final[f"pck@{threshold}"] = per_step[-1].item()
        mean["latent_l2"] = float(np.mean(latent_l2))
        final["latent_l2"] = latent_l2[-1]
        if head.keypoint_depth:  # mean absolute depth error (m) of the visible keypoints
            per_step = (depth_error[name] / visible_count.clamp(min=1)).tolist()
            metrics["depth_error_m"] = per_step
            mean["depth_error_m"] = float(depth_error[name].sum() / visible_count.sum()
                                          .clamp(min=1))
            final["depth_error_m"] = per_step[-1]
    return results


def evaluate(model_dir: str | Path, config_path: str | Path, output: str | Path | None = None,
             overrides: list[str] | None = None) -> dict:
    """Load a WorldModel, run the open-loop evaluation of the config's ``eval`` section
    (its datasets, or the training datasets), write ``open_loop.json`` and ``open_loop.png``."""
    config = load_config(config_path, overrides)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    world_model = WorldModel.load(model_dir)
    encoder = world_model.build_encoder(config.encoder.weights, device=device)
    specs = config.eval.datasets or config.data.datasets
    episodes = [e for spec in specs for e in discover_episodes(spec)]
    results = open_loop_evaluation(world_model, encoder, episodes, config.eval, device)
    results["model"] = str(model_dir)
    output = Path(output or Path(model_dir).parent / "eval")
    output.mkdir(parents=True, exist_ok=True)
    (output / "open_loop.json").write_text(json.dumps(results, indent=1))
    plot_open_loop(results, output / "open_loop.png")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dexwm-eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="WorldModel directory (RUN/model)")
    parser.add_argument("--config", required=True, help="YAML config (its eval/data sections)")
    parser.add_argument("--output", help="output directory (default: RUN/eval)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. eval.seed=3")
    args = parser.parse_args(argv)
    results = evaluate(args.model, args.config, args.output, args.set)
    print(json.dumps({"mean": results["mean"], "final": results["final"],
                      "baseline": {k: results["baseline"][k] for k in ("mean", "final")},
                      "num_rollouts": results["num_rollouts"]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
