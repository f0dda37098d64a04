"""The released RoboCasa exploration data and pick-and-place goals, on small files the tests
write in the released layout (``<folder>/combine_demos_<k>.hdf5`` with ``data/<demo>/obs``,
600 x 960 head-camera frames). Expected values are worked out by hand from the camera facts:
1.614 m up, 0.212 m forward, pitched 30 degrees down, 80 degree vertical field of view."""
from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from training.config import load_config
from training.datasets import ClipDataset, DatasetSpec
from training.robocasa_data import (
    RoboCasaEpisode,
    load_pick_place_goals,
    preprocess_images,
    robocasa_episodes,
    task_frames,
)
from training.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]
HEIGHT, WIDTH, CROP = 600, 960, 26
BASE_POS = np.array([1.0, -0.5, 0.05])
BASE_YAW = 0.6
FOCAL = 300 / math.tan(math.radians(40))  # 357.526 px at 600 rows
# 224 x 392 image: x scale 392/960, y scale 224/548, principal point at the centre
FX, FY, CX, CY = FOCAL * 392 / 960, FOCAL * 224 / 548, 195.5, 111.5
STAGES = [b"s0-w1"] * 10 + [b"s1-w1"] * 10 + [b"s1-w2"] * 5 + [b"s2-w1"] * 25 + [b"s3-w1"] * 10


def camera_axes() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Camera position and its right / down / forward axes in the world, by hand."""
    yaw = Rotation.from_euler("z", BASE_YAW).as_matrix()
    position = BASE_POS + yaw @ [0.212, 0.0, 1.614]
    right = yaw @ [0.0, -1.0, 0.0]
    forward = yaw @ [math.cos(math.radians(30)), 0.0, -math.sin(math.radians(30))]
    down = np.cross(forward, right)
    return position, right, down, forward


def hand_in_camera(num: int, seed: int) -> np.ndarray:
    """(num, 17, 3) wrist + 16 finger points (index, middle, ring, thumb; knuckle..tip) in
    OpenCV camera coordinates, 0.5-0.7 m ahead, moving."""
    rng = np.random.default_rng(seed)
    base = np.concatenate([np.zeros((1, 3)), rng.uniform(-0.06, 0.06, (16, 3))])
    base += [0.05, 0.1, 0.55]
    drift = np.linspace(0, 1, num)[:, None, None] * np.array([-0.1, -0.06, 0.12])
    return base[None] + drift


def frame_level(i: int) -> int:
    return 10 + 4 * i


def write_demo(group: h5py.Group, num: int, seed: int, pick_place: bool = False) -> np.ndarray:
    position, right, down, forward = camera_axes()
    camera = hand_in_camera(num, seed)
    world = position + camera[..., :1] * right + camera[..., 1:2] * down + camera[..., 2:] * forward
    obs = group.create_group("obs")
    images = np.zeros((num, HEIGHT, WIDTH, 3), dtype=np.uint8)
    for i in range(num):
        images[i] = frame_level(i)
    images[:, :CROP] = 255  # the rows the preprocessing cuts away
    images[:, HEIGHT - CROP:] = 255
    obs.create_dataset("robot0_robotview_2_image", data=images, chunks=(1, HEIGHT, WIDTH, 3),
                       compression="gzip")
    extra = np.full((num, 4, 3), 7.0)  # points before the 16 finger points: not used
    obs["robot0_right_gripper_keypoint_pose"] = np.concatenate(
        [extra, world[:, 1:]], axis=1).reshape(num, -1)
    hand = np.tile(np.eye(4), (num, 1, 1))
    hand[:, :3, :3] = Rotation.from_euler("x", 0.3).as_matrix()
    hand[:, :3, 3] = world[:, 0]
    obs["robot0_right_hand_T_world_pose_mat"] = hand.reshape(num, 16)
    obs["robot0_base_pos"] = np.tile(BASE_POS, (num, 1))
    obs["robot0_base_quat"] = np.tile(Rotation.from_euler("z", BASE_YAW).as_quat(), (num, 1))
    if pick_place:
        obs["robot0_joint_pos"] = np.arange(num * 9, dtype=np.float64).reshape(num, 9)
        obs["robot0_right_gripper_qpos"] = -np.arange(num * 16, dtype=np.float64).reshape(num, 16)
        group["states"] = np.arange(num * 5, dtype=np.float64).reshape(num, 5)
        group["waypoint_generation_stage_string"] = np.array(STAGES[:num])
    return camera


def write_file(path: Path, demos: dict[str, int], seed: int = 0, pick_place: bool = False,
               control_freq: float = 20.0) -> dict[str, np.ndarray]:
    """A ``combine_demos_<k>.hdf5``; returns each demo's hand points in camera coordinates."""
    path.parent.mkdir(parents=True, exist_ok=True)
    truth = {}
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = json.dumps({"env_name": "Kitchen", "env_type": 1, "env_kwargs": {
            "control_freq": control_freq, "camera_heights": HEIGHT, "camera_widths": WIDTH}})
        for number, (demo, num) in enumerate(demos.items()):
            truth[demo] = write_demo(data.create_group(demo), num, seed + number, pick_place)
    return truth


