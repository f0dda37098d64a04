"""dexwm-eval-sim: every policy end to end on short episodes, resuming, statistics."""
import json

import pytest

from training.eval_sim import (
    POLICIES,
    EvalConfig,
    evaluate,
    main,
    make_policy,
    parse_overrides,
    wilson_interval,
)


def test_wilson_interval_known_values():
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 50)[0] == 0.0 and wilson_interval(0, 50)[1] == pytest.approx(
        0.0713, abs=1e-4)
    assert wilson_interval(50, 50)[1] == 1.0


def test_every_policy_runs_and_a_rerun_resumes(tmp_path):
    config = EvalConfig(num_samples=8, num_elites=2, iterations=1, context_frames=2,
                        max_seconds=3.4,
                        video_seeds=(0,))
    summary = evaluate(["reach"], list(POLICIES), [0], config, tmp_path / "out",
                       progress=False)
    for policy in POLICIES:
        record = json.loads((tmp_path / "out" / "reach" / policy / "seed_0000.json").read_text())
        assert record["policy"] == policy and record["steps"] == len(record["distance"])
        assert summary["reach"][policy]["trials"] == 1
    assert summary["reach"]["scripted"]["success"] == 1  # solvable by its goal motion
    assert summary["reach"]["hold"]["success"] == 0
    wm = json.loads((tmp_path / "out" / "reach" / "wm" / "seed_0000.json").read_text())
    assert len(wm["cost"]) == wm["steps"] and all(s > 0 for s in wm["seconds_per_step"])
    assert (tmp_path / "out" / "reach" / "wm" / "seed_0000.mp4").stat().st_size > 0
    for name in ("summary.md", "summary.json", "success.png", "distance.png"):
        assert (tmp_path / "out" / name).is_file()

    marker = tmp_path / "out" / "reach" / "hold" / "seed_0000.json"
    before = marker.stat().st_mtime_ns
    evaluate(["reach"], ["hold"], [0], config, tmp_path / "out", progress=False)
    assert marker.stat().st_mtime_ns == before  # finished episodes are skipped


def test_cli_rejects_unknown_policies(capsys):
    with pytest.raises(SystemExit):
        main(["--policy", "teleop"])
    assert "unknown policies" in capsys.readouterr().err


def test_overrides_reach_every_planner_and_cost_setting():
    assert parse_overrides(["keypoint_weight=0.02", "keypoint_maps=6,7",
                            "workspace_low=-0.3,-0.5,0.8", "execute=mean", "iterations=3"]) == {
        "keypoint_weight": 0.02, "keypoint_maps": (6, 7), "workspace_low": (-0.3, -0.5, 0.8),
        "execute": "mean", "iterations": 3}
    config = EvalConfig(num_samples=8, num_elites=2, iterations=1,
                        cem_overrides={"execute": "mean", "arm_sigma": 0.15},
                        cost_overrides={"keypoint_weight": 0.02,
                                        "workspace_low": (-0.3, -0.5, 0.8)})
    wm = make_policy("wm", "place", config)
    assert wm.wm_cost.weights is wm.session.weights
    assert wm.wm_cost.weights.keypoint_weight == 0.02
    assert wm.session.weights.workspace_low == pytest.approx((-0.3, -0.5, 0.8))
    cem = wm.session.planner.config
    assert (cem.execute, cem.arm_sigma, cem.num_samples) == ("mean", 0.15, 8)
    assert cem.hand_sigma == 0.01  # the task's own setting stays
    oracle = make_policy("oracle", "grasp", config)
    assert oracle.session.weights.orientation_weight == 0.1
    assert oracle.session.weights.keypoint_weight == 0.02


@pytest.mark.parametrize("flag, bad, message", [
    ("--cost", "keypoint_weight", "FIELD=VALUE"),
    ("--cost", "keypoint_weight=x", "keypoint_weight=x"),
    ("--cost", "mu=1", "unexpected keyword"),
    ("--cost", "keypoint_weight=-1", "CostWeights.keypoint_weight"),
    ("--cem", "execute=median", "CEMConfig.execute"),
    ("--cem", "num_elites=4096", "CEMConfig.num_elites")])
def test_cli_rejects_bad_overrides(capsys, flag, bad, message):
    with pytest.raises(SystemExit):
        main([flag, bad])
    assert message in capsys.readouterr().err


@pytest.mark.ros
def test_ros_mode_runs_episodes_through_the_graph(tmp_path):
    from training.eval_sim import evaluate_ros

    # cost overrides go to the node that holds each weight, lists as ROS arrays
    config = EvalConfig(num_samples=8, num_elites=2, iterations=1, context_frames=2,
                        max_seconds=0.6, bf16=True, cem_overrides={"execute": "mean"},
                        cost_overrides={"keypoint_weight": 0.02,
                                        "workspace_low": (-0.25, -0.5, 0.9)})
    summary = evaluate_ros(["reach"], [0], config, tmp_path / "out", progress=False)
    record = json.loads((tmp_path / "out" / "reach" / "wm-ros" / "seed_0000.json").read_text())
    assert record["final"]["error_code"] == 0 and record["distance"]
    assert summary["reach"]["wm-ros"]["trials"] == 1
    assert 1 <= len(record["seconds_per_step"]) <= 3  # one per MPC step
