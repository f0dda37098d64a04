"""The MPC session: appendix B's shrinking horizon, warm re-plans, reference grasp, cancel."""
import torch

from dexwm_ros.core.kinematics import HOME_JOINT_POSITIONS, RobotKinematics, head_camera
from dexwm_ros.core.mpc import MPCSession, context_actions, reference_grasp_motion
from dexwm_ros.core.planner import CEMConfig
from dexwm_ros.core.planning_cost import KeypointGoalCost
from dexwm_ros.core.tasks import TASK_NAMES, TASKS, task_by_code, task_spec

KIN = RobotKinematics()
HOME = torch.tensor(HOME_JOINT_POSITIONS)


def _session(task="reach", **cem):
    config = CEMConfig.for_task(task, num_samples=64, num_elites=8, iterations=3, seed=0, **cem)
    return MPCSession(task, config, KIN, head_camera())


def test_registry_records_and_codes_match_the_action_definition():
    assert TASK_NAMES == ("reach", "grasp", "place")
    assert [task_by_code(c).name for c in (0, 1, 2)] == list(TASK_NAMES)
    assert CEMConfig.for_task("place").hand_sigma == 0.01
    assert task_spec("grasp").reference_grasp_init and TASKS["grasp"].cost_overrides


def test_horizon_shrinks_then_a_new_plan_starts():
    session = _session()
    goal = KIN.keypoints_world(HOME + 0.2)
    cost = KeypointGoalCost(KIN.keypoints_world, goal)
    joints, horizons = HOME.clone(), []
    for _ in range(7):
        tick = session.step(joints, cost)
        horizons.append(tick.horizon)
        joints = tick.target
    assert horizons == [3, 2, 1, 3, 2, 1, 3]


def test_replans_start_from_the_previous_search():
    session = _session()
    cost = KeypointGoalCost(KIN.keypoints_world, KIN.keypoints_world(HOME + 0.2))
    first = session.step(HOME, cost)
    seen = {}

    def record(actions, joints):
        seen.setdefault("joints", joints)
        return cost(actions, joints)

    session.step(first.target, record)
    spread = (seen["joints"] - first.plan.mean[1:]).std(0)
    assert torch.all(spread <= first.plan.sigma[1:] * 3 + 1e-3)  # sampled around the old plan


def test_oracle_session_moves_the_hand_towards_the_goal():
    session = _session()
    goal_joints = HOME.clone()
    goal_joints[:7] += torch.tensor([0.4, 0.3, 0.0, 0.3, 0.0, -0.2, 0.0])
    goal = KIN.keypoints_world(goal_joints)
    cost = KeypointGoalCost(KIN.keypoints_world, goal)
    joints = HOME.clone()
    start = (KIN.keypoints_world(joints) - goal).norm(dim=-1).mean()
    for _ in range(9):
        joints = session.step(joints, cost).target
    end = (KIN.keypoints_world(joints) - goal).norm(dim=-1).mean()
    assert end < 0.3 * start


def test_grasp_starts_from_the_reference_grasp_motion():
    motion = reference_grasp_motion(10)
    assert motion.shape == (10, 23)
    assert KIN.keypoints_world(motion[-1])[0, 2] < KIN.keypoints_world(HOME)[0, 2] - 0.15
    assert motion[-1, 8] > motion[5, 8]  # the hand closes at the end
    session = _session("grasp")
    seen = {}

    def record(actions, joints):
        seen.setdefault("joints", joints)
        return torch.zeros(len(joints))

    session.step(HOME, record)
    mean = seen["joints"].mean(0)
    index = torch.linspace(0, 9, 4)[1:].round().long()
    assert torch.allclose(mean, KIN.clip(motion[index]), atol=0.15)


def test_cancel_returns_no_target():
    session = _session()
    cost = KeypointGoalCost(KIN.keypoints_world, KIN.keypoints_world(HOME + 0.1))
    tick = session.step(HOME, cost, on_iteration=lambda info: False)
    assert tick.cancelled and tick.target is None and tick.plan.iterations_run == 1
    assert session.step(HOME, cost).horizon == 3  # nothing was executed: a full plan


def test_context_actions_are_the_planner_actions_of_the_observed_joints():
    joints = torch.stack([HOME, HOME + 0.05, HOME + 0.1])
    actions = context_actions(KIN, head_camera(), joints)
    keypoints = KIN.keypoints_camera(joints, head_camera())
    assert actions.shape == (2, 132)
    torch.testing.assert_close(actions.view(2, 44, 3)[:, 21:42],
                               keypoints[1:] - keypoints[:-1])
    assert context_actions(KIN, head_camera(), joints[:1]).shape == (0, 132)


def test_the_ros_planner_and_the_evaluator_share_the_session():
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for path in ("dexwm_ros/nodes/cem_planner.py", "training/eval_sim.py"):
        tree = ast.parse((root / path).read_text())
        called = {n.func.id for n in ast.walk(tree)
                  if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        assert "MPCSession" in called, f"{path} does not plan through MPCSession"
        assert "CEMPlanner" not in called, f"{path} runs its own CEM loop"
        loops = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
                 and isinstance(n.func, ast.Attribute) and n.func.attr == "plan"]
        assert not loops, f"{path} calls CEMPlanner.plan itself"


def test_planner_side_terms_follow_new_weights_within_a_goal():
    from dataclasses import replace

    from dexwm_ros.core.planning_cost import OrientationCost, WorkspaceCost

    session = _session("grasp")
    session.step(HOME, lambda actions, joints: torch.zeros(len(actions)))
    candidates = (HOME + 0.3 * torch.randn(5, 2, 23, generator=torch.Generator().manual_seed(0)))
    wrist = lambda q: KIN.wrist_pose_world(q)[..., :3, 3]  # noqa: E731
    start = KIN.wrist_pose_world(HOME)[:3, :3]
    for weights in (session.weights,
                    replace(session.weights, orientation_weight=2.0, workspace_weight=0.0),
                    replace(session.weights, orientation_weight=0.0,
                            workspace_high=(0.0, 0.0, 1.0))):
        session.weights = weights  # what cem_planner does with live parameters
        expected = torch.zeros(5)
        if weights.workspace_weight > 0:
            expected += WorkspaceCost(wrist, weights)(candidates)
        if weights.orientation_weight > 0:
            expected += OrientationCost(KIN.wrist_pose_world, start, weights)(candidates)
        torch.testing.assert_close(session.planner.extra_cost(candidates), expected)
    assert session.planner.extra_cost(candidates).abs().sum() > 0
