"""Close-ups of the brows of photos driven by videos: driver | the photo's own brows held (the
driver's raises not transferred, as before the brow rig) | the default, one row per
``photo:driver:frame``. Relative motion from the driver's first frame, as ``retarget`` does.

    python tools/brow_strips.py --pairs s42:d6:532 s42:d6:906 s12:d3:269 d19:d6:532 \
        -o docs/img/brows.png

With ``--held in``, the middle column holds only the photo's own pull of the brows towards each
other (the driver's raises transferred, its frown's pull not: the rig before its third part).

Without a frame, a pair shows the driver's frame whose brows are raised most and the one
whose brows are lowered most (against its first frame). Fits are cached in ``--cache``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from render_strips import DATA, cached_driver


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", required=True, help="photo:driver[:frame]")
    parser.add_argument("--width", type=int, default=320, help="tile width in pixels")
    parser.add_argument("--held", choices=["all", "in"], default="all",
                        help="what the middle column holds at the photo's own: all the brows' "
                        "parts, or only their pull towards each other")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/faceanime_strips_cache"))
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)

    import torch
    from PIL import Image

    from faceanime.io import iter_video_frames
    from faceanime.jobs.common import OutputConfig, load_source
    from faceanime.morphable import load_model
    from faceanime.motion import transfer_motion
    from faceanime.reconstruction import face_vertices, project_vertices
    from faceanime.render.warp import WarpRenderer

    torch.set_num_threads(2)
    model = load_model(DATA / "sfm" / "sfm_shape_3448.bin")
    args.cache.mkdir(parents=True, exist_ok=True)

    def tile(image: np.ndarray, points: np.ndarray) -> np.ndarray:
        """The brows and eyes with the forehead above: a box from the landmarks."""
        width = points[:, 0].max() - points[:, 0].min()
        cx, cy = points[17:48].mean(0)
        half = int(0.55 * width)
        top, bottom = max(int(cy) - half, 0), int(cy) + half // 2
        left = max(int(cx) - half, 0)
        box = np.ascontiguousarray(image[top:bottom, left:int(cx) + half])
        height = round(args.width * box.shape[0] / box.shape[1])
        return np.asarray(Image.fromarray(box).resize((args.width, height), Image.LANCZOS))

    rows = []
    for pair in args.pairs:
        photo, driver, *frame = pair.split(":")
        driving = cached_driver(model, driver, args.cache)
        change = (driving.brows - driving.brows[0]).sum(1)
        frames = [int(frame[0])] if frame else [int(change.argmax()), int(change.argmin())]
        images = {i: f for i, f in enumerate(iter_video_frames(DATA / "videos" /
                                                                f"{driver}.mp4"))
                  if i in frames}
        image, source = load_source(next((DATA / "faces").glob(f"{photo}.*")), model,
                                    OutputConfig(size=512))
        renderer = WarpRenderer(model, image, source)
        target = transfer_motion(source, driving, model=model).frames(frames)
        own = source.brows.expand(len(frames), -1)
        held = replace(target, brows=own.clone() if args.held == "all" else torch.cat(
            [target.brows[:, :4], own[:, 4:]], 1))
        outputs = [(renderer.render(t).clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1)
                   .numpy() for t in (held, target)]
        points = project_vertices(target, face_vertices(model, target))[
            :, model.landmark_indices, :2].numpy()
        for k, f in enumerate(frames):
            row = [tile(images[f], driving.landmarks[f].numpy())]
            row += [tile(o[k], points[k]) for o in outputs]
            height = min(r.shape[0] for r in row)
            rows.append(np.concatenate([r[:height] for r in row], 1))
            print(f"{photo} by {driver} {f}: raises {driving.brows[f].tolist()} "
                  f"(first frame {driving.brows[0].tolist()})")
    width = max(r.shape[1] for r in rows)
    Image.fromarray(np.concatenate([np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)))
                                    for r in rows], 0)).save(args.output)
    print(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
