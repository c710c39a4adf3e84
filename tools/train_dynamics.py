"""Train the 3D dynamics predictor: the same entry and flags as ``faceanime train dynamics``.

    python tools/train_dynamics.py --data DATASET_DIR -o CKPT_DIR [--steps 3000 --device cuda ...]

See ``python tools/train_dynamics.py --help`` and docs/dynamics.md (training on a large corpus).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from faceanime.cli import EXIT_ERROR
from faceanime.cli.train import add_arguments, run
from faceanime.errors import FaceAnimeError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="train_dynamics.py",
                                     description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        run(args)
    except FaceAnimeError as exc:
        print(f"train_dynamics.py: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
