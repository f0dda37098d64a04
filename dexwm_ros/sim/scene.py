"""MuJoCo scene: the FR3 + Allegro robot compiled from the URDF, a robosuite table and objects.

The robot comes from ``urdf/fr3_allegro.urdf`` compiled by MuJoCo (static frames kept as bodies,
so every URDF link, fingertip and the head camera's optical frame is a body of the same name),
then given position actuators, armature and gravity compensation. robosuite 1.5 supplies the
world (``MujocoWorldBase``), ``TableArena`` and the objects. The ``head_camera`` MuJoCo camera
sits in the ``head_camera_optical_frame`` body, so the rendered view is exactly
``dexwm_ros.core.kinematics.head_camera()``.
"""
from __future__ import annotations

import os
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from dexwm_ros.core.kinematics import (  # noqa: E402
    FINGER_KEYPOINT_LINKS,
    HEAD_CAMERA_FOVY_DEG,
    HEAD_CAMERA_FRAME,
    JOINT_NAMES,
    WRIST_LINK,
    default_urdf_path,
)

TABLE_TOP_Z = 0.8
ROBOT_BASE_LINK = "fr3_link0"
TABLE_SIZE = (0.8, 1.0, 0.05)
TABLE_OFFSET = (0.1, 0.0, TABLE_TOP_Z)  # table spans x in [-0.3, 0.5]
TIMESTEP = 0.002
#: Region of the table where objects are placed (x, y ranges, world frame).
OBJECT_REGION = ((-0.1, 0.2), (-0.3, 0.05))
CAMERA_NAME = "head_camera"
#: Position-servo gains (kp, kv) and armature per joint group.
ARM_GAINS = (600.0, 60.0, 0.1)
HAND_GAINS = (3.0, 0.15, 0.005)
#: Bodies whose origins are the keypoint frames: wrist and the tips of the 4 fingers.
WRIST_AND_TIP_BODIES = (WRIST_LINK,) + tuple(links[-1] for links in FINGER_KEYPOINT_LINKS)
#: Names accepted in ``build_scene(objects=...)``.
OBJECT_TYPES = ("can", "bread", "lemon", "red_box", "blue_cylinder", "green_box")


def _make_object(kind: str, name: str):
    from robosuite.models.objects import (
        BoxObject,
        BreadObject,
        CanObject,
        CylinderObject,
        LemonObject,
    )

    makers = {
        "can": lambda: CanObject(name),
        "bread": lambda: BreadObject(name),
        "lemon": lambda: LemonObject(name),
        "red_box": lambda: BoxObject(name, size=[0.025, 0.025, 0.025], rgba=[0.8, 0.1, 0.1, 1]),
        "green_box": lambda: BoxObject(name, size=[0.03, 0.02, 0.02], rgba=[0.1, 0.7, 0.2, 1]),
        "blue_cylinder": lambda: CylinderObject(name, size=[0.025, 0.04],
                                                rgba=[0.1, 0.2, 0.8, 1]),
    }
    if kind not in makers:
        raise ValueError(f"unknown object type {kind!r}; choose from {OBJECT_TYPES}")
    return makers[kind]()


def robot_mjcf(urdf_path: str | Path | None = None) -> str:
    """MJCF text of the robot: the URDF compiled by MuJoCo plus actuators and servo settings."""
    path = Path(urdf_path) if urdf_path is not None else default_urdf_path()
    text = path.read_text()
    marker = '<robot name="fr3_allegro">'
    if marker not in text:
        raise ValueError(f"{path}: expected {marker}")
    text = text.replace(marker, marker + '<mujoco><compiler fusestatic="false"/></mujoco>', 1)
    model = mujoco.MjModel.from_xml_string(text)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "robot.xml"
        mujoco.mj_saveLastXML(str(out), model)
        root = ET.parse(out).getroot()
    worldbody = root.find("worldbody")
    for body in worldbody.iter("body"):
        body.set("gravcomp", "1")
        for geom in body.findall("geom"):
            # Robot geoms touch the world but not each other (contype 2 never meets 2).
            geom.set("contype", "2")
            geom.set("conaffinity", "1")
            geom.set("friction", "1.2 0.01 0.001")
    for geom in worldbody.find(".//body[@name='head_camera_link']").findall("geom"):
        geom.set("contype", "0")
        geom.set("conaffinity", "0")
    optical = worldbody.find(f".//body[@name='{HEAD_CAMERA_FRAME}']")
    # MuJoCo cameras look along -z with y up; the optical frame looks along +z with y down.
    ET.SubElement(optical, "camera", name=CAMERA_NAME, pos="0 0 0", xyaxes="1 0 0 0 -1 0",
                  fovy=f"{HEAD_CAMERA_FOVY_DEG:g}")
    actuator = ET.SubElement(root, "actuator")
    for i, name in enumerate(JOINT_NAMES):
        kp, kv, armature = ARM_GAINS if i < 7 else HAND_GAINS
        joint = worldbody.find(f".//joint[@name='{name}']")
        joint.set("armature", f"{armature:g}")
        ET.SubElement(actuator, "position", name=f"{name}_servo", joint=name, kp=f"{kp:g}",
                      kv=f"{kv:g}", ctrlrange=joint.get("range"), ctrllimited="true")
    return ET.tostring(root, encoding="unicode")


