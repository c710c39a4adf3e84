"""``faceanime evaluate self|cross``: the standard reenactment protocols, with baselines."""

from __future__ import annotations

import argparse
import sys

from faceanime.devices import DEVICE_HELP, device_arg
from faceanime.evaluation.protocol import EvalConfig

_CFG = EvalConfig()


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gaze", action=argparse.BooleanOptionalAction, default=True,
                   help="the warp moves the photo's irises where the driver's eyes look "
                        "(default: on)")
    p.add_argument("-o", "--output", required=True,
                   help="report folder to write (report.json, report.md, plots/); created if "
                        "missing, its parent must exist")
    p.add_argument("--generator", default=None, metavar="CKPT",
                   help="also evaluate the learned generator from this checkpoint")
    p.add_argument("--results", action="append", default=[], metavar="DIR",
                   help="also evaluate videos made by another tool: a folder with one video per "
                        "input under the name the protocol gives (repeatable)")
    p.add_argument("--methods", nargs="+", default=list(_CFG.methods), metavar="METHOD",
                   help="baselines to run, separated by spaces or commas: static, warp (the "
                        "default renderer), mask (the face pasted into the still photo), "
                        f"warp2d (default: {' '.join(_CFG.methods)})")
    p.add_argument("--stride", type=int, default=_CFG.stride,
                   help="score every this many frames (default: %(default)s)")
    p.add_argument("--frames", type=int, default=None,
                   help="score at most this many frames per video, evenly spaced "
                        "(default: all the stride keeps)")
    p.add_argument("--batch-size", type=int, default=_CFG.batch_size,
                   help="frames rendered and scored at once (default: %(default)s)")
    p.add_argument("--identity-threshold", type=float, default=_CFG.identity_threshold,
                   help="identity distance below which a frame counts as the same person "
                        "(default: %(default)s, dlib's)")
    p.add_argument("--model", default=_CFG.model, help="morphable model (default: %(default)s)")
    p.add_argument("--device", type=device_arg, default=_CFG.device,
                   help=f"where the work runs: {DEVICE_HELP} (default: %(default)s)")
    p.add_argument("--markdown", default=None, metavar="PATH",
                   help="also write the Markdown report here (e.g. docs/results.md)")
    p.add_argument("--figures", default=None, metavar="DIR",
                   help="with --markdown: write its plots here as eval_<video>.png")
    p.add_argument("--no-plots", action="store_true", help="skip the per-frame plots")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="score reenactment on the standard protocols",
        description="Score reenactment methods on the self-reenactment protocol (a video "
                    "drives its own first frame, compared with the real frames: L1, PSNR, SSIM, "
                    "AKD, AED, ID %%) or the cross-reenactment one (photos driven by videos: "
                    "ID %%, pose error, expression correlation); both also score what a viewer "
                    "sees: double-face rate, head, blink and mouth follow, closed-eye ratio. "
                    "The static, warp and warp2d baselines are in the report unless "
                    "--methods says otherwise; the generator and external results when given. "
                    "Writes report.json, report.md and per-frame plots.")
    protocols = p.add_subparsers(dest="protocol", metavar="PROTOCOL", required=True)
    s = protocols.add_parser(
        "self", help="self-reenactment: each video drives its own source frame",
        description="Self-reenactment (first-order-model protocol): the source is one frame of "
                    "each video, the driver the video itself; every scored output frame is "
                    "compared with the real one. --results DIR must hold <video name> per "
                    "input, with the same frame count and size.")
    s.add_argument("videos", nargs="+", metavar="VIDEO", help="videos to evaluate")
    s.add_argument("--source-frame", type=int, default=_CFG.source_frame,
                   help="frame used as the source image, left out of the scores "
                        "(default: %(default)s)")
    _common(s)
    s.set_defaults(func=run)
    c = protocols.add_parser(
        "cross", help="cross-reenactment: photos driven by videos",
        description="Cross-reenactment: every photo driven by every video; no ground truth, so "
                    "identity is scored against the photo, head pose against the driver's "
                    "(relative motion) and expression by correlation with the driver's. The "
                    "renderers are driven as retarget drives them (the whole video tracked "
                    "and fitted); the scored frames are measured frame by frame. "
                    "--results DIR must hold <photo stem>_<video stem>.mp4 per pair, at the "
                    "photo's size with the driver's frame count.")
    c.add_argument("photos", nargs="+", metavar="PHOTO", help="source photos")
    c.add_argument("--driving", nargs="+", required=True, metavar="VIDEO",
                   help="driving videos")
    c.add_argument("--motion", choices=["relative", "absolute"], default="relative",
                   help="how the driver's motion is applied (default: %(default)s)")
    c.add_argument("--reference-frame", choices=["first", "best"], default="first",
                   help="the driver's reference for relative motion, as retarget takes it: its "
                        "first frame, or its frame nearest the photo's face (default: %(default)s)")
    c.add_argument("--close-mouth", action=argparse.BooleanOptionalAction, default=True,
                   help="relative mouth: a photo open wider than the driver's reference is "
                        "closed to it first, as retarget does (default: on)")
    c.add_argument("--follow-gap", action=argparse.BooleanOptionalAction, default=True,
                   help="relative mouth: the photo's lips part as far as the driver's, as "
                        "retarget does (default: on)")
    _common(c)
    c.set_defaults(func=run)
    w = protocols.add_parser(
        "swap", help="face swap: photos onto target videos (FaceShifter's measures)",
        description="Swap every photo onto every target video and score it with FaceShifter's "
                    "measures: ID retrieval among the run's photos and the target itself, pose "
                    "and expression error against the target frame (fitted the same way), and "
                    "the identity distance to the photo and the double-face rate; beside the "
                    "static target and a naive paste (docs/swap.md).")
    w.add_argument("photos", nargs="+", metavar="PHOTO", help="source photos")
    w.add_argument("--target", nargs="+", required=True, metavar="VIDEO", help="target videos")
    w.add_argument("--methods", nargs="+", default=["static", "paste", "swap"],
                   choices=["static", "paste", "swap"], help="methods to score (default: all)")
    w.add_argument("--stride", type=int, default=8,
                   help="score every this many frames (default: %(default)s)")
    w.add_argument("-o", "--output", required=True,
                   help="report folder to write (report.json, report.md); created if missing")
    w.add_argument("--markdown", default=None, metavar="PATH",
                   help="also write the Markdown report here (e.g. docs/results_swap.md)")
    w.add_argument("--model", default=_CFG.model, help="morphable model (default: %(default)s)")
    w.add_argument("--device", type=device_arg, default=_CFG.device,
                   help=f"where the work runs: {DEVICE_HELP} (default: %(default)s)")
    w.add_argument("--no-progress", action="store_true", help="hide progress bars")
    w.set_defaults(func=run_swap)


