"""Train the prior-guided generator (PGFG): the same flags as ``faceanime train generator``.

    PYTHONPATH=. FACEANIME_MODEL_DIR=../shared/data/sfm OMP_NUM_THREADS=2 \\
        python tools/train_generator.py --data /tmp/pgfg_ds -o runs/pgfg --val-videos d18 \\
        --threads 2 --max-minutes 40

Held-out evaluation of a trained checkpoint (self-reenactment of its validation videos from
their first frame, against the classic dense render and copying the source):

    python tools/train_generator.py --evaluate runs/pgfg/generator.safetensors --data /tmp/pgfg_ds

See docs/pgfg.md for the settings of the run reported there and for training at scale.
"""

from __future__ import annotations

import argparse
import sys

from faceanime.cli.train import add_generator_arguments, run_generator
from faceanime.errors import FaceAnimeError


def evaluate(argv: list[str]) -> None:
    import json

    from faceanime.pgfg.train import heldout_report

    parser = argparse.ArgumentParser(description="held-out evaluation of a generator")
    parser.add_argument("--evaluate", required=True, metavar="CKPT")
    parser.add_argument("--data", required=True)
    parser.add_argument("--videos", nargs="+", help="default: the checkpoint's validation videos")
    parser.add_argument("--every", type=int, default=1, help="score every N-th target frame")
    parser.add_argument("--raw", action="store_true",
                        help="score the raw trained weights instead of their EMA")
    parser.add_argument("-o", "--output", help="also write the report here as JSON")
    args = parser.parse_args(argv)
    report = heldout_report(args.evaluate, args.data, args.videos, args.every, ema=not args.raw)
    print(f"{int(report['frames']['count'])} held-out frames")
    print(f"{'method':10} {'L1':>8} {'identity':>9}")
    for name in ("generator", "warp", "classic", "source"):
        print(f"{name:10} {report[name]['l1']:8.4f} {report[name]['identity']:9.3f}")
    if args.output:
        from faceanime.io.atomic import atomic_path

        with atomic_path(args.output) as tmp:
            tmp.write_text(json.dumps(report, indent=1) + "\n")


def main() -> int:
    try:
        if "--evaluate" in sys.argv[1:]:
            evaluate(sys.argv[1:])
            return 0
        parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
        add_generator_arguments(parser)
        args = parser.parse_args()
        run_generator(args)
    except FaceAnimeError as exc:
        print(f"train_generator: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
