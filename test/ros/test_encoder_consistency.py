"""The world model and camera_encoder agree on the encoder: dexwm-launch takes the backend from
the checkpoint unless told otherwise, and a goal encoded by another encoder fails at once with
one message naming both."""
import json

import numpy as np
import pytest
from rclpy.action import ActionClient
from ros_testing import spin_until

from dexwm_ros.action import PlanToGoal
from dexwm_ros.core.world_model import build_tiny_world_model
from dexwm_ros.nodes.conversions import rgb_to_image
from dexwm_ros.nodes.graph import GRAPHS
from dexwm_ros.nodes.launcher import encoder_from_checkpoint, start, stop
from dexwm_ros.share import share_path

CHECKPOINT_ENCODER = {"name": "dinov2_vitl14_reg", "backend": "dinov2"}


@pytest.fixture(scope="module")
def dinov2_checkpoint(tmp_path_factory):
    """A tiny checkpoint whose config.json says it was trained on DINOv2-L latents."""
    path = build_tiny_world_model(seed=0).save(tmp_path_factory.mktemp("model") / "tiny")
    config = json.loads((path / "config.json").read_text())
    config["encoder"].update(CHECKPOINT_ENCODER)
    (path / "config.json").write_text(json.dumps(config))
    return path


def test_launcher_takes_the_encoder_backend_from_the_checkpoint(dinov2_checkpoint, tmp_path):
    config = share_path("config", "dexwm.yaml")
    overrides = {"world_model_server": [f"model_path:={dinov2_checkpoint}"]}
    assert encoder_from_checkpoint(GRAPHS["grasp"]["nodes"], config, overrides) == "dinov2"
    assert overrides["camera_encoder"] == ["backend:=dinov2", "pool:=1"]

    chosen = {"world_model_server": [f"model_path:={dinov2_checkpoint}"],
              "camera_encoder": ["backend:=tiny"]}
    assert encoder_from_checkpoint(GRAPHS["grasp"]["nodes"], config, chosen) is None
    assert chosen["camera_encoder"] == ["backend:=tiny"]  # the user's choice stays

    params = tmp_path / "params.yaml"  # the checkpoint named in the parameter file
    params.write_text(f"world_model_server:\n  ros__parameters:\n"
                      f"    model_path: {dinov2_checkpoint}\n")
    from_file: dict = {}
    assert encoder_from_checkpoint(GRAPHS["planning"]["nodes"], params, from_file) == "dinov2"
    assert from_file == {"camera_encoder": ["backend:=dinov2", "pool:=1"]}

    pooled = tmp_path / "pooled"  # a pooled grid travels with the backend
    build_tiny_world_model(seed=0).save(pooled)
    pooled_config = json.loads((pooled / "config.json").read_text())
    pooled_config["encoder"]["preprocessing"]["pool"] = 4
    (pooled / "config.json").write_text(json.dumps(pooled_config))
    with_pool = {"world_model_server": [f"model_path:={pooled}"]}
    assert encoder_from_checkpoint(GRAPHS["grasp"]["nodes"], config, with_pool) == "tiny"
    assert with_pool["camera_encoder"] == ["backend:=tiny", "pool:=4"]

    assert encoder_from_checkpoint(GRAPHS["sim"]["nodes"], config, {}) is None
    missing = {"world_model_server": [f"model_path:={tmp_path / 'none'}"]}
    assert encoder_from_checkpoint(GRAPHS["grasp"]["nodes"], config, missing) is None


@pytest.mark.ros
def test_goal_from_another_encoder_fails_at_once_naming_both(dinov2_checkpoint, ros_node):
    config = share_path("config", "dexwm.yaml")
    extra = {"camera_encoder": ["backend:=tiny"],  # not the checkpoint's encoder
             "world_model_server": [f"model_path:={dinov2_checkpoint}"],
             "cem_planner": ["num_samples:=16", "num_elites:=4", "iterations:=2",
                             "service_timeout:=60.0"]}
    processes = {name: start(name, config, extra[name]) for name in extra}
    try:
        client = ActionClient(ros_node, PlanToGoal, "plan_to_goal")

        def up():
            dead = [n for n, p in processes.items() if p.poll() is not None]
            assert not dead, f"{dead} exited during start-up (output above)"
            return client.server_is_ready()

        assert spin_until(ros_node, up, 180), "the planner did not come up"
        rgb = np.random.default_rng(0).integers(0, 256, (64, 112, 3), dtype=np.uint8)
        feedback = []
        sent = client.send_goal_async(
            PlanToGoal.Goal(task=PlanToGoal.Goal.TASK_REACH, goal_image=rgb_to_image(rgb),
                            max_mpc_steps=5),
            feedback_callback=lambda m: feedback.append(m.feedback))
        assert spin_until(ros_node, sent.done, 30) and sent.result().accepted
        result = sent.result().get_result_async()
        assert spin_until(ros_node, result.done, 120), "no result"
        outcome = result.result().result
        assert outcome.error_code == PlanToGoal.Result.ERROR_INVALID_GOAL, outcome.error_msg
        assert "'tiny'" in outcome.error_msg and "'dinov2_vitl14_reg'" in outcome.error_msg
        assert feedback == []  # rejected before any planning
        client.destroy()
    finally:
        stop(processes)
