"""CEM model-predictive planner over absolute joint targets (DexWM paper section 3.4, appendix B).

Each MPC step searches ``T`` joint-target vectors (23 = 7 Franka + 16 Allegro). Every candidate
sequence is turned into dexterous actions by batched forward kinematics (keypoint deltas between
consecutive steps, starting from the observed keypoints) and scored by a caller-supplied
``evaluate`` function (in the ROS graph: the world-model server, see ``planning_cost``).

Two samplers:

* ``"cem"`` - the paper's CEM: Gaussian samples, top-K elites replace mean and std.
* ``"icem"`` - improvements in the style of iCEM (Pinneri et al., 2020): temporally colored
  noise, elites carried over between iterations (their costs reused, no re-evaluation) and
  between MPC steps (shifted, re-evaluated), a shrinking population, the mean itself tried in
  the last iteration.

Both clip every sample to the joint limits, track the best sequence seen, warm-start the next
MPC step by shifting the previous mean (and best sequence) one step forward, and report each
iteration to an ``on_iteration`` hook that can stop the search by returning ``False``.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from dexwm_ros.core.actions import (
    ACTION_REPRESENTATIONS,
    NUM_HAND_KEYPOINTS,
    robot_hand_actions,
)
from dexwm_ros.core.parameters import parameter
from dexwm_ros.core.tasks import task_spec

SAMPLERS = ("cem", "icem")
EXECUTE_CHOICES = ("best", "mean")

KeypointFn = Callable[[torch.Tensor], torch.Tensor]
EvaluateFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ExtraCostFn = Callable[[torch.Tensor], torch.Tensor]
IterationHook = Callable[["IterationInfo"], "bool | None"]

#: Colored noise for a horizon this short would be white under the usual 1/T frequency cutoff,
#: so noise is drawn over a window of at least this many steps and its first T steps are used
#: (a stationary power-law process observed over T steps).
_MIN_NOISE_WINDOW = 16


def _shift(sequences: torch.Tensor) -> torch.Tensor:
    """Drop the first step of ``(..., T, J)`` sequences and repeat the last (warm start)."""
    return torch.cat([sequences[..., 1:, :], sequences[..., -1:, :]], dim=-2)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class CEMConfig:
    """CEM settings. Defaults are the paper's simulation settings {T,N,K,L} = {3,512,10,10}.

    ``arm_sigma``/``hand_sigma`` (rad) are the initial standard deviations of the first
    ``arm_joints`` joints and of the rest (appendix B: 0.3 arm, 0.1 hand, 0.01 hand for place).
    ``momentum`` blends the previous mean/std into the elite update. ``sampler`` picks plain
    CEM or the iCEM-style sampler; ``execute`` what ``plan`` returns as the plan (appendix B:
    "we select the best joint sequence"; ``"mean"``: the final elite mean); ``noise_beta``
    (colored-noise exponent, 0 = white),
    ``elite_fraction_kept`` and ``population_decay`` only affect ``"icem"``. Fields marked
    ``live`` may change between ``CEMPlanner.plan`` calls (``dexwm_ros.core.parameters``).
    """

    horizon: int = parameter(3, "planning horizon T (steps)", low=1, high=8)
    num_samples: int = parameter(512, "CEM samples N per iteration", low=2, high=8192, live=True)
    num_elites: int = parameter(10, "CEM elites K (at most num_samples)", low=1, high=1024,
                                live=True)
    iterations: int = parameter(10, "CEM iterations L per MPC step", low=1, high=100, live=True)
    arm_sigma: float = parameter(0.3, "initial std of the arm joints (rad)", low=1e-4, high=3.0,
                                 live=True)
    hand_sigma: float = parameter(0.1, "initial std of the hand joints (rad)", low=1e-4,
                                  high=3.0, live=True)
    min_sigma: float = parameter(1e-3, "floor of the std after each elite update (rad)",
                                 low=0.0, high=1.0, live=True)
    momentum: float = parameter(0.0, "blend of the previous mean/std into the elite update",
                                low=0.0, high=0.99, live=True)
    arm_joints: int = parameter(7, "leading joints that get arm_sigma (the rest: hand_sigma)",
                                low=0, high=64)
    execute: str = parameter("best", "plan returned for execution: best (the best candidate "
                             "seen, the paper's) or mean (the final elite mean: averages out "
                             "cost noise)", live=True)
    sampler: str = parameter("cem", "cem (the paper's) or icem (colored noise, elite reuse, "
                             "shrinking population)", live=True)
    noise_beta: float = parameter(2.0, "icem: colored-noise exponent (0 = white noise)",
                                  low=0.0, high=10.0, live=True)
    elite_fraction_kept: float = parameter(0.3, "icem: fraction of the elites carried to the "
                                           "next iteration", low=0.0, high=1.0, live=True)
    population_decay: float = parameter(1.25, "icem: population shrink factor per iteration",
                                        low=1.0, high=100.0, live=True)
    seed: int | None = parameter(None, "sampler seed (-1 = random)", low=-1, high=2**31 - 1,
                                 unset=-1)

    def validate(self) -> CEMConfig:
        """Raise ``ValueError`` naming the first bad field; return ``self`` when valid."""
        positive_ints = ("horizon", "num_samples", "num_elites", "iterations")
        for name in positive_ints:
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"CEMConfig.{name} must be a positive int, got {value!r}")
        if self.num_elites > self.num_samples:
            raise ValueError(
                f"CEMConfig.num_elites ({self.num_elites}) must not exceed "
                f"num_samples ({self.num_samples})"
            )
        for name in ("arm_sigma", "hand_sigma"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"CEMConfig.{name} must be finite and > 0, got {value!r}")
        if not (math.isfinite(self.min_sigma) and self.min_sigma >= 0):
            raise ValueError(f"CEMConfig.min_sigma must be finite and >= 0, got {self.min_sigma!r}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"CEMConfig.momentum must be in [0, 1), got {self.momentum!r}")
        if not _is_int(self.arm_joints) or self.arm_joints < 0:
            raise ValueError(f"CEMConfig.arm_joints must be an int >= 0, got {self.arm_joints!r}")
        if self.execute not in EXECUTE_CHOICES:
            raise ValueError(f"CEMConfig.execute must be one of {EXECUTE_CHOICES}, "
                             f"got {self.execute!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"CEMConfig.sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if not (math.isfinite(self.noise_beta) and self.noise_beta >= 0):
            raise ValueError(
                f"CEMConfig.noise_beta must be finite and >= 0, got {self.noise_beta!r}"
            )
        if not 0.0 <= self.elite_fraction_kept <= 1.0:
            raise ValueError(
                f"CEMConfig.elite_fraction_kept must be in [0, 1], got {self.elite_fraction_kept!r}"
            )
        if not (math.isfinite(self.population_decay) and self.population_decay >= 1.0):
            raise ValueError(
                f"CEMConfig.population_decay must be finite and >= 1, got {self.population_decay!r}"
            )
        if self.seed is not None and not _is_int(self.seed):
            raise ValueError(f"CEMConfig.seed must be an int or None, got {self.seed!r}")
        return self

    @classmethod
    def for_task(cls, task: str, **overrides) -> CEMConfig:
        """The task registry's settings for ``task`` (place: hand sigma 0.01), then overrides."""
        return replace(cls(**task_spec(task).cem_overrides), **overrides).validate()


