"""Can DataLoader workers decoding video keep an encoder busy? (the on-the-fly data path)

Writes EgoDex-format episodes with 30 Hz H.264 video (moving texture plus noise, x264 crf 23,
a keyframe every second), once at EgoDex's 1080p and once transcoded-size 398 x 224 (what the
model sees after the resize), and times:

* decode: clips of the pre-training config (EgoDex at 10 Hz, 8 context frames + target in a
  4 s window, augmentation on) prepared by ``ClipDataset`` in one process with one torch
  thread, as one DataLoader worker does it: decoding, resizing, augmentation, keypoint
  projection and actions; and the same through a DataLoader with ``WORKERS`` workers;
* encode: the ``tiny`` encoder and a DINOv2 ViT-L/14 (random weights, same compute as the
  paper's encoder) on this machine's CPU, bf16 on a GPU when there is one.

The ratio encoder frames/s over decode frames/s per worker is the number of workers one
encoder needs (an upper bound for training: the predictor's step takes device time too).
A clip's 9 frames span up to 4 s, so a worker decodes ~100 video frames for the 9 it keeps.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test" / "training"))

from training_fixtures import write_egodex  # noqa: E402

from dexwm_ros.core.encoder import ImageEncoder, build_encoder  # noqa: E402
from training.augment import AugmentConfig  # noqa: E402
from training.datasets import ClipDataset, ClipDatasetConfig, DatasetSpec  # noqa: E402
from training.onthefly import clip_loader  # noqa: E402
from training.sampling import ClipSampling  # noqa: E402
from training.trainer import StepBatches  # noqa: E402
from training.video import write_video  # noqa: E402

SOURCES = {"1080p": (1080, 1920), "224p": (224, 398)}
FPS, SECONDS = 30.0, 6
CLIPS = 24
WORKERS = 2
BATCH = 4


def textured_frames(count: int, height: int, width: int, seed: int = 0):
    """Moving blurred-noise texture with fresh sensor noise per frame (H.264 cannot predict
    it away, so the decoder does real work)."""
    rng = np.random.default_rng(seed)
    texture = torch.from_numpy(rng.integers(0, 255, (height + 64, width + 4 * count, 3),
                                            dtype=np.uint8))
    texture = F.avg_pool2d(texture.permute(2, 0, 1)[None].float(), 5, 1, 2)[0].permute(1, 2, 0)
    texture = texture.numpy()
    noise = [rng.normal(0, 3, (height, width, 1)).astype(np.float32) for _ in range(4)]
    for i in range(count):
        window = texture[i % 64 : i % 64 + height, 4 * i : 4 * i + width]
        yield (window + noise[i % 4]).clip(0, 255).astype(np.uint8)


def write_episode(root: Path, height: int, width: int) -> Path:
    num = int(FPS * SECONDS)
    k = [[width / 2, 0, width / 2], [0, width / 2, height / 2], [0, 0, 1]]
    truth = write_egodex(root, num=num, height=72, width=128, fps=FPS, intrinsics=k)
    write_video(truth["mp4"], textured_frames(num, height, width), FPS,
                keyframe_interval=int(FPS), crf=23)
    return truth["mp4"]


def decode_rate(dataset: ClipDataset) -> float:
    """Clip frames per second of ``__getitem__`` in this process (one torch thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        dataset[(0, 0)]  # warm-up: opens files, first seek
        start = time.perf_counter()
        frames = sum(len(dataset[(1, i % len(dataset))]["frames"]) for i in range(CLIPS))
        return frames / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)


def loader_rate(dataset: ClipDataset) -> float:
    """Clip frames per second delivered by a DataLoader with ``WORKERS`` worker processes."""
    steps = CLIPS * WORKERS // BATCH
    sampler = StepBatches(len(dataset), BATCH, 0, 1, 1, 0, steps + WORKERS)
    loader = iter(clip_loader(dataset, sampler, WORKERS, 2, torch.device("cpu")))
    for _ in range(WORKERS):  # workers started and warmed up
        next(loader)
    start = time.perf_counter()
    frames = sum(next(loader)["frames"].shape[:2].numel() for _ in range(steps))
    return frames / (time.perf_counter() - start)


def vit_large(dtype: torch.dtype, device: str) -> ImageEncoder:
    """DINOv2 ViT-L/14 shape (24 layers, width 1024, 16 heads) with random weights."""
    from transformers import Dinov2Config, Dinov2Model

    config = Dinov2Config(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                          patch_size=14, image_size=518)
    model = Dinov2Model(config).to(dtype)
    return ImageEncoder(model, "dinov2", "dinov2_vitl14_random", 14, 1024, dtype,
                        num_prefix_tokens=1).to(device)


def encode_rate(encoder: ImageEncoder, batch: int, repeats: int) -> float:
    images = torch.randint(0, 256, (batch, 224, 392, 3), dtype=torch.uint8)
    encoder.encode(images, batch_size=batch)  # warm-up
    if encoder.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        encoder.encode(images, batch_size=batch)
    if encoder.device.type == "cuda":
        torch.cuda.synchronize()
    return batch * repeats / (time.perf_counter() - start)


def main() -> None:
    per_worker = {}
    for source, (height, width) in SOURCES.items():
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            video = write_episode(Path(tmp), height, width)
            print(f"{source}: {SECONDS} s of {width}x{height} video at {FPS:g} Hz "
                  f"({video.stat().st_size / (FPS * SECONDS) / 1e3:.1f} kB/frame) written in "
                  f"{time.perf_counter() - start:.0f} s")
            dataset = ClipDataset(
                [DatasetSpec(kind="egodex", root=tmp, sample_hz=10)],
                ClipDatasetConfig(sampling=ClipSampling(), augment=AugmentConfig()))
            per_worker[source] = decode_rate(dataset)
            pooled = loader_rate(dataset)
        print(f"BENCH decode_{source}_frames_per_s_per_worker {per_worker[source]:.1f} frames/s")
        print(f"BENCH decode_{source}_frames_per_s_{WORKERS}_workers {pooled:.1f} frames/s")
    encoders = [("tiny_cpu", build_encoder("tiny"), 8, 10),
                ("vitl14_cpu", vit_large(torch.float32, "cpu"), 2, 1)]
    if torch.cuda.is_available():
        encoders.append(("vitl14_gpu_bf16", vit_large(torch.bfloat16, "cuda"), 64, 10))
    print(f"cpu threads={torch.get_num_threads()} clips={CLIPS} (9 frames each)")
    for name, encoder, batch, repeats in encoders:
        rate = encode_rate(encoder, batch, repeats)
        print(f"BENCH encoder_{name} {rate:.2f} frames/s")
        for source, decode in per_worker.items():
            print(f"BENCH workers_per_encoder_{name}_{source} {rate / decode:.2f} workers")


if __name__ == "__main__":
    main()
