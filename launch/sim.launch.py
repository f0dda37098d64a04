"""Simulated robot: the MuJoCo task node (image, camera_info, joint_states, task_status)."""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from dexwm_ros.nodes.graph import SIM_NODES


def generate_launch_description():
    config = LaunchConfiguration("config")
    return LaunchDescription([
        DeclareLaunchArgument(
            "config", default_value=PathJoinSubstitution(
                [FindPackageShare("dexwm_ros"), "config", "dexwm.yaml"]),
            description="parameter file keyed by node name"),
        *[Node(package="dexwm_ros", executable=name, name=name, parameters=[config],
               output="screen") for name in SIM_NODES],
    ])
