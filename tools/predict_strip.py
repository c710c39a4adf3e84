"""Frames of ``faceanime predict`` with no flags (the bundled dynamics model), one row per photo.

    python tools/predict_strip.py --photos s1 s12 s42 --frames 0 20 40 60 80 100 119 \
        --mouth --height 120 -o docs/img/predict_default.png

Each row: the photo's seed-``--seed`` future at the listed frames (whole pictures, ``--height``
pixels tall). With ``--mouth`` a second row per photo shows the mouth close-up, where the jaw's
motion is judged.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", nargs="+", default=["s1", "s12", "s42"])
    parser.add_argument("--frames", nargs="+", type=int, default=[0, 20, 40, 60, 80, 100, 119])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--height", type=int, default=170, help="tile height in pixels")
    parser.add_argument("--mouth", action="store_true", help="add a mouth close-up row")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()

    from faceanime.jobs.common import OutputConfig
    from faceanime.jobs.predict import PredictConfig, predict
    from faceanime.morphable import load_model
    from faceanime.reconstruction import face_vertices, project_vertices

    model = load_model("sfm")
    rows = []
    count = max(args.frames) + 1
    for photo in args.photos:
        result = predict(args.data / "faces" / f"{photo}.jpg", None, frames=count, seed=args.seed,
                         config=PredictConfig(output=OutputConfig(progress=False)))
        coeffs, frames = result.coefficients, result.video
        tiles, mouths = [], []
        for i in args.frames:
            frame = frames[i]
            h, w = frame.shape[:2]
            size = (max(1, round(w * args.height / h)), args.height)
            tiles.append(np.asarray(Image.fromarray(frame).resize(size, Image.LANCZOS)))
            if args.mouth:
                target = coeffs.frames([i])
                points = project_vertices(target, face_vertices(model, target))[
                    0, model.landmark_indices, :2].numpy()
                lips = points[48:68]
                centre = lips.mean(0)
                half = int(0.8 * np.ptp(lips[:, 0])) + 1
                x0 = int(np.clip(centre[0] - half, 0, w - 2 * half))
                y0 = int(np.clip(centre[1] - half, 0, h - 2 * half))
                patch = frame[y0:y0 + 2 * half, x0:x0 + 2 * half]
                mouths.append(np.asarray(Image.fromarray(patch).resize(
                    (size[0], size[0] * patch.shape[0] // max(patch.shape[1], 1)),
                    Image.LANCZOS)))
        rows.append(np.concatenate(tiles, 1))
        if args.mouth:
            rows.append(np.concatenate(mouths, 1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255)
            for r in rows]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, 0)).save(args.output)
    print(args.output)


if __name__ == "__main__":
    main()