@pytest.fixture(scope="module")
def released_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("robocasa_random")
    truth = write_file(root / "exploratory_movements" / "combine_demos_0.hdf5",
                       {"demo_1": 24, "demo_2": 20})
    truth.update({"open_close": write_file(
        root / "gripper_open_and_close" / "combine_demos_0.hdf5", {"demo_1": 20},
        seed=5)["demo_1"]})
    write_file(root / "pick-and-place-2.0" / "combine_demos_0.hdf5", {"demo_1": 60, "demo_2": 40},
               seed=9, pick_place=True)
    return root, truth


def pixels(camera_points: np.ndarray) -> np.ndarray:
    return np.stack([FX * camera_points[..., 0] / camera_points[..., 2] + CX,
                     FY * camera_points[..., 1] / camera_points[..., 2] + CY], axis=-1)


def test_exploration_clips_map_the_hand_into_the_action_layout(released_root):
    root, truth = released_root
    dataset = ClipDataset([DatasetSpec("robocasa", str(root))])
    names = [e.episode.name for e in dataset.unique_entries]
    assert names == ["robocasa/exploratory_movements/combine_demos_0/demo_1",
                     "robocasa/exploratory_movements/combine_demos_0/demo_2",
                     "robocasa/gripper_open_and_close/combine_demos_0/demo_1"]  # no pick-place
    assert all(e.episode.fps == 20.0 for e in dataset.unique_entries)
    sample = dataset[(0, 7)]
    source = sample["frame_indices"].numpy()
    frames = sample["frames"].numpy()
    assert frames.shape == (9, 224, 392, 3)
    assert frames.max() < 255  # the 26 rows at top and bottom are cut before resizing
    np.testing.assert_array_equal(frames[:, :, :, 0].mean(axis=(1, 2)),
                                  [frame_level(i) for i in source])

    camera = truth["demo_1"][source]  # the camera is static: camera coordinates = first frame's
    wrist, index, middle, ring, thumb = (camera[:, :1], camera[:, 1:5], camera[:, 5:9],
                                         camera[:, 9:13], camera[:, 13:17])
    hand21 = np.concatenate([wrist, thumb, index, middle, ring, ring], axis=1)
    actions = sample["actions"].numpy().reshape(8, 44, 3)
    np.testing.assert_allclose(actions[:, 21:42], np.diff(hand21, axis=0), atol=1e-6)
    np.testing.assert_array_equal(actions[:, 38:42], actions[:, 34:38])  # little = ring
    assert not actions[:, :21].any() and np.abs(actions[:, 42:]).max() < 1e-12

    expected = pixels(hand21[:, [0, 4, 8, 12, 16, 20]])
    got = sample["keypoint_pixels"].numpy()[:, 6:]
    visible = sample["keypoint_visible"].numpy()
    assert not visible[:, :6].any() and visible[:, 6:].all()
    np.testing.assert_allclose(got, expected, atol=1e-3)


