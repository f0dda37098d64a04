"""Rigid-body (DexAC) actions from EgoDex, DROID and simulator clips; a DexAC training run
stores its per-dimension statistics and options with the exported model; the ablation's
action-group bookkeeping."""
from __future__ import annotations

import pytest
import torch

from dexwm_ros.core.actions import RIGID_ACTION_DIM, RIGID_CAMERA, RIGID_LEFT_WRIST
from dexwm_ros.core.world_model import WorldModel
from training.ablation_dexac import (
    GROUPS,
    dominant_groups,
    markdown_table,
    paired_difference,
    summarize,
)
from training.config import config_from_dict
from training.datasets import ClipDataset, ClipDatasetConfig, DatasetSpec
from training.trainer import Trainer

DEXAC = {"action_tokenizer": True, "local_refinement": True, "global_modulation": True,
         "action_token_dim": 16, "action_window": 2}


@pytest.mark.parametrize("kind", ["egodex", "droid", "sim"])
def test_rigid_actions_from_every_source(kind, egodex_root, droid_root, sim_root):
    root = {"egodex": egodex_root, "droid": droid_root, "sim": sim_root}[kind][0]
    spec = DatasetSpec(kind=kind, root=str(root),
                       intrinsics=[100.0, 100.0, 64.0, 36.0] if kind == "droid" else None)
    config = ClipDatasetConfig(action_representation="rigid_body")
    dataset = ClipDataset([spec], config, frames=False)
    actions = dataset[0]["actions"]
    assert actions.shape == (8, RIGID_ACTION_DIM)
    assert torch.isfinite(actions).all()
    if kind != "egodex":  # one-handed: the left hand's dimensions are zero
        assert actions[:, RIGID_LEFT_WRIST].abs().max() == 0
    assert actions[:, 24:48].abs().max() > 0  # the right hand moves
    rotation = actions[:, RIGID_CAMERA][:, 3:]
    assert rotation.abs().max() > 0.5  # a 6D rotation, not zeros
    with pytest.raises(ValueError, match="unknown action representation"):
        ClipDataset([spec], ClipDatasetConfig(action_representation="euler"),
                    frames=False)[0]


def test_dexac_run_records_options_and_statistics(sim_root, tmp_path):
    config = config_from_dict({
        "mode": "pretrain", "output_dir": str(tmp_path / "run"), "precision": "fp32",
        "data": {"datasets": [{"kind": "sim", "root": str(sim_root[0])}], "augment": False,
                 "num_context": 2, "action_representation": "rigid_body"},
        "encoder": {"backend": "tiny"},
        "model": {"preset": "tiny", "keypoint_head": {"dim": 32, "depth": 1, "heads": 2},
                  "action_conditioning": DEXAC},
        "optim": {"batch_size": 2, "max_steps": 2},
        "loss": {"hc_slots": "last"}, "progress": False,
    })
    trainer = Trainer(config)
    trainer.fit()
    mean, std = trainer.action_statistics()
    model = WorldModel.load(tmp_path / "run" / "model")
    assert model.action_representation == "rigid_body"
    assert {k: getattr(model.predictor.config, k) for k in DEXAC} == DEXAC
    torch.testing.assert_close(model.predictor.action_mean, mean)
    torch.testing.assert_close(model.predictor.action_std, std)
    assert (std > 1e-3).sum() > 10  # the moving dimensions got their own scale
    config.model.action_normalization = False
    config.output_dir = str(tmp_path / "plain")
    plain = Trainer(config).objective.predictor
    assert (plain.action_mean == 0).all() and (plain.action_std == 1).all()
    config.model.init_from = str(tmp_path / "run" / "model")
    config.data.action_representation = "keypoint_delta"
    with pytest.raises(ValueError, match="rigid_body actions"):
        Trainer(config)


def test_dominant_groups_and_summary():
    mean, std = torch.zeros(57), torch.full((57,), 1e-3)
    std[24:33] = 1.0  # right wrist varies
    std[33:48] = 0.1  # right fingers vary, on a smaller scale
    rigid = torch.zeros(2, 3, 57)
    rigid[0, :, 24:33] = 0.5  # wrist-dominant in normalised units
    rigid[1, :, 33:48] = 0.2  # small finger motion, large after normalisation
    rigid[1, 2, 24:33] = 10.0  # a late wrist jerk takes over only at the last step
    groups = dominant_groups(rigid, mean, std)
    wrist, finger = GROUPS.index("wrist"), GROUPS.index("finger")
    assert groups.tolist() == [[wrist] * 3, [finger, finger, wrist]]
    metrics = {"l2": torch.tensor([[1.0] * 20, [3.0] * 20], dtype=torch.float64),
               "visible": torch.full((2, 20), 4.0, dtype=torch.float64),
               "correct@10": torch.tensor([[4.0] * 20, [0.0] * 20], dtype=torch.float64),
               "correct@20": torch.full((2, 20), 2.0, dtype=torch.float64),
               "ceiling@10": torch.full((2, 20), 3.0, dtype=torch.float64),
               "ceiling@20": torch.full((2, 20), 4.0, dtype=torch.float64),
               "group": torch.tensor([[wrist] * 20, [finger] * 20])}
    summary = summarize(metrics, hz=5.0)
    assert summary["horizons"]["1s"]["overall"] == {"rollouts": 2, "latent_l2": 2.0,
                                                     "pck@10": 0.5, "pck@20": 0.5}
    assert summary["horizons"]["4s"]["finger"]["pck@10"] == 0.0
    assert summary["horizons"]["4s"]["head_ceiling"] == {"pck@10": 0.75, "pck@20": 1.0}
    assert summary["horizons"]["4s"]["head"] == {"rollouts": 0, "latent_l2": None,
                                                  "pck@10": None, "pck@20": None}
    worse = {**metrics, "l2": metrics["l2"] + torch.tensor([[0.5], [1.5]], dtype=torch.float64)}
    paired = paired_difference(worse, metrics, hz=5.0)["4s"]
    assert paired["delta_latent_l2"] == pytest.approx(1.0)
    assert paired["standard_error"] == pytest.approx(0.5)
    table = markdown_table({"labels": {}, "arms": {"a": summary}})
    assert table.splitlines()[2].startswith("| a | 2.0000 | 50.0 | 50.0 |")
    with pytest.raises(ValueError, match="horizon 4 s"):
        summarize({k: v[:, :10] for k, v in metrics.items()}, hz=5.0)
