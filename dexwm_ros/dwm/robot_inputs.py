"""DWM inputs from the robot: the static-scene video and the hand-only video.

DWM conditions on two videos from the same camera (paper section 2, eq. 2): the static scene
and the hand. With the robot's fixed head camera the static-scene video is the current frame
repeated (as the paper does for fixed-camera real videos). The hand video shows the robot hand,
and only the hand, in one light grey on a plain black background (like the paper's hand-mesh
renderings), rendered by MuJoCo from the same camera along a planned joint trajectory
resampled to the model's frame count.
"""
from __future__ import annotations

import copy
import os

import numpy as np

from dexwm_ros.core.kinematics import JOINT_NAMES, NUM_JOINTS, WRIST_LINK

#: MuJoCo geom group the renderer hides everything but the hand in (never shown by default).
_HIDDEN_GROUP = 5


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 ``(N, H, W, 3)`` -> ``(N, height, width, 3)``: resize to cover, centre-crop."""
    from training.video import resize_center_crop

    return resize_center_crop(np.asarray(frames), (height, width))


def static_scene_video(frame: np.ndarray, num_frames: int, height: int, width: int) -> np.ndarray:
    """The current camera frame ``(H, W, 3)`` resized and repeated: ``(F, height, width, 3)``."""
    frame = np.asarray(frame)
    if frame.ndim != 3:
        raise ValueError(f"expected one (H, W, 3) frame, got {frame.shape}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    return np.repeat(resize_frames(frame[None], height, width), num_frames, axis=0)


def resample_trajectory(times: np.ndarray, positions: np.ndarray, num_frames: int) -> np.ndarray:
    """Joint positions ``(N, J)`` at increasing ``times`` -> ``(num_frames, J)`` at evenly
    spaced times from the first to the last point (linear interpolation)."""
    times = np.asarray(times, dtype=float)
    positions = np.asarray(positions, dtype=float)
    if positions.ndim != 2 or len(times) != len(positions) or len(times) == 0:
        raise ValueError(f"expected N times and (N, J) positions, got {times.shape} and "
                         f"{positions.shape}")
    if not (np.isfinite(times).all() and np.isfinite(positions).all()):
        raise ValueError("trajectory contains NaN or infinite values")
    if np.any(np.diff(times) <= 0):
        raise ValueError("trajectory times must increase strictly")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    query = np.linspace(times[0], times[-1], num_frames)
    return np.stack([np.interp(query, times, positions[:, j])
                     for j in range(positions.shape[1])], axis=1)


class HandVideoRenderer:
    """Renders the subtree of ``root_body`` (default: the hand) alone from a MuJoCo camera.

    Works on any compiled scene that contains the robot (e.g. a task's ``model``): the other
    geoms are moved to a hidden group of a private copy of the model, the shown geoms get the
    plain colour ``rgba``, sites and the skybox are not drawn, so the background is black. The
    scene's lights are switched off and a fixed headlight is used, so the hand looks the same
    whatever scene the model comes from (training triplets vs the robot-only model of the node).
    """

    def __init__(self, model, height: int, width: int, camera: str | None = None,
                 root_body: str = WRIST_LINK, rgba=(0.85, 0.85, 0.85, 1.0)) -> None:
        os.environ.setdefault("MUJOCO_GL", "egl")
        import mujoco

        from dexwm_ros.sim.scene import CAMERA_NAME

        self._mujoco = mujoco
        self.model = copy.deepcopy(model)
        self.camera = camera or CAMERA_NAME
        self.model.camera(self.camera)  # KeyError names a missing camera
        root = self.model.body(root_body).id
        shown = set()
        for body in range(self.model.nbody):
            walker = body
            while walker not in (0, root):
                walker = self.model.body_parentid[walker]
            if walker == root:
                shown.add(body)
        for geom in range(self.model.ngeom):
            if self.model.geom_bodyid[geom] in shown:
                self.model.geom_matid[geom] = -1
                self.model.geom_rgba[geom] = rgba
            else:
                self.model.geom_group[geom] = _HIDDEN_GROUP
        self.model.light_active[:] = 0
        headlight = self.model.vis.headlight
        headlight.active = 1
        headlight.ambient[:] = (0.3, 0.3, 0.3)
        headlight.diffuse[:] = (0.6, 0.6, 0.6)
        headlight.specular[:] = (0.1, 0.1, 0.1)
        self.model.vis.global_.offwidth = max(self.model.vis.global_.offwidth, width)
        self.model.vis.global_.offheight = max(self.model.vis.global_.offheight, height)
        self.qpos = np.array([self.model.jnt_qposadr[self.model.joint(name).id]
                              for name in JOINT_NAMES])
        self.data = mujoco.MjData(self.model)
        self.option = mujoco.MjvOption()
        self.option.geomgroup[_HIDDEN_GROUP] = 0
        self.option.sitegroup[:] = 0
        try:
            self.renderer = mujoco.Renderer(self.model, height, width)
        except Exception as error:  # noqa: BLE001 - re-raised with the fix
            raise RuntimeError("MuJoCo offscreen rendering failed; set MUJOCO_GL=egl (or "
                               f"osmesa) before mujoco is first imported: {error}") from error
        self.renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = 0
        self.height, self.width = height, width

    def render(self, joint_positions: np.ndarray) -> np.ndarray:
        """uint8 ``(F, H, W, 3)`` hand-only frames for joint positions ``(F, 23)``."""
        joints = np.asarray(joint_positions, dtype=float)
        if joints.ndim != 2 or joints.shape[1] != NUM_JOINTS:
            raise ValueError(f"expected (F, {NUM_JOINTS}) joint positions, got {joints.shape}")
        frames = np.empty((len(joints), self.height, self.width, 3), dtype=np.uint8)
        for i, q in enumerate(joints):
            self.data.qpos[self.qpos] = q
            self._mujoco.mj_forward(self.model, self.data)
            self.renderer.update_scene(self.data, self.camera, scene_option=self.option)
            frames[i] = self.renderer.render()
        return frames

    def close(self) -> None:
        self.renderer.close()

    def __enter__(self) -> HandVideoRenderer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
