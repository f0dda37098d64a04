"""Grasp demo: simulated robot + planning stack + task_runner node (+ robot model and rviz).

    ros2 launch dexwm_ros grasp.launch.py                       # the default world model
    ros2 launch dexwm_ros grasp.launch.py model_path:=/path/to/checkpoint

The encoder backend comes from the checkpoint unless ``encoder_backend:=...`` is given.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, Shutdown
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from dexwm_ros.nodes.graph import OPTIONAL_NODES, TASK_NODES


def generate_launch_description():
    share = FindPackageShare("dexwm_ros")
    config = LaunchConfiguration("config")

    def include(name, **arguments):
        return IncludeLaunchDescription(
            PythonLaunchDescriptionSource(PathJoinSubstitution([share, "launch", name])),
            launch_arguments=arguments.items())

    return LaunchDescription([
        DeclareLaunchArgument(
            "config", default_value=PathJoinSubstitution([share, "config", "dexwm.yaml"]),
            description="parameter file keyed by node name"),
        DeclareLaunchArgument("model_path", default_value="",
                              description="world-model checkpoint directory; empty: the "
                              "packaged default world model"),
        DeclareLaunchArgument("encoder_backend", default_value="",
                              description="camera_encoder backend; empty = the checkpoint's"),
        DeclareLaunchArgument("rviz", default_value="true", description="start rviz2"),
        DeclareLaunchArgument("dwm", default_value="false",
                              description="start dwm_imagination (DWM videos of plans)"),
        include("sim.launch.py", config=config),
        include("planning.launch.py", config=config,
                model_path=LaunchConfiguration("model_path"),
                encoder_backend=LaunchConfiguration("encoder_backend")),
        include("visualization.launch.py", rviz=LaunchConfiguration("rviz")),
        # The task node ends the demo: its exit shuts the whole launch down.
        *[Node(package="dexwm_ros", executable=name, name=name, parameters=[config],
               output="screen", on_exit=Shutdown()) for name in TASK_NODES],
        Node(package="dexwm_ros", executable="dwm_imagination", name="dwm_imagination",
             parameters=[PathJoinSubstitution([share, "config",
                                               OPTIONAL_NODES["dwm_imagination"]])],
             output="screen", condition=IfCondition(LaunchConfiguration("dwm"))),
    ])
