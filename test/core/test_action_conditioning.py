"""Rigid-body actions (DexAC section 4.3) and structured action conditioning (section 4.4)."""
import json
import math

import pytest
import torch

from dexwm_ros.core.actions import (
    ACTION_DIM,
    IDENTITY_ROTATION_6D,
    RIGID_ACTION_DIM,
    RIGID_ACTION_GROUPS,
    RIGID_CAMERA,
    RIGID_LEFT_FINGERS,
    RIGID_LEFT_WRIST,
    RIGID_RIGHT_FINGERS,
    RIGID_RIGHT_WRIST,
    ActionNormalizer,
    build_rigid_actions,
    finger_joint_angles,
    hand_action,
    hand_frames,
    robot_hand_actions,
    rotation_from_6d,
    rotation_to_6d,
)
from dexwm_ros.core.checkpoint import CheckpointError
from dexwm_ros.core.planner import CEMConfig, CEMPlanner
from dexwm_ros.core.planning_cost import CostWeights, WorldModelCost
from dexwm_ros.core.predictor import CDiTPredictor, PredictorConfig
from dexwm_ros.core.world_model import WorldModel, build_tiny_world_model

P, DL = 20, 48
DEXAC = {"action_tokenizer": True, "local_refinement": True, "global_modulation": True,
         "action_token_dim": 16, "action_window": 3}
SWITCHES = {
    "adaln": {},
    "local": {"action_tokenizer": True, "local_refinement": True, "action_window": 2},
    "global": {"action_tokenizer": True, "global_modulation": True, "action_window": 2},
    "dexac": DEXAC,
}


def random_rotation(generator=None) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    return q if torch.det(q) > 0 else -q


def rigid(rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    pose = torch.eye(4, dtype=rotation.dtype)
    pose[:3, :3], pose[:3, 3] = rotation, translation
    return pose


def transform(pose: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    return points @ pose[:3, :3].T + pose[:3, 3]


def hand_keypoints(bend: float = 0.3) -> torch.Tensor:
    """A plausible right hand (21, 3): palm in the x-y plane, fingers along +x, each joint of
    every finger bent by ``bend`` rad about the y axis."""
    points = [torch.zeros(3, dtype=torch.float64)]
    for finger, offset in enumerate((-0.04, -0.02, 0.0, 0.02, 0.04)):
        position = torch.tensor([0.08, offset, 0.0], dtype=torch.float64)
        if finger == 0:
            position = torch.tensor([0.03, -0.05, 0.0], dtype=torch.float64)
        direction = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
        points.append(position.clone())
        for _ in range(3):
            c, s = math.cos(bend), math.sin(bend)
            direction = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]],
                                     dtype=torch.float64) @ direction
            position = position + 0.025 * direction
            points.append(position.clone())
    return torch.stack(points)


def make_model(seed=0, **options) -> CDiTPredictor:
    torch.manual_seed(seed)
    model = CDiTPredictor(PredictorConfig.from_preset("tiny", latent_dim=DL, num_patches=P,
                                                      **options))
    for layer in model.zero_initialized_layers():
        torch.nn.init.normal_(layer.weight, std=0.05)
    return model.eval()


# ---------------------------------------------------------------------------- representation
def test_rotation_6d_round_trip_and_identity():
    for seed in range(5):
        rotation = random_rotation(torch.Generator().manual_seed(seed))
        torch.testing.assert_close(rotation_from_6d(rotation_to_6d(rotation)), rotation)
    assert rotation_to_6d(torch.eye(3)).tolist() == list(IDENTITY_ROTATION_6D)


def test_finger_angles_of_a_bent_hand():
    angles = finger_joint_angles(hand_keypoints(0.3)).view(5, 3)
    torch.testing.assert_close(angles[:, 1:], torch.full((5, 2), 0.3, dtype=torch.float64))
    torch.testing.assert_close(angles[2, 0], torch.tensor(0.3, dtype=torch.float64))  # middle
    assert finger_joint_angles(hand_keypoints(0.0)).view(5, 3)[:, 1:].abs().max() < 1e-12
    assert finger_joint_angles(torch.zeros(21, 3)).abs().max() == 0


