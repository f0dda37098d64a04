"""Aligned DWM training triplets from the simulator: static scene, hand only, interaction.

The paper builds exactly aligned triplets from synthetic data (section 2, "Hybrid Dataset
Construction"); the simulator gives them for free. For one episode, with the fixed head camera:

* ``interaction.mp4``: the camera frames of the episode;
* ``static.mp4``: the episode's first frame repeated (the scene before the action);
* ``hand.mp4``: the hand alone (``HandVideoRenderer``) at the same frames' joint positions.

The episode's frames are resampled to ``F`` evenly spaced frames (the same indices for all
three videos) and resized/cropped to the model size. One folder per sample::

    <out>/<stem>/interaction.mp4, static.mp4, hand.mp4, meta.json

``meta.json`` (written last, so a folder without it is incomplete and redone) holds the prompt,
fps, frame count, size and the episode's source. ``dexwm-dwm-triplets`` writes them from
exploration episode files (``--episodes``) or from freshly generated scripted episodes
(``--generate N``); a rerun skips finished samples.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dexwm_ros.core.checkpoint import load_json, save_json
from dexwm_ros.dwm.robot_inputs import resize_frames

VIDEOS = ("interaction", "static", "hand")
META_FILE = "meta.json"
#: Default prompts by exploration mode (``--prompt`` replaces them).
PROMPTS = {
    "lift_replay": "a robot hand reaches for an object on the table, grasps it and lifts it",
    "random_targets": "a robot hand moves above the objects on the table",
    "hand_open_close": "a robot hand opens and closes its fingers above the table",
}


@dataclass(frozen=True)
class TripletInfo:
    """One sample folder and its metadata."""

    path: Path
    prompt: str
    num_frames: int
    height: int
    width: int
    fps: float

    @property
    def stem(self) -> str:
        return self.path.name


def frame_indices(num_source: int, num_frames: int) -> np.ndarray:
    """``num_frames`` evenly spaced indices into ``num_source`` frames (first and last kept)."""
    if num_source < 1 or num_frames < 1:
        raise ValueError(f"need at least one frame, got {num_source} -> {num_frames}")
    return np.round(np.linspace(0, num_source - 1, num_frames)).astype(int)


def episode_triplet(images: np.ndarray, joint_positions: np.ndarray, renderer,
                    num_frames: int, height: int, width: int) -> dict[str, np.ndarray]:
    """The three aligned videos ``(F, height, width, 3)`` of one episode.

    ``renderer`` renders hand-only frames at the episode images' size and camera.
    """
    images = np.asarray(images)
    if images.shape[1:3] != (renderer.height, renderer.width):
        raise ValueError(f"episode images are {images.shape[1:3]}, the hand renderer makes "
                         f"{(renderer.height, renderer.width)}")
    if len(images) != len(joint_positions):
        raise ValueError(f"{len(images)} images but {len(joint_positions)} joint positions")
    index = frame_indices(len(images), num_frames)
    hand = renderer.render(np.asarray(joint_positions)[index])
    return {
        "interaction": resize_frames(images[index], height, width),
        "static": resize_frames(np.repeat(images[:1], num_frames, axis=0), height, width),
        "hand": resize_frames(hand, height, width),
    }


def write_triplet(folder: Path, videos: dict[str, np.ndarray], prompt: str, fps: float,
                  source: dict) -> TripletInfo:
    from training.video import write_video

    folder.mkdir(parents=True, exist_ok=True)
    shapes = {videos[name].shape for name in VIDEOS}
    if len(shapes) != 1:
        raise ValueError(f"triplet videos differ in shape: {shapes}")
    num_frames, height, width, _ = shapes.pop()
    for name in VIDEOS:
        write_video(folder / f"{name}.mp4", videos[name], fps)
    save_json(folder / META_FILE, {"prompt": prompt, "fps": fps, "num_frames": num_frames,
                                   "height": height, "width": width, "source": source})
    return read_info(folder)


def read_info(folder: str | Path) -> TripletInfo:
    folder = Path(folder)
    meta = load_json(folder / META_FILE)
    missing = [f"{name}.mp4" for name in VIDEOS if not (folder / f"{name}.mp4").is_file()]
    if missing:
        raise FileNotFoundError(f"triplet {folder} lacks {', '.join(missing)}")
    return TripletInfo(folder, str(meta["prompt"]), int(meta["num_frames"]),
                       int(meta["height"]), int(meta["width"]), float(meta["fps"]))


def list_triplets(root: str | Path) -> list[TripletInfo]:
    """Finished samples under ``root``, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"triplet directory {root} does not exist")
    infos = [read_info(p) for p in sorted(root.iterdir()) if (p / META_FILE).is_file()]
    if not infos:
        raise FileNotFoundError(f"no triplets (folders with {META_FILE}) in {root}")
    return infos


