"""The trained part of DexWM in one module: predictor + keypoint head + encoder identity.

A world model directory holds ``model.safetensors`` (tensors ``predictor.*`` and
``keypoint_head.*``, including the predictor's action-normalisation buffers) and ``config.json``
(format version, predictor config with its action representation and action-conditioning
options, keypoint-head config, encoder name/backend/preprocessing).
The encoder itself is frozen and not stored: build it with ``encoder.build_encoder`` from the
recorded backend and your local weights, and check ``encoder.name`` against ``encoder_name``.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from dexwm_ros.core.checkpoint import (
    CheckpointError,
    load_json,
    load_state_into,
    load_tensors,
    require,
    save_json,
    save_tensors,
)
from dexwm_ros.core.encoder import TINY_ENCODER_DIM, ImageEncoder, build_encoder, preprocessing_info
from dexwm_ros.core.keypoint_head import KeypointHead
from dexwm_ros.core.predictor import CDiTPredictor, PredictorConfig

FORMAT = "dexwm_ros.world_model"
FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


class WorldModel(nn.Module):
    def __init__(self, predictor: CDiTPredictor, keypoint_head: KeypointHead | None = None,
                 encoder_name: str = "tiny", encoder_backend: str = "tiny",
                 preprocessing: dict | None = None):
        super().__init__()
        if keypoint_head is not None:
            c = predictor.config
            if keypoint_head.latent_dim != c.latent_dim or \
                    keypoint_head.grid[0] * keypoint_head.grid[1] != c.num_patches:
                raise ValueError(
                    f"WorldModel: keypoint head expects latents ({keypoint_head.grid[0]}x"
                    f"{keypoint_head.grid[1]}, {keypoint_head.latent_dim}) but the predictor "
                    f"works on ({c.num_patches}, {c.latent_dim})")
        self.predictor = predictor
        self.keypoint_head = keypoint_head
        self.encoder_name = encoder_name
        self.encoder_backend = encoder_backend
        self.preprocessing = (dict(preprocessing) if preprocessing is not None
                              else preprocessing_info(encoder_backend))

    @property
    def action_representation(self) -> str:
        """What the predictor's actions are (``actions.ACTION_REPRESENTATIONS``); planners
        compute candidate actions with ``actions.robot_hand_actions`` in it."""
        return self.predictor.config.action_representation

    @property
    def encoder_pool(self) -> int:
        """The encoder grid's pooling this model was trained with (1 for older checkpoints)."""
        return int(self.preprocessing.get("pool", 1))

    def build_encoder(self, weights: str | Path | None = None, **options) -> ImageEncoder:
        """The frozen encoder this model expects (its backend and pooling) from local
        ``weights``; ``options`` go to ``encoder.build_encoder`` (dtype, device). Raises
        ``ValueError`` when the weights give an encoder of another name."""
        encoder = build_encoder(self.encoder_backend, weights, pool=self.encoder_pool, **options)
        if encoder.name != self.encoder_name:
            raise ValueError(f"the model expects encoder {self.encoder_name!r}, but the "
                             f"encoder built is {encoder.name!r}")
        return encoder

    def config(self) -> dict:
        action_normalized = bool((self.predictor.action_mean != 0).any()
                                 or (self.predictor.action_std != 1).any())
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "predictor": self.predictor.config.to_dict(),
            "keypoint_head": None if self.keypoint_head is None else self.keypoint_head.config(),
            "encoder": {"name": self.encoder_name, "backend": self.encoder_backend,
                        "preprocessing": self.preprocessing},
            "action_normalization": {
                "enabled": action_normalized,
                "tensors": ["predictor.action_mean", "predictor.action_std"],
            },
        }

    def save(self, directory: str | Path) -> Path:
        """Write ``model.safetensors`` then ``config.json`` into ``directory`` (created if
        needed), each via a temporary file renamed into place."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_tensors(directory / MODEL_FILE, self.state_dict(),
                     metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
        save_json(directory / CONFIG_FILE, self.config())
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu") -> WorldModel:
        directory = Path(directory)
        if not directory.is_dir():
            raise CheckpointError(f"{directory}: world model directory not found")
        config_path = directory / CONFIG_FILE
        config = load_json(config_path)
        fmt = require(config, "format", str, config_path)
        version = require(config, "format_version", int, config_path)
        if fmt != FORMAT or version != FORMAT_VERSION:
            raise CheckpointError(f"{config_path}: field 'format'/'format_version' is "
                                  f"{fmt!r} v{version}, expected {FORMAT!r} v{FORMAT_VERSION}")
        try:
            predictor_config = PredictorConfig.from_dict(
                require(config, "predictor", dict, config_path))
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{config_path}: field 'predictor': {err}") from err
        head_config = require(config, "keypoint_head", (dict, type(None)), config_path)
        encoder = require(config, "encoder", dict, config_path)
        encoder_source = f"{config_path} field 'encoder'"
        name = require(encoder, "name", str, encoder_source)
        backend = require(encoder, "backend", str, encoder_source)
        preprocessing = require(encoder, "preprocessing", dict, encoder_source)
        head = None
        if head_config is not None:
            try:
                head = KeypointHead(**head_config)
            except (TypeError, ValueError) as err:
                raise CheckpointError(f"{config_path}: field 'keypoint_head': {err}") from err
        model = cls(CDiTPredictor(predictor_config), head, name, backend, preprocessing)
        model_path = directory / MODEL_FILE
        load_state_into(model, load_tensors(model_path), model_path)
        return model.to(device).eval()


def build_tiny_world_model(seed: int = 0, encoder_dim: int = TINY_ENCODER_DIM,
                           with_keypoint_head: bool = True, zero_init: bool = False,
                           **predictor_options) -> WorldModel:
    """Small randomly initialised (untrained) world model for tests and demos, matching
    ``build_encoder("tiny")`` (16x28 patches of ``encoder_dim``). Same seed, same weights;
    the global RNG is left untouched. Unless ``zero_init``, the adaLN-Zero layers get small
    random weights too, so predictions depend on latents and actions (a zero-initialised
    predictor outputs zeros). ``predictor_options`` are further ``PredictorConfig`` fields
    (action representation, DexAC switches)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        predictor = CDiTPredictor(PredictorConfig.from_preset(
            "tiny", latent_dim=encoder_dim, num_patches=448, **predictor_options))
        if not zero_init:
            for layer in predictor.zero_initialized_layers():
                nn.init.normal_(layer.weight, std=0.05)
        head = (KeypointHead(encoder_dim, dim=32, depth=1, heads=2) if with_keypoint_head
                else None)
    return WorldModel(predictor, head, encoder_name="tiny", encoder_backend="tiny").eval()
