"""Exploration HDF5 format and the dexwm-explore command."""
import json

import h5py
import numpy as np
import pytest

from dexwm_ros.core.kinematics import JOINT_NAMES
from dexwm_ros.sim.episode_format import episode_path, read_episode, write_episode
from dexwm_ros.sim.exploration import main


def fake_episode(steps=4, objects=("a", "b")):
    rng = np.random.default_rng(0)
    return dict(
        images=rng.integers(0, 255, (steps, 224, 392, 3), dtype=np.uint8),
        joint_positions=rng.normal(size=(steps, 23)).astype(np.float32),
        hand_keypoints_camera=rng.normal(size=(steps, 21, 3)).astype(np.float32),
        camera_to_world=np.tile(np.eye(4, dtype=np.float32), (steps, 1, 1)),
        camera_intrinsics=np.eye(3, dtype=np.float32),
        object_poses=rng.normal(size=(steps, len(objects), 7)).astype(np.float32),
        timestamps=np.arange(steps) * 0.2,
        mode="random_targets", seed=7, control_hz=5.0, joint_names=JOINT_NAMES,
        object_names=objects,
    )


def test_round_trip(tmp_path):
    episode = fake_episode()
    path = write_episode(tmp_path / "episode_000000.h5", **episode)
    back = read_episode(path)
    for name in ("images", "joint_positions", "hand_keypoints_camera", "camera_to_world",
                 "camera_intrinsics", "object_poses", "timestamps"):
        np.testing.assert_array_equal(back[name], episode[name])
    assert back["images"].dtype == np.uint8 and back["timestamps"].dtype == np.float64
    assert (back["mode"], back["seed"], back["control_hz"]) == ("random_targets", 7, 5.0)
    assert back["joint_names"] == list(JOINT_NAMES) and back["object_names"] == ["a", "b"]
    with h5py.File(path) as f:
        assert f.attrs["format"] == "dexwm_exploration" and f.attrs["version"] == 1
        assert json.loads(f.attrs["object_names"]) == ["a", "b"]


def test_write_refuses_overwrite_and_bad_shapes(tmp_path):
    path = write_episode(tmp_path / "e.h5", **fake_episode())
    with pytest.raises(FileExistsError):
        write_episode(path, **fake_episode())
    write_episode(path, overwrite=True, **fake_episode(steps=2))
    assert read_episode(path)["images"].shape[0] == 2
    bad = fake_episode()
    bad["hand_keypoints_camera"] = bad["hand_keypoints_camera"][:, :20]
    with pytest.raises(ValueError, match="hand_keypoints_camera"):
        write_episode(tmp_path / "bad.h5", **bad)
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.attrs["format"] = "something_else"
    with pytest.raises(ValueError, match="not a dexwm_exploration"):
        read_episode(tmp_path / "other.h5")


