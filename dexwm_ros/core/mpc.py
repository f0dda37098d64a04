"""One MPC session per goal, shared by the ``cem_planner`` ROS node and the evaluator.

The protocol of the DexWM paper, appendix B: plan ``T`` joint targets with CEM, execute the
first, "then replan for the remaining T - 1 steps" (a shrinking horizon), and start a new
``T``-step plan once the previous one is used up. Our reading of the sigma handling: a new
plan starts from the initial sigma (0.3 rad arm, 0.1 hand, 0.01 hand for place) around the
current joints; the re-plans of its remaining steps start from the previous search's final
mean and sigma of those steps (the elites' statistics, floored at ``min_sigma``), so they
refine the plan being executed with what the newest observation shows. For grasping, the first
plan's mean is the reference "dummy" grasp motion (approach the table top and close the hand,
not aimed at any object; appendix B: "good initialization ... is crucial"), ``T`` steps
sampled uniformly from it and shifted to start at the current joints.

The caller supplies the scorer for every control tick (``evaluate(actions, joints) -> costs``,
e.g. the world-model server over ROS, an in-process ``WorldModelCost``, or the simulator's
privileged ``KeypointGoalCost``) after updating its context to the newest observation.
``on_iteration`` receives every CEM iteration's ``IterationInfo``; returning ``False`` cancels
the tick (cancel or preemption), which then returns ``cancelled=True`` and no target.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from dexwm_ros.core.actions import ACTION_REPRESENTATIONS, robot_hand_actions
from dexwm_ros.core.kinematics import HOME_JOINT_POSITIONS, PinholeCamera, RobotKinematics
from dexwm_ros.core.planner import CEMConfig, CEMPlanner, EvaluateFn, IterationHook, PlanResult
from dexwm_ros.core.planning_cost import CostWeights, OrientationCost, WorkspaceCost
from dexwm_ros.core.tasks import TaskSpec, task_spec

#: Bones of the 21-keypoint hand (``HAND21`` order): wrist to each knuckle, then along each
#: finger.
BONES = [(0, 1 + 4 * f) for f in range(5)] + [
    (1 + 4 * f + j, 2 + 4 * f + j) for f in range(5) for j in range(3)]
#: The reference grasp's end pose (arm joints): the wrist 19 cm above the middle of the object
#: region (pre-shaped fingertips about 2 cm above the table), hand pointing down.
REFERENCE_GRASP_ARM = (0.409, 0.18, 0.106, -2.565, -0.048, 2.744, 1.343)
#: Hand joints while approaching (claw pre-shape) and at the end (closed).
REFERENCE_GRASP_PRESHAPE = (0.0, 0.6, 0.6, 0.4) * 3 + (1.0, 0.5, 0.4, 0.4)
REFERENCE_GRASP_CLOSED = (0.0, 1.3, 1.3, 1.0) * 3 + (1.3, 0.9, 0.9, 0.9)


def reference_grasp_motion(steps: int = 10) -> torch.Tensor:
    """The dummy grasp as ``(steps, 23)`` joint targets from the home pose: 60% of the time
    descending with the pre-shaped hand, then closing it."""
    home = torch.tensor(HOME_JOINT_POSITIONS)
    down = torch.tensor(REFERENCE_GRASP_ARM + REFERENCE_GRASP_PRESHAPE)
    closed = torch.tensor(REFERENCE_GRASP_ARM + REFERENCE_GRASP_CLOSED)
    descend = max(1, round(0.6 * steps))
    fractions = torch.arange(1, steps + 1, dtype=torch.float32)
    out = []
    for i in fractions.tolist():
        if i <= descend:
            out.append(home + (down - home) * (i / descend))
        else:
            out.append(down + (closed - down) * ((i - descend) / max(1, steps - descend)))
    return torch.stack(out)


@dataclass
class MPCTick:
    """What one control tick produced: the joint target to execute (None when cancelled), the
    plan it came from, and the horizon that was planned."""

    target: torch.Tensor | None
    plan: PlanResult
    horizon: int
    cancelled: bool


class MPCSession:
    """Plans one goal tick by tick (see the module docstring).

    ``kinematics``/``camera`` give the batched FK of candidates (actions are keypoint deltas in
    the camera frame). ``weights`` (default: the task registry's) set the planner-side cost
    terms: the wrist workspace box (``WorkspaceCost``, every task) and the wrist orientation
    (grasp), whose target is the wrist rotation when the goal starts. Both read ``weights``
    at every scoring call, so new weights take effect at the next CEM iteration.
    """

    def __init__(self, task: str | TaskSpec, config: CEMConfig, kinematics: RobotKinematics,
                 camera: PinholeCamera, weights: CostWeights | None = None,
                 action_representation: str = "keypoint_delta") -> None:
        self.spec = task if isinstance(task, TaskSpec) else task_spec(task)
        self.kinematics = kinematics
        self.camera = camera
        self.weights = weights or CostWeights.for_task(self.spec.name)
        self.planner = CEMPlanner(config, lambda q: kinematics.keypoints_camera(q, camera),
                                  kinematics.lower, kinematics.upper,
                                  action_representation=action_representation)
        self.horizon = config.horizon
        self.reset()

    def reset(self) -> None:
        """Forget the goal's progress (the next tick starts a new goal)."""
        self.planner.reset()
        self.planner.extra_cost = self.planner_cost
        self.ticks = 0
        self._start_rotation: torch.Tensor | None = None
        self._remaining: tuple[torch.Tensor, torch.Tensor] | None = None

    def planner_cost(self, joints: torch.Tensor) -> torch.Tensor:
        """``(N,)`` planner-side terms of candidate joints ``(N, T, 23)`` under the current
        ``weights``: workspace box and (grasp) wrist orientation to its rotation at goal start."""
        total = torch.zeros(joints.shape[0])
        orientation = self.weights.orientation_weight > 0 and self._start_rotation is not None
        if self.weights.workspace_weight == 0 and not orientation:
            return total
        poses = self.kinematics.wrist_pose_world(joints)  # once for both terms
        if self.weights.workspace_weight > 0:
            total = total + WorkspaceCost(lambda _: poses[..., :3, 3], self.weights)(joints)
        if orientation:
            total = total + OrientationCost(lambda _: poses, self._start_rotation,
                                            self.weights)(joints)
        return total

    def step(self, current_joints: torch.Tensor, evaluate: EvaluateFn,
             on_iteration: IterationHook | None = None) -> MPCTick:
        """Plan from ``current_joints`` (23,) and return the target to execute now."""
        current = torch.as_tensor(current_joints, dtype=torch.float32)
        if self.ticks == 0:
            self._start_rotation = self.kinematics.wrist_pose_world(current)[:3, :3].float()
        if self._remaining is None:
            horizon, mean, sigma = self.horizon, self._new_mean(current), None
        else:
            mean, sigma = self._remaining
            horizon = len(mean)
        observed = self.kinematics.keypoints_camera(current, self.camera)
        plan = self.planner.plan(current, observed, evaluate, on_iteration, initial_mean=mean,
                                 initial_sigma=sigma, horizon=horizon)
        if plan.cancelled:
            return MPCTick(None, plan, horizon, True)
        self.ticks += 1
        self._remaining = (plan.mean[1:], plan.sigma[1:]) if horizon > 1 else None
        return MPCTick(plan.joints[0].clone(), plan, horizon, False)

    def _new_mean(self, current: torch.Tensor) -> torch.Tensor | None:
        """The first grasp plan starts from the reference grasp; every other from the current
        joints repeated (``None`` lets the planner do that)."""
        if not (self.spec.reference_grasp_init and self.ticks == 0):
            return None
        motion = reference_grasp_motion()
        index = torch.linspace(0, len(motion) - 1, self.horizon + 1)[1:].round().long()
        return motion[index] - torch.tensor(HOME_JOINT_POSITIONS) + current


def context_actions(kinematics: RobotKinematics, camera: PinholeCamera, joints: torch.Tensor,
                    action_representation: str = "keypoint_delta") -> torch.Tensor:
    """Actions ``(C-1, A)`` between consecutive context frames with joints ``(C, 23)``, in the
    same form as the planner's candidate actions (batched FK in the camera frame)."""
    keypoints = kinematics.keypoints_camera(joints, camera)
    if len(keypoints) < 2:
        return keypoints.new_zeros(0, ACTION_REPRESENTATIONS[action_representation])
    return robot_hand_actions(action_representation, keypoints[0], keypoints[1:])
