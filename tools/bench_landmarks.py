"""Landmark speed (and accuracy) per backend: frames per second on a video, detection on every
frame (the image path) against the tracked video path, with the decode-only rate for reference.

    python tools/bench_landmarks.py                 # videos/d3.mp4 of the shared data
    python tools/bench_landmarks.py --video clip.mp4 --backends dlib mediapipe

Models are loaded and warmed before timing; every timed run includes decoding the video (except
the image path, which times detection on frames decoded beforehand, and says so). Results go in
docs/landmarks.md with the machine they ran on.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from faceanime.errors import FaceAnimeError  # noqa: E402
from faceanime.io import iter_video_frames, read_image, read_video_info  # noqa: E402
from faceanime.landmarks import (  # noqa: E402
    BACKENDS,
    TrackerConfig,
    available_backends,
    create_detector,
    detect_landmarks,
    nme,
    read_pts,
    track_video,
)


def _data_root() -> Path:
    env = os.environ.get("FACEANIME_TEST_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def _rate(frames: int, seconds: float) -> str:
    return f"{frames / seconds:7.1f} | {1000 * seconds / frames:7.2f}"


def bench_backend(name: str, video: Path, frames: list, image_limit: int, photo: Path | None,
                  truth: Path | None) -> list[str]:
    """Table rows for one backend."""
    try:
        det = create_detector(name)
    except FaceAnimeError as exc:
        return [f"| {name} | unavailable: {str(exc)[:90]} | | | |"]
    rows = []
    with det:
        det.detect(frames[0])  # load and warm the models outside the timings
        subset = frames[:image_limit]
        start = time.perf_counter()
        for frame in subset:
            detect_landmarks(frame, det)
        rows.append(f"| {name} | image path: detect every frame (decoded beforehand) | "
                    f"{len(subset)} | {_rate(len(subset), time.perf_counter() - start)} |")
        # The default checks every frame; every 3rd shows what the convergence test costs.
        for check_every in (1,) if det.self_verifying else (1, 3):
            config = TrackerConfig(progress=False, check_every=check_every)
            start = time.perf_counter()
            track = track_video(video, config, detector=det)
            seconds = time.perf_counter() - start
            label = "" if check_every == 1 else f", convergence test every {check_every} frames"
            rows.append(f"| {name} | video path: tracked + smoothed, incl. decode{label} "
                        f"({int(track.detected.sum())} detections, "
                        f"{int(track.valid.sum())}/{len(track)} valid) | "
                        f"{len(track)} | {_rate(len(track), seconds)} |")
        if photo is not None and truth is not None:
            face = detect_landmarks(photo, det)
            rows.append(f"| {name} | NME on {photo.name} (outer-eye normalised) | 1 | "
                        f"{100 * nme(face.points, read_pts(truth)):.2f} % | |")
    return rows


def main(argv: list[str] | None = None) -> int:
    data = _data_root()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=data / "videos" / "d3.mp4")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS))
    parser.add_argument("--image-frames", type=int, default=120,
                        help="frames timed for the detect-every-frame path (fan: at most 20)")
    args = parser.parse_args(argv)

    info = read_video_info(args.video)
    start = time.perf_counter()
    frames = [f.copy() for f in iter_video_frames(args.video)]
    decode = time.perf_counter() - start
    photo = data / "faces" / "image_0010.png"
    truth = data / "faces" / "image_0010.pts"
    if not (photo.is_file() and truth.is_file()):
        photo = truth = None
    else:
        read_image(photo)  # decoded once so the file cache does not bias the first backend

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, {platform.system()}")
    print(f"video: {args.video.name}, {len(frames)} frames, {info.size[0]}×{info.size[1]}, "
          f"{info.fps:g} fps; installed backends: {', '.join(available_backends())}\n")
    print("| backend | path | frames | frames/s | ms/frame |")
    print("| --- | --- | ---: | ---: | ---: |")
    print(f"| - | decode only (ffmpeg, RGB) | {len(frames)} | {_rate(len(frames), decode)} |")
    for name in args.backends:
        limit = min(args.image_frames, 20) if name == "fan" else args.image_frames
        for row in bench_backend(name, args.video, frames, limit, photo, truth):
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
