"""Exploration episode files (HDF5), written by ``dexwm-explore`` and read by training.

File format, one file per episode ``episode_000000.h5`` (T frames; frame t is observed before
the joint targets of step t are applied; K objects):

* attributes: ``format = "dexwm_exploration"``, ``version = 1``, ``mode``, ``seed``,
  ``control_hz``, ``joint_names`` (JSON list of 23), ``object_names`` (JSON list of K);
* ``images`` uint8 (T, 224, 392, 3): head-camera RGB;
* ``joint_positions`` float32 (T, 23): measured joints in ``JOINT_NAMES`` order;
* ``hand_keypoints_camera`` float32 (T, 21, 3): right-hand ``HAND21`` keypoints (FK of the
  measured joints) in the camera frame (OpenCV, metres);
* ``camera_to_world`` float32 (T, 4, 4); ``camera_intrinsics`` float32 (3, 3);
* ``object_poses`` float32 (T, K, 7): world position and quaternion (w, x, y, z);
* ``timestamps`` float64 (T,): simulation time in seconds.

Files are written to a temporary name and renamed, so an interrupted run leaves no partial
episode; a rerun skips existing episodes (resume) unless ``--overwrite``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

FORMAT = "dexwm_exploration"
VERSION = 1
_DATASETS = {
    "images": np.uint8,
    "joint_positions": np.float32,
    "hand_keypoints_camera": np.float32,
    "camera_to_world": np.float32,
    "camera_intrinsics": np.float32,
    "object_poses": np.float32,
    "timestamps": np.float64,
}


def episode_path(out_dir: str | Path, index: int) -> Path:
    return Path(out_dir) / f"episode_{index:06d}.h5"


def write_episode(path: str | Path, *, images, joint_positions, hand_keypoints_camera,
                  camera_to_world, camera_intrinsics, object_poses, timestamps, mode: str,
                  seed: int, control_hz: float, joint_names, object_names,
                  overwrite: bool = False) -> Path:
    """Validate and write one episode (format in the module docstring); returns the path."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    arrays = {
        "images": np.asarray(images), "joint_positions": np.asarray(joint_positions),
        "hand_keypoints_camera": np.asarray(hand_keypoints_camera),
        "camera_to_world": np.asarray(camera_to_world),
        "camera_intrinsics": np.asarray(camera_intrinsics),
        "object_poses": np.asarray(object_poses), "timestamps": np.asarray(timestamps),
    }
    steps = arrays["timestamps"].shape[0] if arrays["timestamps"].ndim == 1 else -1
    n_objects = len(object_names)
    expected = {
        "images": (steps, None, None, 3), "joint_positions": (steps, len(joint_names)),
        "hand_keypoints_camera": (steps, 21, 3), "camera_to_world": (steps, 4, 4),
        "camera_intrinsics": (3, 3), "object_poses": (steps, n_objects, 7),
        "timestamps": (steps,),
    }
    for name, shape in expected.items():
        got = arrays[name].shape
        if len(got) != len(shape) or any(
            s is not None and s != g for s, g in zip(shape, got, strict=True)
        ):
            raise ValueError(f"write_episode: {name} has shape {got}, expected {shape} "
                             "(None = any)")
    if arrays["images"].dtype != np.uint8:
        raise ValueError(f"write_episode: images must be uint8, got {arrays['images'].dtype}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["version"] = VERSION
        f.attrs["mode"] = mode
        f.attrs["seed"] = int(seed)
        f.attrs["control_hz"] = float(control_hz)
        f.attrs["joint_names"] = json.dumps(list(joint_names))
        f.attrs["object_names"] = json.dumps(list(object_names))
        for name, dtype in _DATASETS.items():
            data = arrays[name].astype(dtype, copy=False)
            if name == "images":
                f.create_dataset(name, data=data, chunks=(1, *data.shape[1:]),
                                 compression="lzf")
            else:
                f.create_dataset(name, data=data)
    os.replace(tmp, path)
    return path


def check_episode(f: h5py.File, path: str | Path) -> None:
    """Raise ``ValueError`` naming the problem unless ``f`` is a valid episode file."""
    if f.attrs.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} file (format={f.attrs.get('format')!r})")
    if int(f.attrs.get("version", -1)) != VERSION:
        raise ValueError(f"{path}: unsupported version {f.attrs.get('version')}")
    missing = [n for n in _DATASETS if n not in f]
    if missing:
        raise ValueError(f"{path}: missing datasets {missing}")


def read_episode(path: str | Path) -> dict:
    """Read an episode: every dataset as a numpy array plus the attributes (JSON decoded)."""
    with h5py.File(path, "r") as f:
        check_episode(f, path)
        out = {name: f[name][()] for name in _DATASETS}
        out.update(
            format=FORMAT, version=VERSION, mode=str(f.attrs["mode"]), seed=int(f.attrs["seed"]),
            control_hz=float(f.attrs["control_hz"]),
            joint_names=json.loads(f.attrs["joint_names"]),
            object_names=json.loads(f.attrs["object_names"]),
        )
    return out
