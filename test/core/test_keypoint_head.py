import math

import pytest
import torch

from dexwm_ros.core.keypoint_head import KeypointHead, gaussian_heatmaps, heatmap_loss, pck


def small_head(seed=0) -> KeypointHead:
    torch.manual_seed(seed)
    return KeypointHead(latent_dim=16, dim=32, depth=1, heads=4).eval()


def test_heatmap_shape_and_patch_layout():
    head = small_head()
    latents = torch.randn(2, 448, 16)
    maps = head(latents)
    assert maps.shape == (2, 12, 224, 392)
    logits = head.patch_logits(latents)  # (B, 16, 28, 12, 14, 14)
    # patch (row 3, col 5), map 7, pixel (2, 9) inside the patch -> image row 44, column 79
    assert maps[1, 7, 3 * 14 + 2, 5 * 14 + 9] == logits[1, 3, 5, 7, 2, 9]


def test_keypoint_pixels_is_chunked_argmax_of_heatmaps():
    head = small_head()
    latents = torch.randn(5, 448, 16)
    maps = head(latents)
    flat = maps.flatten(2).argmax(-1)
    expected = torch.stack([flat % 392, flat // 392], dim=-1).float()
    for chunk in (1, 2, 32):
        torch.testing.assert_close(head.keypoint_pixels(latents, chunk_size=chunk), expected)


def test_gaussian_heatmaps():
    pixels = torch.tensor([[[10.0, 20.0], [100.0, 50.0]]])
    visible = torch.tensor([[True, False]])
    maps = gaussian_heatmaps(pixels, visible)
    assert maps.shape == (1, 2, 224, 392)
    assert maps[0, 0, 20, 10] == 1.0 and maps[0, 0].max() == 1.0  # row v=20, column u=10
    assert maps[0, 0, 20, 12].item() == pytest.approx(math.exp(-0.5))  # 2 px = 1 sigma
    assert maps[0, 0, 22, 12].item() == pytest.approx(math.exp(-1.0))
    assert torch.count_nonzero(maps[0, 1]) == 0


def test_heatmap_loss_counts_only_visible_maps():
    target = gaussian_heatmaps(torch.rand(2, 12, 2) * 200, torch.ones(2, 12, dtype=torch.bool))
    visible = torch.ones(2, 12, dtype=torch.bool)
    visible[0, 3] = False
    assert heatmap_loss(target, target, visible) == 0
    pred = target.clone()
    pred[0, 3] += 5.0  # invisible map: ignored
    assert heatmap_loss(pred, target, visible) == 0
    pred[1, 0] += 0.5  # one visible map off by 0.5 everywhere
    assert heatmap_loss(pred, target, visible).item() == pytest.approx(0.25 / 23)
    assert heatmap_loss(pred, target, torch.zeros(2, 12, dtype=torch.bool)) == 0


def test_pck_counts_visible_keypoints_only():
    gt = torch.zeros(1, 4, 2)
    pred = torch.tensor([[[3.0, 4.0], [20.0, 0.0], [20.1, 0.0], [100.0, 0.0]]])
    visible = torch.tensor([[True, True, True, False]])
    assert pck(pred, gt, visible, 20) == pytest.approx(2 / 3)  # 5 px and exactly 20 px hit
    assert pck(pred, gt, visible, 10) == pytest.approx(1 / 3)
    assert pck(pred, gt, torch.ones(1, 4, dtype=torch.bool), 20) == pytest.approx(0.5)
    assert math.isnan(pck(pred, gt, torch.zeros(1, 4, dtype=torch.bool), 20))


def test_bad_shapes_are_reported():
    head = small_head()
    with pytest.raises(ValueError, match="latents"):
        head(torch.randn(1, 447, 16))
    with pytest.raises(ValueError, match="gaussian_heatmaps"):
        gaussian_heatmaps(torch.zeros(1, 2, 3), torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="pck"):
        pck(torch.zeros(1, 2, 2), torch.zeros(1, 3, 2), torch.ones(1, 2), 20)


def test_head_trains():
    head = KeypointHead(latent_dim=16, dim=32, depth=1, heads=4)
    latents = torch.randn(2, 448, 16)
    target = gaussian_heatmaps(torch.rand(2, 12, 2) * 200, torch.ones(2, 12, dtype=torch.bool))
    visible = torch.ones(2, 12, dtype=torch.bool)
    opt = torch.optim.Adam(head.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        loss = heatmap_loss(head(latents), target, visible)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_strided_head_targets_and_subcell_keypoints(monkeypatch):
    """At stride 8 the maps are 28 x 49 and keypoints come back to about a pixel, not to the
    8-pixel cell: the argmax is refined by its neighbourhood."""
    head = KeypointHead(latent_dim=16, grid=(4, 7), patch=56, dim=32, depth=1, heads=4,
                        stride=8).eval()
    assert head.map_size == (28, 49) and head.config()["stride"] == 8
    pixels = torch.tensor([[[100.0, 50.0], [203.3, 171.6]] * 6])  # (1, 12, 2)
    visible = torch.ones(1, 12, dtype=torch.bool)
    maps = head.target_heatmaps(pixels, visible, sigma=8.0)
    assert maps.shape == (1, 12, 28, 49)
    patches = maps.view(1, 12, 4, 7, 7, 7).permute(0, 2, 4, 1, 3, 5)
    monkeypatch.setattr(head, "patch_logits", lambda latents, maps=None, features=None:
                        patches.expand(len(latents), -1, -1, -1, -1, -1))
    found = head.keypoint_pixels(torch.zeros(2, 28, 16))
    assert (found - pixels).abs().max() < 1.5
    with pytest.raises(ValueError, match="stride"):
        KeypointHead(latent_dim=16, grid=(4, 7), patch=56, stride=5)


def test_keypoints_of_some_maps_equal_those_of_all_maps():
    head = KeypointHead(latent_dim=16, grid=(4, 7), patch=56, dim=32, depth=1, heads=4,
                        stride=8).eval()
    latents = torch.randn(5, 28, 16)
    with torch.inference_mode():
        every = head.keypoint_pixels(latents)
        some = head.keypoint_pixels(latents, chunk_size=2, maps=(6, 9, 11))
    torch.testing.assert_close(some, every[:, [6, 9, 11]])
    with pytest.raises(ValueError, match="maps"):
        head.keypoint_pixels(latents, maps=(12,))


def test_depth_output_learns_depth():
    """With ``keypoint_depth`` the head regresses each keypoint's depth; on a synthetic task
    (depth = a linear function of the latents) the loss falls well below the spread of the
    depths, and ``keypoints`` returns the depths of the maps asked for."""
    torch.manual_seed(0)
    head = KeypointHead(latent_dim=16, grid=(4, 7), patch=56, dim=32, depth=1, heads=4,
                        stride=8)
    assert not head.keypoint_depth and head.config()["keypoint_depth"] is False
    head.add_depth_output()
    assert head.keypoint_depth and head.config()["keypoint_depth"] is True
    latents = torch.randn(64, 28, 16)
    visible = torch.ones(64, 12, dtype=torch.bool)
    depths = 0.8 + 0.1 * latents[:, 3, :4].sum(-1, keepdim=True) + torch.linspace(0, 0.1, 12)
    assert head.depth_loss(latents, depths, visible).item() == pytest.approx(
        (depths - 0.8).abs().mean().item(), rel=1e-4)  # zero weights: the 0.8 m bias
    optimiser = torch.optim.Adam(head.parameters(), lr=3e-3)
    for _ in range(300):
        loss = head.depth_loss(latents, depths, visible)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert loss.item() < 0.2 * (depths - depths.mean()).abs().mean().item()
    head.eval()
    with torch.no_grad():
        _, every = head.keypoints(latents[:3])
        found, some = head.keypoints(latents[:3], maps=(6, 9))
    assert found.shape == (3, 2, 2) and some.shape == (3, 2)
    torch.testing.assert_close(some, every[:, [6, 9]])
    assert head.keypoints(latents[:3], with_depth=False)[1] is None
    invisible = torch.zeros(64, 12, dtype=torch.bool)
    assert head.depth_loss(latents, depths, invisible).item() == 0.0
    with pytest.raises(ValueError, match="no depth output"):
        small_head().depths(torch.zeros(1, 448, 32))
