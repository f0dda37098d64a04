"""WorldModelCost / OrientationCost tests against hand-computed costs."""
from __future__ import annotations

import math
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from dexwm_ros.core.planning_cost import (
    CostWeights,
    EncoderMismatchError,
    OrientationCost,
    WorldModelCost,
)
from dexwm_ros.core.predictor import CDiTPredictor, PredictorConfig

P, D = 6, 8
ENCODER = "synthetic"
#: The paper's keypoint term (the head decodes the predictions): the synthetic predictors
#: and heads below stand for a model whose actions are not a robot's kinematics.
PAPER_SOURCE = CostWeights(keypoint_source="latents", keypoint_steps="final")


class AdditivePredictor:
    """Synthetic predictor: each step adds a fixed linear map of its action to the latent."""

    def __init__(self) -> None:
        gen = torch.Generator().manual_seed(0)
        self.config = SimpleNamespace(num_patches=P, latent_dim=D)
        self.map = torch.randn(132, P * D, generator=gen) * 0.1
        self.calls = 0

    def score_candidates(self, context_latents, context_actions, candidate_actions,
                         chunk_size=None):
        self.calls += 1
        steps = (candidate_actions @ self.map).unflatten(-1, (P, D)).cumsum(dim=1)
        return context_latents[-1] + steps


class MeanKeypointHead:
    """Synthetic head: pixels = 10 x the first 24 latent values."""

    def __init__(self) -> None:
        self.calls = 0

    def keypoints(self, latents, chunk_size=None, maps=None, with_depth=True):
        self.calls += 1
        pixels = 10.0 * latents.flatten(-2)[..., :24].unflatten(-1, (12, 2))
        return (pixels if maps is None else pixels[:, list(maps)]), None


def make_cost(weights=None, head=True, **kwargs):
    gen = torch.Generator().manual_seed(1)
    cost = WorldModelCost(AdditivePredictor(), MeanKeypointHead() if head else None, ENCODER,
                          weights or PAPER_SOURCE, **kwargs)
    context = torch.randn(2, P, D, generator=gen)
    goal = torch.randn(P, D, generator=gen)
    cost.set_context(context, torch.zeros(1, 132), ENCODER)
    cost.set_goal(goal, ENCODER)
    actions = torch.randn(5, 3, 132, generator=gen)
    return cost, context, goal, actions


def expected_costs(cost, context, goal, actions, weights):
    predicted = cost.predictor.score_candidates(context, None, actions)
    mse = (predicted - goal).square().mean(dim=(-2, -1))
    horizon = actions.shape[1]
    step_weights = torch.tensor([weights.step_discount ** (horizon - 1 - t)
                                 for t in range(horizon)])
    total = weights.latent_weight * (mse * step_weights).sum(-1)
    if cost.keypoint_head is not None:
        maps = list(weights.keypoint_maps)
        head = MeanKeypointHead()
        steps = horizon if weights.keypoint_steps == "all" else 1
        for t in range(horizon - steps, horizon):
            distance = (head.keypoints(predicted[:, t])[0][:, maps]
                        - head.keypoints(goal[None])[0][0, maps]).norm(dim=-1).mean(-1)
            total = total + weights.keypoint_weight * step_weights[t] * distance
    return total


@pytest.mark.parametrize("head", [True, False])
@pytest.mark.parametrize("steps", ["final", "all"])
def test_costs_match_hand_computation(head, steps):
    weights = CostWeights(latent_weight=2.0, step_discount=0.5, keypoint_weight=0.1,
                          keypoint_source="latents", keypoint_steps=steps,
                          keypoint_maps=(6, 8, 11))
    cost, context, goal, actions = make_cost(weights, head=head)
    torch.testing.assert_close(cost.costs(actions),
                               expected_costs(cost, context, goal, actions, weights))
    assert set(cost.last_timing) == {"world_model", "keypoint_head", "cost"}


def test_paper_defaults_and_step_weights():
    assert CostWeights().keypoint_source == "actions" and CostWeights().keypoint_steps == "all"
    weights = PAPER_SOURCE
    assert weights.step_discount == 0.6 and weights.keypoint_weight == 1e-2
    assert weights.keypoint_maps == (6, 7, 8, 9, 10, 11) and weights.orientation_weight == 0
    torch.testing.assert_close(weights.step_weights(3), torch.tensor([0.36, 0.6, 1.0]))
    assert CostWeights.for_task("grasp").orientation_weight > 0
    assert CostWeights.for_task("reach").orientation_weight == 0
    cost, context, goal, actions = make_cost()
    torch.testing.assert_close(cost.costs(actions),
                               expected_costs(cost, context, goal, actions, weights))


