#!/usr/bin/env python3
"""camera_encoder: images -> patch latents with the frozen image encoder.

Subscribes ``image`` (best effort, keep last 1: a slow encoder always gets the newest frame),
publishes ``latents`` (reliable) stamped like the image, serves ``encode_image`` (goal images).
"""
from __future__ import annotations

import torch
from rclpy.node import Node
from rclpy.qos import QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image

from dexwm_ros.core.encoder import BACKENDS, build_encoder
from dexwm_ros.core.precision import slow_bf16_reason
from dexwm_ros.msg import Latent
from dexwm_ros.nodes.conversions import image_to_rgb, latent_to_msg
from dexwm_ros.nodes.params import declare, declare_torch_threads
from dexwm_ros.nodes.runner import run_node
from dexwm_ros.srv import EncodeImage

LATENT_QOS = QoSProfile(depth=5, reliability=QoSReliabilityPolicy.RELIABLE)


class CameraEncoder(Node):
    def __init__(self) -> None:
        super().__init__("camera_encoder")
        declare_torch_threads(self)
        backend = declare(self, "backend", "tiny",
                          f"encoder backend: {' | '.join(BACKENDS)}", read_only=True)
        weights = declare(self, "weights", "",
                          "local directory (or hub id already in the local cache) of the "
                          "encoder weights; empty only for the tiny backend", read_only=True)
        device = declare(self, "device", "cpu", "torch device, e.g. cpu or cuda:0",
                         read_only=True)
        bf16 = declare(self, "bf16", False, "bf16 weights and autocast (fast on GPUs and "
                       "CPUs with AVX512-BF16 or AMX; slower on others: warned)",
                       read_only=True)
        pool = declare(self, "pool", 1, "k x k average pooling of the 16 x 28 patch grid "
                       "(1, 2 or 4; the checkpoint's, set by the launchers)", read_only=True,
                       low=1, high=4)
        self.encoder = build_encoder(backend, weights or None, device=device,
                                     dtype=torch.bfloat16 if bf16 else torch.float32, pool=pool)
        if bf16 and (reason := slow_bf16_reason(device)):
            self.get_logger().warning(reason)
        self.get_logger().info(f"encoder {self.encoder.name}: grid {self.encoder.grid}, "
                               f"dim {self.encoder.dim}, device {device}")
        self.publisher = self.create_publisher(Latent, "latents", LATENT_QOS)
        self.create_subscription(Image, "image", self.on_image, qos_profile_sensor_data)
        self.create_service(EncodeImage, "encode_image", self.on_encode_request)
        self.last_stamp = (-1, 0)

    def encode(self, msg: Image) -> Latent:
        rgb = image_to_rgb(msg)
        latents = self.encoder.encode(rgb[None])[0]
        out = latent_to_msg(latents, self.encoder.name, self.encoder.grid)
        out.header = msg.header
        return out

    def on_image(self, msg: Image) -> None:
        stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        if stamp <= self.last_stamp:
            return  # an older frame delivered late: never publish stale latents
        try:
            latent = self.encode(msg)
        except ValueError as error:
            self.get_logger().error(f"skipping image: {error}", throttle_duration_sec=5.0)
            return
        self.last_stamp = stamp
        self.publisher.publish(latent)

    def on_encode_request(self, request, response):
        try:
            response.latent = self.encode(request.image)
            response.success = True
        except ValueError as error:
            response.success, response.message = False, f"cannot encode image: {error}"
        return response


def main(args=None) -> None:
    run_node(CameraEncoder, args)


if __name__ == "__main__":
    main()
