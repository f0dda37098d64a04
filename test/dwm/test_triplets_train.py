"""Simulator triplets (dexwm-dwm-triplets) and LoRA training on them (dexwm-dwm-train)."""
import json
import os
import subprocess
import sys

import mujoco
import numpy as np
import pytest

from dexwm_ros.core.kinematics import HOME_JOINT_POSITIONS
from dexwm_ros.dwm import generate, metrics, train, triplets
from dexwm_ros.dwm.loading import load_pipeline
from dexwm_ros.dwm.robot_inputs import HandVideoRenderer
from dexwm_ros.sim.scene import robot_mjcf


def test_episode_triplet_is_aligned_frame_by_frame():
    rng = np.random.default_rng(0)
    steps = 7
    images = rng.integers(0, 256, (steps, 64, 112, 3), dtype=np.uint8)
    joints = np.repeat(np.array(HOME_JOINT_POSITIONS)[None], steps, axis=0)
    joints[:, 7:] += np.linspace(0, 1, steps)[:, None]
    with HandVideoRenderer(mujoco.MjModel.from_xml_string(robot_mjcf()), 64, 112) as renderer:
        videos = triplets.episode_triplet(images, joints, renderer, 5, 32, 48)
        index = triplets.frame_indices(steps, 5)
        assert index.tolist() == [0, 2, 3, 4, 6]
        hand = triplets.resize_frames(renderer.render(joints[index]), 32, 48)
    assert {v.shape for v in videos.values()} == {(5, 32, 48, 3)}
    assert np.array_equal(videos["hand"], hand)
    assert np.array_equal(videos["interaction"], triplets.resize_frames(images[index], 32, 48))
    assert all(np.array_equal(f, videos["interaction"][0]) for f in videos["static"])
    with pytest.raises(ValueError, match="hand renderer"):
        triplets.episode_triplet(images[:, :32], joints, renderer, 5, 32, 48)


ARGS = ["--generate", "2", "--mode", "hand_open_close", "--steps", "9", "--frames", "9",
        "--height", "32", "--width", "48"]


@pytest.fixture(scope="module")
def triplet_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("dwm") / "triplets"
    assert triplets.main(["--out", str(out), *ARGS]) == 0
    return out


def write_config(path, triplet_dir, run, steps, extra=""):
    path.write_text(f"base_model: tiny\ntriplets: {triplet_dir}\noutput: {run}\n"
                    "lora: {rank: 4, alpha: 4}\nlr: 1.0e-3\nwarmup_steps: 1\nbatch_size: 2\n"
                    f"steps: {steps}\ncheckpoint_every: 2\n{extra}")
    return path


def losses(run):
    return [float(row.split(",")[2])
            for row in (run / "metrics.csv").read_text().splitlines()[1:]]


@pytest.mark.slow
def test_triplet_command_and_resumable_lora_training(triplet_dir, tmp_path, capsys):
    out = triplet_dir
    infos = triplets.list_triplets(out)
    assert [i.stem for i in infos] == ["generated_000000", "generated_000001"]
    sample = triplets.read_triplet(infos[0])
    assert {v.shape for v in sample.values()} == {(9, 32, 48, 3)}
    assert "opens and closes" in infos[0].prompt
    assert triplets.main(["--out", str(out), *ARGS]) == 0
    assert "2 sample(s) already" in capsys.readouterr().out

    run = tmp_path / "run"
    config = write_config(tmp_path / "train.yaml", out, run, steps=2)
    assert train.main(["--config", str(config)]) == 0
    assert json.loads((run / "checkpoints" / "latest.json").read_text())["step"] == 2
    assert sorted(p.name for p in (run / "cache").iterdir()) == [
        "generated_000000.safetensors", "generated_000001.safetensors"]
    assert train.main(["--config", str(config), "--set", "steps=3"]) == 0  # resumes at 2
    rows = (run / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows] == ["step", "1", "2", "3"]

    # The resumed run equals an uninterrupted one, and one with gradient accumulation and
    # gradient checkpointing.
    config = write_config(tmp_path / "straight.yaml", out, tmp_path / "straight", steps=3)
    assert train.main(["--config", str(config)]) == 0
    assert losses(tmp_path / "straight") == losses(run)
    accumulated = write_config(tmp_path / "micro.yaml", out, tmp_path / "micro", steps=3,
                               extra="micro_batch_size: 1\ngradient_checkpointing: true\n")
    assert train.main(["--config", str(accumulated)]) == 0
    np.testing.assert_allclose(losses(tmp_path / "micro"), losses(run), rtol=1e-5)

    # Evaluation: generate for every triplet, then the metrics against the interaction videos.
    evaluation = tmp_path / "eval"
    assert generate.main(["--base", str(run / "tiny_base"), "--weights", str(run / "dwm"),
                          "--triplets", str(out), "--out", str(evaluation), "--seeds", "2",
                          "--steps", "2"]) == 0
    assert sorted(p.name for p in (evaluation / "seed_1").iterdir()) == [
        "generated_000000.mp4", "generated_000001.mp4"]
    assert metrics.main(["--generated", str(evaluation / "seed_0"), "--reference", str(out),
                         "--out", str(tmp_path / "metrics.json")]) == 0
    scores = json.loads((tmp_path / "metrics.json").read_text())
    assert set(scores["videos"]) == {"generated_000000", "generated_000001"}
    assert 0 < scores["mean"]["psnr"] < 100  # an untrained tiny model: far from the truth
    with pytest.raises(ValueError, match="other settings"):
        train.main(["--config", str(config), "--set", "lr=0.5"])


@pytest.mark.slow
def test_training_runs_data_parallel_under_torchrun(triplet_dir, tmp_path):
    config = write_config(tmp_path / "train.yaml", triplet_dir, tmp_path / "run", steps=2)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", "-m", "dexwm_ros.dwm.train", "--config", str(config)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows] == ["step", "1", "2"]  # written once, by rank 0
    single = write_config(tmp_path / "single.yaml", triplet_dir, tmp_path / "single", steps=2)
    assert train.main(["--config", str(single)]) == 0
    # 2 processes x 1 sample == 1 process x 2 samples (Adam's first step, g / |g|, turns the
    # rounding of the all-reduced gradients into ~1e-4 relative differences).
    np.testing.assert_allclose(losses(tmp_path / "run"), losses(tmp_path / "single"), rtol=1e-3)
    pipeline = load_pipeline(tmp_path / "run" / "tiny_base", dwm_weights=tmp_path / "run" / "dwm")
    assert pipeline.transformer.config.in_channels == 13
