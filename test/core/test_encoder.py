import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers as tf

from dexwm_ros.core.encoder import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TINY_ENCODER_DIM,
    EncoderWeightsError,
    build_encoder,
)

SMALL = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}


@pytest.fixture(scope="module")
def tiny():
    return build_encoder("tiny")


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (3, 270, 480, 3), dtype=np.uint8)


def save_model(directory, model_cls, config):
    torch.manual_seed(0)
    model = model_cls(config).eval()
    model.save_pretrained(directory)
    return model


def test_tiny_encoder_attributes_and_shapes(tiny, images):
    assert tiny.name == "tiny" and tiny.grid == (16, 28) and tiny.dim == TINY_ENCODER_DIM
    assert tiny.num_patches == 448 and tiny.image_size == (224, 392)
    latents = tiny.encode(images, batch_size=2)
    assert latents.shape == (3, 448, TINY_ENCODER_DIM) and latents.dtype == torch.float32
    torch.testing.assert_close(tiny.encode(images[1]), latents[1:2], rtol=1e-4, atol=1e-4)
    assert all(not p.requires_grad for p in tiny.parameters())


def test_tiny_encoder_identical_in_every_process(tiny):
    code = ("from dexwm_ros.core.encoder import build_encoder\n"
            "print(sum(float(p.double().sum()) for p in build_encoder('tiny').parameters()))")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout.split()[-1]
    mine = sum(float(p.double().sum()) for p in tiny.parameters())
    assert float(other) == mine
    with pytest.raises(ValueError, match="no weights"):
        build_encoder("tiny", weights="x")


