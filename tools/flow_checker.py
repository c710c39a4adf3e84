"""See the warp's flow: the photo with a checkerboard laid over it, carried by the flow of
chosen driver frames, beside the plain output. Stretched cells show where the photo's pixels
are spread (a cheek turning towards the camera), squeezed ones where they are packed; a fold or
tear would show as cells drawn twice or cut off.

    python tools/flow_checker.py --photo d19 --driver d3 --frames 267 \
        -o docs/img/warp_checker_d19.png

One row per frame: photo with the checkerboard | output | checkerboard output (the flow alone:
the mouth interior and the lids drawn over it are left out). The driver's
fit is cached in ``--cache`` as ``tools/render_strips.py`` caches it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from render_strips import DATA, cached_driver


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", default="d19", help="a portrait in faces/ (default: d19)")
    parser.add_argument("--driver", default="d3", help="a video in videos/ (default: d3)")
    parser.add_argument("--frames", type=int, nargs="+", default=[267])
    parser.add_argument("--cell", type=int, default=12, help="checker cell side, pixels")
    parser.add_argument("--width", type=int, default=960, help="width of the saved figure")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/faceanime_strips_cache"))
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)

    from faceanime.jobs.common import OutputConfig, load_source, make_renderer
    from faceanime.morphable import load_model
    from faceanime.motion import transfer_motion
    from faceanime.render.texture import pixel_grid

    torch.set_num_threads(2)
    model = load_model(DATA / "sfm" / "sfm_shape_3448.bin")
    driving = cached_driver(model, args.driver, args.cache)
    image, source = load_source(next((DATA / "faces").glob(f"{args.photo}.*")), model,
                                OutputConfig(size=512))
    target = transfer_motion(source, driving, model=model).frames(args.frames)
    renderer = make_renderer(model, image, source, OutputConfig())
    plain = (renderer.render(target).clamp(0, 1) * 255).round().byte()
    plain = plain.permute(0, 2, 3, 1).numpy()

    h, w = image.shape[:2]
    rows, cols = np.mgrid[:h, :w]
    board = ((rows // args.cell + cols // args.cell) % 2).astype(np.float32)[..., None]
    checked = (0.5 * image / 255 + 0.5 * board).astype(np.float32)          # (H, W, 3)
    photo = torch.from_numpy(checked).permute(2, 0, 1)[None]
    (x0, y0, x1, y1), positions, _ = renderer.flow(target)                  # (T, 2, h, w)
    grid = pixel_grid(positions.permute(0, 2, 3, 1).contiguous(), h, w)
    carried = F.grid_sample(photo.expand(len(args.frames), -1, -1, -1), grid, mode="bilinear",
                            padding_mode="border", align_corners=True)
    figure_rows = []
    for k in range(len(args.frames)):
        out = checked.copy()
        out[y0:y1, x0:x1] = carried[k].permute(1, 2, 0).numpy()
        as_bytes = [(np.clip(a, 0, 1) * 255).round().astype(np.uint8) for a in (checked, out)]
        figure_rows.append(np.concatenate([as_bytes[0], plain[k], as_bytes[1]], 1))
    figure = Image.fromarray(np.concatenate(figure_rows, 0))
    figure = figure.resize((args.width, round(figure.height * args.width / figure.width)),
                           Image.LANCZOS)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    figure.save(args.output, optimize=True)
    print(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
