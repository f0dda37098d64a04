"""One CEM replanning step with the paper's defaults (T=3, N=512, K=10, L=10).

World model at the real encoder's size (DINOv2 ViT-L: 448 patches x 1024), predictor presets
``tiny`` and ``S`` with the keypoint head, a 4-frame context, robot FK from ``RobotKinematics``.
Weights are untrained (timing does not depend on them). Time is split into sampling, FK
(+ action assembly), world model (predictor + keypoint head) and cost (latent/keypoint
arithmetic + elite update). Runs on CPU (bf16 autocast, the fast path here) and on CUDA when
present.

Baseline: the straightforward implementation that scores candidates one at a time: FK of that
candidate, ``predictor.rollout`` from the full context (the context is re-run for every
candidate and every step), keypoint head on its final latent. It is timed on a few candidates
and extrapolated to N x L evaluations.

Where a full step would take too long (S on CPU), the planner runs fewer samples/iterations
and the step time is extrapolated linearly in N x L; the output says so.
Run: ``python benchmarks/planner.py`` (a few minutes on 2 cores).
"""
from __future__ import annotations

import time

import torch

from dexwm_ros.core.keypoint_head import KeypointHead
from dexwm_ros.core.kinematics import RobotKinematics, head_camera
from dexwm_ros.core.planner import CEMConfig, CEMPlanner, keypoint_actions
from dexwm_ros.core.planning_cost import CostWeights, WorldModelCost
from dexwm_ros.core.predictor import CDiTPredictor, PredictorConfig

LATENT_DIM, NUM_PATCHES, CONTEXT_FRAMES = 1024, 448, 4
ENCODER = "dinov2_vitl14"
HOME = torch.tensor([0.0, -0.3, 0.0, -2.2, 0.0, 2.0, 0.8] + [0.2] * 12 + [0.8, 0.3, 0.3, 0.3])
#: (samples, iterations) actually run per (preset, device); the rest is extrapolated.
MEASURED = {("tiny", "cpu"): (128, 1), ("S", "cpu"): (16, 1),
            ("tiny", "cuda"): (512, 10), ("S", "cuda"): (512, 10)}
#: candidates timed one by one for the baseline
BASELINE_CANDIDATES = {"tiny": 2, "S": 1}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def build(preset: str, device: torch.device):
    torch.manual_seed(0)
    predictor = CDiTPredictor(PredictorConfig.from_preset(preset, LATENT_DIM, NUM_PATCHES))
    head = KeypointHead(LATENT_DIM)  # paper size: 256 wide, 6 blocks, 16 x 28 patches
    predictor.to(device).eval()
    head.to(device).eval()
    cost = WorldModelCost(predictor, head, ENCODER, CostWeights(keypoint_source="latents"),
                          autocast=torch.bfloat16)
    context = torch.randn(CONTEXT_FRAMES, NUM_PATCHES, LATENT_DIM)
    context_actions = torch.randn(CONTEXT_FRAMES - 1, 132) * 0.01
    goal = torch.randn(NUM_PATCHES, LATENT_DIM)
    cost.set_context(context, context_actions, ENCODER)
    cost.set_goal(goal, ENCODER)
    return cost, (context.to(device), context_actions.to(device), goal.to(device))


def time_planner(cost: WorldModelCost, kin, camera, samples: int, iterations: int, device):
    """Seconds per part for one plan() with ``samples`` x ``iterations``."""
    observed = kin.keypoints_camera(HOME, camera)
    parts = dict.fromkeys(("world_model", "keypoint_head", "cost"), 0.0)

    def evaluate(actions, joints):
        costs = cost.costs(actions)
        for name, seconds in cost.last_timing.items():
            parts[name] += seconds
        return costs

    config = CEMConfig(num_samples=samples, iterations=iterations, seed=0)
    planner = CEMPlanner(config, lambda q: kin.keypoints_camera(q, camera), kin.lower, kin.upper)
    sync(device)
    start = time.perf_counter()
    result = planner.plan(HOME, observed, evaluate)
    sync(device)
    total = time.perf_counter() - start
    t = result.timings
    split = {
        "sampling": t["sampling"],
        "fk": t["kinematics"],
        "world_model": parts["world_model"] + parts["keypoint_head"],
        "cost": parts["cost"] + t["update"] + t["extra_cost"],
    }
    split["other"] = total - sum(split.values())
    return total, split, parts["keypoint_head"]


