"""Reach / grasp / place tasks with image goals and the paper's success criteria.

Paper appendix C.4, each criterion held for 10 consecutive control steps:

* reach: mean distance of the wrist and the 4 fingertips to their goal positions < 15 cm;
* grasp: wrist-object distance < 20 cm and a hand-object contact;
* place: the object within 10 cm of its goal position.

An episode is a function of its seed only (object poses, start joints, target object, goal).
Control: ``step`` takes 23 absolute joint targets (clipped to the limits), moves the position
servos' set-points linearly from the previous targets over one control period
(``1 / control_hz`` s, default 5 Hz like the world model's frame rate) and runs
``control_period / 0.002`` physics steps. The goal of ``place`` starts with the object on the
table (not in the hand) and moves it 15-25 cm; its goal image shows the object at the goal
and the hand above it.
"""
from __future__ import annotations

import math

import mujoco
import numpy as np

from dexwm_ros.core.kinematics import (
    HEAD_CAMERA_FOVY_DEG,
    HEAD_CAMERA_PITCH_DEG,
    HEAD_CAMERA_POSITION,
    HOME_JOINT_POSITIONS,
    JOINT_NAMES,
    NUM_JOINTS,
    PinholeCamera,
)
from dexwm_ros.sim.scene import (
    CAMERA_NAME,
    OBJECT_REGION,
    TABLE_TOP_Z,
    TIMESTEP,
    Scene,
    build_scene,
    solve_wrist_ik,
)

TASKS = ("reach", "grasp", "place")
BACKENDS = ("robosuite", "robocasa")
CONSECUTIVE_STEPS = 10
REACH_THRESHOLD = 0.15
GRASP_DISTANCE = 0.20
PLACE_THRESHOLD = 0.10
#: Hand joint presets (16,): index, middle, ring (abduction, 3 flexions), thumb.
HAND_OPEN = np.array([0.0, 0.1, 0.1, 0.1] * 3 + [0.6, 0.1, 0.1, 0.1])
HAND_CLOSED = np.array([0.0, 1.3, 1.3, 1.0] * 3 + [1.3, 0.9, 0.9, 0.9])
#: Wrist orientation with the hand pointing down and the palm facing +x (world).
HAND_DOWN = np.array([[1.0, 0, 0], [0, -1.0, 0], [0, 0, -1.0]])
#: Claw pre-shape for top-down grasps: curled fingertips ~0.17 m below and ~0.1 m in front
#: of the wrist (palm side, world +x with ``HAND_DOWN``).
HAND_PRESHAPE = np.array([0.0, 0.6, 0.6, 0.4] * 3 + [1.0, 0.5, 0.4, 0.4])
#: Wrist placement for a top-down grasp: behind the object along -x, above the table.
GRASP_WRIST_OFFSET = np.array([-0.06, 0.0, 0.0])
GRASP_WRIST_HEIGHT = 0.185


