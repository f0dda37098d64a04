"""Closed-loop evaluation in simulation: ``dexwm-eval-sim``.

Runs seeded episodes of the reach / grasp / place tasks (``dexwm_ros.sim``) under a policy and
measures the paper's success criteria (appendix C.4, held for about 1 s):

* ``wm``: CEM MPC with a world model (``--model``; default: the packaged default model) scoring
  candidates by latent distance to the encoded goal image (the ROS graph's planner, in process);
* ``oracle``: the same MPC session with a privileged cost from the simulator (true hand
  keypoints against the goal's), to separate planner limits from world-model limits;
* ``scripted``: replays the episode's goal motion (proves the task is solvable);
* ``hold``: keeps the start joints; ``random``: uniform joint targets within the limits.

Every episode writes ``<out>/<task>/<policy>/seed_<seed>.json`` (success, time to success,
distances over time, seconds per MPC step, cost per step); a re-run skips finished episodes.
The summary (success with 95% Wilson intervals) is printed and written to ``summary.md`` and
``summary.json``, with ``success.png`` (success per task and policy) and ``distance.png``
(task distance over time). ``--video-seeds`` writes an mp4 per chosen episode: the camera
image beside the goal image, with the planned hand keypoints drawn. ``--ros`` runs the ``wm``
policy through the ROS graph instead (policy folder ``wm-ros``).
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from dexwm_ros.core.tasks import CONTROL_HZ

POLICIES = ("wm", "scripted", "oracle", "hold", "random")


@dataclass
class EvalConfig:
    """Everything an episode depends on besides its task, policy and seed."""

    model: str | None = None
    encoder_weights: str | None = None
    num_samples: int = 512
    num_elites: int = 10
    iterations: int = 10
    horizon: int = 3
    sampler: str = "cem"
    bf16: bool = False  # wm: predictor and keypoint head under bf16 autocast
    context_frames: int = 4
    control_hz: float = CONTROL_HZ
    max_seconds: float | None = None
    threads: int = 1
    video_seeds: tuple[int, ...] = ()
    #: ``CEMConfig`` fields over the task registry's (``--cem arm_sigma=0.15``)
    cem_overrides: dict = field(default_factory=dict)
    #: ``CostWeights`` fields over the task registry's (``--cost keypoint_weight=0.01``); MPC
    #: policies use them for the planner-side terms, ``wm`` also for the world-model cost
    cost_overrides: dict = field(default_factory=dict)

    def cem_config(self, task_name: str):
        from dexwm_ros.core.planner import CEMConfig

        return CEMConfig.for_task(task_name, **{
            "num_samples": self.num_samples, "num_elites": self.num_elites,
            "iterations": self.iterations, "horizon": self.horizon, "sampler": self.sampler,
            **self.cem_overrides})

    def cost_weights(self, task_name: str):
        from dexwm_ros.core.planning_cost import CostWeights

        return CostWeights.for_task(task_name, **self.cost_overrides)


@dataclass
class EpisodeResult:
    task: str
    policy: str
    seed: int
    success: bool
    time_to_success: float | None
    steps: int
    final: dict
    distance: list[float] = field(default_factory=list)
    cost: list[float] = field(default_factory=list)
    seconds_per_step: list[float] = field(default_factory=list)


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a success rate."""
    if trials == 0:
        return (0.0, 1.0)
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


# ------------------------------------------------------------------------------ policies

class Policy:
    """Chooses the joint targets of each control step of an episode."""

    cost: float = math.nan
    plan_keypoints: np.ndarray | None = None

    def start(self, task) -> None:
        """Called after ``task.reset``."""

    def act(self, task) -> np.ndarray:
        raise NotImplementedError


class HoldPolicy(Policy):
    def start(self, task) -> None:
        self.target = task.joint_targets()

    def act(self, task) -> np.ndarray:
        return self.target


class RandomPolicy(Policy):
    def start(self, task) -> None:
        self.rng = np.random.default_rng([task.seed, 1])

    def act(self, task) -> np.ndarray:
        return self.rng.uniform(task.lower, task.upper)


