"""Tiny EgoDex / DROID / simulator episodes written in the real on-disk formats.

Videos are H.264 mp4 written with PyAV; frame ``i`` is a uniform grey of level
``frame_level(i)``, so a test can tell which frame a decoder returned.
"""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
from scipy.spatial.transform import Rotation

from dexwm_ros.sim.episode_format import write_episode
from training.episodes import egodex_joint_names, egodex_metacarpal_names
from training.video import write_video


def frame_level(i: int) -> int:
    return 20 + 5 * i


def camera_poses(num: int, seed: int = 0) -> np.ndarray:
    """Camera-to-world poses drifting and turning slowly (OpenCV axes)."""
    rng = np.random.default_rng(seed)
    poses = np.tile(np.eye(4), (num, 1, 1))
    base = Rotation.from_euler("xyz", rng.uniform(-0.3, 0.3, 3))
    for i in range(num):
        poses[i, :3, :3] = (base * Rotation.from_euler("xyz", [0.01 * i, -0.02 * i, 0.015 * i])
                            ).as_matrix()
        poses[i, :3, 3] = [0.1 + 0.01 * i, -0.2 + 0.005 * i, 1.0 - 0.004 * i]
    return poses


def hand_in_camera(num: int, side: int, seed: int = 1) -> np.ndarray:
    """(num, 21, 3) hand keypoints in the camera frame, 0.4-0.6 m ahead, moving."""
    rng = np.random.default_rng(seed + side)
    base = np.concatenate([np.zeros((1, 3)), rng.uniform(-0.05, 0.05, (20, 3))])
    base += np.array([(-0.08 if side == 0 else 0.08), 0.03, 0.5])
    drift = np.linspace(0, 1, num)[:, None, None] * np.array([0.04, -0.02, 0.05])
    return base[None] + drift


def to_world(points_camera: np.ndarray, poses: np.ndarray) -> np.ndarray:
    return np.einsum("nij,nkj->nki", poses[:, :3, :3], points_camera) + poses[:, None, :3, 3]


def video_frames(num: int, height: int, width: int) -> np.ndarray:
    frames = np.zeros((num, height, width, 3), dtype=np.uint8)
    for i in range(num):
        frames[i] = frame_level(i)
    return frames


def write_egodex(directory: Path, num: int = 40, height: int = 144, width: int = 256,
                 fps: float = 30.0, intrinsics=None, name: str = "task/0"):
    """``<task>/<n>.mp4`` + ``.hdf5``; returns dict of ground truth arrays."""
    base = Path(directory) / name
    base.parent.mkdir(parents=True, exist_ok=True)
    k = np.array(intrinsics if intrinsics is not None else
                 [[120.0, 0, width / 2], [0, 120.0, height / 2], [0, 0, 1]])
    poses = camera_poses(num)
    hands_cam = [hand_in_camera(num, s) for s in (0, 1)]
    hands_world = [to_world(h, poses) for h in hands_cam]
    write_video(base.with_suffix(".mp4"), video_frames(num, height, width), fps)
    with h5py.File(base.with_suffix(".hdf5"), "w") as f:
        f["camera/intrinsic"] = k.astype(np.float32)
        f["transforms/camera"] = poses.astype(np.float32)
        for side, prefix in enumerate(("left", "right")):
            for j, joint in enumerate(egodex_joint_names(prefix)):
                tf = np.tile(np.eye(4), (num, 1, 1))
                tf[:, :3, 3] = hands_world[side][:, j]
                f[f"transforms/{joint}"] = tf.astype(np.float32)
                conf = np.ones(num, dtype=np.float32)
                if prefix == "left" and j == 4:
                    conf[::2] = 0.1  # left thumb tip poorly tracked on even frames
                f[f"confidences/{joint}"] = conf
            for joint in egodex_metacarpal_names(prefix):  # present in the files, unused
                tf = np.tile(np.eye(4), (num, 1, 1))
                tf[:, :3, 3] = 99.0
                f[f"transforms/{joint}"] = tf.astype(np.float32)
        f["transforms/hip"] = np.tile(np.eye(4), (num, 1, 1)).astype(np.float32)
        f.attrs["llm_description"] = "pick up the cup"
    return {"poses": poses.astype(np.float32).astype(np.float64), "intrinsics": k,
            "left_world": hands_world[0].astype(np.float32).astype(np.float64),
            "right_world": hands_world[1].astype(np.float32).astype(np.float64),
            "hdf5": base.with_suffix(".hdf5"), "mp4": base.with_suffix(".mp4")}


def write_droid(directory: Path, num: int = 30, height: int = 72, width: int = 128,
                video_fps: float = 15.0, name: str = "lab/success/2024-01-01/ep0"):
    """A raw DROID episode directory; returns dict of ground truth arrays."""
    episode = Path(directory) / name
    (episode / "recordings" / "MP4").mkdir(parents=True, exist_ok=True)
    serial = "22008760"
    t = np.arange(num)
    cartesian = np.stack([0.4 + 0.005 * t, 0.01 * np.sin(t / 5), 0.3 - 0.002 * t,
                          np.pi + 0.0 * t, 0.02 * t, 0.01 * t], axis=1)
    gripper = np.clip((t - num / 2) / 5, 0, 1)
    extrinsics = [0.9, -0.3, 0.5, -2.2, 0.0, 0.9]  # camera-to-base, xyz + euler xyz
    meta = {"uuid": "lab+abc+2024", "ext1_cam_serial": serial, "ext2_cam_serial": "1",
            "wrist_cam_serial": "2", "ext1_cam_extrinsics": extrinsics,
            "ext2_cam_extrinsics": [0.0] * 6, "wrist_cam_extrinsics": [0.0] * 6,
            "trajectory_length": num}
    (episode / "metadata_lab+abc+2024.json").write_text(json.dumps(meta))
    frames_total = int(round((num - 1) * video_fps / 15.0)) + 1
    write_video(episode / "recordings" / "MP4" / f"{serial}.mp4",
                video_frames(frames_total, height, width), video_fps)
    with h5py.File(episode / "trajectory.h5", "w") as f:
        f["observation/robot_state/cartesian_position"] = cartesian
        f["observation/robot_state/gripper_position"] = gripper
        f["observation/robot_state/joint_positions"] = np.zeros((num, 7))
        f["action/cartesian_position"] = cartesian
    intrinsics = [70.0, 70.0, width / 2, height / 2]
    return {"cartesian": cartesian, "gripper": gripper, "extrinsics": np.array(extrinsics),
            "intrinsics": intrinsics, "directory": episode}


def write_sim(path: Path, num: int = 30, control_hz: float = 10.0, height: int = 224,
              width: int = 392, seed: int = 0):
    """An exploration HDF5 episode (format ``dexwm_exploration`` version 1)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    poses = camera_poses(num, seed)
    right = hand_in_camera(num, 1, seed)
    k = np.array([[200.0, 0, width / 2], [0, 200.0, height / 2], [0, 0, 1]])
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 255, (num, height, width, 3), dtype=np.uint8)
    write_episode(path, images=images, joint_positions=rng.normal(size=(num, 23)),
                  hand_keypoints_camera=right, camera_to_world=poses, camera_intrinsics=k,
                  object_poses=np.zeros((num, 1, 7)), timestamps=np.arange(num) / control_hz,
                  mode="random_targets", seed=seed, control_hz=control_hz,
                  joint_names=[f"joint_{i}" for i in range(23)], object_names=["box"],
                  overwrite=True)
    return {"poses": poses.astype(np.float32).astype(np.float64),
            "right_camera": right.astype(np.float32).astype(np.float64), "intrinsics": k,
            "images": images}
