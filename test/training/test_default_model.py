"""The packaged default world model (models/default_world_model) and its recipe."""
import json

import torch

from dexwm_ros.core.world_model import CONFIG_FILE, MODEL_FILE, WorldModel
from dexwm_ros.share import world_model_path
from training.config import load_config
from training.train import main as train_main

RECIPE = "config/train_default.yaml"
FINETUNE = "config/finetune_default.yaml"
FINETUNE_DEPTH = "config/finetune_depth_default.yaml"
FINETUNE_HEAD = "config/finetune_head_default.yaml"


def test_committed_checkpoint_loads_and_matches_its_recipe():
    directory = world_model_path()
    assert (directory / MODEL_FILE).stat().st_size <= 25 * 2**20  # 25 MB budget (issue)
    model = WorldModel.load(directory)
    assert json.loads((directory / CONFIG_FILE).read_text()) == model.config()
    recipe = load_config(RECIPE)
    encoder = model.build_encoder()
    expected = f"{recipe.encoder.backend}_pool{recipe.encoder.pool}"
    assert encoder.name == model.encoder_name == expected
    predictor = model.predictor.config
    assert (predictor.preset, predictor.num_slots) == (recipe.model.preset, recipe.data.num_context)
    assert (predictor.num_patches, predictor.latent_dim) == (encoder.num_patches, encoder.dim)
    head = model.keypoint_head
    assert head.grid == encoder.grid and head.stride == recipe.model.keypoint_head["stride"]
    assert (model.predictor.action_std != 1).any()  # trained with action normalisation
    open_loop = json.loads((directory / "open_loop.json").read_text())
    one_second = open_loop["horizon_s"].index(1.0)  # the planner looks 0.6 s ahead
    for horizon in (one_second, -1):  # the target: below repeat-last at 4 s too
        assert open_loop["latent_l2"][horizon] < open_loop["baseline"]["latent_l2"][horizon]
        assert open_loop["depth_error_m"][horizon] < \
            open_loop["baseline"]["depth_error_m"][horizon]
    assert open_loop["horizon_s"][-1] == 4.0
    assert head.keypoint_depth  # the cost's depth term (recipe step 3)
    latents = encoder.encode(torch.zeros(2, 224, 392, 3, dtype=torch.uint8))
    with torch.inference_mode():
        predicted = model.predictor.score_candidates(latents, torch.zeros(1, 132),
                                                     torch.zeros(3, 3, 132))
    assert predicted.shape == (3, 3, 28, encoder.dim) and torch.isfinite(predicted).all()


def test_recipe_first_steps_run_on_a_few_frames(tmp_path):
    from dexwm_ros.sim.exploration import main as explore_main

    data = tmp_path / "data"
    assert explore_main(["--out", str(data), "--episodes", "1", "--steps", "12"]) == 0

    def train_step(config: str, output: str, *overrides: str) -> int:
        """Two steps of a recipe config on the few frames, written to ``tmp_path / output``."""
        settings = [f"data.datasets.0.root={data}", f"data.datasets.1.root={data}",
                    f"cache.directory={tmp_path / 'cache'}", f"output_dir={tmp_path / output}",
                    "optim.max_steps=2", "optim.batch_size=2", "progress=false", *overrides]
        return train_main(["--config", config,
                           *(arg for setting in settings for arg in ("--set", setting))])

    assert train_step(RECIPE, "run") == 0
    model = WorldModel.load(tmp_path / "run" / "model")
    assert model.encoder_name == "tiny_pool4" and model.keypoint_head.stride == 8
    finetune = load_config(FINETUNE)
    assert finetune.mode == "finetune"
    assert finetune.model.init_from == f"{load_config(RECIPE).output_dir}/model"
    assert train_step(FINETUNE, "finetune", f"model.init_from={tmp_path / 'run' / 'model'}") == 0
    tuned = WorldModel.load(tmp_path / "finetune" / "model")
    assert tuned.config()["predictor"] == model.config()["predictor"]
    depth = load_config(FINETUNE_DEPTH)
    assert depth.model.init_from == f"{finetune.output_dir}/model" and depth.loss.depth_weight > 0
    assert train_step(FINETUNE_DEPTH, "depth",
                      f"model.init_from={tmp_path / 'finetune' / 'model'}") == 0
    with_depth = WorldModel.load(tmp_path / "depth" / "model")
    assert with_depth.keypoint_head.keypoint_depth and not tuned.keypoint_head.keypoint_depth
    metrics = (tmp_path / "depth" / "metrics.csv").read_text().splitlines()
    assert metrics[0].split(",")[6] == "depth" and float(metrics[-1].split(",")[6]) > 0
    head = load_config(FINETUNE_HEAD)
    assert head.mode == "keypoint_head" and head.model.init_from == f"{depth.output_dir}/model"
    approach = tmp_path / "approach"
    assert explore_main(["--out", str(approach), "--episodes", "1", "--steps", "12",
                         "--mode", "object_approach"]) == 0
    assert train_step(FINETUNE_HEAD, "head", f"model.init_from={tmp_path / 'depth' / 'model'}",
                      f"data.datasets.1.root={approach}") == 0
    head_tuned = WorldModel.load(tmp_path / "head" / "model")
    for name, weight in head_tuned.predictor.state_dict().items():  # the predictor is frozen
        assert torch.equal(weight, with_depth.predictor.state_dict()[name]), name
    assert not torch.equal(head_tuned.keypoint_head.state_dict()["output.weight"],
                           with_depth.keypoint_head.state_dict()["output.weight"])