class ScriptedPolicy(Policy):
    def act(self, task) -> np.ndarray:
        return task.scripted_target()


class MPCPolicy(Policy):
    """The core MPC session with a cost chosen by the subclass."""

    def __init__(self, config: EvalConfig, task_name: str,
                 action_representation: str = "keypoint_delta") -> None:
        from dexwm_ros.core.kinematics import RobotKinematics, head_camera
        from dexwm_ros.core.mpc import MPCSession

        self.config = config
        self.kinematics = RobotKinematics()
        self.camera = head_camera()
        cem = config.cem_config(task_name)
        self.session = MPCSession(task_name, cem, self.kinematics, self.camera,
                                  config.cost_weights(task_name),
                                  action_representation=action_representation)

    def start(self, task) -> None:
        import torch

        self.session.reset()
        self.session.planner.config.seed = int(task.seed)
        self.session.planner.reset()
        self.torch = torch

    def evaluate(self, task):
        raise NotImplementedError

    def act(self, task) -> np.ndarray:
        torch = self.torch
        current = torch.as_tensor(task.joint_positions(), dtype=torch.float32)
        tick = self.session.step(current, self.evaluate(task))
        self.cost = float(tick.plan.cost)
        self.plan_keypoints = self.kinematics.keypoints_world(tick.plan.joints).numpy()
        return tick.target.numpy().astype(np.float64)


class OraclePolicy(MPCPolicy):
    """MPC with a privileged cost: true hand keypoints against targets taken from the
    simulator, staged like the task's goal motion, plus the hand's clearance from objects.

    The targets are the hand keypoints of the goal motion's waypoints (e.g. above the object,
    at it with the hand open, closed), then of the goal state itself; the cost moves on to the
    next target once the hand is within ``STAGE_TOLERANCE`` (mean keypoint distance) of the
    current one, or has come no closer to it for ``STAGE_PATIENCE`` control steps. With the
    goal state alone as target, the hand reaches the goal pose but sweeps objects over on the
    way (see the README).
    """

    STAGE_TOLERANCE = 0.015
    STAGE_PATIENCE = 5
    #: Weight of the hand's penetration (metres, summed over keypoints and bone midpoints)
    #: into the objects' volumes grown by ``CLEARANCE_MARGIN`` (about a finger's radius); once
    #: the approach pose is reached the target object is exempt (the hand closes on it or
    #: pushes it).
    CLEARANCE_WEIGHT = 5.0
    CLEARANCE_MARGIN = 0.015

    def start(self, task) -> None:
        from dexwm_ros.sim.scene import TABLE_TOP_Z

        super().start(task)
        torch = self.torch
        stages = np.concatenate([task.goal_waypoints[:-1], task.goal_joint_positions[None]])
        self.targets = self.kinematics.keypoints_world(torch.as_tensor(stages,
                                                                       dtype=torch.float32))
        self.stage, self.best, self.stalled = 0, math.inf, 0
        scene = task.scene
        self.object_radii = torch.as_tensor(scene.object_radii, dtype=torch.float32)
        self.object_tops = torch.as_tensor(TABLE_TOP_Z + scene.object_heights,
                                           dtype=torch.float32)

    def evaluate(self, task):
        from dexwm_ros.core.planning_cost import KeypointGoalCost

        hand = self.kinematics.keypoints_world(
            self.torch.as_tensor(task.joint_positions(), dtype=self.torch.float32))
        while self.stage < len(self.targets) - 1:
            distance = float((hand - self.targets[self.stage]).norm(dim=-1).mean())
            if distance < self.best - 0.002:
                self.best, self.stalled = distance, 0
            else:
                self.stalled += 1
            if distance >= self.STAGE_TOLERANCE and self.stalled < self.STAGE_PATIENCE:
                break
            self.stage, self.best, self.stalled = self.stage + 1, math.inf, 0
        reach = KeypointGoalCost(self.kinematics.keypoints_world, self.targets[self.stage])
        objects = self.torch.as_tensor(task.object_poses()[:, :2], dtype=self.torch.float32)
        avoid = self.torch.ones(len(objects))
        if self.stage > 0:  # past the approach: the hand closes on or pushes the object
            avoid[task.target_object] = 0.0
        return lambda actions, joints: (reach(actions, joints)
                                        + self._clearance(joints, objects, avoid))

    def _clearance(self, joints, objects_xy, avoid):
        """Penetration ``(N,)`` of the hand's points into the grown object cylinders."""
        from dexwm_ros.core.mpc import BONES

        points = self.kinematics.keypoints_world(joints)
        bones = self.torch.tensor(BONES)
        middle = 0.5 * (points[..., bones[:, 0], :] + points[..., bones[:, 1], :])
        points = self.torch.cat([points, middle], dim=-2)
        horizontal = (points[..., None, :2] - objects_xy).norm(dim=-1)
        below_top = points[..., None, 2] < self.object_tops + self.CLEARANCE_MARGIN
        depth = (self.object_radii + self.CLEARANCE_MARGIN - horizontal).clamp_min(0)
        return self.CLEARANCE_WEIGHT * (depth * below_top * avoid).sum((-1, -2, -3))


