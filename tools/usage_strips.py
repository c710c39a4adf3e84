"""The strips of ``docs/usage.md``, made by the jobs themselves (their Python API, defaults
but for the framing the captions name), so the figures show what a user gets today.

    python tools/usage_strips.py --out docs/img

Writes ``demo_templates.png`` (``faceanime demo`` with each motion template, face close-ups:
frame 0, then the frames of largest yaw, largest pitch, widest jaw, most-closed eyes and
broadest smile),
``retarget_s12_d0.png`` (``faces/s12.jpg`` driven by ``videos/d0.mp4``, ``--side-by-side``),
``usage_predict_s1.png`` (``predict`` on ``faces/s1.jpg``, seeds 0 and 1) and
``usage_animate_s1_d19.png`` (``animate`` from ``faces/s1.jpg`` to ``faces/d19.jpg``).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FACEANIME_TEST_DATA", ROOT.parent / "shared" / "data"))
HAPPINESS = 3  # SFM's expression blendshapes: anger, disgust, fear, happiness, ...


def rows_of(frames: np.ndarray, picks: list[int]) -> np.ndarray:
    """The ``picks`` of ``frames (T, H, W, 3)`` side by side."""
    return np.concatenate([frames[i] for i in picks], 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()

    import faceanime
    from faceanime.geometry.rotation import matrix_to_euler
    from faceanime.jobs.animate import AnimateConfig
    from faceanime.jobs.common import OutputConfig
    from faceanime.jobs.predict import PredictConfig
    from faceanime.jobs.retarget import RetargetConfig
    from faceanime.samples import sample_portrait

    faces, videos = args.data / "faces", args.data / "videos"
    args.out.mkdir(parents=True, exist_ok=True)
    quiet = OutputConfig(progress=False)
    crop = replace(quiet, paste_back=False, size=256)

    # Demo: the sample portrait with each template, at the frames that show its motion most.
    rows = []
    for template in ("talk", "nod", "turn", "smile"):
        result = faceanime.retarget(sample_portrait(), template, config=RetargetConfig(
            output=replace(quiet, paste_back=False, size=150)))
        coeffs = result.coefficients
        turn = matrix_to_euler(coeffs.rotation @ coeffs.rotation[:1].transpose(-1, -2))
        picks = [0, int(turn[:, 0].abs().argmax()), int(turn[:, 1].abs().argmax()),
                 int(coeffs.jaw.argmax()), int(coeffs.eyes.mean(1).argmax()),
                 int(coeffs.expression[:, HAPPINESS].argmax())]
        rows.append(rows_of(result.video, picks))
    Image.fromarray(np.concatenate(rows, 0)).save(args.out / "demo_templates.png",
                                                  optimize=True)

    # Retarget: photo | driver | result, every frame; five of them stacked.
    result = faceanime.retarget(faces / "s12.jpg", videos / "d0.mp4",
                                config=RetargetConfig(output=replace(quiet, size=256),
                                                      side_by_side=True))
    strip = np.concatenate([result.video[i] for i in (0, 25, 45, 60, 77)], 0)
    Image.fromarray(strip).save(args.out / "retarget_s12_d0.png", optimize=True)

    # Predict: two seeds of the bundled dynamics model, 90 frames.
    rows = []
    for seed in (0, 1):
        result = faceanime.predict(faces / "s1.jpg", frames=90, seed=seed,
                                   config=PredictConfig(output=crop))
        rows.append(rows_of(result.video, [0, 22, 45, 67, 89]))
    Image.fromarray(np.concatenate(rows, 0)).save(args.out / "usage_predict_s1.png",
                                                  optimize=True)

    # Animate: the non-learned path from s1 to d19's pose and open mouth, 30 frames.
    result = faceanime.animate(faces / "s1.jpg", faces / "d19.jpg", frames=30,
                               config=AnimateConfig(output=crop))
    Image.fromarray(rows_of(result.video, [0, 8, 15, 22, 29])).save(
        args.out / "usage_animate_s1_d19.png", optimize=True)
    for name in ("demo_templates.png", "retarget_s12_d0.png", "usage_predict_s1.png",
                 "usage_animate_s1_d19.png"):
        print(args.out / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
