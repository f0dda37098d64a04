"""Simulator triplets (dexwm-dwm-triplets) and LoRA training on them (dexwm-dwm-train)."""
import json

import mujoco
import numpy as np
import pytest

from dexwm_ros.core.kinematics import HOME_JOINT_POSITIONS
from dexwm_ros.dwm import train, triplets
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


@pytest.mark.slow
def test_triplet_command_and_resumable_lora_training(tmp_path, capsys):
    out = tmp_path / "triplets"
    args = ["--out", str(out), "--generate", "2", "--mode", "hand_open_close", "--steps", "9",
            "--frames", "9", "--height", "32", "--width", "48"]
    assert triplets.main(args) == 0
    infos = triplets.list_triplets(out)
    assert [i.stem for i in infos] == ["generated_000000", "generated_000001"]
    sample = triplets.read_triplet(infos[0])
    assert {v.shape for v in sample.values()} == {(9, 32, 48, 3)}
    assert "opens and closes" in infos[0].prompt
    assert triplets.main(args) == 0
    assert "2 sample(s) already" in capsys.readouterr().out

    config = tmp_path / "train.yaml"
    run = tmp_path / "run"
    config.write_text(f"base_model: tiny\ntriplets: {out}\noutput: {run}\n"
                      "lora: {rank: 4, alpha: 4}\nlr: 1.0e-3\nwarmup_steps: 1\nbatch_size: 2\n"
                      "steps: 2\ncheckpoint_every: 2\n")
    assert train.main(["--config", str(config)]) == 0
    assert json.loads((run / "checkpoints" / "latest.json").read_text())["step"] == 2
    assert sorted(p.name for p in (run / "cache").iterdir()) == [
        "generated_000000.safetensors", "generated_000001.safetensors"]
    assert train.main(["--config", str(config), "--set", "steps=3"]) == 0  # resumes at 2
    rows = (run / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows] == ["step", "1", "2", "3"]

    # The resumed run equals an uninterrupted one.
    config.write_text(config.read_text().replace(str(run), str(tmp_path / "straight"))
                      .replace("steps: 2", "steps: 3"))
    assert train.main(["--config", str(config)]) == 0
    straight = (tmp_path / "straight" / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[2] for r in straight] == [r.split(",")[2] for r in rows]

    pipeline = load_pipeline(run / "tiny_base", dwm_weights=run / "dwm")
    scene = pipeline.prepare_scene(sample["static"], infos[0].prompt)
    video = pipeline.imagine(scene, sample["hand"], steps=2)
    assert video.shape == (1, 9, 32, 48, 3)
    with pytest.raises(ValueError, match="other settings"):
        train.main(["--config", str(config), "--set", "lr=0.5"])
