"""Speed of ``faceanime swap``: the renderer's set-up and per-frame cost alone, then the whole
job as a user runs it (tracking, fitting, swapping, encoding with the target's audio).

    PYTHONPATH=. python tools/bench_swap.py [--source s12] [--target d3] [--repeat 3]

Prints a Markdown table (docs/performance.md holds the results with the machine they ran on);
the job's time is the median of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("FACEANIME_TEST_DATA", REPO.parent / "shared" / "data"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="s12", help="photo in faces/ (default: s12)")
    parser.add_argument("--target", default="d3", help="video in videos/ (default: d3)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seam", action=argparse.BooleanOptionalAction, default=True,
                        help="the seam membrane (default: on)")
    parser.add_argument("--reshape", action=argparse.BooleanOptionalAction, default=True,
                        help="bend the target to the photo's face shape (default: on)")
    args = parser.parse_args()

    import numpy as np
    import torch

    import faceanime
    from faceanime.fitting import fit_image, fit_video
    from faceanime.io import iter_video_frames, read_image
    from faceanime.jobs.common import on_device, prepare
    from faceanime.jobs.swap import SwapConfig, reference_frames
    from faceanime.landmarks import TrackerConfig
    from faceanime.morphable import load_model
    from faceanime.parallel import default_batch
    from faceanime.render.frames import frames_tensor
    from faceanime.render.swap import SwapRenderConfig, SwapRenderer

    torch.set_num_threads(args.threads)
    photo = DATA / "faces" / f"{args.source}.jpg"
    video = DATA / "videos" / f"{args.target}.mp4"
    model = load_model("sfm")
    image = read_image(photo)
    source = fit_image(image, model)
    target = fit_video(video, model, tracker=TrackerConfig(progress=False))
    frames = np.stack(list(iter_video_frames(video)))
    start = time.perf_counter()
    reference, picks = reference_frames(video, target, 8)
    settings = SwapRenderConfig(reshape=args.reshape, seam=args.seam)
    renderer = SwapRenderer(model, image, source, reference, target.frames(picks), settings)
    setup = time.perf_counter() - start
    batch = renderer.config.batch_size or default_batch("cpu", frames.shape[1] * frames.shape[2])
    start = time.perf_counter()
    for s in range(0, len(frames), batch):
        index = list(range(s, min(s + batch, len(frames))))
        renderer.render_frames(frames_tensor(frames[index]), target.frames(index))
    render = (time.perf_counter() - start) / len(frames)

    config = SwapConfig(swap=settings)
    config.output.progress = False
    # The job's steps before its swap loop, as the job takes them: the photo fitted while the
    # target is tracked in background processes, then the target fitted; its reference frames.
    inputs = on_device(replace(config, output=replace(config.output, paste_back=True,
                                                      size=None, generator=None)))
    start = time.perf_counter()
    prepared = prepare(photo, video, inputs, renderer=False)
    fitted = time.perf_counter() - start
    start = time.perf_counter()
    reference_frames(video, prepared.driving, settings.reference_frames)
    references = time.perf_counter() - start
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):
            start = time.perf_counter()
            result = faceanime.swap(photo, video, Path(tmp) / "out.mp4", config)
            times.append(time.perf_counter() - start)
    job = statistics.median(times)
    h, w = frames.shape[1:3]
    print(f"swap {photo.name} onto {video.name} ({len(frames)} frames, {w}×{h}), "
          f"{args.threads} torch thread(s), {os.cpu_count()} cores, reshape "
          f"{'on' if args.reshape else 'off'}, seam {'on' if args.seam else 'off'}\n")
    print("| renderer set-up (textures, masks) | swap, ms per frame | job, s | job fps |")
    print("| --- | --- | --- | --- |")
    print(f"| {setup:.2f} s | {1000 * render:.1f} | {job:.1f} | **{result.frames / job:.1f}** |")
    loop = job - fitted - references - setup
    print("\nWhere the job's time goes (its steps timed alone; the loop is the rest: swapping, "
          "decoding, the blend in order and encoding):\n")
    print("| tracking and fitting, s | reference frames, s | renderer set-up, s | swap loop, s "
          "| loop, ms per frame |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| {fitted:.2f} | {references:.2f} | {setup:.2f} | {loop:.1f} | "
          f"{1000 * loop / len(frames):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
