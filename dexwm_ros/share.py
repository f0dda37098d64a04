"""Locate the package's shared files (config/, launch/, urdf/) in any installation."""
from __future__ import annotations

import os
import sys
from pathlib import Path


def share_dirs() -> list[Path]:
    """Candidate share directories, most specific first.

    ``$DEXWM_SHARE_DIR``; the source checkout; the ament share directory (colcon install);
    ``<sys.prefix>/share/dexwm_ros`` (pip ``data_files``).
    """
    dirs = []
    if os.environ.get("DEXWM_SHARE_DIR"):
        dirs.append(Path(os.environ["DEXWM_SHARE_DIR"]))
    dirs.append(Path(__file__).resolve().parents[1])
    try:
        from ament_index_python.packages import get_package_share_directory

        dirs.append(Path(get_package_share_directory("dexwm_ros")))
    except Exception:  # noqa: BLE001 - ament is optional; any failure means "not installed there"
        pass
    dirs.append(Path(sys.prefix) / "share" / "dexwm_ros")
    return dirs


#: Where the packaged default world model lives (``models/default_world_model``).
DEFAULT_WORLD_MODEL = ("models", "default_world_model")


def world_model_path(path: str | Path | None = None) -> Path:
    """``path``, or the packaged default world model when ``path`` is empty or None."""
    return Path(path) if path else share_path(*DEFAULT_WORLD_MODEL)


def share_path(*parts: str) -> Path:
    """Path of a shared file, e.g. ``share_path("config", "dexwm.yaml")``."""
    candidates = [d.joinpath(*parts) for d in share_dirs()]
    for path in candidates:
        if path.exists():
            return path
    raise FileNotFoundError(f"{'/'.join(parts)} not found; looked in "
                            f"{', '.join(str(p) for p in candidates)} (set DEXWM_SHARE_DIR)")
