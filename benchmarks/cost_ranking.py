"""Does the planner's world-model cost rank one-step candidates by their true distance to the goal?

``goal_ranking.py`` measures the encoder's ceiling on rendered candidate images; this measures
what the planner actually sees. On reach episodes (seeds 0-3, after one control step holding
still: 2 context frames, as the default model plans at horizon 3), 128 candidate joint targets
around the current pose (arm sigma 0.3 rad as the planner's first iteration, 0.09 rad as a
later one) become one-step keypoint-delta actions and are scored by the world model's cost:
the total, its latent term alone and its keypoint term alone, with the paper's keypoint term
(``keypoint_source: latents``: the head decodes the predicted latents; the default ``actions``
source takes the candidates' keypoints from their actions instead). Each ranking is
compared with the ranking by the true mean hand-keypoint distance of the commanded pose to the
goal (Spearman rho), beside the latent MSE of the rendered candidates as if reached (the
encoder's ceiling). Models: the packaged default, and any checkpoint directories given as
arguments (a ``blazepalm`` model reads the converted encoder of ``make palm-encoder``). Runs
with no arguments in a few minutes on 2 cores.
"""
from __future__ import annotations

import dataclasses
import os
import sys

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from goal_ranking import PALM_ENCODER, SCALES, SEEDS, rendered_candidates, spearman  # noqa: E402

from dexwm_ros.core.actions import robot_hand_actions  # noqa: E402
from dexwm_ros.core.kinematics import RobotKinematics, head_camera  # noqa: E402
from dexwm_ros.core.mpc import context_actions  # noqa: E402
from dexwm_ros.core.planning_cost import CostWeights, WorldModelCost  # noqa: E402
from dexwm_ros.core.world_model import WorldModel  # noqa: E402
from dexwm_ros.share import world_model_path  # noqa: E402
from dexwm_ros.sim import make_task  # noqa: E402

HOLD_STEPS = 1


def model_name(path: str) -> str:
    """A checkpoint's name for the report: its directory, or the run's for ``<run>/model``."""
    parts = os.path.normpath(path).split(os.sep)
    return parts[-2] if parts[-1] == "model" and len(parts) > 1 else parts[-1]


def main(extra_models: list[str]) -> None:
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    kinematics, camera = RobotKinematics(), head_camera()
    models = {"default": world_model_path(None)} | {model_name(m): m for m in extra_models}
    weights = CostWeights.for_task("reach", keypoint_source="latents")
    terms = {"total": weights, "latent": dataclasses.replace(weights, keypoint_weight=0.0),
             "keypoint": dataclasses.replace(weights, latent_weight=0.0)}
    rho: dict[str, list[float]] = {}
    with make_task("reach", seed=0) as task, torch.inference_mode():
        for name, path in models.items():
            model = WorldModel.load(path).eval()
            encoder = model.build_encoder(PALM_ENCODER if model.encoder_backend == "blazepalm"
                                          else None)
            cost = WorldModelCost(model.predictor, model.keypoint_head, model.encoder_name,
                                  weights)
            for seed in SEEDS:
                task.reset(seed)
                images, joints = [task.render()], [task.joint_positions()]
                for _ in range(HOLD_STEPS):
                    task.step(task.joint_positions())
                    images.append(task.render())
                    joints.append(task.joint_positions())
                context_joints = torch.as_tensor(np.stack(joints), dtype=torch.float32)
                goal_latents = encoder.encode(task.goal_image()[None])
                cost.clear()
                cost.set_goal(goal_latents[0], encoder.name)
                cost.set_context(encoder.encode(np.stack(images)),
                                 context_actions(kinematics, camera, context_joints,
                                                 model.action_representation), encoder.name)
                goal = kinematics.keypoints_world(torch.as_tensor(task.goal_joint_positions,
                                                                  dtype=torch.float32))
                observed = kinematics.keypoints_camera(context_joints[-1], camera)
                rng = np.random.default_rng(seed)
                for scale_name, scale in SCALES.items():
                    candidates, rendered = rendered_candidates(task, rng, scale)
                    candidates = torch.as_tensor(candidates, dtype=torch.float32)
                    true = (kinematics.keypoints_world(candidates) - goal).norm(dim=-1).mean(-1)
                    keypoints = kinematics.keypoints_camera(candidates, camera)[:, None]
                    actions = robot_hand_actions(model.action_representation, observed,
                                                 keypoints)
                    for term, term_weights in terms.items():
                        cost.weights = term_weights
                        rho.setdefault(f"{name}_predicted_{term}_{scale_name}", []).append(
                            spearman(cost.costs(actions), true))
                    latents = torch.cat([encoder.encode(chunk)
                                         for chunk in np.array_split(rendered, 8)])
                    mse = (latents - goal_latents).square().mean((-2, -1))
                    rho.setdefault(f"{name}_rendered_latent_{scale_name}", []).append(
                        spearman(mse, true))
                    cost.weights = weights
    for key, values in rho.items():
        print(f"{key}: rho per seed {', '.join(f'{v:.2f}' for v in values)}")
    for key, values in rho.items():
        print(f"BENCH cost_ranking_rho_{key} {np.mean(values):.3f} rho")


if __name__ == "__main__":
    main(sys.argv[1:])
