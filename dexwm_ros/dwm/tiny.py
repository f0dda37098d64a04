"""Tiny random base models in the CogVideoX-Fun-InP directory layout (tests, benchmarks, demo).

Same classes and file layout as the real base model, only small: a 3-level CogVideoX VAE
(4 latent channels, 4x spatial and 4x temporal compression), a 1-layer CogVideoX transformer
with the inpainting input width, a 2-layer T5 encoder with a small trained tokenizer and the
CogVideoX DDIM scheduler configuration (v-prediction, zero terminal SNR).
"""
from __future__ import annotations

from pathlib import Path

import torch

from dexwm_ros.dwm.model import inpainting_channels

#: Video size the tiny models are made for: frames (1 + 8m), height, width.
TINY_VIDEO = (9, 32, 48)
TINY_LATENT_CHANNELS = 4
_PROMPTS = ("a robot hand grasps the red box on the table", "the hand opens and closes",
            "lift the can from the table and put it down", "push the blue cylinder")


def _tiny_tokenizer():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import T5TokenizerFast

    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.train_from_iterator(_PROMPTS, trainers.UnigramTrainer(
        vocab_size=64, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>"))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=tokenizer, eos_token="</s>", pad_token="<pad>",
                           unk_token="<unk>", extra_ids=0)


def write_tiny_base(directory: str | Path, seed: int = 0) -> Path:
    """Write a tiny random base model to ``directory`` (the loader's layout); returns it."""
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDDIMScheduler,
        CogVideoXTransformer3DModel,
    )
    from transformers import T5Config, T5EncoderModel

    directory = Path(directory)
    frames, height, width = TINY_VIDEO
    channels = TINY_LATENT_CHANNELS
    torch.manual_seed(seed)
    levels = 3
    vae = AutoencoderKLCogVideoX(
        block_out_channels=(8,) * levels, down_block_types=("CogVideoXDownBlock3D",) * levels,
        up_block_types=("CogVideoXUpBlock3D",) * levels, latent_channels=channels,
        layers_per_block=1, norm_num_groups=4, temporal_compression_ratio=4,
        sample_height=height, sample_width=width, scaling_factor=0.7)
    spatial = 2 ** (levels - 1)
    tokenizer = _tiny_tokenizer()
    max_tokens = 16
    text_dim = 16
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=inpainting_channels(channels),
        out_channels=channels, time_embed_dim=16, text_embed_dim=text_dim, num_layers=1,
        sample_width=width // spatial, sample_height=height // spatial, sample_frames=frames,
        patch_size=2, max_text_seq_length=max_tokens, use_rotary_positional_embeddings=True)
    text_encoder = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer), d_model=text_dim, d_kv=8, d_ff=32, num_layers=2,
        num_heads=2, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id))
    scheduler = CogVideoXDDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        prediction_type="v_prediction", rescale_betas_zero_snr=True,
        timestep_spacing="trailing", clip_sample=False, set_alpha_to_one=True)
    vae.save_pretrained(directory / "vae", safe_serialization=True)
    transformer.save_pretrained(directory / "transformer", safe_serialization=True)
    text_encoder.save_pretrained(directory / "text_encoder", safe_serialization=True)
    tokenizer.model_max_length = max_tokens
    tokenizer.save_pretrained(directory / "tokenizer")
    scheduler.save_pretrained(directory / "scheduler")
    return directory
