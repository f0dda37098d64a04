"""PNG plots of training losses and open-loop evaluation curves (matplotlib, Agg backend)."""
from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_losses(metrics_csv: str | Path, output: str | Path) -> Path:
    """Total, latent (state) and hand-consistency losses against the step, log scale."""
    with Path(metrics_csv).open() as f:
        rows = list(csv.DictReader(f))
    figure, axis = plt.subplots(figsize=(7, 4))
    steps = [int(r["step"]) for r in rows]
    for key in ("loss", "state", "hc"):
        values = [float(r[key]) for r in rows]
        if any(v > 0 for v in values):
            axis.plot(steps, values, label=key)
    axis.set_yscale("log")
    axis.set_xlabel("step")
    axis.set_ylabel("loss")
    axis.grid(alpha=0.3)
    axis.legend()
    return _save(figure, output)


def plot_open_loop(results: dict, output: str | Path) -> Path:
    """Latent L2 and PCK@10/20 against the prediction horizon, the model's (solid) beside the
    repeat-last-latent baseline's (dashed) when the results hold one."""
    seconds = results["horizon_s"]
    baseline = results.get("baseline")
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(seconds, results["latent_l2"], marker="o", label="model")
    if baseline:
        left.plot(seconds, baseline["latent_l2"], "--", color="gray", label="repeat last latent")
        left.legend()
    left.set_xlabel("horizon (s)")
    left.set_ylabel("latent L2 (MSE)")
    left.grid(alpha=0.3)
    for key in ("pck@10", "pck@20"):
        line, = right.plot(seconds, results[key], marker="o", label=key.upper())
        if baseline:
            right.plot(seconds, baseline[key], "--", color=line.get_color(),
                       label=f"{key.upper()} repeat last")
    right.set_xlabel("horizon (s)")
    right.set_ylabel("PCK (visible keypoints)")
    right.set_ylim(0, 1)
    right.grid(alpha=0.3)
    right.legend()
    return _save(figure, output)


def _save(figure, output: str | Path) -> Path:
    figure.tight_layout()
    output = Path(output)
    figure.savefig(output, dpi=100)
    plt.close(figure)
    return output
