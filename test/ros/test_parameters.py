"""Node parameters over the ROS parameter services: defaults, descriptions, ranges and the
read-only flag come from the core config dataclasses; live ones change a running graph at the
next MPC step; invalid, out-of-range and read-only sets are refused with a reason."""
import dataclasses

import pytest
from rcl_interfaces.srv import DescribeParameters, GetParameters, SetParameters
from rclpy.action import ActionClient
from rclpy.node import Node
from rclpy.parameter import Parameter, parameter_value_to_python
from ros_testing import observing, spin_until

from dexwm_ros.action import PlanToGoal
from dexwm_ros.core.planner import CEMConfig
from dexwm_ros.core.planning_cost import CostWeights
from dexwm_ros.core.world_model import build_tiny_world_model
from dexwm_ros.nodes.cem_planner import PLANNER_COST_FIELDS
from dexwm_ros.nodes.launcher import start, stop
from dexwm_ros.nodes.params import ConfigParameters, watch_parameters
from dexwm_ros.share import share_path
from dexwm_ros.srv import ResetTask

pytestmark = pytest.mark.ros
RESULT = PlanToGoal.Result
SMALL_PLANNER = {"num_samples": 32, "num_elites": 4, "iterations": 3, "control_period": 0.1,
                 "service_timeout": 20.0, "seed": 0}


@pytest.fixture(scope="module")
def node(tmp_path_factory, ros_node):
    model = tmp_path_factory.mktemp("model") / "tiny"
    build_tiny_world_model(seed=0).save(model)
    config = share_path("config", "dexwm.yaml")
    extra = {"world_model_server": [f"model_path:={model}"],
             "cem_planner": [f"{k}:={v}" for k, v in SMALL_PLANNER.items()],
             "sim": ["control_hz:=10.0"]}
    processes = {}
    for name in ("sim", "camera_encoder", "world_model_server", "cem_planner"):
        processes[name] = start(name, config, extra.get(name, []))
    node = ros_node
    node.client = ActionClient(node, PlanToGoal, "plan_to_goal")
    node.reset = node.create_client(ResetTask, "reset_task")
    node.parameter_clients = {}
    for name in ("cem_planner", "world_model_server"):
        for kind, service in (("get", GetParameters), ("set", SetParameters),
                              ("describe", DescribeParameters)):
            node.parameter_clients[name, kind] = node.create_client(service,
                                                           f"/{name}/{kind}_parameters")

    def up():
        dead = [n for n, p in processes.items() if p.poll() is not None]
        assert not dead, f"{dead} exited during start-up (output above)"
        return (node.client.server_is_ready() and node.reset.service_is_ready()
                and all(c.service_is_ready() for c in node.parameter_clients.values()))

    try:
        assert spin_until(node, up, 180), "the graph did not come up"
        assert observing(node, 60), "world_model_server has no observation"
        yield node
    finally:
        stop(processes)


def call(node, client, request, timeout=30):
    future = client.call_async(request)
    assert spin_until(node, future.done, timeout), f"no reply from {client.srv_name}"
    return future.result()


def get(node, name, *names):
    reply = call(node, node.parameter_clients[name, "get"],
                 GetParameters.Request(names=list(names)))
    return [parameter_value_to_python(v) for v in reply.values]


def set_(node, name, **values):
    """Set parameters one by one (SetParameters); the per-parameter results."""
    request = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg()
                                                for k, v in values.items()])
    return call(node, node.parameter_clients[name, "set"], request).results


def goal(node, task, max_mpc_steps):
    future = node.reset.call_async(ResetTask.Request(task=task, seed=3))
    assert spin_until(node, future.done, 60) and future.result().success
    feedback = []
    sent = node.client.send_goal_async(
        PlanToGoal.Goal(task=task_code(task), goal_image=future.result().goal_image,
                        max_mpc_steps=max_mpc_steps),
        feedback_callback=lambda m: feedback.append(m.feedback))
    assert spin_until(node, sent.done, 30) and sent.result().accepted
    return sent.result(), feedback


def task_code(task):
    return {"reach": PlanToGoal.Goal.TASK_REACH, "grasp": PlanToGoal.Goal.TASK_GRASP,
            "place": PlanToGoal.Goal.TASK_PLACE}[task]


def result_of(node, handle, timeout=180):
    future = handle.get_result_async()
    assert spin_until(node, future.done, timeout), "no result"
    return future.result().result