def time_baseline(cost: WorldModelCost, problem, kin, camera, candidates: int, device) -> float:
    """Seconds per candidate of one-by-one scoring (FK, full-context rollout, head, cost)."""
    predictor, head, goal_keypoints = cost.predictor, cost.keypoint_head, cost.goal_keypoints
    context, context_actions, goal = problem
    observed = kin.keypoints_camera(HOME, camera)
    weights = cost.weights.step_weights(3).to(device)
    gen = torch.Generator().manual_seed(0)
    sigma = torch.cat([torch.full((7,), 0.3), torch.full((16,), 0.1)])
    sync(device)
    start = time.perf_counter()
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16):
        for _ in range(candidates):
            joints = kin.clip(HOME + sigma * torch.randn(3, 23, generator=gen))
            actions = keypoint_actions(observed, kin.keypoints_camera(joints, camera))
            predicted = predictor.rollout(context[None], context_actions[None],
                                          actions[None].to(device))[0]
            keypoints = head.keypoint_pixels(predicted[-1:])[0]
            mse = (predicted.float() - goal.float()).square().mean(dim=(-2, -1))
            distance = (keypoints[6:] - goal_keypoints[6:]).norm(dim=-1).mean()
            ((mse * weights).sum() + 1e-3 * distance).item()
    sync(device)
    return (time.perf_counter() - start) / candidates


def main() -> None:
    torch.set_num_threads(2)
    kin, camera = RobotKinematics(), head_camera()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    full = CEMConfig()
    lines = []
    for device in devices:
        for preset in ("tiny", "S"):
            cost, problem = build(preset, device)
            samples, iterations = MEASURED[(preset, device.type)]
            cost.costs(torch.zeros(2, full.horizon, 132))  # warm-up
            total, split, head_seconds = time_planner(cost, kin, camera, samples, iterations,
                                                      device)
            scale = full.num_samples * full.iterations / (samples * iterations)
            step = total * scale
            overhead = (split["sampling"] + split["fk"] + split["cost"]) / total
            label = f"{preset}_{device.type}"
            note = "" if scale == 1 else f" (measured N={samples}, L={iterations}; x{scale:g})"
            print(f"\n{label}: one replanning step {step:.2f} s{note}")
            for name, seconds in split.items():
                print(f"  {name:<12} {seconds * scale:8.3f} s  {seconds / total:6.1%}")
            print(f"  (world model includes keypoint head {head_seconds * scale:.3f} s)")
            per_candidate = time_baseline(cost, problem, kin, camera,
                                          BASELINE_CANDIDATES[preset], device)
            naive_step = per_candidate * full.num_samples * full.iterations
            print(f"  one-by-one baseline: {per_candidate * 1e3:.1f} ms per candidate "
                  f"(timed on {BASELINE_CANDIDATES[preset]}, extrapolated to "
                  f"{full.num_samples}x{full.iterations}) -> {naive_step:.1f} s per step, "
                  f"ratio {naive_step / step:.1f}x")
            lines += [
                f"BENCH planner_step_{label} {step:.3f} s",
                f"BENCH planner_overhead_fraction_{label} {overhead:.4f} ratio",
                f"BENCH planner_naive_step_{label} {naive_step:.1f} s",
                f"BENCH planner_speedup_vs_naive_{label} {naive_step / step:.1f} x",
            ]
            del cost, problem
    print()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
