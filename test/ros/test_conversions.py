"""Image and latent message conversions: every accepted encoding and each bad input."""
import numpy as np
import pytest
import torch
from sensor_msgs.msg import Image

from dexwm_ros.nodes.conversions import (
    image_to_rgb,
    latent_to_msg,
    msg_to_latent,
    rgb_to_image,
    seconds_to_duration,
)

RGB = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)


def make(encoding, pixels, pad=0):
    height, width = pixels.shape[:2]
    rows = pixels.reshape(height, -1)
    rows = np.hstack([rows, np.zeros((height, pad), np.uint8)])
    return Image(height=height, width=width, encoding=encoding, step=rows.shape[1],
                 data=rows.tobytes())


@pytest.mark.parametrize("pad", [0, 3])
def test_encodings(pad):
    np.testing.assert_array_equal(image_to_rgb(make("rgb8", RGB, pad)), RGB)
    np.testing.assert_array_equal(image_to_rgb(make("bgr8", RGB[:, :, ::-1], pad)), RGB)
    rgba = np.dstack([RGB, np.full((2, 3), 7, np.uint8)])
    np.testing.assert_array_equal(image_to_rgb(make("rgba8", rgba, pad)), RGB)
    bgra = np.dstack([RGB[:, :, ::-1], np.full((2, 3), 7, np.uint8)])
    np.testing.assert_array_equal(image_to_rgb(make("bgra8", bgra, pad)), RGB)
    mono = RGB[:, :, 0]
    np.testing.assert_array_equal(image_to_rgb(make("mono8", mono, pad)),
                                  np.repeat(mono[:, :, None], 3, axis=2))


def test_round_trip():
    np.testing.assert_array_equal(image_to_rgb(rgb_to_image(RGB)), RGB)


@pytest.mark.parametrize("image, message", [
    (Image(height=2, width=2, encoding="yuv422", step=4, data=bytes(8)), "yuv422"),
    (Image(encoding="rgb8"), "empty"),
    (Image(height=2, width=2, encoding="rgb8", step=5, data=bytes(10)), "step"),
    (Image(height=2, width=2, encoding="rgb8", step=6, data=bytes(11)), "bytes"),
])
def test_bad_images(image, message):
    with pytest.raises(ValueError, match=message):
        image_to_rgb(image)


def test_latent_round_trip_and_errors():
    latents = torch.randn(6, 5)
    msg = latent_to_msg(latents, "tiny", (2, 3))
    assert (msg.grid_height, msg.grid_width, msg.dim) == (2, 3, 5)
    torch.testing.assert_close(msg_to_latent(msg), latents)
    msg.data = msg.data[:-1]
    with pytest.raises(ValueError, match="expected"):
        msg_to_latent(msg)
    nan = latent_to_msg(torch.full((6, 5), float("nan")), "tiny", (2, 3))
    with pytest.raises(ValueError, match="NaN"):
        msg_to_latent(nan)
    with pytest.raises(ValueError, match="grid"):
        latent_to_msg(latents, "tiny", (4, 4))


def test_duration():
    duration = seconds_to_duration(2.25)
    assert (duration.sec, duration.nanosec) == (2, 250_000_000)


def test_ordered_positions():
    from dexwm_ros.nodes.conversions import ordered_positions

    np.testing.assert_array_equal(ordered_positions(["b", "a", "c"], [2.0, 1.0, 3.0], ["a", "b"]),
                                  [1.0, 2.0])
    with pytest.raises(ValueError, match="missing"):
        ordered_positions(["a"], [1.0], ["a", "b"])
    with pytest.raises(ValueError, match="2 joint names but 1"):
        ordered_positions(["a", "b"], [1.0], ["a"])
    with pytest.raises(ValueError, match="NaN"):
        ordered_positions(["a"], [float("nan")], ["a"])
