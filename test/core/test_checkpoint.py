import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from dexwm_ros.core.checkpoint import CheckpointError
from dexwm_ros.core.encoder import TINY_ENCODER_DIM
from dexwm_ros.core.world_model import (
    CONFIG_FILE,
    MODEL_FILE,
    WorldModel,
    build_tiny_world_model,
)


@pytest.fixture
def saved(tmp_path):
    model = build_tiny_world_model(seed=3)
    model.predictor.set_action_normalization(torch.linspace(-1, 1, 132), torch.full((132,), 2.0))
    model.save(tmp_path / "wm")
    return model, tmp_path / "wm"


def test_tiny_world_model_is_reproducible_and_matches_tiny_encoder():
    a, b = build_tiny_world_model(seed=1), build_tiny_world_model(seed=1)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    other = build_tiny_world_model(seed=2)
    assert not torch.equal(a.predictor.pos_embed, other.predictor.pos_embed)
    cfg = a.predictor.config
    assert (cfg.latent_dim, cfg.num_patches) == (TINY_ENCODER_DIM, 448)
    assert a.keypoint_head.grid == (16, 28) and a.encoder_backend == "tiny"


def test_round_trip(saved):
    model, directory = saved
    assert sorted(p.name for p in directory.iterdir()) == [CONFIG_FILE, MODEL_FILE]  # no tmp
    loaded = WorldModel.load(directory)
    for (name, x), (_, y) in zip(model.state_dict().items(), loaded.state_dict().items(),
                                 strict=True):
        assert torch.equal(x, y), name
    config = json.loads((directory / CONFIG_FILE).read_text())
    assert config["format_version"] == 1 and config["action_normalization"]["enabled"]
    assert config["predictor"]["preset"] == "tiny"
    assert config["encoder"]["preprocessing"]["image_size"] == [224, 392]
    latents, actions = torch.randn(1, 3, 448, TINY_ENCODER_DIM), torch.randn(1, 3, 132)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.predictor(latents, actions),
                                   model.predictor(latents, actions))
        torch.testing.assert_close(loaded.keypoint_head(latents[:, 0]),
                                   model.keypoint_head(latents[:, 0]))


def test_round_trip_without_keypoint_head(tmp_path):
    build_tiny_world_model(with_keypoint_head=False).save(tmp_path)
    assert WorldModel.load(tmp_path).keypoint_head is None


def edit_config(directory, change):
    path = directory / CONFIG_FILE
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))


def test_missing_files(saved, tmp_path):
    _, directory = saved
    with pytest.raises(CheckpointError, match="not found"):
        WorldModel.load(tmp_path / "nowhere")
    (directory / MODEL_FILE).unlink()
    with pytest.raises(CheckpointError, match=f"{MODEL_FILE}: file not found"):
        WorldModel.load(directory)
    (directory / CONFIG_FILE).unlink()
    with pytest.raises(CheckpointError, match=f"{CONFIG_FILE}: file not found"):
        WorldModel.load(directory)


def test_corrupt_files(saved):
    _, directory = saved
    (directory / MODEL_FILE).write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match=f"{MODEL_FILE}: corrupt"):
        WorldModel.load(directory)
    (directory / CONFIG_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match=f"{CONFIG_FILE}: not valid JSON"):
        WorldModel.load(directory)


@pytest.mark.parametrize("field", ["predictor", "encoder", "keypoint_head", "format_version"])
def test_missing_config_field(saved, field):
    _, directory = saved
    edit_config(directory, lambda c: c.pop(field))
    with pytest.raises(CheckpointError, match=f"{CONFIG_FILE}.*missing field '{field}'"):
        WorldModel.load(directory)


def test_bad_config_values(saved):
    _, directory = saved
    edit_config(directory, lambda c: c["encoder"].pop("backend"))
    with pytest.raises(CheckpointError, match="field 'encoder'.*missing field 'backend'"):
        WorldModel.load(directory)
    edit_config(directory, lambda c: c.update(format_version=99))
    with pytest.raises(CheckpointError, match="format_version"):
        WorldModel.load(directory)


def test_missing_and_unexpected_tensors(saved):
    _, directory = saved
    tensors = load_file(str(directory / MODEL_FILE))
    removed = tensors.pop("predictor.blocks.1.qkv.weight")
    save_file(tensors, str(directory / MODEL_FILE))
    with pytest.raises(CheckpointError,
                       match=f"{MODEL_FILE}: missing tensor 'predictor.blocks.1.qkv.weight'"):
        WorldModel.load(directory)
    tensors["predictor.blocks.1.qkv.weight"] = removed
    tensors["extra.weight"] = torch.zeros(1)
    save_file(tensors, str(directory / MODEL_FILE))
    with pytest.raises(CheckpointError, match="unexpected tensor 'extra.weight'"):
        WorldModel.load(directory)


def test_shape_mismatch_between_config_and_tensors(saved):
    _, directory = saved
    edit_config(directory, lambda c: c["predictor"].update(mlp_ratio=4.0))
    with pytest.raises(CheckpointError, match=f"{MODEL_FILE}: tensor '.*' has shape"):
        WorldModel.load(directory)


def test_invalid_predictor_config_is_named(saved):
    _, directory = saved
    edit_config(directory, lambda c: c["predictor"].update(heads=5))
    with pytest.raises(CheckpointError, match="field 'predictor'.*divisible"):
        WorldModel.load(directory)


def test_round_trip_keeps_the_keypoint_depth_output(tmp_path):
    model = build_tiny_world_model(seed=4)
    model.keypoint_head.add_depth_output()
    torch.nn.init.normal_(model.keypoint_head.depth_output.weight)
    model.save(tmp_path / "wm")
    loaded = WorldModel.load(tmp_path / "wm")
    assert loaded.keypoint_head.keypoint_depth
    torch.testing.assert_close(loaded.keypoint_head.depth_output.weight,
                               model.keypoint_head.depth_output.weight)