def test_goal_keypoints_decoded_once_and_batches_agree():
    cost, _, _, actions = make_cost(batch_size=2)
    assert cost.keypoint_head.calls == 1 and cost.goal_keypoints.shape == (12, 2)
    batched = cost.costs(actions)
    assert cost.predictor.calls == 3  # 5 candidates in batches of 2
    assert cost.keypoint_head.calls == 1 + 3
    whole, _, _, _ = make_cost()
    torch.testing.assert_close(batched, whole.costs(actions))


def test_rollout_matches_costs_path():
    cost, context, goal, actions = make_cost()
    latents, keypoints = cost.rollout(actions[2])
    assert latents.shape == (3, P, D) and keypoints.shape == (3, 12, 2)
    torch.testing.assert_close(latents, cost.predictor.score_candidates(context, None,
                                                                        actions[2:3])[0])


def test_real_predictor_shared_context_costs_equal_naive_rollout():
    torch.manual_seed(0)
    predictor = CDiTPredictor(PredictorConfig.from_preset("tiny", latent_dim=16, num_patches=8))
    for module in predictor.modules():  # leave adaLN-Zero so predictions depend on actions
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.normal_(module.weight, std=0.05)
    predictor.eval()
    cost = WorldModelCost(predictor, None, ENCODER)
    context = torch.randn(3, 8, 16)
    context_actions = torch.randn(2, 132) * 0.01
    goal = torch.randn(8, 16)
    cost.set_context(context, context_actions, ENCODER)
    cost.set_goal(goal, ENCODER)
    actions = torch.randn(4, 3, 132) * 0.01
    with torch.no_grad():
        naive = predictor.rollout(context.expand(4, -1, -1, -1), context_actions.expand(4, -1, -1),
                                  actions)
    mse = (naive - goal).square().mean(dim=(-2, -1))
    expected = (mse * torch.tensor([0.36, 0.6, 1.0])).sum(-1)
    costs = cost.costs(actions)
    torch.testing.assert_close(costs, expected, rtol=1e-4, atol=1e-6)
    assert costs.std() > 0
    with pytest.raises(EncoderMismatchError, match=r"predictor expects \(8, 16\)"):
        cost.set_goal(torch.randn(8, 32), ENCODER)


def test_bad_inputs_raise_clear_errors():
    cost, context, goal, actions = make_cost()
    calls = cost.predictor.calls
    with pytest.raises(EncoderMismatchError, match="'siglip2' but the world model expects"):
        cost.set_context(context, torch.zeros(1, 132), "siglip2")
    with pytest.raises(EncoderMismatchError, match="goal latents"):
        cost.set_goal(goal, "siglip2")
    with pytest.raises(ValueError, match=r"goal latents must have shape \(P, D\)"):
        cost.set_goal(goal[None], ENCODER)
    with pytest.raises(ValueError, match=r"context latents must have shape \(C, P, D\)"):
        cost.set_context(goal, torch.zeros(0, 132), ENCODER)
    with pytest.raises(ValueError, match="context actions contains NaN"):
        cost.set_context(context, torch.full((1, 132), float("nan")), ENCODER)
    with pytest.raises(ValueError, match=r"candidate actions must have shape \(N, T, 132\)"):
        cost.costs(actions[..., :131])
    nan_actions = actions.clone()
    nan_actions[1, 1, 4] = float("nan")
    with pytest.raises(ValueError, match="candidate actions contains NaN"):
        cost.costs(nan_actions)
    with pytest.raises(ValueError, match=r"rollout actions must have shape \(T, 132\)"):
        cost.rollout(actions)
    assert cost.predictor.calls == calls
    cost.clear()
    assert not cost.ready
    with pytest.raises(RuntimeError, match="set_context and set_goal must be called"):
        cost.costs(actions)
    for fields in (dict(step_discount=-0.1), dict(keypoint_weight=float("nan")),
                   dict(keypoint_maps=(12,)), dict(keypoint_maps=())):
        with pytest.raises(ValueError, match="CostWeights"):
            CostWeights(**fields).validate()
    with pytest.raises(ValueError, match="batch_size"):
        WorldModelCost(AdditivePredictor(), None, ENCODER, batch_size=0)


