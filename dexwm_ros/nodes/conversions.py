"""Message <-> array conversions with validation (errors name the problem)."""
from __future__ import annotations

import numpy as np
import torch
from builtin_interfaces.msg import Duration, Time
from sensor_msgs.msg import Image

from dexwm_ros.msg import Latent

#: Channels of each accepted image encoding.
IMAGE_ENCODINGS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}


def image_to_rgb(msg: Image) -> np.ndarray:
    """Validate a sensor_msgs/Image and return it as uint8 RGB ``(H, W, 3)``."""
    channels = IMAGE_ENCODINGS.get(msg.encoding)
    if channels is None:
        raise ValueError(f"unsupported image encoding '{msg.encoding}' "
                         f"(accepted: {', '.join(IMAGE_ENCODINGS)})")
    if msg.height == 0 or msg.width == 0:
        raise ValueError(f"empty image ({msg.width}x{msg.height})")
    row = msg.width * channels
    if msg.step < row:
        raise ValueError(f"image step {msg.step} is smaller than width*channels = {row}")
    if len(msg.data) != msg.step * msg.height:
        raise ValueError(f"image data has {len(msg.data)} bytes, expected step*height = "
                         f"{msg.step * msg.height}")
    data = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(msg.height, msg.step)
    pixels = data[:, :row].reshape(msg.height, msg.width, channels)
    if msg.encoding == "mono8":
        return np.repeat(pixels, 3, axis=2)
    if msg.encoding.startswith("bgr"):
        return pixels[:, :, 2::-1].copy()
    return pixels[:, :, :3].copy()  # a writable array that owns its memory


def rgb_to_image(rgb: np.ndarray, stamp: Time | None = None, frame_id: str = "") -> Image:
    """uint8 RGB ``(H, W, 3)`` -> sensor_msgs/Image (rgb8)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8",
                step=rgb.shape[1] * 3, data=np.ascontiguousarray(rgb).tobytes())
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    return msg


def latent_to_msg(latents: torch.Tensor, encoder: str, grid: tuple[int, int]) -> Latent:
    """``(P, D)`` patch latents -> dexwm_ros/Latent (header left to the caller)."""
    if latents.ndim != 2 or latents.shape[0] != grid[0] * grid[1]:
        raise ValueError(f"latents {tuple(latents.shape)} do not match grid {grid}")
    msg = Latent(encoder=encoder, grid_height=grid[0], grid_width=grid[1],
                 dim=latents.shape[1])
    msg.data = latents.detach().to("cpu", torch.float32).contiguous().numpy().ravel()
    return msg


def msg_to_latent(msg: Latent) -> torch.Tensor:
    """dexwm_ros/Latent -> ``(P, D)`` float32 tensor, checking size and finiteness."""
    tokens = msg.grid_height * msg.grid_width
    if tokens == 0 or msg.dim == 0:
        raise ValueError(f"latent has an empty shape {msg.grid_height}x{msg.grid_width}x{msg.dim}")
    data = np.asarray(msg.data, dtype=np.float32)
    if data.size != tokens * msg.dim:
        raise ValueError(f"latent data has {data.size} floats, expected "
                         f"{msg.grid_height}*{msg.grid_width}*{msg.dim} = {tokens * msg.dim}")
    if not np.isfinite(data).all():
        raise ValueError("latent contains NaN or infinite values")
    return torch.from_numpy(data.reshape(tokens, msg.dim).copy())


def ordered_positions(names, positions, order) -> np.ndarray:
    """``positions`` given for joint ``names``, rearranged into ``order``.

    Raises ``ValueError`` if a joint of ``order`` is missing, the lengths differ or a value is
    not finite."""
    if len(positions) != len(names):
        raise ValueError(f"{len(names)} joint names but {len(positions)} positions")
    index = {name: i for i, name in enumerate(names)}
    missing = [name for name in order if name not in index]
    if missing:
        raise ValueError(f"{len(missing)} of {len(order)} joints missing, e.g. {missing[:3]}")
    values = np.array([positions[index[name]] for name in order], dtype=float)
    if not np.isfinite(values).all():
        raise ValueError("joint positions contain NaN or infinite values")
    return values


def time_to_seconds(stamp: Time | Duration) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def seconds_to_duration(seconds: float) -> Duration:
    nanoseconds = int(round(seconds * 1e9))
    return Duration(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)
