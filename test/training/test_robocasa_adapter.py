"""The RoboCasa backend's errors when RoboCasa is missing or refuses its environment. Building a
kitchen needs RoboCasa and its assets, which are not installed here (see the README)."""
from __future__ import annotations

import importlib.util
import sys

import pytest

from dexwm_ros.sim.robocasa_adapter import INSTALL_HINT, build_robocasa_scene


def test_install_hint_names_the_repository_and_the_asset_script():
    assert "not on the package index" in INSTALL_HINT
    assert "git clone --branch v0.2 https://github.com/robocasa/robocasa" in INSTALL_HINT
    assert "pip install -e ." in INSTALL_HINT
    assert "python robocasa/scripts/download_kitchen_assets.py" in INSTALL_HINT
    assert "pip install robocasa" not in INSTALL_HINT


@pytest.mark.skipif(importlib.util.find_spec("robocasa") is not None,
                    reason="RoboCasa is installed")
def test_missing_robocasa_raises_the_install_hint():
    with pytest.raises(RuntimeError, match="download_kitchen_assets"):
        build_robocasa_scene(seed=0)


def test_robocasa_version_check_is_reported_with_the_hint(tmp_path, monkeypatch):
    package = tmp_path / "robocasa"
    package.mkdir()
    (package / "__init__.py").write_text(
        'assert False, "MuJoCo version must be 3.2.6. Please run pip install mujoco==3.2.6"\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "robocasa", raising=False)
    with pytest.raises(RuntimeError, match="refused to import.*mujoco==3.2.6.*git clone"):
        build_robocasa_scene(seed=0)