@dataclass
class IterationInfo:
    """What ``on_iteration`` receives after each CEM iteration (``iteration`` counts from 0)."""

    mpc_step: int
    iteration: int
    best_cost: float
    elite_mean_cost: float
    elapsed_s: float
    evaluations: int


@dataclass
class PlanResult:
    """Best joint-target sequence found and how the search went.

    ``joints`` ``(T, J)`` and ``actions`` ``(T, 132)`` are the best candidate seen, ``cost`` its
    cost (with ``CEMConfig.execute="mean"``: the final elite mean, ``cost`` the final elites'
    mean cost); ``mean`` and ``sigma`` ``(T, J)`` are the final sampling distribution (the
    next plan's warm start).

    ``timings`` holds seconds spent in ``sampling``, ``kinematics`` (FK + actions),
    ``evaluate`` (the caller's scorer), ``extra_cost`` and ``update`` (elite selection).
    """

    joints: torch.Tensor
    actions: torch.Tensor
    mean: torch.Tensor
    sigma: torch.Tensor
    cost: float
    iterations_run: int
    cancelled: bool
    evaluations: int
    mpc_step: int
    timings: dict[str, float] = field(default_factory=dict)


def keypoint_actions(observed_keypoints: torch.Tensor, keypoints: torch.Tensor) -> torch.Tensor:
    """Dexterous actions for keypoint sequences ``(..., T, 21, 3)`` starting at ``(21, 3)``.

    Step t's action is ``keypoints[t] - keypoints[t-1]`` (``observed_keypoints`` before step 0)
    in the right-hand rows; left hand and camera rows are zero (paper appendix B: the camera is
    stationary during planning). Returns ``(..., T, 132)``.
    """
    return robot_hand_actions("keypoint_delta", observed_keypoints, keypoints)


