"""``faceanime dynamics predict|animate``: run a trained dynamics model on coefficient files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from faceanime.coefficients import Coefficients
from faceanime.devices import DEVICE_HELP, device_arg
from faceanime.errors import InputError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dynamics", help="predict or animate coefficient sequences with a "
                                        "trained 3DDP model",
                       description="Roll a face's expression and pose forward with a model "
                                   "from 'faceanime train dynamics' (docs/dynamics.md).")
    what = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    pr = what.add_parser("predict", help="free-running: how a face may move next",
                         description="Predict STEPS frames after the (last frames of the) "
                                     "input; another --seed gives another plausible future.")
    pr.add_argument("coefficients", help="coefficient .npz of a photo or video ('faceanime fit')")
    _common(pr, default_steps=120)
    pr.add_argument("--temperature", type=float, default=1.0,
                    help="noise multiplier: 0 = the expected (calmer) path (default: 1)")
    pr.set_defaults(func=run_predict)

    an = what.add_parser("animate", help="target-driven: move to a target expression and pose",
                         description="Generate STEPS frames from the source's face to the "
                                     "target frame's expression and pose; the last frame is "
                                     "the target.")
    an.add_argument("source", help="coefficient .npz of the starting face")
    an.add_argument("target", help="coefficient .npz holding the target frame")
    _common(an, default_steps=60)
    an.add_argument("--target-frame", type=int, default=-1,
                    help="which frame of TARGET (default: the last)")
    an.add_argument("--placement", choices=["auto", "target", "source"], default="auto",
                    help="end at the target's head position and size, or keep the source's; "
                         "auto: the target's when both images have the same size")
    an.add_argument("--temperature", type=float, default=0.0,
                    help="noise multiplier (default: 0, the smoothest path)")
    an.set_defaults(func=run_animate)


def _common(p: argparse.ArgumentParser, default_steps: int) -> None:
    p.add_argument("--checkpoint", required=True,
                   help="trained model: a checkpoint folder or its .safetensors (with the .json "
                        "beside it)")
    p.add_argument("-o", "--output", required=True, help="coefficient file to write (.npz)")
    p.add_argument("--steps", type=int, default=default_steps,
                   help="frames to generate (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default: 0)")
    p.add_argument("--observe", type=int, default=None,
                   help="observe this many of the input's last frames (default: as trained)")
    p.add_argument("--include-observed", action="store_true",
                   help="write the observed frames before the generated ones")
    p.add_argument("--device", type=device_arg, default="auto",
                   help=f"where the work runs: {DEVICE_HELP} (default: auto)")


def _output(path: str) -> Path:
    out = Path(path)
    if out.suffix.lower() != ".npz":
        raise InputError(f"{out}: the output must be a .npz coefficient file")
    return out


def run_predict(args: argparse.Namespace) -> None:
    from faceanime.dynamics import predict

    output = _output(args.output)
    coeffs = Coefficients.load(args.coefficients)
    result = predict(coeffs, args.steps, args.seed, checkpoint=args.checkpoint,
                     observe=args.observe, temperature=args.temperature,
                     include_observed=args.include_observed, device=args.device)
    result.save(output)
    print(f"{output}: {result.n_frames} frame(s) at {result.fps:g} fps, seed {args.seed}",
          file=sys.stderr)


def run_animate(args: argparse.Namespace) -> None:
    from faceanime.dynamics import animate

    output = _output(args.output)
    source, target = Coefficients.load(args.source), Coefficients.load(args.target)
    result = animate(source, target, args.steps, args.seed, checkpoint=args.checkpoint,
                     target_frame=args.target_frame, observe=args.observe,
                     temperature=args.temperature, placement=args.placement,
                     include_observed=args.include_observed, device=args.device)
    result.save(output)
    print(f"{output}: {result.n_frames} frame(s) at {result.fps:g} fps", file=sys.stderr)