@dataclass
class Scene:
    """A compiled scene and the indices tasks need."""

    model: mujoco.MjModel
    object_names: tuple[str, ...]
    object_kinds: tuple[str, ...]
    object_bottom_offsets: np.ndarray  # (K,) z from body origin down to the object's bottom
    object_radii: np.ndarray  # (K,) horizontal radius
    object_heights: np.ndarray  # (K,) bottom to top
    qpos_robot: np.ndarray = field(init=False)
    qvel_robot: np.ndarray = field(init=False)
    actuators: np.ndarray = field(init=False)
    object_qpos: np.ndarray = field(init=False)  # (K, 7) qpos addresses of each free joint
    object_qvel: np.ndarray = field(init=False)  # (K, 6)
    object_bodies: np.ndarray = field(init=False)
    hand_geoms: np.ndarray = field(init=False)
    hand_geom_set: frozenset[int] = field(init=False)
    robot_geom_set: frozenset[int] = field(init=False)
    object_geoms: list[np.ndarray] = field(init=False)
    object_geom_sets: list[frozenset[int]] = field(init=False)
    table_geom_set: frozenset[int] = field(init=False)
    keypoint_bodies: np.ndarray = field(init=False)
    camera_id: int = field(init=False)

    def __post_init__(self) -> None:
        m = self.model
        joints = [m.joint(n) for n in JOINT_NAMES]
        self.qpos_robot = np.array([j.qposadr[0] for j in joints])
        self.qvel_robot = np.array([j.dofadr[0] for j in joints])
        self.actuators = np.array([m.actuator(f"{n}_servo").id for n in JOINT_NAMES])
        self.object_bodies = np.array([m.body(f"{n}_main").id for n in self.object_names])
        self.object_qpos = np.zeros((len(self.object_names), 7), dtype=int)
        self.object_qvel = np.zeros((len(self.object_names), 6), dtype=int)
        for k, body in enumerate(self.object_bodies):
            joint = m.body_jntadr[body]
            self.object_qpos[k] = m.jnt_qposadr[joint] + np.arange(7)
            self.object_qvel[k] = m.jnt_dofadr[joint] + np.arange(6)
        wrist = m.body(WRIST_LINK).id
        hand_bodies = [b for b in range(m.nbody) if _is_descendant(m, b, wrist)]
        self.hand_geoms = np.array([g for g in range(m.ngeom) if m.geom_bodyid[g] in hand_bodies])
        self.hand_geom_set = frozenset(self.hand_geoms.tolist())
        base = m.body(ROBOT_BASE_LINK).id
        self.robot_geom_set = frozenset(g for g in range(m.ngeom)
                                        if _is_descendant(m, m.geom_bodyid[g], base))
        self.object_geoms = [
            np.array([g for g in range(m.ngeom)
                      if _is_descendant(m, m.geom_bodyid[g], body) and m.geom_contype[g] != 0])
            for body in self.object_bodies
        ]
        self.object_geom_sets = [frozenset(g.tolist()) for g in self.object_geoms]
        table = m.body("table").id
        self.table_geom_set = frozenset(g for g in range(m.ngeom)
                                        if _is_descendant(m, m.geom_bodyid[g], table))
        self.keypoint_bodies = np.array([m.body(n).id for n in WRIST_AND_TIP_BODIES])
        self.camera_id = m.camera(CAMERA_NAME).id


def _is_descendant(model: mujoco.MjModel, body: int, ancestor: int) -> bool:
    while body != 0:
        if body == ancestor:
            return True
        body = model.body_parentid[body]
    return ancestor == 0


