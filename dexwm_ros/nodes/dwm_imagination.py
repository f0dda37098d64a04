#!/usr/bin/env python3
"""dwm_imagination: the Imagine action server, DWM videos of what candidate plans will do.

Per goal: the static-scene video is the current camera frame (the goal's, or the latest on
``image``) repeated; each plan (the goal's trajectories, or the last one on
``planned_trajectory``) is resampled to the model's frame count and the robot hand alone is
rendered along it from the head camera at the frame's own size, then resized like the frame.
The static-scene latents and prompt embeddings are computed once per image and prompt and
reused for every plan; all plans are denoised as one batch. Feedback after every denoising
step; cancel takes effect within one step. The frames are published on ``imagined_frames``
(plan after plan) and written as one mp4 per plan to ``output_dir``.
"""
from __future__ import annotations

import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import Image
from trajectory_msgs.msg import JointTrajectory

from dexwm_ros.action import Imagine
from dexwm_ros.core.kinematics import JOINT_NAMES
from dexwm_ros.nodes.action_goals import GoalFailed, finish_goal
from dexwm_ros.nodes.conversions import (
    image_to_rgb,
    ordered_positions,
    rgb_to_image,
    seconds_to_duration,
    time_to_seconds,
)
from dexwm_ros.nodes.params import declare, declare_torch_threads
from dexwm_ros.nodes.runner import StartupError, run_node

RESULT = Imagine.Result


def trajectory_joints(msg: JointTrajectory) -> tuple[np.ndarray, np.ndarray]:
    """Times ``(N,)`` and joint positions ``(N, 23)`` (``JOINT_NAMES`` order) of a plan."""
    if not msg.points:
        raise ValueError("trajectory has no points")
    times = np.array([time_to_seconds(p.time_from_start) for p in msg.points])
    joints = np.stack([ordered_positions(msg.joint_names, p.positions, JOINT_NAMES)
                       for p in msg.points])
    return times, joints


