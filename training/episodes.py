"""Episode readers for EgoDex, DROID (raw) and the simulator's exploration HDF5 files.

Every reader exposes the same view of one recording, read lazily (only the frames and poses a
clip needs are read from disk):

* ``frames(indices)`` -> uint8 ``(N, 224, 392, 3)`` resized and centre-cropped images,
* ``keypoints(indices)`` -> ``(N, 42, 3)`` world-frame keypoints (left hand rows 0-20, right
  hand 21-41, ``HAND21`` order; zeros for a hand the episode does not have),
* ``keypoint_valid(indices)`` -> ``(N, 42)`` bool (hand present and tracking confident),
* ``camera_to_world(indices)`` -> ``(N, 4, 4)`` OpenCV camera poses,
* ``intrinsics`` -> ``(3, 3)`` camera matrix of the 224 x 392 images.
"""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import torch

from dexwm_ros.core.actions import droid_gripper_keypoints
from dexwm_ros.sim.episode_format import check_episode
from training.video import CropGeometry, read_frames, resize_center_crop, video_info

HANDS = ("left", "right")
_EGODEX_FINGERS = ("Index", "Middle", "Ring", "Little")
_EGODEX_JOINTS = ("Knuckle", "IntermediateBase", "IntermediateTip", "Tip")


def egodex_joint_names(side: str) -> list[str]:
    """EgoDex joint names of one hand in ``HAND21`` order (the 4 metacarpals left out)."""
    names = [f"{side}Hand"] + [f"{side}Thumb{j}" for j in _EGODEX_JOINTS]
    names += [f"{side}{f}Finger{j}" for f in _EGODEX_FINGERS for j in _EGODEX_JOINTS]
    return names


def egodex_metacarpal_names(side: str) -> list[str]:
    return [f"{side}{f}FingerMetacarpal" for f in _EGODEX_FINGERS]


def pose_from_xyz_euler(pose: np.ndarray) -> np.ndarray:
    """``(..., 6)`` [x, y, z, roll, pitch, yaw] (extrinsic xyz Euler, DROID) -> ``(..., 4, 4)``."""
    from scipy.spatial.transform import Rotation

    pose = np.asarray(pose, dtype=np.float64)
    if pose.shape[-1] != 6:
        raise ValueError(f"expected (..., 6) xyz + euler poses, got {pose.shape}")
    out = np.zeros(pose.shape[:-1] + (4, 4))
    out[..., :3, :3] = Rotation.from_euler("xyz", pose[..., 3:].reshape(-1, 3)).as_matrix(
    ).reshape(pose.shape[:-1] + (3, 3))
    out[..., :3, 3] = pose[..., :3]
    out[..., 3, 3] = 1.0
    return out


def _index_array(indices, length: int, name: str) -> np.ndarray:
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= length):
        raise IndexError(f"{name}: frame index out of range [0, {length}): {idx.tolist()}")
    return idx


def _read_rows(dataset: h5py.Dataset, idx: np.ndarray) -> np.ndarray:
    """Rows ``idx`` (any order, repeats allowed) of an HDF5 dataset, reading one span."""
    if idx.size == 0:
        return np.zeros((0,) + dataset.shape[1:], dtype=dataset.dtype)
    lo, hi = int(idx.min()), int(idx.max()) + 1
    return dataset[lo:hi][idx - lo]


class Episode:
    """Common interface; see the module docstring."""

    name: str
    fps: float
    num_frames: int
    hands: tuple[bool, bool]  # (left, right) present

    def frames(self, indices) -> np.ndarray:
        raise NotImplementedError

    def keypoints(self, indices) -> np.ndarray:
        raise NotImplementedError

    def keypoint_valid(self, indices) -> np.ndarray:
        """(N, 42) visibility; by default every keypoint of a present hand is valid."""
        idx = _index_array(indices, self.num_frames, self.name)
        valid = np.zeros((idx.size, 42), dtype=bool)
        valid[:, :21], valid[:, 21:] = self.hands
        return valid

    def camera_to_world(self, indices) -> np.ndarray:
        raise NotImplementedError

    @property
    def intrinsics(self) -> np.ndarray:
        raise NotImplementedError