def build_scene(objects: tuple[str, ...] = ("can", "red_box", "blue_cylinder"),
                urdf_path: str | Path | None = None, backdrop=None,
                backdrop_models=()) -> Scene:
    """Compile the table scene with the robot and the given robosuite objects.

    ``backdrop`` (a robosuite ``Arena``, e.g. a RoboCasa kitchen) replaces the table arena's
    floor and walls; only the table is kept from ``TableArena``. ``backdrop_models`` are extra
    robosuite models (e.g. kitchen fixtures) appended to the world.
    """
    from robosuite.models import MujocoWorldBase
    from robosuite.models.arenas import TableArena
    from robosuite.models.base import MujocoXML

    world = MujocoWorldBase()
    table = TableArena(table_full_size=TABLE_SIZE, table_offset=TABLE_OFFSET)
    if backdrop is None:
        world.merge(table)
    else:
        world.merge(backdrop)
        world.worldbody.append(table.worldbody.find("./body[@name='table']"))
        world.merge_assets(table)
        for extra in backdrop_models:
            world.worldbody.append(extra.get_obj())
            world.merge_assets(extra)
    # Pedestal under the arm base (visual and collision; the arm sits on it).
    base = np.array([float(v) for v in _urdf_base_xyz(urdf_path)])
    ET.SubElement(world.worldbody, "geom", name="robot_pedestal", type="cylinder",
                  size=f"0.1 {base[2] / 2:g}", pos=f"{base[0]:g} {base[1]:g} {base[2] / 2:g}",
                  rgba="0.3 0.3 0.32 1", group="1")
    names, kinds, bottoms, radii, heights = [], [], [], [], []
    for k, kind in enumerate(objects):
        name = f"obj{k}_{kind}"
        obj = _make_object(kind, name)
        body = obj.get_obj()
        body.set("pos", f"0 0 {1.0 + 0.2 * k:g}")
        world.worldbody.append(body)
        world.merge_assets(obj)
        names.append(name)
        kinds.append(kind)
        bottoms.append(-float(obj.bottom_offset[2]))
        radii.append(float(obj.horizontal_radius))
        heights.append(float(obj.top_offset[2] - obj.bottom_offset[2]))
    with tempfile.TemporaryDirectory() as tmp:
        robot_file = Path(tmp) / "robot.xml"
        robot_file.write_text(robot_mjcf(urdf_path))
        world.merge(MujocoXML(str(robot_file)))
    option = world.root.find("option")
    option.set("timestep", f"{TIMESTEP:g}")
    option.set("integrator", "implicitfast")
    model = world.get_model(mode="mujoco")
    model.vis.global_.offwidth = max(model.vis.global_.offwidth, 640)
    model.vis.global_.offheight = max(model.vis.global_.offheight, 480)
    return Scene(model, tuple(names), tuple(kinds), np.array(bottoms), np.array(radii),
                 np.array(heights))


def _urdf_base_xyz(urdf_path: str | Path | None) -> list[str]:
    path = Path(urdf_path) if urdf_path is not None else default_urdf_path()
    for joint in ET.parse(path).getroot().iter("joint"):
        if joint.find("child").get("link") == "fr3_link0":
            return joint.find("origin").get("xyz").split()
    raise ValueError(f"{path}: no joint with child fr3_link0")


def rotation_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Rotation vector (3,) taking ``current`` to ``target`` (world frame)."""
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, (target @ current.T).ravel())
    vel = np.zeros(3)
    mujoco.mju_quat2Vel(vel, quat, 1.0)
    return vel


def solve_wrist_ik(scene: Scene, data: mujoco.MjData, target_pos, target_rot, q_init,
                   iterations: int = 150, tolerance: float = 2e-3) -> tuple[np.ndarray, float]:
    """Damped least-squares IK of the 7 arm joints for a wrist pose.

    ``data`` is scratch space (its robot joints are overwritten). Returns (23,) joint positions
    (hand joints from ``q_init``) and the final position error in metres.
    """
    m = scene.model
    wrist = m.body(WRIST_LINK).id
    lower, upper = m.jnt_range[[m.joint(n).id for n in JOINT_NAMES]].T
    q = np.clip(np.asarray(q_init, float).copy(), lower, upper)
    jacp, jacr = np.zeros((3, m.nv)), np.zeros((3, m.nv))
    arm_dofs = scene.qvel_robot[:7]
    err_pos = np.inf
    for _ in range(iterations):
        data.qpos[scene.qpos_robot] = q
        mujoco.mj_kinematics(m, data)
        mujoco.mj_comPos(m, data)
        err_pos_vec = np.asarray(target_pos) - data.xpos[wrist]
        err_rot = rotation_error(np.asarray(target_rot), data.xmat[wrist].reshape(3, 3))
        err_pos = float(np.linalg.norm(err_pos_vec))
        if err_pos < tolerance and np.linalg.norm(err_rot) < 0.02:
            break
        mujoco.mj_jacBody(m, data, jacp, jacr, wrist)
        jac = np.vstack([jacp[:, arm_dofs], 0.3 * jacr[:, arm_dofs]])
        err = np.concatenate([err_pos_vec, 0.3 * err_rot])
        step = jac.T @ np.linalg.solve(jac @ jac.T + 1e-3 * np.eye(6), err)
        q[:7] = np.clip(q[:7] + np.clip(step, -0.2, 0.2), lower[:7], upper[:7])
    return q, err_pos
