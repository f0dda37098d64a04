"""Planning cost (DexWM paper section 3.4): latent distance to the goal plus keypoint term.

``WorldModelCost`` runs where the world model lives (the ROS world-model server): context and
goal latents are set once per control tick, then each CEM iteration sends ``N x T`` candidate
actions and gets ``N`` costs back. ``OrientationCost`` is the grasp task's end-effector
orientation term; it needs only joints and kinematics, so it runs planner-side
(``CEMPlanner(extra_cost=...)``).
"""
from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from dexwm_ros.core.actions import (
    ACTION_DIM,
    ACTION_ROWS,
    NUM_HAND_KEYPOINTS,
    RIGHT_HAND_ROWS,
    WRIST_AND_TIPS,
)
from dexwm_ros.core.allocator import retain_freed_memory
from dexwm_ros.core.parameters import parameter
from dexwm_ros.core.tasks import task_spec

#: Keypoint-head maps of the right hand: wrist + 5 fingertips (paper appendix A.3).
RIGHT_HAND_MAPS = (6, 7, 8, 9, 10, 11)
NUM_KEYPOINT_MAPS = 12
#: Where the keypoint term takes a candidate's hand keypoints from (``CostWeights``).
KEYPOINT_SOURCES = ("latents", "actions")
#: Which horizon steps the keypoint term scores (``CostWeights.keypoint_steps``).
KEYPOINT_STEPS = ("final", "all")


_MSE_CHUNK = 8


class EncoderMismatchError(ValueError):
    """Latents come from a different image encoder than the world model was trained on."""


