"""Planning stack: camera_encoder, world_model_server and the cem_planner action server.

camera_encoder runs the encoder recorded in the checkpoint's config.json (backend and grid
pooling) unless ``encoder_backend:=...`` is given.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from dexwm_ros.nodes.graph import PLANNING_NODES
from dexwm_ros.nodes.launcher import checkpoint_encoder


def planning_nodes(context):
    config = LaunchConfiguration("config").perform(context)
    model_path = LaunchConfiguration("model_path").perform(context)
    backend = LaunchConfiguration("encoder_backend").perform(context)
    encoder = {"backend": backend} if backend else checkpoint_encoder(model_path)
    nodes = []
    for name in PLANNING_NODES:
        parameters = [config]
        if name == "world_model_server":
            parameters.append({"model_path": model_path})
        if name == "camera_encoder" and encoder:
            parameters.append(encoder)
        nodes.append(Node(package="dexwm_ros", executable=name, name=name,
                          parameters=parameters, output="screen"))
    return nodes


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument(
            "config", default_value=PathJoinSubstitution(
                [FindPackageShare("dexwm_ros"), "config", "dexwm.yaml"]),
            description="parameter file keyed by node name"),
        DeclareLaunchArgument(
            "model_path", default_value="", description="world-model checkpoint directory "
            "(model.safetensors + config.json); empty: the packaged default world model"),
        DeclareLaunchArgument(
            "encoder_backend", default_value="",
            description="camera_encoder backend; empty = the one recorded in the checkpoint"),
        OpaqueFunction(function=planning_nodes),
    ])
