"""Sharded latent-cache builds: two gloo processes build the same cache as one, a killed build
resumes without redoing finished shards, a waiting process fails clearly instead of hanging,
int8 storage stays within its quantisation bound, and the on-the-fly path gives the cached
path's loss on the same batch."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch
import yaml
from test_training import REPO, tiny_config
from torch.utils.data import default_collate
from training_fixtures import write_sim

from dexwm_ros.core.encoder import build_encoder
from training.config import config_from_dict
from training.datasets import ClipDataset, DatasetSpec
from training.latent_cache import LatentCache, build_latent_cache, bytes_per_frame, plan_shards
from training.trainer import StepBatches, Trainer

LENGTHS = (24, 30, 18, 36)  # frames of the four episodes, one shard each


@pytest.fixture(scope="module")
def episodes_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache_episodes")
    for i, num in enumerate(LENGTHS):
        write_sim(root / f"episode_{i}.hdf5", num=num, seed=10 + i)
    return root


def build_cli(config: dict, path, nproc: int = 1, wait: bool = True) -> subprocess.Popen:
    """``dexwm-train --cache-only`` in 1 process or under ``torchrun`` (gloo)."""
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    launcher = ([] if nproc == 1 else
                ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"])
    command = [sys.executable, *launcher, "-m", "training.train", "--config", str(path),
               "--cache-only"]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    if wait:
        output, _ = process.communicate(timeout=300)
        if process.returncode != 0:
            pytest.fail(f"cache build exited with {process.returncode}:\n{output[-4000:]}")
    return process


def cache_config(tmp_path, root, cache) -> dict:
    return tiny_config(tmp_path / "run", root, cache, cache__episodes_per_shard=1)


@pytest.fixture(scope="module")
def reference_cache(tmp_path_factory, episodes_root):
    """The cache as one process builds it (``dexwm-train --cache-only``)."""
    tmp = tmp_path_factory.mktemp("reference")
    build_cli(cache_config(tmp, episodes_root, tmp / "cache"), tmp / "config.yaml")
    return tmp / "cache"


def assert_same_cache(built, reference):
    assert json.loads((built / "index.json").read_text()) == json.loads(
        (reference / "index.json").read_text())
    shards = sorted(p.name for p in reference.glob("shard_*.safetensors"))
    assert len(shards) == len(LENGTHS)
    assert sorted(p.name for p in built.glob("shard_*.safetensors")) == shards
    for name in shards:
        assert (built / name).read_bytes() == (reference / name).read_bytes(), name


def test_two_processes_build_the_same_cache_as_one(episodes_root, reference_cache, tmp_path):
    cache = tmp_path / "cache"
    build_cli(cache_config(tmp_path, episodes_root, cache), tmp_path / "config.yaml", nproc=2)
    assert_same_cache(cache, reference_cache)
    builders = {json.loads(p.read_text())["rank"] for p in cache.glob("shard_*.json")}
    assert builders == {0, 1}


def test_killed_build_resumes_without_redoing_finished_shards(episodes_root, reference_cache,
                                                             tmp_path):
    cache = tmp_path / "cache"
    config = cache_config(tmp_path, episodes_root, cache)
    process = build_cli(config, tmp_path / "config.yaml", wait=False)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if any(cache.glob("shard_*.json")):
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the build finished before it could be killed"
    assert not (cache / "index.json").exists()
    done = {p.stem: p.stat() for p in cache.glob("shard_*.safetensors")
            if (cache / f"{p.stem}.json").exists()}
    assert 1 <= len(done) < len(LENGTHS)

    build_cli(config, tmp_path / "config.yaml")
    for stem, before in done.items():
        after = (cache / f"{stem}.safetensors").stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), stem
    assert_same_cache(cache, reference_cache)
    assert not list(cache.glob(".*tmp-*")), "leftovers of the killed write remain"


def entries(root):
    return ClipDataset([DatasetSpec(kind="sim", root=str(root))]).unique_entries


def test_shards_do_not_depend_on_the_process_count_and_balance_frames():
    fake = [SimpleNamespace(episode=SimpleNamespace(name=f"e{i}"), num_grid=n)
            for i, n in enumerate([50, 10, 10, 10, 40, 30, 5, 5])]
    fake.append(fake[1])  # a duplicate is planned once
    one = plan_shards(fake, {"e7"}, 3, 2, world=1)
    three = plan_shards(fake, {"e7"}, 3, 2, world=3)
    layout = [(s.number, [e.episode.name for e in s.entries]) for s in one]
    assert layout == [(s.number, [e.episode.name for e in s.entries]) for s in three]
    assert layout == [(3, ["e0", "e1"]), (4, ["e2", "e3"]), (5, ["e4", "e5"]), (6, ["e6"])]
    loads = [sum(s.frames for s in three if s.rank == r) for r in range(3)]
    assert sorted(loads) == [25, 60, 70]  # largest first, each to the least-loaded process
    with pytest.raises(ValueError, match="episodes_per_shard"):
        plan_shards(fake, set(), 0, 0, world=1)


def test_waiting_process_fails_clearly_when_another_never_finishes(episodes_root, tmp_path):
    encoder = build_encoder("tiny")
    with pytest.raises(TimeoutError, match=r"no shard finished .* from process\(es\) \[1\]"):
        build_latent_cache(entries(episodes_root)[:2], encoder, tmp_path, episodes_per_shard=1,
                           rank=0, world=2, stall_timeout_s=0.5, poll_s=0.05, progress=False)
    assert len(list(tmp_path.glob("shard_*.json"))) == 1  # its own shard is kept for a resume
    assert not (tmp_path / "index.json").exists()


def test_int8_storage_is_within_its_bound_and_about_half_of_bfloat16(episodes_root, tmp_path):
    encoder = build_encoder("tiny")
    some = entries(episodes_root)[:1]
    exact = build_latent_cache(some, encoder, tmp_path / "f32", storage="float32",
                               progress=False)
    compact = build_latent_cache(some, encoder, tmp_path / "int8", storage="int8",
                                 progress=False)
    name, step, num = some[0].episode.name, some[0].step, some[0].num_grid
    grid = list(range(num))
    reference = exact.latents(name, step, grid)
    restored = compact.latents(name, step, grid)
    assert restored.dtype == torch.float32
    scales = reference.abs().amax(dim=-1, keepdim=True) / 127
    assert ((restored - reference).abs() <= scales / 2 + 1e-6).all()
    assert not torch.equal(restored, reference)
    sizes = {d: (tmp_path / d / "shard_00000.safetensors").stat().st_size for d in ("f32", "int8")}
    per_frame = bytes_per_frame(encoder.num_patches, encoder.dim, "int8")
    assert per_frame == encoder.num_patches * (encoder.dim + 4)
    assert sizes["int8"] == pytest.approx(num * per_frame, rel=0.02)
    assert sizes["f32"] == pytest.approx(num * encoder.num_patches * encoder.dim * 4, rel=0.02)


def test_settings_are_checked_and_stale_shards_reencoded(episodes_root, tmp_path):
    encoder = build_encoder("tiny")
    some = entries(episodes_root)[:2]
    build_latent_cache(some, encoder, tmp_path, storage="float32", episodes_per_shard=1,
                       progress=False)
    with pytest.raises(ValueError, match="other settings"):
        build_latent_cache(some, encoder, tmp_path, storage="int8", progress=False)
    (tmp_path / "index.json").unlink()  # as if killed before the merge, resumed as int8
    cache = build_latent_cache(some, encoder, tmp_path, storage="int8", episodes_per_shard=1,
                               progress=False)
    assert cache.storage == "int8"
    for entry in some:
        assert cache.latents(entry.episode.name, entry.step, [0]).shape == (1, 448, encoder.dim)
    with pytest.raises(ValueError, match="cache dtype 'int4'"):
        build_latent_cache(some, encoder, tmp_path / "x", storage="int4", progress=False)
    with pytest.raises(ValueError, match="built with encoder"):
        LatentCache(tmp_path, expected_encoder={"name": "other"})


@pytest.mark.parametrize("encoder_dtype", ["float32", "bfloat16"])
def test_on_the_fly_and_cached_paths_give_the_same_loss(encoder_dtype, sim_root, tmp_path):
    cache = tmp_path / "cache"
    common = {"cache__dtype": "float32", "encoder__dtype": encoder_dtype}
    cached = Trainer(config_from_dict(tiny_config(tmp_path / "cached", sim_root[0], cache,
                                                  **common)))
    fly = Trainer(config_from_dict(tiny_config(tmp_path / "fly", sim_root[0], cache,
                                               cache__directory=None, **common)))
    fly.objective.load_state_dict(cached.objective.state_dict())
    assert cached.cache is not None and fly.cache is None
    items = StepBatches(len(cached.dataset), 2, 0, 1, 0, 0, 1).batch(0)
    batch_cached = default_collate([cached.dataset[i] for i in items])
    batch_fly = default_collate([fly.dataset[i] for i in items])
    assert "latents" in batch_cached and "latents" not in batch_fly
    torch.testing.assert_close(fly._batch_to_inputs(batch_fly)["latents"],
                               cached._batch_to_inputs(batch_cached)["latents"],
                               rtol=0, atol=1e-5)
    torch.manual_seed(0)
    loss_cached = cached.train_step(batch_cached)["loss"]
    torch.manual_seed(0)
    loss_fly = fly.train_step(batch_fly)["loss"]
    assert loss_fly == pytest.approx(loss_cached, rel=1e-5)
