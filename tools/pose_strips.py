"""Self-reenactment frames of a video fitted two ways: the video's frame | the warp with the fit at
``--before`` lower-face weight | at ``--after`` | each one's difference from the frame (×4), one
row per frame. Shows where a fit's head pose puts the hair, ears and shoulders.

    python tools/pose_strips.py --video d18 --frames 16 32 120 --before 1 --after 0.5 \
        -o docs/img/fit_lower_face.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", default="d18", help="a video of the shared data by name")
    parser.add_argument("--frames", type=int, nargs="+", required=True)
    parser.add_argument("--before", type=float, default=1.0,
                        help="lower_face_weight of the 'before' fit")
    parser.add_argument("--after", type=float, default=0.5,
                        help="lower_face_weight of the 'after' fit")
    parser.add_argument("--height", type=int, default=240, help="tile height in pixels")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()

    from faceanime.capture import capture_driver
    from faceanime.fitting import FitConfig, fit_image, fit_landmarks
    from faceanime.io.media import iter_video_frames
    from faceanime.jobs.common import OutputConfig, make_renderer
    from faceanime.landmarks import TrackerConfig, track_video
    from faceanime.morphable import load_model
    from faceanime.motion import transfer_motion
    from faceanime.render.mouth_interior import InteriorCapture

    model = load_model("sfm")
    video = args.data / "videos" / f"{args.video}.mp4"
    track = track_video(video, TrackerConfig(progress=False))
    wanted = set(args.frames) | {0}
    frames = {i: f for i, f in enumerate(iter_video_frames(video)) if i in wanted}
    photo = frames[0]
    config = OutputConfig(progress=False)
    outputs = []
    for weight in (args.before, args.after):
        fit = FitConfig(lower_face_weight=weight)
        driving = fit_landmarks(model, torch.from_numpy(track.points), tuple(track.image_size),
                                fit, fps=track.fps)
        # As the job captures its driver: the blinks, the gaze and the mouth interior.
        driving = capture_driver(video, driving, InteriorCapture(model), blinks=True)
        # The source as a photo fitted alike, from the driver's own landmarks of frame 0.
        source = fit_image(photo, model, track.points[0], fit)
        target = transfer_motion(source, driving, model=model).frames(args.frames)
        outputs.append(list(make_renderer(model, photo, source, config).iter_frames(target)))

    def tile(image: np.ndarray) -> np.ndarray:
        width = round(image.shape[1] * args.height / image.shape[0])
        return np.asarray(Image.fromarray(image).resize((width, args.height), Image.BICUBIC))

    rows = []
    for k, f in enumerate(args.frames):
        truth = frames[f]
        shown = [truth, outputs[0][k], outputs[1][k]]
        for out in outputs:
            diff = np.abs(out[k].astype(np.int16) - truth.astype(np.int16)).mean(-1) * 4
            shown.append(np.repeat(diff.clip(0, 255).astype(np.uint8)[..., None], 3, -1))
        rows.append(np.concatenate([tile(x) for x in shown], 1))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, 0)).save(args.output)
    print(args.output)


if __name__ == "__main__":
    main()