def yaw_rotation(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


class DexTask:
    """One task in one scene. See the module docstring for control and success."""

    def __init__(self, task_name: str, scene: Scene, seed: int = 0, control_hz: float = 5.0,
                 render_size: tuple[int, int] = (224, 392)) -> None:
        if task_name not in TASKS:
            raise ValueError(f"unknown task {task_name!r}; choose from {TASKS}")
        if control_hz <= 0 or (1.0 / control_hz) < TIMESTEP:
            raise ValueError(f"control_hz must be in (0, {1 / TIMESTEP:g}], got {control_hz}")
        self.task_name = task_name
        self.scene = scene
        self.model = scene.model
        self.data = mujoco.MjData(self.model)
        self._scratch = mujoco.MjData(self.model)
        self.control_hz = float(control_hz)
        self.substeps = max(1, round(1.0 / control_hz / TIMESTEP))
        self.height, self.width = render_size
        self.camera: PinholeCamera = PinholeCamera.from_fovy(
            HEAD_CAMERA_FOVY_DEG, HEAD_CAMERA_POSITION, pitch_deg=HEAD_CAMERA_PITCH_DEG,
            height=self.height, width=self.width,
        )
        self.joint_names = JOINT_NAMES
        jnt = [self.model.joint(n).id for n in JOINT_NAMES]
        self.lower, self.upper = self.model.jnt_range[jnt].T.copy()
        self._renderer: mujoco.Renderer | None = None
        self.reset(seed)

    # ----------------------------------------------------------------- episode
    def reset(self, seed: int | None = None) -> None:
        """Start the episode of ``seed`` (``None``: replay the current seed's episode)."""
        if seed is not None:
            self.seed = int(seed)
        rng = np.random.default_rng(self.seed)
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        self.object_positions = self._sample_object_positions(rng)
        self.object_yaws = rng.uniform(-math.pi, math.pi, len(self.scene.object_names))
        self._set_objects(d, self.object_positions, self.object_yaws)
        q = np.array(HOME_JOINT_POSITIONS)
        q[:7] += rng.normal(0.0, 0.05, 7)
        q = np.clip(q, self.lower, self.upper)
        d.qpos[self.scene.qpos_robot] = q
        d.ctrl[self.scene.actuators] = q
        self._target = q.copy()
        self.target_object = int(rng.integers(len(self.scene.object_names)))
        self.goal_joint_positions = q.copy()
        self.goal_object_position = self.object_positions[self.target_object].copy()
        getattr(self, f"_make_{self.task_name}_goal")(rng)
        mujoco.mj_forward(m, d)
        self.steps = 0
        self.consecutive = 0
        self._goal_image = self._render_goal()
        self._update_success()

    def _sample_object_positions(self, rng: np.random.Generator) -> np.ndarray:
        (x0, x1), (y0, y1) = OBJECT_REGION
        radii = self.scene.object_radii
        positions = np.zeros((len(radii), 3))
        for k in range(len(radii)):
            for _ in range(200):
                xy = rng.uniform([x0, y0], [x1, y1])
                if all(np.linalg.norm(xy - positions[j, :2]) > radii[j] + radii[k] + 0.04
                       for j in range(k)):
                    break
            positions[k] = [xy[0], xy[1], TABLE_TOP_Z + self.scene.object_bottom_offsets[k]]
        return positions

    def _set_objects(self, data: mujoco.MjData, positions: np.ndarray, yaws: np.ndarray) -> None:
        for k, (pos, yaw) in enumerate(zip(positions, yaws, strict=True)):
            quat = [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]
            data.qpos[self.scene.object_qpos[k]] = np.concatenate([pos + [0, 0, 0.001], quat])
            data.qvel[self.scene.object_qvel[k]] = 0.0

    def wrist_ik(self, position, rotation=HAND_DOWN, hand=HAND_OPEN, q_init=None):
        """Joint positions (23,) putting the wrist at ``position`` (world) with ``hand`` joints."""
        q0 = np.array(HOME_JOINT_POSITIONS) if q_init is None else np.asarray(q_init, float)
        q0 = q0.copy()
        q0[7:] = hand
        q, err = solve_wrist_ik(self.scene, self._scratch, position, rotation, q0)
        return q, err

    def grasp_wrist_position(self, k: int, positions: np.ndarray | None = None,
                             lift: float = 0.0) -> np.ndarray:
        """Wrist position of a top-down grasp of object ``k``, raised by ``lift``."""
        pos = (self.object_positions if positions is None else positions)[k]
        return np.array([pos[0], pos[1], TABLE_TOP_Z + GRASP_WRIST_HEIGHT + lift]) + \
            GRASP_WRIST_OFFSET

    def grasp_joint_positions(self, k: int, positions: np.ndarray | None = None,
                              hand=HAND_CLOSED, lift: float = 0.0) -> np.ndarray:
        """Joint positions of a top-down grasp of object ``k`` with hand joints ``hand``."""
        q, _ = self.wrist_ik(self.grasp_wrist_position(k, positions, lift), hand=hand)
        return q

    def _make_reach_goal(self, rng: np.random.Generator) -> None:
        (x0, x1), (y0, y1) = OBJECT_REGION
        mujoco.mj_kinematics(self.model, self.data)
        start = self.data.xpos[self.scene.keypoint_bodies]
        for _ in range(30):  # a reachable goal at least 25 cm (mean keypoint) from the start
            target = rng.uniform([x0, y0, TABLE_TOP_Z + 0.25], [x1, y1, TABLE_TOP_Z + 0.4])
            rot = HAND_DOWN @ yaw_rotation(rng.uniform(-0.5, 0.5))
            hand = rng.uniform(HAND_OPEN, 0.6 * HAND_CLOSED + 0.4 * HAND_OPEN)
            q, err = self.wrist_ik(target, rot, hand)
            self._scratch.qpos[self.scene.qpos_robot] = q
            mujoco.mj_kinematics(self.model, self._scratch)
            goal = self._scratch.xpos[self.scene.keypoint_bodies]
            if err < 0.01 and np.linalg.norm(goal - start, axis=1).mean() > 0.25:
                break
        self.goal_joint_positions = q

    def _make_grasp_goal(self, rng: np.random.Generator) -> None:
        self.goal_joint_positions = self.grasp_joint_positions(self.target_object)

    def _make_place_goal(self, rng: np.random.Generator) -> None:
        k = self.target_object
        (x0, x1), (y0, y1) = OBJECT_REGION
        start = self.object_positions[k]
        others = [j for j in range(len(self.object_positions)) if j != k]
        for _ in range(200):
            angle, dist = rng.uniform(-math.pi, math.pi), rng.uniform(0.15, 0.25)
            xy = start[:2] + dist * np.array([math.cos(angle), math.sin(angle)])
            inside = x0 <= xy[0] <= x1 and y0 <= xy[1] <= y1
            free = all(np.linalg.norm(xy - self.object_positions[j, :2]) > 0.12 for j in others)
            if inside and free:
                break
        self.goal_object_position = np.array([xy[0], xy[1], start[2]])
        goal_positions = self.object_positions.copy()
        goal_positions[k] = self.goal_object_position
        self.goal_joint_positions = self.grasp_joint_positions(k, goal_positions)

    def _render_goal(self) -> np.ndarray:
        goal = mujoco.MjData(self.model)
        goal.qpos[:] = self.data.qpos
        positions = self.object_positions.copy()
        positions[self.target_object] = self.goal_object_position
        self._set_objects(goal, positions, self.object_yaws)
        goal.qpos[self.scene.qpos_robot] = self.goal_joint_positions
        mujoco.mj_forward(self.model, goal)
        self.goal_keypoints_world = goal.xpos[self.scene.keypoint_bodies].copy()
        return self._render(goal)

    # ----------------------------------------------------------------- control
    @property
    def time(self) -> float:
        return float(self.data.time)

    def step(self, joint_targets: np.ndarray) -> None:
        """Servo to ``joint_targets`` (23,) over one control period, then update success."""
        target = np.asarray(joint_targets, dtype=np.float64)
        if target.shape != (NUM_JOINTS,):
            raise ValueError(f"joint_targets must be ({NUM_JOINTS},), got {target.shape}")
        if not np.all(np.isfinite(target)):
            raise ValueError("joint_targets contains NaN or inf")
        target = np.clip(target, self.lower, self.upper)
        start = self._target
        for i in range(1, self.substeps + 1):
            self.data.ctrl[self.scene.actuators] = start + (target - start) * (i / self.substeps)
            mujoco.mj_step(self.model, self.data)
        self._target = target
        self.steps += 1
        self._update_success()

    def joint_positions(self) -> np.ndarray:
        return self.data.qpos[self.scene.qpos_robot].copy()

    def joint_targets(self) -> np.ndarray:
        """The last commanded (clipped) joint targets."""
        return self._target.copy()

    def object_poses(self) -> np.ndarray:
        """(K, 7) object poses: position and quaternion (w, x, y, z), world frame."""
        return np.stack([self.data.qpos[a] for a in self.scene.object_qpos]).copy()

    def keypoint_positions(self) -> np.ndarray:
        """(5, 3) world positions of the wrist and the 4 fingertips (simulator bodies)."""
        return self.data.xpos[self.scene.keypoint_bodies].copy()

    # ----------------------------------------------------------------- success
    def hand_object_contact(self, k: int) -> bool:
        hand, obj = self.scene.hand_geoms, self.scene.object_geoms[k]
        for c in self.data.contact[: self.data.ncon]:
            g1, g2 = c.geom1, c.geom2
            if (g1 in hand and g2 in obj) or (g2 in hand and g1 in obj):
                return True
        return False

    def status(self) -> dict:
        """Task measurements, whether the criterion holds now, and the consecutive count."""
        k = self.target_object
        obj = self.data.xpos[self.scene.object_bodies[k]]
        wrist = self.data.xpos[self.scene.keypoint_bodies[0]]
        out = {"task": self.task_name, "seed": self.seed, "steps": self.steps,
               "target_object": self.scene.object_names[k]}
        if self.task_name == "reach":
            dist = np.linalg.norm(self.keypoint_positions() - self.goal_keypoints_world, axis=1)
            out["keypoint_distance"] = float(dist.mean())
            out["criterion"] = bool(out["keypoint_distance"] < REACH_THRESHOLD)
        elif self.task_name == "grasp":
            out["wrist_object_distance"] = float(np.linalg.norm(wrist - obj))
            out["contact"] = self.hand_object_contact(k)
            out["criterion"] = bool(out["wrist_object_distance"] < GRASP_DISTANCE
                                    and out["contact"])
        else:
            out["object_goal_distance"] = float(np.linalg.norm(obj - self.goal_object_position))
            out["criterion"] = bool(out["object_goal_distance"] < PLACE_THRESHOLD)
        out["consecutive"] = self.consecutive
        out["success"] = self.success()
        return out

    def _update_success(self) -> None:
        criterion = self.status()["criterion"]
        self.consecutive = self.consecutive + 1 if criterion and self.steps > 0 else 0

    def success(self) -> bool:
        """The criterion held for the last ``CONSECUTIVE_STEPS`` control steps."""
        return self.consecutive >= CONSECUTIVE_STEPS

    # ----------------------------------------------------------------- images
    def _render(self, data: mujoco.MjData) -> np.ndarray:
        if self._renderer is None:
            try:
                self._renderer = mujoco.Renderer(self.model, self.height, self.width)
            except Exception as exc:  # noqa: BLE001 - re-raised with the fix
                raise RuntimeError(
                    "MuJoCo offscreen rendering failed; set MUJOCO_GL=egl (or osmesa) before "
                    f"mujoco is first imported: {exc}"
                ) from exc
        self._renderer.update_scene(data, CAMERA_NAME)
        return self._renderer.render().copy()

    def render(self) -> np.ndarray:
        """Head-camera RGB image, uint8 (H, W, 3)."""
        return self._render(self.data)

    def goal_image(self) -> np.ndarray:
        """The rendered goal state, uint8 (H, W, 3)."""
        return self._goal_image.copy()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def __enter__(self) -> DexTask:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def make_task(name: str, seed: int = 0, backend: str = "robosuite", control_hz: float = 5.0,
              render_size: tuple[int, int] = (224, 392), objects: tuple[str, ...] | None = None
              ) -> DexTask:
    """Build a task scene. ``backend="robocasa"`` needs the optional robocasa package."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose from {TASKS}")
    if backend == "robosuite":
        scene = build_scene(objects) if objects else build_scene()
    elif backend == "robocasa":
        from dexwm_ros.sim.robocasa_adapter import build_robocasa_scene

        scene = build_robocasa_scene(objects, seed=seed)
    else:
        raise ValueError(f"unknown backend {backend!r}; choose from {BACKENDS}")
    return DexTask(name, scene, seed=seed, control_hz=control_hz, render_size=render_size)
