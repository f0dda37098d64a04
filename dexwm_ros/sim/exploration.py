"""Exploration episodes without task success (paper section 4.5, appendix C.2), stored as HDF5.

Modes (``--mode mixed`` cycles through them by episode index):

* ``lift_replay``: a scripted lift (approach from above, descend, close, lift) towards an
  object's place, replayed after the objects were shuffled, with its target shifted and
  continuous (Ornstein-Uhlenbeck) noise on every joint target;
* ``random_targets``: programmatic random 3D wrist targets (IK) with random hand poses,
  interpolated in joint space;
* ``hand_open_close``: the arm holds still while the hand opens and closes.

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

import argparse
import json
import math
import os
import time
from pathlib import Path

import h5py
import mujoco
import numpy as np

FORMAT = "dexwm_exploration"
VERSION = 1
MODES = ("lift_replay", "random_targets", "hand_open_close")
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


def read_episode(path: str | Path) -> dict:
    """Read an episode: every dataset as a numpy array plus the attributes (JSON decoded)."""
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != FORMAT:
            raise ValueError(f"{path}: not a {FORMAT} file (format={f.attrs.get('format')!r})")
        if int(f.attrs["version"]) != VERSION:
            raise ValueError(f"{path}: unsupported version {f.attrs['version']}")
        missing = [n for n in _DATASETS if n not in f]
        if missing:
            raise ValueError(f"{path}: missing datasets {missing}")
        out = {name: f[name][()] for name in _DATASETS}
        out.update(
            format=FORMAT, version=VERSION, mode=str(f.attrs["mode"]), seed=int(f.attrs["seed"]),
            control_hz=float(f.attrs["control_hz"]),
            joint_names=json.loads(f.attrs["joint_names"]),
            object_names=json.loads(f.attrs["object_names"]),
        )
    return out


# --------------------------------------------------------------------------- motion scripts
def _ou_noise(rng: np.random.Generator, steps: int, sigma: np.ndarray,
              theta: float = 0.3) -> np.ndarray:
    """Ornstein-Uhlenbeck noise (steps, D) with stationary std ``sigma``."""
    noise = np.zeros((steps, sigma.shape[0]))
    x = rng.normal(0, sigma)
    scale = sigma * math.sqrt(1 - (1 - theta) ** 2)
    for t in range(steps):
        x = (1 - theta) * x + rng.normal(0, scale)
        noise[t] = x
    return noise


def _interpolate(waypoints: list[np.ndarray], times: list[int], steps: int) -> np.ndarray:
    """Piecewise-linear joint targets (steps, 23) through ``waypoints`` at step ``times``."""
    out = np.zeros((steps, waypoints[0].shape[0]))
    for j in range(out.shape[1]):
        out[:, j] = np.interp(np.arange(steps), times, [w[j] for w in waypoints])
    return out


def lift_replay_targets(task, rng: np.random.Generator, steps: int) -> np.ndarray:
    """A noisy lift towards a shuffled object's place (no successful grasp intended)."""
    from dexwm_ros.sim.tasks import HAND_CLOSED, HAND_PRESHAPE

    k = int(rng.integers(len(task.scene.object_names)))
    place = task.object_positions.copy()
    place[k, :2] += rng.uniform(-0.05, 0.05, 2)
    # Shuffle the objects: the replayed motion was "recorded" for another arrangement.
    perm = rng.permutation(len(place))
    task.object_positions = task.object_positions[perm]
    task._set_objects(task.data, task.object_positions, task.object_yaws[perm])
    mujoco.mj_forward(task.model, task.data)
    start = task.joint_positions()
    above = task.grasp_joint_positions(k, place, hand=HAND_PRESHAPE, lift=0.12)
    down = task.grasp_joint_positions(k, place, hand=HAND_PRESHAPE)
    closed = task.grasp_joint_positions(k, place, hand=HAND_CLOSED)
    lifted = task.grasp_joint_positions(k, place, hand=HAND_CLOSED, lift=0.2)
    times = list(np.linspace(0, steps - 1, 6).round().astype(int))
    targets = _interpolate([start, above, down, closed, lifted, lifted], times, steps)
    sigma = np.r_[np.full(7, 0.06), np.full(16, 0.1)]
    return targets + _ou_noise(rng, steps, sigma)


