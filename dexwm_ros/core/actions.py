"""Dexterous actions: 44 x 3 = 132 floats (DexWM paper section 3.1, appendix C.3).

Rows 0-20 left hand, 21-41 right hand, 42 camera translation delta, 43 camera rotation delta.
Each hand has 21 keypoints in ``HAND21`` order, metres, in the camera frame of the first
context frame.
"""
from __future__ import annotations

import torch

NUM_HAND_KEYPOINTS = 21
ACTION_ROWS = 44
ACTION_DIM = ACTION_ROWS * 3
LEFT_HAND_ROWS = slice(0, 21)
RIGHT_HAND_ROWS = slice(21, 42)
CAMERA_TRANSLATION_ROW = 42
CAMERA_ROTATION_ROW = 43

FINGERS = ("thumb", "index", "middle", "ring", "little")
FINGER_JOINTS = ("knuckle", "intermediate_base", "intermediate_tip", "tip")
#: Names of the 21 keypoints of one hand: wrist, then 4 per finger from knuckle to tip.
HAND21 = ("wrist",) + tuple(f"{f}_{j}" for f in FINGERS for j in FINGER_JOINTS)
#: Indices into HAND21 of the wrist and the five fingertips (the keypoint head's six maps).
WRIST_AND_TIPS = (0, 4, 8, 12, 16, 20)

#: Allegro fingers in the order ``allegro_to_hand21`` expects them.
ALLEGRO_FINGERS = ("thumb", "index", "middle", "ring")


def allegro_to_hand21(wrist: torch.Tensor, fingers: torch.Tensor) -> torch.Tensor:
    """Map Allegro keypoints to the 21 human-hand keypoints.

    ``wrist`` is ``(..., 3)``; ``fingers`` is ``(..., 4, 4, 3)`` for thumb, index, middle, ring,
    each from knuckle to tip. The Allegro has no little finger: the ring finger is repeated
    (paper appendix C.3). Returns ``(..., 21, 3)``.
    """
    if fingers.shape[-3:] != (4, 4, 3) or wrist.shape[-1] != 3:
        raise ValueError(
            f"allegro_to_hand21: expected wrist (..., 3) and fingers (..., 4, 4, 3), "
            f"got {tuple(wrist.shape)} and {tuple(fingers.shape)}"
        )
    five = torch.cat([fingers, fingers[..., 3:4, :, :]], dim=-3)
    return torch.cat([wrist.unsqueeze(-2), five.flatten(-3, -2)], dim=-2)


def _check_last(name: str, tensor: torch.Tensor, tail: tuple[int, ...]) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tuple(tensor.shape[-len(tail):]) != tail or tensor.dim() < len(tail):
        raise ValueError(f"{name}: expected shape (..., {', '.join(map(str, tail))}), "
                         f"got {tuple(tensor.shape)}")


def _check_clip(what: str, keypoints: torch.Tensor, camera_to_world: torch.Tensor) -> None:
    """Both hands' keypoints ``(..., S, 42, 3)`` and camera poses ``(..., S, 4, 4)``, S >= 2."""
    _check_last("keypoints", keypoints, (2 * NUM_HAND_KEYPOINTS, 3))
    _check_last("camera_to_world", camera_to_world, (4, 4))
    if keypoints.dim() < 3 or keypoints.shape[:-2] != camera_to_world.shape[:-2]:
        raise ValueError(f"{what}: keypoints (..., S, 42, 3) and camera_to_world "
                         f"(..., S, 4, 4) must share leading dims, got {tuple(keypoints.shape)} "
                         f"and {tuple(camera_to_world.shape)}")
    if keypoints.shape[-3] < 2:
        raise ValueError(f"{what}: need at least 2 frames")


