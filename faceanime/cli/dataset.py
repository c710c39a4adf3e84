"""``faceanime dataset shard``: a prepared dataset folder (or several) -> tar shards in the
webdataset layout with an ``index.json``, which the trainers stream from (docs/dataset.md,
"Shards")."""

from __future__ import annotations

import argparse
from pathlib import Path

from faceanime.dataset.shards import DEFAULT_SHARD_MB, write_shards


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``dataset`` command group."""
    p = sub.add_parser("dataset", help="convert prepared datasets (tar shards for streaming)",
                       description="Work on datasets written by 'faceanime prepare'.")
    what = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    s = what.add_parser(
        "shard", help="write prepared datasets as tar shards with an index",
        description="Write the ok videos of prepared dataset folders as tar shards in the "
                    "webdataset layout (one sample per video: <key>.json, "
                    "<key>.coefficients.npz, <key>.crops.mp4, <key>.crops.npz, the files byte "
                    "for byte), in a seeded random order, each shard at most --shard-size MB, "
                    "and SHARD_DIR/index.json written last. 'faceanime train dynamics|generator "
                    "--data SHARD_DIR' (or a URL of a copy, through fsspec) then streams with "
                    "bounded memory, each process on its own shards (docs/dataset.md, "
                    "docs/scale.md).")
    s.add_argument("inputs", nargs="+", type=Path, metavar="DATASET_DIR",
                   help="prepared dataset folders (parts made with 'prepare --shard I/N' need "
                        "no merging first)")
    s.add_argument("-o", "--output", required=True, metavar="SHARD_DIR|URL",
                   help="folder for the shards and index.json, local or any URL fsspec writes "
                        "to (s3://..., with the protocol's package installed); created, must "
                        "not hold finished shards")
    s.add_argument("--shard-size", type=float, default=DEFAULT_SHARD_MB, metavar="MB",
                   help="most megabytes per shard; a larger video gets a shard of its own "
                        "(default: %(default)g)")
    s.add_argument("--seed", type=int, default=0,
                   help="seeds the order of the videos over the shards (default: %(default)s)")
    s.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    s.set_defaults(func=run_shard)


def run_shard(args: argparse.Namespace) -> None:
    index = write_shards(args.inputs, args.output, args.shard_size, args.seed,
                         progress=not args.no_progress)
    total = sum(s.bytes for s in index.shards)
    videos = sum(len(s.samples) for s in index.shards)
    print(f"{videos} videos ({index.frames} frames) in {len(index.shards)} shards, "
          f"{total / 1e6:.1f} MB -> {args.output}")
