"""Close-ups of the eyes where a driver looks aside, down or up: driver | without gaze | with
gaze, one row per frame, and the photo's own eyes at the top (``--swap``: the photo swapped
onto the video instead of retargeted by it).

Without ``:frame`` a pair shows the driver's frames whose gaze (both eyes' mean change from
its first frame, :mod:`faceanime.landmarks.gaze`) moved furthest left, right, down and up.
Relative motion from the driver's first frame, as ``retarget`` does by default.

    python tools/gaze_strips.py --pairs s1:d6 d19:d18 -o /tmp/gaze.png
    python tools/gaze_strips.py --pairs s42:d6:360 s42:d6:1004 s1:d6:360 s12:d6:360 \
        d19:d3:206 -o docs/img/warp_gaze.png
    python tools/gaze_strips.py --swap --pairs s42:d6:360 s42:d6:1004 s12:d3:328 \
        -o docs/img/swap_gaze.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eye_strips import crop, eye_box

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def extreme_frames(gaze: torch.Tensor) -> dict[str, int]:
    """The frames of a ``(T, 2, 2)`` gaze track furthest left, right, down and up of frame 0."""
    change = (gaze - gaze[0]).mean(1)                                          # (T, 2)
    return {"left": int(change[:, 0].argmin()), "right": int(change[:, 0].argmax()),
            "down": int(change[:, 1].argmax()), "up": int(change[:, 1].argmin())}


def label(image: np.ndarray, text: str) -> np.ndarray:
    picture = Image.fromarray(image)
    ImageDraw.Draw(picture).text((3, 2), text, fill=(255, 255, 0))
    return np.asarray(picture)


def pair_groups(pairs: list[str]) -> dict[tuple[str, str], list[int | None]]:
    """``photo:driver[:frame]`` arguments -> the frames asked of each (photo, driver) pair (None:
    the tool picks)."""
    groups: dict[tuple[str, str], list[int | None]] = {}
    for pair in pairs:
        photo, driver, *frame = pair.split(":")
        groups.setdefault((photo, driver), []).append(int(frame[0]) if frame else None)
    return groups


def fitted_driver(name: str, model, fits: dict, fit=None):
    """The shared video ``name`` tracked and fitted (with the :class:`FitConfig` ``fit``, or
    the default), its mouth interiors and gaze captured as retarget does (without the interiors
    a strip would show the synthesised mouth where the job shows the driver's); kept in
    ``fits`` for the next pair (its track too, for another fit of the same video)."""
    from faceanime.capture import capture_driver
    from faceanime.fitting import fit_video
    from faceanime.landmarks import TrackerConfig, track_video
    from faceanime.render.mouth_interior import InteriorCapture

    key = (name, repr(fit))
    if key not in fits:
        video = DATA / "videos" / f"{name}.mp4"
        if ("track", name) not in fits:
            fits["track", name] = track_video(video, TrackerConfig(progress=False))
        coeffs = fit_video(video, model, fits["track", name], fit)
        fits[key] = capture_driver(video, coeffs, InteriorCapture(model))
    return fits[key]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", required=True,
                        help="photo:driver[:frame], e.g. s1:d6 or s1:d6:120")
    parser.add_argument("--swap", action="store_true",
                        help="swap the photo onto the video (the swapped eyes follow the "
                        "target's gaze) instead of retargeting it")
    parser.add_argument("--height", type=int, default=110, help="row height in pixels")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the .png to write")
    args = parser.parse_args()

    from faceanime.io.media import iter_video_frames
    from faceanime.jobs.common import OutputConfig, load_source, make_renderer
    from faceanime.jobs.swap import reference_frames
    from faceanime.morphable import load_model
    from faceanime.motion import MotionConfig, transfer_motion
    from faceanime.reconstruction import face_vertices, project_vertices
    from faceanime.render.frames import frames_tensor, to_uint8
    from faceanime.render.swap import SwapRenderConfig, SwapRenderer

    torch.set_num_threads(2)
    model = load_model("sfm")
    fits: dict[str, object] = {}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for (photo, driver), frames in pair_groups(args.pairs).items():
        video = DATA / "videos" / f"{driver}.mp4"
        driving = fitted_driver(driver, model, fits)
        picks = extreme_frames(driving.gaze) if None in frames else {}
        chosen = [(f"f{f}", f) for f in frames if f is not None] + list(picks.items())
        wanted = {f for _, f in chosen}
        images = {i: f for i, f in enumerate(iter_video_frames(video)) if i in wanted}
        config = OutputConfig(progress=False)
        picture, source = load_source(next((DATA / "faces").glob(f"{photo}.*")), model, config)
        index = [f for _, f in chosen]
        outputs = []
        if args.swap:
            # The swap keeps the target's framing: its eyes are where the target's are.
            reference, refs = reference_frames(video, driving, 8)
            pixels = frames_tensor([images[f] for f in index])
            for gaze in (False, True):
                renderer = SwapRenderer(model, picture, source, reference,
                                        driving.frames(refs), SwapRenderConfig(gaze=gaze))
                outputs.append(list(to_uint8(renderer.render_frames(
                    pixels, driving.frames(index))[0])))
            screen = driving.landmarks[index].numpy()
        else:
            renderer = make_renderer(model, picture, source, config)
            for gaze in (False, True):
                target = transfer_motion(source, driving, MotionConfig(gaze=gaze),
                                         model).frames(index)
                outputs.append(list(renderer.iter_frames(target)))
            screen = project_vertices(target, face_vertices(model, target))[
                :, model.landmark_indices, :2].numpy()
        photo_eyes = crop(picture, eye_box(source.landmarks[0].numpy()), args.height)
        blank = np.zeros_like(photo_eyes)
        rows.append(np.concatenate([label(photo_eyes, f"photo {photo}"), blank, blank], 1))
        for k, (name, f) in enumerate(chosen):
            change = (driving.gaze[f] - driving.gaze[0]).mean(0).tolist()
            what = "" if name == f"f{f}" else f" {name}"
            text = f"{driver} {f}{what} du={change[0]:+.2f} dv={change[1]:+.2f}"
            rows.append(np.concatenate([
                label(crop(images[f], eye_box(driving.landmarks[f].numpy()), args.height), text),
                label(crop(outputs[0][k], eye_box(screen[k]), args.height), "without gaze"),
                label(crop(outputs[1][k], eye_box(screen[k]), args.height), "with gaze")], 1))
    Image.fromarray(np.concatenate(rows, 0)).save(args.output)
    print(args.output)


if __name__ == "__main__":
    main()