def test_wrist_motion_is_the_relative_rigid_transform_and_ignores_the_camera():
    generator = torch.Generator().manual_seed(1)
    hand = transform(rigid(random_rotation(generator), torch.randn(3, generator=generator,
                                                                   dtype=torch.float64)),
                     hand_keypoints())
    motion = rigid(random_rotation(generator), torch.tensor([0.05, -0.02, 0.01],
                                                            dtype=torch.float64))
    keypoints = torch.zeros(2, 42, 3, dtype=torch.float64)
    keypoints[0, 21:], keypoints[1, 21:] = hand, transform(motion, hand)
    static = torch.eye(4, dtype=torch.float64).expand(2, 4, 4)
    actions = build_rigid_actions(keypoints, static, hands=(False, True))
    assert actions.shape == (1, RIGID_ACTION_DIM) == (1, 57)
    frame = hand_frames(hand)
    expected = torch.linalg.inv(frame) @ motion @ frame  # the motion in the wrist's frame
    wrist = actions[0, RIGID_RIGHT_WRIST]
    torch.testing.assert_close(wrist[:3], expected[:3, 3])
    torch.testing.assert_close(rotation_from_6d(wrist[3:]), expected[:3, :3])
    assert actions[0, RIGID_RIGHT_FINGERS].abs().max() < 1e-9  # rigid motion: no articulation
    assert actions[0, RIGID_LEFT_WRIST].abs().max() == 0  # absent hand
    assert actions[0, RIGID_LEFT_FINGERS].abs().max() == 0
    torch.testing.assert_close(actions[0, RIGID_CAMERA],
                               torch.tensor((0, 0, 0) + IDENTITY_ROTATION_6D, dtype=torch.float64))
    moving = torch.stack([torch.eye(4, dtype=torch.float64), motion.inverse()])
    moved = build_rigid_actions(keypoints, moving, hands=(False, True))
    torch.testing.assert_close(moved[:, :48], actions[:, :48])  # hand part independent of view
    torch.testing.assert_close(rotation_from_6d(moved[0, RIGID_CAMERA][3:]),
                               motion.inverse()[:3, :3])


def test_finger_displacements_and_groups():
    keypoints = torch.zeros(3, 42, 3, dtype=torch.float64)
    for step, bend in enumerate((0.1, 0.3, 0.2)):
        keypoints[step, :21] = hand_keypoints(bend)
        keypoints[step, 21:] = hand_keypoints(0.0)
    actions = build_rigid_actions(keypoints, torch.eye(4, dtype=torch.float64).expand(3, 4, 4))
    torch.testing.assert_close(actions[:, RIGID_LEFT_FINGERS].view(2, 5, 3)[:, :, 1:],
                               torch.tensor([0.2, -0.1], dtype=torch.float64)[:, None, None]
                               .expand(2, 5, 2))
    assert actions[:, RIGID_RIGHT_FINGERS].abs().max() < 1e-12
    dims = sorted(d for group in RIGID_ACTION_GROUPS.values() for d in group)
    assert dims == list(range(RIGID_ACTION_DIM))
    with pytest.raises(ValueError, match="share leading dims"):
        build_rigid_actions(keypoints, torch.eye(4).expand(2, 4, 4))


def test_robot_hand_actions_match_dataset_actions():
    generator = torch.Generator().manual_seed(3)
    observed = hand_keypoints(0.2).float()
    steps = torch.stack([transform(rigid(random_rotation(generator), 0.02 * torch.randn(
        3, generator=generator, dtype=torch.float64)), hand_keypoints(0.2 + 0.1 * t)).float()
        for t in range(3)])
    keypoints = torch.zeros(4, 42, 3)
    keypoints[0, 21:], keypoints[1:, 21:] = observed, steps
    dataset = build_rigid_actions(keypoints, torch.eye(4).expand(4, 4, 4), hands=(False, True))
    planner = robot_hand_actions("rigid_body", observed, steps[None])
    torch.testing.assert_close(planner[0], dataset, atol=1e-5, rtol=1e-5)
    delta = robot_hand_actions("keypoint_delta", observed, steps[None])
    torch.testing.assert_close(delta[0, 1], hand_action(steps[0], steps[1]))
    assert delta.shape == (1, 3, ACTION_DIM)
    with pytest.raises(ValueError, match="unknown action representation"):
        robot_hand_actions("euler", observed, steps[None])


# ---------------------------------------------------------------------------- predictor
@pytest.mark.parametrize("name", sorted(SWITCHES))
def test_shapes_and_gradients_for_every_switch(name):
    model = make_model(action_representation="rigid_body", **SWITCHES[name]).train()
    latents, actions = torch.randn(2, 5, P, DL), torch.randn(2, 5, 57)
    out = model(latents, actions)
    assert out.shape == (2, 5, P, DL)
    out.square().mean().backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, param_name
    names = {n.split(".")[0] for n, _ in model.named_parameters()}
    has_tokens = bool(SWITCHES[name])
    assert ("conditioner" in names) == has_tokens
    assert any(".local." in n for n, _ in model.named_parameters()) == (name in ("local",
                                                                                "dexac"))
    adaln_in = model.blocks[0].ada[1].in_features
    assert adaln_in == (16 if name == "dexac" else 64 if name == "global" else 57)


