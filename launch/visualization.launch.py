"""robot_state_publisher with the Franka + Allegro URDF, and rviz2 with the dexwm view."""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import Command, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    share = FindPackageShare("dexwm_ros")
    urdf = PathJoinSubstitution([share, "urdf", "fr3_allegro.urdf"])
    return LaunchDescription([
        DeclareLaunchArgument("rviz", default_value="true", description="start rviz2"),
        Node(package="robot_state_publisher", executable="robot_state_publisher",
             parameters=[{"robot_description": ParameterValue(Command(["cat ", urdf]),
                                                              value_type=str)}],
             output="screen"),
        Node(package="rviz2", executable="rviz2",
             arguments=["-d", PathJoinSubstitution([share, "config", "dexwm.rviz"])],
             condition=IfCondition(LaunchConfiguration("rviz")), output="screen"),
    ])