class WorldModelPolicy(MPCPolicy):
    """MPC with the world model: context from the last frames, goal from the goal image."""

    def __init__(self, config: EvalConfig, task_name: str) -> None:
        import torch

        from dexwm_ros.core.planning_cost import WorldModelCost
        from dexwm_ros.core.world_model import WorldModel
        from dexwm_ros.share import world_model_path

        self.model = WorldModel.load(world_model_path(config.model)).eval()
        super().__init__(config, task_name, self.model.action_representation)
        self.encoder = self.model.build_encoder(config.encoder_weights)
        slots = self.model.predictor.config.num_slots
        self.context_frames = min(config.context_frames, slots - config.horizon + 1)
        if self.context_frames < 1:
            raise ValueError(f"the model holds {slots} frames: too few for horizon "
                             f"{config.horizon}")
        self.wm_cost = WorldModelCost(self.model.predictor, self.model.keypoint_head,
                                      self.model.encoder_name, self.session.weights,
                                      autocast=torch.bfloat16 if config.bf16 else None,
                                      camera=self.camera)
        self.torch = torch

    def start(self, task) -> None:
        super().start(task)
        with self.torch.inference_mode():
            goal = self.encoder.encode(task.goal_image()[None])[0]
        self.wm_cost.clear()
        self.wm_cost.set_goal(goal, self.encoder.name)
        self.frames: list = []

    def evaluate(self, task):
        from dexwm_ros.core.mpc import context_actions

        torch = self.torch
        with torch.inference_mode():
            latent = self.encoder.encode(task.render()[None])[0]
        self.frames.append((latent, torch.as_tensor(task.joint_positions(),
                                                    dtype=torch.float32)))
        self.frames = self.frames[-self.context_frames:]
        joints = torch.stack([f[1] for f in self.frames])
        actions = context_actions(self.kinematics, self.camera, joints,
                                  self.model.action_representation)
        self.wm_cost.set_context(torch.stack([f[0] for f in self.frames]), actions,
                                 self.encoder.name,
                                 self.kinematics.keypoints_camera(joints[-1], self.camera))
        return lambda candidate_actions, _joints: self.wm_cost.costs(candidate_actions)


def make_policy(name: str, task_name: str, config: EvalConfig) -> Policy:
    if name == "wm":
        return WorldModelPolicy(config, task_name)
    if name == "oracle":
        return OraclePolicy(config, task_name)
    simple = {"scripted": ScriptedPolicy, "hold": HoldPolicy, "random": RandomPolicy}
    if name not in simple:
        raise ValueError(f"unknown policy {name!r}; choose from {POLICIES}")
    return simple[name]()


# ------------------------------------------------------------------------------ episodes