@pytest.mark.parametrize("name", ["local", "global"])
def test_each_branch_alone_carries_the_actions(name):
    """With the adaLN path cut off from the actions (local) or the local path absent (global),
    outputs still depend on the actions through the switched-on branch."""
    model = make_model(**SWITCHES[name])
    if name == "local":
        for layer in [b.ada[1] for b in model.blocks] + [model.final.ada[1]]:
            torch.nn.init.zeros_(layer.weight)  # adaLN sees no action at all
            torch.nn.init.normal_(layer.bias, std=0.05)
    latents = torch.randn(1, 3, P, DL)
    a, b = torch.randn(1, 3, ACTION_DIM), torch.randn(1, 3, ACTION_DIM)
    assert (model(latents, a) - model(latents, b)).abs().max() > 1e-4


def test_fresh_dexac_predictor_outputs_zeros():
    model = CDiTPredictor(PredictorConfig.from_preset("tiny", latent_dim=64, num_patches=P,
                                                      **DEXAC))
    assert torch.count_nonzero(model(torch.randn(1, 3, P, 64), torch.randn(1, 3, 132))) == 0


def test_block_causality_with_dexac():
    model = make_model(**DEXAC)
    latents, actions = torch.randn(1, 6, P, DL), torch.randn(1, 6, ACTION_DIM)
    base = model(latents, actions)
    for frame in range(6):
        changed = latents.clone()
        changed[:, frame] += 1.0
        out = model(changed, actions)
        torch.testing.assert_close(out[:, :frame], base[:, :frame], rtol=0, atol=1e-6)
        assert (out[:, frame:] - base[:, frame:]).abs().amax(dim=(0, 2, 3)).min() > 1e-4
        changed = actions.clone()
        changed[:, frame] += 1.0
        out = model(latents, changed)
        torch.testing.assert_close(out[:, :frame], base[:, :frame], rtol=0, atol=1e-6)
        # the tokenizer window (3) carries an action into the next slots directly
        assert (out[:, frame:frame + 3] - base[:, frame:frame + 3]).abs().amax(
            dim=(0, 2, 3)).min() > 1e-4


@pytest.mark.parametrize("name", sorted(SWITCHES))
@pytest.mark.parametrize("num_ctx,horizon,chunk", [(4, 3, None), (4, 3, 2), (1, 4, 5),
                                                   (9, 1, 4), (8, 3, 2)])
def test_score_candidates_equals_rollout_for_every_switch(name, num_ctx, horizon, chunk):
    model = make_model(**SWITCHES[name])
    model.set_action_normalization(torch.randn(132) * 0.1, torch.rand(132) + 0.5)
    ctx, ctx_act = torch.randn(num_ctx, P, DL), torch.randn(num_ctx - 1, 132)
    cand = torch.randn(5, horizon, 132)
    with torch.inference_mode():
        fast = model.score_candidates(ctx, ctx_act, cand, chunk_size=chunk)
        plain = model.rollout(ctx.expand(5, -1, -1, -1), ctx_act.expand(5, -1, -1), cand)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)


def test_normalization_round_trip_with_dexac():
    actions = torch.randn(64, 57, dtype=torch.float64) * torch.logspace(-4, 0, 57)
    normalizer = ActionNormalizer.from_actions(actions, min_std=1e-6)
    normalized = (actions - normalizer.mean.double()) / normalizer.std.double()
    torch.testing.assert_close(normalized.mean(0), torch.zeros(57, dtype=torch.float64),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(normalized.std(0, unbiased=False),
                               torch.ones(57, dtype=torch.float64), atol=1e-4, rtol=0)
    torch.testing.assert_close(normalized * normalizer.std.double() + normalizer.mean.double(),
                               actions)
    model = make_model(action_representation="rigid_body", **DEXAC)
    latents, raw = torch.randn(1, 3, P, DL), actions[:3].float()[None]
    plain = model(latents, (raw - normalizer.mean) / normalizer.std)
    model.set_action_normalization(normalizer.mean, normalizer.std)
    torch.testing.assert_close(model(latents, raw), plain)


def test_config_validation():
    with pytest.raises(ValueError, match="need action_tokenizer"):
        PredictorConfig.from_preset("tiny", local_refinement=True)
    with pytest.raises(ValueError, match="needs local_refinement or global_modulation"):
        PredictorConfig.from_preset("tiny", action_tokenizer=True)
    with pytest.raises(ValueError, match="action_representation"):
        PredictorConfig.from_preset("tiny", action_representation="euler")
    with pytest.raises(ValueError, match="does not match"):
        PredictorConfig.from_preset("tiny", action_representation="rigid_body", action_dim=132)
    with pytest.raises(ValueError, match="divisible by action_token_heads"):
        PredictorConfig.from_preset("tiny", **{**DEXAC, "action_token_dim": 10})
    with pytest.raises(ValueError, match="action_window"):
        PredictorConfig.from_preset("tiny", **{**DEXAC, "action_window": 0})
    assert PredictorConfig.from_preset("tiny", action_representation="rigid_body").action_dim == 57
    legacy = PredictorConfig.from_preset("tiny").to_dict()
    for key in ("action_representation", "action_tokenizer", "local_refinement",
                "global_modulation", "action_token_dim", "action_window", "action_token_heads"):
        del legacy[key]  # a checkpoint written before these options
    assert PredictorConfig.from_dict(legacy) == PredictorConfig.from_preset("tiny")


def test_checkpoint_with_options_reloads_to_identical_outputs(tmp_path):
    model = build_tiny_world_model(seed=2, action_representation="rigid_body", **DEXAC)
    mean, std = torch.randn(57) * 0.1, torch.rand(57) + 0.5
    model.predictor.set_action_normalization(mean, std)
    model.save(tmp_path / "wm")
    loaded = WorldModel.load(tmp_path / "wm")
    assert loaded.action_representation == "rigid_body"
    assert loaded.predictor.config == model.predictor.config
    recorded = json.loads((tmp_path / "wm" / "config.json").read_text())["predictor"]
    assert {k: recorded[k] for k in DEXAC} == DEXAC
    latents, actions = torch.randn(2, 4, 448, 64), torch.randn(2, 4, 57)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.predictor(latents, actions),
                                   model.predictor(latents, actions), rtol=0, atol=0)
    config = json.loads((tmp_path / "wm" / "config.json").read_text())
    config["predictor"]["global_modulation"] = False  # weights no longer fit the config
    (tmp_path / "wm" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError):
        WorldModel.load(tmp_path / "wm")


