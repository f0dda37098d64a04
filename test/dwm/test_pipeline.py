"""The DWM pipeline end to end on tiny random models, and the base-model loader's errors."""
import shutil

import numpy as np
import pytest
import torch

from dexwm_ros.dwm.loading import BaseModelError, check_base_directory, load_pipeline
from dexwm_ros.dwm.pipeline import ImaginationCancelled
from dexwm_ros.dwm.tiny import TINY_VIDEO

F, H, W = TINY_VIDEO
PROMPT = "a robot hand grasps the red box"


def videos(seed, batch):
    rng = np.random.default_rng(seed)
    static = np.repeat(rng.integers(0, 256, (1, H, W, 3), dtype=np.uint8), F, axis=0)
    hands = rng.integers(0, 256, (batch, F, H, W, 3), dtype=np.uint8)
    return static, hands


@pytest.fixture
def trained(tiny_base, tiny_weights):
    return load_pipeline(tiny_base, dwm_weights=tiny_weights)


def test_tiny_pipeline_runs_end_to_end_with_the_right_shapes(trained):
    static, hands = videos(0, batch=2)
    scene = trained.prepare_scene(static, PROMPT)
    assert scene.static_latents.shape == (1, 3, 4, H // 4, W // 4)  # 1 + 8/4 latent frames
    assert scene.prompt_embeds.shape == scene.negative_embeds.shape == (1, 16, 16)
    latents = trained.imagine(scene, hands, steps=3, return_latents=True)
    assert latents.shape == (2, 3, 4, H // 4, W // 4) and torch.isfinite(latents).all()
    frames = trained.decode(latents)
    assert frames.shape == (2, F, H, W, 3) and frames.dtype == np.uint8
    assert np.array_equal(frames, trained.imagine(scene, hands, steps=3))  # same seed
    assert not np.array_equal(frames[0], frames[1])  # the hand video matters


def test_cached_conditioning_equals_recomputation_and_plans_batch(trained):
    static, hands = videos(1, batch=2)
    cached = trained.prepare_scene(static, PROMPT)
    first = trained.imagine(cached, hands, steps=2, return_latents=True)
    again = trained.imagine(cached, hands, steps=2, return_latents=True)
    fresh = trained.imagine(trained.prepare_scene(static, PROMPT), hands, steps=2,
                            return_latents=True)
    assert torch.equal(first, again) and torch.equal(first, fresh)
    single = trained.imagine(cached, hands[1:], steps=2, return_latents=True)
    torch.testing.assert_close(single[0], first[1], rtol=0, atol=1e-4)  # batch-independent


def test_guidance_one_skips_the_unconditional_pass(trained):
    static, hands = videos(2, batch=3)
    scene = trained.prepare_scene(static, PROMPT)
    batches = []
    handle = trained.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: batches.append(kwargs["hidden_states"].shape[0]),
        with_kwargs=True)
    try:
        trained.imagine(scene, hands, steps=2, guidance_scale=6.0, return_latents=True)
        trained.imagine(scene, hands, steps=2, guidance_scale=1.0, return_latents=True)
    finally:
        handle.remove()
    assert batches == [6, 6, 3, 3]
    with pytest.raises(ValueError, match="guidance_scale"):
        trained.imagine(scene, hands, steps=2, guidance_scale=0.5)


def test_step_callback_reports_progress_and_cancels(trained):
    static, hands = videos(3, batch=1)
    scene = trained.prepare_scene(static, PROMPT)
    seen = []
    with pytest.raises(ImaginationCancelled, match="2 of 5"):
        trained.imagine(scene, hands, steps=5,
                        on_step=lambda done, total: seen.append((done, total)) or done < 2)
    assert seen == [(1, 5), (2, 5)]


def test_bad_sizes_are_refused(trained):
    static, hands = videos(4, batch=1)
    with pytest.raises(ValueError, match="1 \\+ 8m"):
        trained.prepare_scene(static[:5], PROMPT)
    with pytest.raises(ValueError, match="multiples of 8"):
        trained.prepare_scene(static[:, :28], PROMPT)
    scene = trained.prepare_scene(static, PROMPT)
    with pytest.raises(ValueError, match="do not match"):
        trained.imagine(scene, hands[:, :5], steps=1)


def test_incomplete_base_directory_is_one_error_naming_what_is_missing(tiny_base, tmp_path):
    copy = tmp_path / "base"
    shutil.copytree(tiny_base, copy)
    (copy / "vae" / "diffusion_pytorch_model.safetensors").rename(
        copy / "vae" / "diffusion_pytorch_model.bin")
    shutil.rmtree(copy / "tokenizer")
    (copy / "scheduler" / "scheduler_config.json").unlink()
    with pytest.raises(BaseModelError) as error:
        load_pipeline(copy)
    message = str(error.value)
    for part in ("CogVideoX-Fun-V1.1-5b-InP", "vae/diffusion_pytorch_model.safetensors",
                 "pickle", "tokenizer/tokenizer.json", "scheduler/scheduler_config.json"):
        assert part in message, message
    assert "transformer" not in message.split("missing:")[1]
    with pytest.raises(BaseModelError, match="does not exist"):
        check_base_directory(tmp_path / "nowhere")



def test_vae_slicing_and_tiling(tiny_base):
    """diffusers' tiling is tuned for 720 x 480 (tiles of half the sample size): check it there
    on one frame."""
    plain = load_pipeline(tiny_base, vae_slicing=False, vae_tiling=False)
    saving = load_pipeline(tiny_base, vae_slicing=True, vae_tiling=True)
    assert saving.vae.use_slicing and saving.vae.use_tiling and not plain.vae.use_tiling
    saving.vae.enable_tiling(tile_sample_min_height=240, tile_sample_min_width=360)
    frame = np.random.default_rng(5).integers(0, 256, (1, 1, 480, 720, 3), dtype=np.uint8)
    tiled, whole = saving.encode_video(frame), plain.encode_video(frame)
    assert tiled.shape == whole.shape == (1, 1, 4, 120, 180)
    assert (tiled - whole).abs().mean() < 0.1 * whole.abs().mean()  # blended tile seams


def test_dpm_scheduler_runs(tiny_base, tiny_weights):
    dpm = load_pipeline(tiny_base, dwm_weights=tiny_weights, scheduler="dpm")
    assert type(dpm.scheduler).__name__ == "CogVideoXDPMScheduler"
    static, hands = videos(6, batch=2)
    scene = dpm.prepare_scene(static, PROMPT)
    latents = dpm.imagine(scene, hands, steps=3, return_latents=True)
    assert latents.shape == (2, 3, 4, H // 4, W // 4) and torch.isfinite(latents).all()
    assert torch.equal(latents, dpm.imagine(scene, hands, steps=3, return_latents=True))
    single = dpm.imagine(scene, hands[1:], steps=3, return_latents=True)
    torch.testing.assert_close(single[0], latents[1], rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="scheduler"):
        load_pipeline(tiny_base, scheduler="euler")