class EgoDexEpisode(Episode):
    """One EgoDex recording: ``<name>.mp4`` (30 Hz) and ``<name>.hdf5`` with
    ``transforms/<joint>`` (N, 4, 4) world poses, ``transforms/camera`` (camera to world,
    OpenCV axes as in the official projection code), ``camera/intrinsic`` (3, 3) and optional
    ``confidences/<joint>`` (N,)."""

    def __init__(self, hdf5_path: str | Path, video_path: str | Path | None = None,
                 name: str | None = None, min_confidence: float = 0.5):
        self.hdf5_path = Path(hdf5_path)
        self.video_path = Path(video_path) if video_path else self.hdf5_path.with_suffix(".mp4")
        if not self.video_path.exists():
            raise FileNotFoundError(f"EgoDex video {self.video_path} not found")
        self.name = name or str(self.hdf5_path.with_suffix(""))
        self.min_confidence = min_confidence
        self.hands = (True, True)
        info = video_info(self.video_path)
        with h5py.File(self.hdf5_path, "r") as f:
            for key in ("transforms/camera", "camera/intrinsic"):
                if key not in f:
                    raise ValueError(f"{self.hdf5_path}: missing '{key}'")
            missing = [j for s in HANDS for j in egodex_joint_names(s)
                       if f"transforms/{j}" not in f]
            if missing:
                raise ValueError(f"{self.hdf5_path}: missing joints {missing}")
            poses = f["transforms/camera"].shape[0]
            native_k = np.asarray(f["camera/intrinsic"][()], dtype=np.float64)
            self._has_confidence = "confidences" in f
        self.fps = info.fps
        self.num_frames = min(poses, info.num_frames)
        self._intrinsics = CropGeometry.for_source(info.height, info.width).intrinsics(native_k)
        self._joints = [j for s in HANDS for j in egodex_joint_names(s)]

    def frames(self, indices) -> np.ndarray:
        return read_frames(self.video_path, _index_array(indices, self.num_frames, self.name))

    def keypoints(self, indices) -> np.ndarray:
        idx = _index_array(indices, self.num_frames, self.name)
        with h5py.File(self.hdf5_path, "r") as f:
            points = [_read_rows(f[f"transforms/{j}"], idx)[:, :3, 3] for j in self._joints]
        return np.stack(points, axis=1).astype(np.float64)

    def keypoint_valid(self, indices) -> np.ndarray:
        idx = _index_array(indices, self.num_frames, self.name)
        if not self._has_confidence:
            return np.ones((idx.size, 42), dtype=bool)
        with h5py.File(self.hdf5_path, "r") as f:
            conf = [
                _read_rows(f[f"confidences/{j}"], idx) if f"confidences/{j}" in f
                else np.ones(idx.size) for j in self._joints
            ]
        return np.stack(conf, axis=1) >= self.min_confidence

    def camera_to_world(self, indices) -> np.ndarray:
        idx = _index_array(indices, self.num_frames, self.name)
        with h5py.File(self.hdf5_path, "r") as f:
            return _read_rows(f["transforms/camera"], idx).astype(np.float64)

    @property
    def intrinsics(self) -> np.ndarray:
        return self._intrinsics


