"""Relighting with exact ground truth, as a strip: photo | target | swap | swap relit | truth.

The photo (s12's fit) and the target (d3's first frames' fit) are rendered with one albedo,
the photo lit from its left and the target from its right (first-order spherical-harmonic
lights); the truth is the swapped fit rendered under the target's light. The same case as
``tests/test_swap.py::test_the_swapped_face_takes_the_targets_light``; prints the mean error
inside the swapped face for both swaps.

    python tools/relight_strip.py -o docs/img/swap_relight_truth.png
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
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--frame", type=int, default=9, help="d3 frame (default: 9)")
    parser.add_argument("--size", type=int, default=256, help="tile side in pixels")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()

    from faceanime.fitting import fit_image, fit_video
    from faceanime.io import read_image
    from faceanime.landmarks import TrackerConfig
    from faceanime.morphable import load_model
    from faceanime.render.frames import to_uint8
    from faceanime.render.relight import lit_fit
    from faceanime.render.swap import SwapRenderConfig, SwapRenderer, swap_coefficients

    model = load_model("sfm")
    boxes = []

    def lit(coeffs, light, size):
        images, screen = lit_fit(model, coeffs, albedo, light, size)
        low, high = screen[0, :, :2].amin(0), screen[0, :, :2].amax(0)
        half = min(float((high - low).max()) * 0.6, min(size) / 2)
        # Kept inside the image (a box beyond it would be padded black).
        x, y = ((low + high) / 2).tolist()
        x = min(max(x, half), size[1] - half)
        y = min(max(y, half), size[0] - half)
        boxes.append([round(x - half), round(y - half), round(x + half), round(y + half)])
        return images

    albedo = torch.tensor([0.85, 0.62, 0.5])
    from_left = torch.tensor([[0.62], [-0.32], [0.08], [0.22]])
    from_right = torch.tensor([[0.62], [0.32], [0.08], [0.22]])
    source = fit_image(read_image(args.data / "faces" / "s12.jpg"), model)
    target = fit_video(args.data / "videos" / "d3.mp4", model,
                       tracker=TrackerConfig(progress=False)).frames(list(range(24)))
    photo = lit(source, from_left, tuple(int(v) for v in source.image_size))[0]
    frames = lit(target, from_right, (512, 512))
    truth = lit(swap_coefficients(source, target.frames([args.frame])), from_right, (512, 512))
    picks = [0, 8, 16]
    tiles = [photo, frames[args.frame]]
    for relight in (False, True):
        config = SwapRenderConfig(relight=relight, occlusion=False, keep_mouth=False,
                                  shut_eyes=1.0)
        r = SwapRenderer(model, photo, source, frames[picks], target.frames(picks), config)
        out, share = r.render_frames(frames[[args.frame]], target.frames([args.frame]))
        inside = (share >= 0.99).expand_as(out)
        print(f"relight={relight}: mean error inside the face "
              f"{float((out - truth).abs()[inside].mean()):.3f}")
        tiles.append(out[0])
    tiles.append(truth[0])

    def tile(image: torch.Tensor, box: list[int]) -> np.ndarray:
        """The face's square around its mesh, at the tile size."""
        picture = Image.fromarray(to_uint8(image[None].clamp(0, 1))[0]).crop(box)
        return np.asarray(picture.resize((args.size, args.size), Image.BICUBIC))

    # The photo in its own face's box; the target, both swaps and the truth in the target's.
    crops = [boxes[0]] + [boxes[1]] * 4
    args.output.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate([tile(t, b) for t, b in zip(tiles, crops, strict=True)],
                                   1)).save(args.output)
    print(args.output)


if __name__ == "__main__":
    main()
