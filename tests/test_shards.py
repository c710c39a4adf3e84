"""Tar shards of a prepared dataset and the trainers' streaming readers
(faceanime.dataset.shards, docs/dataset.md "Shards", docs/scale.md), on real data: d0 prepared
with 128-px crops, plus copies under other stems (one with dots, which webdataset keys must
encode) so that there are several videos and shards."""

from __future__ import annotations

import collections
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import assert_one_line_error, prepare_d0, run_cli

from faceanime.coefficients import Coefficients
from faceanime.dataset.shards import (
    INDEX,
    ShardSource,
    assign_shards,
    epoch_samples,
    find_samples,
    is_shard_source,
    load_index,
    read_shard,
    sample_key,
    shuffled,
    write_shards,
)
from faceanime.errors import InputError, ShardError

COPIES = ("d0b", "d0c", "d0.v2", "d0%e", "d0f")
LIMIT_MB = 0.4  # two d0 samples (~175 kB each) per shard


@pytest.fixture(scope="module")
def dataset(data_dir, tmp_path_factory) -> Path:
    """d0 prepared with 128-px crops and five copies under other stems (six videos)."""
    return prepare_d0(data_dir, tmp_path_factory.mktemp("shards") / "dataset", COPIES)


@pytest.fixture(scope="module")
def shards(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards") / "shards"
    write_shards([dataset], out, LIMIT_MB, progress=False)
    return out


STEMS = sorted(("d0", *COPIES))


def test_shards_hold_the_folder_byte_for_byte(dataset, shards):
    from faceanime.pgfg.data import read_crops

    index = load_index(shards)
    assert is_shard_source(shards) and not is_shard_source(dataset)
    assert index.stems == STEMS and index.model == "sfm" and index.crop_size == 128
    assert index.frames == 78 * len(STEMS)
    # The size limit holds for every shard (no video alone exceeds it), and no shard could have
    # taken its successor's first sample: shards are filled, not one video each.
    limit = int(LIMIT_MB * 1e6)
    assert index.shard_bytes == limit
    assert len(index.shards) == 3 and all(len(s.samples) == 2 for s in index.shards)
    for shard in index.shards:
        assert (shards / shard.name).stat().st_size == shard.bytes <= limit
    # Members are named webdataset-style: <key>.<ext>, the key without dots.
    listed = json.loads((shards / INDEX).read_text())
    keys = {v["stem"]: v["key"] for s in listed["shards"] for v in s["samples"]}
    assert keys["d0.v2"] == "d0%2Ev2" == sample_key("d0.v2") and keys["d0%e"] == "d0%25e"
    source = ShardSource(shards)
    seen = []
    crops0 = read_crops(dataset / "crops" / "d0.mp4", 78, 128)
    for shard in index.shards:
        for sample in read_shard(source, shard):
            seen.append(sample.stem)
            stem = sample.stem
            assert sample.files["coefficients.npz"] == \
                (dataset / "coefficients" / f"{stem}.npz").read_bytes()
            assert sample.files["crops.mp4"] == (dataset / "crops" / f"{stem}.mp4").read_bytes()
            assert sample.files["crops.npz"] == (dataset / "crops" / f"{stem}.npz").read_bytes()
            coeffs = sample.coefficients()
            folder = Coefficients.load(dataset / "coefficients" / f"{stem}.npz")
            for name in ("shape", "expression", "rotation", "translation", "scale", "landmarks",
                         "valid"):
                assert torch.equal(getattr(coeffs, name), getattr(folder, name)), name
            assert sample.meta["frames"] == 78
            assert torch.equal(sample.crops(128), crops0)
            assert torch.equal(sample.crops(128, [40, 3]), crops0[[40, 3]])
            meta = sample.crop_meta()
            assert np.array_equal(meta["affine"], np.load(dataset / "crops" / f"{stem}.npz")
                                  ["affine"])
    assert sorted(seen) == STEMS
    # The same dataset gives the same shards, byte for byte (fixed member metadata).
    again = shards.parent / "again"
    write_shards([dataset], again, LIMIT_MB, progress=False)
    assert all((again / s.name).read_bytes() == (shards / s.name).read_bytes()
               for s in index.shards)


def test_shards_stream_from_an_fsspec_url(dataset, shards):
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    for path in shards.iterdir():
        fs.pipe(f"/test-shards/{path.name}", path.read_bytes())
    try:
        index = load_index("memory://test-shards")
        assert is_shard_source("memory://test-shards") and index.stems == STEMS
        got = find_samples(index, ["d0.v2", "d0"], crops=False)
    finally:
        fs.rm("/test-shards", recursive=True)
    assert [s.stem for s in got] == ["d0.v2", "d0"] and "crops.mp4" not in got[0].files
    assert got[0].files["coefficients.npz"] == \
        (dataset / "coefficients" / "d0.v2.npz").read_bytes()


def test_shards_are_written_straight_to_an_fsspec_url(dataset, shards):
    """The same shards, byte for byte, written to a URL (fsspec's memory file system): uploaded
    under a temporary name and moved, the index last; an interrupted run's leftovers removed,
    a finished folder refused."""
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    fs.pipe("/written-shards/shard-000009.tar", b"left over")
    try:
        index = write_shards([dataset], "memory://written-shards", LIMIT_MB, progress=False)
        names = sorted(p.rsplit("/", 1)[1] for p in fs.ls("/written-shards", detail=False))
        local = load_index(shards)
        assert names == sorted([s.name for s in local.shards] + [INDEX])
        for shard in local.shards:
            assert fs.cat(f"/written-shards/{shard.name}") == (shards / shard.name).read_bytes()
        assert [s.bytes for s in index.shards] == [s.bytes for s in local.shards]
        again = load_index("memory://written-shards")
        assert again.stems == STEMS and again.location == "memory://written-shards"
        with pytest.raises(InputError, match="holds finished shards"):
            write_shards([dataset], "memory://written-shards", LIMIT_MB, progress=False)
    finally:
        fs.rm("/written-shards", recursive=True)


def test_a_video_larger_than_the_limit_gets_its_own_shard(dataset, tmp_path):
    index = write_shards([dataset], tmp_path / "s", 0.1, progress=False)
    assert [len(s.samples) for s in index.shards] == [1] * len(STEMS)
    with pytest.raises(InputError, match="holds finished shards"):
        write_shards([dataset], tmp_path / "s", 0.1, progress=False)


def test_each_rank_and_worker_reads_its_own_shards(shards):
    index = load_index(shards)
    for world, workers in ((2, 1), (1, 3), (3, 1)):
        parts = [assign_shards(len(index.shards), r, world, w, workers)
                 for r in range(world) for w in range(workers)]
        assert sorted(i for p in parts for i in p) == list(range(len(index.shards)))
        stems = [[s.stem for s in epoch_samples(index, p, random.Random(0), crops=False)]
                 for p in parts]
        # Disjoint, and together every video once.
        assert sorted(s for part in stems for s in part) == STEMS
    with pytest.raises(InputError, match=r"3 shard.* 2 process.* 2 loader worker"):
        assign_shards(3, 0, 2, 0, 2)


class Counted:
    """An iterable that records how many items were taken from it."""

    def __init__(self, items):
        self.items, self.taken = list(items), 0

    def __iter__(self):
        for item in self.items:
            self.taken += 1
            yield item


@pytest.mark.parametrize("size", [1, 3, 50, 5000])
def test_the_shuffle_buffer_yields_each_sample_once_and_holds_at_most_its_size(size):
    items = Counted(range(1000))
    out = []
    for value in shuffled(items, size, random.Random(1)):
        # Taken but not yet given back: the buffer's items and the one being handed over.
        assert items.taken - len(out) <= size + 1
        out.append(value)
    assert sorted(out) == list(range(1000))
    assert (out != list(range(1000))) == (size > 1)


def test_the_shuffle_buffer_over_an_epoch_of_shards(shards):
    index = load_index(shards)
    rng = random.Random(0)
    epochs = [list(shuffled((s.stem for s in epoch_samples(index, range(3), rng, crops=False)),
                            3, rng)) for _ in range(3)]
    for epoch in epochs:
        assert collections.Counter(epoch) == collections.Counter(STEMS)
    assert len({tuple(e) for e in epochs}) > 1  # a new order each epoch


def _copy(shards: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(shards, out)
    return out


def test_a_truncated_or_corrupt_shard_is_a_one_line_error_naming_it(shards, tmp_path, data_dir,
                                                                    capsys):
    index = load_index(shards)
    bad = _copy(shards, tmp_path)
    name = index.shards[1].name
    data = (bad / name).read_bytes()
    (bad / name).write_bytes(data[:len(data) // 2])
    args = ["train", "dynamics", "--data", str(bad), "-o", str(tmp_path / "o"), "--steps", "2",
            "--batch", "2", "--hidden", "8", "--vertex-count", "16", "--no-progress",
            "--val-videos", "d0", "--model", str(data_dir / "sfm" / "sfm_shape_3448.bin"),
            "--shuffle-buffer", "4"]
    status, _, err = run_cli(capsys, *args)
    assert_one_line_error(status, err, f"{bad}/{name}", "truncated")
    # Truncated with the index edited to match: the tar itself ends early.
    listed = json.loads((bad / INDEX).read_text())
    listed["shards"][1]["bytes"] = len(data) // 2
    (bad / INDEX).write_text(json.dumps(listed))
    with pytest.raises(ShardError, match=f"{name}.*(truncated|holds 1 of the 2)"):
        list(read_shard(ShardSource(bad), load_index(bad).shards[1]))
    # Same size, a member's bytes overwritten: that member is named.
    (bad / name).write_bytes(data)
    listed["shards"][1]["bytes"] = len(data)
    (bad / INDEX).write_text(json.dumps(listed))
    first = index.shards[1].samples[0].stem
    with open(bad / name, "r+b") as fh:
        fh.seek(512 * 3 + 100)  # inside the first sample's coefficient file
        fh.write(b"\xff" * 200)
    with pytest.raises(ShardError, match=f"{name}:{sample_key(first)}.coefficients.npz"):
        for sample in read_shard(ShardSource(bad), load_index(bad).shards[1]):
            sample.coefficients()
    # A header overwritten: not a tar any more.
    with open(bad / name, "r+b") as fh:
        fh.write(b"\x00garbage" * 64)
    with pytest.raises(ShardError, match=f"{name}: not a readable tar shard"):
        list(read_shard(ShardSource(bad), load_index(bad).shards[1]))
    (bad / INDEX).write_text("{not json")
    status, _, err = run_cli(capsys, *args)
    assert_one_line_error(status, err, f"{bad}/{INDEX}", "not a readable shard index")


def test_the_shard_command(dataset, tmp_path, capsys):
    status, out, err = run_cli(capsys, "dataset", "shard", str(dataset), "-o",
                               str(tmp_path / "s"), "--shard-size", "0.4", "--no-progress")
    assert status == 0, err
    assert out.strip().startswith(f"{len(STEMS)} videos ({78 * len(STEMS)} frames) in 3 shards")
    status, _, err = run_cli(capsys, "dataset", "shard", str(tmp_path / "s"), "-o",
                             str(tmp_path / "t"))
    assert_one_line_error(status, err, "holds shards already")


def _log(out: Path) -> list[dict[str, str]]:
    import csv

    with open(out / "log.csv") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("workers", [0, 2])
def test_dynamics_trains_from_shards(shards, data_dir, tmp_path, capsys, workers):
    out = tmp_path / "out"
    status, _, err = run_cli(
        capsys, "train", "dynamics", "--data", str(shards), "-o", str(out), "--steps", "3",
        "--batch", "4", "--hidden", "8", "--vertex-count", "32", "--val-every", "3",
        "--val-videos", "d0.v2", "--no-progress", "--threads", "1", "--shuffle-buffer", "16",
        "--stream-windows", "4", "--workers", str(workers),
        "--model", str(data_dir / "sfm" / "sfm_shape_3448.bin"))
    assert status == 0, err
    rows = _log(out)
    assert [r["step"] for r in rows] == ["1", "2", "3"] and rows[-1]["val_vertex_mm"]
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    info = json.loads((out / "dynamics.json").read_text())
    assert info["data_format"] == "shards" and info["videos"]["val"] == ["d0.v2"]
    assert sorted(info["videos"]["train"]) == sorted(set(STEMS) - {"d0.v2"})


def test_generator_trains_from_shards(shards, data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    status, _, err = run_cli(
        capsys, "train", "generator", "--data", str(shards), "-o", str(out), "--steps", "2",
        "--tiny", "--batch", "2", "--val-pairs", "2", "--val-every", "2",
        "--identity-samples", "1", "--val-videos", "d0", "--no-progress", "--threads", "1",
        "--shuffle-buffer", "8", "--stream-pairs", "4",
        "--model", str(data_dir / "sfm" / "sfm_shape_3448.bin"))
    assert status == 0, err
    rows = _log(out)
    assert [r["step"] for r in rows] == ["1", "2"] and rows[-1]["val_l1"]
    assert all(np.isfinite(float(r["l1"])) for r in rows)
    assert json.loads((out / "generator.json").read_text())["data_format"] == "shards"
    assert (out / "samples" / "step_0000002.png").is_file()


def test_dynamics_streams_under_torchrun(shards, data_dir, tmp_path):
    """Two gloo processes, each streaming its own shards (3 shards: rank 0 takes two, rank 1
    one), train and rank 0 alone writes."""
    import os
    import subprocess
    import sys

    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "faceanime", "train", "dynamics", "--data", str(shards), "-o", str(out),
         "--steps", "3", "--batch", "4", "--hidden", "8", "--vertex-count", "32",
         "--val-every", "3", "--val-videos", "d0", "--no-progress", "--threads", "1",
         "--shuffle-buffer", "16", "--stream-windows", "4",
         "--model", str(data_dir / "sfm" / "sfm_shape_3448.bin")],
        cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True,
        timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["step"] for r in _log(out)] == ["1", "2", "3"]
    info = json.loads((out / "dynamics.json").read_text())
    assert info["processes"] == 2 and info["data_format"] == "shards"