def z_rotation(angle: torch.Tensor) -> torch.Tensor:
    c, s = angle.cos(), angle.sin()
    zero, one = torch.zeros_like(angle), torch.ones_like(angle)
    rotation = torch.stack([c, -s, zero, s, c, zero, zero, zero, one], dim=-1).unflatten(-1, (3, 3))
    pose = torch.eye(4).expand(*angle.shape, 4, 4).clone()
    pose[..., :3, :3] = rotation
    return pose


def test_orientation_cost_is_discounted_rotation_angle():
    weights = CostWeights(orientation_weight=0.5, step_discount=0.6)
    target = z_rotation(torch.tensor(0.3))[:3, :3]
    orientation = OrientationCost(lambda joints: z_rotation(joints[..., 0]), target, weights)
    joints = torch.zeros(2, 3, 23)
    joints[0, :, 0] = 0.3  # on target
    joints[1, :, 0] = torch.tensor([0.3 + 0.2, 0.3 - 0.4, 0.3 + 1.0])
    costs = orientation(joints)
    assert costs.shape == (2,) and math.isclose(costs[0].item(), 0.0, abs_tol=1e-3)
    expected = 0.5 * (0.36 * 0.2 + 0.6 * 0.4 + 1.0 * 1.0)
    assert math.isclose(costs[1].item(), expected, rel_tol=1e-4)
    with pytest.raises(ValueError, match="proper rotation"):
        OrientationCost(lambda q: q, 2 * torch.eye(3), weights)
    with pytest.raises(ValueError, match="wrist_pose_fn returned"):
        OrientationCost(lambda q: torch.eye(3).expand(*q.shape[:-1], 3, 3), torch.eye(3),
                        weights)(joints)


def test_context_beyond_the_model_capacity_drops_the_oldest_frames():
    torch.manual_seed(0)
    config = PredictorConfig.from_preset("tiny", latent_dim=16, num_patches=8)
    predictor = CDiTPredictor(config).eval()
    for module in predictor.modules():
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.normal_(module.weight, std=0.05)
    slots = config.num_slots
    context = torch.randn(slots, 8, 16)
    context_actions = torch.randn(slots - 1, 132) * 0.01
    goal, actions = torch.randn(8, 16), torch.randn(3, 3, 132) * 0.01
    full = WorldModelCost(predictor, None, ENCODER)
    full.set_context(context, context_actions, ENCODER)
    full.set_goal(goal, ENCODER)
    keep = slots - 3 + 1  # frames that fit with 3 predictions
    trimmed = WorldModelCost(predictor, None, ENCODER)
    trimmed.set_context(context[-keep:], context_actions[-(keep - 1):], ENCODER)
    trimmed.set_goal(goal, ENCODER)
    torch.testing.assert_close(full.costs(actions), trimmed.costs(actions))
    with pytest.raises(ValueError, match="does not fit"):
        full.costs(torch.zeros(1, slots + 1, 132))


class FixedPredictor:
    """Predicts the same two frames for every candidate: ``[[1, 0]]`` then ``[[0, 2]]``."""

    config = SimpleNamespace(num_patches=1, latent_dim=2)

    def score_candidates(self, context_latents, context_actions, candidate_actions,
                         chunk_size=None):
        frames = torch.tensor([[[1.0, 0.0]], [[0.0, 2.0]]])
        return frames.expand(len(candidate_actions), -1, -1, -1)


class FixedHead:
    """Decodes every latent to 12 keypoints at the pixel (latent_0 * 3, latent_1 * 2)."""

    def keypoints(self, latents, chunk_size=None, maps=None, with_depth=True):
        pixel = torch.stack([latents[:, 0, 0] * 3.0, latents[:, 0, 1] * 2.0], dim=-1)
        pixels = pixel[:, None, :].expand(-1, 12, -1)
        return (pixels if maps is None else pixels[:, list(maps)]), None


def test_cost_of_a_small_case_computed_by_hand():
    # Goal latent [0, 0]: step MSEs (1 + 0) / 2 = 0.5 and (0 + 4) / 2 = 2.0, weighted 0.6 and 1,
    # give 2.3; the final latent [0, 2] decodes to pixel (0, 4), the goal to (0, 0): 4 px.
    cost = WorldModelCost(FixedPredictor(), FixedHead(), ENCODER,
                          CostWeights(keypoint_weight=0.01, keypoint_source="latents",
                                      keypoint_steps="final"))
    cost.set_context(torch.zeros(1, 1, 2), torch.zeros(0, 132), ENCODER)
    cost.set_goal(torch.tensor([[0.0, 0.0]]), ENCODER)
    assert cost.costs(torch.zeros(2, 2, 132)).tolist() == pytest.approx([2.3 + 0.01 * 4.0] * 2)
    cost.set_goal(torch.tensor([[1.0, 0.0]]), ENCODER)
    # Goal latent [1, 0]: MSEs 0 and (1 + 4) / 2 = 2.5 give 2.5; pixels (0, 4) and (3, 0): 5 px.
    assert cost.costs(torch.zeros(1, 2, 132)).item() == pytest.approx(2.5 + 0.01 * 5.0)


