"""Exploration episodes without task success (paper section 4.5, appendix C.2), stored as HDF5.

Modes (``--mode mixed`` cycles through the first three, the paper's, by episode index):

* ``lift_replay``: a scripted lift (approach from above, descend, close, lift) towards an
  object's place, replayed after the objects were shuffled, with its target shifted and
  continuous (Ornstein-Uhlenbeck) noise on every joint target;
* ``random_targets``: programmatic random 3D wrist targets (IK) with random hand poses,
  interpolated in joint space;
* ``hand_open_close``: the arm holds still while the hand opens and closes;
* ``jittered_targets``: ``random_targets`` with independent per-step noise on every joint
  target at the scale of the planner's CEM samples (appendix B: 0.3 rad arm, 0.1 rad hand,
  halved), so the model also sees the fast, jumpy motions that MPC candidates command (the
  simulated arm covers about half of a commanded jump in one 0.2 s step).
* ``object_approach``: the hand comes to a real object, as the grasp and place goal motions
  do (top-down with the claw pre-shape, or down behind it to push), aimed a few centimetres
  off, with continuous noise; it closes or pushes briefly and withdraws. Not in the paper:
  its exploration puts the hand next to objects only after shuffling them away
  (``lift_replay``), so a keypoint head trained on it alone decodes hands at objects
  (the grasp and place goal images) poorly. Draws that meet the grasp criterion are redrawn
  as in every mode.

The file format is documented in ``dexwm_ros.sim.episode_format``.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

from dexwm_ros.sim.episode_format import episode_path, write_episode

MODES = ("lift_replay", "random_targets", "hand_open_close", "jittered_targets",
         "object_approach")
MIXED_MODES = MODES[:3]
#: Draws of an episode before giving up on one that never grasps.
MAX_ATTEMPTS = 30


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
    """A noisy lift replayed after the objects were shuffled: it aims at a spot of the table
    where no object stands now, so closing the hand grasps nothing (paper section 4.5)."""
    from dexwm_ros.sim.goal_motions import OBJECT_REGION
    from dexwm_ros.sim.tasks import HAND_CLOSED, HAND_PRESHAPE

    k = int(rng.integers(len(task.scene.object_names)))
    perm = rng.permutation(len(task.object_positions))
    task.object_positions = task.object_positions[perm]
    task._set_objects(task.data, task.object_positions, task.object_yaws[perm])
    (x0, x1), (y0, y1) = OBJECT_REGION
    radii = task.scene.object_radii
    for _ in range(200):  # the replayed lift's spot: clear of every object's new place
        xy = rng.uniform([x0, y0], [x1, y1])
        if all(np.linalg.norm(xy - task.object_positions[j, :2]) > radii[j] + radii[k] + 0.06
               for j in range(len(radii))):
            break
    start = task.joint_positions()
    above = task.grasp_joint_positions(k, xy, hand=HAND_PRESHAPE, lift=0.12)
    down = task.grasp_joint_positions(k, xy, hand=HAND_PRESHAPE)
    closed = task.grasp_joint_positions(k, xy, hand=HAND_CLOSED)
    lifted = task.grasp_joint_positions(k, xy, hand=HAND_CLOSED, lift=0.2)
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


def jittered_target_targets(task, rng: np.random.Generator, steps: int) -> np.ndarray:
    """``random_target_targets`` plus white noise per step and joint (0.15 rad arm, 0.05 hand),
    clipped to the joint limits."""
    targets = random_target_targets(task, rng, steps)
    sigma = np.r_[np.full(7, 0.15), np.full(16, 0.05)]
    return np.clip(targets + rng.normal(0.0, sigma, targets.shape), task.lower, task.upper)


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


def object_approach_targets(task, rng: np.random.Generator, steps: int) -> np.ndarray:
    """The hand comes to a real object (a top-down grasp or a push, aimed at a point about
    2 cm off it), closes on it or pushes it a little, then goes back up to where it came down
    from. ``random_target_targets`` when no object is reachable in 20 draws."""
    from dexwm_ros.sim.goal_motions import grasp_segments, push_segments
    from dexwm_ros.sim.tasks import HAND_CLOSED, HAND_PRESHAPE

    start = task.joint_positions()
    for _ in range(20):
        k = int(rng.integers(len(task.scene.object_names)))
        aimed = task.object_positions[k].copy()
        aimed[:2] += rng.normal(0.0, 0.02, 2)
        if rng.random() < 0.5:
            segments = grasp_segments(task, k, start, xy=aimed[:2])
            if segments is not None:
                closed = segments[-1][0].copy()
                closed[7:] = HAND_PRESHAPE + rng.uniform(0.3, 1.0) * (HAND_CLOSED - HAND_PRESHAPE)
                segments[-1] = (closed, 0.6)
        else:
            segments = push_segments(task, k, rng.uniform(-np.pi, np.pi),
                                     rng.uniform(0.0, 0.12), start, origin=aimed)
        if segments is not None:
            break
    else:
        return random_target_targets(task, rng, steps)
    withdrawn = segments[0][0].copy()  # back up to where it came down from
    withdrawn[7:] = segments[-1][0][7:]
    waypoints = [start] + [q for q, _ in segments] + [withdrawn]
    seconds = np.cumsum([0.0] + [t for _, t in segments] + [1.0])
    times = list((seconds / seconds[-1] * (steps - 1)).round().astype(int))
    sigma = np.r_[np.full(7, 0.03), np.full(16, 0.08)]
    return _interpolate(waypoints, times, steps) + _ou_noise(rng, steps, sigma)


_SCRIPTS = {
    "lift_replay": lift_replay_targets,
    "random_targets": random_target_targets,
    "hand_open_close": hand_open_close_targets,
    "jittered_targets": jittered_target_targets,
    "object_approach": object_approach_targets,
}


def generate_episode(task, kinematics, mode: str, seed: int, steps: int) -> dict:
    """Run one exploration episode in ``task`` (reset to ``seed``) and return its arrays."""
    import torch

    if mode not in _SCRIPTS:
        raise ValueError(f"unknown mode {mode!r}; choose from {MODES}")
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    for attempt in range(MAX_ATTEMPTS):
        task.reset(seed)
        rng = np.random.default_rng([seed, MODES.index(mode), attempt])
        targets = _SCRIPTS[mode](task, rng, steps)
        images, joints, poses, stamps, contacts, grasped = [], [], [], [], [], False
        for t in range(steps):
            images.append(task.render())
            joints.append(task.joint_positions())
            poses.append(task.object_poses())
            stamps.append(task.time)
            task.step(targets[t])
            touching = [task.hand_object_contact(j) for j in range(len(task.scene.object_names))]
            contacts.append(any(touching))
            grasped = grasped or _grasp_held(task, touching, contacts)
        if not grasped:
            break
    else:
        raise RuntimeError(f"{mode} seed {seed}: every draw grasped an object")
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
        contact_fraction=float(np.mean(contacts)),
    )


def _grasp_held(task, touching: list[bool], contacts: list[bool]) -> bool:
    """The grasp task's criterion (wrist within 20 cm of an object it touches) has held for
    its hold time, for any object."""
    from dexwm_ros.core.tasks import GRASP_DISTANCE, task_spec

    hold = task_spec("grasp").hold_steps(task.control_hz)
    if len(contacts) < hold or not all(contacts[-hold:]):
        return False
    wrist = task.keypoint_positions()[0]
    return any(touching[j] and np.linalg.norm(wrist - task.object_poses()[j, :3]) < GRASP_DISTANCE
               for j in range(len(touching)))


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
    frames, start, contact = 0, time.perf_counter(), []
    with make_task("reach", seed=args.seed, control_hz=args.control_hz) as task:
        for i in tqdm(todo, desc="exploration episodes", unit="ep"):
            mode = MIXED_MODES[i % len(MIXED_MODES)] if args.mode == "mixed" else args.mode
            episode = generate_episode(task, kinematics, mode, args.seed + i, args.steps)
            contact.append(episode.pop("contact_fraction"))
            write_episode(episode_path(args.out, i), overwrite=args.overwrite, **episode)
            frames += args.steps
    elapsed = time.perf_counter() - start
    print(f"generated {len(todo)} episode(s), {frames} frames in {elapsed:.1f} s "
          f"({frames / elapsed:.2f} frames/s); no episode meets the grasp criterion; "
          f"hand-object contact in {100 * np.mean(contact):.1f}% of frames")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
