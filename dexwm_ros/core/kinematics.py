"""Batched forward kinematics of the FR3 + Allegro robot and the egocentric pinhole camera.

Torch only (no ROS). ``RobotKinematics`` runs pytorch-kinematics over ``urdf/fr3_allegro.urdf``
and maps joint angles ``(..., 23)`` to the 21 right-hand keypoints of ``actions.HAND21`` (paper
appendix C.3: the Allegro ring finger is repeated as the little finger) in the world frame and
in a camera frame, and to pixels. Camera convention: OpenCV (x right, y down, z forward),
metres; pixel ``(u, v) = (column, row)`` with integer coordinates at pixel centres, so the
principal point of the default camera is ``((W - 1) / 2, (H - 1) / 2)``.
"""
from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dexwm_ros.core.actions import allegro_to_hand21
from dexwm_ros.share import share_path

ARM_JOINT_NAMES = tuple(f"fr3_joint{i}" for i in range(1, 8))
HAND_JOINT_NAMES = tuple(f"allegro_joint_{i}" for i in range(16))
#: 7 arm joints, then Allegro joints: index 0-3, middle 4-7, ring 8-11, thumb 12-15.
JOINT_NAMES: tuple[str, ...] = ARM_JOINT_NAMES + HAND_JOINT_NAMES
NUM_JOINTS = 23
ARM_JOINTS = slice(0, 7)
HAND_JOINTS = slice(7, 23)

#: (lower, upper) in rad: Franka FR3 datasheet limits and the Allegro right hand's.
JOINT_LIMITS: tuple[tuple[float, float], ...] = (
    (-2.7437, 2.7437), (-1.7837, 1.7837), (-2.9007, 2.9007), (-3.0421, -0.1518),
    (-2.8065, 2.8065), (0.5445, 4.5169), (-3.0159, 3.0159),
    # index 0-3, middle 4-7, ring 8-11
    (-0.57, 0.57), (-0.296, 1.71), (-0.274, 1.809), (-0.327, 1.718),
    (-0.57, 0.57), (-0.296, 1.71), (-0.276, 1.809), (-0.327, 1.718),
    (-0.57, 0.57), (-0.296, 1.71), (-0.276, 1.809), (-0.327, 1.718),
    # thumb 12-15
    (0.36, 1.496), (-0.204, 1.263), (-0.289, 1.744), (-0.262, 1.819),
)
#: A relaxed pose with the open hand 38 cm above the table (fingertips about 14 cm above it,
#: clear of every object), in view of the head camera.
HOME_JOINT_POSITIONS: tuple[float, ...] = (
    0.486, -0.442, 0.114, -2.633, 0.06, 2.193, 1.34,
    0.0, 0.2, 0.2, 0.2, 0.0, 0.2, 0.2, 0.2, 0.0, 0.2, 0.2, 0.2, 0.8, 0.2, 0.2, 0.2,
)

IMAGE_HEIGHT = 224
IMAGE_WIDTH = 392
#: Egocentric head camera (paper appendix C.1): 1.6 m high, looking forward (+x) at the
#: table, pitched 30 deg down, vertical field of view 80 deg.
HEAD_CAMERA_POSITION = (-0.6, 0.0, 1.6)
HEAD_CAMERA_PITCH_DEG = 30.0
HEAD_CAMERA_FOVY_DEG = 80.0
HEAD_CAMERA_FRAME = "head_camera_optical_frame"

WRIST_LINK = "allegro_wrist"
#: Links whose origins are the keypoints, in ``allegro_to_hand21`` finger order (thumb, index,
#: middle, ring), each knuckle, intermediate base, intermediate tip, tip.
FINGER_KEYPOINT_LINKS: tuple[tuple[str, ...], ...] = tuple(
    (f"allegro_{f}_link_1", f"allegro_{f}_link_2", f"allegro_{f}_link_3", f"allegro_{f}_tip")
    for f in ("thumb", "index", "middle", "ring")
)

_URDF_NAME = "fr3_allegro.urdf"


