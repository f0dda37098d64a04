"""The package installs with pip (no ROS) and its core imports without rclpy."""
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_installs_and_core_imports_without_ros(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path / "wheel"), str(REPO)], check=True)
    wheel = next((tmp_path / "wheel").glob("dexwm_ros-*.whl"))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q",
                    "--target", str(target), str(wheel)], check=True)
    check = (
        "import sys, dexwm_ros, dexwm_ros.core.actions as a\n"
        f"assert dexwm_ros.__file__.startswith({str(target)!r}), dexwm_ros.__file__\n"
        "assert a.ACTION_DIM == 132\n"
        "assert 'rclpy' not in sys.modules\n"
    )
    # The installed wheel comes first on the path, ahead of the editable source checkout.
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", check], check=True, env=env, cwd=tmp_path)


def test_package_xml_declares_dependencies():
    root = ET.parse(REPO / "package.xml").getroot()
    assert root.get("format") == "3"
    assert root.findtext("export/build_type") == "ament_cmake"
    deps = {e.text for e in root if e.tag.endswith("depend")}
    for name in ("rclpy", "sensor_msgs", "trajectory_msgs", "visualization_msgs", "geometry_msgs",
                 "std_srvs", "builtin_interfaces", "action_msgs", "rosidl_default_generators",
                 "rosidl_default_runtime"):
        assert name in deps, f"package.xml misses {name}"
    assert root.findtext("member_of_group") == "rosidl_interface_packages"


def test_source_tree_does_not_shadow_generated_interfaces():
    for name in ("msg", "srv", "action"):
        assert not (REPO / "dexwm_ros" / name).exists()
