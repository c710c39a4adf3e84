"""``faceanime animate``: photo A's face moves into photo B's pose and expression."""

from __future__ import annotations

import argparse

from faceanime.cli.retarget import add_job_options, job_face_hint, output_config, run_sources
from faceanime.fitting import FitConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "animate", help="move a photo's face into another photo's pose and expression",
        description="Fit both photos and move A's face (--source) to B's (--target) head pose "
                    "and expression over --frames frames: with --dynamics along a trained 3DDP "
                    "target-driven roll-out, else along a non-learned path (rotation slerp, "
                    "smoothstep-eased expression). The first frame is A, the last has B's "
                    "pose and expression.")
    add_job_options(p)
    p.add_argument("--target", required=True, metavar="PHOTO_B",
                   help="photo (or coefficient .npz) giving the final pose and expression")
    p.add_argument("--frames", type=int, default=60,
                   help="frames in all (default: %(default)s)")
    p.add_argument("--dynamics", metavar="CKPT", default=None,
                   help="dynamics checkpoint for a learned path (default: the non-learned one)")
    p.add_argument("--placement", choices=["source", "target"], default="source",
                   help="keep A's head position and size (default) or move to B's")
    p.add_argument("--fps", type=float, default=25.0,
                   help="frame rate of the non-learned path (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=0.0,
                   help="noise of the learned path (default: 0, the smoothest)")
    p.add_argument("--save-coeffs", help="also write the rendered coefficients (.npz; one "
                                         "source only)")
    p.set_defaults(func=run, face_hint=job_face_hint)


def run(args: argparse.Namespace) -> None:
    from faceanime.jobs.animate import AnimateConfig, animate

    config = AnimateConfig(placement=args.placement, temperature=args.temperature, fps=args.fps,
                           output=output_config(args), fit=FitConfig(device=args.device),
                           model=args.model, face_index=args.face_index,
                           backend=args.backend, source_landmarks=args.source_landmarks)
    run_sources(args, lambda source, output: animate(
        source, args.target, output, frames=args.frames, dynamics=args.dynamics,
        seed=args.seed, config=config, save_coefficients=args.save_coeffs))
