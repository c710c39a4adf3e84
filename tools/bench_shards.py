"""Peak memory of training from tar shards (streaming) against the folder layout (loaded whole),
as the dataset grows: the shared videos prepared once, repeated 1x and 8x under new stems, each
written as shards; both trainers run a few steps on each, in a fresh process, and the table shows
each run's peak resident memory (``ru_maxrss`` of the child) and time (docs/scale.md).

    python tools/bench_shards.py [--videos ../shared/data/videos] [--work /tmp/faceanime-shards]
                                 [--repeats 1 8] [--trainers dynamics generator]

Everything is written under ``--work`` (outside the repository); the prepared dataset there is
reused by later runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FACEANIME_TEST_DATA", REPO.parent / "shared" / "data"))


def repeated(prepared: Path, out: Path, times: int) -> Path:
    """``prepared``'s videos ``times`` times: copy ``i`` of a video is ``<stem>_r<i>`` (the
    original for ``i = 0``)."""
    if (out / "manifest.json").is_file():
        return out
    manifest = json.loads((prepared / "manifest.json").read_text())
    videos = {}
    for sub in ("coefficients", "crops"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for stem, entry in manifest["videos"].items():
        if entry["status"] != "ok":
            continue
        for i in range(times):
            name = stem if i == 0 else f"{stem}_r{i}"
            for sub, suffix in (("coefficients", ".npz"), ("crops", ".npz"), ("crops", ".mp4")):
                shutil.copy(prepared / sub / f"{stem}{suffix}", out / sub / f"{name}{suffix}")
            videos[name] = entry
    manifest["videos"] = videos
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def run(argv: list[str]) -> tuple[float, float]:
    """Run ``faceanime ARGV`` in a fresh process; its peak RSS (MB) and wall time (s)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "faceanime", *argv], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # wait4 gives this child's own resource usage (getrusage(RUSAGE_CHILDREN) would give the
    # largest of all children so far).
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"faceanime {' '.join(argv)} failed:\n{err[-2000:]}")
    return usage.ru_maxrss / 1024, seconds  # kB on Linux


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=Path, default=DATA / "videos")
    p.add_argument("--model", default=str(DATA / "sfm" / "sfm_shape_3448.bin"))
    p.add_argument("--work", type=Path, default=Path("/tmp/faceanime-shards"))
    p.add_argument("--repeats", type=int, nargs="+", default=[1, 8])
    p.add_argument("--trainers", nargs="+", default=["dynamics", "generator"])
    p.add_argument("--shard-size", type=float, default=2.0, help="MB per shard")
    p.add_argument("--layouts", nargs="+", default=["folder", "shards"])
    args = p.parse_args()

    from faceanime.dataset import PrepareConfig, prepare_dataset
    from faceanime.dataset.shards import write_shards

    prepared = args.work / "prepared"
    if not (prepared / "manifest.json").is_file():
        prepare_dataset([args.videos], prepared, PrepareConfig(model=args.model, crop_size=128,
                                                                progress=False))
    steps = {"dynamics": ["--steps", "30", "--batch", "32", "--val-every", "30"],
             "generator": ["--steps", "6", "--batch", "8", "--tiny", "--val-pairs", "4",
                           "--val-every", "6", "--identity-samples", "1"]}
    rows = []
    for times in args.repeats:
        folder = repeated(prepared, args.work / f"x{times}", times)
        shards = args.work / f"x{times}_shards"
        if not (shards / "index.json").is_file():
            write_shards([folder], shards, args.shard_size, progress=False)
        manifest = json.loads((folder / "manifest.json").read_text())
        frames = sum(e["frames"] for e in manifest["videos"].values())
        size = sum(f.stat().st_size for f in shards.glob("*.tar")) / 1e6
        for trainer in args.trainers:
            for layout in args.layouts:
                data = folder if layout == "folder" else shards
                out = args.work / f"run_{trainer}_{layout}_x{times}"
                shutil.rmtree(out, ignore_errors=True)
                # The same held-out video at every size: validation is held in memory.
                mb, seconds = run(["train", trainer, "--data", str(data), "-o", str(out),
                                   "--model", args.model, "--val-videos", "d0", "--threads", "1",
                                   "--no-progress", *steps[trainer]])
                rows.append((trainer, layout, times, len(manifest["videos"]), frames, size, mb,
                             seconds))
                print(f"{trainer} {layout} x{times}: {mb:.0f} MB, {seconds:.1f} s", flush=True)
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}")
    print("| trainer | data | videos ×, count, frames | shards (MB) | peak RSS (MB) | time (s) |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    for trainer, layout, times, count, frames, size, mb, seconds in rows:
        print(f"| {trainer} | {layout} | {times}×, {count}, {frames} | {size:.1f} | {mb:.0f} | "
              f"{seconds:.1f} |")


if __name__ == "__main__":
    main()