class DepthHead(FixedHead):
    """FixedHead whose keypoints all have the depth latent_0 + 1 (metres)."""

    def keypoints(self, latents, chunk_size=None, maps=None, with_depth=True):
        pixels, _ = super().keypoints(latents, chunk_size, maps)
        depth = (latents[:, 0, 0] + 1.0)[:, None].expand(-1, pixels.shape[1])
        return pixels, depth if with_depth else None


def test_depth_term_adds_the_weighted_depth_difference():
    # As the hand-computed case with goal [0, 0]: the final latent [0, 2] has depth 1 m, the
    # goal's depth is 1 m too; goal [1, 0] has depth 2 m: 1 m away, weighted 0.5.
    weights = CostWeights(keypoint_weight=0.01, keypoint_depth_weight=0.5,
                          keypoint_source="latents", keypoint_steps="final")
    cost = WorldModelCost(FixedPredictor(), DepthHead(), ENCODER, weights)
    cost.set_context(torch.zeros(1, 1, 2), torch.zeros(0, 132), ENCODER)
    cost.set_goal(torch.tensor([[0.0, 0.0]]), ENCODER)
    assert cost.costs(torch.zeros(1, 2, 132)).item() == pytest.approx(2.3 + 0.04)
    cost.set_goal(torch.tensor([[1.0, 0.0]]), ENCODER)
    assert cost.costs(torch.zeros(1, 2, 132)).item() == pytest.approx(2.5 + 0.05 + 0.5)
    cost.weights = replace(weights, keypoint_depth_weight=0.0)
    assert cost.costs(torch.zeros(1, 2, 132)).item() == pytest.approx(2.5 + 0.05)


def test_workspace_cost_is_the_distance_outside_the_box():
    from dexwm_ros.core.planning_cost import WorkspaceCost

    weights = CostWeights(workspace_weight=10.0, workspace_low=(0.0, 0.0, 0.0),
                          workspace_high=(1.0, 1.0, 1.0))
    cost = WorkspaceCost(lambda joints: joints[..., :3], weights)
    joints = torch.tensor([[[0.5, 0.5, 0.5], [0.2, 0.9, 0.1]],     # inside: 0
                           [[1.1, 0.5, 0.5], [0.5, -0.3, 1.4]]])   # 0.1 m, then 0.5 m out
    torch.testing.assert_close(cost(joints), torch.tensor([0.0, 10.0 * (0.1 + 0.5)]))
    with pytest.raises(ValueError, match="workspace"):
        CostWeights(workspace_low=(0.0, 0.0, 2.0), workspace_high=(1.0, 1.0, 1.0)).validate()


class GoalPoseHead:
    """Decodes any latent to the right-hand wrist and fingertips of a fixed joint pose, as
    pixels and camera depths (left-hand maps at the image origin); counts its calls."""

    def __init__(self, pixels: torch.Tensor, depths: torch.Tensor) -> None:
        self.pixels = torch.cat([torch.zeros(6, 2), pixels])
        self.depth = torch.cat([torch.ones(6), depths])
        self.calls = 0

    def keypoints(self, latents, chunk_size=None, maps=None, with_depth=True):
        self.calls += 1
        rows = list(range(12)) if maps is None else list(maps)
        pixels = self.pixels[rows].expand(len(latents), -1, -1)
        return pixels, self.depth[rows].expand(len(latents), -1) if with_depth else None