def run_episode(task, policy: Policy, max_steps: int, video: Path | None = None
                ) -> EpisodeResult:
    """One episode from ``task``'s current reset; stops at success or after ``max_steps``."""
    policy.start(task)
    key = task.spec.distance_key
    result = EpisodeResult(task.task_name, type(policy).__name__, task.seed, False, None, 0, {})
    frames = []
    goal_image = task.goal_image() if video is not None else None
    for _ in range(max_steps):
        tick = time.perf_counter()
        target = policy.act(task)
        result.seconds_per_step.append(time.perf_counter() - tick)
        result.cost.append(float(policy.cost))
        task.step(target)
        result.distance.append(float(task.measurements()[key]))
        if video is not None:
            frames.append(_video_frame(task, goal_image, policy.plan_keypoints))
        if task.success():
            result.success = True
            result.time_to_success = task.steps / task.control_hz
            break
    result.steps = task.steps
    result.final = {k: v for k, v in task.status().items()
                    if isinstance(v, (bool, int, float)) and k not in ("seed",)}
    if video is not None and frames:
        from training.video import write_video

        write_video(video, frames, fps=task.control_hz)
    return result


def _video_frame(task, goal_image: np.ndarray, plan_keypoints: np.ndarray | None) -> np.ndarray:
    image = task.render()
    if plan_keypoints is not None:
        import torch

        pixels = task.camera.project(task.camera.world_to_camera(
            torch.as_tensor(plan_keypoints[-1], dtype=torch.float32))).numpy()
        for u, v in pixels.round().astype(int):
            if 0 <= v < image.shape[0] and 0 <= u < image.shape[1]:
                image[max(0, v - 1): v + 2, max(0, u - 1): u + 2] = (255, 220, 0)
    return np.concatenate([image, goal_image], axis=1)


def episode_path(out: Path, task: str, policy: str, seed: int) -> Path:
    return out / task / policy / f"seed_{seed:04d}.json"


_WORKER: dict = {}


def _worker_init(config: EvalConfig, out: Path) -> None:
    import torch

    torch.set_num_threads(max(1, config.threads))
    _WORKER.update(config=config, out=out, tasks={}, policies={})


def _run_job(job: tuple[str, str, int]) -> dict:
    task_name, policy_name, seed = job
    from dexwm_ros.sim import make_task

    config, out = _WORKER["config"], _WORKER["out"]
    tasks, policies = _WORKER["tasks"], _WORKER["policies"]
    if task_name not in tasks:
        tasks[task_name] = make_task(task_name, seed=seed, control_hz=config.control_hz)
    task = tasks[task_name]
    task.reset(seed)
    if (task_name, policy_name) not in policies:
        policies[task_name, policy_name] = make_policy(policy_name, task_name, config)
    policy = policies[task_name, policy_name]
    max_steps = task.max_steps if config.max_seconds is None else \
        max(1, round(config.max_seconds * config.control_hz))
    path = episode_path(out, task_name, policy_name, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    video = path.with_suffix(".mp4") if seed in config.video_seeds else None
    result = run_episode(task, policy, max_steps, video)
    result.policy = policy_name
    record = asdict(result)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)
    return record


def evaluate(tasks: list[str], policies: list[str], seeds: list[int], config: EvalConfig,
             out: Path, workers: int = 1, progress: bool = True) -> dict:
    """Run every (task, policy, seed) episode not already in ``out``; return the summary."""
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(config), indent=1))
    jobs = [(t, p, s) for s in seeds for t in tasks for p in policies  # seed-major: partial
            if not episode_path(out, t, p, s).is_file()]                # runs cover every task
    bar = tqdm(total=len(jobs), desc="episodes", disable=not progress or not jobs)
    if workers <= 1:
        _worker_init(config, out)
        for job in jobs:
            _run_job(job)
            bar.update()
    else:
        context = mp.get_context("spawn")
        with context.Pool(workers, initializer=_worker_init, initargs=(config, out)) as pool:
            for _ in pool.imap_unordered(_run_job, jobs):
                bar.update()
    bar.close()
    return summarize(out, tasks, policies, seeds)


ROS_POLICY = "wm-ros"


