"""Seconds per MPC step of ``dexwm-eval-sim --policy wm`` with the default model, paper budget.

One closed-loop control tick of the evaluator's ``wm`` policy on a reach episode: render and
encode the camera image, update the context, and plan with CEM at the paper's budget (N=512
samples, K=10 elites, L=10 iterations, T=3) using the packaged default world model
(``models/default_world_model``) and its encoder. The first three ticks (horizons 3, 2
and 1: appendix B's shrinking horizon) are timed separately and averaged (the mean cost of a
control step over the cycle), with the predicted frames per second and the keypoint head's
share of one scoring call. The ``oracle`` policy's tick is timed beside it (no world model).
Run with no arguments (a few minutes on 2 cores).
"""
from __future__ import annotations

import os
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import torch  # noqa: E402

from dexwm_ros.sim import make_task  # noqa: E402
from training.eval_sim import EvalConfig, make_policy  # noqa: E402


def timed_ticks(policy, task, ticks: int = 3) -> tuple[list[float], list[dict]]:
    policy.start(task)
    out, timings = [], []
    for _ in range(ticks):
        start = time.perf_counter()
        target = policy.act(task)
        out.append(time.perf_counter() - start)
        timings.append(dict(getattr(getattr(policy, "wm_cost", None), "last_timing", {})))
        task.step(target)
    return out, timings


def main() -> None:
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    config = EvalConfig()
    with make_task("reach", seed=0) as task:
        wm = make_policy("wm", "reach", config)
        task.reset(0)
        wm_ticks, timings = timed_ticks(wm, task)
        full = wm_ticks[0]
        frames = config.num_samples * config.iterations * 3  # horizon 3 on the first tick
        scoring = timings[0]  # the T=3 tick's last CEM iteration
        head_share = scoring["keypoint_head"] / sum(scoring.values())
        print(f"wm ticks (T=3, 2, 1): {', '.join(f'{t:.2f}' for t in wm_ticks)} s; last "
              f"scoring call of the T=3 tick: {timings[0]}")
        oracle = make_policy("oracle", "reach", config)
        task.reset(0)
        oracle_ticks, _ = timed_ticks(oracle, task)
    print(f"BENCH wm_mpc_step_paper_budget_T3 {full:.2f} s")
    print(f"BENCH wm_mpc_step_paper_budget_mean_T321 {sum(wm_ticks) / 3:.2f} s")
    print(f"BENCH wm_predicted_frames_per_s {frames / full:.0f} frames/s")
    print(f"BENCH wm_keypoint_head_share_of_scoring_T3 {100 * head_share:.1f} %")
    print(f"BENCH oracle_mpc_step_paper_budget {oracle_ticks[0]:.3f} s")
    print(f"BENCH wm_over_oracle_step {full / oracle_ticks[0]:.1f} x")


if __name__ == "__main__":
    main()
