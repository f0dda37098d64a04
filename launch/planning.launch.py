"""Planning stack: camera_encoder, world_model_server and the cem_planner action server."""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from dexwm_ros.nodes.graph import PLANNING_NODES


def generate_launch_description():
    config = LaunchConfiguration("config")
    model_path = LaunchConfiguration("model_path")
    nodes = []
    for name in PLANNING_NODES:
        parameters = [config]
        if name == "world_model_server":
            parameters.append({"model_path": model_path})
        nodes.append(Node(package="dexwm_ros", executable=name, name=name,
                          parameters=parameters, output="screen"))
    return LaunchDescription([
        DeclareLaunchArgument(
            "config", default_value=PathJoinSubstitution(
                [FindPackageShare("dexwm_ros"), "config", "grasp.yaml"]),
            description="parameter file keyed by node name"),
        DeclareLaunchArgument(
            "model_path", description="world-model checkpoint directory (model.safetensors + "
            "config.json), e.g. the demo's build/demo/tiny_world_model"),
        *nodes,
    ])
