"""Render the frames a viewer judges a renderer by, as PNG strips to look at.

For each photo and driving video: the driver's frames of largest yaw, largest head translation,
widest mouth and most-closed eyes (from its fit and landmarks), rendered by each chosen
renderer with relative motion. One strip per pair: rows of photo | driver | renderer..., and a
close-up of the face per row. Fits are cached in ``--cache`` so reruns take seconds.

    python tools/render_strips.py --photos s1 s12 --drivers d3 d6 -o /tmp/strips
    python tools/render_strips.py --photos s1 --drivers d3 --renderers warp mask -o docs/img
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def eye_opening(points: np.ndarray) -> np.ndarray:
    """``(T, 68, 2)`` -> ``(T,)`` mean eye aspect ratio of both eyes."""
    def ear(eye: np.ndarray) -> np.ndarray:
        vertical = (np.linalg.norm(eye[:, 1] - eye[:, 5], axis=-1)
                    + np.linalg.norm(eye[:, 2] - eye[:, 4], axis=-1))
        return vertical / (2 * np.linalg.norm(eye[:, 0] - eye[:, 3], axis=-1))
    return (ear(points[:, 36:42]) + ear(points[:, 42:48])) / 2


def pick_frames(coeffs, points: np.ndarray) -> dict[str, int]:
    """Frames of largest yaw change, pitch change, translation, mouth opening and eye
    closure."""
    from faceanime.geometry.rotation import matrix_to_euler

    euler = matrix_to_euler(coeffs.rotation.double()).numpy()          # (T, 3) yaw pitch roll
    yaw = np.abs(euler[:, 0] - euler[0, 0])
    shift = np.linalg.norm((coeffs.translation[:, :2] - coeffs.translation[0, :2]).numpy(), axis=1)
    mouth = np.linalg.norm(points[:, 66] - points[:, 62], axis=-1)
    pitch = np.abs(euler[:, 1] - euler[0, 1])
    return {"yaw": int(yaw.argmax()), "pitch": int(pitch.argmax()), "move": int(shift.argmax()),
            "mouth": int(mouth.argmax()), "blink": int(eye_opening(points).argmin())}


def close_up(frame: np.ndarray, centre: np.ndarray, half: int, size: int) -> np.ndarray:
    h, w = frame.shape[:2]
    x0 = int(np.clip(centre[0] - half, 0, max(w - 2 * half, 0)))
    y0 = int(np.clip(centre[1] - half, 0, max(h - 2 * half, 0)))
    crop = frame[y0:y0 + 2 * half, x0:x0 + 2 * half]
    return np.asarray(Image.fromarray(crop).resize((size, size), Image.BICUBIC))


def tile(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    k = size / max(h, w)
    small = Image.fromarray(image).resize((max(1, round(w * k)), max(1, round(h * k))),
                                          Image.BICUBIC)
    out = np.zeros((size, size, 3), np.uint8)
    sh, sw = small.size[1], small.size[0]
    out[(size - sh) // 2:(size - sh) // 2 + sh, (size - sw) // 2:(size - sw) // 2 + sw] = small
    return out


def output_config(name: str):
    """The job settings of a renderer name: ``warp``, ``mask`` or ``warp:field=value,...``."""
    from dataclasses import fields

    from faceanime.jobs.common import OutputConfig
    from faceanime.render.warp import WarpConfig

    kind, _, changes = name.partition(":")
    if not changes:
        return OutputConfig(renderer=kind)
    defaults = {f.name: f.default for f in fields(WarpConfig)}
    settings = {}
    for item in changes.split(","):
        key, _, value = item.partition("=")
        if key not in defaults:
            raise SystemExit(f"--renderers {name}: {key!r} is not a WarpConfig field")
        kind_of = type(defaults[key])
        settings[key] = (value.lower() in ("1", "true", "yes") if kind_of is bool
                         else kind_of(value))
    return OutputConfig(renderer=kind, warp=WarpConfig(**settings))


def cached_driver(model, name: str, cache: Path):
    """The fit of the shared video ``name`` with where its eyes look (as retarget measures
    them), read from ``cache`` when there, else made and stored there."""
    from faceanime.capture import capture_driver
    from faceanime.coefficients import Coefficients
    from faceanime.fitting import fit_video
    from faceanime.landmarks import TrackerConfig, track_video
    from faceanime.parallel import default_track_parts

    video = DATA / "videos" / f"{name}.mp4"
    cache.mkdir(parents=True, exist_ok=True)
    fit_path = cache / f"{name}.npz"
    driving = Coefficients.load(fit_path) if fit_path.exists() else None
    if driving is None or driving.gaze is None:
        # Tracked as the jobs track a driver (in parts, one per core): the strips show what
        # retarget makes.
        track = track_video(video, TrackerConfig(progress=False, parts=default_track_parts()))
        driving = capture_driver(video, fit_video(video, model, track))
        driving.save(fit_path)
    return driving


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", nargs="+", default=["s1", "s12", "s42", "d19"],
                        help="portraits in the shared data by name (s1), or image files")
    parser.add_argument("--drivers", nargs="+", default=["d3", "d6"])
    parser.add_argument("--renderers", nargs="+", default=["warp", "mask"],
                        help="warp, mask, or a warp variant as warp:name=value,name=value "
                        "(WarpConfig fields), e.g. warp:rotation_follow=1,scale_follow=1")
    parser.add_argument("--size", type=int, default=256, help="tile side in pixels")
    parser.add_argument("--frames", nargs="+", default=["yaw", "move", "mouth", "blink"],
                        help="which driver frames: yaw pitch move mouth blink, or frame numbers")
    parser.add_argument("--no-driver-mouth", dest="driver_mouth", action="store_false",
                        help="leave out the driver's mouth interior (the synthesised one shows)")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/faceanime_strips_cache"))
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)

    from faceanime.io import iter_video_frames
    from faceanime.jobs.common import OutputConfig, load_source, make_renderer
    from faceanime.morphable import load_model
    from faceanime.motion import transfer_motion
    from faceanime.render.mouth_interior import TEXTURE_SIZE, InteriorCapture

    torch.set_num_threads(2)
    model = load_model(DATA / "sfm" / "sfm_shape_3448.bin")
    capture = InteriorCapture(model)
    args.cache.mkdir(parents=True, exist_ok=True)
    args.output.mkdir(parents=True, exist_ok=True)
    for drv_name in args.drivers:
        video = DATA / "videos" / f"{drv_name}.mp4"
        driving = cached_driver(model, drv_name, args.cache)
        points = driving.landmarks.numpy()
        picks = pick_frames(driving, points)
        chosen = [(name, picks[name]) if name in picks else (f"f{name}", int(name))
                  for name in args.frames]
        frames = sorted({i for _, i in chosen})
        driver_frames = {}
        for i, frame in enumerate(iter_video_frames(video)):
            if i in frames:
                driver_frames[i] = frame
            if i >= frames[-1]:
                break
        h, w = TEXTURE_SIZE
        driving.mouth = torch.zeros(driving.n_frames, 4, h, w, dtype=torch.uint8)
        if args.driver_mouth:
            driving.mouth[frames] = capture(np.stack([driver_frames[i] for i in frames]),
                                            driving.frames(frames))
        for photo_name in args.photos:
            # A shared portrait by name (s1), or any image file (a video's frame 0 for self-
            # reenactment).
            photo_path = Path(photo_name)
            if not photo_path.is_file():
                photo_path = next((DATA / "faces").glob(f"{photo_name}.*"))
            photo_name = photo_path.stem
            image, source = load_source(photo_path, model, OutputConfig(size=512))
            # Relative to the driver's own first frame, as the job does, with the driver's
            # mouth interior captured from the chosen frames (the others hold none).
            target = transfer_motion(source, driving, model=model).frames([i for _, i in chosen])
            outputs = {}
            for name in args.renderers:
                renderer = make_renderer(model, image, source, output_config(name))
                outputs[name] = (renderer.render(target).clamp(0, 1) * 255).round().byte()
                outputs[name] = outputs[name].permute(0, 2, 3, 1).numpy()
            face = source.landmarks[0].numpy()
            centre = face.mean(0)
            half = int(0.75 * (face[:, 0].max() - face[:, 0].min()))
            rows = []
            for k, (label, i) in enumerate(chosen):
                row = [tile(image, args.size), tile(driver_frames[i], args.size)]
                row += [tile(outputs[n][k], args.size) for n in args.renderers]
                row += [close_up(outputs[n][k], centre, half, args.size) for n in args.renderers]
                rows.append(np.concatenate(row, 1))
                print(f"{photo_name} x {drv_name}: {label} = frame {i}")
            path = args.output / f"strip_{photo_name}_{drv_name}.png"
            Image.fromarray(np.concatenate(rows, 0)).save(path)
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