def test_preprocess_crop_and_normalisation(tiny):
    wide = np.zeros((224, 500, 3), dtype=np.uint8)
    wide[:, :, 0] = (np.arange(500) % 256).astype(np.uint8)[None]
    out = tiny.preprocess(wide)
    assert out.shape == (1, 3, 224, 392)
    red = out[0, 0, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    torch.testing.assert_close(red * 255, torch.arange(54, 446).float() % 256, atol=1e-3,
                               rtol=0)
    grey = np.full((480, 640, 3), 128, dtype=np.uint8)  # 4:3: width fills 392, rows cropped
    out = tiny.preprocess(torch.from_numpy(grey)[None].expand(2, -1, -1, -1))
    assert out.shape == (2, 3, 224, 392)
    expected = (128 / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(out[0, :, 100, 100], expected.float())
    hd = np.zeros((1080, 1920, 3), dtype=np.uint8)
    hd[:, 960:] = 255  # right half white: after the crop the boundary stays in the middle
    out = tiny.preprocess(hd)[0, 0, 112]
    assert out[:195].max() < 0 < out[197:].min()
    with pytest.raises(ValueError, match="uint8"):
        tiny.preprocess(np.zeros((10, 10, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="preprocessed images"):
        tiny.encode(torch.zeros(1, 3, 100, 100))


def test_encode_accepts_preprocessed_and_bf16(tiny, images):
    latents = tiny.encode(images)
    torch.testing.assert_close(tiny.encode(tiny.preprocess(images)), latents)
    fast = build_encoder("tiny", dtype=torch.bfloat16).encode(images)
    assert fast.dtype == torch.float32
    assert (fast - latents).abs().mean() < 0.05 * latents.abs().mean()


@pytest.mark.parametrize("registers", [False, True])
def test_dinov2_from_local_directory(tmp_path, images, registers):
    cls, cfg_cls = ((tf.Dinov2WithRegistersModel, tf.Dinov2WithRegistersConfig) if registers
                    else (tf.Dinov2Model, tf.Dinov2Config))
    extra = {"num_register_tokens": 4} if registers else {}
    model = save_model(tmp_path, cls, cfg_cls(**SMALL, intermediate_size=64, patch_size=14,
                                              image_size=56, **extra))
    enc = build_encoder("dinov2", weights=tmp_path)
    assert enc.name == "dinov2_d32_p14" and enc.image_size == (224, 392)
    latents = enc.encode(images)
    with torch.inference_mode():
        reference = model(pixel_values=enc.preprocess(images)).last_hidden_state
    # final-norm patch tokens only: CLS (and registers) dropped
    torch.testing.assert_close(latents, reference[:, 1 + (4 if registers else 0):])


BACKENDS = {
    "dinov3": (tf.DINOv3ViTModel, lambda: tf.DINOv3ViTConfig(
        **SMALL, intermediate_size=64, patch_size=16, num_register_tokens=4)),
    "siglip2": (tf.SiglipVisionModel, lambda: tf.SiglipVisionConfig(
        **SMALL, intermediate_size=64, patch_size=16, image_size=64)),
    "siglip2-naflex": (tf.Siglip2VisionModel, lambda: tf.Siglip2VisionConfig(
        **SMALL, intermediate_size=64, patch_size=16, num_patches=64)),
    "vjepa2": (tf.VJEPA2Model, lambda: tf.VJEPA2Config(
        **SMALL, mlp_ratio=2, patch_size=16, crop_size=64, frames_per_clip=2, tubelet_size=2,
        pred_hidden_size=32, pred_num_hidden_layers=1, pred_num_attention_heads=2)),
}


@pytest.mark.parametrize("kind", sorted(BACKENDS))
def test_other_backends_from_local_directory(tmp_path, images, kind):
    cls, make_config = BACKENDS[kind]
    save_model(tmp_path, cls, make_config())
    backend = kind.split("-")[0]
    enc = build_encoder(backend, weights=str(tmp_path))
    assert enc.name.startswith(backend) and enc.image_size == (256, 448)
    latents = enc.encode(images)
    assert latents.shape == (3, 448, 32) and torch.isfinite(latents).all()
    assert latents.mean(-1).abs().max() < 1e-3  # final LayerNorm (unit gain, zero bias) applied


def test_weights_errors(tmp_path):
    with pytest.raises(EncoderWeightsError, match="needs weights"):
        build_encoder("dinov2")
    with pytest.raises(EncoderWeightsError, match="not found"):
        build_encoder("dinov2", weights=tmp_path / "missing")
    with pytest.raises(ValueError, match="unknown encoder backend"):
        build_encoder("resnet")
    save_model(tmp_path / "siglip", tf.SiglipVisionModel,
               tf.SiglipVisionConfig(**SMALL, intermediate_size=64, patch_size=16,
                                     image_size=64))
    with pytest.raises(EncoderWeightsError, match="'siglip_vision_model' model, not a dinov2"):
        build_encoder("dinov2", weights=tmp_path / "siglip")
    dino = tmp_path / "dino"
    save_model(dino, tf.Dinov2Model, tf.Dinov2Config(**SMALL, intermediate_size=64,
                                                     patch_size=14, image_size=56))
    config = json.loads((dino / "config.json").read_text())
    config["num_hidden_layers"] = 2  # weights only hold one layer
    (dino / "config.json").write_text(json.dumps(config))
    with pytest.raises(EncoderWeightsError, match="does not fully initialise"):
        build_encoder("dinov2", weights=dino)
    (dino / "model.safetensors").unlink()
    with pytest.raises(EncoderWeightsError, match="cannot load"):
        build_encoder("dinov2", weights=dino)


def test_pooled_encoder_averages_patch_blocks(tiny, images):
    pooled = build_encoder("tiny", pool=4)
    assert pooled.name == "tiny_pool4" and pooled.grid == (4, 7) and pooled.num_patches == 28
    assert pooled.token_pixels == 56 and pooled.preprocessing["pool"] == 4
    full = tiny.encode(images[:2]).view(2, 16, 28, -1)
    blocks = full.view(2, 4, 4, 7, 4, -1).mean(dim=(2, 4)).reshape(2, 28, -1)
    torch.testing.assert_close(pooled.encode(images[:2]), blocks, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="pool"):
        build_encoder("tiny", pool=3)


def test_tiny_residual_is_tiny_before_its_final_layernorm(tiny, images):
    residual = build_encoder("tiny_residual")
    assert residual.name == "tiny_residual" and residual.grid == tiny.grid
    assert residual.dim == tiny.dim and residual.preprocessing == tiny.preprocessing
    tokens = residual.encode(images[:2])
    normed = tiny.model.layernorm(tokens)  # per token, so the dropped CLS token does not matter
    torch.testing.assert_close(normed, tiny.encode(images[:2]), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(tokens, normed, atol=1e-2)
    assert build_encoder("tiny_residual", pool=4).name == "tiny_residual_pool4"
    with pytest.raises(ValueError, match="no weights"):
        build_encoder("tiny_residual", weights="x")