def read_triplet(info: TripletInfo) -> dict[str, np.ndarray]:
    """The three videos of a sample as uint8 ``(F, H, W, 3)``."""
    from training.video import read_frames

    return {name: read_frames(info.path / f"{name}.mp4", range(info.num_frames), out=None)
            for name in VIDEOS}


def main(argv: list[str] | None = None) -> int:
    """``dexwm-dwm-triplets``: write DWM training triplets (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="dexwm-dwm-triplets",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--episodes", type=Path,
                        help="directory of exploration episodes (episode_*.h5, dexwm-explore)")
    source.add_argument("--generate", type=int, metavar="N",
                        help="generate N scripted exploration episodes instead")
    parser.add_argument("--mode", default="mixed",
                        help="exploration mode for --generate (mixed cycles through them)")
    parser.add_argument("--seed", type=int, default=0, help="seed of generated episode 0")
    parser.add_argument("--steps", type=int, default=49,
                        help="control steps of a generated episode (one frame each)")
    parser.add_argument("--fps", type=float, default=8.0,
                        help="frame rate of the videos and control rate of generated episodes "
                             "(CogVideoX: 8)")
    parser.add_argument("--frames", type=int, default=49, help="frames per video (1 + 8m)")
    parser.add_argument("--height", type=int, default=480, help="video height")
    parser.add_argument("--width", type=int, default=720, help="video width")
    parser.add_argument("--prompt", help="prompt for every sample (default: by episode mode)")
    parser.add_argument("--overwrite", action="store_true", help="redo finished samples")
    args = parser.parse_args(argv)
    if args.frames < 1 or (args.frames - 1) % 8:
        parser.error("--frames must be 1 + 8m (CogVideoX VAE)")

    from tqdm import tqdm

    from dexwm_ros.dwm.robot_inputs import HandVideoRenderer
    from dexwm_ros.sim import make_task
    from dexwm_ros.sim.exploration import MODES

    if args.episodes is not None:
        from dexwm_ros.sim.episode_format import read_episode

        files = sorted(args.episodes.glob("episode_*.h5"))
        if not files:
            parser.error(f"no episode_*.h5 files in {args.episodes}")
        jobs = [(path.stem, path) for path in files]
    else:
        if args.generate < 1:
            parser.error("--generate must be >= 1")
        modes = MODES if args.mode == "mixed" else (args.mode,)
        if not set(modes) <= set(MODES):
            parser.error(f"--mode must be mixed or one of {MODES}")
        jobs = [(f"generated_{i:06d}", (modes[i % len(modes)], args.seed + i))
                for i in range(args.generate)]
    todo = [(stem, job) for stem, job in jobs
            if args.overwrite or not (args.out / stem / META_FILE).is_file()]
    if len(todo) < len(jobs):
        print(f"resuming: {len(jobs) - len(todo)} sample(s) already in {args.out}")
    if not todo:
        return 0
    with make_task("reach", seed=args.seed, control_hz=args.fps) as task:
        renderer = HandVideoRenderer(task.model, task.height, task.width)
        kinematics = None
        for stem, job in tqdm(todo, desc="DWM triplets", unit="sample"):
            if args.episodes is not None:
                episode = read_episode(job)
                source = {"episode": str(job)}
            else:
                from dexwm_ros.core.kinematics import RobotKinematics
                from dexwm_ros.sim.exploration import generate_episode

                kinematics = kinematics or RobotKinematics()
                mode, seed = job
                episode = generate_episode(task, kinematics, mode, seed, args.steps)
                source = {"generated": mode, "seed": seed, "control_hz": args.fps}
            videos = episode_triplet(episode["images"], episode["joint_positions"], renderer,
                                     args.frames, args.height, args.width)
            prompt = args.prompt or PROMPTS.get(episode["mode"], PROMPTS["random_targets"])
            write_triplet(args.out / stem, videos, prompt, args.fps, source)
        renderer.close()
    print(f"wrote {len(todo)} triplet(s) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