def hand_action(prev_kp: torch.Tensor, next_kp: torch.Tensor) -> torch.Tensor:
    """Action of a one-handed robot: right-hand keypoint deltas ``next - prev``.

    ``prev_kp`` / ``next_kp`` are ``(..., 21, 3)`` right-hand keypoints (HAND21 order, metres)
    in the camera frame of the first context frame (for a fixed camera: the camera frame). The
    left hand and both camera rows are zero. Returns ``(..., 132)``.
    """
    _check_last("prev_kp", prev_kp, (NUM_HAND_KEYPOINTS, 3))
    _check_last("next_kp", next_kp, (NUM_HAND_KEYPOINTS, 3))
    delta = next_kp - prev_kp
    rows = delta.new_zeros(*delta.shape[:-2], ACTION_ROWS, 3)
    rows[..., RIGHT_HAND_ROWS, :] = delta
    return rows.flatten(-2)


def rotation_matrix_to_vector(rotation: torch.Tensor) -> torch.Tensor:
    """Rotation vector (axis * angle, angle in [0, pi]) of ``(..., 3, 3)`` rotation matrices.

    Goes through a unit quaternion (largest-component branch, so it is accurate at every
    angle) with a non-negative scalar part, then ``2 atan2(|v|, w) v / |v|``."""
    _check_last("rotation", rotation, (3, 3))
    r = rotation.double()
    m00, m11, m22 = r[..., 0, 0], r[..., 1, 1], r[..., 2, 2]
    trace = m00 + m11 + m22
    # 4 candidate quaternions (w, x, y, z), each well conditioned when its component is large
    cands = torch.stack([
        torch.stack([1 + trace, r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0],
                     r[..., 1, 0] - r[..., 0, 1]], -1),
        torch.stack([r[..., 2, 1] - r[..., 1, 2], 1 + m00 - m11 - m22,
                     r[..., 0, 1] + r[..., 1, 0], r[..., 0, 2] + r[..., 2, 0]], -1),
        torch.stack([r[..., 0, 2] - r[..., 2, 0], r[..., 0, 1] + r[..., 1, 0],
                     1 - m00 + m11 - m22, r[..., 1, 2] + r[..., 2, 1]], -1),
        torch.stack([r[..., 1, 0] - r[..., 0, 1], r[..., 0, 2] + r[..., 2, 0],
                     r[..., 1, 2] + r[..., 2, 1], 1 - m00 - m11 + m22], -1),
    ], -2)  # (..., 4, 4)
    best = torch.stack([trace, m00, m11, m22], -1).argmax(-1)
    quat = torch.gather(cands, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    quat = quat / quat.norm(dim=-1, keepdim=True)
    quat = torch.where(quat[..., :1] < 0, -quat, quat)
    w, v = quat[..., 0], quat[..., 1:]
    sin_half = v.norm(dim=-1)
    angle = 2 * torch.atan2(sin_half, w)
    # angle / sin(angle/2) -> 2 as the angle -> 0
    factor = torch.where(sin_half > 1e-12, angle / sin_half.clamp_min(1e-12),
                         torch.full_like(angle, 2.0))
    return (v * factor[..., None]).to(rotation.dtype)


def build_actions(keypoints: torch.Tensor, camera_to_world: torch.Tensor) -> torch.Tensor:
    """Actions between consecutive frames of a sequence (paper eq. 2, section 3.1).

    ``keypoints`` ``(..., S, 42, 3)``: left then right hand (HAND21 order) in the world frame
    (any fixed frame in which ``camera_to_world`` is given; use zeros for a missing hand).
    ``camera_to_world`` ``(..., S, 4, 4)``: OpenCV camera poses. Returns ``(..., S-1, 132)``.

    Everything is expressed in the axes of the sequence's FIRST camera frame:
    rows 0-41 keypoint deltas ``H_{k+1} - H_k``; row 42 the camera translation delta
    ``t_{k+1} - t_k``; row 43 the camera rotation delta as the rotation vector (axis-angle) of
    ``R_{k+1} R_k^T``, i.e. a continuous 3-vector. This replaces the paper's Euler-angle delta,
    which wraps at 2 pi and is discontinuous.
    """
    _check_clip("build_actions", keypoints, camera_to_world)
    rot = camera_to_world[..., :3, :3]
    trans = camera_to_world[..., :3, 3]
    world_to_first = rot[..., :1, :, :].transpose(-1, -2)  # (..., 1, 3, 3) = R0^T
    kp_first = (keypoints - trans[..., :1, None, :]) @ world_to_first.transpose(-1, -2)
    hand_delta = kp_first[..., 1:, :, :] - kp_first[..., :-1, :, :]
    cam_delta = ((trans[..., 1:, :] - trans[..., :-1, :])[..., None, :]
                 @ world_to_first.transpose(-1, -2)).squeeze(-2)
    rel_world = rot[..., 1:, :, :] @ rot[..., :-1, :, :].transpose(-1, -2)
    rot_delta = (world_to_first @ rotation_matrix_to_vector(rel_world)[..., None]).squeeze(-1)
    rows = torch.cat([hand_delta, cam_delta[..., None, :], rot_delta[..., None, :]], dim=-2)
    return rows.flatten(-2)


#: DROID dummy hand (paper appendix C.2, Figure 11): 5 rays x 4 radii around the end-effector.
DROID_RAY_ANGLES_DEG = (0.0, 72.0, 144.0, 216.0, 288.0)
DROID_RADII_OPEN = (0.03, 0.04, 0.05, 0.06)
DROID_RADII_CLOSED = (0.03, 0.04, 0.035, 0.03)
#: Gripper closed fraction from which the closed radii are used.
DROID_CLOSED_THRESHOLD = 0.5


def droid_gripper_keypoints(ee_position: torch.Tensor,
                            gripper_closed_fraction: torch.Tensor) -> torch.Tensor:
    """Dummy 21 hand keypoints of a parallel gripper (DROID, paper appendix C.2, Figure 11).

    ``ee_position`` ``(..., 3)`` end-effector positions in the robot base frame (z up),
    ``gripper_closed_fraction`` ``(...)`` (0 open, 1 closed). The wrist is the end-effector;
    finger ``f`` (thumb..little) lies on the ray at ``DROID_RAY_ANGLES_DEG[f]`` in the
    horizontal plane through it (the gripper's orientation plays no part), its 4 keypoints
    (knuckle..tip) at the open radii, or at the closed radii from a closed fraction of
    ``DROID_CLOSED_THRESHOLD`` on: concentric circles whose radii follow the open/close state,
    as in Figure 11. Returns ``(..., 21, 3)`` in the base frame.
    """
    _check_last("ee_position", ee_position, (3,))
    closed = torch.as_tensor(gripper_closed_fraction, device=ee_position.device)
    if closed.shape != ee_position.shape[:-1]:
        raise ValueError(f"gripper_closed_fraction: expected shape "
                         f"{tuple(ee_position.shape[:-1])}, got {tuple(closed.shape)}")
    opts = {"dtype": ee_position.dtype, "device": ee_position.device}
    radii = torch.where((closed >= DROID_CLOSED_THRESHOLD)[..., None],
                        torch.tensor(DROID_RADII_CLOSED, **opts),
                        torch.tensor(DROID_RADII_OPEN, **opts))  # (..., 4)
    angles = torch.deg2rad(torch.tensor(DROID_RAY_ANGLES_DEG, **opts))
    directions = torch.stack([angles.cos(), angles.sin(), torch.zeros_like(angles)], -1)
    offsets = radii[..., None, :, None] * directions[:, None, :]  # (..., 5, 4, 3)
    fingers = offsets.flatten(-3, -2) + ee_position[..., None, :]
    return torch.cat([ee_position[..., None, :], fingers], dim=-2)


class ActionNormalizer:
    """Per-dimension mean/std of actions, accumulated over a dataset in float64.

    ``update(actions)`` with ``(..., 132)`` batches; ``mean`` / ``std`` (std floored at
    ``min_std`` so dimensions that never move, e.g. the left hand of a robot, map to 0 instead
    of blowing up). Feed the result to ``CDiTPredictor.set_action_normalization``.
    """

    def __init__(self, dim: int = ACTION_DIM, min_std: float = 1e-3):
        if min_std <= 0:
            raise ValueError(f"min_std must be > 0, got {min_std}")
        self.dim, self.min_std = dim, min_std
        self.count = 0
        self._sum = torch.zeros(dim, dtype=torch.float64)
        self._sum_sq = torch.zeros(dim, dtype=torch.float64)

    @classmethod
    def from_actions(cls, actions: torch.Tensor, min_std: float = 1e-3) -> ActionNormalizer:
        normalizer = cls(actions.shape[-1], min_std)
        normalizer.update(actions)
        return normalizer

    def update(self, actions: torch.Tensor) -> None:
        _check_last("actions", actions, (self.dim,))
        flat = actions.detach().reshape(-1, self.dim).double().cpu()
        if not torch.isfinite(flat).all():
            raise ValueError("ActionNormalizer.update: actions contain NaN or inf")
        self.count += flat.shape[0]
        self._sum += flat.sum(0)
        self._sum_sq += flat.square().sum(0)

    @property
    def mean(self) -> torch.Tensor:
        if self.count == 0:
            raise ValueError("ActionNormalizer: no actions seen yet")
        return (self._sum / self.count).float()

    @property
    def std(self) -> torch.Tensor:
        if self.count == 0:
            raise ValueError("ActionNormalizer: no actions seen yet")
        mean = self._sum / self.count
        var = (self._sum_sq / self.count - mean.square()).clamp_min(0)
        return var.sqrt().clamp_min(self.min_std).float()


# ---------------------------------------------------------------------------- rigid-body actions
# DexAC paper (Not All Actions Are Equal, section 4.3 "Action Representation" and section 5.1
# "Implementation details"): 57 dimensions = per hand the relative wrist motion (translation +
# continuous 6D rotation, 9) and 15 finger joint displacements, plus the relative head/camera
# pose (translation + 6D rotation, 9). Layout (``RIGID_*`` slices): left wrist 0-8, left fingers
# 9-23, right wrist 24-32, right fingers 33-47, camera 48-56. Everything is computed from the
# same 42 keypoints and camera poses as ``build_actions``, so EgoDex, DROID, the simulator and
# the planner's batched FK all yield it.

RIGID_WRIST_DIM = 9
RIGID_FINGER_DIM = 15
RIGID_HAND_DIM = RIGID_WRIST_DIM + RIGID_FINGER_DIM
RIGID_ACTION_DIM = 2 * RIGID_HAND_DIM + 9
RIGID_LEFT_WRIST = slice(0, 9)
RIGID_LEFT_FINGERS = slice(9, 24)
RIGID_RIGHT_WRIST = slice(24, 33)
RIGID_RIGHT_FINGERS = slice(33, 48)
RIGID_CAMERA = slice(48, 57)
#: Action groups of the DexAC paper's per-group diagnostics (section 5.3 c, Table 3).
RIGID_ACTION_GROUPS: dict[str, tuple[int, ...]] = {
    "wrist": tuple(range(0, 9)) + tuple(range(24, 33)),
    "finger": tuple(range(9, 24)) + tuple(range(33, 48)),
    "head": tuple(range(48, 57)),
}
#: 6D rotation of the identity (first two columns of I, column-major).
IDENTITY_ROTATION_6D = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)

