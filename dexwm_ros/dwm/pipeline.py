"""DWM inference: encode the conditions, denoise, decode (our pipeline; diffusers has none).

The static-scene latents and prompt embeddings do not depend on the plan, so
:meth:`DWMPipeline.prepare_scene` computes them once and :meth:`DWMPipeline.imagine` reuses
them for any number of candidate plans (hand videos), denoised together as one batch.
Classifier-free guidance is on the text only (paper supplementary E; the released inference
uses 50 steps and guidance 6): the unconditional pass keeps the static and hand conditions
and swaps the prompt for the negative prompt; guidance 1 skips it.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from dexwm_ros.dwm.model import dwm_channels, keep_all_mask


class ImaginationCancelled(RuntimeError):
    """The step callback asked to stop."""


@dataclass
class SceneConditioning:
    """Plan-independent conditioning, computed once per scene and prompt."""

    static_latents: torch.Tensor  # (1, F', C, h, w), scaled by the VAE scaling factor
    prompt_embeds: torch.Tensor  # (1, L, D)
    negative_embeds: torch.Tensor  # (1, L, D)
    num_frames: int
    height: int
    width: int


def video_to_tensor(video: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, F, H, W, 3)`` (or one ``(F, H, W, 3)`` video) -> float ``(B, 3, F, H, W)``
    in [-1, 1]."""
    video = torch.as_tensor(np.asarray(video))
    if video.ndim == 4:
        video = video[None]
    if video.ndim != 5 or video.shape[-1] != 3 or video.dtype != torch.uint8:
        raise ValueError(f"expected uint8 videos (B, F, H, W, 3), got {video.dtype} "
                         f"{tuple(video.shape)}")
    return video.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0


def tensor_to_video(pixels: torch.Tensor) -> np.ndarray:
    """Float ``(B, 3, F, H, W)`` in [-1, 1] -> uint8 ``(B, F, H, W, 3)``."""
    scaled = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return scaled.permute(0, 2, 3, 4, 1).cpu().numpy()


