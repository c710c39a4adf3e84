"""``faceanime predict``: a photo's face moves as a trained dynamics model predicts."""

from __future__ import annotations

import argparse

from faceanime.cli.retarget import (
    add_job_options,
    add_video_face_option,
    job_face_hint,
    output_config,
    run_sources,
)
from faceanime.fitting import FitConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict", help="animate a photo with predicted (3DDP) motion",
        description="Fit the photo, roll a trained dynamics model (faceanime train dynamics) "
                    "forward from it, optionally after observing a video's motion, and render "
                    "the photo's face along the prediction. Another --seed gives another "
                    "plausible future.")
    add_job_options(p)
    p.add_argument("--dynamics", default=None, metavar="CKPT",
                   help="dynamics checkpoint: a folder or its .safetensors (default: the small "
                        "talking-head model that ships in the package, trained on three short "
                        "videos; train your own with 'faceanime train dynamics')")
    p.add_argument("--frames", type=int, default=120,
                   help="frames to predict (default: %(default)s)")
    p.add_argument("--observe", metavar="VIDEO", default=None,
                   help="a video or coefficient file (.npz) whose motion, applied to the photo, "
                        "the model observes first (default: the photo alone)")
    p.add_argument("--observe-frames", type=int, default=None,
                   help="how many of its last frames are observed (default: as trained)")
    p.add_argument("--include-observed", action="store_true",
                   help="start the video with the observed frames")
    add_video_face_option(p, "--observe video")
    p.add_argument("--seed", type=int, default=0, help="motion seed (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="noise multiplier; 0 = the expected, calmer path (default: 1)")
    p.add_argument("--save-coeffs", help="also write the rendered coefficients (.npz; one "
                                         "source only)")
    p.set_defaults(func=run, face_hint=job_face_hint)


def run(args: argparse.Namespace) -> None:
    from faceanime.jobs.predict import PredictConfig, predict

    config = PredictConfig(temperature=args.temperature, observe_frames=args.observe_frames,
                           include_observed=args.include_observed, output=output_config(args),
                           fit=FitConfig(device=args.device), model=args.model,
                           face_index=args.face_index, backend=args.backend,
                           source_landmarks=args.source_landmarks,
                           video_face_index=args.video_face_index)
    run_sources(args, lambda source, output: predict(
        source, output, dynamics=args.dynamics, frames=args.frames, observe=args.observe,
        seed=args.seed, config=config, save_coefficients=args.save_coeffs))
