"""dexwm-eval-sim: every policy end to end on short episodes, resuming, statistics."""
import json

import pytest

from training.eval_sim import POLICIES, EvalConfig, evaluate, main, wilson_interval


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


@pytest.mark.ros
def test_ros_mode_runs_episodes_through_the_graph(tmp_path):
    from training.eval_sim import evaluate_ros

    config = EvalConfig(num_samples=8, num_elites=2, iterations=1, context_frames=2,
                        max_seconds=0.6)
    summary = evaluate_ros(["reach"], [0], config, tmp_path / "out", progress=False)
    record = json.loads((tmp_path / "out" / "reach" / "wm-ros" / "seed_0000.json").read_text())
    assert record["final"]["error_code"] == 0 and record["distance"]
    assert summary["reach"]["wm-ros"]["trials"] == 1
    assert 1 <= len(record["seconds_per_step"]) <= 3  # one per MPC step