def colored_noise(
    beta: float, num: int, horizon: int, dim: int, generator: torch.Generator
) -> torch.Tensor:
    """Unit-variance Gaussian noise ``(num, horizon, dim)`` with power spectrum ~ 1/f^beta in time.

    Drawn as a circular filter of white noise over a window of ``max(horizon, 16)`` steps
    (lowest frequency clamped to 1/window), normalised exactly to unit marginal variance.
    """
    window = max(horizon, _MIN_NOISE_WINDOW)
    white = torch.randn(num, dim, window, generator=generator, dtype=torch.float64)
    freqs = torch.fft.rfftfreq(window, dtype=torch.float64)
    freqs[0] = 1.0 / window
    scale = freqs.pow(-beta / 2.0)
    impulse = torch.fft.irfft(scale, n=window)
    filtered = torch.fft.irfft(torch.fft.rfft(white) * scale, n=window)
    noise = filtered / impulse.square().sum().sqrt()
    return noise[..., :horizon].transpose(1, 2).float()


class CEMPlanner:
    """Receding-horizon CEM over absolute joint targets.

    ``keypoint_fn`` maps joints ``(..., J)`` to camera-frame right-hand keypoints
    ``(..., 21, 3)`` in one batched call (e.g. ``RobotKinematics.keypoints_camera``).
    ``lower``/``upper`` ``(J,)`` are the joint limits; every sample is clipped to them.
    ``extra_cost`` (optional) adds a kinematic cost ``(N,)`` for joints ``(N, T, J)``, e.g.
    ``planning_cost.OrientationCost`` for grasping. ``action_representation`` is the world
    model's (``WorldModel.action_representation``); candidates' actions are computed in it by
    ``actions.robot_hand_actions``.

    ``plan`` may be called once per control tick: the previous mean and best sequence are shifted
    one step forward as the warm start. ``reset`` drops the warm start and re-seeds the sampler,
    so a reset planner repeats a fresh planner's plans exactly.
    """

    def __init__(
        self,
        config: CEMConfig,
        keypoint_fn: KeypointFn,
        lower: torch.Tensor,
        upper: torch.Tensor,
        extra_cost: ExtraCostFn | None = None,
        action_representation: str = "keypoint_delta",
    ) -> None:
        self.config = config.validate()
        if action_representation not in ACTION_REPRESENTATIONS:
            raise ValueError(f"unknown action representation {action_representation!r}; "
                             f"choose from {sorted(ACTION_REPRESENTATIONS)}")
        self.action_representation = action_representation
        lower = torch.as_tensor(lower, dtype=torch.float32)
        upper = torch.as_tensor(upper, dtype=torch.float32)
        if lower.ndim != 1 or lower.shape != upper.shape:
            raise ValueError(
                f"joint limits must be two (J,) tensors, got {tuple(lower.shape)} and "
                f"{tuple(upper.shape)}"
            )
        if not (torch.isfinite(lower).all() and torch.isfinite(upper).all()):
            raise ValueError("joint limits must be finite")
        if (lower > upper).any():
            bad = torch.nonzero(lower > upper).flatten().tolist()
            raise ValueError(f"joint limits have lower > upper at joints {bad}")
        if config.arm_joints > lower.numel():
            raise ValueError(
                f"CEMConfig.arm_joints ({config.arm_joints}) exceeds the {lower.numel()} joints"
            )
        self.lower = lower
        self.upper = upper
        self.num_joints = lower.numel()
        self.keypoint_fn = keypoint_fn
        self.extra_cost = extra_cost
        self._generator = torch.Generator()
        self.reset()

    def reset(self) -> None:
        """Forget the warm start and restart the random stream from ``config.seed``."""
        if self.config.seed is None:
            self._generator.seed()
        else:
            self._generator.manual_seed(self.config.seed)
        self._warm_mean: torch.Tensor | None = None
        self._warm_best: torch.Tensor | None = None
        self._warm_elites: torch.Tensor | None = None
        self._mpc_step = 0

    def initial_sigma(self, horizon: int | None = None) -> torch.Tensor:
        """Initial standard deviation ``(T, J)``: arm sigma for the arm joints, hand sigma else."""
        horizon = self.config.horizon if horizon is None else horizon
        sigma = torch.full((horizon, self.num_joints), self.config.hand_sigma)
        sigma[:, : self.config.arm_joints] = self.config.arm_sigma
        return sigma

    def plan(
        self,
        current_joints: torch.Tensor,
        observed_keypoints: torch.Tensor,
        evaluate: EvaluateFn,
        on_iteration: IterationHook | None = None,
        initial_mean: torch.Tensor | None = None,
        initial_sigma: torch.Tensor | None = None,
        horizon: int | None = None,
    ) -> PlanResult:
        """Search the best ``(T, J)`` joint-target sequence from the current state.

        ``evaluate(actions (N, T, 132), joints (N, T, J)) -> costs (N,)`` scores candidates
        (lower is better, ``+inf`` allowed, NaN is an error). ``on_iteration`` is called after
        every iteration; returning ``False`` stops the search there and the result comes back
        with ``cancelled=True`` and the best sequence found so far. ``initial_mean`` ``(T, J)``
        overrides the mean's initialisation (e.g. the paper's dummy grasp motion); otherwise the
        mean is the warm start or the current joints repeated. ``horizon`` (default
        ``config.horizon``) plans fewer steps, e.g. the remaining steps of a plan being executed;
        ``initial_sigma`` ``(T, J)`` overrides the initial standard deviation.
        """
        cfg = self.config
        horizon = cfg.horizon if horizon is None else horizon
        if not _is_int(horizon) or not 1 <= horizon <= cfg.horizon:
            raise ValueError(f"horizon must be an int in [1, {cfg.horizon}], got {horizon!r}")
        current = self._check_joints(current_joints, "current_joints", (self.num_joints,))
        observed = self._check_joints(
            observed_keypoints, "observed_keypoints", (NUM_HAND_KEYPOINTS, 3)
        )
        if initial_mean is not None:
            mean = self._check_joints(initial_mean, "initial_mean", (horizon, self.num_joints))
            warm_candidates = None
        elif self._warm_mean is not None and len(self._warm_mean) == horizon:
            mean = _shift(self._warm_mean)
            warm_candidates = self._warm_candidates()
        else:
            mean = current.expand(horizon, -1)
            warm_candidates = None
        mean = self._clip(mean)
        if initial_sigma is None:
            sigma = self.initial_sigma(horizon)
        else:
            sigma = self._check_joints(initial_sigma, "initial_sigma", (horizon, self.num_joints))

        timings = dict.fromkeys(("sampling", "kinematics", "evaluate", "extra_cost", "update"), 0.0)
        start = time.perf_counter()
        evaluations = 0
        best_cost = math.inf
        best_joints = mean.clone()
        best_actions: torch.Tensor | None = None
        kept = kept_costs = kept_actions = None
        cancelled = False
        iterations_run = 0
        for iteration in range(cfg.iterations):
            tick = time.perf_counter()
            candidates = self._sample(mean, sigma, iteration)
            if iteration == 0 and warm_candidates is not None:
                candidates = torch.cat([warm_candidates, candidates])[: len(candidates)]
            if cfg.sampler == "icem" and iteration == cfg.iterations - 1:
                candidates = torch.cat([candidates[:-1], mean.unsqueeze(0)])
            candidates = self._clip(candidates)
            timings["sampling"] += time.perf_counter() - tick

            tick = time.perf_counter()
            actions = self._actions(observed, candidates)
            timings["kinematics"] += time.perf_counter() - tick

            tick = time.perf_counter()
            costs = self._evaluate(evaluate, actions, candidates)
            evaluations += len(candidates)
            timings["evaluate"] += time.perf_counter() - tick

            if self.extra_cost is not None:
                tick = time.perf_counter()
                costs = costs + self._check_costs(self.extra_cost(candidates), len(candidates))
                timings["extra_cost"] += time.perf_counter() - tick

            tick = time.perf_counter()
            if kept is not None:
                candidates = torch.cat([candidates, kept])
                actions = torch.cat([actions, kept_actions])
                costs = torch.cat([costs, kept_costs])
            order = torch.argsort(costs, stable=True)[: cfg.num_elites]
            elites, elite_costs = candidates[order], costs[order]
            if elite_costs[0].item() < best_cost:
                best_cost = elite_costs[0].item()
                best_joints, best_actions = elites[0].clone(), actions[order[0]].clone()
            mean, sigma = self._update(mean, sigma, elites)
            finite = elite_costs[torch.isfinite(elite_costs)]
            elite_mean_cost = finite.mean().item() if len(finite) else math.inf
            if cfg.sampler == "icem":
                num_kept = round(cfg.elite_fraction_kept * cfg.num_elites)
                kept, kept_costs = elites[:num_kept], elite_costs[:num_kept]
                kept_actions = actions[order[:num_kept]]
            timings["update"] += time.perf_counter() - tick

            iterations_run = iteration + 1
            if on_iteration is not None:
                info = IterationInfo(
                    mpc_step=self._mpc_step,
                    iteration=iteration,
                    best_cost=best_cost,
                    elite_mean_cost=elite_mean_cost,
                    elapsed_s=time.perf_counter() - start,
                    evaluations=evaluations,
                )
                if on_iteration(info) is False:
                    cancelled = True
                    break

        if cfg.execute == "mean" and iterations_run:
            best_joints, best_actions = self._clip(mean), None
            best_cost = elite_mean_cost
        if best_actions is None:
            best_actions = self._actions(observed, best_joints.unsqueeze(0))[0]
        self._warm_mean = mean
        self._warm_best = best_joints
        self._warm_elites = kept
        result = PlanResult(
            joints=best_joints,
            actions=best_actions,
            mean=mean,
            sigma=sigma,
            cost=best_cost,
            iterations_run=iterations_run,
            cancelled=cancelled,
            evaluations=evaluations,
            mpc_step=self._mpc_step,
            timings=timings,
        )
        self._mpc_step += 1
        return result

    # ------------------------------------------------------------------ internals

    def _check_joints(self, value: torch.Tensor, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        value = torch.as_tensor(value)
        if tuple(value.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(value.shape)}")
        if not value.is_floating_point():
            value = value.float()
        if not torch.isfinite(value).all():
            raise ValueError(f"{name} contains NaN or inf")
        return value.detach().to(device="cpu", dtype=torch.float32)

    def _clip(self, joints: torch.Tensor) -> torch.Tensor:
        return torch.maximum(torch.minimum(joints, self.upper), self.lower)

    def _warm_candidates(self) -> torch.Tensor:
        """Previous best (and kept elites for iCEM) shifted one step, last step repeated."""
        sequences = [self._warm_best.unsqueeze(0)]
        if self.config.sampler == "icem" and self._warm_elites is not None:
            sequences.append(self._warm_elites)
        return _shift(torch.cat(sequences))

    def _population(self, iteration: int) -> int:
        cfg = self.config
        if cfg.sampler == "cem":
            return cfg.num_samples
        decayed = int(cfg.num_samples * cfg.population_decay ** (-iteration))
        return min(cfg.num_samples, max(decayed, 2 * cfg.num_elites))

    def _sample(self, mean: torch.Tensor, sigma: torch.Tensor, iteration: int) -> torch.Tensor:
        cfg = self.config
        num = self._population(iteration)
        horizon = len(mean)
        if cfg.sampler == "icem" and cfg.noise_beta > 0:
            noise = colored_noise(cfg.noise_beta, num, horizon, self.num_joints, self._generator)
        else:
            noise = torch.randn(num, horizon, self.num_joints, generator=self._generator)
        return mean + sigma * noise

    def _actions(self, observed: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        keypoints = self.keypoint_fn(candidates)
        expected = (*candidates.shape[:-1], NUM_HAND_KEYPOINTS, 3)
        if tuple(keypoints.shape) != expected:
            raise ValueError(
                f"keypoint_fn returned shape {tuple(keypoints.shape)}, expected {expected}"
            )
        keypoints = keypoints.to(device="cpu", dtype=torch.float32)
        return robot_hand_actions(self.action_representation, observed, keypoints)

    def _evaluate(
        self, evaluate: EvaluateFn, actions: torch.Tensor, joints: torch.Tensor
    ) -> torch.Tensor:
        return self._check_costs(evaluate(actions, joints), len(joints))

    @staticmethod
    def _check_costs(costs: torch.Tensor, num: int) -> torch.Tensor:
        costs = torch.as_tensor(costs).detach().to(device="cpu", dtype=torch.float32)
        if tuple(costs.shape) != (num,):
            raise ValueError(
                f"cost function returned shape {tuple(costs.shape)}, expected ({num},)"
            )
        if torch.isnan(costs).any():
            raise ValueError("cost function returned NaN costs")
        return costs

    def _update(
        self, mean: torch.Tensor, sigma: torch.Tensor, elites: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        elite_mean = elites.mean(0)
        elite_std = elites.std(0, unbiased=False) if len(elites) > 1 else torch.zeros_like(mean)
        new_mean = cfg.momentum * mean + (1.0 - cfg.momentum) * elite_mean
        new_sigma = cfg.momentum * sigma + (1.0 - cfg.momentum) * elite_std
        return new_mean, new_sigma.clamp_min(cfg.min_sigma)
