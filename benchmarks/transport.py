"""DDS transport of Latent messages and camera_encoder node overhead.

1. Latent (448 x 1024 float32, 1.8 MB) from a publisher process to this process over DDS,
   reliable: latency at 5 Hz and throughput at the maximum rate.
2. camera_encoder node rate (images in, latents out, separate process) against the bare
   encoder's rate on the same images, with a ViT-S sized DINOv2 encoder (random weights saved
   and loaded like real ones). Target: node overhead under 10 %.

Runs with no arguments; ends with BENCH lines.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(101, 200)))

GRID, DIM = (16, 28), 1024


def publisher(rate_hz: float, count: int) -> None:
    """Child process: publish ``count`` Latents stamped with the send time."""
    import rclpy
    from rclpy.qos import QoSProfile, QoSReliabilityPolicy

    from dexwm_ros.msg import Latent

    rclpy.init()
    node = rclpy.create_node("latent_publisher")
    pub = node.create_publisher(Latent, "bench_latents",
                                QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE))
    data = np.random.default_rng(0).standard_normal(GRID[0] * GRID[1] * DIM).astype(np.float32)
    while pub.get_subscription_count() == 0:
        rclpy.spin_once(node, timeout_sec=0.05)
    time.sleep(0.5)
    for _ in range(count):
        msg = Latent(encoder="bench", grid_height=GRID[0], grid_width=GRID[1], dim=DIM)
        msg.data = data
        msg.header.stamp = node.get_clock().now().to_msg()
        pub.publish(msg)
        if rate_hz > 0:
            time.sleep(1.0 / rate_hz)
    time.sleep(1.0)
    rclpy.shutdown()


def measure_transport(node, rate_hz: float, count: int) -> tuple[float, float]:
    """(median latency ms, messages per second) over ``count`` messages."""
    import rclpy
    from rclpy.qos import QoSProfile, QoSReliabilityPolicy

    from dexwm_ros.msg import Latent

    arrivals: list[tuple[float, float]] = []

    def on_msg(msg):
        now = node.get_clock().now().nanoseconds * 1e-9
        arrivals.append((now, msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9))

    sub = node.create_subscription(Latent, "bench_latents", on_msg,
                                   QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE))
    child = subprocess.Popen([sys.executable, __file__, "--publisher", str(rate_hz), str(count)])
    deadline = time.monotonic() + 120
    while len(arrivals) < count and time.monotonic() < deadline and child.poll() is None:
        rclpy.spin_once(node, timeout_sec=0.05)
    while len(arrivals) < count and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    child.wait()
    node.destroy_subscription(sub)
    latencies = [1e3 * (t - s) for t, s in arrivals]
    span = arrivals[-1][0] - arrivals[0][0]
    return float(np.median(latencies)), (len(arrivals) - 1) / span


def encoder_rates(weights: str, seconds: float = 20.0) -> tuple[float, float]:
    """(bare encoder frames/s, camera_encoder node latents/s) for 224x392 images."""
    import rclpy
    from rclpy.qos import QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from dexwm_ros.core.encoder import build_encoder
    from dexwm_ros.msg import Latent
    from dexwm_ros.nodes.conversions import rgb_to_image

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (224, 392, 3), dtype=np.uint8) for _ in range(4)]
    encoder = build_encoder("dinov2", weights)
    encoder.encode(images[0][None])
    start, frames = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        encoder.encode(images[frames % 4][None])
        frames += 1
    bare = frames / (time.perf_counter() - start)
    del encoder

    node_proc = subprocess.Popen(
        [sys.executable, "-m", "dexwm_ros.nodes.camera_encoder", "--ros-args",
         "-p", "backend:=dinov2", "-p", f"weights:={weights}"])
    node = rclpy.create_node("encoder_bench")
    stamps: list[float] = []
    node.create_subscription(Latent, "latents", lambda m: stamps.append(time.perf_counter()),
                             QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE))
    pub = node.create_publisher(Image, "image", qos_profile_sensor_data)
    messages = [rgb_to_image(image) for image in images]
    deadline = time.monotonic() + 120
    sent = 0
    while time.monotonic() < deadline and len(stamps) < 3:  # warm up (model load)
        pub.publish(messages[sent % 4])
        sent += 1
        rclpy.spin_once(node, timeout_sec=0.02)
    first = len(stamps)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:  # keep the node saturated: it always has a fresh frame
        messages[sent % 4].header.stamp = node.get_clock().now().to_msg()
        pub.publish(messages[sent % 4])
        sent += 1
        rclpy.spin_once(node, timeout_sec=0.01)
    node_proc.terminate()
    node_proc.wait()
    window = stamps[first:]
    rate = (len(window) - 1) / (window[-1] - window[0])
    node.destroy_node()
    return bare, rate


def main() -> None:
    import rclpy
    from transformers import Dinov2Config, Dinov2Model

    rclpy.init()
    node = rclpy.create_node("transport_bench")
    latency_5hz, _ = measure_transport(node, 5.0, 25)
    latency_max, throughput = measure_transport(node, 0.0, 100)
    node.destroy_node()
    with tempfile.TemporaryDirectory() as weights:
        config = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
                              patch_size=14, image_size=518)
        Dinov2Model(config).save_pretrained(weights)
        bare, node_rate = encoder_rates(weights)
    rclpy.shutdown()
    overhead = 100.0 * (1.0 - node_rate / bare)
    print(f"Latent {GRID[0]}x{GRID[1]}x{DIM} float32: median latency {latency_5hz:.2f} ms at "
          f"5 Hz, {latency_max:.2f} ms at max rate; {throughput:.1f} msg/s "
          f"({throughput * GRID[0] * GRID[1] * DIM * 4 / 1e6:.0f} MB/s)")
    print(f"ViT-S encoder: bare {bare:.2f} frames/s, camera_encoder node {node_rate:.2f} latents/s")
    print(f"BENCH latent_latency_5hz {latency_5hz:.2f} ms")
    print(f"BENCH latent_latency_max_rate {latency_max:.2f} ms")
    print(f"BENCH latent_throughput {throughput:.1f} msg/s")
    print(f"BENCH encoder_bare_rate {bare:.2f} frames/s")
    print(f"BENCH encoder_node_rate {node_rate:.2f} frames/s")
    print(f"BENCH encoder_node_overhead {overhead:.1f} %")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--publisher":
        publisher(float(sys.argv[2]), int(sys.argv[3]))
    else:
        main()
