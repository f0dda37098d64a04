"""CEM planner tests on a synthetic world model whose optimum is known.

The synthetic world: a smooth toy FK maps 23 joints to 21 camera-frame keypoints; latents are a
fixed linear map of the keypoints; the predictor moves the keypoints by the action deltas. The
cost is therefore zero exactly when the final step's keypoints equal the goal's.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from dexwm_ros.core.actions import RIGHT_HAND_ROWS, allegro_to_hand21
from dexwm_ros.core.planner import (
    CEMConfig,
    CEMPlanner,
    IterationInfo,
    colored_noise,
    keypoint_actions,
)
from dexwm_ros.core.planning_cost import CostWeights, EncoderMismatchError, WorldModelCost

NUM_JOINTS = 23
LOWER = torch.tensor([-2.74, -1.78, -2.90, -3.04, -2.81, 0.54, -3.02] + [-0.3] * 16)
UPPER = torch.tensor([2.74, 1.78, 2.90, -0.15, 2.81, 4.52, 3.02] + [1.5] * 16)
HOME = torch.tensor([0.0, -0.4, 0.0, -2.2, 0.0, 1.9, 0.8] + [0.3] * 16)
ENCODER = "synthetic-linear"

_gen = torch.Generator().manual_seed(1234)
_ARM_SIN = torch.randn(3, 7, generator=_gen) * 0.15
_ARM_COS = torch.randn(3, 7, generator=_gen) * 0.15
_FINGER_BASE = torch.tensor([[-0.03, 0.0, 0.02], [-0.01, 0.0, 0.08], [0.01, 0.0, 0.08],
                             [0.03, 0.0, 0.08]])


def toy_keypoints(joints: torch.Tensor) -> torch.Tensor:
    """Smooth nonlinear toy FK: joints (..., 23) -> right-hand keypoints (..., 21, 3)."""
    arm, hand = joints[..., :7], joints[..., 7:]
    wrist = torch.tensor([0.0, 0.1, 0.6]) + arm.sin() @ _ARM_SIN.T + arm.cos() @ _ARM_COS.T
    flex = hand.unflatten(-1, (4, 4)).cumsum(-1)
    segments = 0.03 * torch.stack([0.3 * flex.sin(), flex.sin(), flex.cos()], dim=-1)
    fingers = wrist[..., None, None, :] + _FINGER_BASE[:, None, :] + segments.cumsum(-2)
    return allegro_to_hand21(wrist, fingers)


class LinearWorldPredictor:
    """Latents = fixed linear map of the right-hand keypoints; actions move the keypoints."""

    def __init__(self, num_patches: int = 4, latent_dim: int = 32) -> None:
        gen = torch.Generator().manual_seed(7)
        self.config = SimpleNamespace(num_patches=num_patches, latent_dim=latent_dim)
        self.map = torch.randn(63, num_patches * latent_dim, generator=gen)
        self.unmap = torch.linalg.pinv(self.map)
        self.calls = 0

    def encode(self, keypoints: torch.Tensor) -> torch.Tensor:
        latents = keypoints.flatten(-2) @ self.map
        return latents.unflatten(-1, (self.config.num_patches, self.config.latent_dim))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        flat = latents.flatten(-2) @ self.unmap
        return flat.unflatten(-1, (21, 3))

    def score_candidates(self, context_latents, context_actions, candidate_actions,
                         chunk_size=None):
        self.calls += 1
        start = self.decode(context_latents[-1])
        deltas = candidate_actions.unflatten(-1, (44, 3))[..., RIGHT_HAND_ROWS, :]
        return self.encode(start + deltas.cumsum(dim=-3))


class ProjectingKeypointHead:
    """Decodes the keypoints and projects wrist + tips with a pinhole (maps 6-11, left zero)."""

    def __init__(self, predictor: LinearWorldPredictor) -> None:
        self.predictor = predictor

    def keypoints(self, latents, chunk_size=None, maps=None, with_depth=True):
        points = self.predictor.decode(latents)[..., [0, 4, 8, 12, 16, 20], :]
        pixels = 300.0 * points[..., :2] / points[..., 2:] + torch.tensor([196.0, 112.0])
        pixels = torch.cat([torch.zeros_like(pixels), pixels], dim=-2)
        return (pixels if maps is None else pixels[:, list(maps)]), None


def make_problem(goal_offset: torch.Tensor, current: torch.Tensor = HOME):
    """WorldModelCost (the paper's terms) with context at ``current`` and the goal at
    ``current + goal_offset``."""
    predictor = LinearWorldPredictor()
    cost = WorldModelCost(predictor, ProjectingKeypointHead(predictor), ENCODER,
                          CostWeights(keypoint_source="latents", keypoint_steps="final"))
    goal_joints = torch.clamp(current + goal_offset, LOWER, UPPER)
    cost.set_goal(predictor.encode(toy_keypoints(goal_joints)), ENCODER)
    set_state(cost, current)
    return cost, toy_keypoints(goal_joints)


def set_state(cost: WorldModelCost, joints: torch.Tensor) -> None:
    cost.set_context(cost.predictor.encode(toy_keypoints(joints))[None], torch.zeros(0, 132),
                     ENCODER)


def goal_offset(seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.cat([0.25 * torch.randn(7, generator=gen), 0.1 * torch.randn(16, generator=gen)])


def evaluator(cost: WorldModelCost):
    return lambda actions, joints: cost.costs(actions)


def final_keypoint_error(joints: torch.Tensor, goal_keypoints: torch.Tensor) -> float:
    return (toy_keypoints(joints[-1]) - goal_keypoints).norm(dim=-1).mean().item()


def test_cem_reaches_goal_with_receding_horizon():
    cost, goal_keypoints = make_problem(goal_offset(0))
    planner = CEMPlanner(CEMConfig(seed=0), toy_keypoints, LOWER, UPPER)
    joints = HOME.clone()
    start_error = final_keypoint_error(joints[None], goal_keypoints)
    for _ in range(4):
        set_state(cost, joints)
        result = planner.plan(joints, toy_keypoints(joints), evaluator(cost))
        joints = result.joints[0]
    assert start_error > 0.05
    # The final planned step lands within 1 cm (mean over the 21 keypoints) of the goal.
    assert final_keypoint_error(result.joints, goal_keypoints) < 0.01
    assert result.evaluations == 512 * 10 and result.iterations_run == 10
    assert result.mpc_step == 3


def evaluations_to_reach(sampler: str, seed: int, threshold: float) -> int:
    cost, _ = make_problem(goal_offset(100 + seed))
    config = CEMConfig(sampler=sampler, iterations=40, seed=seed)
    planner = CEMPlanner(config, toy_keypoints, LOWER, UPPER)
    reached = []

    def stop_when_reached(info: IterationInfo) -> bool:
        if info.best_cost < threshold:
            reached.append(info.evaluations)
            return False
        return True

    result = planner.plan(HOME, toy_keypoints(HOME), evaluator(cost), stop_when_reached)
    assert reached, f"{sampler} seed {seed} did not reach cost {threshold} (best {result.cost})"
    return reached[0]


def test_icem_reaches_goal_with_fewer_evaluations():
    threshold = 0.02
    cem = [evaluations_to_reach("cem", seed, threshold) for seed in range(3)]
    icem = [evaluations_to_reach("icem", seed, threshold) for seed in range(3)]
    assert sum(icem) < sum(cem), (cem, icem)


@pytest.mark.parametrize("sampler", ["cem", "icem"])
def test_samples_and_plan_stay_within_limits(sampler):
    current = UPPER.clone()
    current[3] = LOWER[3]  # at the limits: half of every wide sample falls outside
    cost, _ = make_problem(torch.full((23,), 0.5), current)
    config = CEMConfig(sampler=sampler, num_samples=64, iterations=3, arm_sigma=2.0,
                       hand_sigma=1.0, seed=0)
    planner = CEMPlanner(config, toy_keypoints, LOWER, UPPER)
    seen = []

    def checked(actions, joints):
        seen.append(joints)
        return cost.costs(actions)

    result = planner.plan(current, toy_keypoints(current), checked)
    joints = torch.cat([j.flatten(0, 1) for j in seen])
    assert (joints >= LOWER).all() and (joints <= UPPER).all()
    assert (result.joints >= LOWER).all() and (result.joints <= UPPER).all()
    # Some samples sit on the bounds (clipped rather than rejected).
    assert (joints == UPPER).any()


def test_actions_are_fk_keypoint_deltas_from_observed():
    cost, _ = make_problem(goal_offset(1))
    planner = CEMPlanner(CEMConfig(num_samples=32, iterations=2, seed=0), toy_keypoints,
                         LOWER, UPPER)
    observed = toy_keypoints(HOME)
    result = planner.plan(HOME, observed, evaluator(cost))
    keypoints = toy_keypoints(result.joints)
    expected = torch.stack([keypoints[0] - observed, keypoints[1] - keypoints[0],
                            keypoints[2] - keypoints[1]])
    rows = result.actions.unflatten(-1, (44, 3))
    torch.testing.assert_close(rows[:, RIGHT_HAND_ROWS], expected)
    assert rows[:, :21].abs().sum() == 0 and rows[:, 42:].abs().sum() == 0
    torch.testing.assert_close(result.actions, keypoint_actions(observed, keypoints))
    # The reported cost is the cost of the returned sequence.
    assert math.isclose(result.cost, cost.costs(result.actions[None]).item(), rel_tol=1e-5)


def test_cancel_stops_after_the_iteration_that_returned_false():
    cost, _ = make_problem(goal_offset(2))
    planner = CEMPlanner(CEMConfig(num_samples=32, seed=0), toy_keypoints, LOWER, UPPER)
    infos: list[IterationInfo] = []

    def hook(info):
        infos.append(info)
        return info.iteration < 2

    result = planner.plan(HOME, toy_keypoints(HOME), evaluator(cost), hook)
    assert result.cancelled and result.iterations_run == 3
    assert cost.predictor.calls == 3 and result.evaluations == 3 * 32
    assert [i.iteration for i in infos] == [0, 1, 2]
    assert all(a.best_cost >= b.best_cost for a, b in zip(infos, infos[1:], strict=False))
    assert all(i.elite_mean_cost >= i.best_cost and i.elapsed_s >= 0 for i in infos)
    assert math.isclose(result.cost, infos[-1].best_cost)


def test_cancel_requested_from_elsewhere_takes_effect_within_one_iteration():
    cost, _ = make_problem(goal_offset(3))
    planner = CEMPlanner(CEMConfig(num_samples=32, seed=0), toy_keypoints, LOWER, UPPER)
    cancel = {"requested": False}

    def evaluate(actions, joints):  # e.g. a ROS cancel request arriving while scoring
        if cost.predictor.calls == 4:
            cancel["requested"] = True
        return cost.costs(actions)

    result = planner.plan(HOME, toy_keypoints(HOME), evaluate,
                          lambda info: not cancel["requested"])
    assert result.cancelled and result.iterations_run == 5 and cost.predictor.calls == 5


@pytest.mark.parametrize("sampler", ["cem", "icem"])
def test_same_seed_same_plan(sampler):
    def run(planner):
        cost, _ = make_problem(goal_offset(4))
        first = planner.plan(HOME, toy_keypoints(HOME), evaluator(cost))
        set_state(cost, first.joints[0])
        second = planner.plan(first.joints[0], toy_keypoints(first.joints[0]), evaluator(cost))
        return torch.cat([first.joints, second.joints])

    config = CEMConfig(sampler=sampler, num_samples=64, iterations=3, seed=11)
    planner = CEMPlanner(config, toy_keypoints, LOWER, UPPER)
    plan = run(planner)
    torch.testing.assert_close(run(CEMPlanner(config, toy_keypoints, LOWER, UPPER)), plan,
                               rtol=0, atol=0)
    planner.reset()
    torch.testing.assert_close(run(planner), plan, rtol=0, atol=0)
    other = CEMPlanner(CEMConfig(sampler=sampler, num_samples=64, iterations=3, seed=12),
                       toy_keypoints, LOWER, UPPER)
    assert not torch.equal(run(other), plan)


def test_warm_start_shifts_previous_best_and_reset_drops_it():
    cost, _ = make_problem(goal_offset(5))
    planner = CEMPlanner(CEMConfig(num_samples=32, iterations=2, seed=0), toy_keypoints,
                         LOWER, UPPER)
    first = planner.plan(HOME, toy_keypoints(HOME), evaluator(cost))
    shifted = torch.cat([first.joints[1:], first.joints[-1:]])
    batches = []

    def recording(actions, joints):
        batches.append(joints)
        return cost.costs(actions)

    planner.plan(first.joints[0], toy_keypoints(first.joints[0]), recording)
    assert (batches[0] == shifted).all(dim=(1, 2)).any()
    planner.reset()
    batches.clear()
    planner.plan(first.joints[0], toy_keypoints(first.joints[0]), recording)
    assert not (batches[0] == shifted).all(dim=(1, 2)).any()


def test_warm_start_shifts_the_mean():
    cost, _ = make_problem(goal_offset(5))
    config = CEMConfig(num_samples=64, iterations=1, arm_sigma=1e-4, hand_sigma=1e-4, seed=0)
    planner = CEMPlanner(config, toy_keypoints, LOWER, UPPER)
    steps = torch.stack([HOME + 0.1 * k for k in range(1, 4)])
    first = planner.plan(HOME, toy_keypoints(HOME), evaluator(cost), initial_mean=steps)
    torch.testing.assert_close(first.mean, steps, atol=1e-3, rtol=0)
    batches = []

    def recording(actions, joints):
        batches.append(joints)
        return cost.costs(actions)

    planner.plan(steps[0], toy_keypoints(steps[0]), recording)
    expected = torch.stack([steps[1], steps[2], steps[2]])
    torch.testing.assert_close(batches[0].mean(0), expected, atol=1e-3, rtol=0)


def plan_seeing_last_iteration(config: CEMConfig):
    """One plan from HOME; returns it with the last iteration's candidates and costs."""
    cost, _ = make_problem(goal_offset(10))
    seen = {}

    def recording(actions, joints):
        seen["joints"], seen["costs"] = joints, cost.costs(actions)
        return seen["costs"]

    result = CEMPlanner(config, toy_keypoints, LOWER, UPPER).plan(HOME, toy_keypoints(HOME),
                                                                   recording)
    return result, seen["joints"], seen["costs"]


@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_elite_update_with_momentum(momentum):
    config = CEMConfig(num_samples=64, num_elites=5, iterations=1, momentum=momentum, seed=0)
    result, joints, costs = plan_seeing_last_iteration(config)
    elites = joints[costs.argsort()[:5]]
    torch.testing.assert_close(result.mean, momentum * HOME + (1 - momentum) * elites.mean(0))
    torch.testing.assert_close(result.joints, elites[0])


def test_execute_mean_returns_the_final_elite_mean():
    config = CEMConfig(num_samples=64, num_elites=5, iterations=2, seed=0, execute="mean")
    result, joints, costs = plan_seeing_last_iteration(config)
    order = costs.argsort()[:5]
    torch.testing.assert_close(result.joints, joints[order].mean(0))
    torch.testing.assert_close(result.joints, result.mean)
    assert math.isclose(result.cost, costs[order].mean().item(), rel_tol=1e-6)
    torch.testing.assert_close(result.actions,
                               keypoint_actions(toy_keypoints(HOME), toy_keypoints(result.joints)))


def test_initial_mean_overrides_the_start():
    cost, _ = make_problem(goal_offset(6))
    planner = CEMPlanner(CEMConfig(num_samples=256, iterations=1, arm_sigma=1e-3,
                                   hand_sigma=1e-3, seed=0), toy_keypoints, LOWER, UPPER)
    mean = torch.stack([HOME + 0.1 * k for k in range(1, 4)])
    result = planner.plan(HOME, toy_keypoints(HOME), evaluator(cost), initial_mean=mean)
    assert (result.joints - mean).abs().max() < 0.01


def test_extra_cost_is_added():
    cost, _ = make_problem(goal_offset(7))
    base = CEMPlanner(CEMConfig(num_samples=32, iterations=1, seed=0), toy_keypoints,
                      LOWER, UPPER)
    plus = CEMPlanner(CEMConfig(num_samples=32, iterations=1, seed=0), toy_keypoints,
                      LOWER, UPPER, extra_cost=lambda joints: torch.full((len(joints),), 2.5))
    a = base.plan(HOME, toy_keypoints(HOME), evaluator(cost))
    b = plus.plan(HOME, toy_keypoints(HOME), evaluator(cost))
    assert math.isclose(b.cost, a.cost + 2.5, rel_tol=1e-6)


def test_place_config_and_config_errors():
    assert CEMConfig.for_task("place").hand_sigma == 0.01
    assert CEMConfig.for_task("grasp", num_samples=64).num_samples == 64
    with pytest.raises(ValueError, match="unknown task"):
        CEMConfig.for_task("juggle")
    bad = [dict(horizon=0), dict(num_elites=600), dict(arm_sigma=-1.0), dict(momentum=1.0),
           dict(sampler="mppi"), dict(execute="median"), dict(elite_fraction_kept=1.5),
           dict(population_decay=0.5),
           dict(noise_beta=float("nan")), dict(seed="x")]
    for fields in bad:
        with pytest.raises(ValueError, match=f"CEMConfig.{next(iter(fields))}"):
            CEMConfig(**fields).validate()


def test_colored_noise_is_unit_variance_and_correlated_in_time():
    noise = colored_noise(2.0, 20000, 3, 2, torch.Generator().manual_seed(0))
    assert noise.shape == (20000, 3, 2)
    torch.testing.assert_close(noise.std(0), torch.ones(3, 2), atol=0.03, rtol=0)
    correlation = (noise[:, 0] * noise[:, 1]).mean()
    assert correlation > 0.5
    white = colored_noise(0.0, 20000, 3, 2, torch.Generator().manual_seed(0))
    assert (white[:, 0] * white[:, 1]).mean().abs() < 0.05


def test_bad_planner_inputs_raise_before_any_search():
    cost, _ = make_problem(goal_offset(8))
    planner = CEMPlanner(CEMConfig(num_samples=16, iterations=1), toy_keypoints, LOWER, UPPER)
    evaluate = evaluator(cost)
    observed = toy_keypoints(HOME)
    nan_joints = HOME.clone()
    nan_joints[3] = float("nan")
    nan_keypoints = observed.clone()
    nan_keypoints[5, 1] = float("nan")
    cases = [
        ((nan_joints, observed), "current_joints contains NaN"),
        ((HOME[:22], observed), r"current_joints must have shape \(23,\)"),
        ((HOME, nan_keypoints), "observed_keypoints contains NaN"),
        ((HOME, observed[:20]), r"observed_keypoints must have shape \(21, 3\)"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            planner.plan(*args, evaluate)
    with pytest.raises(ValueError, match="initial_mean"):
        planner.plan(HOME, observed, evaluate, initial_mean=HOME[None])
    assert cost.predictor.calls == 0
    with pytest.raises(ValueError, match="NaN costs"):
        planner.plan(HOME, observed, lambda a, j: torch.full((len(a),), float("nan")))
    with pytest.raises(ValueError, match=r"cost function returned shape \(3,\)"):
        planner.plan(HOME, observed, lambda a, j: torch.zeros(3))
    with pytest.raises(ValueError, match="keypoint_fn returned shape"):
        CEMPlanner(CEMConfig(num_samples=16), lambda q: q[..., :3], LOWER, UPPER).plan(
            HOME, observed, evaluate)
    with pytest.raises(ValueError, match="lower > upper"):
        CEMPlanner(CEMConfig(), toy_keypoints, UPPER, LOWER)


def test_bad_world_model_inputs_raise_before_any_search():
    cost, _ = make_problem(goal_offset(9))
    predictor = cost.predictor
    latents = predictor.encode(toy_keypoints(HOME))
    with pytest.raises(EncoderMismatchError, match="encoder 'dinov3'"):
        cost.set_goal(latents, "dinov3")
    with pytest.raises(EncoderMismatchError, match="predictor expects"):
        cost.set_goal(torch.zeros(4, 48), ENCODER)  # another encoder's width
    nan_latents = latents.clone()
    nan_latents[0, 0] = float("nan")
    with pytest.raises(ValueError, match="goal latents contains NaN"):
        cost.set_goal(nan_latents, ENCODER)
    with pytest.raises(ValueError, match="context latents contains NaN"):
        cost.set_context(nan_latents[None], torch.zeros(0, 132), ENCODER)
    with pytest.raises(ValueError, match=r"context actions must have shape \(1, 132\)"):
        cost.set_context(torch.stack([latents, latents]), torch.zeros(2, 132), ENCODER)
    fresh = WorldModelCost(predictor, None, ENCODER)
    fresh.set_context(latents[None], torch.zeros(0, 132), ENCODER)
    with pytest.raises(RuntimeError, match="set_goal must be called"):
        fresh.costs(torch.zeros(2, 3, 132))
    assert predictor.calls == 0


def test_one_real_planning_step_with_tiny_world_model():
    from dexwm_ros.core.kinematics import RobotKinematics, head_camera
    from dexwm_ros.core.planning_cost import OrientationCost
    from dexwm_ros.core.world_model import build_tiny_world_model

    world_model = build_tiny_world_model(seed=0)
    kinematics, camera = RobotKinematics(), head_camera()
    config = world_model.predictor.config
    weights = CostWeights.for_task("grasp", keypoint_source="latents")
    cost = WorldModelCost(world_model.predictor, world_model.keypoint_head,
                          world_model.encoder_name, weights)
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(3, config.num_patches, config.latent_dim, generator=gen)
    cost.set_context(latents[:2], torch.zeros(1, 132), world_model.encoder_name)
    cost.set_goal(latents[2], world_model.encoder_name)
    with pytest.raises(EncoderMismatchError):
        cost.set_goal(latents[2], world_model.encoder_name + "-other")

    home = kinematics.clip(HOME)
    orientation = OrientationCost(kinematics.wrist_pose_world,
                                  kinematics.wrist_pose_world(home)[:3, :3], weights)
    planner = CEMPlanner(
        CEMConfig.for_task("grasp", num_samples=16, num_elites=4, iterations=2, seed=0),
        lambda q: kinematics.keypoints_camera(q, camera), kinematics.lower, kinematics.upper,
        extra_cost=orientation,
    )
    observed = kinematics.keypoints_camera(home, camera)
    result = planner.plan(home, observed, lambda actions, joints: cost.costs(actions))

    assert result.joints.shape == (3, 23) and result.actions.shape == (3, 132)
    assert result.evaluations == 32 and math.isfinite(result.cost)
    assert (result.joints >= kinematics.lower).all() and (result.joints <= kinematics.upper).all()
    expected = cost.costs(result.actions[None]) + orientation(result.joints[None])
    assert math.isclose(result.cost, expected.item(), rel_tol=1e-4, abs_tol=1e-6)
    predicted, keypoints = cost.rollout(result.actions)
    assert predicted.shape == (3, config.num_patches, config.latent_dim)
    assert keypoints is None or keypoints.shape == (3, 12, 2)
