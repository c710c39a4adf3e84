"""``faceanime retarget``: a photo's face makes a driving video's motions.

Also holds the options the three jobs share (:func:`add_job_options`, :func:`output_config`,
:func:`run_sources`), used by ``faceanime predict`` and ``faceanime animate``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from faceanime.devices import DEVICE_HELP, device_arg
from faceanime.errors import InputError
from faceanime.fitting import FitConfig
from faceanime.landmarks import BACKENDS
from faceanime.motion import MotionConfig
from faceanime.render.classic import ClassicConfig
from faceanime.render.warp import WarpConfig

_MOTION = MotionConfig()
_RENDER = ClassicConfig()
_WARP = WarpConfig()


def reference_frame(text: str) -> int | str:
    """``--reference-frame``: a frame number or ``best``."""
    if text == "best":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: use a frame number or best") from None


def add_job_options(p: argparse.ArgumentParser) -> None:
    """The sources, output, framing, renderer and reporting options of every job."""
    p.add_argument("--source", required=True, nargs="+", metavar="PHOTO",
                   help="the photo whose face moves; several photos or a folder of photos "
                        "give one output each (-o is then a folder)")
    p.add_argument("-o", "--output", required=True,
                   help="video to write (.mp4), or an existing folder (one <photo>.mp4 per "
                        "source)")
    p.add_argument("--renderer", choices=["warp", "mask"], default="warp",
                   help="weight-free renderer: warp (the photo moves as a whole, warped by the "
                        "3D fit's flow; default) or mask (the photo's face texture on the "
                        "fitted mesh, pasted into the still photo)")
    p.add_argument("--generator", metavar="CKPT", default=None,
                   help="PGFG generator checkpoint (default: the weight-free --renderer)")
    p.add_argument("--paste-back", action=argparse.BooleanOptionalAction, default=True,
                   help="show the face inside the full photo (default); --no-paste-back writes "
                        "an aligned square face crop")
    p.add_argument("--size", type=int, default=None,
                   help="output side in pixels: the crop's side with --no-paste-back "
                        "(default 512), else the photo's longer side (default: as the photo, "
                        "a larger photo reduced to 2048)")
    p.add_argument("--watermark", action="store_true",
                   help="draw a visible 'faceanime: synthetic' mark on every frame")
    p.add_argument("--feather", type=float, default=None,
                   help="pixels over which the face blends into its surroundings (default: "
                        f"{_WARP.feather:g} for warp, {_RENDER.feather:g} for mask and the "
                        "generator)")
    p.add_argument("--head-size", type=float, nargs=2, default=None, metavar=("W", "H"),
                   help="warp: width and height of the region that moves with the head, "
                        "relative to the face's (default: "
                        f"{_WARP.head_width:g} {_WARP.head_height:g}; larger for big hair)")
    p.add_argument("--batch-size", type=int, default=_RENDER.batch_size,
                   help="frames rendered at once (default: 0 = 8 on the CPU, 32 on CUDA)")
    p.add_argument("--workers", type=int, default=_RENDER.workers, metavar="N",
                   help="batches rendered at once on N threads (default: 0 = "
                        "one per torch CPU thread, at most 4)")
    p.add_argument("--model", default="sfm", help="morphable model (default: %(default)s)")
    p.add_argument("--face-index", type=int, default=0,
                   help="which face of the photo when it holds several, by size (default: 0 "
                        "= largest)")
    p.add_argument("--backend", choices=list(BACKENDS), default="dlib",
                   help="landmark backend for the photos and videos (default: %(default)s; "
                        "dlib looks again with its CNN detector when HOG finds no face)")
    p.add_argument("--source-landmarks", metavar="FILE", default=None,
                   help="the photo's 68 landmarks instead of detecting them: an iBUG .pts, or "
                        "a .npz from 'faceanime landmarks' (one source only)")
    p.add_argument("--device", type=device_arg, default="auto",
                   help=f"where the work runs: {DEVICE_HELP} (default: auto)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars and no summary line (errors are still printed)")


def output_config(args: argparse.Namespace):
    from faceanime.jobs.common import OutputConfig

    def given(value, default):
        return default if value is None else value

    head = args.head_size or (_WARP.head_width, _WARP.head_height)
    return OutputConfig(
        paste_back=args.paste_back, size=args.size, generator=args.generator,
        renderer=args.renderer,
        warp=WarpConfig(feather=given(args.feather, _WARP.feather), head_width=head[0],
                        head_height=head[1], batch_size=args.batch_size, workers=args.workers),
        render=ClassicConfig(feather=given(args.feather, _RENDER.feather),
                             batch_size=args.batch_size, workers=args.workers),
        watermark=args.watermark, device=args.device,
        progress=not (args.no_progress or args.quiet))


def run_sources(args: argparse.Namespace, job: Callable) -> None:
    """Run ``job(source, output)`` over every ``--source`` (one bad source is skipped)."""
    from faceanime.jobs.common import expand_sources, outputs_for, run_many

    sources = expand_sources(args.source)
    if len(sources) > 1 and getattr(args, "save_coeffs", None):
        raise InputError(f"{args.save_coeffs}: --save-coeffs takes one source; run the "
                         "sources one by one to keep each one's coefficients")
    if len(sources) > 1 and args.source_landmarks:
        raise InputError(f"{args.source_landmarks}: --source-landmarks takes one source; run "
                         "the sources one by one")
    outputs = outputs_for(sources, args.output, Path(args.output).suffix or ".mp4")
    run_many(sources, outputs, job, quiet=args.quiet)


def shared_tracking(args: argparse.Namespace, video: str, config):
    """With several photos and one driving (or target) video: the video tracked once, here,
    for all of them (None with one photo, which tracks it while its photo is fitted)."""
    from faceanime.jobs.common import check_driving, expand_sources, track_driver

    if len(expand_sources(args.source)) < 2:
        return None
    return track_driver(check_driving(video), config)


def register(sub: argparse._SubParsersAction) -> None:
    from faceanime.jobs.retarget import RetargetConfig
    from faceanime.samples import template_names

    p = sub.add_parser(
        "retarget", help="make a photo's face follow a driving video",
        description="Fit the photo and the driver, transfer the driver's motion (by default its "
                    "change from the first frame, applied to the photo's own pose and "
                    "expression) and move the photo with it: the whole head turns, nods and "
                    "talks (--renderer warp, the default). Writes an H.264 mp4 at the driver's "
                    "frame rate with the driver's audio, tagged as synthesised by faceanime.")
    p.add_argument("--driving", required=True,
                   help="driving video, a coefficient file (.npz) from 'faceanime fit', or a "
                        "bundled motion template: "
                        f"{', '.join(template_names())} (see 'faceanime demo --list')")
    add_job_options(p)
    p.add_argument("--motion", choices=["relative", "absolute"], default=_MOTION.mode,
                   help="relative: the driver's change from the reference frame, applied to the "
                        "photo's pose and expression; absolute: the driver's expression and head "
                        "rotation replace the photo's (default: %(default)s)")
    p.add_argument("--reference-frame", type=reference_frame, default=_MOTION.reference_frame,
                   metavar="N|best",
                   help="driving frame taken as the neutral reference, or 'best': the frame "
                        "whose mouth, eyes, expression and head turn are nearest the photo's "
                        "(an open-mouthed photo then closes its mouth when the driver does; the "
                        "output equals the photo at that frame) (default: %(default)s)")
    p.add_argument("--no-pose", action="store_true", help="keep the photo's head pose")
    p.add_argument("--eyes", choices=["relative", "absolute", "off"], default=None,
                   help="blinks: relative (the photo's own lids change as the driver's do), "
                        "absolute (the driver's lid closure), off (the photo's lids stay); "
                        "default: as --motion")
    p.add_argument("--gaze", action=argparse.BooleanOptionalAction, default=_MOTION.gaze,
                   help="move the photo's irises where the driver's eyes look (measured in each "
                        "driving frame; follows --eyes, none when the lids are off) "
                        "(default: on)")
    p.add_argument("--mouth", choices=["relative", "absolute", "off"], default=None,
                   help="mouth opening (the jaw), in the same three ways; default: as --motion")
    p.add_argument("--close-mouth", action=argparse.BooleanOptionalAction,
                   default=_MOTION.close_mouth,
                   help="relative mouth: a photo whose mouth is open wider than the driver's "
                        "reference frame's is first closed to it (the jaw, then the lips), so "
                        "it closes when the driver's does (LivePortrait's "
                        "--flag_normalize_lip); --no-close-mouth keeps the photo's opening as "
                        "the rest state (default: on)")
    p.add_argument("--follow-gap", action=argparse.BooleanOptionalAction,
                   default=_MOTION.follow_gap,
                   help="relative mouth: turn the jaw so the photo's lips part as far as the "
                        "driver's (their gap over the eye corners' distance), however the fit "
                        "shared the opening between jaw, lips and expression; "
                        "--no-follow-gap moves the jaw by the driver's change as it is "
                        "(default: on)")
    p.add_argument("--blink-gain", type=float, default=_MOTION.blink_gain, metavar="G",
                   help="multiply the transferred lid motion (default: %(default)s; e.g. 1.5 "
                        "for fuller blinks)")
    p.add_argument("--lip-gain", type=float, default=_MOTION.lip_gain, metavar="G",
                   help="multiply the transferred mouth opening (default: %(default)s)")
    p.add_argument("--smooth", type=float, default=0.0,
                   help="smooth the driver's motion over time: Gaussian sigma in frames "
                        "(default: 0 = off)")
    p.add_argument("--lower-face-weight", type=float, default=FitConfig().lower_face_weight,
                   metavar="W", help="fit the chin's and mouth's landmarks at this weight "
                   "against the others' (default: %(default)g, which keeps a driver's pressed "
                   "lips from moving the head; 1: all alike; docs/fitting.md)")
    p.add_argument("--audio", action=argparse.BooleanOptionalAction, default=True,
                   help="keep the driver's audio (default: on)")
    p.add_argument("--side-by-side", action="store_true",
                   help="write photo | driver | result side by side")
    p.add_argument("--save-coeffs", help="also write the rendered coefficients (.npz; one "
                                         "source only)")
    p.add_argument("--fps", type=float, default=None,
                   help="frame rate when driving with a coefficient file that has none "
                        "(default: 25)")
    p.add_argument("--track-parts", type=int, default=RetargetConfig().track_parts, metavar="N",
                   help="track the driving video in up to N parts at once, one process each, "
                        "while the photo is prepared (default: one per CPU core, at most 16; "
                        "1: one pass, the same landmarks as 'faceanime fit')")
    p.add_argument("--allow-truncated", action="store_true",
                   help="use a driving video that ends before its header says (cut off or "
                        "damaged) with a warning, instead of stopping with an error")
    add_video_face_option(p, "driving video")
    p.set_defaults(func=run, face_hint=job_face_hint)


def add_video_face_option(p: argparse.ArgumentParser, video: str) -> None:
    """``--video-face-index``: the video's face, chosen apart from the photo's."""
    p.add_argument("--video-face-index", type=int, default=0, metavar="N",
                   help=f"which face of the {video} when it holds several, by size (default: "
                        "0 = largest; the photo's is --face-index)")


def job_face_hint(args: argparse.Namespace, message: str) -> str:
    """What to try when a job finds no face (naming only options the jobs have): for the
    photo, its landmarks given by hand or another backend; for a video, another backend."""
    other = "try --backend mediapipe" if args.backend == "dlib" else "try --backend dlib"
    photo = any(message.startswith(str(source)) for source in args.source)
    if "face index" in message:
        # animate's two photos both take --face-index; it has no video.
        video = not photo and hasattr(args, "video_face_index")
        index = "--video-face-index" if video else "--face-index"
        return f"choose another with {index} (0 = the largest face), or {other}"
    if photo and not args.source_landmarks:
        return f"give the photo's 68 points with --source-landmarks FILE (.pts or .npz), or {other}"
    return other


def run(args: argparse.Namespace) -> None:
    from faceanime.jobs.retarget import RetargetConfig, retarget

    config = RetargetConfig(
        motion=MotionConfig(mode=args.motion, reference_frame=args.reference_frame,
                            eyes=args.eyes, mouth=args.mouth, blink_gain=args.blink_gain,
                            lip_gain=args.lip_gain, gaze=args.gaze,
                            close_mouth=args.close_mouth, follow_gap=args.follow_gap,
                            pose=not args.no_pose),
        output=output_config(args),
        fit=FitConfig(device=args.device, lower_face_weight=args.lower_face_weight),
        model=args.model, face_index=args.face_index, backend=args.backend,
        source_landmarks=args.source_landmarks, smooth=args.smooth, audio=args.audio, fps=args.fps,
        side_by_side=args.side_by_side, track_parts=args.track_parts,
        allow_truncated=args.allow_truncated, video_face_index=args.video_face_index)
    landmarks = shared_tracking(args, args.driving, config)
    run_sources(args, lambda source, output: retarget(source, args.driving, output, config,
                                                      args.save_coeffs, landmarks))
