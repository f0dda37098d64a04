"""``python -m training.transcode SRC DST``: EgoDex at the model's resolution, for fast decoding.

Training sees 224 x 392 crops, but EgoDex ships 1080p video; decoding 1080p is what limits the
on-the-fly data path (``benchmarks/data_path.py``: 6-7x fewer clip frames per second per
worker than at 224p). This writes, for every ``<name>.hdf5`` + ``<name>.mp4`` under SRC, the video
scaled to cover 224 x 392 (aspect kept, 1080p -> 398 x 224; the same area scaler the decoder
uses) as H.264 with a keyframe every ``--keyframe-s`` seconds, and a copy of the HDF5 whose
``camera/intrinsic`` is rescaled to the new size, under the same relative path in DST.
``ClipDataset`` reads DST like the original (the centre crop then happens at decode time).
Finished episodes are skipped, so an interrupted run resumes; ``--workers`` processes.
"""
from __future__ import annotations

import argparse
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import av
import h5py
import numpy as np

from training.video import CropGeometry, write_video


def scaled_geometry(height: int, width: int) -> CropGeometry:
    """Resize of a ``(height, width)`` source to cover ``IMAGE_SIZE`` without cropping."""
    resized = CropGeometry.for_source(height, width).resized
    resized = (resized[0] + resized[0] % 2, resized[1] + resized[1] % 2)  # H.264 wants even
    return CropGeometry((height, width), resized, (0, 0), resized)


def transcode_episode(hdf5: Path, destination: Path, crf: int = 18,
                      keyframe_s: float = 0.5) -> Path:
    """Write the scaled video and the HDF5 with rescaled intrinsics of one EgoDex episode;
    returns the new HDF5 path (the video is written first, the HDF5 last and atomically)."""
    video = hdf5.with_suffix(".mp4")
    if not video.exists():
        raise FileNotFoundError(f"EgoDex video {video} not found")
    destination.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(video)) as container:
        if not container.streams.video:
            raise ValueError(f"{video}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = float(stream.average_rate)
        geometry = scaled_geometry(stream.height, stream.width)
        frames = (frame.to_ndarray(width=geometry.out[1], height=geometry.out[0],
                                   format="rgb24", interpolation="AREA")
                  for frame in container.decode(stream))
        write_video(destination.with_suffix(".mp4"), frames, fps,
                    keyframe_interval=max(1, round(keyframe_s * fps)), crf=crf)
    partial = destination.with_name(f".{destination.name}.partial")
    shutil.copyfile(hdf5, partial)
    with h5py.File(partial, "r+") as f:
        if "camera/intrinsic" not in f:
            raise ValueError(f"{hdf5}: missing 'camera/intrinsic'")
        native = np.asarray(f["camera/intrinsic"][()], dtype=np.float64)
        del f["camera/intrinsic"]  # rewritten as float64: no rounding of the new matrix
        f["camera/intrinsic"] = geometry.intrinsics(native)
    partial.replace(destination)
    return destination


def transcode_tree(source: Path, destination: Path, crf: int = 18, keyframe_s: float = 0.5,
                   workers: int = 1, progress: bool = True) -> list[Path]:
    """Transcode every episode under ``source`` not yet in ``destination``."""
    episodes = sorted(source.rglob("*.hdf5"))
    if not episodes:
        raise ValueError(f"no EgoDex episodes (*.hdf5) under {source}")
    todo = [(p, destination / p.relative_to(source)) for p in episodes
            if not (destination / p.relative_to(source)).exists()]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(episodes), initial=len(episodes) - len(todo), unit="episode",
                   desc="transcode")
    done = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(transcode_episode, src, dst, crf, keyframe_s)
                   for src, dst in todo]
        for future in futures:
            done.append(future.result())
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.transcode",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="EgoDex directory (e.g. data/egodex/train)")
    parser.add_argument("destination", type=Path, help="output directory")
    parser.add_argument("--crf", type=int, default=18, help="x264 quality (lower is better)")
    parser.add_argument("--keyframe-s", type=float, default=0.5,
                        help="seconds between keyframes (shorter: faster seeking)")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes")
    args = parser.parse_args(argv)
    done = transcode_tree(args.source, args.destination, args.crf, args.keyframe_s,
                          args.workers)
    print(f"transcoded {len(done)} episodes into {args.destination}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
