#!/usr/bin/env python3
"""world_model_server: holds the DexWM predictor, the current context and the goal.

Builds the context from ``latents`` and ``joint_states`` (hand keypoints by forward kinematics),
and serves ``snapshot_context``, ``set_goal`` and ``score_actions`` (N action sequences in, N
costs out: no latents per candidate cross the wire).
"""
from __future__ import annotations

import threading

import numpy as np
import torch
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import JointState

from dexwm_ros.core.actions import ACTION_REPRESENTATIONS
from dexwm_ros.core.kinematics import RobotKinematics, head_camera
from dexwm_ros.core.mpc import context_actions
from dexwm_ros.core.planning_cost import CostWeights, WorldModelCost, check_keypoint_source
from dexwm_ros.core.precision import slow_bf16_reason
from dexwm_ros.core.world_model import WorldModel
from dexwm_ros.msg import Latent
from dexwm_ros.nodes.conversions import msg_to_latent, time_to_seconds
from dexwm_ros.nodes.joint_state_buffer import JointStateBuffer
from dexwm_ros.nodes.params import (
    ConfigParameters,
    Pending,
    declare,
    declare_torch_threads,
    watch_parameters,
)
from dexwm_ros.nodes.runner import StartupError, run_node
from dexwm_ros.share import world_model_path
from dexwm_ros.srv import EncodeImage, ScoreActions, SetGoal, SnapshotContext

RELIABLE = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE)
#: Cost weights applied here (the orientation term runs in cem_planner).
SERVER_COST_FIELDS = ("latent_weight", "step_discount", "keypoint_weight",
                      "keypoint_depth_weight", "keypoint_maps", "keypoint_source",
                      "keypoint_steps")


