"""Seconds per MPC step of ``dexwm-eval-sim --policy wm`` with the default model, paper budget.

One closed-loop control tick of the evaluator's ``wm`` policy on a reach episode: render and
encode the camera image, update the context, and plan with CEM at the paper's budget (N=512
samples, K=10 elites, L=10 iterations, T=3) using the packaged default world model
(``models/default_world_model``) and its encoder. The first tick (full
horizon) and the next (horizon 2, appendix B's shrinking horizon) are timed separately, with
the predicted frames per second and the split between the world model, the keypoint head and
the rest. The ``oracle`` policy's tick is timed beside it (no world model). Run with no
arguments (a few minutes on 2 cores).
"""
from __future__ import annotations

import os
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import torch  # noqa: E402

from dexwm_ros.sim import make_task  # noqa: E402
from training.eval_sim import EvalConfig, make_policy  # noqa: E402


def timed_ticks(policy, task, ticks: int = 2) -> list[float]:
    policy.start(task)
    out = []
    for _ in range(ticks):
        start = time.perf_counter()
        target = policy.act(task)
        out.append(time.perf_counter() - start)
        task.step(target)
    return out


def main() -> None:
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    config = EvalConfig()
    with make_task("reach", seed=0) as task:
        wm = make_policy("wm", "reach", config)
        task.reset(0)
        full, shrunk = timed_ticks(wm, task)
        timing = wm.wm_cost.last_timing
        frames = config.num_samples * config.iterations * 2  # horizon 2 on the second tick
        print(f"wm tick (T=3): {full:.2f} s; (T=2): {shrunk:.2f} s; last scoring call: "
              f"{timing}")
        oracle = make_policy("oracle", "reach", config)
        task.reset(0)
        oracle_ticks = timed_ticks(oracle, task)
    print(f"BENCH wm_mpc_step_paper_budget_T3 {full:.2f} s")
    print(f"BENCH wm_mpc_step_paper_budget_T2 {shrunk:.2f} s")
    print(f"BENCH wm_predicted_frames_per_s {frames / shrunk:.0f} frames/s")
    print(f"BENCH oracle_mpc_step_paper_budget {oracle_ticks[0]:.3f} s")
    print(f"BENCH wm_over_oracle_step {full / oracle_ticks[0]:.0f} x")


if __name__ == "__main__":
    main()
