"""Generate ``fr3_allegro.urdf``: a Franka FR3 arm with an Allegro right hand and a head camera.

Run ``python urdf/generate_fr3_allegro.py`` from the repository root to rewrite the URDF.
Written from public kinematic facts only (no robot description or mesh is copied):

* Franka arm: the published modified-DH parameters (d1 = 0.333, d3 = 0.316, a4 = 0.0825,
  a5 = -0.0825, d5 = 0.384, a7 = 0.088, flange d = 0.107) and the FR3 datasheet joint
  limits.
* Allegro right hand: finger base offsets on the palm and the phalanx lengths 0.0164, 0.054,
  0.0384, 0.0267 (thumb 0.0177, 0.0514, 0.0423), the Allegro right hand's joint limits.
* Egocentric head camera: ``dexwm_ros.core.kinematics.HEAD_CAMERA_*`` (about 1.6 m high,
  pitched 30 deg down); ``head_camera_optical_frame`` uses the OpenCV/ROS optical convention.

Geometry is primitive (cylinders, spheres, boxes) for visuals and collisions, with inertials.
Every joint's child link frame sits at the joint; ``*_tip`` links mark the fingertips and
``allegro_wrist`` the wrist.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dexwm_ros.core.kinematics import (  # noqa: E402
    HEAD_CAMERA_PITCH_DEG,
    HEAD_CAMERA_POSITION,
    JOINT_LIMITS,
    JOINT_NAMES,
)

#: Pose of ``fr3_link0`` in the world: right shoulder of a torso standing behind the table.
ARM_BASE_XYZ = (-0.4, -0.35, 0.8)
#: Flange to wrist: a 1 cm adapter turned like the Franka Hand mount.
HAND_MOUNT_XYZ = (0.0, 0.0, 0.01)
HAND_MOUNT_RPY = (0.0, 0.0, -math.pi / 4)
PALM_LENGTH = 0.095  # wrist (bottom of the palm) to the finger bases
FINGERTIP_RADIUS = 0.012

ARM_EFFORT = (87, 87, 87, 87, 12, 12, 12)
ARM_VELOCITY = (2.62, 2.62, 2.62, 2.62, 5.26, 4.18, 5.26)
ARM_MASS = (2.74, 2.74, 2.38, 2.43, 3.5, 1.47, 0.45)

# Franka joint origins (parent link frame): modified DH written as URDF xyz/rpy.
H = math.pi / 2
ARM_JOINT_ORIGINS = (
    ((0, 0, 0.333), (0, 0, 0)),
    ((0, 0, 0), (-H, 0, 0)),
    ((0, -0.316, 0), (H, 0, 0)),
    ((0.0825, 0, 0), (H, 0, 0)),
    ((-0.0825, 0.384, 0), (-H, 0, 0)),
    ((0, 0, 0), (H, 0, 0)),
    ((0.088, 0, 0), (H, 0, 0)),
)
FLANGE_XYZ = (0, 0, 0.107)

# Allegro right hand. Finger base (joint 0) offsets on the palm frame (top of the palm).
FINGER_BASES = {
    "index": ((0.0, 0.0435, -0.001542), (-0.0872665, 0, 0)),
    "middle": ((0.0, 0.0, 0.0007), (0, 0, 0)),
    "ring": ((0.0, -0.0435, -0.001542), (0.0872665, 0, 0)),
}
FINGER_SEGMENTS = (0.0164, 0.054, 0.0384, 0.0267)  # joint 0->1->2->3->tip centre
THUMB_BASE = ((-0.0182, 0.019333, -0.045987), (0, -1.65806, -1.5708))
THUMB_AXES = ((-1, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 0))
THUMB_OFFSETS = ((-0.027, 0.005, 0.0399), (0, 0, 0.0177), (0, 0, 0.0514), (0, 0, 0.0423))
FINGER_MASS = (0.012, 0.065, 0.036, 0.03)
THUMB_MASS = (0.018, 0.012, 0.038, 0.04)
FINGER_WIDTH = 0.0196


def _fmt(values) -> str:
    return " ".join(f"{float(v):.10g}" for v in values)


def _rpy_aligning_z(direction) -> tuple[float, float, float]:
    """URDF rpy of a rotation taking +z onto ``direction``."""
    z = np.asarray(direction, dtype=float) / np.linalg.norm(direction)
    helper = np.array([1.0, 0, 0]) if abs(z[0]) < 0.9 else np.array([0, 1.0, 0])
    x = np.cross(helper, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    r = np.stack([x, y, z], axis=1)
    pitch = math.asin(-max(-1.0, min(1.0, r[2, 0])))
    roll = math.atan2(r[2, 1], r[2, 2])
    yaw = math.atan2(r[1, 0], r[0, 0])
    return roll, pitch, yaw


class _Shape:
    def __init__(self, xml: str, xyz, rpy=(0, 0, 0)):
        self.xml, self.xyz, self.rpy = xml, xyz, rpy

    def element(self, tag: str, material: str | None) -> str:
        mat = f'<material name="{material}"/>' if material else ""
        return (
            f'    <{tag}><origin xyz="{_fmt(self.xyz)}" rpy="{_fmt(self.rpy)}"/>'
            f"<geometry>{self.xml}</geometry>{mat}</{tag}>"
        )


def cylinder_between(a, b, radius: float) -> _Shape:
    a, b = np.asarray(a, float), np.asarray(b, float)
    length = float(np.linalg.norm(b - a))
    return _Shape(
        f'<cylinder radius="{radius:g}" length="{length:.6g}"/>',
        (a + b) / 2,
        _rpy_aligning_z(b - a),
    )


def sphere(center, radius: float) -> _Shape:
    return _Shape(f'<sphere radius="{radius:g}"/>', center)


def box(center, size) -> _Shape:
    return _Shape(f'<box size="{_fmt(size)}"/>', center)


def link(name: str, shapes=(), mass: float = 0.0, material: str | None = None,
         com=(0, 0, 0), radius: float = 0.05) -> str:
    """A link with visuals, matching collisions and a solid-sphere inertial of ``radius``."""
    body = []
    if mass > 0:
        inertia = 0.4 * mass * radius**2
        body.append(
            f'    <inertial><origin xyz="{_fmt(com)}" rpy="0 0 0"/><mass value="{mass:g}"/>'
            f'<inertia ixx="{inertia:.6g}" ixy="0" ixz="0" iyy="{inertia:.6g}" iyz="0" '
            f'izz="{inertia:.6g}"/></inertial>'
        )
    for shape in shapes:
        body.append(shape.element("visual", material))
        body.append(shape.element("collision", None))
    inner = "\n".join(body)
    return f'  <link name="{name}">\n{inner}\n  </link>' if body else f'  <link name="{name}"/>'


def joint(name: str, parent: str, child: str, xyz, rpy=(0, 0, 0), axis=None,
          limits=None, effort: float = 0.0, velocity: float = 0.0, damping: float = 0.0) -> str:
    if axis is None:
        return (
            f'  <joint name="{name}" type="fixed"><parent link="{parent}"/>'
            f'<child link="{child}"/><origin xyz="{_fmt(xyz)}" rpy="{_fmt(rpy)}"/></joint>'
        )
    lo, hi = limits
    return (
        f'  <joint name="{name}" type="revolute"><parent link="{parent}"/>'
        f'<child link="{child}"/><origin xyz="{_fmt(xyz)}" rpy="{_fmt(rpy)}"/>'
        f'<axis xyz="{_fmt(axis)}"/>'
        f'<limit lower="{lo:.6g}" upper="{hi:.6g}" effort="{effort:g}" velocity="{velocity:g}"/>'
        f'<dynamics damping="{damping:g}" friction="0"/></joint>'
    )


def arm(parts: list[str]) -> None:
    parts.append(link("fr3_link0", [cylinder_between((0, 0, 0), (0, 0, 0.14), 0.09)],
                      4.0, "fr3_white", (0, 0, 0.07), 0.1))
    parent = "fr3_link0"
    for i, (xyz, rpy) in enumerate(ARM_JOINT_ORIGINS):
        child = f"fr3_link{i + 1}"
        next_xyz = ARM_JOINT_ORIGINS[i + 1][0] if i + 1 < 7 else FLANGE_XYZ
        # A sphere at the joint, a cylinder towards the next joint (the link's body).
        shapes = [sphere((0, 0, 0), 0.065)]
        if i == 0:  # shoulder column down to the base
            shapes.append(cylinder_between((0, 0, -0.19), (0, 0, 0), 0.06))
        if np.linalg.norm(next_xyz) > 0.01:
            shapes.append(cylinder_between((0, 0, 0), next_xyz, 0.055))
        com = np.asarray(next_xyz, float) / 2
        parts.append(link(child, shapes, ARM_MASS[i], "fr3_white" if i % 2 else "fr3_grey",
                          com, 0.08))
        parts.append(joint(JOINT_NAMES[i], parent, child, xyz, rpy, (0, 0, 1),
                           JOINT_LIMITS[i], ARM_EFFORT[i], ARM_VELOCITY[i], damping=1.0))
        parent = child
    parts.append(link("fr3_link8"))
    parts.append(joint("fr3_flange", "fr3_link7", "fr3_link8", FLANGE_XYZ))


def hand(parts: list[str]) -> None:
    parts.append(link("allegro_wrist",
                      [cylinder_between((0, 0, -HAND_MOUNT_XYZ[2]), (0, 0, 0), 0.035)],
                      0.05, "allegro_black", (0, 0, -0.005), 0.03))
    parts.append(joint("allegro_mount", "fr3_link8", "allegro_wrist", HAND_MOUNT_XYZ,
                       HAND_MOUNT_RPY))
    parts.append(link("allegro_palm",
                      [box((-0.0093, 0, -0.0475), (0.0408, 0.1130, 0.095))],
                      0.4, "allegro_black", (-0.0093, 0, -0.0475), 0.05))
    parts.append(joint("allegro_palm_joint", "allegro_wrist", "allegro_palm",
                       (0, 0, PALM_LENGTH)))
    hand_limits = JOINT_LIMITS[7:]
    for f, finger in enumerate(("index", "middle", "ring")):
        parent = "allegro_palm"
        xyz, rpy = FINGER_BASES[finger]
        for j in range(4):
            child = f"allegro_{finger}_link_{j}"
            length = FINGER_SEGMENTS[j]
            shapes = [box((0, 0, length / 2), (FINGER_WIDTH, FINGER_WIDTH, length))]
            if j == 3:
                shapes.append(sphere((0, 0, length), FINGERTIP_RADIUS))
            parts.append(link(child, shapes, FINGER_MASS[j], "allegro_black",
                              (0, 0, length / 2), 0.02))
            axis = (0, 0, 1) if j == 0 else (0, 1, 0)
            parts.append(joint(JOINT_NAMES[7 + 4 * f + j], parent, child, xyz, rpy, axis,
                               hand_limits[4 * f + j], 0.7, 6.28, damping=0.05))
            parent, xyz, rpy = child, (0, 0, length), (0, 0, 0)
        parts.append(link(f"allegro_{finger}_tip"))
        parts.append(joint(f"allegro_{finger}_tip_joint", parent, f"allegro_{finger}_tip",
                           (0, 0, FINGER_SEGMENTS[3] + FINGERTIP_RADIUS)))
    parent, (xyz, rpy) = "allegro_palm", THUMB_BASE
    for j in range(4):
        child = f"allegro_thumb_link_{j}"
        end = THUMB_OFFSETS[j]
        shapes = [cylinder_between((0, 0, 0), end, FINGER_WIDTH / 2)]
        if j == 3:
            shapes.append(sphere(end, FINGERTIP_RADIUS))
        parts.append(link(child, shapes, THUMB_MASS[j], "allegro_black",
                          np.asarray(end, float) / 2, 0.02))
        parts.append(joint(JOINT_NAMES[19 + j], parent, child, xyz, rpy, THUMB_AXES[j],
                           hand_limits[12 + j], 0.7, 6.28, damping=0.05))
        parent, xyz, rpy = child, end, (0, 0, 0)
    tip = np.asarray(THUMB_OFFSETS[3], float)
    tip = tip + FINGERTIP_RADIUS * tip / np.linalg.norm(tip)
    parts.append(link("allegro_thumb_tip"))
    parts.append(joint("allegro_thumb_tip_joint", parent, "allegro_thumb_tip", tip))


def camera(parts: list[str]) -> None:
    parts.append(link("head_camera_link",
                      [box((-0.03, 0, 0), (0.05, 0.12, 0.04))], 0.2, "fr3_grey",
                      (-0.03, 0, 0), 0.04))
    parts.append(joint("head_camera_joint", "world", "head_camera_link", HEAD_CAMERA_POSITION,
                       (0, math.radians(HEAD_CAMERA_PITCH_DEG), 0)))
    parts.append(link("head_camera_optical_frame"))
    parts.append(joint("head_camera_optical_joint", "head_camera_link",
                       "head_camera_optical_frame", (0, 0, 0), (-H, 0, -H)))


def generate() -> str:
    parts = [
        '<?xml version="1.0"?>',
        "<!-- Generated by urdf/generate_fr3_allegro.py; edit that script, not this file. -->",
        '<robot name="fr3_allegro">',
        '  <material name="fr3_white"><color rgba="0.92 0.92 0.92 1"/></material>',
        '  <material name="fr3_grey"><color rgba="0.35 0.35 0.38 1"/></material>',
        '  <material name="allegro_black"><color rgba="0.12 0.12 0.12 1"/></material>',
        '  <link name="world"/>',
        joint("fr3_base_joint", "world", "fr3_link0", ARM_BASE_XYZ),
    ]
    arm(parts)
    hand(parts)
    camera(parts)
    parts.append("</robot>")
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    out = ROOT / "urdf" / "fr3_allegro.urdf"
    out.write_text(generate())
    print(f"wrote {out}")
