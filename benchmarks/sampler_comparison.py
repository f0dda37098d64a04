"""Plain CEM vs the iCEM-style sampler: planning cost reached per world-model evaluation.

Both samplers solve the same problems with the same defaults (N=512, K=10, L=10, T=3, paper
sigmas), real robot FK (``RobotKinematics`` + head camera) and ``WorldModelCost``:

* ``linear``: latents are a fixed random linear map of the camera-frame hand keypoints and the
  predictor moves the keypoints by the action deltas; the keypoint head projects wrist and
  fingertips with the head camera. The goal is the latent of a random joint target, so the
  optimum (cost 0) is known and reachable.
* ``cdit``: the real CDiT predictor (tiny preset, 8 patches x 32 dims) with random weights
  (adaLN not zero, so predictions depend on the actions); the goal is its own final prediction
  for a random joint-target sequence (earlier steps are also pulled towards it, so the optimum
  is above 0).

Costs are reported relative to the cost of holding the current joints (1.0 = no progress),
averaged over problems, at evaluation budgets (a sampler that has stopped keeps its final
cost); the table also gives, for the problems where a sampler reaches plain CEM's final cost
(after 5,120 evaluations), the mean evaluations it needed.
Run: ``python benchmarks/sampler_comparison.py`` (about a minute on 2 cores).
"""
from __future__ import annotations

import time
from types import SimpleNamespace

import torch

from dexwm_ros.core.actions import RIGHT_HAND_ROWS, WRIST_AND_TIPS
from dexwm_ros.core.kinematics import RobotKinematics, head_camera
from dexwm_ros.core.planner import CEMConfig, CEMPlanner, keypoint_actions
from dexwm_ros.core.planning_cost import CostWeights, WorldModelCost
from dexwm_ros.core.predictor import CDiTPredictor, PredictorConfig

NUM_PROBLEMS = 5
BUDGETS = (512, 1024, 2048, 3072, 5120)
ENCODER = "benchmark"
HOME = torch.tensor([0.0, -0.3, 0.0, -2.2, 0.0, 2.0, 0.8] + [0.2] * 12 + [0.8, 0.3, 0.3, 0.3])


class LinearKeypointPredictor:
    """Latents = fixed linear map of the 21 keypoints; actions move the keypoints."""

    def __init__(self, num_patches: int = 16, latent_dim: int = 64) -> None:
        gen = torch.Generator().manual_seed(0)
        self.config = SimpleNamespace(num_patches=num_patches, latent_dim=latent_dim)
        self.map = torch.randn(63, num_patches * latent_dim, generator=gen) * 3.0
        self.unmap = torch.linalg.pinv(self.map)

    def encode(self, keypoints: torch.Tensor) -> torch.Tensor:
        latents = keypoints.flatten(-2) @ self.map
        return latents.unflatten(-1, (self.config.num_patches, self.config.latent_dim))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return (latents.flatten(-2) @ self.unmap).unflatten(-1, (21, 3))

    def score_candidates(self, context_latents, context_actions, candidate_actions,
                         chunk_size=None):
        deltas = candidate_actions.unflatten(-1, (44, 3))[..., RIGHT_HAND_ROWS, :]
        return self.encode(self.decode(context_latents[-1]) + deltas.cumsum(dim=-3))


class ProjectingKeypointHead:
    """Decodes the linear latents and projects wrist + tips (maps 6-11) with the camera."""

    def __init__(self, predictor: LinearKeypointPredictor, camera) -> None:
        self.predictor, self.camera = predictor, camera

    def keypoints(self, latents, chunk_size=None, maps=None, with_depth=True):
        points = self.predictor.decode(latents)[..., list(WRIST_AND_TIPS), :]
        pixels = self.camera.project(points.double()).float()
        pixels = torch.cat([torch.zeros_like(pixels), pixels], dim=-2)
        return (pixels if maps is None else pixels[:, list(maps)]), None


