"""MPC step with and without ``allocator.retain_freed_memory`` (glibc keeping freed heap).

The setting is process-wide and cannot be undone cleanly, so each measurement runs in a fresh
process: ``wm`` ticks of the evaluator on a reach episode at the paper budget (N=512, K=10,
L=10, T=3) with the packaged default model, one untimed tick, then the median of 5 T=3 ticks
from the same start. The two settings alternate over 3 rounds; the ratio of each round's pair
is printed and their median reported. Run with no arguments (about 3 minutes on 2 cores).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import time

os.environ.setdefault("MUJOCO_GL", "egl")

ROUNDS, TICKS = 3, 5


def median_t3_tick(retain: bool) -> float:
    import torch

    import dexwm_ros.core.planning_cost as planning_cost
    from dexwm_ros.sim import make_task
    from training.eval_sim import EvalConfig, make_policy

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    if not retain:
        planning_cost.retain_freed_memory = lambda: False
    with make_task("reach", seed=0) as task:
        policy = make_policy("wm", "reach", EvalConfig())
        seconds = []
        for tick in range(TICKS + 1):
            task.reset(0)
            policy.start(task)
            start = time.perf_counter()
            policy.act(task)
            if tick:  # the first tick is the process's first allocations
                seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def main() -> None:
    ratios = []
    with mp.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        for round_ in range(ROUNDS):
            default = pool.apply(median_t3_tick, (False,))
            retained = pool.apply(median_t3_tick, (True,))
            ratios.append(default / retained)
            print(f"round {round_}: T=3 step {default:.2f} s with glibc's default trimming, "
                  f"{retained:.2f} s keeping freed memory ({ratios[-1]:.2f}x)")
    print(f"BENCH mpc_step_default_trim_over_retained {statistics.median(ratios):.2f} x")


if __name__ == "__main__":
    main()
