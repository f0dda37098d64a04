"""Seconds per MPC step of ``dexwm-eval-sim --policy wm`` with the default model, paper budget.

One closed-loop control tick of the evaluator's ``wm`` policy on a reach episode: render and
encode the camera image, update the context, and plan with CEM at the paper's budget (N=512
samples, K=10 elites, L=10 iterations, T=3) using the packaged default world model
(``models/default_world_model``) and its encoder. The first three ticks (horizons 3, 2
and 1: appendix B's shrinking horizon) are timed separately and averaged (the mean cost of a
control step over the cycle); each is the median over 5 cycles (3 for ``latents``, 1 for bf16)
after one untimed tick, with the predicted frames per second, in fp32 and under bf16
autocast (``--bf16``: fast where the CPU computes bf16 natively). The default keypoint term
(``keypoint_source`` ``actions``) needs no keypoint head per candidate; the paper's
(``latents``: the head decodes every candidate's final predicted latent) is timed beside it in
fp32, with the head's share of one scoring call. The ``oracle`` policy's tick is timed too (no
world model). Run with no arguments (a few minutes on 2 cores).
"""
from __future__ import annotations

import os
import statistics
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import torch  # noqa: E402

from dexwm_ros.sim import make_task  # noqa: E402
from training.eval_sim import EvalConfig, make_policy  # noqa: E402


def timed_ticks(policy, task, cycles: int = 1) -> tuple[list[float], list[dict]]:
    """Median seconds of the T=3, 2, 1 ticks over ``cycles`` cycles from the same start, after
    one untimed T=3 tick (the process's first allocations and lazy set-up), and the planner's
    timings of each tick's last scoring call (from the last cycle)."""
    task.reset(0)
    policy.start(task)
    policy.act(task)
    seconds, timings = [[] for _ in range(3)], []
    for _ in range(cycles):
        task.reset(0)
        policy.start(task)
        timings = []
        for tick in range(3):
            start = time.perf_counter()
            target = policy.act(task)
            seconds[tick].append(time.perf_counter() - start)
            timings.append(dict(getattr(getattr(policy, "wm_cost", None), "last_timing", {})))
            task.step(target)
    return [statistics.median(s) for s in seconds], timings


def main() -> None:
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    config = EvalConfig()
    frames = config.num_samples * config.iterations * 3  # horizon 3 on the first tick
    with make_task("reach", seed=0) as task:
        ticks, scoring = {}, {}
        for name, options, cycles in (
                ("fp32", {}, 5), ("bf16", {"bf16": True}, 1),
                ("fp32_latents", {"cost_overrides": {"keypoint_source": "latents"}}, 3)):
            wm = make_policy("wm", "reach", EvalConfig(**options))
            ticks[name], timings = timed_ticks(wm, task, cycles)
            scoring[name] = timings[0]  # the T=3 tick's last CEM iteration
            print(f"{name} wm ticks (T=3, 2, 1): {', '.join(f'{t:.2f}' for t in ticks[name])} "
                  f"s; last scoring call of the T=3 tick: {scoring[name]}")
        latents = scoring["fp32_latents"]
        head_share = latents["keypoint_head"] / sum(latents.values())
        oracle = make_policy("oracle", "reach", config)
        oracle_ticks, _ = timed_ticks(oracle, task, 5)
    full = ticks["fp32"][0]
    print(f"BENCH wm_mpc_step_paper_budget_T3 {full:.2f} s")
    print(f"BENCH wm_mpc_step_paper_budget_mean_T321 {sum(ticks['fp32']) / 3:.2f} s")
    print(f"BENCH wm_predicted_frames_per_s {frames / full:.0f} frames/s")
    print(f"BENCH wm_mpc_step_paper_budget_T3_latents_keypoints "
          f"{ticks['fp32_latents'][0]:.2f} s")
    print(f"BENCH wm_latents_over_actions_keypoints_step "
          f"{ticks['fp32_latents'][0] / full:.2f} x")
    print(f"BENCH wm_keypoint_head_share_of_scoring_T3_latents_keypoints "
          f"{100 * head_share:.1f} %")
    print(f"BENCH wm_mpc_step_paper_budget_T3_bf16 {ticks['bf16'][0]:.2f} s")
    print(f"BENCH wm_fp32_over_bf16_step {full / ticks['bf16'][0]:.2f} x")
    print(f"BENCH oracle_mpc_step_paper_budget {oracle_ticks[0]:.3f} s")
    print(f"BENCH wm_over_oracle_step {full / oracle_ticks[0]:.1f} x")


if __name__ == "__main__":
    main()
