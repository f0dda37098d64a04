"""URDF in MuJoCo, FK against the simulator, tasks, success detectors, rendering."""
import importlib.util
import sys

import mujoco
import numpy as np
import pytest
import torch

from dexwm_ros.core.kinematics import (
    FINGER_KEYPOINT_LINKS,
    JOINT_NAMES,
    WRIST_LINK,
    RobotKinematics,
    default_urdf_path,
    head_camera,
    urdf_joint_limits,
)
from dexwm_ros.sim import make_task
from dexwm_ros.sim.scene import CAMERA_NAME


@pytest.fixture(scope="module")
def reach():
    with make_task("reach", seed=1) as task:
        yield task


@pytest.fixture(scope="module")
def kin():
    return RobotKinematics()


def test_urdf_is_reproducible_and_loads_in_mujoco():
    path = default_urdf_path()
    spec = importlib.util.spec_from_file_location("gen", path.parent / "generate_fr3_allegro.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.generate() == path.read_text()
    model = mujoco.MjModel.from_xml_path(str(path))
    assert [model.joint(i).name for i in range(model.njnt)] == list(JOINT_NAMES)


def test_sim_joint_limits_match_urdf(reach):
    lower, upper = urdf_joint_limits()
    ranges = reach.model.jnt_range[[reach.model.joint(n).id for n in JOINT_NAMES]]
    np.testing.assert_allclose(ranges[:, 0], lower)
    np.testing.assert_allclose(ranges[:, 1], upper)


def test_fk_keypoints_equal_simulator_bodies(reach, kin):
    links = (WRIST_LINK,) + tuple(n for f in FINGER_KEYPOINT_LINKS for n in f)
    bodies = [reach.model.body(n).id for n in links]
    rng = np.random.default_rng(0)
    data = mujoco.MjData(reach.model)
    q = rng.uniform(reach.lower, reach.upper, size=(20, 23))
    fk = kin.keypoints_world(torch.tensor(q, dtype=torch.float32)).numpy()
    for i in range(len(q)):
        data.qpos[reach.scene.qpos_robot] = q[i]
        mujoco.mj_kinematics(reach.model, data)
        sim = data.xpos[bodies]
        np.testing.assert_allclose(fk[i, 0], sim[0], atol=1e-3)
        np.testing.assert_allclose(fk[i, 1:17], sim[1:17], atol=1e-3)


def test_sim_camera_is_the_head_camera(reach):
    cam = head_camera()
    cid = reach.model.camera(CAMERA_NAME).id
    np.testing.assert_allclose(reach.data.cam_xpos[cid], cam.camera_to_world[:3, 3], atol=1e-6)
    # MuJoCo camera axes: x right, y up, z backwards = OpenCV (x, -y, -z).
    mj = reach.data.cam_xmat[cid].reshape(3, 3)
    expected = cam.camera_to_world[:3, :3].numpy() * np.array([1, -1, -1])
    np.testing.assert_allclose(mj, expected, atol=1e-5)
    assert reach.model.cam_fovy[cid] == pytest.approx(80.0)


def test_projected_palm_lands_on_the_palm_in_the_image(reach):
    """Pixel projection agrees with the renderer (segmentation of the palm geom)."""
    palm = reach.model.body("allegro_palm").id
    centre = reach.data.xpos[palm] + reach.data.xmat[palm].reshape(3, 3) @ [-0.0093, 0, -0.0475]
    u, v = head_camera().project(head_camera().world_to_camera(centre))
    renderer = mujoco.Renderer(reach.model, 224, 392)
    try:
        renderer.enable_segmentation_rendering()
        renderer.update_scene(reach.data, CAMERA_NAME)
        seg = renderer.render()
    finally:
        renderer.close()
    geom = seg[round(v), round(u), 0]
    assert reach.model.geom_bodyid[geom] == palm


def test_render_shape_and_determinism_per_seed(reach):
    image = reach.render()
    assert image.shape == (224, 392, 3) and image.dtype == np.uint8
    goal = reach.goal_image()
    assert goal.shape == (224, 392, 3) and not np.array_equal(image, goal)
    state = reach.object_poses()
    reach.reset(2)
    assert not np.array_equal(reach.object_poses(), state)
    reach.reset(1)
    np.testing.assert_array_equal(reach.object_poses(), state)
    np.testing.assert_array_equal(reach.render(), image)
    np.testing.assert_array_equal(reach.goal_image(), goal)


def test_step_clips_and_validates(reach):
    reach.reset(1)
    start = reach.time
    reach.step(np.full(23, 100.0))
    np.testing.assert_allclose(reach.joint_targets(), reach.upper)
    assert reach.time - start == pytest.approx(0.2)
    with pytest.raises(ValueError, match="23"):
        reach.step(np.zeros(7))
    with pytest.raises(ValueError, match="NaN"):
        reach.step(np.full(23, np.nan))


def test_unknown_names_and_missing_robocasa():
    with pytest.raises(ValueError, match="unknown task"):
        make_task("push")
    with pytest.raises(ValueError, match="unknown backend"):
        make_task("reach", backend="isaac")
    if "robocasa" not in sys.modules and importlib.util.find_spec("robocasa") is None:
        with pytest.raises(RuntimeError, match="RoboCasa"):
            make_task("reach", backend="robocasa")
