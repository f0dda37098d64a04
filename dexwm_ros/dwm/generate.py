"""Generate DWM videos for triplets (evaluation): ``<out>/seed_<k>/<stem>.mp4``.

Each triplet's static-scene video, hand video and prompt go through the pipeline; the paper
averages its metrics over three generations per sample (section 3), hence ``--seeds``.
``dexwm-dwm-metrics --generated <out>/seed_0 --reference <triplets>`` then compares them with
the triplets' interaction videos.

    dexwm-dwm-generate --base /models/CogVideoX-Fun-V1.1-5b-InP --weights runs/dwm/dwm \\
        --triplets data/dwm_test --out runs/dwm/eval --seeds 3 --device cuda --dtype bfloat16
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dexwm-dwm-generate",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="base model directory")
    parser.add_argument("--weights", type=Path, required=True, help="DWM weights directory")
    parser.add_argument("--triplets", type=Path, required=True, help="triplet directory")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--seeds", type=int, default=1, help="generations per triplet")
    parser.add_argument("--steps", type=int, default=50, help="denoising steps")
    parser.add_argument("--guidance", type=float, default=6.0, help="text guidance (1 = off)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
    parser.add_argument("--overwrite", action="store_true", help="redo existing videos")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    from tqdm import tqdm

    from dexwm_ros.dwm.loading import load_pipeline
    from dexwm_ros.dwm.triplets import list_triplets, read_triplet
    from training.video import write_video

    infos = list_triplets(args.triplets)
    pipeline = load_pipeline(args.base, args.weights, device=args.device, dtype=args.dtype)
    todo = [(info, seed) for info in infos for seed in range(args.seeds)
            if args.overwrite or not (args.out / f"seed_{seed}" / f"{info.stem}.mp4").is_file()]
    for info, seed in tqdm(todo, desc="DWM videos", unit="video"):
        videos = read_triplet(info)
        scene = pipeline.prepare_scene(videos["static"], info.prompt)
        frames = pipeline.imagine(scene, videos["hand"], steps=args.steps,
                                  guidance_scale=args.guidance, seed=seed)[0]
        path = args.out / f"seed_{seed}" / f"{info.stem}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{info.stem}.partial.mp4")  # a rerun never sees half a file
        write_video(partial, frames, info.fps)
        os.replace(partial, path)
    print(f"wrote {len(todo)} video(s) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