@dataclass
class CostWeights:
    """Weights of the planning cost; every number is a parameter.

    Latent term: ``latent_weight * sum_t step_discount^(T-1-t) * MSE(pred_t, goal)`` (the final step
    has weight 1; earlier steps 0.6, 0.36, ...). Keypoint term: ``keypoint_weight`` (mu) times the
    mean pixel distance over ``keypoint_maps`` between a candidate's final keypoints
    (``keypoint_source``, below) and the keypoint head's decoding of the goal latent; with
    ``keypoint_steps: all`` (not in the paper) every step's keypoints, weighted like the latent
    term's steps (README, "The default world model in closed loop"). The paper's mu
    is 1e-3 with DINOv2-L latents; the default 1e-2 was measured with the packaged default model,
    whose pooled tiny latents rank hand poses far worse than its keypoint head does (README, "The
    default world model in closed loop"). Depth term (not in the paper; only with a keypoint head
    that has a depth output): ``keypoint_depth_weight`` times the mean absolute difference (metres)
    of the same keypoints' depths, decoded likewise: image-plane keypoints alone cannot tell a hand
    at the goal from one on the same camera rays nearer or farther (README, "The default world model
    in closed loop"). ``keypoint_source`` says where a candidate's keypoints come from: ``latents``
    (the paper) decodes the final predicted latent with the keypoint head; ``actions`` (the default;
    not in the paper) takes the hand keypoints the candidate's actions lead to (the newest context
    frame's keypoints plus the summed keypoint deltas: a robot's actions are its own forward
    kinematics), projected into the image, so the head decodes only the goal image and the predictor
    supplies the latent term (README, "The default world model in closed loop"). Orientation term
    (grasp): ``orientation_weight`` times the discounted wrist rotation angle (rad) to a target.
    Every weight may change between scoring calls (``live``, ``dexwm_ros.core.parameters``).
    """

    latent_weight: float = parameter(1.0, "weight of the latent MSE", low=0.0, high=1e6,
                                     live=True)
    step_discount: float = parameter(0.6, "weight ratio of each earlier horizon step",
                                     low=0.0, high=1.0, live=True)
    keypoint_weight: float = parameter(1e-2, "mu: weight of the keypoint pixel distance "
                                       "(the paper: 1e-3 with DINOv2-L latents)",
                                       low=0.0, high=1e3, live=True)
    keypoint_depth_weight: float = parameter(
        1.0, "weight per metre of the keypoint depth difference (heads with a depth output "
        "only; not in the paper)", low=0.0, high=1e4, live=True)
    keypoint_maps: tuple[int, ...] = parameter(
        RIGHT_HAND_MAPS, "keypoint-head maps of the keypoint term (0-11; right hand: wrist + "
        "fingertips = 6-11)", live=True)
    keypoint_source: str = parameter(
        "actions", "candidate keypoints of the keypoint term: actions (the hand keypoints the "
        "keypoint-delta actions lead to, projected; not in the paper) or latents (the paper: "
        "the keypoint head on the final predicted latent)", live=True)
    keypoint_steps: str = parameter(
        "all", "horizon steps of the keypoint term: all (every step, weighted like the latent "
        "term; not in the paper) or final (the paper)", live=True)
    orientation_weight: float = parameter(0.0, "weight of the wrist rotation (rad) to the wrist "
                                          "rotation at goal start", low=0.0, high=100.0,
                                          live=True)
    workspace_weight: float = parameter(10.0, "weight per metre of the wrist outside the "
                                        "workspace box (summed over the horizon)", low=0.0,
                                        high=1e4, live=True)
    workspace_low: tuple[float, ...] = parameter(
        (-0.2, -0.5, 0.9), "lower corner (x, y, z) of the wrist workspace box, world frame (m)",
        live=True)
    workspace_high: tuple[float, ...] = parameter(
        (0.3, 0.15, 1.4), "upper corner (x, y, z) of the wrist workspace box, world frame (m)",
        live=True)

    def validate(self) -> CostWeights:
        """Raise ``ValueError`` naming the first bad field; return ``self`` when valid."""
        for name in ("latent_weight", "step_discount", "keypoint_weight",
                     "keypoint_depth_weight", "orientation_weight", "workspace_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"CostWeights.{name} must be finite and >= 0, got {value!r}")
        maps = tuple(self.keypoint_maps)
        if not maps or any(not 0 <= m < NUM_KEYPOINT_MAPS for m in maps):
            raise ValueError(
                f"CostWeights.keypoint_maps must be non-empty indices in [0, {NUM_KEYPOINT_MAPS}),"
                f" got {maps!r}"
            )
        if self.keypoint_source not in KEYPOINT_SOURCES:
            raise ValueError(f"CostWeights.keypoint_source must be one of {KEYPOINT_SOURCES}, "
                             f"got {self.keypoint_source!r}")
        if self.keypoint_steps not in KEYPOINT_STEPS:
            raise ValueError(f"CostWeights.keypoint_steps must be one of {KEYPOINT_STEPS}, "
                             f"got {self.keypoint_steps!r}")
        if self.keypoint_source == "actions" and not set(maps) <= set(RIGHT_HAND_MAPS):
            raise ValueError(f"CostWeights.keypoint_maps must be right-hand maps "
                             f"{RIGHT_HAND_MAPS} with keypoint_source 'actions' (a one-handed "
                             f"robot), got {maps!r}")
        low, high = tuple(self.workspace_low), tuple(self.workspace_high)
        if len(low) != 3 or len(high) != 3 or not all(
                math.isfinite(a) and math.isfinite(b) and a < b
                for a, b in zip(low, high, strict=True)):
            raise ValueError(f"CostWeights.workspace_low/high must be 3 finite values each, "
                             f"low < high, got {low!r} and {high!r}")
        return self

    @classmethod
    def for_task(cls, task: str, **overrides) -> CostWeights:
        """The task registry's weights for ``task`` (grasp: orientation 0.1), then overrides."""
        return replace(cls(**task_spec(task).cost_overrides), **overrides).validate()

    def step_weights(self, horizon: int) -> torch.Tensor:
        """``(T,)`` weights ``step_discount^(T-1-t)``."""
        exponents = torch.arange(horizon - 1, -1, -1, dtype=torch.float64)
        return torch.as_tensor(self.step_discount, dtype=torch.float64).pow(exponents).float()


def check_keypoint_source(weights: CostWeights, action_dim: int) -> CostWeights:
    """``weights`` if their keypoint source can read a world model's actions of ``action_dim``
    floats; ``ValueError`` naming the fix if not (``actions`` needs keypoint deltas, 132)."""
    if weights.keypoint_source == "actions" and action_dim != ACTION_DIM:
        raise ValueError(f"keypoint_source 'actions' needs keypoint-delta actions ({ACTION_DIM}), "
                         f"the world model takes {action_dim}: set keypoint_source 'latents'")
    return weights


def _check_finite(value: torch.Tensor, name: str) -> None:
    if not torch.isfinite(value).all():
        raise ValueError(f"{name} contains NaN or inf")


class WorldModelCost:
    """Scores candidate action sequences with the world model against a goal.

    ``predictor.score_candidates(context_latents (C,P,D), context_actions (C-1,132),
    candidate_actions (n,T,132), chunk_size) -> (n,T,P,D)`` encodes the shared context once per
    call. ``costs`` sends at most ``batch_size`` candidates per call so that the ``(n,T,P,D)``
    predictions stay small (``None``: as many as fit ``prediction_budget_bytes``).
    ``keypoint_head.keypoints(latents (B,P,D), chunk_size, maps, with_depth) -> ((B,K,2), (B,K)
    or None)`` decodes pixel keypoints (and depths, with a depth output) of all 12 maps
    (``maps=None``) or of the cost's ``keypoint_maps`` only; without a head the keypoint term is
    off. ``chunk_size`` goes to both (None: their defaults). ``autocast`` (e.g.
    ``torch.bfloat16``, the fast path on CPUs with AMX) runs predictor and keypoint head under
    autocast. ``encoder_name`` is the encoder the world model expects; latents from another raise
    ``EncoderMismatchError``. Context frames beyond the model's capacity for the candidates' horizon
    are dropped, oldest first (``_context_window``). ``last_timing`` holds the seconds of the latest
    ``costs`` call spent in ``world_model`` (predictor), ``keypoint_head`` and ``cost`` (the
    arithmetic). With ``keypoint_source`` ``actions`` the candidates' keypoints come from their
    keypoint-delta actions and the context's ``hand_keypoints``, projected by ``camera`` (a
    ``PinholeCamera`` of the images the head was trained on). Constructing one makes the process
    keep freed memory (``allocator.retain_freed_memory``): scoring is faster without page faults.
    """

    def __init__(
        self,
        predictor,
        keypoint_head,
        encoder_name: str,
        weights: CostWeights | None = None,
        chunk_size: int | None = None,
        batch_size: int | None = None,
        autocast: torch.dtype | None = None,
        prediction_budget_bytes: int = 512 << 20,
        camera=None,
    ) -> None:
        for name, value in (("chunk_size", chunk_size), ("batch_size", batch_size)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"WorldModelCost: {name} must be a positive int or None")
        retain_freed_memory()
        self.autocast = autocast
        self.prediction_budget_bytes = prediction_budget_bytes
        self.predictor = predictor
        self.keypoint_head = keypoint_head
        self.encoder_name = encoder_name
        config = getattr(predictor, "config", None)
        self.action_dim = getattr(config, "action_dim", ACTION_DIM)
        self.weights = (weights or CostWeights()).validate()
        if keypoint_head is not None:
            check_keypoint_source(self.weights, self.action_dim)
        self.chunk_size = chunk_size
        self.batch_size = batch_size
        self.camera = camera
        self._context_latents: torch.Tensor | None = None
        self._context_actions: torch.Tensor | None = None
        self._hand_keypoints: torch.Tensor | None = None
        self._goal_latents: torch.Tensor | None = None
        self._goal_keypoints: torch.Tensor | None = None
        self._goal_depths: torch.Tensor | None = None
        self.last_timing: dict[str, float] = {}

    # ------------------------------------------------------------------ state

    @property
    def ready(self) -> bool:
        """True once both context and goal are set."""
        return self._context_latents is not None and self._goal_latents is not None

    @property
    def goal_keypoints(self) -> torch.Tensor | None:
        """``(12, 2)`` pixel keypoints decoded from the goal latents (None without a head)."""
        return self._goal_keypoints

    @property
    def goal_depths(self) -> torch.Tensor | None:
        """``(12,)`` camera depths (m) decoded from the goal latents (None without a head
        with a depth output)."""
        return self._goal_depths

    def set_context(
        self, latents: torch.Tensor, context_actions: torch.Tensor, encoder_name: str,
        hand_keypoints: torch.Tensor | None = None,
    ) -> None:
        """Context latents ``(C, P, D)`` (last = current frame), the ``(C-1, 132)`` actions
        between consecutive context frames and, for ``keypoint_source`` ``actions``, the current
        frame's right-hand keypoints ``(21, 3)`` in the actions' camera frame."""
        self._check_encoder(encoder_name, "context")
        latents = torch.as_tensor(latents)
        context_actions = torch.as_tensor(context_actions)
        if latents.ndim != 3 or latents.shape[0] < 1:
            raise ValueError(
                f"context latents must have shape (C, P, D) with C >= 1, got {tuple(latents.shape)}"
            )
        self._check_latent_shape(latents.shape[1:], "context latents")
        expected = (latents.shape[0] - 1, self.action_dim)
        if tuple(context_actions.shape) != expected:
            raise ValueError(
                f"context actions must have shape {expected} for {latents.shape[0]} context "
                f"frames, got {tuple(context_actions.shape)}"
            )
        _check_finite(latents, "context latents")
        _check_finite(context_actions, "context actions")
        if hand_keypoints is not None:
            hand_keypoints = torch.as_tensor(hand_keypoints, dtype=torch.float32)
            if tuple(hand_keypoints.shape) != (NUM_HAND_KEYPOINTS, 3):
                raise ValueError(f"hand keypoints must have shape ({NUM_HAND_KEYPOINTS}, 3), "
                                 f"got {tuple(hand_keypoints.shape)}")
            _check_finite(hand_keypoints, "hand keypoints")
        if self._goal_latents is not None and latents.shape[1:] != self._goal_latents.shape:
            raise EncoderMismatchError(
                f"context latents {tuple(latents.shape[1:])} and goal latents "
                f"{tuple(self._goal_latents.shape)} differ in shape: different encoders?"
            )
        device, dtype = self._device_dtype()
        self._context_latents = latents.detach().to(device=device, dtype=dtype)
        self._context_actions = context_actions.detach().to(device=device, dtype=dtype)
        self._hand_keypoints = None if hand_keypoints is None else hand_keypoints.to(device)

    def set_goal(self, goal_latents: torch.Tensor, encoder_name: str) -> None:
        """Goal latents ``(P, D)``; their keypoints are decoded once here."""
        self._check_encoder(encoder_name, "goal")
        goal = torch.as_tensor(goal_latents)
        if goal.ndim != 2:
            raise ValueError(f"goal latents must have shape (P, D), got {tuple(goal.shape)}")
        self._check_latent_shape(goal.shape, "goal latents")
        _check_finite(goal, "goal latents")
        if self._context_latents is not None and goal.shape != self._context_latents.shape[1:]:
            raise EncoderMismatchError(
                f"goal latents {tuple(goal.shape)} and context latents "
                f"{tuple(self._context_latents.shape[1:])} differ in shape: different encoders?"
            )
        device, dtype = self._device_dtype()
        goal = goal.detach().to(device=device, dtype=dtype)
        keypoints = depths = None
        if self.keypoint_head is not None:
            with torch.inference_mode(), self._autocast(device):
                keypoints, depths = self._keypoints(goal.unsqueeze(0), with_depth=True)
            keypoints, depths = keypoints[0], None if depths is None else depths[0]
        self._goal_latents = goal
        self._goal_keypoints = keypoints
        self._goal_depths = depths

    def clear(self) -> None:
        """Drop context and goal."""
        self._context_latents = self._context_actions = self._hand_keypoints = None
        self._goal_latents = self._goal_keypoints = self._goal_depths = None

    # ------------------------------------------------------------------ scoring

    def costs(self, actions: torch.Tensor) -> torch.Tensor:
        """Cost ``(N,)`` (float32, CPU) of candidate action sequences ``(N, T, 132)``."""
        self._require_ready()
        actions = torch.as_tensor(actions)
        if actions.ndim != 3 or actions.shape[-1] != self.action_dim or actions.shape[0] < 1:
            raise ValueError(
                f"candidate actions must have shape (N, T, {self.action_dim}), "
                f"got {tuple(actions.shape)}"
            )
        _check_finite(actions, "candidate actions")
        device, dtype = self._device_dtype()
        actions = actions.to(device=device, dtype=dtype)
        step_weights = self.weights.step_weights(actions.shape[1]).to(device)
        timing = dict.fromkeys(("world_model", "keypoint_head", "cost"), 0.0)
        batch = self.batch_size or max(
            1, self.prediction_budget_bytes // (actions.shape[1] * self._goal_latents.numel() * 4)
        )
        out = []
        with torch.inference_mode(), self._autocast(device):
            for first in range(0, len(actions), batch):
                out.append(self._batch_costs(actions[first : first + batch], step_weights, timing))
        self.last_timing = timing
        return torch.cat(out).float().cpu()

    def rollout(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Predicted latents ``(T, P, D)`` and keypoints ``(T, 12, 2)`` (None without a head)
        for one action sequence ``(T, 132)``, e.g. to visualise the chosen plan."""
        self._require_ready()
        actions = torch.as_tensor(actions)
        if actions.ndim != 2 or actions.shape[-1] != self.action_dim:
            raise ValueError(
                f"rollout actions must have shape (T, {self.action_dim}), "
                f"got {tuple(actions.shape)}"
            )
        _check_finite(actions, "rollout actions")
        device, dtype = self._device_dtype()
        with torch.inference_mode(), self._autocast(device):
            latents = self._predict(actions.to(device=device, dtype=dtype).unsqueeze(0))[0]
            keypoints = (self._keypoints(latents)[0] if self.keypoint_head is not None
                         else None)
        return latents, keypoints

    # ------------------------------------------------------------------ internals

    def _batch_costs(
        self, actions: torch.Tensor, step_weights: torch.Tensor, timing: dict[str, float]
    ) -> torch.Tensor:
        tick = time.perf_counter()
        predicted = self._predict(actions)
        timing["world_model"] += time.perf_counter() - tick

        tick = time.perf_counter()
        # a few candidates at a time: no temporaries as large as the predictions themselves
        goal = self._goal_latents.float()
        mse = torch.cat([
            (chunk.float() - goal).square_().mean(dim=(-2, -1))
            for chunk in predicted.split(_MSE_CHUNK)
        ])
        cost = self.weights.latent_weight * (mse * step_weights).sum(-1)
        timing["cost"] += time.perf_counter() - tick

        if self.keypoint_head is not None and self.weights.keypoint_weight > 0:
            tick = time.perf_counter()
            maps = tuple(self.weights.keypoint_maps)
            with_depth = self._goal_depths is not None and self.weights.keypoint_depth_weight > 0
            steps = actions.shape[1] if self.weights.keypoint_steps == "all" else 1
            if self.weights.keypoint_source == "actions":
                keypoints, depths = self._action_keypoints(actions, maps)
                keypoints, depths = keypoints[:, -steps:], depths[:, -steps:]
            else:
                keypoints, depths = self._keypoints(predicted[:, -steps:].flatten(0, 1), maps,
                                                    with_depth)
                keypoints = keypoints.unflatten(0, (len(actions), steps))
                depths = None if depths is None else depths.unflatten(0, (len(actions), steps))
                timing["keypoint_head"] += time.perf_counter() - tick
                tick = time.perf_counter()
            kept = step_weights[-steps:]
            distance = (keypoints - self._goal_keypoints[list(maps)]).norm(dim=-1).mean(-1)
            cost = cost + self.weights.keypoint_weight * (distance * kept).sum(-1)
            if with_depth:
                depth = (depths - self._goal_depths[list(maps)]).abs().mean(-1)
                cost = cost + self.weights.keypoint_depth_weight * (depth * kept).sum(-1)
            timing["cost"] += time.perf_counter() - tick
        return cost

    def _action_keypoints(self, actions: torch.Tensor, maps: tuple[int, ...]
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels ``(n, T, K, 2)`` and depths ``(n, T, K)`` of the right-hand keypoints of
        ``maps`` after each step of the candidates' keypoint-delta actions ``(n, T, 132)``."""
        if self.action_dim != ACTION_DIM or self.camera is None or self._hand_keypoints is None:
            raise RuntimeError(
                "keypoint_source 'actions' needs keypoint-delta actions (132), a camera and the "
                "context's hand keypoints (set_context(..., hand_keypoints=...))")
        deltas = actions.float().unflatten(-1, (ACTION_ROWS, 3))[:, :, RIGHT_HAND_ROWS]
        rows = [WRIST_AND_TIPS[m - RIGHT_HAND_MAPS[0]] for m in maps]
        points = self._hand_keypoints[rows] + deltas[:, :, rows].cumsum(1)
        return self.camera.project(points).float(), points[..., 2]

    def _context_window(self, horizon: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Context frames that fit the model with ``horizon`` predictions: the newest
        ``num_slots - horizon + 1`` (oldest dropped first), so that scoring always takes the
        shared-context path instead of sliding its window per candidate."""
        slots = getattr(getattr(self.predictor, "config", None), "num_slots", None)
        latents, actions = self._context_latents, self._context_actions
        if slots is None or len(latents) + horizon - 1 <= slots:
            return latents, actions
        keep = slots - horizon + 1
        if keep < 1:
            raise ValueError(f"horizon {horizon} does not fit the world model's {slots} frame "
                             f"slots (context + horizon - 1 <= {slots})")
        return latents[-keep:], actions[len(actions) - (keep - 1):]

    def _predict(self, actions: torch.Tensor) -> torch.Tensor:
        context, context_actions = self._context_window(actions.shape[1])
        predicted = self.predictor.score_candidates(
            context, context_actions, actions, chunk_size=self.chunk_size
        )
        expected = (*actions.shape[:2], *self._goal_shape())
        if tuple(predicted.shape) != expected:
            raise ValueError(
                f"predictor.score_candidates returned {tuple(predicted.shape)}, expected {expected}"
            )
        return predicted

    def _keypoints(self, latents: torch.Tensor, maps: tuple[int, ...] | None = None,
                   with_depth: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Pixel keypoints ``(B, K, 2)`` of all 12 maps, or of ``maps`` only, and with
        ``with_depth`` their depths ``(B, K)`` where the head has a depth output (else None)."""
        options = {} if self.chunk_size is None else {"chunk_size": self.chunk_size}
        keypoints, depths = self.keypoint_head.keypoints(latents, maps=maps,
                                                         with_depth=with_depth, **options)
        expected = (len(latents), NUM_KEYPOINT_MAPS if maps is None else len(maps), 2)
        if tuple(keypoints.shape) != expected:
            raise ValueError(
                f"keypoint_head.keypoints returned {tuple(keypoints.shape)}, expected "
                f"{expected}"
            )
        return keypoints.float(), None if depths is None else depths.float()

    def _goal_shape(self) -> tuple[int, int]:
        source = self._goal_latents if self._goal_latents is not None else self._context_latents
        return tuple(source.shape[-2:])

    def _check_encoder(self, encoder_name: str, what: str) -> None:
        if encoder_name != self.encoder_name:
            raise EncoderMismatchError(
                f"{what} latents come from encoder {encoder_name!r} but the world model expects "
                f"{self.encoder_name!r}"
            )

    def _check_latent_shape(self, shape: torch.Size, what: str) -> None:
        config = getattr(self.predictor, "config", None)
        expected = (getattr(config, "num_patches", None), getattr(config, "latent_dim", None))
        if None in expected:
            return
        if tuple(shape) != expected:
            raise EncoderMismatchError(
                f"{what} have (P, D) = {tuple(shape)} but the predictor expects {expected}: "
                f"different encoder or resolution?"
            )

    def _autocast(self, device: torch.device):
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.autocast)

    def _device_dtype(self) -> tuple[torch.device, torch.dtype]:
        parameters = getattr(self.predictor, "parameters", None)
        if parameters is not None:
            for parameter in parameters():
                return parameter.device, parameter.dtype
        return torch.device("cpu"), torch.float32

    def _require_ready(self) -> None:
        missing = [
            name
            for name, value in (("context", self._context_latents), ("goal", self._goal_latents))
            if value is None
        ]
        if missing:
            raise RuntimeError(
                f"WorldModelCost: set_{' and set_'.join(missing)} must be called before scoring"
            )


class OrientationCost:
    """Grasp orientation term: discounted wrist rotation angle to a target, times a weight.

    ``wrist_pose_fn(joints (N, T, J)) -> (N, T, 4, 4)`` (e.g. ``RobotKinematics.wrist_pose_world``)
    and ``target_rotation`` ``(3, 3)`` in the same frame. Returns
    ``orientation_weight * sum_t step_discount^(T-1-t) * angle_t`` per candidate, for
    ``CEMPlanner(extra_cost=...)``.
    """

    def __init__(
        self,
        wrist_pose_fn: Callable[[torch.Tensor], torch.Tensor],
        target_rotation: torch.Tensor,
        weights: CostWeights,
    ) -> None:
        target = torch.as_tensor(target_rotation, dtype=torch.float32)
        if target.shape != (3, 3):
            raise ValueError(f"target_rotation must be (3, 3), got {tuple(target.shape)}")
        _check_finite(target, "target_rotation")
        identity = torch.eye(3)
        if not torch.allclose(target @ target.T, identity, atol=1e-4) or torch.det(target) < 0:
            raise ValueError("target_rotation must be a proper rotation matrix")
        self.wrist_pose_fn = wrist_pose_fn
        self.target_rotation = target
        self.weights = weights.validate()

    def __call__(self, joints: torch.Tensor) -> torch.Tensor:
        poses = self.wrist_pose_fn(joints)
        if tuple(poses.shape) != (*joints.shape[:-1], 4, 4):
            raise ValueError(
                f"wrist_pose_fn returned {tuple(poses.shape)}, expected "
                f"{(*joints.shape[:-1], 4, 4)}"
            )
        rotation = poses[..., :3, :3].float().cpu()
        cos = ((self.target_rotation.T @ rotation).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
        angle = torch.arccos(cos.clamp(-1.0, 1.0))
        step_weights = self.weights.step_weights(joints.shape[-2])
        return self.weights.orientation_weight * (angle * step_weights).sum(-1)


class KeypointGoalCost:
    """The privileged planning cost of the ``oracle`` policy: true hand keypoints against the
    goal's, no world model.

    ``cost = sum_t step_discount^(T-1-t) * mean_k |FK(joints_t)_k - goal_k|`` over the 21
    right-hand keypoints (world frame, metres), with the same discount as the latent term.
    Used as ``evaluate(actions, joints)`` in the MPC session; ``actions`` are ignored.
    """

    def __init__(self, keypoints_world: Callable[[torch.Tensor], torch.Tensor],
                 goal_keypoints: torch.Tensor, step_discount: float = 0.6) -> None:
        goal = torch.as_tensor(goal_keypoints, dtype=torch.float32)
        if goal.ndim != 2 or goal.shape[-1] != 3:
            raise ValueError(f"goal keypoints must be (K, 3), got {tuple(goal.shape)}")
        _check_finite(goal, "goal keypoints")
        self.keypoints_world = keypoints_world
        self.goal = goal
        self.weights = CostWeights(step_discount=step_discount).validate()

    def __call__(self, actions: torch.Tensor, joints: torch.Tensor) -> torch.Tensor:
        distance = (self.keypoints_world(joints) - self.goal).norm(dim=-1).mean(-1)
        return (distance * self.weights.step_weights(joints.shape[-2])).sum(-1)


class WorkspaceCost:
    """Keeps plans in the robot cell's workspace: ``workspace_weight`` times the distance (m)
    of the wrist outside the box ``workspace_low``..``workspace_high`` (world frame), summed
    over the horizon steps. Not in the paper: a learned model is only right where it has data
    (the default box is the region over the table that exploration covers and every task's
    goal lies in), and CEM otherwise finds plans the model scores well and reality does not.
    ``wrist_position_fn(joints (N, T, J)) -> (N, T, 3)``, e.g. from
    ``RobotKinematics.wrist_pose_world``."""

    def __init__(self, wrist_position_fn: Callable[[torch.Tensor], torch.Tensor],
                 weights: CostWeights) -> None:
        self.weights = weights.validate()
        self.wrist_position_fn = wrist_position_fn
        self.low = torch.tensor(weights.workspace_low, dtype=torch.float32)
        self.high = torch.tensor(weights.workspace_high, dtype=torch.float32)

    def __call__(self, joints: torch.Tensor) -> torch.Tensor:
        position = self.wrist_position_fn(joints).float().cpu()
        if tuple(position.shape) != (*joints.shape[:-1], 3):
            raise ValueError(f"wrist_position_fn returned {tuple(position.shape)}, expected "
                             f"{(*joints.shape[:-1], 3)}")
        outside = (self.low - position).clamp_min(0) + (position - self.high).clamp_min(0)
        return self.weights.workspace_weight * outside.norm(dim=-1).sum(-1)

