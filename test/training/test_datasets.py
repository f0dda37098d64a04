"""Datasets on their fixtures: video decoding, frame sampling, actions, keypoint targets."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from training_fixtures import frame_level

from dexwm_ros.core.keypoint_head import gaussian_heatmaps
from training.augment import AugmentConfig, AugmentParams, apply_augmentation
from training.datasets import ClipDataset, ClipDatasetConfig, DatasetSpec
from training.sampling import ClipSampling, sample_clip, segment_bounds
from training.video import read_frames

TIPS = [0, 4, 8, 12, 16, 20]


def in_first_camera(points_world, poses):
    """Points (S, K, 3) expressed in the camera of clip frame 0."""
    rot, trans = poses[0, :3, :3], poses[0, :3, 3]
    return (points_world - trans) @ rot


def project(points_world, poses, k):
    cam = np.einsum("sji,skj->ski", poses[:, :3, :3], points_world - poses[:, None, :3, 3])
    return np.stack([k[0, 0] * cam[..., 0] / cam[..., 2] + k[0, 2],
                     k[1, 1] * cam[..., 1] / cam[..., 2] + k[1, 2]], axis=-1)


def test_read_frames_returns_requested_frames_in_order(egodex_root):
    _, truth = egodex_root
    indices = [17, 0, 39, 5, 5, 38]
    frames = read_frames(truth["mp4"], indices)
    assert frames.shape == (6, 224, 392, 3) and frames.dtype == np.uint8
    levels = frames.reshape(6, -1).mean(axis=1)
    np.testing.assert_allclose(levels, [frame_level(i) for i in indices], atol=4)
    native = read_frames(truth["mp4"], [3], out=None)
    assert native.shape == (1, 144, 256, 3)
    with pytest.raises(ValueError, match="past the end"):
        read_frames(truth["mp4"], [40])


def test_clip_sampling_stays_in_window_and_segment():
    sampling = ClipSampling()
    rng = np.random.default_rng(0)
    for segment in range(sampling.segments):
        start, end = segment_bounds(200, segment, sampling)
        for _ in range(20):
            grid = sample_clip(rng, 200, segment, 10.0, sampling)
            assert len(grid) == 9 and np.all(np.diff(grid) > 0)
            assert start <= grid[-1] <= end
            assert grid[0] >= grid[-1] - 40  # 4 s at 10 Hz
    assert segment_bounds(200, 0, sampling)[0] == 8
    assert segment_bounds(200, 9, sampling)[1] == 199


def test_egodex_clip(egodex_root):
    root, truth = egodex_root
    dataset = ClipDataset([DatasetSpec("egodex", str(root), sample_hz=10)])
    assert len(dataset) == 10
    for index in range(len(dataset)):
        sample = dataset[(1, index)]
        source = sample["frame_indices"].numpy()
        assert source.shape == (9,) and np.all(source % 3 == 0) and np.all(np.diff(source) > 0)
        assert source[-1] - source[0] <= 4 * 30
    sample = dataset[(0, 7)]
    source = sample["frame_indices"].numpy()
    assert sample["frames"].shape == (9, 224, 392, 3)
    levels = sample["frames"].float().mean(dim=(1, 2, 3)).numpy()
    np.testing.assert_allclose(levels, [frame_level(i) for i in source], atol=4)

    poses = truth["poses"][source]
    actions = sample["actions"].numpy().reshape(8, 44, 3)
    for side, rows in (("left_world", slice(0, 21)), ("right_world", slice(21, 42))):
        local = in_first_camera(truth[side][source], poses)
        np.testing.assert_allclose(actions[:, rows], np.diff(local, axis=0), atol=1e-5)

    # 256x144 -> 398x224 (scale 398/256 across, 224/144 down), centre crop 3 columns
    k = truth["intrinsics"]
    sx, sy = 398 / 256, 224 / 144
    k_crop = np.array([[k[0, 0] * sx, 0, sx * k[0, 2] + 0.5 * sx - 0.5 - 3],
                       [0, k[1, 1] * sy, sy * k[1, 2] + 0.5 * sy - 0.5], [0, 0, 1]])
    expected = np.concatenate([project(truth["left_world"][source][:, TIPS], poses, k_crop),
                               project(truth["right_world"][source][:, TIPS], poses, k_crop)],
                              axis=1)
    np.testing.assert_allclose(sample["keypoint_pixels"].numpy(), expected, atol=1e-2)
    visible = sample["keypoint_visible"].numpy()
    thumb_tip_ok = source % 2 == 1  # the fixture's left thumb tip is unreliable on even frames
    np.testing.assert_array_equal(visible[:, 1], thumb_tip_ok & visible[:, 0])
    assert visible[:, 6].all()

    heatmaps = gaussian_heatmaps(sample["keypoint_pixels"][-1:], sample["keypoint_visible"][-1:])
    assert heatmaps.shape == (1, 12, 224, 392)
    for k_index in np.flatnonzero(visible[-1]):
        peak = divmod(int(heatmaps[0, k_index].argmax()), 392)
        u, v = expected[-1, k_index]
        assert abs(peak[1] - u) <= 0.5 + 1e-6 and abs(peak[0] - v) <= 0.5 + 1e-6
    assert float(heatmaps[0, 6].max()) > 0.8


def test_droid_clip(droid_root):
    root, truth = droid_root
    spec = DatasetSpec("droid", str(root), intrinsics=truth["intrinsics"])
    dataset = ClipDataset([spec])
    sample = dataset[(0, 9)]
    source = sample["frame_indices"].numpy()
    assert source[-1] >= 20 and source[-1] - source[0] <= 60  # last segment, 4 s at 15 Hz
    levels = sample["frames"].float().mean(dim=(1, 2, 3)).numpy()
    np.testing.assert_allclose(levels, [frame_level(i) for i in source], atol=4)

    # dummy hand (paper Figure 11): rays at 0, 72, ..., 288 degrees in the base's horizontal
    # plane through the end-effector, open radii below a closed fraction of 0.5, else closed
    cart = truth["cartesian"][source]
    closed = truth["gripper"][source]
    assert (closed > 0).any() and (closed < 0.5).any() and (closed >= 0.5).any()
    gripper = np.zeros((9, 21, 3))
    gripper[:, 0] = cart[:, :3]
    for i in range(9):
        radii = [0.03, 0.04, 0.035, 0.03] if closed[i] >= 0.5 else [0.03, 0.04, 0.05, 0.06]
        for finger in range(5):
            angle = np.radians(72 * finger)
            for joint, radius in enumerate(radii):
                gripper[i, 1 + 4 * finger + joint] = cart[i, :3] + radius * np.array(
                    [np.cos(angle), np.sin(angle), 0.0])
    camera = np.eye(4)
    camera[:3, :3] = Rotation.from_euler("xyz", truth["extrinsics"][3:]).as_matrix()
    camera[:3, 3] = truth["extrinsics"][:3]
    poses = np.repeat(camera[None], 9, axis=0)
    actions = sample["actions"].numpy().reshape(8, 44, 3)
    np.testing.assert_allclose(actions[:, 21:42], np.diff(in_first_camera(gripper, poses), axis=0),
                               atol=1e-5)
    assert not actions[:, :21].any()
    # the dummy points are no hand in the image: DexWM supervises no DROID keypoints
    assert not sample["keypoint_visible"].any()


def test_sim_clip(sim_root):
    root, truths = sim_root
    dataset = ClipDataset([DatasetSpec("sim", str(root))])
    assert len(dataset) == 20
    sample = dataset[(0, 13)]  # episode 1, segment 3
    truth = truths[1]
    source = sample["frame_indices"].numpy()
    np.testing.assert_array_equal(sample["frames"].numpy(), truth["images"][source])
    poses = truth["poses"][source]
    camera = truth["right_camera"][source]
    world = np.einsum("sij,skj->ski", poses[:, :3, :3], camera) + poses[:, None, :3, 3]
    actions = sample["actions"].numpy().reshape(8, 44, 3)
    np.testing.assert_allclose(actions[:, 21:42], np.diff(in_first_camera(world, poses), axis=0),
                               atol=1e-5)
    k = truth["intrinsics"]  # images are already 224x392: the camera matrix is unchanged
    expected = np.stack([k[0, 0] * camera[..., 0] / camera[..., 2] + k[0, 2],
                         k[1, 1] * camera[..., 1] / camera[..., 2] + k[1, 2]], axis=-1)[:, TIPS]
    np.testing.assert_allclose(sample["keypoint_pixels"].numpy()[:, 6:], expected, atol=1e-2)


def test_clips_are_deterministic_and_augmented_consistently(egodex_root, sim_root):
    config = ClipDatasetConfig(augment=AugmentConfig(grayscale_p=0.0, blur_p=0.0), seed=3)
    sim = ClipDataset([DatasetSpec("sim", str(sim_root[0]))], config)
    first, again = sim[(2, 5)], sim[(2, 5)]
    torch.testing.assert_close(first["frames"], again["frames"])
    assert not torch.equal(first["frame_indices"], sim[(3, 5)]["frame_indices"])

    # EgoDex fixture frames are uniform grey: brightness scales every frame of a clip by the
    # same factor (contrast, saturation and hue leave grey unchanged)
    specs = [DatasetSpec("egodex", str(egodex_root[0]), sample_hz=10)]
    egodex = ClipDataset(specs, config)
    plain = ClipDataset(specs, ClipDatasetConfig(seed=3))
    factors = []
    for epoch in range(3):
        sample, original = egodex[(epoch, 4)], plain[(epoch, 4)]
        assert torch.equal(sample["frame_indices"], original["frame_indices"])
        ratio = sample["frames"].float().mean(dim=(1, 2, 3)) / original["frames"].float().mean(
            dim=(1, 2, 3))
        assert ratio.max() - ratio.min() < 0.03
        factors.append(ratio.mean())
    assert np.ptp(factors) > 0.02


def test_augmentation_parameters_change_images():
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (2, 16, 16, 3),
                                                                  dtype=np.uint8))
    params = AugmentParams(brightness=1.2, contrast=0.8, saturation=1.1, hue=0.02,
                           grayscale=True, blur_sigma=1.0)
    out = apply_augmentation(images, params)
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert torch.equal(out[..., 0], out[..., 1])  # grayscale
    assert out.float().std() < images.float().std()  # blur and lower contrast
