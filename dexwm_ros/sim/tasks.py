"""Reach / grasp / place episodes with physically reached goals and the paper's success criteria.

The task records (names, criteria, hold time, episode length) are ``dexwm_ros.core.tasks``;
the motions that make each goal are ``dexwm_ros.sim.goal_motions``.

An episode is a function of its seed only. ``reset(seed)`` draws object poses clear of the
hand and lets them settle; ``place`` then runs its goal motion's lead-in, which brings the
hand down behind the target object (the paper's place episodes begin with the object
grasped, see ``goal_motions.place_goal``). It checks the start (no robot contact with the
table or any object, every object upright, not already a success), simulates the task's goal
motion from that start, records the final state as the goal (image, hand keypoints, object
position) and restores the start. A draw whose start or goal motion fails is redrawn from
``(seed, attempt)``, deterministically.
``goal_motion`` keeps the goal motion's joint targets: replaying them (the ``scripted``
policy) reproduces the goal; ``goal_waypoints`` its segment ends (approach poses, then the
goal's targets).

Control: ``step`` takes 23 absolute joint targets (clipped to the limits), moves the position
servos' set-points linearly from the previous targets over one control period
(``1 / control_hz`` s, default 5 Hz like the world model's frame rate), runs
``control_period / 0.002`` physics steps and recomputes positions and contacts at the new
state. Success holds when the criterion has held for ``hold_seconds`` (paper appendix C.4:
about 1 s), i.e. ``hold_steps`` consecutive control steps.
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
from dexwm_ros.core.tasks import CONTROL_HZ, TASK_NAMES, task_spec
from dexwm_ros.sim.goal_motions import (
    GOAL_MOTIONS,
    HAND_CLOSED,
    HAND_DOWN,
    HAND_OPEN,
    HAND_PRESHAPE,
    grasp_wrist_position,
    yaw_rotation,
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

__all__ = ["BACKENDS", "DexTask", "HAND_CLOSED", "HAND_DOWN", "HAND_OPEN", "HAND_PRESHAPE",
           "TASK_NAMES", "make_task", "yaw_rotation"]

BACKENDS = ("robosuite", "robocasa")
#: Draws per seed before ``reset`` gives up.
MAX_ATTEMPTS = 40
#: Horizontal clearance between an object and any hand keypoint at the start (metres).
HAND_CLEARANCE = 0.08
#: Seconds the objects settle under gravity before an episode starts.
SETTLE_SECONDS = 0.3
#: An object tilted more than this (rad) counts as knocked over (a hand closing on an object
#: tilts it by about 0.4 rad).
MAX_TILT = 0.8


class EpisodeError(ValueError):
    """No valid episode could be drawn for a seed."""


class DexTask:
    """One task in one scene. See the module docstring for episodes, control and success."""

    def __init__(self, task_name: str, scene: Scene, seed: int = 0,
                 control_hz: float = CONTROL_HZ,
                 render_size: tuple[int, int] = (224, 392)) -> None:
        self.spec = task_spec(task_name)
        if control_hz <= 0 or (1.0 / control_hz) < TIMESTEP:
            raise ValueError(f"control_hz must be in (0, {1 / TIMESTEP:g}], got {control_hz}")
        self.task_name = task_name
        self.motion = GOAL_MOTIONS[task_name]
        self.scene = scene
        self.model = scene.model
        self.data = mujoco.MjData(self.model)
        self._scratch = mujoco.MjData(self.model)
        self.control_hz = float(control_hz)
        self.substeps = max(1, round(1.0 / control_hz / TIMESTEP))
        self.hold_seconds = self.spec.hold_seconds
        self.hold_steps = self.spec.hold_steps(self.control_hz)
        self.max_steps = self.spec.max_steps(self.control_hz)
        self.height, self.width = render_size
        self.camera: PinholeCamera = PinholeCamera.from_fovy(
            HEAD_CAMERA_FOVY_DEG, HEAD_CAMERA_POSITION, pitch_deg=HEAD_CAMERA_PITCH_DEG,
            height=self.height, width=self.width,
        )
        self.joint_names = JOINT_NAMES
        jnt = [self.model.joint(n).id for n in JOINT_NAMES]
        self.lower, self.upper = self.model.jnt_range[jnt].T.copy()
        self._state_spec = mujoco.mjtState.mjSTATE_INTEGRATION
        self._renderer: mujoco.Renderer | None = None
        self._goal_image: np.ndarray | None = None
        self.reset(seed)

    # ----------------------------------------------------------------- episode
    def reset(self, seed: int | None = None) -> None:
        """Start the episode of ``seed`` (``None``: replay the current seed's episode)."""
        if seed is not None:
            self.seed = int(seed)
        for attempt in range(MAX_ATTEMPTS):
            if self._draw(np.random.default_rng([self.seed, attempt])):
                self.attempt = attempt
                return
        raise EpisodeError(f"{self.task_name} seed {self.seed}: no valid episode in "
                           f"{MAX_ATTEMPTS} draws")

    def _draw(self, rng: np.random.Generator) -> bool:
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        q = np.array(HOME_JOINT_POSITIONS)
        q[:7] += rng.normal(0.0, 0.03, 7)
        q = np.clip(q, self.lower, self.upper)
        d.qpos[self.scene.qpos_robot] = q
        d.ctrl[self.scene.actuators] = q
        self._target = q.copy()
        mujoco.mj_forward(m, d)
        self.object_positions = self._sample_object_positions(rng, self.keypoint_positions())
        self.object_yaws = rng.uniform(-math.pi, math.pi, len(self.scene.object_names))
        self._set_objects(d, self.object_positions, self.object_yaws)
        self.target_object = int(rng.integers(len(self.scene.object_names)))
        self._reset_counters()
        self._run(np.repeat(q[None], max(1, round(SETTLE_SECONDS * self.control_hz)), 0))
        self._sync_object_positions()
        motion = self.motion(self, rng)
        if motion is None:
            return False
        if motion.lead_in is not None:
            self._run(motion.lead_in)
            self._sync_object_positions()
        self.initial_object_positions = self.object_positions.copy()
        if not self._valid_start():
            return False
        start_state = self._get_state()
        start_target, start_objects = self._target.copy(), self.object_positions.copy()

        self._run(motion.targets)
        self.goal_joint_positions = self.joint_positions()
        self.goal_keypoints_world = self.keypoint_positions()
        self.goal_object_position = self._object_position(self.target_object)
        self._goal_state = self._get_state()
        self._goal_image = None
        self.goal_motion = motion.targets
        self.goal_waypoints = motion.waypoints
        if not self._valid_goal(start_objects):
            return False

        self._set_state(start_state)
        self._target, self.object_positions = start_target, start_objects
        self._reset_counters()
        self.start_measurements = self.measurements()
        return not self.spec.criterion(self.start_measurements)

    def _reset_counters(self) -> None:
        self.steps = 0
        self.consecutive = 0

    def _run(self, targets: np.ndarray) -> None:
        for target in targets:
            self._servo(target)

    def _sample_object_positions(self, rng: np.random.Generator,
                                 hand_points: np.ndarray) -> np.ndarray:
        (x0, x1), (y0, y1) = OBJECT_REGION
        radii = self.scene.object_radii
        positions = np.zeros((len(radii), 3))
        for k in range(len(radii)):
            for _ in range(500):
                xy = rng.uniform([x0, y0], [x1, y1])
                apart = all(np.linalg.norm(xy - positions[j, :2]) > radii[j] + radii[k] + 0.04
                            for j in range(k))
                clear = np.linalg.norm(hand_points[:, :2] - xy, axis=1).min() > \
                    radii[k] + HAND_CLEARANCE
                if apart and clear:
                    break
            positions[k] = [xy[0], xy[1], TABLE_TOP_Z + self.scene.object_bottom_offsets[k]]
        return positions

    def _set_objects(self, data: mujoco.MjData, positions: np.ndarray, yaws: np.ndarray) -> None:
        for k, (pos, yaw) in enumerate(zip(positions, yaws, strict=True)):
            quat = [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]
            data.qpos[self.scene.object_qpos[k]] = np.concatenate([pos + [0, 0, 0.001], quat])
            data.qvel[self.scene.object_qvel[k]] = 0.0
        mujoco.mj_forward(self.model, data)

    def _sync_object_positions(self) -> None:
        self.object_positions = np.stack([self._object_position(k)
                                          for k in range(len(self.scene.object_names))])

    def _valid_start(self) -> bool:
        upright = all(self._object_tilt(k) <= MAX_TILT for k in range(len(self.scene.object_names)))
        return upright and not self.robot_world_contacts()

    def _valid_goal(self, start_objects: np.ndarray) -> bool:
        k = self.target_object
        if self.task_name != "reach" and self._object_tilt(k) > MAX_TILT:
            return False
        if self.task_name == "place":
            moved = np.linalg.norm(self.goal_object_position[:2] - start_objects[k, :2])
            resting = self.goal_object_position[2] - self.initial_object_positions[k, 2] < 0.02
            if not (moved > 0.12 and resting):
                return False
        # the replayed goal motion must meet the task's success criterion
        self._set_state(self._goal_state)
        measured = self.measurements()
        return bool(self.spec.criterion(measured))

    # ----------------------------------------------------------------- state
    def _get_state(self) -> np.ndarray:
        state = np.empty(mujoco.mj_stateSize(self.model, self._state_spec))
        mujoco.mj_getState(self.model, self.data, state, self._state_spec)
        return state

    def _set_state(self, state: np.ndarray) -> None:
        mujoco.mj_setState(self.model, self.data, state, self._state_spec)
        mujoco.mj_forward(self.model, self.data)

    def wrist_ik(self, position, rotation=HAND_DOWN, hand=HAND_OPEN, q_init=None):
        """Joint positions (23,) putting the wrist at ``position`` (world) with ``hand`` joints."""
        q0 = np.array(HOME_JOINT_POSITIONS) if q_init is None else np.asarray(q_init, float)
        q0 = q0.copy()
        q0[7:] = hand
        return solve_wrist_ik(self.scene, self._scratch, position, rotation, q0)

    def grasp_joint_positions(self, k: int, xy: np.ndarray | None = None, hand=HAND_CLOSED,
                              lift: float = 0.0) -> np.ndarray:
        """Joint positions of a top-down grasp of object ``k`` (at ``xy``) with ``hand``."""
        q, _ = self.wrist_ik(grasp_wrist_position(self, k, xy, lift), hand=hand)
        return q

    def keypoint_positions_at(self, joints: np.ndarray) -> np.ndarray:
        """(5, 3) world positions of the wrist and fingertips for ``joints`` (kinematics)."""
        self._scratch.qpos[self.scene.qpos_robot] = joints
        mujoco.mj_kinematics(self.model, self._scratch)
        return self._scratch.xpos[self.scene.keypoint_bodies].copy()

    # ----------------------------------------------------------------- control
    @property
    def time(self) -> float:
        return float(self.data.time)

    def _servo(self, target: np.ndarray) -> None:
        start = self._target
        for i in range(1, self.substeps + 1):
            self.data.ctrl[self.scene.actuators] = start + (target - start) * (i / self.substeps)
            mujoco.mj_step(self.model, self.data)
        mujoco.mj_forward(self.model, self.data)  # positions and contacts at the new state
        self._target = target

    def step(self, joint_targets: np.ndarray) -> None:
        """Servo to ``joint_targets`` (23,) over one control period, then update success."""
        target = np.asarray(joint_targets, dtype=np.float64)
        if target.shape != (NUM_JOINTS,):
            raise ValueError(f"joint_targets must be ({NUM_JOINTS},), got {target.shape}")
        if not np.all(np.isfinite(target)):
            raise ValueError("joint_targets contains NaN or inf")
        self._servo(np.clip(target, self.lower, self.upper))
        self.steps += 1
        criterion = self.spec.criterion(self.measurements())
        self.consecutive = self.consecutive + 1 if criterion else 0

    def scripted_target(self) -> np.ndarray:
        """The goal motion's joint targets for the next step (its last one once it is over)."""
        return self.goal_motion[min(self.steps, len(self.goal_motion) - 1)].copy()

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

    def _object_position(self, k: int) -> np.ndarray:
        return self.data.xpos[self.scene.object_bodies[k]].copy()

    def _object_tilt(self, k: int) -> float:
        up = self.data.xmat[self.scene.object_bodies[k]].reshape(3, 3)[:, 2]
        return float(math.acos(np.clip(up[2], -1.0, 1.0)))

    # ----------------------------------------------------------------- success
    def robot_world_contacts(self) -> list[tuple[int, int]]:
        """(robot geom, other geom) pairs in contact, the other being the table or an object."""
        robot = self.scene.robot_geom_set
        others = self.scene.table_geom_set.union(*self.scene.object_geom_sets)
        pairs = []
        for c in self.data.contact[: self.data.ncon]:
            if c.geom1 in robot and c.geom2 in others:
                pairs.append((c.geom1, c.geom2))
            elif c.geom2 in robot and c.geom1 in others:
                pairs.append((c.geom2, c.geom1))
        return pairs

    def hand_object_contact(self, k: int) -> bool:
        hand, obj = self.scene.hand_geom_set, self.scene.object_geom_sets[k]
        return any((c.geom1 in hand and c.geom2 in obj) or (c.geom2 in hand and c.geom1 in obj)
                   for c in self.data.contact[: self.data.ncon])

    def measurements(self) -> dict[str, float | bool]:
        """Every quantity the task criteria read, at the current state."""
        k = self.target_object
        obj = self._object_position(k)
        wrist = self.data.xpos[self.scene.keypoint_bodies[0]]
        keypoints = np.linalg.norm(self.keypoint_positions() - self.goal_keypoints_world, axis=1)
        return {
            "keypoint_distance": float(keypoints.mean()),
            "wrist_object_distance": float(np.linalg.norm(wrist - obj)),
            "contact": self.hand_object_contact(k),
            "object_goal_distance": float(np.linalg.norm(obj - self.goal_object_position)),
        }

    def status(self) -> dict:
        """Task measurements, whether the criterion holds now, and the consecutive count."""
        measured = self.measurements()
        return {"task": self.task_name, "seed": self.seed, "steps": self.steps,
                "target_object": self.scene.object_names[self.target_object], **measured,
                "distance": measured[self.spec.distance_key],
                "criterion": bool(self.spec.criterion(measured)),
                "consecutive": self.consecutive, "success": self.success()}

    def success(self) -> bool:
        """The criterion held for the last ``hold_steps`` control steps."""
        return self.consecutive >= self.hold_steps

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
        """The head-camera image of the goal state (the goal motion's last frame)."""
        if self._goal_image is None:
            goal = mujoco.MjData(self.model)
            mujoco.mj_setState(self.model, goal, self._goal_state, self._state_spec)
            mujoco.mj_forward(self.model, goal)
            self._goal_image = self._render(goal)
        return self._goal_image.copy()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def __enter__(self) -> DexTask:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def make_task(name: str, seed: int = 0, backend: str = "robosuite",
              control_hz: float = CONTROL_HZ,
              render_size: tuple[int, int] = (224, 392), objects: tuple[str, ...] | None = None
              ) -> DexTask:
    """Build a task scene. ``backend="robocasa"`` needs the optional robocasa package."""
    task_spec(name)
    if backend == "robosuite":
        scene = build_scene(objects) if objects else build_scene()
    elif backend == "robocasa":
        from dexwm_ros.sim.robocasa_adapter import build_robocasa_scene

        scene = build_robocasa_scene(objects, seed=seed)
    else:
        raise ValueError(f"unknown backend {backend!r}; choose from {BACKENDS}")
    return DexTask(name, scene, seed=seed, control_hz=control_hz, render_size=render_size)