#: Action representations a predictor can be trained on, and their widths.
ACTION_REPRESENTATIONS: dict[str, int] = {"keypoint_delta": ACTION_DIM,
                                          "rigid_body": RIGID_ACTION_DIM}

#: HAND21 chains (wrist, knuckle, intermediate base, intermediate tip, tip) of the 5 fingers.
_FINGER_CHAINS = tuple((0, 1 + 4 * f, 2 + 4 * f, 3 + 4 * f, 4 + 4 * f) for f in range(5))
_INDEX_KNUCKLE, _MIDDLE_KNUCKLE, _LITTLE_KNUCKLE = 5, 9, 17


def rotation_to_6d(rotation: torch.Tensor) -> torch.Tensor:
    """Continuous 6D representation (Zhou et al., 2019) of ``(..., 3, 3)`` rotations: the first
    two columns, concatenated. Returns ``(..., 6)``."""
    _check_last("rotation", rotation, (3, 3))
    return torch.cat([rotation[..., :, 0], rotation[..., :, 1]], dim=-1)


def rotation_from_6d(six: torch.Tensor) -> torch.Tensor:
    """Inverse of ``rotation_to_6d`` by Gram-Schmidt (any ``(..., 6)`` with two independent
    3-vectors maps to the nearest-in-spirit rotation). Returns ``(..., 3, 3)``."""
    _check_last("six", six, (6,))
    a, b = six[..., :3], six[..., 3:]
    x = torch.nn.functional.normalize(a, dim=-1)
    y = torch.nn.functional.normalize(b - (x * b).sum(-1, keepdim=True) * x, dim=-1)
    return torch.stack([x, y, torch.linalg.cross(x, y)], dim=-1)


