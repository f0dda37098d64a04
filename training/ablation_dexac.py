"""Ablation of structured action conditioning (DexAC) on simulator exploration data.

``python -m training.ablation_dexac --config config/ablation_dexac_arms.yaml`` in one go:

1. generates the training and evaluation exploration episodes (``dexwm-explore``; skipped
   when present),
2. trains every arm of the config (a ``TrainConfig`` from the base YAML plus the arm's
   dotted overrides, each in ``OUTPUT/<arm>``; re-running resumes or skips finished arms),
3. evaluates every arm open loop on the evaluation episodes (paper section 4.2 protocol: one
   context frame, 20 autoregressive predictions at 5 Hz driven by ground-truth actions) and
   writes ``OUTPUT/results.json``, ``OUTPUT/results.png`` and a Markdown table
   (``OUTPUT/results.md``).

Metrics at 1 s and 4 s: latent L2 (per-element MSE) and PCK@10 / PCK@20 of the jointly trained
keypoint head, overall and per action group; also the head's PCK on the encoded ground-truth
frames (``head_ceiling``: what a perfect prediction would score) and, per arm, the latent-L2
difference to the first arm paired over the same rollouts with its standard error. The groups
follow the DexAC paper's wrist-, finger- and head-dominant diagnostics (section 5.3 c,
Table 3); the paper names them without a formula, so here a rollout belongs at horizon h to
the group whose ground-truth rigid-body actions over steps ``0..h-1``, normalised per
dimension with the training-set statistics, have the largest mean square over the group's
dimensions that vary in training.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch
import yaml

from dexwm_ros.core.actions import RIGID_ACTION_DIM, RIGID_ACTION_GROUPS, ActionNormalizer
from dexwm_ros.core.encoder import build_encoder
from dexwm_ros.core.world_model import WorldModel
from training.config import TrainConfig, load_config
from training.datasets import HEATMAP_ROWS, clip_actions, discover_episodes, project_keypoints
from training.evaluate import PCK_THRESHOLDS, rollout_starts

HORIZONS_S = (1.0, 4.0)
GROUPS = tuple(RIGID_ACTION_GROUPS)


# ---------------------------------------------------------------------------- configuration
def load_ablation(path: str | Path) -> dict:
    """The ablation YAML: ``base`` (TrainConfig YAML), ``output_dir``, ``exploration``
    (``train``/``eval`` with ``out``, ``episodes``, ``steps``, ``seed``) and ``arms``
    (name -> {dotted key: value}). Unknown keys are rejected."""
    path = Path(path)
    data = yaml.safe_load(path.read_text()) or {}
    allowed = {"base", "output_dir", "exploration", "arms", "labels"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    for key in ("base", "output_dir", "exploration", "arms"):
        if key not in data:
            raise ValueError(f"{path}: missing key {key!r}")
    if not isinstance(data["arms"], dict) or not data["arms"]:
        raise ValueError(f"{path}: 'arms' must be a non-empty mapping")
    for split in ("train", "eval"):
        spec = data["exploration"].get(split)
        if not isinstance(spec, dict) or set(spec) != {"out", "episodes", "steps", "seed"}:
            raise ValueError(f"{path}: exploration.{split} needs exactly out, episodes, steps, "
                             f"seed")
    return data


def arm_config(ablation: dict, name: str) -> TrainConfig:
    """The arm's TrainConfig: base YAML + its overrides, output in ``output_dir/name``."""
    overrides = {**ablation["arms"][name], "output_dir": str(Path(ablation["output_dir"]) / name)}
    items = [f"{key}={yaml.safe_dump(value, default_flow_style=True).strip()}"
             for key, value in overrides.items()]
    return load_config(ablation["base"], items)