def test_the_loader_names_missing_keys_and_refuses_pick_and_place(released_root, tmp_path):
    path = tmp_path / "combine_demos_0.hdf5"
    write_file(path, {"demo_1": 12})
    with h5py.File(path, "a") as f:
        del f["data/demo_1/obs/robot0_base_quat"]
    with pytest.raises(ValueError, match="robot0_base_quat"):
        robocasa_episodes(path)
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="no 'data' group"):
        robocasa_episodes(path)
    with pytest.raises(ValueError, match="successful grasps"):
        robocasa_episodes(released_root[0] / "pick-and-place-2.0")


def test_frame_rate_comes_from_env_args(tmp_path):
    path = tmp_path / "combine_demos_0.hdf5"
    write_file(path, {"demo_1": 12}, control_freq=10.0)
    assert RoboCasaEpisode(path, "demo_1").fps == 10.0


def test_pick_and_place_goals_per_task(released_root):
    root, _ = released_root
    assert task_frames(np.array(STAGES), "reach") == (0, 9)
    assert task_frames(np.array(STAGES), "grasp") == (10, 24)
    assert task_frames(np.array(STAGES), "place") == (45, 49)
    assert task_frames(np.array(STAGES[:40]), "place") == (39, 39)  # no stage 3: last frame
    goals = load_pick_place_goals(root, "grasp", demos=[("combine_demos_0.hdf5", "demo_2")])
    (goal,) = goals
    assert (goal.demo, goal.start_index, goal.goal_index) == ("demo_2", 10, 24)
    with h5py.File(root / "pick-and-place-2.0" / "combine_demos_0.hdf5") as f:
        obs = f["data/demo_2/obs"]
        expected = preprocess_images(obs["robot0_robotview_2_image"][[10, 24]])
        joints = np.concatenate([obs["robot0_joint_pos"][24, :7],
                                 obs["robot0_right_gripper_qpos"][24]])
    np.testing.assert_array_equal(goal.start_image, expected[0])
    np.testing.assert_array_equal(goal.goal_image, expected[1])
    assert goal.goal_image.mean() == frame_level(24)
    np.testing.assert_array_equal(goal.goal_joints, joints)
    np.testing.assert_array_equal(goal.start_state, np.arange(50, 55))
    assert [g.goal_index for g in load_pick_place_goals(root, "place")] == [49, 39]
    with pytest.raises(ValueError, match="not found"):
        load_pick_place_goals(root, "reach", demos=[("combine_demos_0.hdf5", "demo_9")])
    with pytest.raises(ValueError, match="task"):
        load_pick_place_goals(root, "pour")


def test_finetune_config_runs_the_multistep_loss_on_the_released_data(released_root, tmp_path):
    root, _ = released_root
    path = REPO / "config" / "train_finetune_robocasa.yaml"
    paper = load_config(path)
    assert (paper.mode, paper.optim.lr, paper.loss.multistep) == ("finetune", 1e-5, 8)
    assert paper.data.datasets[0].kind == "robocasa"
    config = load_config(path, [
        f"output_dir={tmp_path / 'run'}", f"data.datasets.0.root={root}", "data.num_workers=0",
        "data.augment=false", "encoder.backend=tiny", "encoder.weights=null",
        "cache.directory=null", "model.init_from=null", "model.preset=tiny",
        "model.keypoint_head={dim: 32, depth: 1, heads: 2}", "optim.batch_size=2",
        "optim.max_steps=2", "optim.warmup_steps=0", "precision=fp32", "progress=false",
        "data.num_context=4", "loss.multistep=4", "loss.hc_slots=last"])  # CPU-sized
    trainer = Trainer(config)
    metrics = trainer.fit()
    assert trainer.step == 2 and math.isfinite(metrics["loss"]) and metrics["hc"] > 0
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()
