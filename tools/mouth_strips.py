"""Close-ups of the mouth of a photo driven by a video under different ways of moving the
mouth: driver | ``--no-close-mouth`` | the default (``close_mouth``) | ``--reference-frame
best``, one row per driver frame, the photo's own mouth at the top. With ``--before
NAME=VALUE,...`` (warp settings), ``--before-fit NAME=VALUE,...`` (fitter settings, for the
photo and the driver) or ``--before-motion NAME=VALUE,...`` (motion transfer settings) the
columns are driver | those settings | the default instead.

Without ``:frame`` a pair shows the driver's frames with the mouth most closed, about half open
and widest open (the fitted jaw). Relative motion from the driver's first frame otherwise, as
``retarget`` does.

    python tools/mouth_strips.py --pairs d19:d6 -o /tmp/mouth.png
    python tools/mouth_strips.py --pairs d19:d6 d19:d3 -o docs/img/close_mouth_d19.png
    python tools/mouth_strips.py --pairs s1:d6:528 s1:d6:632 s1:d3:150 s1:d0:48 s12:d6:528 \
        --before mouth_blend=0 --height 140 -o docs/img/mouth_blend.png
    python tools/mouth_strips.py --pairs s42:d6:528 s42:d6:776 s1:d6:776 d19:d6:776 \
        --before-fit pucker=False --height 140 -o docs/img/pucker_d6.png
    python tools/mouth_strips.py --pairs d19:d6:360 s1:d6:340 --before-motion follow_gap=False \
        --height 140 -o docs/img/follow_gap.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eye_strips import config_from, crop
from gaze_strips import fitted_driver, label, pair_groups

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"

VARIANTS = {"--no-close-mouth": {"close_mouth": False}, "default": {},
            "--reference-frame best": {"reference_frame": "best"}}


def mouth_box(points: np.ndarray) -> tuple[int, int, int]:
    """``(68, 2)`` -> centre x, centre y and half-height of a box around the mouth (2:1)."""
    mouth = points[48:68]
    centre = mouth.mean(0)
    half = int(0.45 * np.linalg.norm(points[54] - points[48])) + 1
    return int(centre[0]), int(centre[1]), half


def jaw_frames(jaw: torch.Tensor) -> dict[str, int]:
    """The frames of a ``(T,)`` jaw track most closed, nearest its middle and widest open."""
    middle = (jaw.min() + jaw.max()) / 2
    return {"closed": int(jaw.argmin()), "half": int((jaw - middle).abs().argmin()),
            "open": int(jaw.argmax())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", required=True,
                        help="photo:driver[:frame], e.g. d19:d6 or d19:d6:192")
    parser.add_argument("--height", type=int, default=110, help="row height in pixels")
    parser.add_argument("--before", help="compare the default with these warp settings, "
                        "NAME=VALUE,... (e.g. mouth_blend=0)")
    parser.add_argument("--before-fit", help="compare the default with these fitter settings "
                        "of the photo and the driver, NAME=VALUE,... (e.g. pucker=False)")
    parser.add_argument("--before-motion", help="compare the default with these motion "
                        "transfer settings, NAME=VALUE,... (e.g. follow_gap=False)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the .png to write")
    args = parser.parse_args()

    from faceanime.fitting import FitConfig
    from faceanime.io.media import iter_video_frames
    from faceanime.jobs.common import OutputConfig, load_source, make_renderer
    from faceanime.morphable import load_model
    from faceanime.motion import MotionConfig, transfer_motion
    from faceanime.reconstruction import face_vertices, project_vertices
    from faceanime.render.warp import WarpConfig

    # Per column: motion settings, warp settings, fitter settings.
    variants = {title: (MotionConfig(**settings), WarpConfig(), FitConfig())
                for title, settings in VARIANTS.items()}
    if args.before or args.before_fit or args.before_motion:
        before = (config_from(args.before_motion, MotionConfig()) if args.before_motion
                  else MotionConfig(),
                  config_from(args.before, WarpConfig()) if args.before else WarpConfig(),
                  config_from(args.before_fit, FitConfig()) if args.before_fit else FitConfig())
        variants = {args.before or args.before_fit or args.before_motion: before,
                    "default": (MotionConfig(), WarpConfig(), FitConfig())}

    torch.set_num_threads(2)
    model = load_model("sfm")
    fits: dict[tuple[str, str], object] = {}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for (photo, driver), frames in pair_groups(args.pairs).items():
        video = DATA / "videos" / f"{driver}.mp4"
        driving = fitted_driver(driver, model, fits)
        picks = jaw_frames(driving.jaw) if None in frames else {}
        chosen = [(f"f{f}", f) for f in frames if f is not None] + list(picks.items())
        index = [f for _, f in chosen]
        images = {i: f for i, f in enumerate(iter_video_frames(video)) if i in set(index)}
        config = OutputConfig(progress=False)
        path = next((DATA / "faces").glob(f"{photo}.*"))
        picture, source = load_source(path, model, config)
        outputs, screens = [], []
        for motion, warp, fit in variants.values():
            # The default fit's photo and driver are the ones above; another fit's are refitted.
            column_source, column_driving = source, driving
            if fit != FitConfig():
                _, column_source = load_source(path, model, config, fit)
                column_driving = fitted_driver(driver, model, fits, fit)
            renderer = make_renderer(model, picture, column_source,
                                     OutputConfig(progress=False, warp=warp))
            target = transfer_motion(column_source, column_driving, motion, model).frames(index)
            outputs.append(list(renderer.iter_frames(target)))
            screens.append(project_vertices(target, face_vertices(model, target))[
                :, model.landmark_indices, :2].numpy())
        photo_mouth = crop(picture, mouth_box(source.landmarks[0].numpy()), args.height)
        blank = np.zeros_like(photo_mouth)
        own = float(torch.rad2deg(source.jaw[0]))
        rows.append(np.concatenate([label(photo_mouth, f"photo {photo} jaw {own:.0f}")]
                                   + [blank] * len(variants), 1))
        for k, (name, f) in enumerate(chosen):
            what = "" if name == f"f{f}" else f" {name}"
            jaw = float(torch.rad2deg(driving.jaw[f]))
            row = [label(crop(images[f], mouth_box(driving.landmarks[f].numpy()), args.height),
                         f"{driver} {f}{what} jaw {jaw:.0f}")]
            # One box for every column (the first's mouth): a mouth narrower or more open in
            # one column shows as such, not zoomed to the same size.
            box = mouth_box(screens[0][k])
            for v, title in enumerate(variants):
                row.append(label(crop(outputs[v][k], box, args.height), title))
            rows.append(np.concatenate(row, 1))
    Image.fromarray(np.concatenate(rows, 0)).save(args.output)
    print(args.output)


if __name__ == "__main__":
    main()