def test_explore_command_generates_resumes_and_overwrites(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--episodes", "3", "--steps", "3"]) == 0
    episodes = [read_episode(episode_path(tmp_path, i)) for i in range(3)]
    assert [e["mode"] for e in episodes] == ["lift_replay", "random_targets", "hand_open_close"]
    for e in episodes:
        assert e["images"].shape == (3, 224, 392, 3)
        assert e["hand_keypoints_camera"].shape == (3, 21, 3)
        assert e["object_poses"].shape == (3, 3, 7)
        assert np.all(e["hand_keypoints_camera"][..., 2] > 0)  # in front of the camera
        np.testing.assert_allclose(np.diff(e["timestamps"]), 0.2)
    assert "frames/s" in capsys.readouterr().out
    mtime = episode_path(tmp_path, 0).stat().st_mtime_ns
    episode_path(tmp_path, 1).unlink()
    assert main(["--out", str(tmp_path), "--episodes", "3", "--steps", "3"]) == 0
    assert "resuming: 2 episode(s)" in capsys.readouterr().out
    assert episode_path(tmp_path, 0).stat().st_mtime_ns == mtime
    assert episode_path(tmp_path, 1).exists()
    again = read_episode(episode_path(tmp_path, 1))
    np.testing.assert_array_equal(again["images"], episodes[1]["images"])  # same seed, same data
    assert main(["--out", str(tmp_path), "--episodes", "1", "--steps", "2", "--overwrite"]) == 0
    assert read_episode(episode_path(tmp_path, 0))["images"].shape[0] == 2


def test_exploration_covers_the_workspace_without_grasping():
    import torch

    from dexwm_ros.core.kinematics import RobotKinematics
    from dexwm_ros.sim import make_task
    from dexwm_ros.sim.exploration import MODES, generate_episode

    kinematics = RobotKinematics()
    wrists, hands = [], []
    with make_task("reach", seed=0) as task:
        for seed, mode in enumerate(MODES * 2):
            episode = generate_episode(task, kinematics, mode, seed, steps=25)
            assert 0.0 <= episode["contact_fraction"] <= 1.0
            joints = torch.as_tensor(episode["joint_positions"], dtype=torch.float32)
            wrists.append(kinematics.keypoints_world(joints)[:, 0].numpy())
            hands.append(episode["joint_positions"][:, 7:])
    wrists, hands = np.concatenate(wrists), np.concatenate(hands)
    assert (wrists.max(0) - wrists.min(0) > [0.15, 0.15, 0.15]).all()  # metres per axis
    assert (hands.max(0) - hands.min(0)).mean() > 0.5  # radians per hand joint


def test_an_episode_that_grasps_is_redrawn(monkeypatch):
    from dexwm_ros.core.kinematics import RobotKinematics
    from dexwm_ros.sim import exploration, make_task

    def grasping(task, rng, steps):  # the grasp task's own goal motion: it grasps
        targets = task.goal_motion
        return np.concatenate([targets, np.repeat(targets[-1:], steps, 0)])[:steps]

    monkeypatch.setitem(exploration._SCRIPTS, "lift_replay", grasping)
    monkeypatch.setattr(exploration, "MAX_ATTEMPTS", 2)
    with make_task("grasp", seed=0) as task, pytest.raises(RuntimeError, match="grasped"):
        exploration.generate_episode(task, RobotKinematics(), "lift_replay", 0, steps=20)


def test_jittered_targets_move_faster_than_random_targets():
    """jittered_targets adds planner-scale jumps to the same random wrist targets."""
    from dexwm_ros.core.kinematics import RobotKinematics
    from dexwm_ros.sim import make_task
    from dexwm_ros.sim.exploration import generate_episode

    kinematics, steps = RobotKinematics(), {}
    with make_task("reach", seed=0) as task:
        for mode in ("random_targets", "jittered_targets"):
            joints = generate_episode(task, kinematics, mode, 3, steps=20)["joint_positions"]
            steps[mode] = np.abs(np.diff(joints[:, :7], axis=0)).mean()
    assert steps["jittered_targets"] > 1.5 * steps["random_targets"]


def test_object_approach_brings_the_hand_to_real_objects():
    """object_approach touches real objects; lift_replay aims where none stands."""
    import torch

    from dexwm_ros.core.kinematics import RobotKinematics
    from dexwm_ros.sim import make_task
    from dexwm_ros.sim.exploration import generate_episode

    kinematics, nearest, contact = RobotKinematics(), {}, {}
    with make_task("reach", seed=0) as task:
        for mode in ("object_approach", "lift_replay"):
            for seed in range(3):
                episode = generate_episode(task, kinematics, mode, seed, steps=25)
                joints = torch.as_tensor(episode["joint_positions"], dtype=torch.float32)
                tips = kinematics.keypoints_world(joints)[:, [4, 8, 12, 16, 20]].numpy()
                objects = episode["object_poses"][:, None, :, :3]  # (T, 1, K, 3)
                gap = np.linalg.norm(tips[:, :, None] - objects, axis=-1).min()
                nearest.setdefault(mode, []).append(gap)
                contact.setdefault(mode, []).append(episode["contact_fraction"])
    assert min(contact["object_approach"]) > 0.05  # every episode touches an object
    assert max(contact["lift_replay"]) < min(contact["object_approach"])
    assert np.median(nearest["object_approach"]) < 0.05 < min(nearest["lift_replay"])
