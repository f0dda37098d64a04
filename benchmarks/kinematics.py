"""FK of 512 x 3 joint configurations: batched torch FK vs a MuJoCo loop (one at a time).

The planner evaluates N = 512 samples x T = 3 horizon steps per CEM iteration (paper
appendix B); the official code loops MuJoCo per sample. Ends with BENCH lines.
"""
import os
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from dexwm_ros.core.kinematics import (  # noqa: E402
    FINGER_KEYPOINT_LINKS,
    JOINT_NAMES,
    WRIST_LINK,
    RobotKinematics,
    default_urdf_path,
    head_camera,
)
from dexwm_ros.sim.scene import robot_mjcf  # noqa: E402


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), float(np.median(times))


def main() -> None:
    kin = RobotKinematics(default_urdf_path())
    cam = head_camera()
    q = kin.lower + (kin.upper - kin.lower) * torch.rand(512, 3, 23)
    kin.keypoints_camera(q, cam)  # warm up
    threads = torch.get_num_threads()
    many_best, many_median = best_of(lambda: kin.keypoints_camera(q, cam), 20)
    # Intra-op threads cost milliseconds per op when the cores are busy (shared machine);
    # the FK is ~200 small ops, so one thread is the dependable setting for it.
    torch.set_num_threads(1)
    torch_best, torch_median = best_of(lambda: kin.keypoints_camera(q, cam), 20)
    torch.set_num_threads(threads)

    model = mujoco.MjModel.from_xml_string(robot_mjcf())
    data = mujoco.MjData(model)
    qpos = np.array([model.joint(n).qposadr[0] for n in JOINT_NAMES])
    bodies = [model.body(n).id for n in (WRIST_LINK,)
              + tuple(x for f in FINGER_KEYPOINT_LINKS for x in f)]
    q_np = q.reshape(-1, 23).double().numpy()
    out = np.zeros((len(q_np), len(bodies), 3))

    def mujoco_loop():
        for i, row in enumerate(q_np):
            data.qpos[qpos] = row
            mujoco.mj_kinematics(model, data)
            out[i] = data.xpos[bodies]

    mj_best, mj_median = best_of(mujoco_loop, 5)
    print(f"torch FK 512x3 -> camera keypoints, {threads} threads: best {many_best * 1e3:.2f} ms, "
          f"median {many_median * 1e3:.2f} ms")
    print(f"torch FK 512x3 -> camera keypoints, 1 thread: best {torch_best * 1e3:.2f} ms, "
          f"median {torch_median * 1e3:.2f} ms")
    print(f"MuJoCo mj_kinematics loop 1536 configs: best {mj_best * 1e3:.2f} ms, "
          f"median {mj_median * 1e3:.2f} ms")
    print(f"BENCH fk_torch_512x3_cpu_1thread {torch_best * 1e3:.2f} ms")
    print(f"BENCH fk_torch_512x3_cpu_{threads}threads {many_best * 1e3:.2f} ms")
    print(f"BENCH fk_mujoco_loop_512x3_cpu {mj_best * 1e3:.2f} ms")
    print(f"BENCH fk_speedup_torch_vs_mujoco_loop {mj_best / torch_best:.2f} x")


if __name__ == "__main__":
    main()