def run(args: argparse.Namespace) -> None:
    from pathlib import Path

    from faceanime.errors import InputError
    from faceanime.evaluation import evaluate_cross, evaluate_self
    from faceanime.evaluation.report import build_report, command_line, write_report
    from faceanime.motion import MotionConfig

    out = Path(args.output)
    if not out.parent.is_dir():
        raise InputError(f"{out}: its folder {out.parent} does not exist; create it first")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    if args.markdown is not None and not Path(args.markdown).parent.is_dir():
        raise InputError(f"--markdown {args.markdown}: folder does not exist")
    if args.figures is not None and not Path(args.figures).is_dir():
        raise InputError(f"--figures {args.figures}: no such folder")
    methods = tuple(m.strip() for arg in args.methods for m in arg.split(",") if m.strip())
    config = EvalConfig(
        stride=args.stride, frames=args.frames, methods=methods, generator=args.generator,
        results=tuple(args.results), identity_threshold=args.identity_threshold,
        batch_size=args.batch_size, model=args.model, device=args.device,
        progress=not args.no_progress)
    if args.protocol == "self":
        config.source_frame = args.source_frame
        config.motion = MotionConfig(gaze=args.gaze)
        results = evaluate_self(args.videos, config)
    else:
        config.motion = MotionConfig(mode=args.motion, reference_frame=(
            "best" if args.reference_frame == "best" else 0), gaze=args.gaze,
            close_mouth=args.close_mouth, follow_gap=args.follow_gap)
        results = evaluate_cross(args.photos, args.driving, config)
    report = build_report(args.protocol, results, config, command_line())
    write_report(report, out, plots=not args.no_plots, markdown=args.markdown,
                 figures=args.figures)
    failures = [(v.name, None, v.error) for v in results if v.error]
    failures += [(v.name, n, m.error) for v in results for n, m in v.methods.items() if m.error]
    for name, method, error in failures:
        where = f"{name}, {method}" if method else name
        print(f"faceanime: warning: {where}: {error}", file=sys.stderr)
    print(f"{out / 'report.md'}: {len(results)} input(s), {len(failures)} failure(s)",
          file=sys.stderr)
    if all(v.error for v in results):
        raise InputError(f"every input failed; the report in {out} lists why")


def run_swap(args: argparse.Namespace) -> None:
    import json
    from pathlib import Path

    from faceanime.errors import InputError
    from faceanime.evaluation.report import command_line, machine_info
    from faceanime.evaluation.swap import SwapEvalConfig, evaluate_swap, markdown
    from faceanime.io.atomic import atomic_path

    def atomic_write_text(path: Path, text: str) -> None:
        with atomic_path(path) as tmp:
            tmp.write_text(text)

    out = Path(args.output)
    if not out.parent.is_dir():
        raise InputError(f"{out}: its folder {out.parent} does not exist; create it first")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    report = evaluate_swap(args.photos, args.target, SwapEvalConfig(
        stride=args.stride, methods=tuple(args.methods), model=args.model, device=args.device,
        progress=not args.no_progress))
    info = machine_info(args.device)
    machine = (f"{info['cpu']}, {info['cores']} cores, torch {info['torch']} with "
               f"{info['torch_threads']} thread(s), device {args.device}")
    text = markdown(report, command_line(), machine)
    out.mkdir(exist_ok=True)
    atomic_write_text(out / "report.json", json.dumps({**report, "machine": info}, indent=1,
                                                     default=str))
    atomic_write_text(out / "report.md", text)
    if args.markdown:
        atomic_write_text(Path(args.markdown), text)
    mean = report["mean"]
    best = "swap" if "swap" in mean else next(iter(mean))
    print(f"{out / 'report.md'}: {len(report['pairs'])} pair(s); {best}: ID retrieval "
          f"{mean[best]['id_retrieval']:.1f} %, pose err {mean[best]['pose_err']:.2f}°, "
          f"expr err {mean[best]['expr_err']:.3f}", file=sys.stderr)
