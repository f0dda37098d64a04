"""Run the reach / grasp / place scenes inside a RoboCasa kitchen (optional ``robocasa``).

The kitchen (floor, walls and fixtures of a RoboCasa layout and style drawn from the seed)
replaces the table arena's backdrop; the table, robot, head camera, objects, tasks and success
criteria stay the same as the robosuite backend. Written against RoboCasa's
``KitchenArena(layout_id, style_id, rng)`` (v0.2, the release for robosuite 1.5); building a
kitchen is not exercised in this repository's tests because RoboCasa and its kitchen assets
(about 5 GB) are not installed here. RoboCasa is not on the package index: it installs from its
GitHub repository, and its import checks exact versions (v0.2: mujoco 3.2.6, numpy 1.23), so it
needs an environment of its own.
"""
from __future__ import annotations

import numpy as np

from dexwm_ros.sim.scene import Scene, build_scene

INSTALL_HINT = (
    "the 'robocasa' backend needs RoboCasa and its kitchen assets, which are not on the package "
    "index: git clone --branch v0.2 https://github.com/robocasa/robocasa && cd robocasa && "
    "pip install -e . && python robocasa/scripts/download_kitchen_assets.py && "
    "python robocasa/scripts/setup_macros.py (RoboCasa checks mujoco==3.2.6 and numpy 1.23.x "
    "at import, so install it in an environment of its own); or use backend='robosuite'"
)


def build_robocasa_scene(objects: tuple[str, ...] | None = None, seed: int = 0,
                         layout_id: int | None = None, style_id: int | None = None) -> Scene:
    """The task scene in a RoboCasa kitchen; raises ``RuntimeError`` if RoboCasa is missing."""
    try:
        from robocasa.models.scenes import KitchenArena
    except ImportError as exc:
        raise RuntimeError(INSTALL_HINT) from exc
    except AssertionError as exc:  # RoboCasa's import-time version checks
        raise RuntimeError(f"RoboCasa refused to import ({exc}); {INSTALL_HINT}") from exc
    rng = np.random.default_rng(seed)
    layout = int(rng.integers(10)) if layout_id is None else layout_id
    style = int(rng.integers(12)) if style_id is None else style_id
    arena = KitchenArena(layout_id=layout, style_id=style, rng=rng)
    fixtures = list(arena.fixtures.values())
    kwargs = {"backdrop": arena, "backdrop_models": fixtures}
    return build_scene(objects, **kwargs) if objects else build_scene(**kwargs)