class DwmImaginationNode(Node):
    def __init__(self) -> None:
        super().__init__("dwm_imagination")
        declare_torch_threads(self)
        base = declare(self, "base_model_path", "", "CogVideoX-Fun-InP base model directory "
                       "(transformer/ vae/ text_encoder/ tokenizer/ scheduler/)", read_only=True)
        weights = declare(self, "dwm_weights_path", "", "DWM weights directory (dwm_config.json,"
                          " lora.safetensors, patch_embed.safetensors)", read_only=True)
        device = declare(self, "device", "cpu", "torch device (cpu, cuda, cuda:1, ...)",
                         read_only=True)
        dtype = declare(self, "dtype", "float32", "float32, bfloat16 or float16", read_only=True)
        text_device = declare(self, "text_encoder_device", "", "device of the T5 encoder, "
                              "empty = device (cpu saves GPU memory; prompts are cached)",
                              read_only=True)
        scheduler = declare(self, "scheduler", "ddim", "ddim or dpm (CogVideoX schedulers)",
                            read_only=True)
        slicing = declare(self, "vae_slicing", True, "VAE: one video at a time", read_only=True)
        tiling = declare(self, "vae_tiling", False, "VAE: spatial tiles (saves GPU memory)",
                         read_only=True)
        declare(self, "num_inference_steps", 50, "denoising steps when the goal says 0",
                low=1, high=1000)
        declare(self, "guidance_scale", 6.0, "text classifier-free guidance when the goal says "
                "0 (1 = off)", low=1.0, high=30.0)
        self.num_frames = declare(self, "num_frames", 49, "frames per video (1 + 8m)", low=1,
                                  high=257, read_only=True)
        self.height = declare(self, "height", 480, "video height (pixels)", low=16, high=2048,
                              read_only=True)
        self.width = declare(self, "width", 720, "video width (pixels)", low=16, high=2048,
                             read_only=True)
        declare(self, "fps", 8.0, "frame rate of the written mp4", low=1.0, high=120.0)
        declare(self, "prompt", "a robot hand manipulates objects on a table",
                "prompt when the goal gives none")
        declare(self, "negative_prompt", "", "prompt of the unconditional guidance pass")
        declare(self, "seed", 0, "noise seed", low=0, high=2**31 - 1)
        declare(self, "output_dir", "dwm_videos", "directory of the written mp4 files")
        image_topic = declare(self, "image_topic", "image", "camera image topic",
                              read_only=True)
        plan_topic = declare(self, "plan_topic", "planned_trajectory",
                             "topic of the last plan (used when a goal has no plans)",
                             read_only=True)
        frames_topic = declare(self, "frames_topic", "imagined_frames",
                               "topic of the imagined frames", read_only=True)
        if not base or not weights:
            raise StartupError("parameters base_model_path and dwm_weights_path are required")
        from dexwm_ros.dwm.loading import load_pipeline

        self.pipeline = load_pipeline(base, weights, device=device, dtype=dtype,
                                      scheduler=scheduler, vae_slicing=slicing,
                                      vae_tiling=tiling, text_encoder_device=text_device or None)
        self.pipeline.check_video_size(self.num_frames, self.height, self.width)
        import mujoco

        from dexwm_ros.sim.scene import robot_mjcf

        self.robot = mujoco.MjModel.from_xml_string(robot_mjcf())
        self.renderers: dict = {}
        # An EGL context belongs to the thread that made it current: render on one thread.
        self.render_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="render")
        self.scene_key = None
        self.scene = None
        self.latest_image: Image | None = None
        self.latest_plan: JointTrajectory | None = None
        inputs = MutuallyExclusiveCallbackGroup()
        reliable = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE)
        self.create_subscription(Image, image_topic, self._on_image,
                                 QoSProfile(depth=1, reliability=QoSReliabilityPolicy.BEST_EFFORT),
                                 callback_group=inputs)
        self.create_subscription(JointTrajectory, plan_topic, self._on_plan, reliable,
                                 callback_group=inputs)
        self.frames_pub = self.create_publisher(
            Image, frames_topic, QoSProfile(depth=max(10, 4 * self.num_frames),
                                            reliability=QoSReliabilityPolicy.RELIABLE))
        self.execution = threading.Lock()
        self.server = ActionServer(
            self, Imagine, "imagine", self.execute,
            goal_callback=lambda _: GoalResponse.ACCEPT,
            cancel_callback=lambda _: CancelResponse.ACCEPT,
            callback_group=ReentrantCallbackGroup())
        self.get_logger().info(f"DWM ready: {self.num_frames} frames {self.width}x{self.height}"
                               f" on {device} ({dtype})")

    def param(self, name: str):
        """Current value of a parameter that may change between goals."""
        return self.get_parameter(name).value

    def _on_image(self, msg: Image) -> None:
        self.latest_image = msg

    def _on_plan(self, msg: JointTrajectory) -> None:
        self.latest_plan = msg

    # ------------------------------------------------------------------ goals
    def execute(self, handle):
        with self.execution:  # one goal at a time, in arrival order
            return finish_goal(handle, self.run_goal, RESULT, self.get_logger())

    def destroy_node(self) -> None:
        def close():
            for renderer in self.renderers.values():
                renderer.close()
            self.renderers.clear()

        if hasattr(self, "render_thread"):
            self.render_thread.submit(close).result()
            self.render_thread.shutdown()
        super().destroy_node()

    def hand_videos(self, plans: list[JointTrajectory], height: int, width: int) -> np.ndarray:
        """Hand-only videos ``(B, F, H, W, 3)`` rendered at the camera image's size (on the
        render thread)."""
        from dexwm_ros.dwm.robot_inputs import (
            HandVideoRenderer,
            resample_trajectory,
            resize_frames,
        )

        if (height, width) not in self.renderers:
            self.renderers[(height, width)] = HandVideoRenderer(self.robot, height, width)
        renderer = self.renderers[(height, width)]
        videos = []
        for k, plan in enumerate(plans):
            try:
                times, joints = trajectory_joints(plan)
                frames = resample_trajectory(times, joints, self.num_frames)
            except ValueError as error:
                raise GoalFailed(RESULT.ERROR_INVALID_GOAL, f"plan {k}: {error}") from error
            videos.append(resize_frames(renderer.render(frames), self.height, self.width))
        return np.stack(videos)

    def scene_for(self, rgb: np.ndarray, prompt: str):
        """Static-scene conditioning, reused while the image and prompt stay the same."""
        from dexwm_ros.dwm.robot_inputs import static_scene_video

        static = static_scene_video(rgb, self.num_frames, self.height, self.width)
        negative = self.param("negative_prompt")
        key = (hashlib.sha1(static[0].tobytes()).hexdigest(), prompt, negative)
        if key != self.scene_key:
            self.scene = self.pipeline.prepare_scene(static, prompt, negative)
            self.scene_key = key
        return self.scene

    def run_goal(self, handle) -> Imagine.Result:
        from dexwm_ros.dwm.pipeline import ImaginationCancelled

        goal = handle.request
        plans = list(goal.plans) or ([self.latest_plan] if self.latest_plan else [])
        if not plans:
            raise GoalFailed(RESULT.ERROR_NO_PLAN, "the goal has no plans and none was "
                             "received on the plan topic")
        image = goal.image if goal.image.height else self.latest_image
        if image is None:
            raise GoalFailed(RESULT.ERROR_NO_IMAGE, "the goal has no image and none was "
                             "received on the image topic")
        try:
            rgb = image_to_rgb(image)
        except ValueError as error:
            raise GoalFailed(RESULT.ERROR_INVALID_GOAL, f"image: {error}") from error
        if goal.guidance_scale and goal.guidance_scale < 1.0:
            raise GoalFailed(RESULT.ERROR_INVALID_GOAL,
                             f"guidance_scale must be 0 (parameter) or >= 1, got "
                             f"{goal.guidance_scale}")
        steps = goal.num_inference_steps or self.param("num_inference_steps")
        guidance = goal.guidance_scale or self.param("guidance_scale")
        hands = self.render_thread.submit(self.hand_videos, plans, *rgb.shape[:2]).result()
        scene = self.scene_for(rgb, goal.prompt or self.param("prompt"))
        start = time.monotonic()

        def on_step(done: int, total: int) -> bool:
            handle.publish_feedback(Imagine.Feedback(
                step=done, total_steps=total,
                elapsed=seconds_to_duration(time.monotonic() - start)))
            return not handle.is_cancel_requested

        try:
            videos = self.pipeline.imagine(scene, hands, steps=steps, guidance_scale=guidance,
                                           seed=self.param("seed"), on_step=on_step)
        except ImaginationCancelled as cancel:
            raise GoalFailed(RESULT.ERROR_CANCELED, str(cancel)) from cancel
        return self.publish(videos, image.header.frame_id, bytes(handle.goal_id.uuid).hex()[:8])

    def publish(self, videos: np.ndarray, frame_id: str, name: str) -> Imagine.Result:
        from training.video import write_video

        result = RESULT(num_frames=videos.shape[1])
        output_dir = Path(self.param("output_dir"))
        output_dir.mkdir(parents=True, exist_ok=True)
        for k, video in enumerate(videos):
            for frame in video:
                self.frames_pub.publish(rgb_to_image(frame, self.get_clock().now().to_msg(),
                                                     frame_id))
            path = output_dir / f"imagine_{name}_plan{k}.mp4"
            write_video(path, video, self.param("fps"))
            result.video_paths.append(str(path.resolve()))
        return result


def main(args=None) -> None:
    run_node(DwmImaginationNode, args, threads=3)


if __name__ == "__main__":
    main()
