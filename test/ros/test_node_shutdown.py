"""Every node exits cleanly (exit code 0, no traceback) and promptly on SIGTERM and SIGINT, also
while busy mid-goal: dwm_imagination denoising, world_model_server scoring candidates,
task_runner waiting for its result (it cancels the goal), cem_planner waiting for a score that
never comes."""
import os
import signal
import time

import numpy as np
import pytest
from rclpy.action import ActionClient
from ros_testing import spin_until
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from dexwm_ros.action import Imagine
from dexwm_ros.core.kinematics import HOME_JOINT_POSITIONS, JOINT_NAMES
from dexwm_ros.core.world_model import build_tiny_world_model
from dexwm_ros.nodes.conversions import rgb_to_image, seconds_to_duration
from dexwm_ros.nodes.launcher import start, stop
from dexwm_ros.share import share_path

pytestmark = pytest.mark.ros
#: Enough candidates per CEM iteration that world_model_server is busy scoring most of the time.
BUSY_PLANNER = ["num_samples:=256", "num_elites:=4", "iterations:=100", "control_period:=0.1",
                "service_timeout:=120.0", "seed:=0"]
#: Signalled in this order, so that each is busy when its signal comes.
ORDER = ("dwm_imagination", "world_model_server", "task_runner", "cem_planner",
         "camera_encoder", "sim")
PROMPT_SECONDS = 10.0


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from dexwm_ros.dwm.loading import load_pipeline
    from dexwm_ros.dwm.model import LoraSettings, add_lora, save_dwm_weights
    from dexwm_ros.dwm.tiny import write_tiny_base

    root = tmp_path_factory.mktemp("shutdown")
    world_model = build_tiny_world_model(seed=0).save(root / "world_model")
    base = write_tiny_base(root / "dwm_base", seed=0)
    pipeline = load_pipeline(base)
    settings = LoraSettings(rank=4, alpha=4)
    add_lora(pipeline.transformer, settings)
    weights = save_dwm_weights(pipeline.transformer, root / "dwm_weights", settings,
                               pipeline.latent_channels)
    return {"world_model": world_model, "base": base, "weights": weights, "videos": root}


def start_graph(models) -> dict:
    config = share_path("config", "dexwm.yaml")
    extra = {
        "world_model_server": [f"model_path:={models['world_model']}"],
        "cem_planner": BUSY_PLANNER,
        "sim": ["control_hz:=10.0"],
        "task_runner": ["max_mpc_steps:=1000", "timeout:=600.0"],
    }
    processes = {name: start(name, config, extra.get(name, []))
                 for name in ("sim", "camera_encoder", "world_model_server", "cem_planner",
                              "task_runner")}
    processes["dwm_imagination"] = start(
        "dwm_imagination", share_path("config", "dwm_imagination.yaml"),
        [f"base_model_path:={models['base']}", f"dwm_weights_path:={models['weights']}",
         "device:=cpu", "dtype:=float32", "vae_tiling:=false", "torch_threads:=1",
         "num_frames:=9", "height:=32", "width:=48", f"output_dir:={models['videos']}"])
    return processes


def imagine_goal() -> Imagine.Goal:
    start_q = np.array(HOME_JOINT_POSITIONS)
    plan = JointTrajectory(joint_names=list(JOINT_NAMES))
    for seconds, q in ((0.0, start_q), (1.0, start_q + 0.3)):
        plan.points.append(JointTrajectoryPoint(positions=q.tolist(),
                                                time_from_start=seconds_to_duration(seconds)))
    rgb = np.random.default_rng(0).integers(0, 256, (64, 112, 3), dtype=np.uint8)
    return Imagine.Goal(plans=[plan] * 8, image=rgb_to_image(rgb, frame_id="head_camera"),
                        num_inference_steps=1000)


def node_output(output: str, name: str) -> str:
    prefix = f"[{name}] "
    return "".join(line[len(prefix):] + "\n" for line in output.splitlines()
                   if line.startswith(prefix))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_every_node_exits_cleanly_mid_goal(sig, models, ros_node, capfd):
    processes = start_graph(models)
    output = ""
    try:
        imagine = ActionClient(ros_node, Imagine, "imagine")
        feedback = []

        def planning() -> bool:
            nonlocal output
            output += capfd.readouterr().out
            dead = [n for n, p in processes.items() if p.poll() is not None]
            assert not dead, f"{dead} exited early:\n{output}"
            return "MPC step 0 iteration 1:" in node_output(output, "task_runner")

        assert spin_until(ros_node, lambda: imagine.server_is_ready() and planning(), 240), \
            f"the graph did not start planning:\n{output}"
        goal = imagine.send_goal_async(imagine_goal(),
                                       feedback_callback=lambda m: feedback.append(m.feedback))
        assert spin_until(ros_node, lambda: feedback and planning(), 120), \
            f"dwm_imagination did not start denoising:\n{output}"
        assert goal.result().accepted
        imagine.destroy()
        output += capfd.readouterr().out
        assert "goal finished" not in node_output(output, "dwm_imagination")  # still busy

        for name in ORDER:
            process = processes[name]
            assert process.poll() is None, f"{name} exited before its signal:\n{output}"
            sent = time.monotonic()
            os.kill(process.pid, sig)
            try:
                code = process.wait(PROMPT_SECONDS)
            except Exception:  # noqa: BLE001 - reported below with the node's output
                code = None
            seconds = time.monotonic() - sent
            time.sleep(0.2)  # the output pump's last lines
            output += capfd.readouterr().out
            text = node_output(output, name)
            assert code == 0, (f"{name} after {sig.name}: exit code {code} "
                               f"({seconds:.1f} s):\n{text}")
            assert "Traceback" not in text, f"{name} after {sig.name}:\n{text}"
        assert "canceled the running goal" in node_output(output, "task_runner")
    finally:
        stop(processes, grace=5.0)
