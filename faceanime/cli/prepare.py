"""``faceanime prepare``: a folder of talking-head videos -> a training dataset (coefficient
sequences and aligned face crops), resumable, with a report of the videos skipped and why."""

from __future__ import annotations

import argparse
from pathlib import Path

from faceanime.dataset import VIDEO_SUFFIXES, PrepareConfig, prepare_dataset
from faceanime.dataset.on_ray import LOCAL, RAY_HINT
from faceanime.devices import DEVICE_HELP, device_arg
from faceanime.errors import InputError
from faceanime.landmarks import BACKENDS

_DEFAULT = PrepareConfig()


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``prepare`` command."""
    p = sub.add_parser(
        "prepare", help="turn talking-head videos into a training dataset",
        description="Track landmarks, fit the morphable model (one identity per video) and cut "
                    "aligned face crops for every video, into DATASET_DIR: manifest.json, "
                    "coefficients/<stem>.npz, crops/<stem>.mp4 and crops/<stem>.npz. Run it "
                    "again to resume: finished videos are kept, missing files redone. Videos "
                    "without a face, too short or unreadable are skipped and listed with the "
                    "reason. Layout and large corpora: docs/dataset.md.")
    p.add_argument("inputs", nargs="+", metavar="VIDEO_OR_FOLDER",
                   help=f"video files; folders searched recursively for "
                        f"{', '.join(s.lstrip('.') for s in VIDEO_SUFFIXES)} files (a video in a "
                        "subfolder is named by its path: sub__name); or dataset folders to merge "
                        "into DATASET_DIR")
    p.add_argument("-o", "--output", required=True, type=Path, metavar="DATASET_DIR",
                   help="dataset folder, created if missing, resumed if it holds a manifest")
    p.add_argument("--model", default=_DEFAULT.model,
                   help="morphable model name or path (default: %(default)s)")
    p.add_argument("--crop-size", type=int, default=_DEFAULT.crop_size, metavar="PX",
                   help="side of the aligned face crops, even (default: %(default)s)")
    p.add_argument("--crop-scale", type=float, default=_DEFAULT.crop_scale, metavar="S",
                   help="crop extent: 1 = FFHQ layout (eyes at 37.5 %% and 62.5 %% of the width), "
                        "2 = twice the width around the face (default: %(default)g)")
    p.add_argument("--crop-smooth", type=float, default=_DEFAULT.crop_smooth, metavar="FRAMES",
                   help="std of the time window steadying the crops, in frames; 0 = off "
                        "(default: %(default)g)")
    p.add_argument("--min-frames", type=int, default=_DEFAULT.min_frames, metavar="N",
                   help="skip videos with fewer frames with a face (default: %(default)s)")
    p.add_argument("--no-crops", action="store_true",
                   help="coefficients only (crops can be added by a later run without it)")
    p.add_argument("--backend", choices=list(BACKENDS), default=_DEFAULT.backend,
                   help="landmark backend (default: %(default)s)")
    p.add_argument("--device", type=device_arg, default=_DEFAULT.device,
                   help=f"torch device for fitting and cropping: {DEVICE_HELP} (default: "
                        "%(default)s)")
    p.add_argument("--retry-skipped", action="store_true",
                   help="try again the videos an earlier run skipped (by default they stay "
                        "skipped unless their file changed)")
    p.add_argument("--shard", metavar="I/N", type=_shard,
                   help="prepare only part I (0 to N-1) of N disjoint parts of the inputs, "
                        "chosen by name: run N of these into N folders, then merge them by "
                        "passing those folders as inputs")
    p.add_argument("--ray", nargs="?", const=LOCAL, metavar="ADDRESS",
                   help="run the per-video work as Ray tasks: alone, on a Ray started (or "
                        "joined) on this machine; with ADDRESS, on that Ray cluster (e.g. "
                        "ray://head:10001 or head:6379). Needs " + RAY_HINT + "; the videos "
                        "must be readable at the same paths on every node")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(func=run)


def _shard(text: str) -> tuple[int, int]:
    index, sep, count = text.partition("/")
    if not (sep and index.isdigit() and count.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r}: expected I/N, e.g. 0/8")
    return int(index), int(count)


def run(args: argparse.Namespace) -> None:
    config = PrepareConfig(model=args.model, crop_size=args.crop_size,
                           crop_scale=args.crop_scale, crop_smooth=args.crop_smooth,
                           min_frames=args.min_frames, crops=not args.no_crops,
                           backend=args.backend, device=args.device,
                           retry_skipped=args.retry_skipped, shard=args.shard,
                           progress=not args.no_progress, ray=args.ray)
    report = prepare_dataset(args.inputs, args.output, config)
    table = report.skipped_table()
    print(report.summary() + (f"\n{table}" if table else ""))
    if not report.ok:
        raise InputError(f"none of the {len(report.entries)} videos could be prepared (reasons "
                         f"above); {args.output} holds nothing to train on")
