"""Time `faceanime prepare` locally and with `--ray` (a fresh local Ray each run) on the inputs
of tests/test_prepare_ray.py: d0, the first 40 frames of d3 and d18, 64-px crops.

Each command runs in a fresh process; the table gives the whole process's wall time and the
run's own time (the summary line's, from reading the inputs to the last manifest save, so
without Python's start-up; with --ray it includes starting Ray and its workers).

    python tools/bench_prepare_ray.py [--data ../shared/data] [--repeat 2]
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from faceanime.io import iter_video_frames, read_video_info, write_video

REPO = Path(__file__).resolve().parents[1]


def make_clips(data: Path, folder: Path) -> None:
    """The test's three videos: d0 linked, d3 and d18 cut to their first 40 frames."""
    (folder / "d0.mp4").symlink_to(data / "videos" / "d0.mp4")
    for name in ("d3", "d18"):
        source = data / "videos" / f"{name}.mp4"
        write_video(folder / f"{name}_40.mp4", itertools.islice(iter_video_frames(source), 40),
                    fps=read_video_info(source).fps)


def run(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(process wall seconds, the run's own seconds from its summary line)."""
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "faceanime", *args], env=env, check=True,
                          capture_output=True, text=True)
    wall = time.monotonic() - start
    own = re.search(r"\(([\d.]+) s\)", done.stdout)
    return wall, float(own.group(1)) if own else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--repeat", type=int, default=2)
    opts = parser.parse_args()
    model = str(opts.data / "sfm" / "sfm_shape_3448.bin")
    # One torch thread per process, as each Ray task gets (OMP_NUM_THREADS=1).
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        clips = Path(tmp, "clips")
        clips.mkdir()
        make_clips(opts.data, clips)
        for attempt in range(opts.repeat):
            for mode, extra in (("local", []), ("--ray (local Ray, 2 CPUs)", ["--ray"])):
                out = Path(tmp, f"ds_{attempt}_{len(extra)}")
                wall, own = run(["prepare", str(clips), "-o", str(out), "--model", model,
                                 "--crop-size", "64", "--no-progress", *extra], env)
                rows.append((attempt + 1, mode, wall, own))
    print(f"{'run':>3}  {'mode':<26} {'process s':>9} {'prepare s':>9}")
    for attempt, mode, wall, own in rows:
        print(f"{attempt:>3}  {mode:<26} {wall:>9.1f} {own:>9.1f}")


if __name__ == "__main__":
    main()
