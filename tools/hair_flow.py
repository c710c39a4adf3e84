"""How well the warp's motion outside the face matches the real hair's, on the shared videos.

Self-reenactment geometry: each video's frame 0 is the photo, every ``--stride``-th frame a
target. The evidence is the video's own optical flow (OpenCV's DIS, kept where the forward and
backward flows agree within 2 px) over the photo's segmented head carried into the frame, minus
the fitted face (dilated): the hair, the ears, the neck beside the jaw. Prints the mean end-point
error (pixels) of the warp's backward flow there for each variant of ``tools/compare_warp.py``,
and for no motion at all. The ``*_follow`` defaults of ``WarpConfig`` were chosen on this table.

    python tools/hair_flow.py [--videos d0 d3 d6 d18] [--stride 8]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("FACEANIME_TEST_DATA", REPO.parent / "shared" / "data"))


def evidence(frames: np.ndarray, face_outlines: list[np.ndarray], head: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """The video's backward flow to frame 0 ``(T, H, W, 2)`` for frames ``1..T`` and where it is
    trusted hair ``(T, H, W)`` bool."""
    import cv2

    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    h, w = frames.shape[1:3]
    grid = np.stack(np.meshgrid(np.arange(w), np.arange(h)), -1).astype(np.float32)
    first = cv2.cvtColor(frames[0], cv2.COLOR_RGB2GRAY)
    flows, masks = [], []
    for frame, outline in zip(frames[1:], face_outlines, strict=True):
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        back = dis.calc(grey, first, None)
        forward = dis.calc(first, grey, None)
        there = grid + back
        trust = np.linalg.norm(back + cv2.remap(forward, there[..., 0], there[..., 1],
                                                cv2.INTER_LINEAR), axis=-1) < 2.0
        in_head = cv2.remap(head.astype(np.float32), there[..., 0], there[..., 1],
                            cv2.INTER_LINEAR) > 0.5
        face = np.zeros((h, w), np.uint8)
        cv2.fillConvexPoly(face, cv2.convexHull(outline.astype(np.float32)).astype(np.int32), 1)
        beside = cv2.dilate(face, np.ones((9, 9), np.uint8)) == 0
        flows.append(back)
        masks.append(trust & in_head & beside)
    return np.stack(flows), np.stack(masks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", nargs="+", default=["d0", "d3", "d6", "d18"])
    parser.add_argument("--stride", type=int, default=8)
    args = parser.parse_args(argv)

    import torch
    from compare_warp import VARIANTS

    from faceanime.fitting import FitConfig, fit_landmarks
    from faceanime.io import iter_video_frames
    from faceanime.landmarks import TrackerConfig, track_video
    from faceanime.morphable import load_model
    from faceanime.reconstruction import face_vertices, project_vertices
    from faceanime.render.head_mask import head_mask
    from faceanime.render.warp import WarpConfig, WarpRenderer

    model = load_model(DATA / "sfm" / "sfm_shape_3448.bin")
    variants = {name: WarpConfig(**changes) for name, changes in VARIANTS.items()}
    errors: dict[str, list[float]] = {name: [] for name in [*variants, "no motion"]}
    for name in args.videos:
        path = DATA / "videos" / f"{name}.mp4"
        frames = np.stack(list(iter_video_frames(path))[::args.stride])
        track = track_video(path, TrackerConfig(progress=False))
        points = torch.from_numpy(track.points[::args.stride])
        # Frames a stride apart: no temporal term linking them.
        coeffs = fit_landmarks(model, points, frames.shape[1:3], FitConfig(temporal_weight=0.0))
        screen = project_vertices(coeffs, face_vertices(model, coeffs))[..., :2].numpy()
        head = head_mask(frames[0], screen[0].astype(np.float64))
        flows, masks = evidence(frames, list(screen[1:]), head)
        h, w = frames.shape[1:3]
        grid = np.stack(np.meshgrid(np.arange(w), np.arange(h)), -1).astype(np.float32)
        for variant, config in [*variants.items(), ("no motion", None)]:
            total, count = 0.0, 0
            renderer = (WarpRenderer(model, frames[0], coeffs.frames([0]), config)
                        if config is not None else None)
            for start in range(1, len(frames), 8):
                ks = list(range(start, min(start + 8, len(frames))))
                flow = np.zeros((len(ks), h, w, 2), np.float32)
                if renderer is not None:
                    (x0, y0, x1, y1), positions, _ = renderer.flow(coeffs.frames(ks))
                    flow[:, y0:y1, x0:x1] = (positions.permute(0, 2, 3, 1).numpy()
                                             - grid[y0:y1, x0:x1])
                for j, k in enumerate(ks):
                    mask = masks[k - 1]
                    total += float(np.linalg.norm(flow[j] - flows[k - 1], axis=-1)[mask].sum())
                    count += int(mask.sum())
            errors[variant].append(total / max(count, 1))
        print(f"done: {name}", file=sys.stderr)
    print(f"Hair flow error (px, mean end-point error against the video's optical flow), "
          f"every {args.stride}th frame\n")
    print("| variant | " + " | ".join(args.videos) + " | mean |")
    print("| --- | " + " | ".join("---" for _ in args.videos) + " | --- |")
    for variant, values in errors.items():
        print(f"| {variant} | " + " | ".join(f"{v:.2f}" for v in values)
              + f" | {np.mean(values):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
