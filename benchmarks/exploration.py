"""Exploration-data generation speed (frames/s, rendering included), one episode per mode."""
import os
import tempfile
import time

os.environ.setdefault("MUJOCO_GL", "egl")

from dexwm_ros.core.kinematics import RobotKinematics  # noqa: E402
from dexwm_ros.sim.episode_format import episode_path, write_episode  # noqa: E402
from dexwm_ros.sim.exploration import MODES, generate_episode  # noqa: E402
from dexwm_ros.sim.tasks import make_task  # noqa: E402

STEPS = 40


def main() -> None:
    kinematics = RobotKinematics()
    frames = 0
    with make_task("reach", seed=0) as task, tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        for i, mode in enumerate(MODES):
            t0 = time.perf_counter()
            episode = generate_episode(task, kinematics, mode, seed=i, steps=STEPS)
            write_episode(episode_path(out, i), **episode)
            frames += STEPS
            print(f"{mode}: {STEPS / (time.perf_counter() - t0):.2f} frames/s")
        elapsed = time.perf_counter() - start
    print(f"BENCH exploration_generation {frames / elapsed:.2f} frames/s")


if __name__ == "__main__":
    main()
