"""How far off are the goal hand keypoints that the planner decodes from each task's goal image?

With the default keypoint source (``actions``) the world model's keypoint head runs only on the
encoded goal image: the planner steers the wrist and fingertips (maps 6-11) towards the pixels
and camera depths it decodes there (``WorldModelCost.set_goal``). Its error is a floor under
how close the hand can come to the goal. For each task (reach, grasp, place; seeds 0-9) this
decodes the goal image of the episode exactly as ``dexwm-eval-sim --policy wm`` does and
compares with the true keypoints of the goal pose (forward kinematics of the goal joints, the
head camera): pixel error, depth error, the 3D error of the back-projected keypoints, and
the mean height offset (world z; positive: the decoded hand is above the goal's).
Models: the packaged default, and any checkpoint directories given as arguments. About two
minutes on 2 cores.
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dexwm_ros.core.actions import WRIST_AND_TIPS  # noqa: E402
from dexwm_ros.core.kinematics import RobotKinematics, head_camera  # noqa: E402
from dexwm_ros.core.planning_cost import RIGHT_HAND_MAPS, CostWeights, WorldModelCost  # noqa: E402
from dexwm_ros.core.world_model import WorldModel  # noqa: E402
from dexwm_ros.share import world_model_path  # noqa: E402
from dexwm_ros.sim import make_task  # noqa: E402

TASKS = ("reach", "grasp", "place")
SEEDS = tuple(range(10))


def goal_errors(model_dir: str) -> dict[str, dict[str, float]]:
    """Per task: mean pixel, depth (cm), 3D (cm) errors and height offset (cm)."""
    model = WorldModel.load(world_model_path(model_dir)).eval()
    encoder = model.build_encoder()
    kinematics, camera = RobotKinematics(), head_camera()
    cost = WorldModelCost(model.predictor, model.keypoint_head, model.encoder_name,
                          CostWeights(), camera=camera)
    rotation = camera.camera_to_world[:3, :3].double()
    results = {}
    for task_name in TASKS:
        rows = []
        with make_task(task_name, seed=SEEDS[0]) as task:
            for seed in SEEDS:
                task.reset(seed)
                with torch.inference_mode():
                    cost.set_goal(encoder.encode(task.goal_image()[None])[0], encoder.name)
                goal_joints = torch.as_tensor(task.goal_joint_positions, dtype=torch.float32)
                maps = list(RIGHT_HAND_MAPS)
                pixels, depths = cost.goal_keypoints[maps], cost.goal_depths[maps]
                truth = kinematics.keypoints_camera(goal_joints, camera)[list(WRIST_AND_TIPS)]
                decoded = camera.back_project(pixels, depths)
                offset = (decoded - truth.double()) @ rotation.T  # world axes
                rows.append([
                    (pixels - camera.project(truth)).norm(dim=-1).mean().item(),
                    100 * (depths - truth[:, 2]).abs().mean().item(),
                    100 * offset.norm(dim=-1).mean().item(),
                    100 * offset[:, 2].mean().item(),
                ])
        pixel, depth, error_3d, height = np.mean(rows, axis=0)
        results[task_name] = {"pixel": pixel, "depth_cm": depth, "error_3d_cm": error_3d,
                              "height_cm": height}
    return results


def main() -> None:
    models = [""] + sys.argv[1:]  # "": the packaged default model
    for model_dir in models:
        parts = [p for p in os.path.normpath(model_dir).split(os.sep) if p not in ("model", ".")]
        name = parts[-1] if model_dir and parts else "default"
        print(f"model {name} ({world_model_path(model_dir)}), seeds {SEEDS[0]}-{SEEDS[-1]}")
        print(f"{'task':<6} {'pixel':>7} {'depth cm':>9} {'3D cm':>7} {'height cm':>10}")
        for task_name, row in goal_errors(model_dir).items():
            print(f"{task_name:<6} {row['pixel']:7.1f} {row['depth_cm']:9.1f} "
                  f"{row['error_3d_cm']:7.1f} {row['height_cm']:+10.1f}")
            print(f"BENCH goal_keypoints_3d_error_{task_name}_{name} {row['error_3d_cm']:.1f} cm")


if __name__ == "__main__":
    main()