def default_urdf_path() -> Path:
    """Path of ``fr3_allegro.urdf``: ``$DEXWM_URDF`` if set, else the package's ``urdf/``
    (``dexwm_ros.share.share_path``)."""
    env = os.environ.get("DEXWM_URDF")
    if env:
        path = Path(env)
        if not path.is_file():
            raise FileNotFoundError(f"DEXWM_URDF={env} is not a file")
        return path
    return share_path("urdf", _URDF_NAME)


def _as_tensor(x, dtype=torch.float32) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x, dtype=dtype)


@dataclass
class PinholeCamera:
    """Pinhole camera in the OpenCV convention.

    ``intrinsics`` is ``K`` (3, 3); ``camera_to_world`` (4, 4) maps camera-frame points to the
    world. Methods take torch tensors (or numpy arrays, returning numpy) of any batch shape.
    """

    intrinsics: torch.Tensor
    camera_to_world: torch.Tensor
    height: int = IMAGE_HEIGHT
    width: int = IMAGE_WIDTH

    def __post_init__(self) -> None:
        self.intrinsics = _as_tensor(self.intrinsics, torch.float64)
        self.camera_to_world = _as_tensor(self.camera_to_world, torch.float64)
        if self.intrinsics.shape != (3, 3) or self.camera_to_world.shape != (4, 4):
            raise ValueError(
                "PinholeCamera: intrinsics must be (3, 3) and camera_to_world (4, 4), got "
                f"{tuple(self.intrinsics.shape)} and {tuple(self.camera_to_world.shape)}"
            )

    @property
    def fovy_deg(self) -> float:
        return math.degrees(2 * math.atan(self.height / 2 / float(self.intrinsics[1, 1])))

    @classmethod
    def from_fovy(
        cls,
        fovy_deg: float,
        position,
        look_at=None,
        pitch_deg: float | None = None,
        yaw_deg: float = 0.0,
        height: int = IMAGE_HEIGHT,
        width: int = IMAGE_WIDTH,
    ) -> PinholeCamera:
        """Camera at ``position`` looking at ``look_at`` or along (``yaw_deg``, ``pitch_deg``).

        Yaw turns about world +z from +x; positive pitch looks down. Square pixels, principal
        point at the image centre, no roll (image x axis horizontal).
        """
        if (look_at is None) == (pitch_deg is None):
            raise ValueError("PinholeCamera.from_fovy: give exactly one of look_at, pitch_deg")
        if not 0 < fovy_deg < 180:
            raise ValueError(f"PinholeCamera.from_fovy: fovy_deg must be in (0, 180): {fovy_deg}")
        pos = np.asarray(position, dtype=np.float64)
        if look_at is not None:
            forward = np.asarray(look_at, dtype=np.float64) - pos
        else:
            p, y = math.radians(pitch_deg), math.radians(yaw_deg)
            forward = np.array([math.cos(p) * math.cos(y), math.cos(p) * math.sin(y), -math.sin(p)])
        forward /= np.linalg.norm(forward)
        right = np.cross(forward, [0.0, 0.0, 1.0])
        if np.linalg.norm(right) < 1e-9:
            raise ValueError("PinholeCamera.from_fovy: looking straight up/down has no yaw")
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        pose = np.eye(4)
        pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, down, forward, pos
        f = height / 2 / math.tan(math.radians(fovy_deg) / 2)
        k = np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]])
        return cls(k, pose, height, width)

    def _apply(self, fn, x):
        is_numpy = not torch.is_tensor(x)
        t = torch.as_tensor(np.asarray(x)) if is_numpy else x
        if t.shape[-1] != 3:
            raise ValueError(f"PinholeCamera: points must be (..., 3), got {tuple(t.shape)}")
        out = fn(t)
        return out.numpy() if is_numpy else out

    def world_to_camera(self, points_world):
        """World points ``(..., 3)`` -> camera-frame points ``(..., 3)``."""

        def fn(p):
            pose = self.camera_to_world.to(p.device, p.dtype)
            return (p - pose[:3, 3]) @ pose[:3, :3]

        return self._apply(fn, points_world)

    def camera_to_world_points(self, points_camera):
        """Camera-frame points ``(..., 3)`` -> world points ``(..., 3)``."""

        def fn(p):
            pose = self.camera_to_world.to(p.device, p.dtype)
            return p @ pose[:3, :3].T + pose[:3, 3]

        return self._apply(fn, points_camera)

    def project(self, points_camera):
        """Camera-frame points ``(..., 3)`` -> pixels ``(..., 2)`` as (u, v).

        Points at or behind the camera plane (z <= 0) give meaningless pixels; see ``visible``.
        """

        def fn(p):
            k = self.intrinsics.to(p.device, p.dtype)
            z = p[..., 2:3].clamp_min(1e-6)
            uv = p[..., :2] / z
            return torch.stack(
                [uv[..., 0] * k[0, 0] + k[0, 2], uv[..., 1] * k[1, 1] + k[1, 2]], dim=-1
            )

        return self._apply(fn, points_camera)

    def back_project(self, pixels, depths):
        """Pixels ``(..., 2)`` as (u, v) at camera depths ``(...)`` -> camera-frame points
        ``(..., 3)`` (the inverse of ``project``)."""
        is_numpy = not torch.is_tensor(pixels)
        pixels = torch.as_tensor(pixels, dtype=torch.float64)
        depths = torch.as_tensor(depths, dtype=torch.float64)
        if pixels.shape[-1] != 2 or pixels.shape[:-1] != depths.shape:
            raise ValueError(f"PinholeCamera.back_project: pixels (..., 2) and depths (...) "
                             f"must match, got {tuple(pixels.shape)} and {tuple(depths.shape)}")
        k = self.intrinsics
        x = (pixels[..., 0] - k[0, 2]) / k[0, 0]
        y = (pixels[..., 1] - k[1, 2]) / k[1, 1]
        points = torch.stack([x, y, torch.ones_like(x)], dim=-1) * depths[..., None]
        return points.numpy() if is_numpy else points

    def visible(self, points_camera):
        """Boolean mask ``(...)``: in front of the camera and inside the image."""

        def fn(p):
            uv = self.project(p)
            return (
                (p[..., 2] > 1e-6)
                & (uv[..., 0] >= -0.5) & (uv[..., 0] <= self.width - 0.5)
                & (uv[..., 1] >= -0.5) & (uv[..., 1] <= self.height - 0.5)
            )

        return self._apply(fn, points_camera)


