"""Model-holding nodes fail at start with one clear line when their files are missing."""
import subprocess
import sys

import pytest

pytestmark = pytest.mark.ros


def start(node, *params):
    args = [sys.executable, "-m", f"dexwm_ros.nodes.{node}", "--ros-args"]
    for param in params:
        args += ["-p", param]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def test_world_model_server_with_missing_model(tmp_path):
    missing = tmp_path / "nowhere"
    result = start("world_model_server", f"model_path:={missing}")
    assert result.returncode == 1 and f"model_path '{missing}' does not exist" in result.stdout


def test_world_model_server_with_corrupt_checkpoint(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    result = start("world_model_server", f"model_path:={tmp_path}")
    assert result.returncode == 1
    assert "cannot start" in result.stdout and str(tmp_path) in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_camera_encoder_with_missing_weights(tmp_path):
    result = start("camera_encoder", "backend:=dinov2", f"weights:={tmp_path / 'none'}")
    assert result.returncode == 1
    assert "cannot start" in result.stdout and "none" in result.stdout