def random_target(kin: RobotKinematics, seed: int, steps: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    scale = torch.cat([torch.full((7,), 0.25), torch.full((16,), 0.1)])
    return kin.clip(HOME + scale * torch.randn(steps, 23, generator=gen))


def linear_problem(kin, camera, seed):
    predictor = LinearKeypointPredictor()
    cost = WorldModelCost(predictor, ProjectingKeypointHead(predictor, camera), ENCODER,
                          CostWeights(keypoint_source="latents"))
    keypoints = kin.keypoints_camera(HOME, camera)
    cost.set_context(predictor.encode(keypoints)[None], torch.zeros(0, 132), ENCODER)
    goal = kin.keypoints_camera(random_target(kin, seed, 1)[0], camera)
    cost.set_goal(predictor.encode(goal), ENCODER)
    return cost


def cdit_problem(kin, camera, seed):
    torch.manual_seed(1000 + seed)
    predictor = CDiTPredictor(PredictorConfig.from_preset("tiny", latent_dim=32, num_patches=8))
    for module in predictor.modules():
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.normal_(module.weight, std=0.1)
    std = torch.ones(132)
    std[21 * 3 : 42 * 3] = 0.02  # hand deltas are centimetres: normalise them to order one
    predictor.set_action_normalization(torch.zeros(132), std)
    predictor.eval()
    cost = WorldModelCost(predictor, None, ENCODER)
    context = torch.randn(2, 8, 32)
    cost.set_context(context, torch.zeros(1, 132), ENCODER)
    target = random_target(kin, seed, 3)
    observed = kin.keypoints_camera(HOME, camera)
    actions = keypoint_actions(observed, kin.keypoints_camera(target, camera))
    with torch.no_grad():
        goal = predictor.score_candidates(context, torch.zeros(1, 132), actions[None])[0, -1]
    cost.set_goal(goal, ENCODER)
    return cost


def run(sampler: str, cost: WorldModelCost, kin, camera, seed: int):
    """(evaluations, best cost) after each iteration, relative to holding still."""
    observed = kin.keypoints_camera(HOME, camera)
    hold = keypoint_actions(observed, kin.keypoints_camera(HOME.expand(3, -1), camera))
    baseline = cost.costs(hold[None]).item()
    planner = CEMPlanner(CEMConfig(sampler=sampler, seed=seed),
                         lambda q: kin.keypoints_camera(q, camera), kin.lower, kin.upper)
    trace = []
    planner.plan(HOME, observed, lambda actions, joints: cost.costs(actions),
                 lambda info: trace.append((info.evaluations, info.best_cost / baseline)))
    return trace


def cost_at(trace, budget):
    reached = [cost for evaluations, cost in trace if evaluations <= budget]
    return reached[-1] if reached else 1.0


def evaluations_to(trace, target):
    return next((evaluations for evaluations, cost in trace if cost <= target), None)


def main() -> None:
    torch.set_num_threads(2)
    kin, camera = RobotKinematics(), head_camera()
    lines = []
    for name, make in (("linear", linear_problem), ("cdit", cdit_problem)):
        start = time.perf_counter()
        traces = {"cem": [], "icem": []}
        for seed in range(NUM_PROBLEMS):
            for sampler in traces:
                traces[sampler].append(run(sampler, make(kin, camera, seed), kin, camera, seed))
        print(f"\nproblem {name}: {NUM_PROBLEMS} problems, {time.perf_counter() - start:.1f} s")
        print("budget (evaluations) " + " ".join(f"{b:>7d}" for b in BUDGETS))
        targets = [trace[-1][1] for trace in traces["cem"]]
        for sampler, runs in traces.items():
            means = [sum(cost_at(t, b) for t in runs) / len(runs) for b in BUDGETS]
            print(f"{sampler:>5} mean rel. cost   " + " ".join(f"{m:7.4f}" for m in means))
            total = sum(t[-1][0] for t in runs) / len(runs)
            needed = [evaluations_to(t, target) for t, target in zip(runs, targets, strict=True)]
            solved = [n for n in needed if n is not None]
            mean_needed = sum(solved) / len(solved) if solved else float("nan")
            print(f"      evaluations per plan {total:.0f}; reached plain CEM's final cost in "
                  f"{len(solved)}/{len(runs)} problems, mean {mean_needed:.0f} evaluations")
            for budget in (1024, 2048):
                lines.append(f"BENCH sampler_{name}_{sampler}_rel_cost_at_{budget}_evals "
                             f"{means[BUDGETS.index(budget)]:.4f} ratio")
            lines.append(f"BENCH sampler_{name}_{sampler}_rel_cost_final {means[-1]:.4f} ratio")
            lines.append(f"BENCH sampler_{name}_{sampler}_evals_per_plan {total:.0f} evaluations")
    print()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
