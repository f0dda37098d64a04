"""The widened DWM transformer, LoRA training and the DWM weights files."""
import copy

import pytest
import torch
from diffusers import CogVideoXTransformer3DModel

from dexwm_ros.core.checkpoint import CheckpointError
from dexwm_ros.dwm.loading import load_pipeline
from dexwm_ros.dwm.model import (
    LORA_FILE,
    LoraSettings,
    add_lora,
    load_dwm_weights,
    save_dwm_weights,
    trainable_parameters,
    widen_patch_embedding,
)
from dexwm_ros.dwm.train import diffusion_loss

C = 4  # latent channels of the tiny models


def random_inputs(seed=0, batch=2):
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(batch, 3, 3 * C + 1, 8, 12, generator=generator)
    text = torch.randn(batch, 16, 16, generator=generator)
    return hidden, text, torch.tensor([500, 20][:batch])


def test_widened_input_gives_exactly_the_inpainting_models_output(tiny_base):
    base = CogVideoXTransformer3DModel.from_pretrained(tiny_base / "transformer")
    wide = copy.deepcopy(base)
    widen_patch_embedding(wide, C)
    assert (base.config.in_channels, wide.config.in_channels) == (2 * C + 1, 3 * C + 1)
    hidden, text, t = random_inputs()
    with torch.no_grad():
        expected = base(hidden_states=hidden[:, :, :2 * C + 1], encoder_hidden_states=text,
                        timestep=t, return_dict=False)[0]
        got = wide(hidden_states=hidden, encoder_hidden_states=text, timestep=t,
                   return_dict=False)[0]
    assert torch.equal(got, expected)  # whatever the hand latents are
    assert torch.count_nonzero(wide.patch_embed.proj.weight[:, 2 * C + 1:]) == 0
    widen_patch_embedding(wide, C)  # already wide: unchanged
    assert wide.config.in_channels == 3 * C + 1
    with pytest.raises(ValueError, match="input channels"):
        widen_patch_embedding(base, C + 1)


def fixed_batch(pipeline, seed=3):
    generator = torch.Generator().manual_seed(seed)
    shape = (2, 3, C, 8, 12)
    latents, static, hand = (torch.randn(shape, generator=generator) for _ in range(3))
    embeds = pipeline.encode_prompt(["a robot hand grasps the red box", "push the can"])
    return latents, pipeline.condition_latents(static, hand), embeds


def test_lora_steps_lower_the_loss_and_the_saved_adapter_reloads_identically(
        pipeline, tiny_base, tmp_path):
    settings = LoraSettings(rank=4, alpha=4)
    transformer = pipeline.transformer
    add_lora(transformer, settings)
    trainable = trainable_parameters(transformer)
    assert set(trainable) >= {"patch_embed.proj.weight", "patch_embed.proj.bias"}
    assert all(p.requires_grad == (n in trainable) for n, p in transformer.named_parameters())
    latents, conditions, embeds = fixed_batch(pipeline)

    def loss(seed):
        return diffusion_loss(pipeline, latents, conditions, embeds,
                              [torch.Generator().manual_seed(seed + i) for i in range(2)])

    with torch.no_grad():
        before = float(loss(seed=100))
    optimizer = torch.optim.AdamW(list(trainable.values()), lr=3e-3)
    for _ in range(40):
        optimizer.zero_grad()
        loss(seed=100).backward()
        optimizer.step()
    with torch.no_grad():
        after = float(loss(seed=100))
    assert after < 0.7 * before, (before, after)

    save_dwm_weights(transformer, tmp_path / "dwm", settings, C)
    reloaded = load_pipeline(tiny_base, dwm_weights=tmp_path / "dwm")
    noisy = torch.randn(latents.shape, generator=torch.Generator().manual_seed(5))
    t = torch.tensor([700, 30])
    with torch.no_grad():
        transformer.eval()
        expected = pipeline.predict(noisy, conditions, embeds, t)
        got = reloaded.predict(noisy, conditions, embeds, t)
    assert torch.equal(got, expected)


def test_dwm_weights_errors_name_the_problem(tiny_base, tiny_weights, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("dwm_config.json", "patch_embed.safetensors"):
        (broken / name).write_bytes((tiny_weights / name).read_bytes())
    with pytest.raises(CheckpointError, match=LORA_FILE):
        load_pipeline(tiny_base, dwm_weights=broken)
    narrow = CogVideoXTransformer3DModel.from_pretrained(tiny_base / "transformer")
    with pytest.raises(CheckpointError, match="input channels"):
        load_dwm_weights(narrow, tiny_weights)
    with pytest.raises(ValueError, match="rank"):
        LoraSettings(rank=0)


def test_a_checkpoint_in_the_released_format_imports_to_identical_outputs(
        tiny_base, tiny_weights, tmp_path):
    from safetensors.torch import load_file, save_file

    from dexwm_ros.dwm.released import import_released

    released = tmp_path / "released"  # what the authors' training code writes
    released.mkdir()
    save_file(load_file(str(tiny_weights / LORA_FILE)),
              str(released / "pytorch_lora_weights.safetensors"))
    projection = load_file(str(tiny_weights / "patch_embed.safetensors"))
    save_file({f"patch_embed.proj.{k}": v for k, v in projection.items()},
              str(released / "non_lora_weights.safetensors"))
    imported = import_released(released, tmp_path / "imported", alpha=4)
    ours, theirs = (load_pipeline(tiny_base, dwm_weights=w) for w in (tiny_weights, imported))
    hidden, text, t = random_inputs()
    noisy, conditions = hidden[:, :, :C], hidden[:, :, C:]
    with torch.no_grad():
        assert torch.equal(ours.predict(noisy, conditions, text, t),
                           theirs.predict(noisy, conditions, text, t))
    (released / "non_lora_weights.safetensors").unlink()
    with pytest.raises(CheckpointError, match="non_lora_weights"):
        import_released(released, tmp_path / "again")