def evaluate_ros(tasks: list[str], seeds: list[int], config: EvalConfig, out: Path,
                 progress: bool = True) -> dict:
    """The ``wm`` policy through the ROS graph: the sim node and the planning nodes
    (camera_encoder, world_model_server, cem_planner) as processes over DDS, episodes reset
    and goals sent with ``TaskClient``. The sim runs at its own control rate while the
    planner thinks (as on a robot), so step counts differ from the in-process run."""
    import rclpy
    from tqdm import tqdm

    from dexwm_ros.core.tasks import task_spec
    from dexwm_ros.nodes.launcher import start, stop
    from dexwm_ros.nodes.task_client import TaskClient
    from dexwm_ros.nodes.world_model_server import SERVER_COST_FIELDS
    from dexwm_ros.share import share_path, world_model_path

    out.mkdir(parents=True, exist_ok=True)
    jobs = [(t, s) for s in seeds for t in tasks
            if not episode_path(out, t, ROS_POLICY, s).is_file()]
    if not jobs:
        return summarize(out, tasks, [ROS_POLICY], seeds)
    from dexwm_ros.nodes.launcher import checkpoint_encoder

    model = world_model_path(config.model)
    encoder = checkpoint_encoder(model) or {}
    overrides = {
        "sim": [f"control_hz:={config.control_hz}"],
        "camera_encoder": [f"{name}:={value}" for name, value in encoder.items()],
        "world_model_server": [f"model_path:={Path(model).resolve()}",
                               f"context_frames:={config.context_frames}",
                               f"bf16:={str(config.bf16).lower()}"],
        "cem_planner": [f"num_samples:={config.num_samples}",
                        f"num_elites:={config.num_elites}", f"iterations:={config.iterations}",
                        f"horizon:={config.horizon}", f"sampler:={config.sampler}",
                        f"control_period:={1.0 / config.control_hz}", "seed:=0"],
    }
    # each override to the node holding it; cem_planner also takes <task>.<field> where a task
    # has its own value
    for name, value in [*config.cem_overrides.items(), *config.cost_overrides.items()]:
        text = (f"[{','.join(str(v) for v in value)}]" if isinstance(value, tuple)
                else str(value))
        if name in SERVER_COST_FIELDS:
            overrides["world_model_server"].append(f"{name}:={text}")
            continue
        overrides["cem_planner"].append(f"{name}:={text}")
        overrides["cem_planner"] += [
            f"{task}.{name}:={text}" for task in tasks
            if name in {**task_spec(task).cem_overrides, **task_spec(task).cost_overrides}]
    graph = share_path("config", "dexwm.yaml")
    processes = {name: start(name, graph, overrides.get(name, []))
                 for name in ("sim", "camera_encoder", "world_model_server", "cem_planner")}
    rclpy.init()
    node = rclpy.create_node("dexwm_eval_sim")
    client = TaskClient(node)
    try:
        for task_name, seed in tqdm(jobs, desc="episodes (ROS)", disable=not progress):
            spec = task_spec(task_name)
            steps = spec.max_steps(config.control_hz) if config.max_seconds is None else \
                max(1, round(config.max_seconds * config.control_hz))
            goal_image = client.reset(task_name, seed)
            ticks: list[float] = []
            last = [time.monotonic()]

            def on_feedback(feedback, ticks=ticks, last=last):
                if feedback.cem_iteration == config.iterations - 1:
                    ticks.append(time.monotonic() - last[0])
                    last[0] = time.monotonic()

            result = client.run(goal_image, task_name, steps, stop=lambda status: status.success,
                                on_feedback=on_feedback, observation_timeout=60.0)[0]
            statuses = [s for s in client.statuses if s.seed == seed]
            first = next((s for s in statuses if s.success), None)
            record = EpisodeResult(
                task_name, ROS_POLICY, seed, first is not None,
                None if first is None else first.step / config.control_hz,
                statuses[-1].step if statuses else 0,
                {"error_code": int(result.error_code),
                 "distance": float(statuses[-1].distance) if statuses else math.nan},
                distance=[float(s.distance) for s in statuses], cost=[float(result.final_cost)],
                seconds_per_step=ticks)
            path = episode_path(out, task_name, ROS_POLICY, seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(asdict(record), indent=1))
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        stop(processes)
    return summarize(out, tasks, [ROS_POLICY], seeds)


