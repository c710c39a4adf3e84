"""``faceanime landmarks``: 68-point iBUG landmarks of an image or a video, saved as ``.npz`` (or
``.pts`` for an image), with an optional overlay image/video to check them by eye."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from faceanime.devices import DEVICE_HELP, device_arg
from faceanime.errors import InputError, MediaError
from faceanime.io import (
    IMAGE_EXTENSIONS,
    is_video_path,
    iter_video_frames,
    read_image,
    read_video_info,
    write_image,
    write_video,
)
from faceanime.landmarks import (
    BACKENDS,
    DetectorConfig,
    Face,
    TrackerConfig,
    VideoLandmarks,
    detect_landmarks,
    draw_landmarks,
    points_box,
    read_pts,
    track_video,
    write_pts,
)
from faceanime.landmarks.tracking import MIN_PART_FRAMES

OUTPUT_SUFFIXES = (".npz", ".pts")
VIDEO_OVERLAY_SUFFIXES = (".mp4", ".mov", ".mkv", ".m4v")
NPZ_LAYOUT = ("landmarks (T,68,2), raw_landmarks (T,68,2), boxes (T,4), valid (T,), "
              "image_size [height,width], fps, backend, source")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``landmarks`` command."""
    tracker, detector = TrackerConfig(), DetectorConfig()
    parser = subparsers.add_parser(
        "landmarks", help="68-point face landmarks of an image or a video",
        description="Find the 68 iBUG landmarks of one face in an image, or track them through a "
                    "video (detect once, track with the landmark model, re-detect when the track "
                    "is lost, smooth with a One-Euro filter). Points are 0-based pixel x, y. "
                    "Formats and measured accuracy: docs/landmarks.md.")
    parser.add_argument("input", metavar="INPUT", type=Path, help="an image or a video file")
    parser.add_argument("-o", "--output", metavar="OUT", type=Path, required=True,
                        help=f".npz with {NPZ_LAYOUT} (T=1 for an image); or, for an image, an "
                             "iBUG .pts file (1-based coordinates)")
    parser.add_argument("--overlay", metavar="FILE", type=Path,
                        help="also write the input with the points and box drawn: an image "
                             "(.png, .jpg) for an image, an .mp4 for a video (keeps its audio)")
    parser.add_argument("--backend", choices=list(BACKENDS), default=tracker.backend,
                        help="landmark backend (default %(default)s; mediapipe and fan are "
                             "optional extras: pip install faceanime[mediapipe] / [fan])")
    parser.add_argument("--face-index", type=int, default=tracker.face_index, metavar="I",
                        help="which face: 0 = the largest (default), 1 = the next, ...")
    parser.add_argument("--smooth", type=float, default=tracker.smooth, metavar="S",
                        help="video smoothing strength (One-Euro filter): 0 = off, 1 = default, "
                             "2 = smoother (forward and back over the video: no lag)")
    parser.add_argument("--device", type=device_arg, default=detector.device,
                        help=f"torch device for the fan backend: {DEVICE_HELP} (dlib and "
                             "mediapipe run on the CPU whatever this says)")
    parser.add_argument("--max-side", type=int, default=detector.max_side, metavar="PX",
                        help="detect faces on a copy downscaled to this longer side "
                             "(default %(default)s); landmarks use full resolution")
    parser.add_argument("--pts", metavar="IN.pts", type=Path,
                        help="image only: take the landmarks from this iBUG .pts file instead of "
                             "detecting them (to convert or draw ground truth)")
    parser.add_argument("--parts", type=int, default=tracker.parts, metavar="N",
                        help="video only: track up to N consecutive parts of at least "
                             f"{MIN_PART_FRAMES} frames at once, one process each, each from its "
                             "own detection (default %(default)s: one pass)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run, face_hint=lambda args, message: (
        "try --backend mediapipe" if args.backend == "dlib" else "try --backend dlib"))


def run(args: argparse.Namespace) -> None:
    video = is_video_path(args.input)
    _check_outputs(args, video)
    detector = DetectorConfig(max_side=args.max_side, device=args.device)
    if video:
        if args.pts is not None:
            raise InputError(f"{args.pts}: --pts holds one image's points; it cannot be used "
                             "with a video")
        if not args.smooth >= 0:
            raise InputError(f"--smooth {args.smooth}: must be 0 (off) or positive")
        config = TrackerConfig(backend=args.backend, face_index=args.face_index,
                               smooth=args.smooth, progress=not args.no_progress,
                               detector=detector, parts=args.parts)
        track = track_video(args.input, config)
    else:
        image = read_image(args.input)
        if args.pts is not None:
            points = read_pts(args.pts)
            if points.shape != (68, 2):
                raise InputError(f"{args.pts}: holds {len(points)} points, 68 expected")
            face = Face(points=points, box=points_box(points), score=float("nan"))
            backend = "pts"
        else:
            face = detect_landmarks(image, args.backend, args.face_index, config=detector,
                                    name=str(args.input))
            backend = args.backend
        track = VideoLandmarks.from_face(face, image.shape[:2], backend, str(args.input))

    if args.output.suffix.lower() == ".pts":
        write_pts(args.output, track.points[0])
    else:
        track.save(args.output)
    if args.overlay is not None:
        if video:
            _write_video_overlay(args.input, args.overlay, track)
        else:
            write_image(args.overlay, draw_landmarks(image, track.points[0], track.boxes[0]))
    found = int(track.valid.sum())
    what = (f"{len(track)} frames, {found} with a face" if video else "1 face")
    print(f"{args.input}: {what} ({track.backend}) -> {args.output}"
          + (f", overlay {args.overlay}" if args.overlay is not None else ""))


def _check_outputs(args: argparse.Namespace, video: bool) -> None:
    """Fail before any work (a video can take minutes) when an output cannot be written."""
    suffix = args.output.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise InputError(f"{args.output}: output must be .npz (or .pts for an image)")
    if video and suffix == ".pts":
        raise InputError(f"{args.output}: a .pts file holds one face of one image; use .npz for "
                         "a video")
    outputs = [args.output]
    if args.overlay is not None:
        allowed = VIDEO_OVERLAY_SUFFIXES if video else IMAGE_EXTENSIONS
        if args.overlay.suffix.lower() not in allowed:
            kind = "video" if video else "image"
            raise InputError(f"{args.overlay}: the overlay of {'a' if video else 'an'} {kind} "
                             f"must be one of {', '.join(allowed)}")
        outputs.append(args.overlay)
    for out in outputs:
        if out.resolve() == args.input.resolve():
            raise InputError(f"{out}: output would overwrite the input")
        folder = out.parent if str(out.parent) else Path(".")
        if not folder.is_dir():
            raise MediaError(f"{out}: output folder {folder} does not exist; create it first")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise MediaError(f"{out}: output folder {folder} is not writable; choose another path")
        if out.is_dir():
            raise MediaError(f"{out}: is a folder; give a file name")


def _write_video_overlay(source: Path, target: Path, track: VideoLandmarks) -> None:
    info = read_video_info(source)

    def frames():
        for t, frame in enumerate(iter_video_frames(source)):
            if t >= len(track):
                break
            points = track.points[t] if track.valid[t] else None
            box = track.boxes[t] if track.valid[t] else None
            yield draw_landmarks(frame, points, box)

    write_video(target, frames(), track.fps, audio_from=source if info.has_audio else None)


__all__ = ["register", "run"]
