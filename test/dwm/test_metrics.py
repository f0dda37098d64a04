"""PSNR, SSIM, LPIPS and DreamSim on known inputs; learned weights from local files."""
import json
import math

import numpy as np
import pytest
import torch

from dexwm_ros.core.checkpoint import CheckpointError, save_json, save_tensors
from dexwm_ros.dwm.metrics import (
    LPIPS,
    PSNR_CAP_DB,
    DreamSim,
    main,
    psnr,
    ssim,
    video_metrics,
)


def random_video(seed, frames=3, height=64, width=64):
    return np.random.default_rng(seed).integers(0, 256, (frames, height, width, 3),
                                                dtype=np.uint8)


@pytest.fixture(scope="module")
def lpips_file(tmp_path_factory):
    torch.manual_seed(0)
    model = LPIPS()
    with torch.no_grad():  # the real heads are non-negative
        for i in range(5):
            getattr(model, f"lin{i}").model[1].weight.abs_()
    path = tmp_path_factory.mktemp("lpips") / "lpips_alex.safetensors"
    save_tensors(path, model.state_dict())
    return path


@pytest.fixture(scope="module")
def dreamsim_dir(tmp_path_factory):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, ViTConfig, ViTModel

    root = tmp_path_factory.mktemp("dreamsim")
    torch.manual_seed(0)
    ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=32),
             add_pooling_layer=False).save_pretrained(root / "dino")
    CLIPVisionModelWithProjection(CLIPVisionConfig(
        image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=32, projection_dim=8)).save_pretrained(
        root / "clip")
    save_json(root / "dreamsim.json", {
        "format": "dexwm_dreamsim", "image_size": 32, "normalize_embeds": True,
        "branches": [
            {"kind": "vit", "path": "dino", "mean": [0.485, 0.456, 0.406],
             "std": [0.229, 0.224, 0.225]},
            {"kind": "clip", "path": "clip", "mean": [0.481, 0.458, 0.408],
             "std": [0.269, 0.261, 0.276]}]})
    return root


def test_identical_videos_give_capped_psnr_and_ssim_one(lpips_file, dreamsim_dir):
    video = random_video(0)
    scores = video_metrics(video, video.copy(), LPIPS.from_file(lpips_file),
                           DreamSim.from_directory(dreamsim_dir))
    assert scores["psnr"] == PSNR_CAP_DB
    assert scores["ssim"] == pytest.approx(1.0, abs=1e-12)
    assert scores["lpips"] == pytest.approx(0.0, abs=1e-6)
    assert scores["dreamsim"] == pytest.approx(0.0, abs=1e-5)


def test_known_values_and_ordering(lpips_file, dreamsim_dir):
    black = np.zeros((2, 32, 32, 3), np.uint8)
    grey = np.full_like(black, 10)
    assert psnr(grey, black) == pytest.approx(10 * math.log10(255 ** 2 / 100))
    # Constant images: SSIM is the luminance term (2 m1 m2 + c1) / (m1^2 + m2^2 + c1).
    c1, m = 0.01 ** 2, 10 / 255
    assert ssim(grey, black) == pytest.approx(c1 / (m ** 2 + c1))
    reference = random_video(1)
    noisy = np.clip(reference + np.random.default_rng(2).normal(0, 10, reference.shape), 0,
                    255).astype(np.uint8)
    lpips, dreamsim = LPIPS.from_file(lpips_file), DreamSim.from_directory(dreamsim_dir)
    close = video_metrics(noisy, reference, lpips, dreamsim)
    far = video_metrics(random_video(3), reference, lpips, dreamsim)
    assert close["psnr"] > far["psnr"] and close["ssim"] > far["ssim"]
    assert 0 < close["lpips"] < far["lpips"]
    assert far["dreamsim"] > 0
    with pytest.raises(ValueError, match="differ"):
        psnr(reference, reference[:2])


def test_learned_metric_files_are_checked(lpips_file, dreamsim_dir, tmp_path):
    from safetensors.torch import load_file

    tensors = load_file(str(lpips_file))
    del tensors["lin2.model.1.weight"]
    save_tensors(tmp_path / "partial.safetensors", tensors)
    with pytest.raises(CheckpointError, match="lin2.model.1.weight"):
        LPIPS.from_file(tmp_path / "partial.safetensors")
    config = json.loads((dreamsim_dir / "dreamsim.json").read_text())
    config["branches"][0]["path"] = "missing"
    broken = tmp_path / "dreamsim"
    broken.mkdir()
    save_json(broken / "dreamsim.json", config)
    with pytest.raises(CheckpointError, match="config.json and model.safetensors"):
        DreamSim.from_directory(broken)


def test_metrics_command_writes_json(tmp_path, lpips_file):
    from training.video import write_video

    for folder, seed in (("gen", 0), ("ref", 0)):
        (tmp_path / folder).mkdir()
        write_video(tmp_path / folder / "a.mp4", random_video(seed, frames=2), 8.0)
    out = tmp_path / "metrics.json"
    assert main(["--generated", str(tmp_path / "gen"), "--reference", str(tmp_path / "ref"),
                 "--lpips-weights", str(lpips_file), "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert set(data["mean"]) == {"psnr", "ssim", "lpips"} and set(data["videos"]) == {"a"}
    assert data["mean"]["psnr"] == PSNR_CAP_DB  # same encoder input -> same decoded frames