def load_results(out: Path, task: str, policy: str, seeds: list[int]) -> list[dict]:
    return [json.loads(episode_path(out, task, policy, s).read_text()) for s in seeds
            if episode_path(out, task, policy, s).is_file()]


def summarize(out: Path, tasks: list[str], policies: list[str], seeds: list[int]) -> dict:
    """Success table (markdown + JSON) and plots from the episode files in ``out``."""
    rows, summary = [], {}
    for task in tasks:
        for policy in policies:
            results = load_results(out, task, policy, seeds)
            if not results:
                continue
            wins = sum(r["success"] for r in results)
            low, high = wilson_interval(wins, len(results))
            steps = [s for r in results for s in r["seconds_per_step"]]
            entry = {"success": wins, "trials": len(results), "rate": wins / len(results),
                     "wilson95": [low, high],
                     "final_distance": float(np.mean([r["distance"][-1] for r in results
                                                      if r["distance"]] or [math.nan])),
                     "seconds_per_step": float(np.mean(steps)) if steps else math.nan}
            summary.setdefault(task, {})[policy] = entry
            rows.append(f"| {task} | {policy} | {wins}/{len(results)} | "
                        f"{100 * entry['rate']:.0f}% [{100 * low:.0f}, {100 * high:.0f}] | "
                        f"{entry['final_distance']:.3f} | {entry['seconds_per_step']:.3f} |")
    table = "\n".join([
        "| task | policy | success | rate [95% Wilson] | final distance (m) | s / step |",
        "|---|---|---|---|---|---|", *rows])
    (out / "summary.md").write_text(table + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    _plot(out, tasks, policies, seeds, summary)
    print(table)
    return summary


def _plot(out: Path, tasks, policies, seeds, summary: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(1.8 + 1.6 * len(tasks), 3.2))
    width = 0.8 / max(1, len(policies))
    for i, policy in enumerate(policies):
        rates = [summary.get(t, {}).get(policy, {}) for t in tasks]
        x = np.arange(len(tasks)) + i * width
        heights = [r.get("rate", 0.0) for r in rates]
        errors = np.array([[r["rate"] - r["wilson95"][0], r["wilson95"][1] - r["rate"]]
                           if r else [0, 0] for r in rates]).T
        axis.bar(x, heights, width, yerr=errors, capsize=2, label=policy)
    axis.set_xticks(np.arange(len(tasks)) + 0.4 - width / 2, tasks)
    axis.set_ylim(0, 1.05)
    axis.set_ylabel("success rate")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out / "success.png", dpi=120)
    plt.close(figure)

    config = out / "config.json"
    control_hz = json.loads(config.read_text())["control_hz"] if config.is_file() else 5.0
    figure, axes = plt.subplots(1, len(tasks), figsize=(3.4 * len(tasks), 3.0), squeeze=False)
    for axis, task in zip(axes[0], tasks, strict=True):
        for policy in policies:
            curves = [r["distance"] for r in load_results(out, task, policy, seeds)]
            if not curves:
                continue
            length = max(map(len, curves))
            padded = np.array([c + [c[-1]] * (length - len(c)) for c in curves if c])
            axis.plot(np.arange(1, length + 1) / control_hz, padded.mean(0), label=policy)
        axis.set_title(task)
        axis.set_xlabel("time (s)")
        axis.set_ylabel("task distance (m)")
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out / "distance.png", dpi=120)
    plt.close(figure)


def parse_overrides(items: list[str]) -> dict:
    """``["keypoint_weight=0.01", "workspace_low=-0.2,-0.5,0.9", "execute=mean"]`` ->
    ``{field: value}``: integers, floats or words; comma-separated values become tuples."""
    out = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name.strip() or not text.strip():
            raise ValueError(f"expected FIELD=VALUE, got {item!r}")
        values = tuple(_parse_value(v.strip()) for v in text.split(","))
        out[name.strip()] = values[0] if len(values) == 1 else values
    return out