def test_actions_keypoint_source_scores_the_keypoints_the_actions_lead_to():
    from dexwm_ros.core.actions import WRIST_AND_TIPS
    from dexwm_ros.core.kinematics import HOME_JOINT_POSITIONS, RobotKinematics, head_camera
    from dexwm_ros.core.planner import keypoint_actions

    kinematics, camera = RobotKinematics(), head_camera()
    home = torch.tensor(HOME_JOINT_POSITIONS)
    gen = torch.Generator().manual_seed(3)
    goal_joints = home + 0.2 * torch.randn(23, generator=gen)
    goal_points = kinematics.keypoints_camera(goal_joints, camera)[list(WRIST_AND_TIPS)].float()
    head = GoalPoseHead(camera.project(goal_points), goal_points[:, 2])
    weights = CostWeights(keypoint_weight=0.01, keypoint_depth_weight=2.0,
                          keypoint_source="actions", keypoint_steps="final")
    cost = WorldModelCost(FixedPredictor(), head, ENCODER, weights, camera=camera)
    observed = kinematics.keypoints_camera(home, camera).float()
    cost.set_context(torch.zeros(1, 1, 2), torch.zeros(0, 132), ENCODER, observed)
    cost.set_goal(torch.tensor([[0.0, 0.0]]), ENCODER)
    # three candidates of two steps; the last ends at the goal pose
    joints = home + 0.2 * torch.randn(3, 2, 23, generator=gen)
    joints[2, 1] = goal_joints
    actions = keypoint_actions(observed, kinematics.keypoints_camera(joints, camera).float())
    final = kinematics.keypoints_camera(joints[:, -1], camera)[:, list(WRIST_AND_TIPS)].float()
    pixel_distance = (camera.project(final) - camera.project(goal_points)).norm(dim=-1).mean(-1)
    depth_distance = (final[..., 2] - goal_points[:, 2]).abs().mean(-1)
    # the latent term of FixedPredictor against goal [0, 0] is 2.3 (see the case above)
    expected = 2.3 + 0.01 * pixel_distance + 2.0 * depth_distance
    torch.testing.assert_close(cost.costs(actions), expected, atol=1e-4, rtol=1e-4)
    assert cost.costs(actions)[2].item() == pytest.approx(2.3, abs=1e-4)
    assert head.calls == 1  # the goal only: no candidate is decoded
    # every step, weighted like the latent term (step_discount 0.6: 0.6 for the first of two)
    cost.weights = replace(weights, keypoint_steps="all")
    points = kinematics.keypoints_camera(joints, camera)[..., list(WRIST_AND_TIPS), :].float()
    per_step = (0.01 * (camera.project(points) - camera.project(goal_points)).norm(dim=-1)
                .mean(-1) + 2.0 * (points[..., 2] - goal_points[:, 2]).abs().mean(-1))
    torch.testing.assert_close(cost.costs(actions), 2.3 + 0.6 * per_step[:, 0] + per_step[:, 1],
                               atol=1e-4, rtol=1e-4)
    cost.weights = replace(weights, keypoint_source="latents")  # final step only
    cost.costs(actions)
    assert head.calls == 2  # keypoint_source "latents" decodes the predictions
    cost.weights = replace(cost.weights, keypoint_steps="all")
    cost.costs(actions)
    assert head.calls == 3
    with pytest.raises(ValueError, match="keypoint_steps"):
        CostWeights(keypoint_steps="first").validate()


def test_actions_keypoint_source_needs_hand_keypoints_and_right_hand_maps():
    weights = CostWeights(keypoint_source="actions")
    cost = WorldModelCost(FixedPredictor(), FixedHead(), ENCODER, weights)
    cost.set_context(torch.zeros(1, 1, 2), torch.zeros(0, 132), ENCODER)
    cost.set_goal(torch.tensor([[0.0, 0.0]]), ENCODER)
    with pytest.raises(RuntimeError, match="needs keypoint-delta actions"):
        cost.costs(torch.zeros(1, 2, 132))
    with pytest.raises(ValueError, match="right-hand maps"):
        CostWeights(keypoint_source="actions", keypoint_maps=(0, 6)).validate()
    with pytest.raises(ValueError, match="keypoint_source must be one of"):
        CostWeights(keypoint_source="fk").validate()
    with pytest.raises(ValueError, match=r"hand keypoints must have shape \(21, 3\)"):
        cost.set_context(torch.zeros(1, 1, 2), torch.zeros(0, 132), ENCODER, torch.zeros(20, 3))
    rigid = FixedPredictor()
    rigid.config = SimpleNamespace(num_patches=1, latent_dim=2, action_dim=57)
    with pytest.raises(ValueError, match="takes 57: set keypoint_source 'latents'"):
        WorldModelCost(rigid, FixedHead(), ENCODER, weights)
    WorldModelCost(rigid, FixedHead(), ENCODER, PAPER_SOURCE)  # the paper's term reads latents
