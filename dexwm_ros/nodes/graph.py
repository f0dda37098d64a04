"""The node graphs this package starts; shared by launch/*.launch.py and ``dexwm-launch``."""
from __future__ import annotations

#: Executables of the planning stack (camera -> latents -> world model <- planner).
PLANNING_NODES = ("camera_encoder", "world_model_server", "cem_planner")
#: The simulated robot.
SIM_NODES = ("sim",)
#: Graphs by name: their nodes, and the parameter file (config/) they read.
GRAPHS = {
    "grasp": {"nodes": SIM_NODES + PLANNING_NODES + ("task_runner",), "config": "dexwm.yaml"},
    "planning": {"nodes": PLANNING_NODES, "config": "dexwm.yaml"},
    "sim": {"nodes": SIM_NODES, "config": "dexwm.yaml"},
}
#: Nodes whose exit ends the graph (the task node of a demo).
TASK_NODES = ("task_runner",)
#: Nodes off by default (``dexwm-launch --with NAME``, ``grasp.launch.py dwm:=true``) and
#: their own parameter files (config/).
OPTIONAL_NODES = {"dwm_imagination": "dwm_imagination.yaml"}