class DroidEpisode(Episode):
    """One raw DROID episode directory (15 Hz): ``trajectory.h5`` with
    ``observation/robot_state/cartesian_position`` (T, 6) and ``gripper_position`` (T,),
    ``metadata_*.json`` with ``<camera>_cam_serial`` and ``<camera>_cam_extrinsics``
    (camera-to-base, xyz + Euler xyz), and ``recordings/MP4/<serial>.mp4``.

    Per-step extrinsics ``observation/camera_extrinsics/<serial>_left`` are preferred when
    present (needed for the moving wrist camera). DROID raw episodes carry no intrinsics in
    the metadata; they come from ``<camera>_cam_intrinsics`` in the metadata if present, else
    ``intrinsics`` ([fx, fy, cx, cy] or 3x3 at the video's native resolution). Step ``i`` is
    video frame ``round(i * video_fps / control_hz)``. The gripper becomes the right hand via
    ``droid_gripper_keypoints`` (paper appendix C.2); the left hand is absent. The dummy points
    are no hand seen in the image, so DexWM supervises no keypoints on DROID: every keypoint is
    invalid for the hand-consistency loss and for PCK (``keypoint_valid`` is all False).
    """

    control_hz = 15.0

    def __init__(self, directory: str | Path, camera: str = "ext1", name: str | None = None,
                 intrinsics=None):
        self.directory = Path(directory)
        self.name = name or str(self.directory)
        self.hands = (False, True)
        metas = sorted(self.directory.glob("metadata_*.json"))
        if not metas:
            raise FileNotFoundError(f"{self.directory}: no metadata_*.json")
        meta = json.loads(metas[0].read_text())
        if f"{camera}_cam_serial" not in meta:
            raise ValueError(f"{metas[0]}: no '{camera}_cam_serial' (camera must be ext1, ext2 "
                             f"or wrist)")
        self.serial = str(meta[f"{camera}_cam_serial"])
        self.video_path = self.directory / "recordings" / "MP4" / f"{self.serial}.mp4"
        if not self.video_path.exists():
            raise FileNotFoundError(f"DROID video {self.video_path} not found")
        self.trajectory_path = self.directory / "trajectory.h5"
        native_k = meta.get(f"{camera}_cam_intrinsics", intrinsics)
        if native_k is None:
            raise ValueError(f"{self.directory}: no intrinsics for camera {camera}; give "
                             f"'intrinsics' [fx, fy, cx, cy] in the dataset config")
        native_k = np.asarray(native_k, dtype=np.float64)
        if native_k.shape == (4,):
            fx, fy, cx, cy = native_k
            native_k = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])
        info = video_info(self.video_path)
        self._intrinsics = CropGeometry.for_source(info.height, info.width).intrinsics(native_k)
        self._video_fps = info.fps
        with h5py.File(self.trajectory_path, "r") as f:
            steps = f["observation/robot_state/cartesian_position"].shape[0]
            key = f"observation/camera_extrinsics/{self.serial}_left"
            self._extrinsics_key = key if key in f else None
        if self._extrinsics_key is None:
            if f"{camera}_cam_extrinsics" not in meta:
                raise ValueError(f"{metas[0]}: no '{camera}_cam_extrinsics'")
            self._static_pose = pose_from_xyz_euler(np.asarray(meta[f"{camera}_cam_extrinsics"]))
        self.fps = self.control_hz
        video_steps = int(np.floor((info.num_frames - 1) * self.control_hz / info.fps + 1e-6)) + 1
        self.num_frames = min(steps, video_steps)

    def video_indices(self, indices) -> np.ndarray:
        idx = _index_array(indices, self.num_frames, self.name)
        return np.round(idx * self._video_fps / self.control_hz).astype(np.int64)

    def frames(self, indices) -> np.ndarray:
        return read_frames(self.video_path, self.video_indices(indices))

    def gripper_state(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """End-effector poses ``(N, 4, 4)`` in the base frame and closed fractions ``(N,)``."""
        idx = _index_array(indices, self.num_frames, self.name)
        with h5py.File(self.trajectory_path, "r") as f:
            cart = _read_rows(f["observation/robot_state/cartesian_position"], idx)
            grip = _read_rows(f["observation/robot_state/gripper_position"], idx)
        return pose_from_xyz_euler(cart), np.clip(np.asarray(grip, dtype=np.float64), 0, 1)

    def keypoints(self, indices) -> np.ndarray:
        ee, closed = self.gripper_state(indices)
        right = droid_gripper_keypoints(torch.from_numpy(ee[:, :3, 3]), torch.from_numpy(closed))
        out = np.zeros((len(ee), 42, 3))
        out[:, 21:] = right.numpy()
        return out

    def keypoint_valid(self, indices) -> np.ndarray:
        idx = _index_array(indices, self.num_frames, self.name)
        return np.zeros((idx.size, 42), dtype=bool)

    def camera_to_world(self, indices) -> np.ndarray:
        idx = _index_array(indices, self.num_frames, self.name)
        if self._extrinsics_key is None:
            return np.repeat(self._static_pose[None], idx.size, axis=0)
        with h5py.File(self.trajectory_path, "r") as f:
            return pose_from_xyz_euler(_read_rows(f[self._extrinsics_key], idx))

    @property
    def intrinsics(self) -> np.ndarray:
        return self._intrinsics


class SimEpisode(Episode):
    """One exploration episode of the simulator (HDF5, attrs ``format="dexwm_exploration"``,
    ``version=1``, ``control_hz``; datasets ``images`` uint8 (T, H, W, 3),
    ``hand_keypoints_camera`` (T, 21, 3) right hand in the camera frame, ``camera_to_world``
    (T, 4, 4), ``camera_intrinsics`` (3, 3)). Only the right hand is present."""

    def __init__(self, path: str | Path, name: str | None = None):
        self.path = Path(path)
        self.name = name or str(self.path.with_suffix(""))
        self.hands = (False, True)
        with h5py.File(self.path, "r") as f:
            check_episode(f, self.path)
            self.fps = float(f.attrs["control_hz"])
            self.num_frames = int(f["images"].shape[0])
            height, width = f["images"].shape[1:3]
            native_k = np.asarray(f["camera_intrinsics"][()], dtype=np.float64)
        self._geometry = CropGeometry.for_source(height, width)
        self._intrinsics = self._geometry.intrinsics(native_k)

    def frames(self, indices) -> np.ndarray:
        idx = _index_array(indices, self.num_frames, self.name)
        with h5py.File(self.path, "r") as f:
            images = _read_rows(f["images"], idx)
        return resize_center_crop(images)

    def keypoints(self, indices) -> np.ndarray:
        idx = _index_array(indices, self.num_frames, self.name)
        with h5py.File(self.path, "r") as f:
            camera = _read_rows(f["hand_keypoints_camera"], idx).astype(np.float64)
            pose = _read_rows(f["camera_to_world"], idx).astype(np.float64)
        out = np.zeros((idx.size, 42, 3))
        out[:, 21:] = np.einsum("nij,nkj->nki", pose[:, :3, :3], camera) + pose[:, None, :3, 3]
        return out

    def camera_to_world(self, indices) -> np.ndarray:
        idx = _index_array(indices, self.num_frames, self.name)
        with h5py.File(self.path, "r") as f:
            return _read_rows(f["camera_to_world"], idx).astype(np.float64)

    @property
    def intrinsics(self) -> np.ndarray:
        return self._intrinsics
