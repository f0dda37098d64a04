"""On-the-fly data path: worker processes deliver the same batches as the training process,
and EgoDex transcoded to the model's resolution reads as the original does."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from dexwm_ros.core.encoder import build_encoder
from training.datasets import ClipDataset, DatasetSpec
from training.episodes import EgoDexEpisode
from training.onthefly import clip_loader, encode_clip_frames
from training.trainer import StepBatches
from training.transcode import main as transcode_main
from training.video import video_info


def test_worker_batches_equal_in_process_batches(egodex_root):
    dataset = ClipDataset([DatasetSpec(kind="egodex", root=str(egodex_root[0]), sample_hz=10)])
    sampler = StepBatches(len(dataset), 2, 0, 1, 0, 0, 3)
    loader = clip_loader(dataset, sampler, num_workers=2, prefetch_factor=2,
                         device=torch.device("cpu"))
    for step, batch in enumerate(loader):
        expected = default_collate([dataset[i] for i in sampler.batch(step)])
        assert batch.keys() == expected.keys()
        for key in expected:
            torch.testing.assert_close(batch[key], expected[key], rtol=0, atol=0)
    assert step == 2
    with pytest.raises(ValueError, match="prefetch_factor"):
        clip_loader(dataset, sampler, 1, 0, torch.device("cpu"))


def test_encode_clip_frames_checks_its_input_and_keeps_clip_shape():
    encoder = build_encoder("tiny")
    frames = torch.randint(0, 256, (2, 3, 224, 392, 3), dtype=torch.uint8)
    latents = encode_clip_frames(encoder, frames, batch_size=4)
    assert latents.shape == (2, 3, 448, encoder.dim) and latents.dtype == torch.float32
    torch.testing.assert_close(latents[1, 2], encoder.encode(frames[1, 2:3])[0])
    with pytest.raises(ValueError, match="uint8"):
        encode_clip_frames(encoder, frames.float(), batch_size=4)


def test_transcoded_egodex_reads_like_the_original(egodex_root, tmp_path):
    root, truth = egodex_root
    assert transcode_main([str(root), str(tmp_path), "--crf", "12"]) == 0
    name = truth["hdf5"].relative_to(root)
    small = tmp_path / name
    info = video_info(small.with_suffix(".mp4"))
    assert (info.height, info.width) == (224, 398)
    original, copy = EgoDexEpisode(truth["hdf5"]), EgoDexEpisode(small)
    assert copy.num_frames == original.num_frames and copy.fps == original.fps
    np.testing.assert_allclose(copy.intrinsics, original.intrinsics, rtol=0, atol=1e-9)
    frames = [0, 7, 20, 39]
    np.testing.assert_array_equal(copy.keypoints(frames), original.keypoints(frames))
    difference = np.abs(copy.frames(frames).astype(int) - original.frames(frames).astype(int))
    assert difference.mean() < 1.5
    stamp = small.stat().st_mtime_ns
    assert transcode_main([str(root), str(tmp_path)]) == 0  # finished episodes are skipped
    assert small.stat().st_mtime_ns == stamp
