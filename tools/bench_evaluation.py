"""Benchmark the evaluation's per-frame costs: each metric, dlib landmarks and face counts,
identity descriptors, and the classic and warp2d renders, per frame of a real video
(videos/d3.mp4, 512²) in batches.

Each figure is the median of ``--repeat`` timed calls after one warm-up, divided by the batch.
Prints a table (ms per frame).

    python tools/bench_evaluation.py [--data ../shared/data] [--device cpu] [--threads 1]
                                     [--batch 8] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from timing import median_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared"
                                              / "data"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: default)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from faceanime.evaluation import metrics as M
    from faceanime.evaluation.protocol import (
        EvalConfig,
        Scorer,
        Warp2D,
        to_tensor,
        to_uint8,
        viewer_summary,
    )
    from faceanime.fitting.fitter import fit_landmarks
    from faceanime.io import iter_video_frames
    from faceanime.morphable import load_model
    from faceanime.render.classic import ClassicRenderer

    device = torch.device(args.device)
    video = Path(args.data) / "videos" / "d3.mp4"
    frames = []
    for i, f in enumerate(iter_video_frames(video)):
        if i % 10 == 0:
            frames.append(f)
        if len(frames) == args.batch + 1:
            break
    source, batch = frames[0], np.stack(frames[1:])
    gt = to_tensor(batch, device)
    out = to_tensor(np.repeat(source[None], len(batch), 0), device)
    scorer = Scorer(device)
    points = scorer.landmarks(batch)
    model = load_model(Path(args.data) / "sfm" / "sfm_shape_3448.bin", device=device)
    coeffs = fit_landmarks(model, torch.cat([scorer.landmarks(source[None]), points]),
                           source.shape[:2])
    renderer = ClassicRenderer(model, source, coeffs.frames([0]))
    target = coeffs.frames(slice(1, None))
    source_points = scorer.landmarks(source[None])[0]
    warp = Warp2D(source, source_points, source_points, device)
    faces = torch.ones(len(batch), dtype=torch.long)

    rows = [
        ("L1", lambda: M.l1(out, gt)),
        ("PSNR", lambda: M.psnr(out, gt)),
        ("SSIM (11×11 Gaussian, per channel)", lambda: M.ssim(out, gt)),
        ("dlib landmarks (detect + 68 points)", lambda: scorer.landmarks(batch)),
        ("dlib landmarks + face count", lambda: scorer.detect(batch)),
        ("identity descriptor (torch)", lambda: scorer.embed(gt, points.to(device))),
        ("classic render + 8-bit", lambda: to_uint8(renderer.render(target))),
        ("warp2d render + 8-bit", lambda: warp.render(points)),
        ("viewer metrics (per video, / frames)",
         lambda: viewer_summary(points, faces, points, 1, EvalConfig())),
    ]
    n = len(batch)
    print(f"d3.mp4 {batch.shape[2]}×{batch.shape[1]}, batch {n}, device {device}, "
          f"{torch.get_num_threads()} thread(s), {os.cpu_count()} cores")
    print(f"| {'step':<38} | ms/frame |")
    print(f"|{'-' * 40}|----------|")
    for name, fn in rows:
        ms = 1000 * median_seconds(fn, args.repeat, device) / n
        print(f"| {name:<38} | {ms:8.1f} |")
    scorer.close()


if __name__ == "__main__":
    main()
