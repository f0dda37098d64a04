"""Video decoding (PyAV) of only the frames a clip needs, resizing to the model's 224 x 392 view.

DexWM resizes every image so it covers 224 x 392 and centre-crops (paper appendix A.1); the
same transform is applied to the camera intrinsics so projected keypoints land on the crop.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

#: Model image size (H, W): 16 x 28 patches of 14 px (paper appendix A.1).
IMAGE_SIZE = (224, 392)


@dataclass(frozen=True)
class VideoInfo:
    """Frame count, rate and native size (H, W) of a video's first video stream."""

    num_frames: int
    fps: float
    height: int
    width: int


def video_info(path: str | Path) -> VideoInfo:
    """Read the header of ``path`` (counts frames by demuxing when the header has no count)."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path}: no video stream")
        stream = container.streams.video[0]
        count = stream.frames or sum(1 for p in container.demux(stream) if p.size)
        return VideoInfo(int(count), float(stream.average_rate), stream.height, stream.width)


@dataclass(frozen=True)
class CropGeometry:
    """Resize-to-cover then centre-crop from a ``(H, W)`` source to ``out`` size."""

    source: tuple[int, int]
    resized: tuple[int, int]
    offset: tuple[int, int]  # (row, column) of the crop's top-left corner in the resized image
    out: tuple[int, int] = IMAGE_SIZE

    @classmethod
    def for_source(cls, height: int, width: int, out: tuple[int, int] = IMAGE_SIZE):
        scale = max(out[0] / height, out[1] / width)
        resized = (max(out[0], round(height * scale)), max(out[1], round(width * scale)))
        offset = ((resized[0] - out[0]) // 2, (resized[1] - out[1]) // 2)
        return cls((height, width), resized, offset, out)

    def crop(self, resized_image: np.ndarray) -> np.ndarray:
        r, c = self.offset
        return resized_image[..., r : r + self.out[0], c : c + self.out[1], :]

    def intrinsics(self, intrinsics: np.ndarray) -> np.ndarray:
        """Camera matrix of the cropped image (pixel centres at integer coordinates)."""
        sy = self.resized[0] / self.source[0]
        sx = self.resized[1] / self.source[1]
        k = np.array(intrinsics, dtype=np.float64).copy()
        if k.shape != (3, 3):
            raise ValueError(f"intrinsics must be 3x3, got {k.shape}")
        k[0, 0] *= sx
        k[0, 1] *= sx
        k[1, 1] *= sy
        k[0, 2] = sx * k[0, 2] + 0.5 * sx - 0.5 - self.offset[1]
        k[1, 2] = sy * k[1, 2] + 0.5 * sy - 0.5 - self.offset[0]
        return k


def resize_center_crop(images: np.ndarray, out: tuple[int, int] = IMAGE_SIZE) -> np.ndarray:
    """Resize uint8 ``(N, H, W, 3)`` images to cover ``out`` and centre-crop (antialiased)."""
    import torch
    import torch.nn.functional as F

    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 (N, H, W, 3) images, got {images.dtype} {images.shape}")
    geometry = CropGeometry.for_source(images.shape[1], images.shape[2], out)
    if geometry.resized == images.shape[1:3]:
        return np.ascontiguousarray(geometry.crop(images))
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=geometry.resized, mode="bilinear", antialias=True,
                      align_corners=False)
    x = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return np.ascontiguousarray(geometry.crop(x))


def read_frames(
    path: str | Path,
    indices: Sequence[int],
    out: tuple[int, int] | None = IMAGE_SIZE,
    seek_gap: int | None = None,
) -> np.ndarray:
    """Decode the frames ``indices`` (0-based) of ``path`` as uint8 RGB ``(N, H, W, 3)``.

    Only the needed stretch of the stream is decoded: the reader seeks to the keyframe before
    a wanted frame whenever the next wanted frame is more than ``seek_gap`` frames (default:
    one second) ahead. Frames are resized and centre-cropped to ``out`` inside the decoder's
    scaler (None keeps the native size). Indices may repeat and come in any order.
    """
    indices = [int(i) for i in indices]
    if not indices:
        raise ValueError("read_frames: no frame indices given")
    if min(indices) < 0:
        raise ValueError(f"read_frames: negative frame index in {indices}")
    wanted = sorted(set(indices))
    decoded: dict[int, np.ndarray] = {}
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate
        time_base = stream.time_base
        start = stream.start_time or 0
        gap = seek_gap if seek_gap is not None else max(1, round(float(rate)))
        geometry = CropGeometry.for_source(stream.height, stream.width, out) if out else None

        def index_of(frame) -> int:
            return round(float((frame.pts - start) * time_base * rate))

        decoder = None
        last = -1
        for target in wanted:
            if decoder is None or target - last > gap:
                container.seek(
                    start + int(target / (rate * time_base)), stream=stream, backward=True
                )
                decoder = container.decode(stream)
                last = -1
            for frame in decoder:
                last = index_of(frame)
                if last >= target:
                    break
            else:
                raise ValueError(f"{path}: frame {target} is past the end ({last + 1} frames)")
            if last != target:
                raise ValueError(f"{path}: frame {target} not found (decoder jumped to {last})")
            if geometry is None:
                decoded[target] = frame.to_ndarray(format="rgb24")
            else:
                image = frame.to_ndarray(
                    width=geometry.resized[1],
                    height=geometry.resized[0],
                    format="rgb24",
                    interpolation="AREA",
                )
                decoded[target] = geometry.crop(image)
    return np.stack([decoded[i] for i in indices])


def write_video(path: str | Path, frames, fps: float, keyframe_interval: int = 12,
                crf: int = 12):
    """Encode uint8 RGB frames, an ``(N, H, W, 3)`` array or an iterable of ``(H, W, 3)``
    arrays (even H and W), to an H.264 mp4 (``crf``: x264 quality, 12 near-lossless, 23 its
    default)."""
    from fractions import Fraction

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.pix_fmt = "yuv420p"
        stream.options = {"g": str(keyframe_interval), "crf": str(crf), "bf": "0"}
        count = 0
        for image in frames:
            if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
                raise ValueError(f"expected uint8 (H, W, 3) frames, got {image.dtype} "
                                 f"{image.shape} at frame {count}")
            if count == 0:
                stream.height, stream.width = image.shape[:2]
            elif image.shape[:2] != (stream.height, stream.width):
                raise ValueError(f"frame {count} is {image.shape[:2]}, the first was "
                                 f"{(stream.height, stream.width)}")
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
            count += 1
        if count == 0:
            raise ValueError(f"{path}: no frames to write")
        for packet in stream.encode():
            container.mux(packet)