def hand_frames(keypoints: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """Wrist poses ``(..., 4, 4)`` of 21-keypoint hands ``(..., 21, 3)``: origin at the wrist,
    x towards the middle knuckle, y from the little towards the index knuckle (orthogonalised),
    z = x cross y. All-zero keypoints (an absent hand) give an all-zero rotation."""
    _check_last("keypoints", keypoints, (NUM_HAND_KEYPOINTS, 3))
    wrist = keypoints[..., 0, :]
    x = keypoints[..., _MIDDLE_KNUCKLE, :] - wrist
    x = x / x.norm(dim=-1, keepdim=True).clamp_min(eps)
    across = keypoints[..., _INDEX_KNUCKLE, :] - keypoints[..., _LITTLE_KNUCKLE, :]
    y = across - (across * x).sum(-1, keepdim=True) * x
    y = y / y.norm(dim=-1, keepdim=True).clamp_min(eps)
    pose = keypoints.new_zeros(*keypoints.shape[:-2], 4, 4)
    pose[..., :3, 0], pose[..., :3, 1] = x, y
    pose[..., :3, 2] = torch.linalg.cross(x, y)
    pose[..., :3, 3] = wrist
    pose[..., 3, 3] = 1.0
    return pose


def finger_joint_angles(keypoints: torch.Tensor) -> torch.Tensor:
    """Flexion angles ``(..., 15)`` (rad) of 21-keypoint hands ``(..., 21, 3)``: for thumb,
    index, middle, ring and little, the angle between consecutive bones at the knuckle, the
    intermediate base and the intermediate tip (0 = straight). Zero-length bones give 0.

    DROID's dummy gripper fingers are straight rays, so their angles are 0 when open and pi
    where the closed radii fold back: the displacements carry the open/close switch. Its wrist
    frame ignores the gripper's orientation, like ``droid_gripper_keypoints``."""
    _check_last("keypoints", keypoints, (NUM_HAND_KEYPOINTS, 3))
    chains = keypoints[..., torch.tensor(_FINGER_CHAINS), :]  # (..., 5, 5, 3)
    bones = chains[..., 1:, :] - chains[..., :-1, :]  # (..., 5, 4, 3)
    before, after = bones[..., :-1, :], bones[..., 1:, :]
    sin = torch.linalg.cross(before, after).norm(dim=-1)
    cos = (before * after).sum(-1)
    return torch.atan2(sin, cos).flatten(-2)


def relative_motion(poses: torch.Tensor) -> torch.Tensor:
    """Relative motions ``T_k^-1 T_{k+1}`` of pose sequences ``(..., S, 4, 4)`` as ``(..., S-1,
    9)``: translation in the frame of pose k, then the 6D rotation."""
    _check_last("poses", poses, (4, 4))
    rot, trans = poses[..., :3, :3], poses[..., :3, 3]
    rot_t = rot[..., :-1, :, :].transpose(-1, -2)
    rel_rot = rot_t @ rot[..., 1:, :, :]
    rel_trans = (rot_t @ (trans[..., 1:, :] - trans[..., :-1, :])[..., None]).squeeze(-1)
    return torch.cat([rel_trans, rotation_to_6d(rel_rot)], dim=-1)


def build_rigid_actions(keypoints: torch.Tensor, camera_to_world: torch.Tensor,
                        hands: tuple[bool, bool] = (True, True)) -> torch.Tensor:
    """Rigid-body actions between consecutive frames (DexAC paper section 4.3; layout above).

    ``keypoints`` ``(..., S, 42, 3)`` left then right hand in the world frame,
    ``camera_to_world`` ``(..., S, 4, 4)`` OpenCV camera poses, ``hands`` which of (left,
    right) the sequence has; an absent hand's 24 dimensions are zero. The wrist and camera
    motions are expressed in their own frame at step k, so hand motion does not depend on the
    viewpoint. Returns ``(..., S-1, 57)``.
    """
    _check_clip("build_rigid_actions", keypoints, camera_to_world)
    parts = []
    for present, rows in zip(hands, (LEFT_HAND_ROWS, RIGHT_HAND_ROWS), strict=True):
        hand = keypoints[..., rows, :]
        angles = finger_joint_angles(hand)
        part = torch.cat([relative_motion(hand_frames(hand)),
                          angles[..., 1:, :] - angles[..., :-1, :]], dim=-1)
        parts.append(part if present else torch.zeros_like(part))
    parts.append(relative_motion(camera_to_world))
    return torch.cat(parts, dim=-1)


def robot_hand_actions(representation: str, observed_keypoints: torch.Tensor,
                       keypoints: torch.Tensor) -> torch.Tensor:
    """Actions of a one-handed robot with a static camera for right-hand keypoint sequences
    ``(..., T, 21, 3)`` starting at ``observed_keypoints`` ``(21, 3)`` (any one fixed frame,
    e.g. the camera's, from batched FK), in ``representation`` (``ACTION_REPRESENTATIONS``).

    ``keypoint_delta``: ``hand_action`` between consecutive steps (132). ``rigid_body``: the
    right hand's relative wrist motion and finger displacements, left hand zero, camera the
    identity motion, exactly as ``build_rigid_actions`` gives for such an episode (57)."""
    if representation not in ACTION_REPRESENTATIONS:
        raise ValueError(f"unknown action representation {representation!r}; choose from "
                         f"{sorted(ACTION_REPRESENTATIONS)}")
    _check_last("observed_keypoints", observed_keypoints, (NUM_HAND_KEYPOINTS, 3))
    _check_last("keypoints", keypoints, (NUM_HAND_KEYPOINTS, 3))
    if keypoints.dim() < 3:
        raise ValueError(f"keypoints: expected (..., T, 21, 3), got {tuple(keypoints.shape)}")
    start = observed_keypoints.expand(*keypoints.shape[:-3], 1, NUM_HAND_KEYPOINTS, 3)
    if representation == "keypoint_delta":
        previous = torch.cat([start, keypoints[..., :-1, :, :]], dim=-3)
        return hand_action(previous, keypoints)
    sequence = torch.cat([start, keypoints], dim=-3)
    angles = finger_joint_angles(sequence)
    right = torch.cat([relative_motion(hand_frames(sequence)),
                       angles[..., 1:, :] - angles[..., :-1, :]], dim=-1)
    out = right.new_zeros(*right.shape[:-1], RIGID_ACTION_DIM)
    out[..., RIGID_RIGHT_WRIST.start:RIGID_RIGHT_FINGERS.stop] = right
    out[..., RIGID_CAMERA.start + 3:] = right.new_tensor(IDENTITY_ROTATION_6D)
    return out
