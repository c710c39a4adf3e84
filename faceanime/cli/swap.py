"""``faceanime swap``: a photo's face on a target video's performance, occlusions kept."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from faceanime.cli.retarget import (
    add_video_face_option,
    job_face_hint,
    run_sources,
    shared_tracking,
)
from faceanime.devices import DEVICE_HELP, device_arg
from faceanime.errors import InputError
from faceanime.fitting import FitConfig
from faceanime.io import VIDEO_EXTENSIONS
from faceanime.landmarks import BACKENDS
from faceanime.render.swap import SwapRenderConfig

_SWAP = SwapRenderConfig()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "swap", help="put a photo's face on every frame of a target video",
        description="Fit the photo and the target video, render the photo's face (its 3D shape "
                    "and texture) at every target frame's expression, eyelids, jaw and pose, "
                    "match its colours to the frame and blend it in; where something covers "
                    "the target's face (hair, a hand, glasses), the target's pixels stay. "
                    "Writes an H.264 mp4 at the target's size and frame rate with its audio, "
                    "tagged as synthesised by faceanime (docs/swap.md).")
    p.add_argument("--source", required=True, nargs="+", metavar="PHOTO",
                   help="the photo whose face is used; several photos or a folder of photos "
                        "give one output each (-o is then a folder)")
    p.add_argument("--target", required=True, nargs="+", metavar="VIDEO",
                   help="the video whose performance, lighting and background are kept; "
                        "several videos or a folder of videos give one output per photo and "
                        "video (-o is then a folder: <video>.mp4 for one photo, "
                        "<photo>-<video>.mp4 for several)")
    p.add_argument("-o", "--output", required=True,
                   help="video to write (.mp4), or an existing folder (one <photo>.mp4 per "
                        "source)")
    p.add_argument("--feather", type=float, default=_SWAP.feather,
                   help="pixels inside the face outline over which the face blends in "
                        "(default: %(default)s)")
    p.add_argument("--colour", choices=["mean_std", "rgb_mean_std", "none"],
                   default=_SWAP.colour,
                   help="colour matching to each frame (default: %(default)s, in L*a*b*)")
    p.add_argument("--contrast-gain", type=float, default=_SWAP.max_contrast_gain,
                   metavar="GAIN",
                   help="with --colour mean_std, the most the face's lightness spread is "
                        "scaled towards the frame's; 1 keeps the photo's contrast, which "
                        "carries its features (1.5: the target's flatter or harsher look, at "
                        "a cost in identity: docs/swap.md) (default: %(default)s)")
    p.add_argument("--occlusion", action=argparse.BooleanOptionalAction,
                   default=_SWAP.occlusion,
                   help="keep the target's pixels where something covers its face "
                        "(default: on)")
    p.add_argument("--fringe", action=argparse.BooleanOptionalAction, default=_SWAP.fringe,
                   help="leave out hair covering the photo's forehead and brows (default: on)")
    p.add_argument("--temples", type=float, default=_SWAP.temples, metavar="SHARE",
                   help="with --fringe, leave out hair hanging by the photo's temples and "
                        "cheeks too, this far in from its face outline (a share of the face "
                        "texture; 0: keep it) (default: %(default)s)")
    p.add_argument("--strands", type=float, default=_SWAP.strands, metavar="L",
                   help="with --fringe, leave out thin dark strands of hair on the photo's "
                        "cheeks and temples: texels this much darker (L*) than their "
                        "surroundings (0: keep them) (default: %(default)s)")
    p.add_argument("--hair-cut", action=argparse.BooleanOptionalAction, default=_SWAP.hair_cut,
                   help="with --fringe, grow the hair found by its colour (a lock over the "
                        "temple that lets the skin through) (default: on)")
    p.add_argument("--reshape", action=argparse.BooleanOptionalAction, default=_SWAP.reshape,
                   help="bend the target's head around the face to the photo's face shape "
                        "(its jaw and cheeks become the photo's outline) (default: on)")
    p.add_argument("--seam", action=argparse.BooleanOptionalAction, default=_SWAP.seam,
                   help="give the face the frame's tone where they meet (a membrane of their "
                        "difference along the blend) (default: on)")
    p.add_argument("--relight", action=argparse.BooleanOptionalAction, default=_SWAP.relight,
                   help="take the photo's shading off the face and light it as the target "
                        "is (spherical-harmonic lights fitted to both; costs identity as "
                        "dlib sees it: docs/swap.md) (default: off)")
    p.add_argument("--gaze", action=argparse.BooleanOptionalAction, default=_SWAP.gaze,
                   help="slide the photo's irises by the target's glances (costs some "
                        "identity: ID retrieval 96.3 %% -> 95.1 %% on the shared pairs; "
                        "docs/swap.md) (default: off)")
    p.add_argument("--keep-mouth", action=argparse.BooleanOptionalAction,
                   default=_SWAP.keep_mouth,
                   help="keep the target's own teeth and tongue (default: on)")
    p.add_argument("--batch-size", type=int, default=_SWAP.batch_size,
                   help="frames swapped at once (default: 0 = 8 on the CPU, 32 on CUDA)")
    p.add_argument("--watermark", action="store_true",
                   help="draw a visible 'faceanime: synthetic' mark on every frame")
    p.add_argument("--audio", action=argparse.BooleanOptionalAction, default=True,
                   help="keep the target's audio (default: on)")
    p.add_argument("--model", default="sfm", help="morphable model (default: %(default)s)")
    p.add_argument("--face-index", type=int, default=0,
                   help="which face of the photo when it holds several, by size (default: 0 "
                        "= largest)")
    add_video_face_option(p, "target video")
    p.add_argument("--backend", choices=list(BACKENDS), default="dlib",
                   help="landmark backend for the photos and the video (default: %(default)s)")
    p.add_argument("--source-landmarks", metavar="FILE", default=None,
                   help="the photo's 68 landmarks instead of detecting them: an iBUG .pts, or "
                        "a .npz from 'faceanime landmarks' (one source only)")
    p.add_argument("--track-parts", type=int, default=None, metavar="N",
                   help="track the target in up to N parts at once, one process each "
                        "(default: one per CPU core, at most 16)")
    p.add_argument("--allow-truncated", action="store_true",
                   help="use a target video that ends before its header says, with a warning")
    p.add_argument("--save-coeffs", help="also write the swapped coefficients (.npz; one "
                                         "source only)")
    p.add_argument("--device", type=device_arg, default="auto",
                   help=f"where the work runs: {DEVICE_HELP} (default: auto)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars and no summary line (errors are still printed)")
    p.set_defaults(func=run, face_hint=job_face_hint)


def run(args: argparse.Namespace) -> None:
    from faceanime.jobs.common import OutputConfig, expand_files
    from faceanime.jobs.swap import SwapConfig, swap

    config = SwapConfig(
        swap=SwapRenderConfig(feather=args.feather, colour=args.colour,
                              max_contrast_gain=args.contrast_gain,
                              occlusion=args.occlusion, fringe=args.fringe,
                              temples=args.temples, strands=args.strands,
                              hair_cut=args.hair_cut,
                              keep_mouth=args.keep_mouth, gaze=args.gaze,
                              reshape=args.reshape, seam=args.seam, relight=args.relight,
                              batch_size=args.batch_size),
        output=OutputConfig(watermark=args.watermark, device=args.device,
                            progress=not (args.no_progress or args.quiet)),
        fit=FitConfig(device=args.device), model=args.model, face_index=args.face_index,
        backend=args.backend, source_landmarks=args.source_landmarks,
        track_parts=args.track_parts, allow_truncated=args.allow_truncated, audio=args.audio,
        video_face_index=args.video_face_index)
    targets = expand_files(args.target, VIDEO_EXTENSIONS, "video")
    if len(targets) == 1:
        landmarks = shared_tracking(args, targets[0], config)
        run_sources(args, lambda source, output: swap(source, targets[0], output, config,
                                                      args.save_coeffs, landmarks))
        return
    run_targets(args, targets, config, swap)


def run_targets(args: argparse.Namespace, targets: list[Path], config, job) -> None:
    """Every photo on every target with ``job`` (:func:`faceanime.swap`): each target tracked
    once for all the photos, one output per pair in the ``-o`` folder; a target or pair that
    fails is reported (one line) and skipped, and an error at the end says how many failed."""
    from faceanime.errors import FaceAnimeError
    from faceanime.jobs.common import check_driving, expand_sources, track_driver

    sources = expand_sources(args.source)
    folder = Path(args.output)
    if not folder.is_dir():
        raise InputError(f"{folder}: with {len(targets)} targets the output must be an "
                         "existing folder (one video per photo and target is written there)")
    if args.save_coeffs:
        raise InputError(f"{args.save_coeffs}: --save-coeffs takes one target; run the targets "
                         "one by one to keep each one's coefficients")
    if len(sources) > 1 and args.source_landmarks:
        raise InputError(f"{args.source_landmarks}: --source-landmarks takes one source; run "
                         "the sources one by one")
    names = [t.stem if len(sources) == 1 else f"{s.stem}-{t.stem}" for t in targets
             for s in sources]
    if len(set(names)) != len(names):
        raise InputError(f"{folder}: two outputs would share a name ({', '.join(names)}); "
                         "rename the photos or videos so each has its own file")
    outputs = iter(folder / f"{name}.mp4" for name in names)
    failed = []
    for target in targets:
        try:
            landmarks = track_driver(check_driving(target), config)
        except FaceAnimeError as exc:
            print(f"faceanime: skipped: {exc}", file=sys.stderr)
            failed.extend(f"{source.name} on {target.name}" for source in sources)
            for _ in sources:
                next(outputs)
            continue
        for source in sources:
            output = next(outputs)
            try:
                result = job(source, target, output, config, None, landmarks)
            except FaceAnimeError as exc:
                print(f"faceanime: skipped: {exc}", file=sys.stderr)
                failed.append(f"{source.name} on {target.name}")
                continue
            if not args.quiet:
                print(result.summary(), file=sys.stderr)
    if failed:
        raise InputError(f"{len(failed)} of {len(names)} swaps failed ({', '.join(failed)}); "
                         "the others were written")