class DWMPipeline:
    """VAE + widened CogVideoX transformer + scheduler + T5 text encoder."""

    def __init__(self, vae, transformer, scheduler, text_encoder, tokenizer) -> None:
        self.vae, self.transformer, self.scheduler = vae, transformer, scheduler
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.latent_channels = int(vae.config.latent_channels)
        if transformer.config.in_channels != dwm_channels(self.latent_channels):
            raise ValueError(f"transformer has {transformer.config.in_channels} input channels,"
                             f" DWM needs {dwm_channels(self.latent_channels)}; widen it first")
        self.spatial_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.temporal_factor = int(vae.config.temporal_compression_ratio)
        self.scaling_factor = float(vae.config.scaling_factor)
        self.max_tokens = int(transformer.config.max_text_seq_length)
        self._rotary: dict = {}

    @property
    def device(self) -> torch.device:
        return self.transformer.device

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.dtype

    def set_vae_memory_savers(self, slicing: bool, tiling: bool) -> None:
        """Encode/decode one video at a time (slicing) and in spatial tiles (tiling)."""
        (self.vae.enable_slicing if slicing else self.vae.disable_slicing)()
        (self.vae.enable_tiling if tiling else self.vae.disable_tiling)()

    # ------------------------------------------------------------------ conditions
    def check_video_size(self, num_frames: int, height: int, width: int) -> None:
        """Raise ``ValueError`` unless the VAE and the patch size accept this video size."""
        step = self.spatial_factor * self.transformer.config.patch_size
        # The CogVideoX VAE decodes latent frames in pairs after a first triple, so an odd
        # number of latent frames: 1 + 2 * temporal_factor * m video frames (49 = 1 + 8 * 6).
        frames_step = 2 * self.temporal_factor
        if num_frames < 1 or (num_frames - 1) % frames_step:
            raise ValueError(f"{num_frames} frames: the CogVideoX VAE needs 1 + {frames_step}m")
        if height % step or width % step:
            raise ValueError(f"{height}x{width}: height and width must be multiples of {step}")

    @torch.no_grad()
    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        """T5 embeddings ``(N, L, D)``, padded or truncated to the transformer's text length."""
        tokens = self.tokenizer(list(prompts), padding="max_length", max_length=self.max_tokens,
                                truncation=True, add_special_tokens=True, return_tensors="pt")
        ids = tokens.input_ids.to(self.text_encoder.device)
        return self.text_encoder(ids)[0].to(self.device, self.dtype)

    @torch.no_grad()
    def encode_video(self, video: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 videos ``(B, F, H, W, 3)`` -> scaled latents ``(B, F', C, h, w)`` (posterior
        mean)."""
        pixels = video_to_tensor(video)
        self.check_video_size(*pixels.shape[2:])
        pixels = pixels.to(self.vae.device, self.vae.dtype)
        latents = self.vae.encode(pixels).latent_dist.mode() * self.scaling_factor
        return latents.permute(0, 2, 1, 3, 4).to(self.device, self.dtype)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Scaled latents ``(B, F', C, h, w)`` -> uint8 frames ``(B, F, H, W, 3)``."""
        z = (latents / self.scaling_factor).permute(0, 2, 1, 3, 4)
        return tensor_to_video(self.vae.decode(z.to(self.vae.device, self.vae.dtype)).sample)

    def prepare_scene(self, static_video: np.ndarray, prompt: str,
                      negative_prompt: str = "") -> SceneConditioning:
        """Encode the static-scene video ``(F, H, W, 3)`` and the prompts once."""
        static_video = np.asarray(static_video)
        if static_video.ndim != 4:
            raise ValueError(f"static-scene video must be (F, H, W, 3), got "
                             f"{static_video.shape}")
        embeds = self.encode_prompt([prompt, negative_prompt])
        num_frames, height, width = static_video.shape[:3]
        return SceneConditioning(self.encode_video(static_video), embeds[:1], embeds[1:],
                                 num_frames, height, width)

    def condition_latents(self, static_latents: torch.Tensor,
                          hand_latents: torch.Tensor) -> torch.Tensor:
        """``[mask | static | hand]`` channels for ``B`` plans ``(B, F', 2C + 1, h, w)``."""
        static = static_latents.expand(hand_latents.shape[0], -1, -1, -1, -1)
        if static.shape != hand_latents.shape:
            raise ValueError(f"static latents {tuple(static_latents.shape)} and hand latents "
                             f"{tuple(hand_latents.shape)} differ in size")
        return torch.cat([keep_all_mask(static, self.scaling_factor), static, hand_latents],
                         dim=2)

    # ------------------------------------------------------------------ denoiser
    def rotary_embedding(self, latent_frames: int, grid_height: int, grid_width: int):
        """CogVideoX 3-D rotary embedding for a latent grid (``None`` if the model has none)."""
        config = self.transformer.config
        if not config.use_rotary_positional_embeddings:
            return None
        key = (latent_frames, grid_height, grid_width, self.device)
        if key not in self._rotary:
            from diffusers.models.embeddings import get_3d_rotary_pos_embed
            from diffusers.pipelines.cogvideo.pipeline_cogvideox import (
                get_resize_crop_region_for_grid,
            )

            patches = (grid_height // config.patch_size, grid_width // config.patch_size)
            crops = get_resize_crop_region_for_grid(
                patches, config.sample_width // config.patch_size,
                config.sample_height // config.patch_size)
            self._rotary[key] = get_3d_rotary_pos_embed(
                embed_dim=config.attention_head_dim, crops_coords=crops, grid_size=patches,
                temporal_size=latent_frames, device=self.device)
        return self._rotary[key]

    def predict(self, noisy: torch.Tensor, conditions: torch.Tensor, prompt_embeds: torch.Tensor,
                timesteps: torch.Tensor) -> torch.Tensor:
        """Transformer output for noisy latents ``(B, F', C, h, w)`` and their conditions."""
        rotary = self.rotary_embedding(noisy.shape[1], noisy.shape[3], noisy.shape[4])
        return self.transformer(
            hidden_states=torch.cat([noisy, conditions], dim=2),
            encoder_hidden_states=prompt_embeds, timestep=timesteps,
            image_rotary_emb=rotary, return_dict=False)[0]

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def imagine(self, scene: SceneConditioning, hand_videos: np.ndarray, steps: int = 50,
                guidance_scale: float = 6.0, seed: int = 0,
                on_step: Callable[[int, int], bool] | None = None,
                return_latents: bool = False):
        """Interaction videos uint8 ``(B, F, H, W, 3)`` for ``B`` hand videos of one scene.

        All plans start from the noise of ``seed`` (and the stochastic DPM sampler draws the same
        noise for each), so a plan's video does not depend on the other plans of the batch.
        ``on_step(done, total)`` is called after every denoising step; returning ``False``
        raises :class:`ImaginationCancelled`. With ``return_latents`` the final latents
        ``(B, F', C, h, w)`` are returned instead of decoded frames.
        """
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if guidance_scale < 1.0:
            raise ValueError(f"guidance_scale must be >= 1 (1 = no guidance), got "
                             f"{guidance_scale}")
        hand_videos = np.asarray(hand_videos)
        if hand_videos.ndim == 4:
            hand_videos = hand_videos[None]
        if hand_videos.shape[1:4] != (scene.num_frames, scene.height, scene.width):
            raise ValueError(f"hand videos {hand_videos.shape[1:4]} (F, H, W) do not match the "
                             f"static-scene video {(scene.num_frames, scene.height, scene.width)}")
        conditions = self.condition_latents(scene.static_latents,
                                            self.encode_video(hand_videos))
        batch = conditions.shape[0]
        guided = guidance_scale > 1.0
        embeds = scene.prompt_embeds.expand(batch, -1, -1)
        if guided:
            embeds = torch.cat([scene.negative_embeds.expand(batch, -1, -1), embeds])
            conditions = torch.cat([conditions, conditions])
        scheduler = copy.deepcopy(self.scheduler)
        scheduler.set_timesteps(steps, device=self.device)
        # Every plan starts from the same noise: the videos differ only through the plans.
        generator = torch.Generator("cpu").manual_seed(seed)
        shape = (1, conditions.shape[1], self.latent_channels, *conditions.shape[3:])
        latents = torch.randn(shape, generator=generator).to(self.device, self.dtype)
        latents = latents.expand(batch, -1, -1, -1, -1) * scheduler.init_noise_sigma
        multistep = type(scheduler).__name__ == "CogVideoXDPMScheduler"
        step_noise = [torch.Generator("cpu").manual_seed(seed + 1) for _ in range(batch)]
        previous_x0 = None
        timesteps = scheduler.timesteps
        for i, t in enumerate(timesteps):
            model_in = torch.cat([latents, latents]) if guided else latents
            model_in = scheduler.scale_model_input(model_in, t)
            output = self.predict(model_in, conditions, embeds,
                                  t.expand(model_in.shape[0])).float()
            if guided:
                unconditional, conditional = output.chunk(2)
                output = unconditional + guidance_scale * (conditional - unconditional)
            if multistep:
                latents, previous_x0 = scheduler.step(
                    output, previous_x0, t, timesteps[i - 1] if i > 0 else None, latents.float(),
                    generator=step_noise, return_dict=False)
            else:
                latents = scheduler.step(output, t, latents.float(), return_dict=False)[0]
            latents = latents.to(self.dtype)
            if on_step is not None and on_step(i + 1, len(timesteps)) is False:
                raise ImaginationCancelled(f"cancelled after {i + 1} of {len(timesteps)} steps")
        return latents if return_latents else self.decode(latents)

