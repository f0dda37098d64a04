"""Launch files, executables and parameter files agree with each other and get installed."""
import ast
import re
from pathlib import Path

import yaml

from dexwm_ros.nodes.graph import GRAPHS, TASK_NODES

REPO = Path(__file__).resolve().parents[2]
ALL_NODES = sorted({n for g in GRAPHS.values() for n in g["nodes"]})


def test_every_graph_node_is_an_installed_executable():
    cmake = (REPO / "CMakeLists.txt").read_text()
    installed = re.search(r"set\(DEXWM_NODES ([^)]*)\)", cmake).group(1).split()
    assert sorted(installed) == ALL_NODES
    for name in ALL_NODES:
        source = (REPO / "dexwm_ros" / "nodes" / f"{name}.py").read_text()
        assert source.startswith("#!/usr/bin/env python3"), f"{name}.py needs a shebang"
        assert "def main(" in source


def test_launch_directories_are_installed():
    cmake = (REPO / "CMakeLists.txt").read_text()
    assert re.search(r"install\(DIRECTORY launch config urdf models DESTINATION share", cmake)


def test_parameter_files_are_keyed_by_node_name():
    for graph in GRAPHS.values():
        params = yaml.safe_load((REPO / "config" / graph["config"]).read_text())
        for name in graph["nodes"]:
            assert "ros__parameters" in params[name], f"{graph['config']} lacks {name}"


def test_launch_files_reference_existing_files():
    launch_files = sorted((REPO / "launch").glob("*.launch.py"))
    assert {p.name for p in launch_files} >= {"grasp.launch.py", "sim.launch.py",
                                              "planning.launch.py", "visualization.launch.py"}
    for path in launch_files:
        tree = ast.parse(path.read_text())
        assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description"
                   for n in tree.body), path.name
        for literal in (n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)):
            if isinstance(literal, str) and literal.endswith((".yaml", ".urdf", ".rviz",
                                                              ".launch.py")):
                folder = {"yaml": "config", "rviz": "config", "urdf": "urdf"}.get(
                    literal.rsplit(".", 1)[-1], "launch")
                assert (REPO / folder / literal).is_file(), f"{path.name}: {literal} missing"
    grasp = (REPO / "launch" / "grasp.launch.py").read_text()
    assert "TASK_NODES" in grasp and TASK_NODES == ("task_runner",)
