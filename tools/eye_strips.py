"""Close-ups of the eyes at a driver's blinks (or, with ``--region head``, of the whole head at
its large turns): driver | before | now, one row per pair.

"Before" fits the driver with ``eyelid_floor=0`` (dlib's lid points read as they are) and renders
with ``lash_line=1`` (the eyeball squeezed, not hidden); with ``--before NAME=VALUE,...`` it is
the defaults with those warp settings instead (e.g. ``lid_dark=0``); with ``--before-blinks``
the defaults with the driver's blinks read from its landmarks alone (not shut where its pixels
show no eye). "Now" is the job's: the defaults, the driver captured as retarget captures it.
All render the same photo with relative motion from the driver's first frame.

    python tools/eye_strips.py --pairs s1:d6:393 s42:d6:393 d19:d6:393 s12:d3:60 \
        -o docs/img/warp_blink.png
    python tools/eye_strips.py --region head --before flank_stretch=0 \
        --pairs d19:d3:267 s1:d3:267 s42:d3:264 -o docs/img/warp_flank.png
    python tools/eye_strips.py --before-blinks --pairs s42:d18:187 s12:d18:186 s1:d18:96 \
        s42:d6:220 -o docs/img/blinks_read_shut.png
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def eye_box(points: np.ndarray) -> tuple[int, int, int]:
    """``(68, 2)`` -> centre x, centre y and half-height of a box around both eyes (2:1)."""
    eyes = points[36:48]
    centre = eyes.mean(0)
    half = int(0.32 * np.linalg.norm(points[45] - points[36])) + 1
    return int(centre[0]), int(centre[1]), half


def head_box(points: np.ndarray) -> tuple[int, int, int]:
    """``(68, 2)`` -> centre x, centre y and half-height of a square box around the head: the
    face's landmarks with room for hair and ears."""
    low, high = points.min(0), points.max(0)
    centre = (low + high) / 2 - np.array([0.0, 0.25 * (high[1] - low[1])])
    return int(centre[0]), int(centre[1]), int(0.95 * (high - low).max()) + 1


def config_from(text: str, default):
    """A copy of the config dataclass ``default`` with the settings ``NAME=VALUE,...`` of
    ``text`` (each value of its field's type; booleans as True or False; None for an
    optional field, a number for one that is None by default)."""
    def value(name: str, raw: str):
        if raw == "None":
            return None
        kind = type(getattr(default, name))
        if kind is type(None):
            return float(raw)
        return raw == "True" if kind is bool else kind(raw)

    pairs = dict(item.split("=", 1) for item in text.split(","))
    return replace(default, **{name: value(name, raw) for name, raw in pairs.items()})


def crop(frame: np.ndarray, box: tuple[int, int, int], height: int, aspect: int = 2
         ) -> np.ndarray:
    """The box ``aspect`` times as wide as high (inside the frame where it can), resized to
    ``height``."""
    x, y, half = box
    h, w = frame.shape[:2]
    half = min(half, h // 2, w // (2 * aspect))
    x0 = int(np.clip(x - aspect * half, 0, w - 2 * aspect * half))
    y0 = int(np.clip(y - half, 0, h - 2 * half))
    patch = frame[y0:y0 + 2 * half, x0:x0 + 2 * aspect * half]
    return np.asarray(Image.fromarray(patch).resize((aspect * height, height), Image.BICUBIC))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", required=True,
                        help="photo:driver:frame, e.g. s1:d6:393 (faces/s1.jpg, videos/d6.mp4)")
    parser.add_argument("--region", choices=("eyes", "head"), default="eyes",
                        help="what the close-ups show")
    parser.add_argument("--height", type=int, default=120, help="row height in pixels")
    parser.add_argument("--before", help="warp settings of the 'before' column, "
                        "NAME=VALUE,... (default: the fit and lids of before the lid rig's fixes)")
    parser.add_argument("--before-blinks", action="store_true",
                        help="'before': the defaults, the driver's blinks from its landmarks "
                        "alone")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()

    from faceanime.capture import capture_driver
    from faceanime.fitting import FitConfig, fit_landmarks
    from faceanime.io.media import iter_video_frames
    from faceanime.jobs.common import OutputConfig, load_source, make_renderer
    from faceanime.landmarks import TrackerConfig, track_video
    from faceanime.morphable import load_model
    from faceanime.motion import transfer_motion
    from faceanime.reconstruction import face_vertices, project_vertices
    from faceanime.render.mouth_interior import InteriorCapture
    from faceanime.render.warp import WarpConfig

    if args.before or args.before_blinks:
        before = config_from(args.before, WarpConfig()) if args.before else WarpConfig()
        before_floor = FitConfig().eyelid_floor
    else:
        before, before_floor = WarpConfig(lash_line=1.0), 0.0
    model = load_model("sfm")
    tracks: dict[str, object] = {}
    rows = []
    for pair in args.pairs:
        photo, driver, frame = pair.split(":")
        frame = int(frame)
        video = args.data / "videos" / f"{driver}.mp4"
        if driver not in tracks:
            tracks[driver] = track_video(video, TrackerConfig(progress=False))
        track = tracks[driver]
        image = next(f for i, f in enumerate(iter_video_frames(video)) if i == frame)
        box_of, aspect = (eye_box, 2) if args.region == "eyes" else (head_box, 1)
        tiles = [crop(image, box_of(track.points[frame]), args.height, aspect)]
        columns = ((before_floor, before, not args.before_blinks),
                   (FitConfig().eyelid_floor, WarpConfig(), True))
        for floor, warp, blinks in columns:
            driving = fit_landmarks(model, torch.from_numpy(track.points), tuple(track.image_size),
                                    FitConfig(eyelid_floor=floor), fps=track.fps)
            # As the job captures the driver: its gaze and blinks (and, for the head, whose
            # mouth shows too, its mouth interior).
            interiors = InteriorCapture(model) if args.region == "head" else None
            driving = capture_driver(video, driving, interiors, blinks=blinks)
            config = OutputConfig(progress=False, warp=warp)
            picture, source = load_source(args.data / "faces" / f"{photo}.jpg", model, config)
            target = transfer_motion(source, driving, model=model).frames([frame])
            out = next(iter(make_renderer(model, picture, source, config).iter_frames(target)))
            ids = model.landmark_indices
            screen = project_vertices(target, face_vertices(model, target))[0, ids, :2]
            tiles.append(crop(out, box_of(screen.numpy()), args.height, aspect))
        rows.append(np.concatenate(tiles, 1))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, 0)).save(args.output)
    print(args.output)


if __name__ == "__main__":
    main()
