"""End-to-end speed of ``faceanime retarget`` (``--renderer``: warp, the default, or mask) with
its per-stage split.

For each output size (an aligned square face crop, ``--no-paste-back --size S``) it times each
stage alone on the same inputs: decode (the driving video's frames), landmarks (tracking,
decode included; one pass, then in parts at once, one per core as the jobs do), fit (the 3DMM
fit of the driver), render (the render of every frame; one worker thread, then the default),
encode
(H.264 with the driver's audio). Then it times the whole job as a user runs it
(``faceanime.jobs.retarget.retarget``, streaming, default settings: the driver tracked in one
process per core while the photo is prepared, batches rendered on one thread per torch thread while
the encoder works) and, for comparison, with everything one after the other
(``track_parts=1``, one render worker).

    PYTHONPATH=. python tools/bench_tasks.py [--sizes 256 512] [--threads 2] [--repeat 3]
        [--device cpu|cuda]

Prints a Markdown table (docs/performance.md holds the results with the machine they ran on);
the end-to-end times are the median of ``--repeat`` runs.
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


def _seconds(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=str(DATA / "faces" / "s1.jpg"))
    parser.add_argument("--driving", default=str(DATA / "videos" / "d3.mp4"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--repeat", type=int, default=3, help="end-to-end runs per size")
    parser.add_argument("--renderer", choices=["warp", "mask"], default="warp")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    args = parser.parse_args(argv)
    os.environ.setdefault("FACEANIME_MODEL_DIR", str(DATA / "sfm"))
    # As the CLI does: idle OpenMP threads sleep instead of spinning (see faceanime.cli).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    import torch

    from faceanime.devices import resolve_device
    from faceanime.fitting import fit_landmarks
    from faceanime.io import iter_video_frames, read_video_info, video_encoder, write_video
    from faceanime.landmarks import TrackerConfig, track_video
    from faceanime.morphable import load_model
    from faceanime.motion import transfer_motion
    from faceanime.parallel import default_track_parts
    from faceanime.render.classic import ClassicConfig
    from faceanime.render.warp import WarpConfig

    def with_workers(config: OutputConfig, workers: int) -> OutputConfig:
        return replace(config, render=ClassicConfig(workers=workers),
                       warp=WarpConfig(workers=workers))
    from faceanime.jobs.common import OutputConfig, load_source, make_renderer
    from faceanime.jobs.retarget import RetargetConfig, retarget

    torch.set_num_threads(args.threads)
    device = str(resolve_device(args.device))
    parts = default_track_parts()
    model = load_model("sfm", device=device)
    info = read_video_info(args.driving)
    n = sum(1 for _ in iter_video_frames(args.driving))
    decode = _seconds(lambda: sum(1 for _ in iter_video_frames(args.driving)))
    quiet = TrackerConfig(progress=False)
    track = track_video(args.driving, quiet)
    landmarks = _seconds(lambda: track_video(args.driving, quiet))
    landmarks_parts = _seconds(lambda: track_video(args.driving, replace(quiet, parts=parts)))
    fit = _seconds(lambda: fit_landmarks(model, torch.from_numpy(track.points), info.size[::-1],
                                         fps=info.fps))
    driving = fit_landmarks(model, torch.from_numpy(track.points), info.size[::-1], fps=info.fps)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            config = OutputConfig(paste_back=False, size=size, progress=False,
                                  renderer=args.renderer, device=device)
            image, source = load_source(args.source, model, config)
            target = transfer_motion(source, driving, model=model)
            renders = {}
            for workers in (1, 0):
                renderer = make_renderer(model, image, source, with_workers(config, workers))
                renders[workers] = _seconds(lambda r=renderer, t=target: sum(
                    1 for _ in r.iter_frames(t)))
            frames = list(renderer.iter_frames(target))
            encode = _seconds(lambda f=frames: write_video(Path(tmp) / "enc.mp4", f, info.fps,
                                                           audio_from=args.driving,
                                                           encoder=video_encoder(device)))
            del frames
            ends = {}
            serial = RetargetConfig(output=with_workers(config, 1), track_parts=1)
            for name, job in (("default", RetargetConfig(output=config)), ("serial", serial)):
                times = []
                for _ in range(args.repeat):
                    start = time.perf_counter()
                    result = retarget(args.source, args.driving, Path(tmp) / "job.mp4", job)
                    times.append(time.perf_counter() - start)
                ends[name] = statistics.median(times)
            rows.append((size, result.frames, decode, landmarks, landmarks_parts, fit,
                         renders[1], renders[0], encode, ends["serial"], ends["default"]))

    print(f"retarget {Path(args.source).name} by {Path(args.driving).name} ({n} frames), "
          f"{args.renderer} renderer on {device} (encoder {video_encoder(device)}), "
          f"{args.threads} torch thread(s), {os.cpu_count()} cores; "
          f"ms per frame by stage (each alone), then the whole job (median of {args.repeat})\n")
    print(f"| size | decode | landmarks, 1 pass / {parts} parts | fit | render, 1 worker / default "
          "| encode | job, all serial | job, default | job fps |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for (size, frames, dec, lm1, lm2, fit_s, r1, r0, enc, serial_s, total) in rows:
        ms = [1000 * v / frames for v in (dec, lm1, lm2, fit_s, r1, r0, enc, serial_s, total)]
        print(f"| {size}² | {ms[0]:.1f} | {ms[1]:.1f} / {ms[2]:.1f} | {ms[3]:.1f} | "
              f"{ms[4]:.1f} / {ms[5]:.1f} | {ms[6]:.1f} | {ms[7]:.1f} | {ms[8]:.1f} | "
              f"**{frames / total:.1f}** |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
