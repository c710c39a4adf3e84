"""Training speed with 1 and N processes: ``faceanime train dynamics|generator`` run plainly
(1 process) and under ``torchrun --standalone --nproc_per_node N`` on one dataset, the same global
batch; prints steps/s from each run's log.csv (the first step, warm-up, left out).

    python tools/bench_distributed.py --data DATASET_DIR \\
        --model ../shared/data/sfm/sfm_shape_3448.bin

DATASET_DIR is a ``faceanime prepare`` folder with crops (the generator needs them). Results and
the machine they ran on: docs/scale.md.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def run(what: str, processes: int, threads: int, args: argparse.Namespace) -> float:
    """Steps/s of one run (log.csv's ``seconds`` between the first and the last step)."""
    with tempfile.TemporaryDirectory() as tmp:
        flags = ["train", what, "--data", args.data, "-o", tmp, "--steps", str(args.steps),
                 "--no-progress", "--threads", str(threads), "--val-fraction", "0",
                 "--checkpoint-every", str(10 * args.steps)]
        if args.model:
            flags += ["--model", args.model]
        flags += ["--batch", str(args.dynamics_batch if what == "dynamics" else
                                 args.generator_batch)]
        if what == "generator" and args.tiny:
            flags.append("--tiny")
        env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV}
        env["OMP_NUM_THREADS"] = str(threads)
        launch = [sys.executable, "-m", "faceanime"] if processes == 1 else \
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
             str(processes), "-m", "faceanime"]
        subprocess.run(launch + flags, cwd=REPO, env=env, check=True, capture_output=True)
        with open(Path(tmp) / "log.csv") as f:
            seconds = [float(r["seconds"]) for r in csv.DictReader(f)]
    return (len(seconds) - 1) / (seconds[-1] - seconds[0])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="a 'faceanime prepare' folder with crops")
    p.add_argument("--model", help="morphable model (default: the dataset's)")
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                   help="torch threads per process to try")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--dynamics-batch", type=int, default=32)
    p.add_argument("--generator-batch", type=int, default=8)
    p.add_argument("--tiny", action="store_true", help="tiny generator networks")
    p.add_argument("--what", nargs="+", default=["dynamics", "generator"],
                   choices=["dynamics", "generator"])
    args = p.parse_args()
    print(f"{'trainer':10} {'batch':>5} {'processes':>9} {'threads/proc':>12} {'steps/s':>8}")
    for what in args.what:
        batch = args.dynamics_batch if what == "dynamics" else args.generator_batch
        for processes in args.processes:
            for threads in args.threads:
                rate = run(what, processes, threads, args)
                print(f"{what:10} {batch:5d} {processes:9d} {threads:12d} {rate:8.2f}",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
