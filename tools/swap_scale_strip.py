"""A swap onto a target video enlarged (as a 1080p video is to a 512² one): target | the blend's
widths in pixels (``pixel_scale`` forced to 1, as before they followed the face's size) | the
default, one row per frame, each tile the face's box.

    python tools/swap_scale_strip.py --photo s42 --target d3 --frames 40 200 \
        -o docs/img/swap_large_frame.png

The target's frames are enlarged bilinearly and its landmarks with them (pixel centres at
integers: x' = k x + (k - 1) / 2), then fitted at that size; its own texture comes from 8
frames spread over it, as the job does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from render_strips import DATA, cached_driver


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", default="s42", help="photo in faces/ (default: s42)")
    parser.add_argument("--target", default="d3", help="video in videos/ (default: d3)")
    parser.add_argument("--frames", nargs="+", type=int, default=[40, 200])
    parser.add_argument("--enlarge", type=int, default=2, help="how many times (default: 2)")
    parser.add_argument("--tile", type=int, default=400, help="tile side in pixels")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/faceanime_strips_cache"))
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)

    import torch
    import torch.nn.functional as F
    from PIL import Image

    from faceanime.fitting import fit_image, fit_landmarks
    from faceanime.io import iter_video_frames, read_image
    from faceanime.morphable import load_model
    from faceanime.render.frames import frames_tensor
    from faceanime.render.swap import SwapRenderer

    torch.set_num_threads(2)
    k = args.enlarge
    model = load_model(DATA / "sfm" / "sfm_shape_3448.bin")
    args.cache.mkdir(parents=True, exist_ok=True)
    driving = cached_driver(model, args.target, args.cache)
    picks = sorted({round(x) for x in np.linspace(0, driving.n_frames - 1, 8)})
    need = set(picks) | set(args.frames)
    frames = {i: f for i, f in enumerate(iter_video_frames(DATA / "videos" /
                                                            f"{args.target}.mp4")) if i in need}
    h, w = driving.image_size.tolist()
    fit = fit_landmarks(model, driving.landmarks * k + (k - 1) / 2, (k * h, k * w),
                        fps=driving.fps)

    def enlarged(index: list[int]) -> torch.Tensor:
        return F.interpolate(frames_tensor(np.stack([frames[i] for i in index])),
                             scale_factor=k, mode="bilinear", align_corners=False)

    image = read_image(next((DATA / "faces").glob(f"{args.photo}.*")))
    renderer = SwapRenderer(model, image, fit_image(image, model), enlarged(picks),
                            fit.frames(picks))
    scale = renderer.pixel_scale
    print(f"{args.photo} onto {args.target} ×{k}: pixel_scale {scale:.2f}")
    rows = []
    for i in args.frames:
        target = enlarged([i])
        outputs = []
        for forced in (1.0, scale):
            renderer.pixel_scale, renderer._last = forced, None
            outputs.append(renderer.render_frames(target, fit.frames([i]))[0])
        points = fit.landmarks[i].numpy()
        centre = points.mean(0)
        half = int(0.75 * (points[:, 0].max() - points[:, 0].min()))
        y0, x0 = max(int(centre[1]) - half, 0), max(int(centre[0]) - half, 0)

        tiles = []
        for frame in [target, *outputs]:
            pixels = (frame[0].permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()
            box = pixels[y0:y0 + 2 * half, x0:x0 + 2 * half]
            tiles.append(np.asarray(Image.fromarray(box).resize((args.tile, args.tile),
                                                                Image.LANCZOS)))
        rows.append(np.concatenate(tiles, 1))
    Image.fromarray(np.concatenate(rows, 0)).save(args.output)
    print(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
