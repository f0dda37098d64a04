"""The training data path: DataLoader workers prepare clips, the training device encodes them.

For data too large to cache (the paper's 829 h of EgoDex, see the README), clips are encoded
on the fly. Each DataLoader worker process decodes the clip's frames from video (only the
stretch the clip needs), applies the clip-consistent augmentation and projects the hand
keypoints (``ClipDataset``); ``prefetch_factor`` batches per worker are prepared ahead while
the device trains. The batch crosses to the device as uint8 frames (pinned memory on CUDA);
the frozen encoder (bf16 on a GPU: ``encoder.dtype``) normalises and encodes them there and
the Gaussian heatmap targets are built there too (``Objective``). With a latent cache the
same loader reads latents instead of decoding video.
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader


def _worker_init(_worker_id: int) -> None:
    # Workers decode with PyAV's own threads; torch threads per worker would oversubscribe.
    torch.set_num_threads(1)


def clip_loader(dataset, batch_sampler, num_workers: int, prefetch_factor: int,
                device: torch.device) -> DataLoader:
    """Loader of ``dataset`` batches in ``batch_sampler`` order, ``num_workers`` processes
    (0: in the training process), each ``prefetch_factor`` batches ahead."""
    if num_workers < 0:
        raise ValueError(f"data.num_workers must be >= 0, got {num_workers}")
    if prefetch_factor < 1:
        raise ValueError(f"data.prefetch_factor must be >= 1, got {prefetch_factor}")
    workers = num_workers > 0
    return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=num_workers,
                      prefetch_factor=prefetch_factor if workers else None,
                      persistent_workers=workers, worker_init_fn=_worker_init if workers else None,
                      pin_memory=device.type == "cuda")


def encode_clip_frames(encoder, frames: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Float32 latents ``(B, S, P, D)`` of uint8 clip frames ``(B, S, H, W, 3)``, encoded on
    the encoder's device ``batch_size`` frames per forward pass, without gradients."""
    if frames.dtype != torch.uint8 or frames.dim() != 5 or frames.shape[-1] != 3:
        raise ValueError(f"clip frames must be uint8 (B, S, H, W, 3), got {frames.dtype} "
                         f"{tuple(frames.shape)}")
    flat = frames.flatten(0, 1).to(encoder.device, non_blocking=True)
    latents = encoder.encode(flat, batch_size=batch_size)
    # clone: encode runs in inference mode, whose tensors autograd cannot save
    return latents.float().clone().unflatten(0, frames.shape[:2])