def test_planner_parameters_come_from_the_config_dataclasses(node):
    fields = dataclasses.fields(CEMConfig)
    names = [f.name for f in fields]
    values = dict(zip(names, get(node, "cem_planner", *names), strict=True))
    for spec in fields:
        expected = SMALL_PLANNER.get(spec.name, spec.default)
        assert values[spec.name] == (-1 if expected is None else expected), spec.name
    assert {"noise_beta": 2.0, "elite_fraction_kept": 0.3, "population_decay": 1.25}.items() \
        <= values.items()  # iCEM settings are parameters too
    # per-task overrides: the task registry's values under <task>.<field>
    assert get(node, "cem_planner", "place.hand_sigma", "grasp.orientation_weight",
               "orientation_weight") == [0.01, 0.1, 0.0]
    described = call(node, node.parameter_clients["cem_planner", "describe"],
                     DescribeParameters.Request(names=["num_samples", "horizon", "seed"]))
    described = described.descriptors
    assert described[0].description == "CEM samples N per iteration"
    assert not described[0].read_only
    assert (described[0].integer_range[0].from_value,
            described[0].integer_range[0].to_value) == (2, 8192)
    assert described[1].read_only and described[2].read_only
    server = [f.name for f in dataclasses.fields(CostWeights)
              if f.name not in PLANNER_COST_FIELDS]
    assert get(node, "world_model_server", *server) == [
        list(v) if isinstance(v, tuple) else v
        for v in (getattr(CostWeights(), name) for name in server)]


def test_bad_sets_are_refused_with_a_reason(node):
    results = set_(node, "cem_planner", horizon=4, num_samples=1, num_elites=64,
                   sampler="gaussian")
    assert [r.successful for r in results] == [False] * 4
    assert "read-only" in results[0].reason
    assert "range" in results[1].reason
    assert "num_elites" in results[2].reason and "num_samples" in results[2].reason
    assert "sampler" in results[3].reason
    assert get(node, "cem_planner", "horizon", "num_samples", "num_elites", "sampler") == [
        3, 32, 4, "cem"]
    results = set_(node, "world_model_server", keypoint_maps=[3, 12], context_frames=2,
                   keypoint_source="heatmaps")
    assert not results[0].successful and "keypoint_maps" in results[0].reason
    assert not results[1].successful and "read-only" in results[1].reason
    assert not results[2].successful and "keypoint_source" in results[2].reason


def test_planner_budget_changes_at_the_next_mpc_step(node):
    handle, feedback = goal(node, "reach", max_mpc_steps=100)
    assert spin_until(node, lambda: feedback, 60)
    results = set_(node, "cem_planner", iterations=2, num_samples=16)
    assert all(r.successful for r in results), [r.reason for r in results]
    changed_from = max(f.mpc_step for f in feedback) + 2  # started after the set for sure
    try:
        assert spin_until(node, lambda: any(f.mpc_step > changed_from for f in feedback), 120)
    finally:
        cancel = handle.cancel_goal_async()
        assert spin_until(node, cancel.done, 30)
        result_of(node, handle)
        set_(node, "cem_planner", iterations=3, num_samples=32)
    per_step = {}
    for f in feedback:
        per_step.setdefault(f.mpc_step, []).append(f.cem_iteration)
    assert per_step[0] == [0, 1, 2]
    assert per_step[changed_from] == [0, 1]
    assert get(node, "cem_planner", "iterations", "num_samples") == [3, 32]


def test_cost_weights_change_on_the_running_server(node):
    handle, _ = goal(node, "reach", max_mpc_steps=1)
    assert result_of(node, handle).final_cost > 0
    results = set_(node, "world_model_server", latent_weight=0.0, keypoint_weight=0.0)
    assert all(r.successful for r in results), [r.reason for r in results]
    try:
        handle, _ = goal(node, "reach", max_mpc_steps=1)
        result = result_of(node, handle)
        assert result.error_code == RESULT.ERROR_NONE, result.error_msg
        assert result.final_cost == 0.0
    finally:
        set_(node, "world_model_server", latent_weight=1.0, keypoint_weight=1e-2)


def test_config_parameters_declare_validate_and_apply_in_process(ros_node):
    probe = Node("config_parameters_probe")
    try:
        weights = ConfigParameters(probe, CostWeights, prefix="grasp.",
                                   fields=["keypoint_maps", "orientation_weight", "latent_weight"],
                                   defaults={"latent_weight": 2})
        applied = []
        watch_parameters(probe, lambda pending: CostWeights(**weights.values(pending)).validate(),
                         lambda: applied.append(weights.values()))
        assert weights.values() == {"keypoint_maps": (6, 7, 8, 9, 10, 11),
                                    "orientation_weight": 0.0, "latent_weight": 2.0}
        # a float field stays a float parameter where the default is written as an int
        assert probe.get_parameter("grasp.latent_weight").type_ == Parameter.Type.DOUBLE
        refused = probe.set_parameters([Parameter("grasp.keypoint_maps", value=[3, 12])])[0]
        assert not refused.successful and "keypoint_maps" in refused.reason and not applied
        accepted = probe.set_parameters([Parameter("grasp.latent_weight", value=0.5)])[0]
        assert accepted.successful and applied[-1]["latent_weight"] == 0.5
        with pytest.raises(ValueError, match="no fields"):
            ConfigParameters(probe, CostWeights, fields=["latent_weights"])
    finally:
        probe.destroy_node()