def random_target_targets(task, rng: np.random.Generator, steps: int) -> np.ndarray:
    """Random reachable 3D wrist targets with random hand poses, joint-space interpolated."""
    from dexwm_ros.sim.scene import TABLE_TOP_Z
    from dexwm_ros.sim.tasks import HAND_CLOSED, HAND_DOWN, HAND_OPEN, yaw_rotation

    n = max(2, steps // 8)
    waypoints = [task.joint_positions()]
    for _ in range(n):
        target = rng.uniform([-0.15, -0.45, TABLE_TOP_Z + 0.18], [0.25, 0.1, TABLE_TOP_Z + 0.5])
        tilt = yaw_rotation(rng.uniform(-0.8, 0.8))
        hand = rng.uniform(HAND_OPEN, HAND_CLOSED)
        q, _ = task.wrist_ik(target, HAND_DOWN @ tilt, hand, q_init=waypoints[-1])
        waypoints.append(q)
    times = list(np.linspace(0, steps - 1, n + 1).round().astype(int))
    return _interpolate(waypoints, times, steps)


def hand_open_close_targets(task, rng: np.random.Generator, steps: int) -> np.ndarray:
    """The arm holds; the hand moves between random open and (partly) closed poses."""
    from dexwm_ros.sim.tasks import HAND_CLOSED, HAND_OPEN

    start = task.joint_positions()
    waypoints, times, t = [start], [0], 0
    closing = True
    while t < steps - 1:
        t = min(steps - 1, t + int(rng.integers(3, 8)))
        amount = rng.uniform(0.5, 1.0) if closing else rng.uniform(0.0, 0.3)
        q = start.copy()
        q[7:] = HAND_OPEN + amount * (HAND_CLOSED - HAND_OPEN) + rng.normal(0, 0.05, 16)
        waypoints.append(q)
        times.append(t)
        closing = not closing
    return _interpolate(waypoints, times, steps)


_SCRIPTS = {
    "lift_replay": lift_replay_targets,
    "random_targets": random_target_targets,
    "hand_open_close": hand_open_close_targets,
}


def generate_episode(task, kinematics, mode: str, seed: int, steps: int) -> dict:
    """Run one exploration episode in ``task`` (reset to ``seed``) and return its arrays."""
    import torch

    if mode not in _SCRIPTS:
        raise ValueError(f"unknown mode {mode!r}; choose from {MODES}")
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    task.reset(seed)
    rng = np.random.default_rng([seed, MODES.index(mode)])
    targets = _SCRIPTS[mode](task, rng, steps)
    images, joints, poses, stamps = [], [], [], []
    for t in range(steps):
        images.append(task.render())
        joints.append(task.joint_positions())
        poses.append(task.object_poses())
        stamps.append(task.time)
        task.step(targets[t])
    joints = np.stack(joints)
    keypoints = kinematics.keypoints_camera(torch.as_tensor(joints, dtype=torch.float32),
                                            task.camera)
    pose = task.camera.camera_to_world.numpy()
    return dict(
        images=np.stack(images), joint_positions=joints, hand_keypoints_camera=keypoints.numpy(),
        camera_to_world=np.broadcast_to(pose, (steps, 4, 4)),
        camera_intrinsics=task.camera.intrinsics.numpy(), object_poses=np.stack(poses),
        timestamps=np.array(stamps), mode=mode, seed=seed, control_hz=task.control_hz,
        joint_names=task.joint_names, object_names=task.scene.object_names,
    )


def main(argv: list[str] | None = None) -> int:
    """``dexwm-explore``: generate exploration episodes (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="dexwm-explore", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--episodes", type=int, default=10, help="number of episodes")
    parser.add_argument("--steps", type=int, default=40, help="frames per episode")
    parser.add_argument("--mode", choices=("mixed",) + MODES, default="mixed")
    parser.add_argument("--seed", type=int, default=0, help="seed of episode 0 (+index)")
    parser.add_argument("--control-hz", type=float, default=5.0)
    parser.add_argument("--overwrite", action="store_true", help="replace existing episodes")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error("--episodes must be >= 1")

    from tqdm import tqdm

    from dexwm_ros.core.kinematics import RobotKinematics
    from dexwm_ros.sim.tasks import make_task

    todo = [i for i in range(args.episodes)
            if args.overwrite or not episode_path(args.out, i).exists()]
    skipped = args.episodes - len(todo)
    if skipped:
        print(f"resuming: {skipped} episode(s) already in {args.out}, {len(todo)} to generate")
    if not todo:
        return 0
    kinematics = RobotKinematics()
    frames, start = 0, time.perf_counter()
    with make_task("reach", seed=args.seed, control_hz=args.control_hz) as task:
        for i in tqdm(todo, desc="exploration episodes", unit="ep"):
            mode = MODES[i % len(MODES)] if args.mode == "mixed" else args.mode
            episode = generate_episode(task, kinematics, mode, args.seed + i, args.steps)
            write_episode(episode_path(args.out, i), overwrite=args.overwrite, **episode)
            frames += args.steps
    elapsed = time.perf_counter() - start
    print(f"generated {len(todo)} episode(s), {frames} frames in {elapsed:.1f} s "
          f"({frames / elapsed:.2f} frames/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
