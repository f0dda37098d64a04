"""How well does a latent distance rank hand poses by their true distance to the goal?

The world-model cost can only plan as well as its latent space separates good from bad hand
poses. This measures that ceiling without a predictor: on reach episodes (seeds 0-3), 128
candidate joint targets around the start pose are rendered as they would look if reached
(arm sigma 0.3 rad as the planner's first iteration, and 0.09 rad as a later one), encoded,
and ranked by latent MSE to the encoded goal image, and by the default model's keypoint-head
pixel distance to the goal's (the paper's keypoint term, on true latents). Each ranking is
compared with the ranking by the true mean hand-keypoint distance to the goal (Spearman rho:
1 = perfect, 0 = random). Encoders: the random tiny ViT at grid pooling 1, 2 and 4 (the default
model's), so what pooling costs is visible; ``tiny_residual`` (the same ViT before its final
LayerNorm) at pooling 1 and 4; MediaPipe's palm-detector trunk at pooling 4 (``blazepalm``, when
``make palm-encoder`` has converted it); and, as a reference, raw normalised pixels averaged in
56 x 56 blocks (``pixels_pool4``). Run with no arguments (a few minutes on 2 cores).
"""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from dexwm_ros.core.encoder import build_encoder  # noqa: E402
from dexwm_ros.core.kinematics import RobotKinematics  # noqa: E402
from dexwm_ros.core.planning_cost import RIGHT_HAND_MAPS  # noqa: E402
from dexwm_ros.core.world_model import WorldModel  # noqa: E402
from dexwm_ros.share import world_model_path  # noqa: E402
from dexwm_ros.sim import make_task  # noqa: E402

SEEDS = (0, 1, 2, 3)
PALM_ENCODER = Path(__file__).resolve().parents[1] / "models" / "encoders" / "blazepalm"
CANDIDATES = 128
SCALES = {"wide": 1.0, "narrow": 0.3}  # times the planner's initial sigma (0.3 arm, 0.1 hand)


class PixelBlocks:
    """Reference 'encoder': the encoder's normalised input pixels averaged over each token's
    block (what a latent distance can rank with no learnt or random features at all)."""

    def __init__(self, encoder) -> None:
        self.encoder = encoder

    def encode(self, images) -> torch.Tensor:
        pixels = self.encoder.preprocess(images)
        blocks = torch.nn.functional.avg_pool2d(pixels, self.encoder.token_pixels)
        return blocks.flatten(2).transpose(1, 2)


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ranks = [x.argsort().argsort().double() for x in (a, b)]
    ranks = [r - r.mean() for r in ranks]
    return float((ranks[0] * ranks[1]).sum() / (ranks[0].norm() * ranks[1].norm()))


def rendered_candidates(task, rng, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Joint targets ``(N, 23)`` around the current pose and their images ``(N, H, W, 3)``."""
    sigma = np.r_[np.full(7, 0.3), np.full(16, 0.1)] * scale
    joints = np.clip(task.joint_positions() + rng.normal(size=(CANDIDATES, 23)) * sigma,
                     task.lower, task.upper)
    data = mujoco.MjData(task.model)
    images = []
    for q in joints:
        data.qpos[:] = task.data.qpos
        data.qpos[task.scene.qpos_robot] = q
        mujoco.mj_forward(task.model, data)
        images.append(task._render(data))
    return joints, np.stack(images)


def main() -> None:
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    kinematics = RobotKinematics()
    model = WorldModel.load(world_model_path(None)).eval()
    encoders = {f"tiny_pool{p}": build_encoder("tiny", pool=p) for p in (1, 2, 4)}
    encoders |= {f"tiny_residual_pool{p}": build_encoder("tiny_residual", pool=p) for p in (1, 4)}
    encoders["pixels_pool4"] = PixelBlocks(encoders["tiny_pool4"])
    if PALM_ENCODER.is_dir():
        encoders["blazepalm_pool4"] = build_encoder("blazepalm", PALM_ENCODER, pool=4)
    else:
        print(f"no converted palm-detector encoder in {PALM_ENCODER} (`make palm-encoder`); "
              f"skipping it")
    maps = tuple(RIGHT_HAND_MAPS)
    rho: dict[str, list[float]] = {}
    with make_task("reach", seed=0) as task, torch.inference_mode():
        for seed in SEEDS:
            task.reset(seed)
            goal = kinematics.keypoints_world(torch.as_tensor(task.goal_joint_positions,
                                                              dtype=torch.float32))
            goal_image = task.goal_image()[None]
            goal_latents = {name: encoder.encode(goal_image) for name, encoder in encoders.items()}
            goal_pixels = model.keypoint_head.keypoint_pixels(goal_latents[model.encoder_name],
                                                              maps=maps)
            rng = np.random.default_rng(seed)
            for scale_name, scale in SCALES.items():
                joints, images = rendered_candidates(task, rng, scale)
                true = (kinematics.keypoints_world(torch.as_tensor(joints, dtype=torch.float32))
                        - goal).norm(dim=-1).mean(-1)
                for name, encoder in encoders.items():
                    latents = torch.cat([encoder.encode(chunk) for chunk in
                                         np.array_split(images, 8)])
                    mse = (latents - goal_latents[name]).square().mean((-2, -1))
                    rho.setdefault(f"{name}_latent_{scale_name}", []).append(spearman(mse, true))
                    if name == model.encoder_name:
                        pixels = model.keypoint_head.keypoint_pixels(latents, maps=maps)
                        distance = (pixels - goal_pixels).norm(dim=-1).mean(-1)
                        rho.setdefault(f"default_model_keypoint_head_{scale_name}", []).append(
                            spearman(distance, true))
    for key, values in rho.items():
        print(f"{key}: rho per seed {', '.join(f'{v:.2f}' for v in values)}")
    for key, values in rho.items():
        print(f"BENCH goal_ranking_rho_{key} {np.mean(values):.3f} rho")


if __name__ == "__main__":
    main()