def head_camera() -> PinholeCamera:
    """The default egocentric head camera (the URDF's ``head_camera_optical_frame``)."""
    return PinholeCamera.from_fovy(
        HEAD_CAMERA_FOVY_DEG, HEAD_CAMERA_POSITION, pitch_deg=HEAD_CAMERA_PITCH_DEG
    )


def urdf_joint_limits(urdf_path: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) arrays (23,) of ``JOINT_NAMES`` read from the URDF."""
    path = Path(urdf_path) if urdf_path is not None else default_urdf_path()
    joints = {j.get("name"): j for j in ET.parse(path).getroot().iter("joint")}
    lower, upper = [], []
    for name in JOINT_NAMES:
        element = joints.get(name)
        limit = element.find("limit") if element is not None else None
        if limit is None:
            raise ValueError(f"{path}: joint {name!r} missing or has no <limit>")
        lower.append(float(limit.get("lower")))
        upper.append(float(limit.get("upper")))
    return np.array(lower), np.array(upper)


def clip_joint_positions(q, lower, upper):
    """Clip ``q`` (..., 23) to ``[lower, upper]``; torch or numpy in, same type out."""
    if q.shape[-1] != NUM_JOINTS:
        raise ValueError(f"joint positions must be (..., {NUM_JOINTS}), got {tuple(q.shape)}")
    if torch.is_tensor(q):
        lo = torch.as_tensor(lower, dtype=q.dtype, device=q.device)
        hi = torch.as_tensor(upper, dtype=q.dtype, device=q.device)
        return torch.maximum(torch.minimum(q, hi), lo)
    return np.clip(q, lower, upper)


class _LinkFK:
    """World positions (or, with ``poses``, 4x4 poses) of a few links, computed only along
    their ancestors.

    The tree (joint offsets and axes) comes from the pytorch-kinematics chain. A revolute
    joint's local rotation ``S R(axis, q)`` is expanded with Rodrigues' formula as
    ``S + sin(q) S K + (1 - cos(q)) S K^2`` (``K`` the axis cross matrix); frames needed only
    for their position skip the rotation. Several times faster than the chain's full-tree
    ``forward_kinematics``, which ``RobotKinematics.link_poses_world`` still uses.
    """

    def __init__(self, chain, links: tuple[str, ...], dtype, device, poses: bool = False
                 ) -> None:
        joint_names = chain.get_joint_parameter_names()
        records = {}  # name -> (parent name, static 4x4, axis or None, joint index)

        def walk(frame, parent):
            offset = np.eye(4)
            if frame.link is not None and frame.link.offset is not None:
                offset = offset @ frame.link.offset.get_matrix()[0].double().cpu().numpy()
            if frame.joint is not None and frame.joint.offset is not None:
                offset = offset @ frame.joint.offset.get_matrix()[0].double().cpu().numpy()
            moving = frame.joint is not None and frame.joint.joint_type == "revolute"
            if frame.joint is not None and frame.joint.joint_type not in ("revolute", "fixed"):
                raise ValueError(f"unsupported joint type {frame.joint.joint_type!r}")
            axis = frame.joint.axis.double().cpu().numpy() if moving else None
            index = joint_names.index(frame.joint.name) if moving else 0
            records[frame.name] = (parent, offset, axis, index)
            for child in frame.children:
                walk(child, frame.name)

        walk(chain._root, None)
        unknown = [n for n in links if n not in records]
        if unknown:
            raise ValueError(f"links not in the URDF: {unknown}")
        order: list[str] = []  # the links and their ancestors, each parent before its children
        for name in links:
            path = []
            while name is not None and name not in order:
                path.append(name)
                name = records[name][0]
            order.extend(reversed(path))
        index_of = {name: i for i, name in enumerate(order)}
        needs_rotation = {records[n][0] for n in order} | (set(links) if poses else set())
        self.poses = poses

        def t(x):
            return torch.as_tensor(x, dtype=dtype, device=device)

        # Per frame: (parent index or -1, joint index or -1, A, B, C, translation, whether its
        # rotation is needed) with local rotation A + sin(q) B + (1 - cos(q)) C.
        self.frames = []
        for name in order:
            parent, offset, axis, joint = records[name]
            s = offset[:3, :3]
            k = np.zeros((3, 3))
            if axis is not None:
                x, y, z = axis / np.linalg.norm(axis)
                k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
            self.frames.append((
                index_of[parent] if parent is not None else -1,
                joint if axis is not None else -1,
                t(s), t(s @ k), t(s @ k @ k), t(offset[:3, 3]),
                name in needs_rotation,
            ))
        self.outputs = [index_of[n] for n in links]

    def __call__(self, th: torch.Tensor) -> torch.Tensor:
        """``th`` (B, n) in chain joint order -> positions (B, len(links), 3), or with
        ``poses`` poses (B, len(links), 4, 4)."""
        sin = th.sin().T[..., None, None]  # (n, B, 1, 1)
        one_minus_cos = (1 - th.cos()).T[..., None, None]
        rots: list[torch.Tensor | None] = []
        positions: list[torch.Tensor] = []
        for parent, joint, a, b, c, trans, needs_rot in self.frames:
            if parent < 0:
                parent_rot, parent_pos = None, None
                position = trans.expand(th.shape[0], 3)
            else:
                parent_rot, parent_pos = rots[parent], positions[parent]
                position = parent_pos + parent_rot @ trans
            rot = None
            if needs_rot:
                local = a if joint < 0 else a + sin[joint] * b + one_minus_cos[joint] * c
                rot = local.expand(th.shape[0], 3, 3) if parent_rot is None else parent_rot @ local
            rots.append(rot)
            positions.append(position)
        if not self.poses:
            return torch.stack([positions[i] for i in self.outputs], dim=1)
        pose = th.new_zeros(th.shape[0], len(self.outputs), 4, 4)
        pose[..., 3, 3] = 1
        for k, i in enumerate(self.outputs):
            pose[:, k, :3, :3] = rots[i]
            pose[:, k, :3, 3] = positions[i]
        return pose


class RobotKinematics:
    """Batched FK of the 23-joint robot (pytorch-kinematics over the URDF)."""

    def __init__(self, urdf_path: str | Path | None = None, device="cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        import pytorch_kinematics as pk

        self.urdf_path = Path(urdf_path) if urdf_path is not None else default_urdf_path()
        self.device, self.dtype = torch.device(device), dtype
        self.chain = pk.build_chain_from_urdf(self.urdf_path.read_bytes()).to(
            dtype=dtype, device=self.device
        )
        chain_joints = self.chain.get_joint_parameter_names()
        missing = sorted(set(JOINT_NAMES) - set(chain_joints))
        if missing or len(chain_joints) != NUM_JOINTS:
            raise ValueError(
                f"{self.urdf_path}: expected movable joints {JOINT_NAMES}, got {chain_joints}"
            )
        #: chain order -> index into JOINT_NAMES order
        self._to_chain = torch.tensor([JOINT_NAMES.index(n) for n in chain_joints],
                                      device=self.device)
        lower, upper = urdf_joint_limits(self.urdf_path)
        self.lower = torch.as_tensor(lower, dtype=dtype, device=self.device)
        self.upper = torch.as_tensor(upper, dtype=dtype, device=self.device)
        self._keypoint_links = (WRIST_LINK,) + tuple(
            name for finger in FINGER_KEYPOINT_LINKS for name in finger
        )
        self._keypoint_fk = _LinkFK(self.chain, self._keypoint_links, self.dtype, self.device)
        self._wrist_fk = _LinkFK(self.chain, (WRIST_LINK,), self.dtype, self.device, poses=True)

    def clip(self, q: torch.Tensor) -> torch.Tensor:
        """Clip joint positions ``(..., 23)`` to the URDF limits."""
        return clip_joint_positions(q, self.lower, self.upper)

    def _prepare(self, q: torch.Tensor) -> torch.Tensor:
        q = torch.as_tensor(q, dtype=self.dtype, device=self.device)
        if q.shape[-1] != NUM_JOINTS:
            raise ValueError(f"joint positions must be (..., {NUM_JOINTS}), got {tuple(q.shape)}")
        return q.reshape(-1, NUM_JOINTS)[:, self._to_chain]

    def link_poses_world(self, q: torch.Tensor, links: tuple[str, ...]) -> torch.Tensor:
        """World poses ``(..., len(links), 4, 4)`` of the named URDF links."""
        frames = self.chain.get_frame_indices(*links)
        poses = self.chain.forward_kinematics(self._prepare(q), frames)
        stacked = torch.stack([poses[name].get_matrix() for name in links], dim=-3)
        return stacked.reshape(*q.shape[:-1], len(links), 4, 4)

    def keypoints_world(self, q: torch.Tensor) -> torch.Tensor:
        """Right-hand keypoints ``(..., 21, 3)`` (``HAND21`` order) in the world frame."""
        points = self._keypoint_fk(self._prepare(q))
        hand21 = allegro_to_hand21(points[:, 0], points[:, 1:].reshape(-1, 4, 4, 3))
        return hand21.reshape(*q.shape[:-1], 21, 3)

    def wrist_pose_world(self, q: torch.Tensor) -> torch.Tensor:
        """World pose ``(..., 4, 4)`` of the wrist frame (z along the hand, towards the fingers)."""
        return self._wrist_fk(self._prepare(q)).reshape(*q.shape[:-1], 4, 4)

    def keypoints_camera(self, q: torch.Tensor, camera: PinholeCamera) -> torch.Tensor:
        """Right-hand keypoints ``(..., 21, 3)`` in ``camera``'s OpenCV frame."""
        return camera.world_to_camera(self.keypoints_world(q))

    def keypoints_pixels(self, q: torch.Tensor, camera: PinholeCamera) -> torch.Tensor:
        """Pixel coordinates ``(..., 21, 2)`` (u, v) of the right-hand keypoints."""
        return camera.project(self.keypoints_camera(q, camera))

    def head_camera_pose_world(self) -> torch.Tensor:
        """World pose ``(4, 4)`` of the URDF's head camera optical frame."""
        q = torch.zeros(NUM_JOINTS, dtype=self.dtype, device=self.device)
        return self.link_poses_world(q, (HEAD_CAMERA_FRAME,))[0]
