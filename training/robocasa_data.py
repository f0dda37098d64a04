"""The released RoboCasa exploration data ("RoboCasa Random") and pick-and-place goals.

DexWM is fine-tuned on about 4 h of exploratory sequences of a Franka arm with an Allegro hand
in RoboCasa (paper sections 4.1, 4.5 and appendix C.2) and evaluated against goal images taken
from recorded pick-and-place demonstrations. Facts of the released format:

* Folders ``exploratory_movements/``, ``gripper_open_and_close/`` (the exploration data) and
  ``pick-and-place-2.0/`` (demonstrations, the goal images), each holding
  ``combine_demos_<k>.hdf5``. Each file is robomimic-style: ``data/<demo>/obs/<key>`` with one
  row per frame, ``data/<demo>/states`` (flattened MuJoCo states) and ``data.attrs["env_args"]``
  (JSON: ``env_name``, ``env_kwargs``).
* ``obs/robot0_robotview_2_image`` uint8 ``(T, 600, 960, 3)``: the head camera, RGB, upright.
  The paper's preprocessing keeps the middle 548 rows (26 cut at top and bottom, so 960 x 548
  has the model's 392 : 224 aspect) and resizes to 224 x 392 (appendix A.1).
* ``obs/robot0_right_gripper_keypoint_pose`` ``(T, 3 K)`` (or ``(T, K, 3)``): points of the
  right hand in the world frame; the last 16 are the Allegro finger points, index, middle,
  ring, thumb, each from knuckle to tip (the hand's joint order).
* ``obs/robot0_right_hand_T_world_pose_mat`` ``(T, 16)`` (or ``(T, 4, 4)``): the hand's pose in
  the world; its translation is the wrist.
* ``obs/robot0_base_pos`` ``(T, 3)``, ``obs/robot0_base_quat`` ``(T, 4)`` (x, y, z, w): the
  robot base in the world.
* The head camera is fixed to the base. Its pose in the base frame (MuJoCo camera axes: x
  right, y up, looking along -z) is ``CAMERA_IN_BASE``, rows ``[0, 0.5, -0.8660254, 0.212]``,
  ``[-1, 0, 0, 0]``, ``[0, 0.8660254, 0.5, 1.614]``, ``[0, 0, 0, 1]``: 1.614 m up, 0.212 m
  forward, pitched 30 degrees down; OpenCV axes follow by ``diag(1, -1, -1)``. Its vertical
  field of view is 80 degrees, so at 600 rows ``fx = fy = 300 / tan(40 deg) = 357.526``, with
  the principal point at the image centre: (480, 300) from the corner, (480, 274) after the
  crop (pixel-centre coordinates: 479.5, 273.5). The authors' loader projects with
  ``cy = 274`` and subtracts the 26 cropped rows a second time; we do not, so our heatmaps sit
  26 native rows (10.6 px at 224 rows) lower than theirs, on the hand.
* Frame rate: ``env_args["env_kwargs"]["control_freq"]`` (when absent, 20 Hz: the default of
  RoboCasa kitchens).
* Pick-and-place demos also hold ``data/<demo>/waypoint_generation_stage_string`` (per frame,
  bytes such as ``b"s1-w1"``: stage 1 approaches and grasps, stage 2 lifts and carries, stage
  3 places), ``obs/robot0_joint_pos`` (arm joints first) and ``obs/robot0_right_gripper_qpos``
  (16 hand joints). The authors' evaluation takes, per task, the start and goal frames given
  by ``task_frames``.

Keypoints map into the 44 x 3 action layout: the right hand in ``HAND21`` order (wrist, then
thumb, index, middle, ring, with the ring copied as the little finger, appendix C.3), the
left hand absent (zero actions, no heatmaps), and a static camera (camera rows zero for a fixed
base). The exploration data has no successful grasps by construction (section 4.5); the
pick-and-place demonstrations do, so they are used for goals only and never as training data.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from dexwm_ros.core.actions import allegro_to_hand21
from training.episodes import Episode, _index_array, _read_rows
from training.video import IMAGE_SIZE, CropGeometry, resize_center_crop

EXPLORATION_FOLDERS = ("exploratory_movements", "gripper_open_and_close")
PICK_PLACE_FOLDER = "pick-and-place-2.0"
IMAGE_KEY = "robot0_robotview_2_image"
KEYPOINT_KEY = "robot0_right_gripper_keypoint_pose"
HAND_POSE_KEY = "robot0_right_hand_T_world_pose_mat"
BASE_POS_KEY = "robot0_base_pos"
BASE_QUAT_KEY = "robot0_base_quat"
OBS_KEYS = (IMAGE_KEY, KEYPOINT_KEY, HAND_POSE_KEY, BASE_POS_KEY, BASE_QUAT_KEY)
ARM_JOINTS_KEY = "robot0_joint_pos"
HAND_JOINTS_KEY = "robot0_right_gripper_qpos"
STAGE_KEY = "waypoint_generation_stage_string"
#: Head camera in the robot base frame (MuJoCo camera axes).
CAMERA_IN_BASE = np.array([[0.0, 0.5, -0.8660254, 0.212],
                           [-1.0, 0.0, 0.0, 0.0],
                           [0.0, 0.8660254, 0.5, 1.614],
                           [0.0, 0.0, 0.0, 1.0]])
#: MuJoCo camera axes -> OpenCV axes (x right, y down, looking along +z).
OPENCV_FROM_MUJOCO = np.diag([1.0, -1.0, -1.0, 1.0])
CAMERA_FOVY_DEG = 80.0
DEFAULT_CONTROL_HZ = 20.0  # control_freq of RoboCasa kitchens (and robosuite) by default
NUM_FINGER_POINTS = 16
PLACE_START_OFFSET = 20  # frames after the carry stage begins at which "place" starts
TASKS = ("reach", "grasp", "place")


def _check_demo(group: h5py.Group, where: str, keys: tuple[str, ...]) -> None:
    missing = [k for k in keys if k not in group]
    if missing:
        raise ValueError(f"{where}: missing {missing} (RoboCasa exploration data needs "
                         f"{list(keys)})")


def rows_to_crop(height: int, width: int, out: tuple[int, int] = IMAGE_SIZE) -> int:
    """Rows cut at the top (and bottom) so the image has the model's aspect: 26 for 600 x 960."""
    keep = int(width * out[0] / out[1])
    return max(0, (height - keep) // 2)


def camera_intrinsics(height: int, width: int) -> np.ndarray:
    """Native camera matrix of the head camera rendered at ``height x width`` (principal point
    at the image centre, pixel centres at integer coordinates)."""
    focal = (height / 2) / np.tan(np.radians(CAMERA_FOVY_DEG) / 2)
    return np.array([[focal, 0.0, (width - 1) / 2], [0.0, focal, (height - 1) / 2],
                     [0.0, 0.0, 1.0]])


def preprocess_images(images: np.ndarray) -> np.ndarray:
    """uint8 ``(N, H, W, 3)`` head-camera frames -> ``(N, 224, 392, 3)``: the middle rows with
    the model's aspect, resized (appendix A.1)."""
    crop = rows_to_crop(images.shape[1], images.shape[2])
    return resize_center_crop(np.ascontiguousarray(images[:, crop : images.shape[1] - crop]))


def base_to_world(position: np.ndarray, quaternion_xyzw: np.ndarray) -> np.ndarray:
    """``(N, 4, 4)`` poses from positions ``(N, 3)`` and quaternions ``(N, 4)`` (x, y, z, w)."""
    from scipy.spatial.transform import Rotation

    out = np.tile(np.eye(4), (len(position), 1, 1))
    out[:, :3, :3] = Rotation.from_quat(np.asarray(quaternion_xyzw, dtype=np.float64)).as_matrix()
    out[:, :3, 3] = position
    return out


def hand21_from_obs(finger_points: np.ndarray, hand_pose: np.ndarray) -> np.ndarray:
    """``(N, 21, 3)`` ``HAND21`` keypoints from the released keypoint rows ``(N, 3 K)`` and hand
    poses ``(N, 16)``: wrist = hand translation; thumb, index, middle, ring from the last 16
    points (stored index, middle, ring, thumb); ring copied as little."""
    count = len(finger_points)
    points = np.asarray(finger_points, dtype=np.float64).reshape(count, -1, 3)
    if points.shape[1] < NUM_FINGER_POINTS:
        raise ValueError(f"{KEYPOINT_KEY}: expected at least {NUM_FINGER_POINTS} points per "
                         f"frame, got {points.shape[1]}")
    fingers = points[:, -NUM_FINGER_POINTS:].reshape(count, 4, 4, 3)  # index, middle, ring, thumb
    fingers = fingers[:, [3, 0, 1, 2]]  # thumb, index, middle, ring
    wrist = np.asarray(hand_pose, dtype=np.float64).reshape(count, 4, 4)[:, :3, 3]
    return allegro_to_hand21(torch.from_numpy(wrist), torch.from_numpy(fingers)).numpy()


def control_hz(f: h5py.File) -> float:
    """Frame rate of a released file (``env_args.env_kwargs.control_freq``)."""
    raw = f["data"].attrs.get("env_args")
    if raw is None:
        return DEFAULT_CONTROL_HZ
    env_args = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    return float(env_args.get("env_kwargs", {}).get("control_freq", DEFAULT_CONTROL_HZ))


def demo_names(f: h5py.File, path: Path) -> list[str]:
    if "data" not in f or not isinstance(f["data"], h5py.Group):
        raise ValueError(f"{path}: no 'data' group (not a robomimic-style RoboCasa file)")
    return sorted(f["data"].keys(), key=lambda n: (len(n), n))


class RoboCasaEpisode(Episode):
    """One demo ``data/<demo>`` of a released RoboCasa file; see the module docstring."""

    def __init__(self, path: str | Path, demo: str, name: str | None = None):
        self.path, self.demo = Path(path), demo
        self.name = name or f"{self.path.with_suffix('')}/{demo}"
        self.hands = (False, True)
        with h5py.File(self.path, "r") as f:
            if f"data/{demo}" not in f:
                raise ValueError(f"{self.path}: no demo 'data/{demo}'")
            where = f"{self.path}: data/{demo}/obs"
            if "obs" not in f[f"data/{demo}"]:
                raise ValueError(f"{self.path}: data/{demo} has no 'obs' group")
            obs = f[f"data/{demo}/obs"]
            _check_demo(obs, where, OBS_KEYS)
            images = obs[IMAGE_KEY]
            if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
                raise ValueError(f"{where}/{IMAGE_KEY}: expected uint8 (T, H, W, 3), got "
                                 f"{images.dtype} {images.shape}")
            lengths = {k: obs[k].shape[0] for k in OBS_KEYS}
            if len(set(lengths.values())) != 1:
                raise ValueError(f"{where}: per-frame keys differ in length {lengths}")
            self.num_frames = int(images.shape[0])
            height, width = images.shape[1:3]
            self.fps = control_hz(f)
        crop = rows_to_crop(height, width)
        native = camera_intrinsics(height, width)
        native[1, 2] -= crop
        self._intrinsics = CropGeometry.for_source(height - 2 * crop, width).intrinsics(native)

    def _obs(self, f: h5py.File, key: str, idx: np.ndarray) -> np.ndarray:
        return _read_rows(f[f"data/{self.demo}/obs/{key}"], idx)

    def frames(self, indices) -> np.ndarray:
        """Preprocessed frames; only the requested rows are read (a 600 x 960 frame is 1.7 MB,
        so a clip's nine frames are not read as the span they cover)."""
        idx = _index_array(indices, self.num_frames, self.name)
        unique, inverse = np.unique(idx, return_inverse=True)
        with h5py.File(self.path, "r") as f:
            images = f[f"data/{self.demo}/obs/{IMAGE_KEY}"][unique.tolist()]
        return preprocess_images(images)[inverse]

    def keypoints(self, indices) -> np.ndarray:
        idx = _index_array(indices, self.num_frames, self.name)
        with h5py.File(self.path, "r") as f:
            right = hand21_from_obs(self._obs(f, KEYPOINT_KEY, idx),
                                    self._obs(f, HAND_POSE_KEY, idx))
        out = np.zeros((idx.size, 42, 3))
        out[:, 21:] = right
        return out

    def camera_to_world(self, indices) -> np.ndarray:
        idx = _index_array(indices, self.num_frames, self.name)
        with h5py.File(self.path, "r") as f:
            base = base_to_world(self._obs(f, BASE_POS_KEY, idx), self._obs(f, BASE_QUAT_KEY, idx))
        return base @ CAMERA_IN_BASE @ OPENCV_FROM_MUJOCO

    @property
    def intrinsics(self) -> np.ndarray:
        return self._intrinsics


def exploration_files(root: str | Path) -> list[Path]:
    """The exploration files under ``root``: one file, a folder of files, or the released root
    (its ``exploratory_movements/`` and ``gripper_open_and_close/``)."""
    root = Path(root)
    if root.is_file():
        return [root]
    if root.name == PICK_PLACE_FOLDER:
        raise ValueError(f"{root}: the pick-and-place demonstrations contain successful grasps "
                         f"and are goals, not exploration data (paper section 4.5)")
    folders = [root / name for name in EXPLORATION_FOLDERS if (root / name).is_dir()] or [root]
    return sorted(p for folder in folders for p in folder.glob("*.hdf5"))


def robocasa_episodes(root: str | Path) -> list[RoboCasaEpisode]:
    """Every demo of every exploration file under ``root``, named ``robocasa/<file>/<demo>``."""
    root = Path(root)
    episodes = []
    for path in exploration_files(root):
        with h5py.File(path, "r") as f:
            demos = demo_names(f, path)
        rel = path.relative_to(root) if path != root else Path(path.name)
        episodes += [RoboCasaEpisode(path, demo, name=f"robocasa/{rel.with_suffix('')}/{demo}")
                     for demo in demos]
    return episodes


# ---------------------------------------------------------------------------- goals
def task_frames(stages: np.ndarray, task: str) -> tuple[int, int]:
    """(start, goal) frames of a pick-and-place demo for ``task`` from its per-frame stage
    strings, as the authors' evaluation takes them: reach from frame 0 to the frame before
    stage 1 (grasp) begins; grasp from the start of stage 1 to the frame before stage 2; place
    from 20 frames into stage 2 (object held) to the frame before stage 3, or the last frame."""
    if task not in TASKS:
        raise ValueError(f"task {task!r} not in {TASKS}")
    labels = [s.decode() if isinstance(s, bytes) else str(s) for s in np.asarray(stages)]

    def first(label: str) -> int | None:
        return next((i for i, s in enumerate(labels) if s == label), None)

    def required(label: str) -> int:
        index = first(label)
        if index is None:
            raise ValueError(f"{task}: the demo has no '{label}' stage")
        return index

    last = len(labels) - 1
    if task == "reach":
        return 0, required("s1-w1") - 1
    if task == "grasp":
        return required("s1-w1"), required("s2-w1") - 1
    placed = first("s3-w1")
    return min(required("s2-w1") + PLACE_START_OFFSET, last), (last if placed is None
                                                               else placed - 1)


@dataclass
class PickPlaceGoal:
    """One evaluation episode: start and goal frames of a demo for a task."""

    path: Path
    demo: str
    task: str
    start_index: int
    goal_index: int
    start_image: np.ndarray  # uint8 (224, 392, 3), preprocessed like the training frames
    goal_image: np.ndarray
    start_joints: np.ndarray  # (23,) 7 arm + 16 hand joints
    goal_joints: np.ndarray
    start_state: np.ndarray | None  # flattened MuJoCo state (``data/<demo>/states``) if stored
    goal_state: np.ndarray | None


def load_pick_place_goals(root: str | Path, task: str,
                          demos: list[tuple[str, str]] | None = None) -> list[PickPlaceGoal]:
    """Goals of ``task`` from the pick-and-place demos under ``root`` (the released root, its
    ``pick-and-place-2.0/`` folder or one file). ``demos``: ``(file name, demo)`` pairs to
    keep, in that order (default: every demo)."""
    root = Path(root)
    if root.is_file():
        files = [root]
    else:
        folder = root / PICK_PLACE_FOLDER if (root / PICK_PLACE_FOLDER).is_dir() else root
        files = sorted(folder.glob("*.hdf5"))
    pairs = []
    for path in files:
        with h5py.File(path, "r") as f:
            pairs += [(path, demo) for demo in demo_names(f, path)]
    if demos is not None:
        by_name = {(p.name, d): (p, d) for p, d in pairs}
        missing = [pair for pair in demos if tuple(pair) not in by_name]
        if missing:
            raise ValueError(f"pick-and-place demos {missing} not found under {root}")
        pairs = [by_name[tuple(pair)] for pair in demos]
    if not pairs:
        raise ValueError(f"no pick-and-place demos under {root}")
    return [_load_goal(path, demo, task) for path, demo in pairs]


def _load_goal(path: Path, demo: str, task: str) -> PickPlaceGoal:
    with h5py.File(path, "r") as f:
        group = f[f"data/{demo}"]
        _check_demo(group, f"{path}: data/{demo}", ("obs", STAGE_KEY))
        _check_demo(group["obs"], f"{path}: data/{demo}/obs",
                    (IMAGE_KEY, ARM_JOINTS_KEY, HAND_JOINTS_KEY))
        start, goal = task_frames(group[STAGE_KEY][()], task)
        if not 0 <= start <= goal < group["obs"][IMAGE_KEY].shape[0]:
            raise ValueError(f"{path}: data/{demo}: {task} frames ({start}, {goal}) are not an "
                             f"ordered pair inside the demo")
        idx = np.array([start, goal])
        obs = group["obs"]
        images = preprocess_images(_read_rows(obs[IMAGE_KEY], idx))
        joints = np.concatenate([_read_rows(obs[ARM_JOINTS_KEY], idx)[:, :7],
                                 _read_rows(obs[HAND_JOINTS_KEY], idx)], axis=1)
        states = _read_rows(group["states"], idx) if "states" in group else None
    if joints.shape[1] != 23:
        raise ValueError(f"{path}: data/{demo}: expected 7 arm + 16 hand joints, got "
                         f"{joints.shape[1]}")
    return PickPlaceGoal(path, demo, task, start, goal, images[0], images[1], joints[0],
                         joints[1], None if states is None else states[0],
                         None if states is None else states[1])
