"""DWM video imagination: scene- and hand-conditioned video diffusion (Kim et al., Dexterous
World Models, section 2; supplementary A).

A CogVideoX-Fun inpainting transformer is widened on its input channels to
``[noisy C | mask 1 | static-scene C | hand C]`` (``C`` = VAE latent channels, 16 for
CogVideoX), the added weights starting at zero, and fine-tuned with LoRA. Given a static-scene
video (for a fixed camera: the current frame repeated), a video of the robot hand alone along a
planned joint trajectory and a text prompt, it generates the interaction video.

Modules: ``model`` (widening, LoRA weights), ``loading`` (local base-model directory),
``pipeline`` (inference), ``robot_inputs`` (static-scene and hand-only videos), ``triplets``
(training data from the simulator), ``train`` (LoRA training), ``generate`` (videos for
evaluation), ``metrics`` (PSNR, SSIM, LPIPS, DreamSim), ``released`` (import of the authors'
checkpoints), ``tiny`` (small random models for tests). Needs the ``dwm`` extra (diffusers,
peft).
"""
