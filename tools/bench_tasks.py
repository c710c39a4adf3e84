"""End-to-end speed of ``faceanime retarget`` (classic renderer) with its per-stage split.

For each output size (an aligned square face crop, ``--no-paste-back --size S``) it runs the
stages one after another on the same inputs and times each: decode (the driving video's frames),
landmarks (tracking, decode excluded), fit (the 3DMM fit of the driver), render (the classic
render and paste of every frame), encode (H.264). Then it times the whole job as a user runs it
(``faceanime.retarget.retarget``, streaming) and reports its frames per second.

    PYTHONPATH=. OMP_NUM_THREADS=1 python tools/bench_tasks.py [--sizes 256 512] [--threads 1]

Prints a Markdown table (docs/performance.md holds the results with the machine they ran on).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("FACEANIME_TEST_DATA", REPO.parent / "shared" / "data"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=str(DATA / "faces" / "s1.jpg"))
    parser.add_argument("--driving", default=str(DATA / "videos" / "d3.mp4"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    os.environ.setdefault("FACEANIME_MODEL_DIR", str(DATA / "sfm"))

    import torch

    from faceanime.fitting import fit_landmarks
    from faceanime.io import iter_video_frames, read_video_info, write_video
    from faceanime.landmarks import TrackerConfig, track_video
    from faceanime.morphable import load_model
    from faceanime.motion import transfer_motion
    from faceanime.retarget import RetargetConfig, retarget
    from faceanime.tasks import OutputConfig, load_source, make_renderer

    torch.set_num_threads(args.threads)
    model = load_model("sfm")
    info = read_video_info(args.driving)

    start = time.perf_counter()
    n = sum(1 for _ in iter_video_frames(args.driving))
    decode = time.perf_counter() - start
    start = time.perf_counter()
    track = track_video(args.driving, TrackerConfig(progress=False))
    landmarks = time.perf_counter() - start - decode
    start = time.perf_counter()
    driving = fit_landmarks(model, torch.from_numpy(track.points), info.size[::-1], fps=info.fps)
    fit = time.perf_counter() - start

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            config = OutputConfig(paste_back=False, size=size, progress=False)
            image, source = load_source(args.source, model, config)
            target = transfer_motion(source, driving)
            renderer = make_renderer(model, image, source, config)
            start = time.perf_counter()
            frames = list(renderer.iter_frames(target))
            render = time.perf_counter() - start
            start = time.perf_counter()
            write_video(Path(tmp) / "enc.mp4", frames, info.fps, audio_from=args.driving)
            encode = time.perf_counter() - start
            del frames
            start = time.perf_counter()
            result = retarget(args.source, args.driving, Path(tmp) / "job.mp4",
                              RetargetConfig(output=config))
            total = time.perf_counter() - start
            stages = {"decode": decode, "landmarks": landmarks, "fit": fit, "render": render,
                      "encode": encode}
            rows.append((size, stages, result.frames, total))

    print(f"retarget {Path(args.source).name} by {Path(args.driving).name} ({n} frames), "
          f"classic renderer, {args.threads} torch thread(s); ms per frame by stage\n")
    print("| size | decode | landmarks | fit | render | encode | sum of stages | end to end "
          "| end-to-end fps |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for size, stages, frames, total in rows:
        per = {k: 1000 * v / frames for k, v in stages.items()}
        print(f"| {size}² | " + " | ".join(f"{per[k]:.1f}" for k in stages)
              + f" | {sum(per.values()):.1f} | {1000 * total / frames:.1f} | "
              f"{frames / total:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
