"""Make the motion templates that ship in ``faceanime/data/motions`` from the shared videos.

    python tools/make_motion_templates.py --videos ../shared/data/videos [--model sfm]

Each template (:data:`faceanime.samples.MOTION_TEMPLATES`) is a span of one video's fit with the
Surrey Face Model, reduced to what drives a job: per frame what the fit holds (the expression,
jaw, eyelids, the lips' gap and pucker, the brows, the pose; no landmarks, no captured mouth
images), float32, compressed. Rerun it when the fit gains a part (the templates of 2026-12-04
held no lips' gap, pucker or brows until 2026-12-08). The span's first frame (the
reference of relative motion) is moved, within a third of a second, to the frame with the mouth
most closed and the eyes most open, so a template starts from a resting face. Deterministic: the
same videos give the same files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def resting_start(coeffs, start: int, stop: int, reach: int) -> int:
    """The frame near ``start`` (within ``reach``, inside ``[0, stop)``) with the most closed
    mouth and the most open eyes."""
    lo, hi = max(0, start - reach), min(stop - 1, start + reach + 1)
    score = coeffs.jaw[lo:hi].numpy() + 0.05 * coeffs.eyes[lo:hi].numpy().mean(axis=1)
    return lo + int(np.argmin(score))


def make(videos: Path, out: Path, model_name: str) -> list[tuple[str, int, int, int]]:
    from faceanime.coefficients import Coefficients
    from faceanime.fitting import fit_video
    from faceanime.morphable import load_model
    from faceanime.samples import MOTION_TEMPLATES

    model = load_model(model_name)
    fits: dict[str, Coefficients] = {}
    rows = []
    out.mkdir(parents=True, exist_ok=True)
    for template in MOTION_TEMPLATES:
        if template.video not in fits:
            fits[template.video] = fit_video(videos / f"{template.video}.mp4", model)
        coeffs = fits[template.video]
        start = resting_start(coeffs, template.start, template.stop, round(coeffs.fps / 3))
        span = coeffs.frames(slice(start, template.stop))
        span.landmarks = span.fitted_landmarks = span.mouth = None
        span.save(out / f"{template.name}.npz")
        rows.append((template.name, start, template.stop,
                     (out / f"{template.name}.npz").stat().st_size))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=Path, default=ROOT.parent / "shared" / "data" / "videos",
                        help="folder holding d3.mp4, d6.mp4 and d18.mp4 (default: %(default)s)")
    parser.add_argument("--model", default="sfm", help="morphable model (default: %(default)s)")
    parser.add_argument("-o", "--out", type=Path, default=ROOT / "faceanime" / "data" / "motions",
                        help="folder to write NAME.npz in (default: %(default)s)")
    args = parser.parse_args(argv)
    print(f"{'template':10s} {'frames':>12s} {'bytes':>8s}")
    for name, start, stop, size in make(args.videos, args.out, args.model):
        print(f"{name:10s} {start:5d}-{stop:<6d} {size:8d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
