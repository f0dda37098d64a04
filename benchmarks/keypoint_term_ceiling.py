"""How well can the paper's keypoint term plan reach, with a perfect keypoint head?

The planning cost's keypoint term (section 3.4) compares image-plane keypoints (wrist and
fingertips, maps 6-11) of the predicted final frame and of the goal. This runs the planner at
the paper budget (N=512, K=10, L=10, T=3, appendix B's shrinking horizon) in closed loop on
reach episodes with privileged costs that stand for a perfect world model and head, so that
only the form of the term is measured:

* ``keypoints_3d``: the ``oracle`` cost (mean 3D distance of the 21 hand keypoints);
* ``image_plane``: mean pixel distance of the true projections of the 6 keypoints (a perfect
  head on perfect predictions): the paper's keypoint term alone;
* ``image_plane_depth``: the same plus 100 px per metre of mean depth difference (the ratio of
  ``CostWeights.keypoint_depth_weight`` 1.0 to ``keypoint_weight`` 1e-2), the term a head with
  a depth output gives.

Each also has the wrist workspace box of every MPC policy. Reach seeds 0-9, 2 processes
(about 5 minutes on 2 cores). Prints the success rate and the mean final keypoint distance.
"""
from __future__ import annotations

import multiprocessing as mp
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

SEEDS = tuple(range(10))
COSTS = ("keypoints_3d", "image_plane", "image_plane_depth")
DEPTH_PX_PER_M = 100.0


def run(job: tuple[str, int]) -> tuple[str, int, bool, float]:
    import torch

    from dexwm_ros.core.actions import WRIST_AND_TIPS
    from dexwm_ros.core.planning_cost import KeypointGoalCost
    from dexwm_ros.sim import make_task
    from training.eval_sim import EvalConfig, MPCPolicy, run_episode

    torch.set_num_threads(1)
    cost_name, seed = job
    tips = list(WRIST_AND_TIPS)

    class PrivilegedPolicy(MPCPolicy):
        def evaluate(self, task):
            goal = torch.as_tensor(task.goal_joint_positions, dtype=torch.float32)
            if cost_name == "keypoints_3d":
                return KeypointGoalCost(self.kinematics.keypoints_world,
                                        self.kinematics.keypoints_world(goal))
            goal_camera = self.kinematics.keypoints_camera(goal, self.camera)[tips]
            goal_pixels = self.camera.project(goal_camera)
            depth_weight = DEPTH_PX_PER_M if cost_name == "image_plane_depth" else 0.0

            def cost(_actions, joints):
                camera = self.kinematics.keypoints_camera(joints, self.camera)[..., tips, :]
                distance = (self.camera.project(camera) - goal_pixels).norm(dim=-1).mean(-1)
                distance = distance + depth_weight * (camera[..., 2] - goal_camera[:, 2]).abs() \
                    .mean(-1)
                weights = self.session.weights.step_weights(joints.shape[-2])
                return (distance * weights).sum(-1)

            return cost

    with make_task("reach", seed=seed) as task:
        task.reset(seed)
        policy = PrivilegedPolicy(EvalConfig(), "reach")
        result = run_episode(task, policy, task.max_steps)
    return cost_name, seed, result.success, result.distance[-1]


def main() -> None:
    jobs = [(cost, seed) for cost in COSTS for seed in SEEDS]
    with mp.get_context("spawn").Pool(2) as pool:
        results = pool.map(run, jobs)
    for cost in COSTS:
        rows = [r for r in results if r[0] == cost]
        successes = sum(r[2] for r in rows)
        final = np.mean([r[3] for r in rows])
        failed = [r[1] for r in rows if not r[2]]
        print(f"{cost}: {successes}/{len(rows)} reach successes, mean final distance "
              f"{final:.3f} m, failed seeds {failed}")
    for cost in COSTS:
        rows = [r for r in results if r[0] == cost]
        print(f"BENCH keypoint_term_ceiling_{cost}_success {np.mean([r[2] for r in rows]):.2f} "
              f"rate")
        print(f"BENCH keypoint_term_ceiling_{cost}_final_distance "
              f"{np.mean([r[3] for r in rows]):.3f} m")


if __name__ == "__main__":
    main()
