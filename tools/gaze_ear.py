"""How much dlib's eye aspect ratio (EAR) moves when only the irises move: each photo rendered
at zero motion with its gaze changed (the lids pixel for pixel the same), its landmarks
detected again, the EAR printed relative to the unchanged render.

The cross-identity report's blink follow and closed-eye ratio are EAR measures: this is how
much of their change under gaze transfer is dlib's, not the lids'.

    python tools/gaze_ear.py
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CHANGES = ((-0.15, 0.0), (0.15, 0.0), (0.0, 0.06), (0.0, -0.06))


def eye_aspect_ratio(points: np.ndarray) -> float:
    """Both eyes' mean EAR from ``(68, 2)`` landmarks."""
    ratios = []
    for eye in ((36, 37, 38, 39, 40, 41), (42, 43, 44, 45, 46, 47)):
        q = points[list(eye)]
        ratios.append((np.linalg.norm(q[1] - q[5]) + np.linalg.norm(q[2] - q[4]))
                      / (2 * np.linalg.norm(q[0] - q[3])))
    return float(np.mean(ratios))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", nargs="+", default=["s1", "s12", "s42", "d19"])
    args = parser.parse_args()

    from faceanime.jobs.common import OutputConfig, load_source
    from faceanime.landmarks import detect_landmarks
    from faceanime.morphable import load_model
    from faceanime.render.frames import to_uint8
    from faceanime.render.warp import WarpRenderer

    model = load_model("sfm")
    header = " | ".join(f"du {u:+.2f} dv {v:+.2f}" for u, v in CHANGES)
    print(f"| photo | EAR | {header} |")
    print("|---|---|" + "---|" * len(CHANGES))
    for name in args.photos:
        image, source = load_source(next((DATA / "faces").glob(f"{name}.*")), model,
                                    OutputConfig(size=512, progress=False))
        renderer = WarpRenderer(model, image, source)
        still = source.frames([0])
        ratios = []
        for change in ((0.0, 0.0), *CHANGES):
            out = to_uint8(renderer.render(replace(still, gaze=still.gaze
                                                   + torch.tensor(change))))[0]
            ratios.append(eye_aspect_ratio(detect_landmarks(out).points))
        cells = " | ".join(f"{r / ratios[0]:.2f}" for r in ratios[1:])
        print(f"| {name} | {ratios[0]:.3f} | {cells} |")


if __name__ == "__main__":
    main()