def generate_exploration(ablation: dict) -> None:
    """Run ``dexwm-explore`` for the train and eval splits (resumable, skips what exists)."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    from dexwm_ros.sim.exploration import main as explore

    for split in ("train", "eval"):
        spec = ablation["exploration"][split]
        explore(["--out", str(spec["out"]), "--episodes", str(spec["episodes"]),
                 "--steps", str(spec["steps"]), "--seed", str(spec["seed"])])


# ---------------------------------------------------------------------------- evaluation
def rigid_statistics(config: TrainConfig, episodes) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean/std of rigid-body actions between consecutive frames at
    ``eval.hz`` over ``episodes`` (the training episodes)."""
    normalizer = ActionNormalizer(RIGID_ACTION_DIM)
    for episode in episodes:
        step = max(1, int(round(episode.fps / config.eval.hz)))
        frames = np.arange(0, episode.num_frames, step)
        normalizer.update(torch.from_numpy(clip_actions(
            episode.keypoints(frames), episode.camera_to_world(frames), episode.hands,
            "rigid_body")))
    return normalizer.mean, normalizer.std


def dominant_groups(rigid: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                    min_std: float = 1e-3) -> torch.Tensor:
    """Group index (into ``GROUPS``) per rollout and horizon ``(R, T)`` of rigid actions
    ``(R, T, 57)``: argmax over groups of the mean square of the normalised actions of steps
    ``0..h`` over the group's varying dimensions; -1 where no group has any."""
    energy = ((rigid.double() - mean.double()) / std.double()).square().cumsum(1)
    active = std > min_std
    scores = []
    for group in GROUPS:
        dims = [d for d in RIGID_ACTION_GROUPS[group] if active[d]]
        scores.append(energy[..., dims].mean(-1) if dims else
                      torch.full(energy.shape[:2], -1.0, dtype=energy.dtype))
    stacked = torch.stack(scores, -1)
    best = stacked.argmax(-1)
    return torch.where(stacked.amax(-1) >= 0, best, torch.full_like(best, -1))