def _parse_value(text: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def main(argv=None) -> None:
    from dexwm_ros.core.precision import slow_bf16_reason
    from dexwm_ros.core.tasks import TASK_NAMES

    parser = argparse.ArgumentParser(prog="dexwm-eval-sim", description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="all", choices=(*TASK_NAMES, "all"))
    parser.add_argument("--policy", default="wm",
                        help=f"one or several of {', '.join(POLICIES)}, comma-separated")
    parser.add_argument("--trials", type=int, default=50, help="episodes per task and policy")
    parser.add_argument("--seed", type=int, default=0, help="first episode seed")
    parser.add_argument("--model", help="world-model checkpoint directory (wm; default: the "
                        "packaged models/default_world_model)")
    parser.add_argument("--encoder-weights", help="local encoder weights for a non-tiny "
                        "encoder")
    parser.add_argument("--workers", type=int, default=1, help="parallel episode processes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--out", type=Path, default=Path("runs/eval_sim"))
    parser.add_argument("--num-samples", type=int, default=512, help="CEM samples N")
    parser.add_argument("--num-elites", type=int, default=10, help="CEM elites K")
    parser.add_argument("--iterations", type=int, default=10, help="CEM iterations L")
    parser.add_argument("--horizon", type=int, default=3, help="planning horizon T")
    parser.add_argument("--sampler", default="cem", choices=("cem", "icem"))
    parser.add_argument("--bf16", action="store_true",
                        help="wm: run the world model under bf16 autocast (fast on CPUs with "
                        "native bf16, e.g. AVX512-BF16 or AMX, and on GPUs)")
    parser.add_argument("--context-frames", type=int, default=4,
                        help="wm: context frames (capped by the model's capacity)")
    parser.add_argument("--max-seconds", type=float,
                        help="episode length (default: the task's)")
    parser.add_argument("--cem", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a CEM setting (CEMConfig field), e.g. arm_sigma=0.15 "
                        "or execute=mean; repeatable")
    parser.add_argument("--cost", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a planning-cost weight (CostWeights field), e.g. "
                        "keypoint_weight=0.01; repeatable")
    parser.add_argument("--video-seeds", default="",
                        help="comma-separated seeds to write as mp4")
    parser.add_argument("--ros", action="store_true",
                        help="run the wm policy through the ROS graph (nodes over DDS)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    policies = [p.strip() for p in args.policy.split(",") if p.strip()]
    unknown = sorted(set(policies) - set(POLICIES))
    if unknown:
        parser.error(f"unknown policies {unknown}; choose from {POLICIES}")
    if args.trials < 1 or args.workers < 1:
        parser.error("--trials and --workers must be >= 1")
    tasks = list(TASK_NAMES) if args.task == "all" else [args.task]
    config = EvalConfig(
        model=args.model, encoder_weights=args.encoder_weights, num_samples=args.num_samples,
        num_elites=args.num_elites, iterations=args.iterations, horizon=args.horizon,
        sampler=args.sampler, bf16=args.bf16, context_frames=args.context_frames,
        max_seconds=args.max_seconds, threads=args.threads,
        video_seeds=tuple(int(s) for s in args.video_seeds.split(",") if s.strip()))
    for flag, items, field_name, settings in (
            ("--cem", args.cem, "cem_overrides", config.cem_config),
            ("--cost", args.cost, "cost_overrides", config.cost_weights)):
        try:
            setattr(config, field_name, parse_overrides(items))
            for task_name in tasks:
                settings(task_name)  # raises on a bad field or value
        except (TypeError, ValueError) as error:
            parser.error(f"{flag} {' '.join(items)}: {error}")
    if config.bf16 and (reason := slow_bf16_reason("cpu")):
        print(f"warning: {reason}", flush=True)
    seeds = list(range(args.seed, args.seed + args.trials))
    if args.ros:
        if policies != ["wm"]:
            parser.error("--ros runs the wm policy only (--policy wm)")
        evaluate_ros(tasks, seeds, config, args.out, progress=not args.no_progress)
        return
    evaluate(tasks, policies, seeds, config, args.out, args.workers,
             progress=not args.no_progress)


if __name__ == "__main__":
    main()
