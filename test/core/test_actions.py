import math

import pytest
import torch

from dexwm_ros.core.actions import (
    ACTION_DIM,
    HAND21,
    WRIST_AND_TIPS,
    ActionNormalizer,
    allegro_to_hand21,
    build_actions,
    droid_gripper_keypoints,
    hand_action,
    rotation_matrix_to_vector,
)


@pytest.fixture(autouse=True)
def float64_default():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def rot_z(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def pose(rotation: torch.Tensor, translation) -> torch.Tensor:
    out = torch.eye(4)
    out[:3, :3] = rotation
    out[:3, 3] = torch.as_tensor(translation, dtype=torch.float64)
    return out


def skew(v: torch.Tensor) -> torch.Tensor:
    zero = torch.zeros_like(v[..., 0])
    return torch.stack([torch.stack([zero, -v[..., 2], v[..., 1]], -1),
                        torch.stack([v[..., 2], zero, -v[..., 0]], -1),
                        torch.stack([-v[..., 1], v[..., 0], zero], -1)], -2)


def test_layout_constants():
    assert len(HAND21) == 21 and ACTION_DIM == 132
    assert [HAND21[i] for i in WRIST_AND_TIPS] == ["wrist", "thumb_tip", "index_tip",
                                                   "middle_tip", "ring_tip", "little_tip"]


def test_allegro_ring_finger_is_copied_to_little():
    wrist, fingers = torch.randn(2, 3), torch.randn(2, 4, 4, 3)
    hand = allegro_to_hand21(wrist, fingers)
    assert hand.shape == (2, 21, 3)
    torch.testing.assert_close(hand[:, 0], wrist)
    torch.testing.assert_close(hand[:, 13:17], fingers[:, 3])
    torch.testing.assert_close(hand[:, 17:21], fingers[:, 3])


def test_hand_action_fills_only_the_right_hand():
    prev, nxt = torch.randn(5, 21, 3), torch.randn(5, 21, 3)
    rows = hand_action(prev, nxt).view(5, 44, 3)
    torch.testing.assert_close(rows[:, 21:42], nxt - prev)
    assert torch.count_nonzero(rows[:, :21]) == 0 and torch.count_nonzero(rows[:, 42:]) == 0
    with pytest.raises(ValueError, match="prev_kp"):
        hand_action(torch.randn(20, 3), nxt[0])


def test_rotation_vector_round_trip_all_angles():
    torch.manual_seed(0)
    axes = torch.nn.functional.normalize(torch.randn(200, 3), dim=-1)
    angles = torch.linspace(0, math.pi - 1e-6, 200)
    vectors = axes * angles[:, None]
    matrices = torch.linalg.matrix_exp(skew(vectors))
    torch.testing.assert_close(rotation_matrix_to_vector(matrices), vectors, atol=1e-7, rtol=0)


def test_static_camera_gives_keypoint_deltas_in_camera_frame():
    cam = pose(rot_z(math.pi / 2), [1.0, 2.0, 3.0])  # camera x axis = world y
    kp = torch.zeros(2, 42, 3)
    kp[1, 21] = torch.tensor([0.0, 0.1, 0.0])  # right wrist moves +0.1 along world y
    actions = build_actions(kp, torch.stack([cam, cam]))
    rows = actions.view(1, 44, 3)
    expected = torch.zeros(44, 3)
    expected[21] = torch.tensor([0.1, 0.0, 0.0])
    torch.testing.assert_close(rows[0], expected)


def test_camera_motion_translation_and_continuous_rotation():
    r0 = rot_z(math.pi / 2)
    poses = torch.stack([pose(r0, [0, 0, 0]),
                         pose(r0 @ rot_z(3.1), [0.0, 0.5, 0.0])])
    world_kp = torch.randn(1, 42, 3).expand(2, -1, -1)  # static world: no hand motion
    rows = build_actions(world_kp, poses).view(44, 3)
    torch.testing.assert_close(rows[:42], torch.zeros(42, 3), atol=1e-12, rtol=0)
    torch.testing.assert_close(rows[42], torch.tensor([0.5, 0.0, 0.0]))  # world y = cam0 x
    torch.testing.assert_close(rows[43], torch.tensor([0.0, 0.0, 3.1]))
    # a yaw going from 3.1 to -3.1 rad is a small +0.083 rad turn, not a -6.2 rad jump
    across = torch.stack([pose(rot_z(3.1), [0, 0, 0]), pose(rot_z(-3.1), [0, 0, 0])])
    rows = build_actions(torch.zeros(2, 42, 3), across).view(44, 3)
    torch.testing.assert_close(rows[43], torch.tensor([0.0, 0.0, 2 * math.pi - 6.2]))


def test_keypoints_are_expressed_in_first_camera_frame():
    r0, r1 = rot_z(0.3), rot_z(0.7)
    poses = torch.stack([pose(r0, [0.1, 0.0, 0.0]), pose(r1, [0.2, 0.0, 0.0]),
                         pose(r1, [0.2, 0.3, 0.0])])
    kp = torch.randn(3, 42, 3)
    rows = build_actions(kp, poses).view(2, 44, 3)
    expected = (kp[2] - kp[1]) @ r0  # R0^T applied to row vectors
    torch.testing.assert_close(rows[1, :42], expected)
    torch.testing.assert_close(rows[1, 42], torch.tensor([0.0, 0.3, 0.0]) @ r0)
    torch.testing.assert_close(rows[0, 43], torch.tensor([0.0, 0.0, 0.4]))


def test_build_actions_batched_and_validated():
    actions = build_actions(torch.randn(4, 6, 42, 3),
                            torch.eye(4).expand(4, 6, 4, 4).contiguous())
    assert actions.shape == (4, 5, 132)
    with pytest.raises(ValueError, match="leading dims"):
        build_actions(torch.randn(6, 42, 3), torch.eye(4).expand(5, 4, 4))
    with pytest.raises(ValueError, match="2 frames"):
        build_actions(torch.randn(1, 42, 3), torch.eye(4)[None])


def test_droid_gripper_keypoints_open_closed_and_placed():
    origin = torch.zeros(3)
    open_kp = droid_gripper_keypoints(origin, torch.tensor(0.0))
    closed_kp = droid_gripper_keypoints(origin, torch.tensor(1.0))
    assert open_kp.shape == (21, 3)
    torch.testing.assert_close(open_kp[0], torch.zeros(3))
    torch.testing.assert_close(open_kp[1:5, 0], torch.tensor([0.03, 0.04, 0.05, 0.06]))
    torch.testing.assert_close(closed_kp[1:5, 0], torch.tensor([0.03, 0.04, 0.035, 0.03]))
    # the radii switch at a closed fraction of 0.5 (paper Figure 11: open or closed circles)
    torch.testing.assert_close(droid_gripper_keypoints(origin, torch.tensor(0.49)), open_kp)
    torch.testing.assert_close(droid_gripper_keypoints(origin, torch.tensor(0.5)), closed_kp)
    angle = math.radians(72)  # second ray (index finger), tip at 0.06 m
    torch.testing.assert_close(open_kp[8], torch.tensor([0.06 * math.cos(angle),
                                                         0.06 * math.sin(angle), 0.0]))
    moved = droid_gripper_keypoints(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([0.0]))[0]
    torch.testing.assert_close(moved, open_kp + torch.tensor([1.0, 2.0, 3.0]))
    assert torch.all(moved[:, 2] == 3.0)  # every ray lies in the horizontal plane


def test_action_normalizer_matches_dataset_statistics():
    torch.manual_seed(0)
    data = torch.randn(1000, 132) * torch.linspace(0.0, 2.0, 132) + 3.0
    norm = ActionNormalizer()
    for batch in data.split(300):
        norm.update(batch.float())
    torch.testing.assert_close(norm.mean, data.mean(0).float(), atol=1e-5, rtol=0)
    expected_std = data.std(0, unbiased=False).clamp_min(1e-3).float()
    torch.testing.assert_close(norm.std, expected_std, atol=1e-5, rtol=1e-5)
    assert norm.std[0] == pytest.approx(1e-3)  # constant dimension floored, not zero
    with pytest.raises(ValueError, match="no actions"):
        _ = ActionNormalizer().mean
    with pytest.raises(ValueError, match="NaN"):
        norm.update(torch.full((1, 132), float("nan")))
