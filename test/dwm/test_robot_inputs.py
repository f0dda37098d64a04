"""Static-scene and hand-only videos from the robot."""
import mujoco
import numpy as np
import pytest

from dexwm_ros.core.kinematics import HOME_JOINT_POSITIONS
from dexwm_ros.dwm.robot_inputs import (
    HandVideoRenderer,
    resample_trajectory,
    static_scene_video,
)
from dexwm_ros.sim.scene import robot_mjcf


@pytest.fixture(scope="module")
def robot():
    return mujoco.MjModel.from_xml_string(robot_mjcf())


@pytest.fixture(scope="module")
def renderer(robot):
    with HandVideoRenderer(robot, 96, 160) as r:
        yield r


def joint_path(frames):
    start = np.array(HOME_JOINT_POSITIONS)
    end = start.copy()
    end[0] += 0.3
    end[7:] += 0.8  # close the fingers
    return resample_trajectory([0.0, 2.0], np.stack([start, end]), frames)


def test_hand_video_shape_determinism_and_plain_background(renderer, robot):
    joints = joint_path(5)
    video = renderer.render(joints)
    assert video.shape == (5, 96, 160, 3) and video.dtype == np.uint8
    assert np.array_equal(video, renderer.render(joints))
    lit = video.max(axis=-1) > 40
    assert 0.001 < lit.mean() < 0.5  # the hand is visible
    assert (video.max(axis=-1) < 5).mean() > 0.5  # on a plain black background
    with HandVideoRenderer(robot, 96, 160, root_body="fr3_link0") as whole_robot:
        assert (whole_robot.render(joints).max(axis=-1) > 40).mean() > 2 * lit.mean()
    assert not np.array_equal(video[0], video[-1])  # the hand moves along the plan
    with pytest.raises(ValueError, match="23"):
        renderer.render(joints[:, :7])


def test_static_scene_video_repeats_the_resized_frame():
    frame = np.random.default_rng(0).integers(0, 256, (224, 392, 3), dtype=np.uint8)
    video = static_scene_video(frame, 9, 32, 48)
    assert video.shape == (9, 32, 48, 3)
    assert all(np.array_equal(video[0], f) for f in video)


def test_trajectory_resampling():
    out = resample_trajectory([0.0, 1.0, 3.0], [[0.0], [1.0], [5.0]], 4)
    np.testing.assert_allclose(out[:, 0], [0.0, 1.0, 3.0, 5.0])
    assert resample_trajectory([0.5], [[2.0, 3.0]], 3).tolist() == [[2.0, 3.0]] * 3
    with pytest.raises(ValueError, match="increase"):
        resample_trajectory([0.0, 0.0], [[0.0], [1.0]], 3)
    with pytest.raises(ValueError, match="NaN"):
        resample_trajectory([0.0, 1.0], [[0.0], [np.nan]], 3)


def test_the_hand_looks_the_same_in_any_scene(renderer):
    """Training triplets render from a task scene, the node from the robot alone."""
    from dexwm_ros.sim import make_task

    joints = joint_path(3)
    with make_task("reach", seed=0) as task:
        with HandVideoRenderer(task.model, 96, 160) as in_scene:
            assert np.array_equal(in_scene.render(joints), renderer.render(joints))
