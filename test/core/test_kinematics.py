"""Forward kinematics, joint limits and the pinhole camera (torch only)."""
import math

import numpy as np
import pytest
import torch

from dexwm_ros.core.actions import HAND21
from dexwm_ros.core.kinematics import (
    FINGER_KEYPOINT_LINKS,
    HEAD_CAMERA_FRAME,
    HOME_JOINT_POSITIONS,
    JOINT_LIMITS,
    JOINT_NAMES,
    NUM_JOINTS,
    WRIST_LINK,
    PinholeCamera,
    RobotKinematics,
    default_urdf_path,
    head_camera,
    urdf_joint_limits,
)


@pytest.fixture(scope="module")
def kin():
    return RobotKinematics()


def random_q(kin, *shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return kin.lower + (kin.upper - kin.lower) * torch.rand(*shape, NUM_JOINTS, generator=g)


def test_joint_names_and_limits_match_design_and_urdf(kin):
    assert len(JOINT_NAMES) == NUM_JOINTS == 23
    lower, upper = urdf_joint_limits()
    np.testing.assert_allclose(lower, [lo for lo, _ in JOINT_LIMITS])
    np.testing.assert_allclose(upper, [hi for _, hi in JOINT_LIMITS])
    np.testing.assert_allclose(kin.lower.numpy(), lower, atol=1e-6)
    assert JOINT_LIMITS[5] == (0.5445, 4.5169)  # FR3 joint 6
    assert JOINT_LIMITS[7 + 12] == (0.36, 1.496)  # Allegro thumb joint 12


def test_fast_keypoints_equal_full_chain_fk(kin):
    q = random_q(kin, 64)
    links = (WRIST_LINK,) + tuple(n for f in FINGER_KEYPOINT_LINKS for n in f)
    full = kin.link_poses_world(q, links)[..., :3, 3]
    fast = kin.keypoints_world(q)
    # HAND21: wrist, then thumb, index, middle, ring, little(=ring) with 4 points each.
    np.testing.assert_allclose(fast[:, 0], full[:, 0], atol=1e-5)
    np.testing.assert_allclose(fast[:, 1:17], full[:, 1:17], atol=1e-5)
    np.testing.assert_allclose(fast[:, 17:21], full[:, 13:17], atol=1e-5)


def test_fast_wrist_pose_equals_full_chain_fk(kin):
    q = random_q(kin, 64)
    full = kin.link_poses_world(q, (WRIST_LINK,))[:, 0]
    np.testing.assert_allclose(kin.wrist_pose_world(q), full, atol=1e-5)


def test_batch_shapes_and_ring_repeated_as_little(kin):
    q = random_q(kin, 4, 3)
    kp = kin.keypoints_world(q)
    assert kp.shape == (4, 3, 21, 3) and len(HAND21) == 21
    torch.testing.assert_close(kp[..., 17:21, :], kp[..., 13:17, :])
    assert kin.wrist_pose_world(q).shape == (4, 3, 4, 4)
    single = kin.keypoints_world(q[1, 2])
    torch.testing.assert_close(single, kp[1, 2])


def test_fingertips_are_far_from_the_wrist(kin):
    kp = kin.keypoints_world(torch.tensor(HOME_JOINT_POSITIONS))
    tip_dist = (kp[[8, 12, 16]] - kp[0]).norm(dim=-1)
    assert torch.all(tip_dist > 0.2) and torch.all(tip_dist < 0.3)


def test_clip(kin):
    q = torch.full((2, NUM_JOINTS), 10.0)
    q[1] = -10.0
    clipped = kin.clip(q)
    torch.testing.assert_close(clipped[0], kin.upper)
    torch.testing.assert_close(clipped[1], kin.lower)
    with pytest.raises(ValueError, match="23"):
        kin.clip(torch.zeros(5))
    with pytest.raises(ValueError, match="23"):
        kin.keypoints_world(torch.zeros(3, 22))


def test_head_camera_matches_urdf_frame(kin):
    cam = head_camera()
    np.testing.assert_allclose(kin.head_camera_pose_world().numpy(), cam.camera_to_world.numpy(),
                               atol=1e-5)
    np.testing.assert_allclose(cam.camera_to_world[:3, 3].numpy(), [-0.6, 0.0, 1.6])
    forward = cam.camera_to_world[:3, 2].numpy()
    assert math.degrees(math.asin(-forward[2])) == pytest.approx(30.0)
    assert cam.fovy_deg == pytest.approx(80.0)
    assert (cam.height, cam.width) == (224, 392)
    assert HEAD_CAMERA_FRAME == "head_camera_optical_frame"


def test_camera_round_trip_and_projection():
    cam = PinholeCamera.from_fovy(60.0, (0.0, 0.0, 1.0), look_at=(1.0, 0.0, 1.0))
    centre = cam.world_to_camera(torch.tensor([[2.0, 0.0, 1.0]], dtype=torch.float64))
    np.testing.assert_allclose(centre.numpy(), [[0.0, 0.0, 2.0]], atol=1e-12)
    np.testing.assert_allclose(cam.project(centre).numpy(), [[195.5, 111.5]])
    # x right (world -y when looking +x), y down (world -z).
    right_down = cam.world_to_camera(np.array([2.0, -0.5, 0.5]))
    assert right_down[0] > 0 and right_down[1] > 0
    points = np.random.default_rng(0).normal(size=(10, 3))
    np.testing.assert_allclose(cam.camera_to_world_points(cam.world_to_camera(points)), points)
    in_front = torch.as_tensor(points + [0.0, 0.0, 4.0])
    torch.testing.assert_close(cam.back_project(cam.project(in_front), in_front[:, 2]), in_front)
    np.testing.assert_allclose(cam.back_project(cam.project(in_front.numpy()), in_front[:, 2]
                                                .numpy()), in_front.numpy())
    with pytest.raises(ValueError, match="back_project"):
        cam.back_project(torch.zeros(3, 2), torch.ones(4))
    # The image's top edge is at fovy / 2 above the axis.
    top = np.array([0.0, -math.tan(math.radians(30.0)), 1.0])
    assert cam.project(top)[1] == pytest.approx(-0.5)
    assert cam.visible(np.array([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0], [5.0, 0.0, 1.0]])).tolist() \
        == [True, False, False]


def test_keypoints_camera_and_pixels(kin):
    cam = head_camera()
    q = torch.tensor(HOME_JOINT_POSITIONS)
    kp_cam = kin.keypoints_camera(q, cam)
    torch.testing.assert_close(kp_cam, cam.world_to_camera(kin.keypoints_world(q)))
    assert torch.all(cam.visible(kp_cam))  # the home pose is in view
    assert kin.keypoints_pixels(q, cam).shape == (21, 2)


def test_bad_camera_arguments():
    with pytest.raises(ValueError, match="exactly one"):
        PinholeCamera.from_fovy(80.0, (0, 0, 1))
    with pytest.raises(ValueError, match="fovy"):
        PinholeCamera.from_fovy(0.0, (0, 0, 1), pitch_deg=10.0)
    with pytest.raises(ValueError, match="intrinsics"):
        PinholeCamera(np.eye(4), np.eye(4))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        head_camera().project(np.zeros((2, 2)))


def test_default_urdf_path_env(monkeypatch, tmp_path):
    assert default_urdf_path().name == "fr3_allegro.urdf"
    monkeypatch.setenv("DEXWM_URDF", str(tmp_path / "missing.urdf"))
    with pytest.raises(FileNotFoundError, match="DEXWM_URDF"):
        default_urdf_path()