@torch.no_grad()
def rollout_metrics(world_model: WorldModel, encoder, episodes, config: TrainConfig,
                    rigid_mean: torch.Tensor, rigid_std: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per rollout and step ``(R, T)``: latent squared error, visible keypoints, correct
    keypoints per PCK threshold (of the predictions, and ``ceiling@t`` of the encoded ground
    truth), and the dominant action group."""
    predictor, head = world_model.predictor.eval(), world_model.keypoint_head.eval()
    representation = world_model.action_representation
    rollouts = rollout_starts(episodes, config.eval)
    out: dict[str, list] = {"l2": [], "visible": [], "group": [],
                            **{f"{kind}@{t}": [] for t in PCK_THRESHOLDS
                               for kind in ("correct", "ceiling")}}
    for first in range(0, len(rollouts), config.eval.batch_size):
        latents, actions, rigid, pixels, visible = [], [], [], [], []
        for number, source in rollouts[first:first + config.eval.batch_size]:
            episode = episodes[number]
            latents.append(encoder.encode(torch.as_tensor(episode.frames(source))).float())
            keypoints, poses = episode.keypoints(source), episode.camera_to_world(source)
            actions.append(torch.from_numpy(clip_actions(keypoints, poses, episode.hands,
                                                         representation)))
            rigid.append(torch.from_numpy(clip_actions(keypoints, poses, episode.hands,
                                                       "rigid_body")))
            px, vis, _ = project_keypoints(keypoints[:, HEATMAP_ROWS], poses, episode.intrinsics,
                                           episode.keypoint_valid(source)[:, HEATMAP_ROWS])
            pixels.append(torch.from_numpy(px[1:]))
            visible.append(torch.from_numpy(vis[1:]))
        latents, actions = torch.stack(latents), torch.stack(actions).float()
        predicted = predictor.rollout(latents[:, :1], actions[:, :0], actions)
        out["l2"].append(((predicted - latents[:, 1:]) ** 2).mean(dim=(2, 3)).double())
        vis, truth = torch.stack(visible), torch.stack(pixels)
        out["visible"].append(vis.sum(-1).double())
        for kind, source in (("correct", predicted), ("ceiling", latents[:, 1:])):
            pixels_of = head.keypoint_pixels(source.flatten(0, 1)).unflatten(
                0, source.shape[:2]).double()
            distance = (pixels_of - truth).norm(dim=-1)
            for threshold in PCK_THRESHOLDS:
                out[f"{kind}@{threshold}"].append(((distance <= threshold) & vis).sum(-1)
                                                  .double())
        out["group"].append(dominant_groups(torch.stack(rigid), rigid_mean, rigid_std))
    return {key: torch.cat(value) for key, value in out.items()}


def summarize(metrics: dict[str, torch.Tensor], hz: float) -> dict:
    """Latent L2 and PCK at ``HORIZONS_S``, overall and per group (``None`` where a group
    has no rollout or no visible keypoint), and the per-step overall curves."""
    def at(step: int, rows: torch.Tensor) -> dict:
        result = {"rollouts": int(rows.sum())}
        visible = metrics["visible"][rows, step].sum()
        result["latent_l2"] = float(metrics["l2"][rows, step].mean()) if rows.any() else None
        for threshold in PCK_THRESHOLDS:
            correct = metrics[f"correct@{threshold}"][rows, step].sum()
            result[f"pck@{threshold}"] = float(correct / visible) if visible > 0 else None
        return result

    everyone = torch.ones(metrics["l2"].shape[0], dtype=torch.bool)
    summary: dict = {}
    for seconds in HORIZONS_S:
        step = int(round(seconds * hz)) - 1
        if step >= metrics["l2"].shape[1]:
            raise ValueError(f"horizon {seconds:g} s needs {step + 1} predictions at {hz:g} Hz")
        entry = {"overall": at(step, everyone)}
        for index, group in enumerate(GROUPS):
            entry[group] = at(step, metrics["group"][:, step] == index)
        visible = metrics["visible"][:, step].sum()
        entry["head_ceiling"] = {
            f"pck@{t}": float(metrics[f"ceiling@{t}"][:, step].sum() / visible)
            if visible > 0 else None for t in PCK_THRESHOLDS}
        summary[f"{seconds:g}s"] = entry
    visible = metrics["visible"].sum(0)
    curves = {"horizon_s": [(t + 1) / hz for t in range(metrics["l2"].shape[1])],
              "latent_l2": metrics["l2"].mean(0).tolist()}
    for threshold in PCK_THRESHOLDS:
        curves[f"pck@{threshold}"] = (metrics[f"correct@{threshold}"].sum(0)
                                      / visible.clamp(min=1)).tolist()
    return {"horizons": summary, "curves": curves}


# ---------------------------------------------------------------------------- report
def paired_difference(metrics: dict[str, torch.Tensor], reference: dict[str, torch.Tensor],
                      hz: float) -> dict:
    """Mean and standard error of the per-rollout latent-L2 difference to ``reference`` at
    ``HORIZONS_S`` (the same rollouts, so evaluation noise largely cancels)."""
    result = {}
    for seconds in HORIZONS_S:
        step = int(round(seconds * hz)) - 1
        delta = metrics["l2"][:, step] - reference["l2"][:, step]
        result[f"{seconds:g}s"] = {"delta_latent_l2": float(delta.mean()),
                                   "standard_error": float(delta.std() / len(delta) ** 0.5)}
    return result


def markdown_table(results: dict) -> str:
    """One row per arm: latent L2 and PCK@10/20 (%) at 1 s and 4 s, overall then per group."""
    def cell(value, percent: bool) -> str:
        if value is None:
            return "-"
        return f"{100 * value:.1f}" if percent else f"{value:.4f}"

    header = ["arm"]
    for seconds in HORIZONS_S:
        header += [f"L2 {seconds:g}s", f"PCK@10 {seconds:g}s", f"PCK@20 {seconds:g}s"]
    for group in GROUPS:
        header += [f"{group} PCK@20 {HORIZONS_S[-1]:g}s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for arm, result in results["arms"].items():
        row = [results["labels"].get(arm, arm)]
        for seconds in HORIZONS_S:
            overall = result["horizons"][f"{seconds:g}s"]["overall"]
            row += [cell(overall["latent_l2"], False), cell(overall["pck@10"], True),
                    cell(overall["pck@20"], True)]
        last = result["horizons"][f"{HORIZONS_S[-1]:g}s"]
        row += [cell(last[group]["pck@20"], True) for group in GROUPS]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def plot_results(results: dict, output: Path) -> Path:
    """Latent L2 and PCK@20 against the horizon per arm, and per-group PCK@20 at 4 s."""
    from training.plots import _save, plt

    figure, (l2_axis, pck_axis, group_axis) = plt.subplots(1, 3, figsize=(16, 4.5))
    arms = list(results["arms"])
    for arm in arms:
        curves = results["arms"][arm]["curves"]
        label = results["labels"].get(arm, arm)
        l2_axis.plot(curves["horizon_s"], curves["latent_l2"], marker=".", label=label)
        pck_axis.plot(curves["horizon_s"], curves["pck@20"], marker=".", label=label)
    l2_axis.set(xlabel="horizon (s)", ylabel="latent L2 (MSE)")
    pck_axis.set(xlabel="horizon (s)", ylabel="PCK@20", ylim=(0, 1))
    width = 0.8 / len(arms)
    last = f"{HORIZONS_S[-1]:g}s"
    for i, arm in enumerate(arms):
        values = [results["arms"][arm]["horizons"][last][g]["pck@20"] for g in GROUPS]
        group_axis.bar(np.arange(len(GROUPS)) + i * width,
                       [np.nan if v is None else v for v in values], width,
                       label=results["labels"].get(arm, arm))
    group_axis.set_xticks(np.arange(len(GROUPS)) + 0.4 - width / 2,
                          [f"{g}-dominant" for g in GROUPS])
    group_axis.set(ylabel=f"PCK@20 at {last}", ylim=(0, 1))
    for axis in (l2_axis, pck_axis, group_axis):
        axis.grid(alpha=0.3)
    pck_axis.legend(fontsize=7)
    return _save(figure, output)


# ---------------------------------------------------------------------------- driver
def run_ablation(config_path: str | Path, arms: list[str] | None = None) -> dict:
    """Generate data, train and evaluate ``arms`` (default: all); returns the results."""
    from training.trainer import Trainer

    ablation = load_ablation(config_path)
    names = arms or list(ablation["arms"])
    missing = sorted(set(names) - set(ablation["arms"]))
    if missing:
        raise ValueError(f"unknown arm(s) {missing}; the config has {sorted(ablation['arms'])}")
    generate_exploration(ablation)
    output = Path(ablation["output_dir"])
    output.mkdir(parents=True, exist_ok=True)
    results: dict = {"config": str(config_path), "labels": ablation.get("labels", {}),
                     "groups": {g: list(d) for g, d in RIGID_ACTION_GROUPS.items()},
                     "arms": {}}
    statistics = reference = None
    for name in names:
        config = arm_config(ablation, name)
        model_dir = Path(config.output_dir) / "model"
        trainer = Trainer(config)
        try:
            trainer.fit()
        finally:
            trainer.close()
        encoder = build_encoder(config.encoder.backend, weights=config.encoder.weights)
        eval_episodes = [e for spec in config.eval.datasets for e in discover_episodes(spec)]
        if statistics is None:
            train_episodes = [e for s in config.data.datasets for e in discover_episodes(s)]
            statistics = rigid_statistics(config, train_episodes)
        world_model = WorldModel.load(model_dir)
        metrics = rollout_metrics(world_model, encoder, eval_episodes, config, *statistics)
        reference = reference or metrics
        results["arms"][name] = {**summarize(metrics, config.eval.hz),
                                 "paired_vs_first_arm": paired_difference(
                                     metrics, reference, config.eval.hz),
                                 "predictor": world_model.predictor.config.to_dict(),
                                 "action_normalization": config.model.action_normalization,
                                 "steps": config.optim.max_steps,
                                 "parameters": sum(p.numel() for p in
                                                   world_model.predictor.parameters())}
        (output / "results.json").write_text(json.dumps(results, indent=1))
    plot_results(results, output / "results.png")
    (output / "results.md").write_text(markdown_table(results))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ablation_dexac", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="config/ablation_dexac_arms.yaml",
                        help="ablation YAML (base training config, data, arms)")
    parser.add_argument("--arm", action="append", dest="arms", metavar="NAME",
                        help="run only this arm (repeatable; default: all)")
    args = parser.parse_args(argv)
    results = run_ablation(args.config, args.arms)
    print(markdown_table(results), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
