"""Fixtures: tiny EgoDex / DROID / simulator datasets written by the tests in the real formats."""
from __future__ import annotations

import pytest
from training_fixtures import write_droid, write_egodex, write_sim


@pytest.fixture(scope="session")
def egodex_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("egodex")
    truth = write_egodex(root)
    return root, truth


@pytest.fixture(scope="session")
def droid_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("droid")
    truth = write_droid(root)
    return root, truth


@pytest.fixture(scope="session")
def sim_root(tmp_path_factory):
    """Two exploration episodes at 10 Hz, 50 steps each (long enough for a 4 s rollout)."""
    root = tmp_path_factory.mktemp("sim")
    truths = [write_sim(root / f"episode_{i}.hdf5", num=50, seed=i) for i in range(2)]
    return root, truths
