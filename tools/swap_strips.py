"""Face-swap strips to look at: photo | target frame | swap | the swapped share, one row each.

``--before`` adds a swap with other settings left of the default's, ``--after`` one right of
it (the share is the last swap's).

    python tools/swap_strips.py --pairs s1:d3:120 s12:d3:267 s42:d6:500 d19:d6:393 \
        -o docs/img/swap_strip.png

Each target video is tracked and fitted once; its own texture comes from 8 frames spread over
it, as the job does (``faceanime swap``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eye_strips import config_from

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def tile(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    k = size / max(h, w)
    small = Image.fromarray(image).resize((max(1, round(w * k)), max(1, round(h * k))),
                                          Image.BICUBIC)
    out = np.full((size, size, 3), 255, np.uint8)
    y, x = (size - small.height) // 2, (size - small.width) // 2
    out[y:y + small.height, x:x + small.width] = np.asarray(small)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", required=True,
                        help="photo:video:frame, e.g. s1:d3:120 (faces/s1.jpg, videos/d3.mp4)")
    parser.add_argument("--size", type=int, default=256, help="tile side in pixels")
    parser.add_argument("--before", help="also a swap with these settings, NAME=VALUE,... "
                        "(e.g. fringe=False), left of the default's")
    parser.add_argument("--after", help="also a swap with these settings, right of the "
                        "default's (e.g. relight=True)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()

    from faceanime.fitting import fit_image, fit_video
    from faceanime.io import iter_video_frames, read_image
    from faceanime.jobs.swap import reference_frames
    from faceanime.landmarks import TrackerConfig
    from faceanime.morphable import load_model
    from faceanime.render.frames import frames_tensor, to_uint8
    from faceanime.render.swap import SwapRenderConfig, SwapRenderer

    configs = [SwapRenderConfig()]
    if args.before:
        configs.insert(0, config_from(args.before, SwapRenderConfig()))
    if args.after:
        configs.append(config_from(args.after, SwapRenderConfig()))

    model = load_model("sfm")
    fits: dict[str, object] = {}
    rows = []
    for pair in args.pairs:
        photo, video, frame = pair.split(":")
        frame = int(frame)
        path = args.data / "videos" / f"{video}.mp4"
        if video not in fits:
            fits[video] = fit_video(path, model, tracker=TrackerConfig(progress=False))
        target = fits[video]
        image = read_image(args.data / "faces" / f"{photo}.jpg")
        reference, picks = reference_frames(path, target, 8)
        still = next(f for i, f in enumerate(iter_video_frames(path)) if i == frame)
        tiles = [image, still]
        for config in configs:
            renderer = SwapRenderer(model, image, fit_image(image, model), reference,
                                    target.frames(picks), config)
            out, share = renderer.render_frames(frames_tensor([still]), target.frames([frame]))
            tiles.append(to_uint8(out)[0])
        mask = (share[0, 0].numpy() * 255).round().astype(np.uint8)
        tiles.append(np.stack([mask] * 3, -1))
        rows.append(np.concatenate([tile(t, args.size) for t in tiles], 1))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, 0)).save(args.output)
    print(args.output)


if __name__ == "__main__":
    main()