class WorldModelServer(Node):
    def __init__(self, **node_options) -> None:
        super().__init__("world_model_server", **node_options)
        declare_torch_threads(self)
        model_path = declare(self, "model_path", "",
                             "directory of the world-model checkpoint (model.safetensors + "
                             "config.json); empty: the packaged default world model",
                             read_only=True)
        device = declare(self, "device", "cpu", "torch device, e.g. cpu or cuda:0",
                         read_only=True)
        self.context_frames = declare(self, "context_frames", 4,
                                      "context frames used for prediction", low=1, high=8,
                                      read_only=True)
        self.context_period = declare(self, "context_period", 0.2,
                                      "seconds between context frames (paper: 5 Hz)",
                                      low=0.01, high=5.0, read_only=True)
        self.sync_tolerance = declare(self, "sync_tolerance", 0.1,
                                      "max seconds between a latent and its joint state",
                                      low=0.0, high=1.0, read_only=True)
        self.weight_parameters = ConfigParameters(self, CostWeights, fields=SERVER_COST_FIELDS)
        bf16 = declare(self, "bf16", False, "run the predictor under bf16 autocast (fast on "
                       "GPUs and CPUs with AVX512-BF16 or AMX; slower on others: warned)",
                       read_only=True)
        batch_size = declare(self, "batch_size", 128,
                             "candidates per predictor call (bounds memory)", low=1, high=4096,
                             read_only=True)
        try:
            model_path = world_model_path(model_path)
        except FileNotFoundError as error:
            raise StartupError(f"no default world model: {error}") from error
        if not model_path.is_dir():
            raise StartupError(f"model_path '{model_path}' does not exist")
        self.model = WorldModel.load(model_path, device=device).eval()
        self.action_dim = ACTION_REPRESENTATIONS[self.model.action_representation]
        weights = self.cost_weights()
        self.kinematics = RobotKinematics(device=device)
        self.camera = head_camera()
        self.cost = WorldModelCost(self.model.predictor, self.model.keypoint_head,
                                   self.model.encoder_name, weights, batch_size=batch_size,
                                   autocast=torch.bfloat16 if bf16 else None,
                                   camera=self.camera)
        if bf16 and (reason := slow_bf16_reason(device)):
            self.get_logger().warning(reason)
        # parameter services share the default callback group with score_actions: new weights
        # are swapped in between scoring calls
        watch_parameters(self, self.cost_weights, self.apply_cost_weights)
        self.joints = JointStateBuffer()
        self.frames: list[tuple[float, torch.Tensor, np.ndarray, Latent]] = []
        self.pending: Latent | None = None  # the newest latent, until its joint state arrives
        # Observations keep flowing in on their own thread while a scoring request runs.
        intake = MutuallyExclusiveCallbackGroup()
        self.create_subscription(Latent, "latents", self.on_latent, RELIABLE,
                                 callback_group=intake)
        self.create_subscription(JointState, "joint_states", self.on_joint_state, RELIABLE,
                                 callback_group=intake)
        self.create_service(SnapshotContext, "snapshot_context", self.on_snapshot)
        self.encode = self.create_client(EncodeImage, "encode_image",
                                         callback_group=MutuallyExclusiveCallbackGroup())
        self.encode_timeout = declare(self, "encode_timeout", 30.0,
                                      "seconds to wait for camera_encoder to encode a goal",
                                      low=0.1, high=600.0, read_only=True)
        self.create_service(SetGoal, "set_goal", self.on_set_goal)
        self.create_service(ScoreActions, "score_actions", self.on_score)
        self.get_logger().info(f"world model from {model_path} (encoder "
                               f"{self.model.encoder_name}) on {device}")

    def cost_weights(self, pending: Pending | None = None) -> CostWeights:
        """The cost weights from the parameters (``pending`` ones replacing them), refused when
        their keypoint source cannot read this model's actions."""
        return check_keypoint_source(CostWeights(**self.weight_parameters.values(pending))
                                     .validate(), self.action_dim)

    def apply_cost_weights(self) -> None:
        self.cost.weights = self.cost_weights()

    def on_joint_state(self, msg: JointState) -> None:
        try:
            self.joints.add(msg)
        except ValueError as error:
            self.get_logger().error(f"ignoring joint_states: {error}", throttle_duration_sec=5.0)
            return
        if self.pending is not None:
            self.take_pending()

    def on_latent(self, msg: Latent) -> None:
        if msg.encoder != self.model.encoder_name:
            self.get_logger().error(f"ignoring latents of encoder '{msg.encoder}', the model "
                                    f"expects '{self.model.encoder_name}'",
                                    throttle_duration_sec=5.0)
            return
        self.pending = msg
        self.take_pending()

    def take_pending(self) -> None:
        """Add the pending latent to the context with the joint state nearest its stamp, once
        a joint state at or after that stamp has arrived (latents and joint states come on
        separate topics, in either order); drop it if none lies within ``sync_tolerance``."""
        msg = self.pending
        stamp = time_to_seconds(msg.header.stamp)
        newest = self.joints.newest_stamp
        if newest is None or newest < stamp:
            return  # its joint state may still be on its way
        self.pending = None
        joints = self.joints.at(stamp, self.sync_tolerance)
        if joints is None:
            self.get_logger().warning(f"dropping a latent: no joint state within "
                                      f"{self.sync_tolerance} s of its stamp",
                                      throttle_duration_sec=5.0)
            return
        try:
            latents = msg_to_latent(msg)
        except ValueError as error:
            self.get_logger().error(f"ignoring latents: {error}", throttle_duration_sec=5.0)
            return
        frame = (stamp, latents, joints, msg)
        # The newest frame is always the current observation; older ones keep the context rate.
        if len(self.frames) >= 2 and stamp - self.frames[-2][0] < self.context_period:
            self.frames[-1] = frame
        else:
            self.frames.append(frame)
        del self.frames[:-self.context_frames]

    def on_snapshot(self, request, response):
        frames = self.frames[-self.context_frames:]
        if not frames:
            response.success, response.message = False, "no observation yet (latents + joints)"
            return response
        joints = torch.as_tensor(np.stack([f[2] for f in frames]), dtype=torch.float32)
        actions = context_actions(self.kinematics, self.camera, joints,
                                  self.model.action_representation)
        self.cost.set_context(torch.stack([f[1] for f in frames]), actions,
                              self.model.encoder_name,
                              self.kinematics.keypoints_camera(joints[-1], self.camera).cpu())
        response.success = True
        response.stamp = frames[-1][3].header.stamp
        response.num_frames = len(frames)
        response.joint_positions = frames[-1][2].tolist()
        return response

    def encode_goal(self, image) -> Latent:
        """The goal image's latents from camera_encoder; ValueError naming what went wrong."""
        if not self.encode.wait_for_service(timeout_sec=self.encode_timeout):
            raise ValueError("camera_encoder's 'encode_image' service is not available")
        done = threading.Event()
        future = self.encode.call_async(EncodeImage.Request(image=image))
        future.add_done_callback(lambda _: done.set())
        if not done.wait(self.encode_timeout) or future.result() is None:
            self.encode.remove_pending_request(future)
            raise ValueError(f"no reply from 'encode_image' within {self.encode_timeout:.1f} s")
        reply = future.result()
        if not reply.success:
            raise ValueError(f"goal image: {reply.message}")
        return reply.latent

    def on_set_goal(self, request, response):
        try:
            latent = self.encode_goal(request.goal_image)
            self.cost.set_goal(msg_to_latent(latent), latent.encoder)
        except ValueError as error:
            response.success, response.message = False, f"invalid goal: {error}"
            return response
        keypoints = self.cost.goal_keypoints
        response.goal_keypoints_px = [] if keypoints is None else keypoints.flatten().tolist()
        response.success = True
        return response

    def _actions(self, flat, shape: tuple[int, ...]) -> torch.Tensor:
        data = np.asarray(flat, dtype=np.float32)
        expected = int(np.prod(shape))
        if data.size != expected or expected == 0:
            raise ValueError(f"got {data.size} action floats, expected "
                             f"{' x '.join(map(str, shape))} = {expected}")
        if not np.isfinite(data).all():
            raise ValueError("actions contain NaN or infinite values")
        return torch.from_numpy(data.reshape(shape))

    def on_score(self, request, response):
        try:
            actions = self._actions(request.actions,
                                    (request.num_candidates, request.horizon,
                                     self.action_dim))
            costs = self.cost.costs(actions)
        except (ValueError, RuntimeError) as error:
            response.success, response.message = False, str(error)
            return response
        response.costs = costs.float().numpy()
        response.success = True
        return response


def main(args=None) -> None:
    run_node(WorldModelServer, args, threads=3)


if __name__ == "__main__":
    main()