# ---------------------------------------------------------------------------- planner
def _planner_keypoints(joints: torch.Tensor) -> torch.Tensor:
    """Deterministic stand-in for batched FK: joints (..., 23) move, turn and bend a hand."""
    hand = hand_keypoints(0.2).float()
    angle = joints[..., 3] * 0.3
    c, s, zeros, ones = angle.cos(), angle.sin(), torch.zeros_like(angle), torch.ones_like(angle)
    rot = torch.stack([c, -s, zeros, s, c, zeros, zeros, zeros, ones], -1).unflatten(-1, (3, 3))
    tips = torch.zeros(21, 1)
    tips[[4, 8, 12, 16, 20]] = 1.0
    bent = hand + tips * joints[..., 7, None, None] * torch.tensor([0.0, 0.0, 0.01])
    return bent @ rot.transpose(-1, -2) + 0.05 * joints[..., None, :3]


@pytest.mark.parametrize("representation", ["keypoint_delta", "rigid_body"])
def test_planner_scoring_equals_rollout_with_dexac(representation):
    model = build_tiny_world_model(seed=4, action_representation=representation, **DEXAC)
    predictor, dim = model.predictor, model.predictor.config.action_dim
    predictor.set_action_normalization(torch.zeros(dim), torch.full((dim,), 0.05))
    context, context_actions = torch.randn(3, 448, 64), torch.randn(2, dim) * 0.05
    goal = torch.randn(448, 64)
    seen = []

    if representation == "keypoint_delta":
        cost = WorldModelCost(predictor, model.keypoint_head, "tiny",
                              CostWeights(keypoint_source="latents"))
        cost.set_context(context, context_actions, "tiny")
        cost.set_goal(goal, "tiny")

        def evaluate(actions, joints):
            seen.append(actions)
            return cost.costs(actions)
    else:
        def evaluate(actions, joints):
            seen.append(actions)
            with torch.inference_mode():
                predicted = predictor.score_candidates(context, context_actions, actions)
            return (predicted - goal).square().mean(dim=(1, 2, 3))

    lower, upper = -torch.ones(23), torch.ones(23)
    planner = CEMPlanner(CEMConfig(horizon=3, num_samples=6, num_elites=2, iterations=1, seed=0),
                         _planner_keypoints, lower, upper, action_representation=representation)
    result = planner.plan(torch.zeros(23), _planner_keypoints(torch.zeros(23)), evaluate)
    actions = seen[0]
    assert actions.shape == (6, 3, dim) and result.actions.shape == (3, dim)
    with torch.inference_mode():
        fast = predictor.score_candidates(context, context_actions, actions)
        plain = predictor.rollout(context.expand(6, -1, -1, -1),
                                  context_actions.expand(6, -1, -1), actions)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
    assert fast.std(0).max() > 0  # candidates differ
    if representation == "rigid_body":
        torch.testing.assert_close(actions[:, :, RIGID_CAMERA][..., 3:],
                                   torch.tensor(IDENTITY_ROTATION_6D).expand(6, 3, 6))
    with pytest.raises(ValueError, match="unknown action representation"):
        CEMPlanner(CEMConfig(), _planner_keypoints, lower, upper, action_representation="x")
