"""dexwm-launch: start a node graph as separate processes where ``ros2 launch`` is missing.

Reads the same graph definition (``dexwm_ros.nodes.graph``) and parameter files (config/) as
``launch/*.launch.py``. Output lines are prefixed with the node name. The graph ends when its
task node exits (its exit code is returned), when any other node dies (exit code 1), or on
SIGINT (Ctrl-C, exit code 130) or SIGTERM (``kill``, systemd, ``docker stop``; exit code 143).
Stopping forwards SIGINT to every node, then SIGTERM and finally SIGKILL after grace periods.
Each node is tied to the launcher's life (``runner.PARENT_ENV``, Linux ``PR_SET_PDEATHSIG``):
if the launcher itself is killed, its nodes get SIGTERM, so none is left behind.
The world model is the packaged default (``models/default_world_model``) unless
``--set world_model_server.model_path=...`` names another; camera_encoder runs the encoder
recorded in that checkpoint (backend and grid pooling) unless
``--set camera_encoder.backend=...`` says otherwise.

    dexwm-launch grasp
    dexwm-launch planning --set world_model_server.model_path=/models/dexwm
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from dexwm_ros.nodes.graph import GRAPHS, OPTIONAL_NODES, TASK_NODES
from dexwm_ros.nodes.runner import PARENT_ENV
from dexwm_ros.share import share_path, world_model_path


def parse_overrides(items: list[str]) -> dict[str, list[str]]:
    """``node.param=value`` items -> ``{node: ["param:=value", ...]}``."""
    overrides: dict[str, list[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        node, dot, param = key.partition(".")
        if not (sep and dot and node and param):
            raise SystemExit(f"--set expects node.param=value, got '{item}'")
        overrides.setdefault(node, []).append(f"{param}:={value}")
    return overrides


def checkpoint_encoder(model_path: str | Path | None) -> dict | None:
    """camera_encoder parameters of the encoder recorded in a world-model checkpoint's
    ``config.json`` (empty ``model_path``: the packaged default model's, as world_model_server
    resolves it): ``{"backend": ..., "pool": ...}``; None when it cannot be read
    (world_model_server then reports the problem when it starts)."""
    try:
        directory = world_model_path(model_path)
        encoder = json.loads((directory / "config.json").read_text())["encoder"]
        backend, pool = encoder["backend"], encoder["preprocessing"].get("pool", 1)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if not isinstance(backend, str) or not isinstance(pool, int):
        return None
    return {"backend": backend, "pool": pool}


def encoder_from_checkpoint(nodes, config: Path, overrides: dict[str, list[str]]) -> str | None:
    """Add ``backend:=`` and ``pool:=`` of the checkpoint's encoder to camera_encoder's
    overrides (and return the backend) when the graph runs camera_encoder and
    world_model_server, the checkpoint is known (``--set`` or the parameter file) and the user
    did not choose a backend."""
    if not {"camera_encoder", "world_model_server"} <= set(nodes):
        return None
    if any(p.startswith("backend:=") for p in overrides.get("camera_encoder", [])):
        return None
    model_path = next((p.split(":=", 1)[1] for p in reversed(overrides.get(
        "world_model_server", [])) if p.startswith("model_path:=")), None)
    if model_path is None:
        params = yaml.safe_load(config.read_text()) or {}
        model_path = (params.get("world_model_server", {}).get("ros__parameters", {})
                      .get("model_path"))
    encoder = checkpoint_encoder(model_path)
    if encoder is None:
        return None
    overrides.setdefault("camera_encoder", []).extend(
        f"{name}:={value}" for name, value in encoder.items())
    return encoder["backend"]


def pump(name: str, stream) -> None:
    for line in stream:
        print(f"[{name}] {line}", end="", flush=True)


class Terminated(Exception):
    """The launcher received SIGTERM."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated


def start(name: str, config: Path, extra: list[str]) -> subprocess.Popen:
    command = [sys.executable, "-u", "-m", f"dexwm_ros.nodes.{name}", "--ros-args",
               "-r", f"__node:={name}", "--params-file", str(config)]
    for param in extra:
        command += ["-p", param]
    env = dict(os.environ, **{PARENT_ENV: str(os.getpid())})  # tie the node to our life
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True, env=env)
    threading.Thread(target=pump, args=(name, process.stdout), daemon=True).start()
    return process


def stop(processes: dict[str, subprocess.Popen], grace: float = 10.0) -> None:
    """SIGINT to every node's process group, then SIGTERM, then SIGKILL, ``grace`` s apart."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        running = [p for p in processes.values() if p.poll() is None]
        for process in running:
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        for process in running:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        if all(p.poll() is not None for p in processes.values()):
            return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dexwm-launch", description=__doc__.splitlines()[0])
    parser.add_argument("graph", choices=sorted(GRAPHS), help="which graph to start")
    parser.add_argument("--config", type=Path, help="parameter file (default: the graph's)")
    parser.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE",
                        help="override one parameter of one node (repeatable)")
    parser.add_argument("--with", dest="optional", action="append", default=[],
                        choices=sorted(OPTIONAL_NODES), metavar="NODE",
                        help="also start an optional node (parameters from its own file in "
                             f"config/): {', '.join(sorted(OPTIONAL_NODES))}")
    args = parser.parse_args(argv)
    graph = GRAPHS[args.graph]
    config = args.config or share_path("config", graph["config"])
    overrides = parse_overrides(args.set)
    if encoder_from_checkpoint(graph["nodes"], config, overrides):
        print(f"[dexwm-launch] camera_encoder: the checkpoint's encoder ("
              f"{', '.join(overrides['camera_encoder'][-2:])})", flush=True)

    signal.signal(signal.SIGTERM, _on_sigterm)
    # Ctrl-C also where SIGINT was ignored when we started (a job started with ``&``)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    processes: dict[str, subprocess.Popen] = {}
    try:
        code = run_graph(args, graph, config, overrides, processes)
    except KeyboardInterrupt:
        code = 130
    except Terminated:
        code = 143
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the shutdown itself is not interrupted
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stop(processes)
    print(f"[dexwm-launch] {args.graph} finished with exit code {code}", flush=True)
    return code


def run_graph(args, graph: dict, config: Path, overrides: dict[str, list[str]],
              processes: dict[str, subprocess.Popen]) -> int:
    """Start the graph's nodes into ``processes`` and wait until the graph ends."""
    for name in graph["nodes"]:
        processes[name] = start(name, config, overrides.get(name, []))
    for name in args.optional:
        processes[name] = start(name, share_path("config", OPTIONAL_NODES[name]),
                                overrides.get(name, []))
    started = ", ".join(f"{n} (pid {p.pid})" for n, p in processes.items())
    print(f"[dexwm-launch] started {started} (ROS_DOMAIN_ID="
          f"{os.environ.get('ROS_DOMAIN_ID', '0')}); parameters from {config}", flush=True)
    task = next((n for n in graph["nodes"] if n in TASK_NODES), None)
    while True:
        exited = {n: p.returncode for n, p in processes.items() if p.poll() is not None}
        if task in exited:
            return exited[task]
        others = {n: c for n, c in exited.items() if n != task}
        if others:
            for name, status in others.items():
                print(f"[dexwm-launch] {name} exited with code {status}", flush=True)
            return 1
        time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main())
