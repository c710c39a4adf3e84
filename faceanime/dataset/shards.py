"""A prepared dataset as tar shards in the webdataset layout, and the streaming reader the
trainers use on them (docs/dataset.md, "Shards"; docs/scale.md).

A shard folder (local, or any fsspec URL for reading)::

    SHARDS/index.json          written last, atomically: settings, shards, their samples
    SHARDS/shard-000000.tar    samples, one per video, each a run of members named <key>.<ext>:
        <key>.json                 {"stem", "frames", "fps", "source", "valid_frames"}
        <key>.coefficients.npz     the video's coefficient file, byte for byte
        <key>.crops.mp4            its crops (when the dataset has crops), byte for byte
        <key>.crops.npz            the crops' affines and valid flags, byte for byte

One sample is one whole video: the dynamics model needs a video's whole coefficient sequence
(windows come from anywhere in it) and the generator needs two frames of one video's crops.
The key is the stem with ``%`` and ``.`` percent-encoded, because webdataset splits a member name
at the first dot of its base name.

Reading is sequential (``tarfile`` in stream mode: no seeking, so a URL streams), never unpickles
(``.npz`` with ``allow_pickle=False``, JSON), and every failure is a :class:`ShardError` naming the
shard. Each process of a run (and each loader worker in it) reads its own shards, ``shard i`` to
reader ``i mod readers``, in a new seeded order each epoch, through a bounded shuffle buffer
(:func:`shuffled`): memory is bounded by the buffer, not by the dataset's size.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import random
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np
import torch
from tqdm import tqdm

from faceanime.coefficients import Coefficients
from faceanime.dataset.manifest import Manifest, coefficient_path, crop_paths, load_manifest
from faceanime.distributed import Ranks
from faceanime.errors import (
    BackendUnavailableError,
    FaceAnimeError,
    InputError,
    MediaError,
    ShardError,
)
from faceanime.io import atomic_path, iter_video_frames, read_npz_bytes

INDEX = "index.json"
INDEX_FORMAT = "faceanime-shards"
INDEX_VERSION = 1
SHARD_NAME = "shard-{:06d}.tar"
DEFAULT_SHARD_MB = 256.0

# A sample's members: "<key>." + one of these.
META = "json"
COEFFICIENTS = "coefficients.npz"
CROPS_VIDEO = "crops.mp4"
CROPS_META = "crops.npz"

# Tar framing (POSIX): a 512-byte header per member (plus a 1 kB extended header for names of
# 100 characters or more), data padded to 512 bytes, two zero blocks at the end, the whole file
# padded to a 10 kB record. Used to keep a shard under the size limit before writing it.
_BLOCK = 512
_END = 2 * _BLOCK + tarfile.RECORDSIZE

T = TypeVar("T")


def sample_key(stem: str) -> str:
    """The webdataset key of a video stem: ``%`` and ``.`` percent-encoded (reversible)."""
    return stem.replace("%", "%25").replace(".", "%2E")


def key_stem(key: str) -> str:
    """The stem of a :func:`sample_key`."""
    return key.replace("%2E", ".").replace("%25", "%")


@dataclass(frozen=True)
class SampleInfo:
    """One video in the index: its stem, frame count, frame rate and bytes in its shard."""

    stem: str
    frames: int
    fps: float
    bytes: int


@dataclass(frozen=True)
class ShardInfo:
    """One shard file: its name in the folder, its size and its samples in order."""

    name: str
    bytes: int
    samples: tuple[SampleInfo, ...]


@dataclass
class ShardIndex:
    """``index.json``: what the shards hold and what made them.

    Attributes:
        location: the shard folder or URL it was read from (not stored).
        model: the morphable model the coefficients belong to.
        crop_size, crop_scale: the crops' settings, None without crops.
        shards: the shard files in order.
        shard_bytes: the size limit they were written with.
        seed: seeds the order of the videos over the shards.
        datasets: the prepared folders the shards were made from.
    """

    location: str
    model: str
    crop_size: int | None
    crop_scale: float | None
    shards: list[ShardInfo]
    shard_bytes: int
    seed: int = 0
    datasets: list[str] = field(default_factory=list)

    @property
    def stems(self) -> list[str]:
        """Every video, sorted."""
        return sorted(s.stem for shard in self.shards for s in shard.samples)

    @property
    def frames(self) -> int:
        return sum(s.frames for shard in self.shards for s in shard.samples)

    def to_json(self) -> dict[str, Any]:
        return {"format": INDEX_FORMAT, "version": INDEX_VERSION, "model": self.model,
                "crop_size": self.crop_size, "crop_scale": self.crop_scale,
                "shard_bytes": self.shard_bytes, "seed": self.seed, "datasets": self.datasets,
                "videos": sum(len(s.samples) for s in self.shards), "frames": self.frames,
                "shards": [{"name": s.name, "bytes": s.bytes,
                            "samples": [{"stem": v.stem, "key": sample_key(v.stem),
                                         "frames": v.frames, "fps": v.fps, "bytes": v.bytes}
                                        for v in s.samples]} for s in self.shards]}


# --- where the shards are: a local folder or an fsspec URL ------------------------------------

class ShardSource:
    """Read access to a shard folder: a local path (or ``file://``), or any URL fsspec knows
    (``s3://``, ``gs://``, ``https://``, ...; fsspec then must be installed).

    Args:
        location: the folder, or its ``index.json``.
    """

    def __init__(self, location: str | os.PathLike):
        text = str(location)
        if text.endswith("/" + INDEX) or text == INDEX:
            text = text[:-len(INDEX)].rstrip("/") or "."
        self.location = text
        self.fs = None
        if is_url(text):
            try:
                import fsspec
            except ImportError as exc:
                raise BackendUnavailableError(f"{text}: shards at a URL need fsspec: "
                                              "pip install fsspec (and its protocol's package, "
                                              "e.g. s3fs)") from exc
            try:
                self.fs, self.root = fsspec.core.url_to_fs(text)
            except (ImportError, ValueError) as exc:
                raise BackendUnavailableError(f"{text}: fsspec cannot open this URL ({exc})") \
                    from exc
        else:
            self.root = text.removeprefix("file://")

    def where(self, name: str) -> str:
        """``name`` in the folder, as messages show it."""
        return f"{self.location.rstrip('/')}/{name}"

    def path(self, name: str) -> str:
        """``name`` in the folder, as the file system (local or fsspec's) names it."""
        return f"{self.root.rstrip('/')}/{name}" if self.fs is not None else \
            str(Path(self.root) / name)

    def size(self, name: str) -> int:
        """Bytes of ``name``.

        Raises:
            ShardError: it is missing or cannot be reached.
        """
        try:
            return int(self.fs.size(self.path(name)) if self.fs is not None
                       else os.path.getsize(self.path(name)))
        except (OSError, ValueError) as exc:
            raise ShardError(f"{self.where(name)}: cannot be read ({exc}); the shard folder is "
                             "incomplete: write the shards again") from exc

    def open(self, name: str) -> IO[bytes]:
        """``name`` opened for sequential binary reading.

        Raises:
            ShardError: it is missing or cannot be reached.
        """
        try:
            return self.fs.open(self.path(name), "rb") if self.fs is not None \
                else open(self.path(name), "rb")
        except (OSError, ValueError) as exc:
            raise ShardError(f"{self.where(name)}: cannot be opened ({exc})") from exc


def is_url(location: str | os.PathLike) -> bool:
    """A URL other than ``file://``: read through fsspec."""
    text = str(location)
    return "://" in text and not text.startswith("file://")


def is_shard_source(location: str | os.PathLike) -> bool:
    """Whether the trainers' ``--data`` names shards (a URL, an ``index.json``, or a folder holding
    one) rather than a prepared dataset folder."""
    text = str(location)
    if is_url(text) or text.endswith(INDEX):
        return True
    return (Path(text.removeprefix("file://")) / INDEX).is_file()


def load_index(location: str | os.PathLike) -> ShardIndex:
    """Read a shard folder's ``index.json``.

    Raises:
        ShardError: missing, not JSON, or not a shard index of a known version.
    """
    source = ShardSource(location)
    where = source.where(INDEX)
    try:
        with source.open(INDEX) as fh:
            data = json.loads(fh.read().decode("utf-8"))
    except ShardError as exc:
        raise ShardError(f"{where}: no shard index ({exc}); write shards with 'faceanime dataset "
                         "shard'") from exc
    except (OSError, ValueError) as exc:
        raise ShardError(f"{where}: not a readable shard index ({exc}); write the shards "
                         "again") from exc
    try:
        if data.get("format") != INDEX_FORMAT or data.get("version") != INDEX_VERSION:
            raise ValueError(f"format {data.get('format')!r} version {data.get('version')!r}, "
                             f"this faceanime reads {INDEX_FORMAT!r} version {INDEX_VERSION}")
        shards = [ShardInfo(str(s["name"]), int(s["bytes"]), tuple(
            SampleInfo(str(v["stem"]), int(v["frames"]), float(v["fps"]), int(v["bytes"]))
            for v in s["samples"])) for s in data["shards"]]
        size, scale = data.get("crop_size"), data.get("crop_scale")
        index = ShardIndex(source.location, str(data["model"]),
                           None if size is None else int(size),
                           None if scale is None else float(scale), shards,
                           int(data["shard_bytes"]), int(data.get("seed", 0)),
                           [str(d) for d in data.get("datasets", [])])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ShardError(f"{where}: not a shard index ({type(exc).__name__}: {exc}); write the "
                         "shards again") from exc
    if not shards or not index.stems:
        raise ShardError(f"{where}: the index lists no video; nothing to train on")
    return index


# --- writing ----------------------------------------------------------------------------------

def _member_bytes(name: str, size: int) -> int:
    pax = 2 * _BLOCK if len(name) >= 100 else 0
    return _BLOCK + pax + -(-size // _BLOCK) * _BLOCK


def _add(tar: tarfile.TarFile, name: str, data: bytes | None = None,
         path: Path | None = None) -> None:
    """Add a member from bytes or a file (copied in chunks), with fixed metadata so that the same
    dataset gives the same shards byte for byte."""
    info = tarfile.TarInfo(name)
    info.mode, info.mtime, info.uid, info.gid = 0o644, 0, 0, 0
    if data is not None:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        return
    assert path is not None
    info.size = path.stat().st_size
    with open(path, "rb") as fh:
        tar.addfile(info, fh)


@dataclass
class _Pending:
    stem: str
    root: Path
    entry: dict[str, Any]
    members: list[tuple[str, Path | bytes]]

    @property
    def bytes(self) -> int:
        return sum(_member_bytes(name, len(x) if isinstance(x, bytes) else x.stat().st_size)
                   for name, x in self.members)


def _collect(datasets: Sequence[str | os.PathLike]) -> tuple[Manifest, list[_Pending]]:
    """The ``ok`` videos of prepared folders, checked to share one model and crop setting."""
    if not datasets:
        raise InputError("no dataset folder to shard")
    first: Manifest | None = None
    seen: dict[str, Path] = {}
    pending = []
    for folder in map(Path, datasets):
        if (folder / INDEX).is_file():
            raise InputError(f"{folder}: holds shards already; shard prepared dataset folders "
                             "(with manifest.json)")
        manifest = load_manifest(folder)
        if first is None:
            first = manifest
        elif (manifest.model, manifest.crop_size, manifest.crop_scale) != \
                (first.model, first.crop_size, first.crop_scale):
            raise InputError(f"{folder}: model {manifest.model}, crops {manifest.crop_size} px "
                             f"at scale {manifest.crop_scale}, unlike the first dataset's "
                             f"({first.model}, {first.crop_size}, {first.crop_scale}); shard "
                             "datasets prepared alike")
        for stem, entry in sorted(manifest.videos.items()):
            if not entry.ok:
                continue
            if stem in seen:
                raise InputError(f"video {stem!r} is in both {seen[stem]} and {folder}; give "
                                 "each video one stem")
            seen[stem] = folder
            key = sample_key(stem)
            meta = {"stem": stem, "frames": entry.frames, "fps": entry.fps,
                    "source": entry.source, "valid_frames": entry.valid_frames}
            members: list[tuple[str, Path | bytes]] = [
                (f"{key}.{META}", (json.dumps(meta, sort_keys=True) + "\n").encode()),
                (f"{key}.{COEFFICIENTS}", coefficient_path(folder, stem))]
            if manifest.crop_size is not None:
                mp4, npz = crop_paths(folder, stem)
                members += [(f"{key}.{CROPS_VIDEO}", mp4), (f"{key}.{CROPS_META}", npz)]
            for _, x in members:
                if isinstance(x, Path) and not x.is_file():
                    raise InputError(f"{x}: missing, though the manifest says {stem!r} is ok; "
                                     f"run 'faceanime prepare' on {folder} again to redo it")
            pending.append(_Pending(stem, folder, meta, members))
    assert first is not None
    if not pending:
        raise InputError(f"no video with status 'ok' in {', '.join(map(str, datasets))}; "
                         "nothing to shard")
    return first, pending


def write_shards(datasets: Sequence[str | os.PathLike], output: str | os.PathLike,
                 shard_mb: float = DEFAULT_SHARD_MB, seed: int = 0, progress: bool = True
                 ) -> ShardIndex:
    """Write the ``ok`` videos of prepared dataset folders as tar shards with an index.

    The videos are spread over the shards in a seeded random order (shards then hold a mix of
    speakers, as webdataset advises: a reader's shuffle buffer only mixes nearby samples). Each
    shard is at most ``shard_mb`` MB unless one video alone is larger (it then has its own
    shard). Shards are written under temporary names and renamed when complete, the index last:
    a folder without ``index.json`` is unfinished, and a new run into it starts afresh.

    Args:
        datasets: folders written by ``faceanime prepare`` (parts prepared with ``--shard I/N``
            need no merging first); same model and crop settings.
        output: the shard folder, created: a local path or any URL fsspec writes to
            (``s3://...``; fsspec and the protocol's package must be installed); it must not
            hold an index already.
        shard_mb: most megabytes (10^6 bytes) per shard.
        seed: seeds the order of the videos.
        progress: show a progress bar.

    Raises:
        InputError: unusable inputs, a finished shard folder at ``output``, a bad size.
    """
    if shard_mb <= 0:
        raise InputError(f"--shard-size {shard_mb}: must be > 0 MB")
    limit = int(shard_mb * 1e6)
    where = _Destination(output)
    if where.exists(INDEX):
        raise InputError(f"{where.source.where(INDEX)}: the folder holds finished shards; write "
                         "into a new folder (or delete this one)")
    if where.local is not None and any(Path(d).resolve() == where.local.resolve()
                                       for d in datasets):
        raise InputError(f"{output}: write the shards into a folder of their own, not into the "
                         "dataset")
    manifest, pending = _collect(datasets)
    random.Random(seed).shuffle(pending)
    groups: list[list[_Pending]] = [[]]
    used = 0
    for item in pending:
        size = item.bytes
        if groups[-1] and used + size + _END > limit:
            groups.append([])
            used = 0
        groups[-1].append(item)
        used += size
    where.start()
    shards = []
    bar = tqdm(total=len(pending), desc="write shards", unit="video", disable=not progress)
    for number, group in enumerate(groups):
        name = SHARD_NAME.format(number)
        samples = []

        def fill(tar: tarfile.TarFile, group: list[_Pending] = group,
                 samples: list[SampleInfo] = samples) -> None:
            for item in group:
                for member, x in item.members:
                    _add(tar, member, x if isinstance(x, bytes) else None,
                         x if isinstance(x, Path) else None)
                samples.append(SampleInfo(item.stem, int(item.entry["frames"]),
                                          float(item.entry["fps"]), item.bytes))
                bar.update(1)

        shards.append(ShardInfo(name, where.write_tar(name, fill), tuple(samples)))
    bar.close()
    index = ShardIndex(str(output), manifest.model, manifest.crop_size, manifest.crop_scale,
                       shards, limit, seed, [str(Path(d).resolve()) for d in datasets])
    where.write_bytes(INDEX, (json.dumps(index.to_json(), indent=1) + "\n").encode("utf-8"))
    return index


class _Destination:
    """Where :func:`write_shards` writes: a local folder (each file written under a temporary
    name and renamed), or an fsspec URL (each shard written to a local temporary file, uploaded
    under ``<name>.part`` and moved to its name; object stores have no atomic rename, which is
    why the index comes last and readers trust nothing else)."""

    def __init__(self, output: str | os.PathLike):
        self.source = ShardSource(output)
        self.local = None if self.source.fs is not None else Path(self.source.root)

    def exists(self, name: str) -> bool:
        if self.local is not None:
            return (self.local / name).is_file()
        return bool(self.source.fs.exists(self.source.path(name)))

    def start(self) -> None:
        """Create the folder and remove an interrupted run's shards (no index vouches for
        them)."""
        if self.local is not None:
            self.local.mkdir(parents=True, exist_ok=True)
            for leftover in self.local.glob("shard-*.tar"):
                leftover.unlink()
            return
        fs = self.source.fs
        fs.makedirs(self.source.root, exist_ok=True)
        for leftover in fs.glob(self.source.path("shard-*.tar*")):
            fs.rm(leftover)

    def write_tar(self, name: str, fill: Callable[[tarfile.TarFile], None]) -> int:
        """Write the tar ``name`` that ``fill`` fills; returns its bytes."""
        if self.local is not None:
            with atomic_path(self.local / name) as tmp, \
                    tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
                fill(tar)
            return (self.local / name).stat().st_size
        with tempfile.TemporaryDirectory(prefix="faceanime-shard-") as work:
            local = Path(work) / name
            with tarfile.open(local, "w", format=tarfile.PAX_FORMAT) as tar:
                fill(tar)
            self._upload(name, local)
            return local.stat().st_size

    def write_bytes(self, name: str, data: bytes) -> None:
        if self.local is not None:
            with atomic_path(self.local / name) as tmp:
                tmp.write_bytes(data)
            return
        with tempfile.TemporaryDirectory(prefix="faceanime-shard-") as work:
            local = Path(work) / name
            local.write_bytes(data)
            self._upload(name, local)

    def _upload(self, name: str, local: Path) -> None:
        fs, part = self.source.fs, self.source.path(name + ".part")
        try:
            fs.put_file(str(local), part)
            fs.mv(part, self.source.path(name))
        except (OSError, ValueError) as exc:
            raise ShardError(f"{self.source.where(name)}: cannot be written ({exc})") from exc


# --- reading ----------------------------------------------------------------------------------

@dataclass
class ShardSample:
    """One video read from a shard.

    Attributes:
        stem: the video's stem.
        shard: where it was read (``.../shard-000003.tar``), for messages.
        meta: its ``.json`` member (frames, fps, source, valid_frames).
        files: member suffix (``coefficients.npz``, ...) -> bytes; the crops are left out when
            the reader was asked to skip them.
    """

    stem: str
    shard: str
    meta: dict[str, Any]
    files: dict[str, bytes]

    def member(self, suffix: str) -> str:
        return f"{self.shard}:{sample_key(self.stem)}.{suffix}"

    def coefficients(self) -> Coefficients:
        """The video's coefficients (as ``Coefficients.load`` reads the folder's file)."""
        name = self.member(COEFFICIENTS)
        try:
            return Coefficients.from_arrays(read_npz_bytes(self.files[COEFFICIENTS], name,
                                                           "coefficient file", ShardError), name)
        except ShardError:
            raise
        except InputError as exc:
            raise ShardError(str(exc)) from exc

    def crop_meta(self) -> dict[str, np.ndarray]:
        """The crops' arrays: ``affine`` ``(T, 2, 3)``, ``crop_size``, ``crop_scale``,
        ``valid`` ``(T,)``."""
        if CROPS_META not in self.files:
            raise ShardError(f"{self.shard}: video {self.stem!r} has no crops; the generator "
                             "trains on crops: prepare without --no-crops and shard again")
        return read_npz_bytes(self.files[CROPS_META], self.member(CROPS_META), "crop metadata",
                              ShardError)

    def crops(self, size: int, keep: Sequence[int] | None = None) -> torch.Tensor:
        """``(T, 3, S, S)`` uint8 crops, or only frames ``keep`` (in that order).

        The video is decoded from a temporary file (the decoder reads files), frame by frame:
        only the kept frames are held.

        Raises:
            ShardError: no crops, undecodable, or not ``frames`` frames of ``size``².
        """
        if CROPS_VIDEO not in self.files:
            self.crop_meta()  # raises: no crops
        frames = int(self.meta["frames"])
        want = None if keep is None else {int(k) for k in keep}
        held: dict[int, np.ndarray] = {}
        count = 0
        with tempfile.TemporaryDirectory(prefix="faceanime-shard-") as folder:
            path = Path(folder) / "crops.mp4"
            path.write_bytes(self.files[CROPS_VIDEO])
            try:
                for i, frame in enumerate(iter_video_frames(path)):
                    count = i + 1
                    if frame.shape != (size, size, 3):
                        raise ShardError(f"{self.member(CROPS_VIDEO)}: frames of "
                                         f"{frame.shape[1]}x{frame.shape[0]}, the index says "
                                         f"{size}x{size}; write the shards again")
                    if want is None or i in want:
                        held[i] = frame
            except MediaError as exc:
                raise ShardError(str(exc).replace(str(path), self.member(CROPS_VIDEO))) from exc
        if count != frames:
            raise ShardError(f"{self.member(CROPS_VIDEO)}: {count} frames, the sample says "
                             f"{frames}; write the shards again")
        order = range(frames) if keep is None else [int(k) for k in keep]
        if not frames or (keep is not None and not len(order)):
            return torch.zeros(0, 3, size, size, dtype=torch.uint8)
        return torch.from_numpy(np.stack([held[i] for i in order])).permute(0, 3, 1, 2) \
            .contiguous()


def read_shard(source: ShardSource, shard: ShardInfo, crops: bool = True
               ) -> Iterator[ShardSample]:
    """The samples of one shard, in order, read sequentially.

    Args:
        source: the shard folder.
        shard: the shard, as the index lists it.
        crops: read the crops' video (False: skip its bytes; the coefficients and crop metadata
            are still read).

    Raises:
        ShardError: the shard is missing, of another size than the index says (truncated or
            replaced), not a readable tar, or its samples differ from the index's.
    """
    where = source.where(shard.name)
    size = source.size(shard.name)
    if size != shard.bytes:
        raise ShardError(f"{where}: {size} bytes, the index says {shard.bytes}: truncated or "
                         "replaced; write the shards again")
    expected = [s.stem for s in shard.samples]
    seen: list[str] = []
    key: str | None = None
    files: dict[str, bytes] = {}

    def finish() -> ShardSample:
        stem = key_stem(key or "")
        if META not in files or COEFFICIENTS not in files:
            raise ShardError(f"{where}: sample {stem!r} lacks its "
                             f"{META if META not in files else COEFFICIENTS} member; write the "
                             "shards again")
        try:
            meta = json.loads(files.pop(META).decode("utf-8"))
            if meta["stem"] != stem:
                raise ValueError(f"it names video {meta['stem']!r}")
            int(meta["frames"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ShardError(f"{where}: sample {stem!r} has an unreadable {META} member "
                             f"({exc}); write the shards again") from exc
        seen.append(stem)
        if seen != expected[:len(seen)]:
            raise ShardError(f"{where}: sample {len(seen)} is {stem!r}, the index says "
                             f"{expected[len(seen) - 1] if len(seen) <= len(expected) else 'none'}"
                             "; write the shards again")
        return ShardSample(stem, where, meta, dict(files))

    with source.open(shard.name) as fh:
        try:
            with tarfile.open(fileobj=fh, mode="r|") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    base = member.name.rsplit("/", 1)[-1]
                    this, _, suffix = base.partition(".")
                    if this != key:
                        if key is not None:
                            yield finish()
                        key, files = this, {}
                    if suffix == CROPS_VIDEO and not crops:
                        continue  # stream mode skips the bytes unread
                    data = tar.extractfile(member)
                    if data is None:
                        continue
                    files[suffix] = data.read()
                    if len(files[suffix]) != member.size:
                        raise EOFError("unexpected end of data")
        except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
            raise ShardError(f"{where}: not a readable tar shard ({type(exc).__name__}: {exc}); "
                             "truncated or corrupt: write the shards again") from exc
    if key is not None:
        yield finish()
    if seen != expected:
        raise ShardError(f"{where}: holds {len(seen)} of the {len(expected)} samples the index "
                         "lists: truncated or corrupt; write the shards again")


def assign_shards(count: int, rank: int = 0, world_size: int = 1, worker: int = 0,
                  workers: int = 1) -> list[int]:
    """The shards a reader takes: reader ``rank * workers + worker`` of ``world_size * workers``
    takes shards ``i`` with ``i mod readers`` equal to its number. The readers' shards are
    disjoint and together all of them.

    Raises:
        InputError: fewer shards than readers (a reader without a shard would have no data).
    """
    readers = world_size * workers
    if count < readers:
        raise InputError(f"{count} shard(s) for {world_size} process(es) x {workers} loader "
                         "worker(s): each reader needs its own shard; write smaller shards "
                         "(faceanime dataset shard --shard-size) or use fewer --workers")
    me = rank * workers + worker
    return list(range(me, count, readers))


def epoch_samples(index: ShardIndex, shards: Sequence[int], rng: random.Random,
                  exclude: Iterable[str] = (), crops: bool = True) -> Iterator[ShardSample]:
    """One pass over ``shards`` of ``index`` in an order drawn from ``rng``, without the videos
    in ``exclude`` (held out for validation)."""
    source = ShardSource(index.location)
    skip = set(exclude)
    order = list(shards)
    rng.shuffle(order)
    for number in order:
        for sample in read_shard(source, index.shards[number], crops):
            if sample.stem not in skip:
                yield sample


def find_samples(index: ShardIndex, stems: Iterable[str], crops: bool = True
                 ) -> list[ShardSample]:
    """The samples of videos ``stems`` (in that order), reading only the shards that hold them.

    Raises:
        InputError: a stem the index does not list.
    """
    wanted = list(stems)
    where = {s.stem: i for i, shard in enumerate(index.shards) for s in shard.samples}
    unknown = sorted(set(wanted) - set(where))
    if unknown:
        raise InputError(f"{index.location}: no video named {unknown[:5]} in the shards")
    found: dict[str, ShardSample] = {}
    source = ShardSource(index.location)
    for number in sorted({where[s] for s in wanted}):
        for sample in read_shard(source, index.shards[number], crops):
            if sample.stem in wanted:
                found[sample.stem] = sample
    return [found[s] for s in wanted]


def first_samples(index: ShardIndex, count: int, exclude: Iterable[str] = (),
                  crops: bool = False) -> Iterator[ShardSample]:
    """The first ``count`` videos in the index's order (not in ``exclude``), reading shards from
    the first on: the same videos in every process."""
    skip = set(exclude)
    source = ShardSource(index.location)
    taken = 0
    for shard in index.shards:
        if taken >= count:
            return
        if all(s.stem in skip for s in shard.samples):
            continue
        for sample in read_shard(source, shard, crops):
            if sample.stem in skip:
                continue
            yield sample
            taken += 1
            if taken >= count:
                return


def shuffled(items: Iterable[T], size: int, rng: random.Random) -> Iterator[T]:
    """``items`` in a random order drawn with a buffer of ``size`` (webdataset's ``shuffle``):
    the buffer fills, then each new item takes the place of one drawn at random, which is
    yielded; at the end the rest comes out in random order. Every item comes out exactly once,
    and at most ``size`` are held."""
    if size < 1:
        raise InputError(f"--shuffle-buffer {size}: must be >= 1")
    buffer: list[T] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        j = rng.randrange(size)
        out, buffer[j] = buffer[j], item
        yield out
    rng.shuffle(buffer)
    yield from buffer


# --- batches from loader workers ---------------------------------------------------------------

@dataclass
class StreamFailure:
    """A typed error raised in a loader worker, carried to the training process as a value (a
    worker's exception would reach it wrapped in a multi-line traceback)."""

    kind: type
    message: str


def reader_seed(seed: int, rank: int, worker: int, start: int) -> int:
    """The random seed of one reader of a run: distinct per process, worker and starting step
    (a resumed run draws a new, reproducible stream)."""
    return ((seed * 1_000_003 + rank) * 1_000_033 + worker) * 1_000_037 + start


def worker_slot() -> tuple[int, int]:
    """``(worker, workers)`` of the loader worker running this (``(0, 1)`` outside workers)."""
    info = torch.utils.data.get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def reader_batches(shard_count: int, ranks: Ranks, seed: int, start: int, buffer: int, batch: int,
                   samples: Callable[[list[int], random.Random], Iterable[T]]
                   ) -> Iterator[list[T]]:
    """Full batches of ``batch`` samples for the reader running this (process ``ranks`` and
    loader worker): its own shards of ``shard_count`` (:func:`assign_shards`), their
    ``samples(shards, rng)`` shuffled through a ``buffer`` (:func:`shuffled`), with a random
    generator seeded per run, rank, worker and starting step (:func:`reader_seed`). The last,
    partial batch is dropped."""
    worker, workers = worker_slot()
    shards = assign_shards(shard_count, ranks.rank, ranks.world_size, worker, workers)
    rng = random.Random(reader_seed(seed, ranks.rank, worker, start))
    items = iter(shuffled(samples(shards, rng), buffer, rng))
    while chunk := list(itertools.islice(items, batch)):
        if len(chunk) < batch:
            return
        yield chunk


def guarded(make: Callable[[], Iterator[T]]) -> Iterator[T | StreamFailure]:
    """``make()``'s items, ending with a :class:`StreamFailure` instead of raising a typed error."""
    try:
        yield from make()
    except FaceAnimeError as exc:
        yield StreamFailure(type(exc), str(exc))


def _quiet_worker(_: int) -> None:
    # Workers decode and render with one thread each: they share the cores with training.
    torch.set_num_threads(1)


def stream_batches(dataset: torch.utils.data.IterableDataset, workers: int
                   ) -> Iterator[Any]:
    """Iterate a streaming dataset in this process (``workers`` 0) or with loader workers,
    raising a worker's typed error here, as one line."""
    if workers == 0:
        items: Iterable[Any] = iter(dataset)
    else:
        items = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers,
                                            worker_init_fn=_quiet_worker)
    for item in items:
        if isinstance(item, StreamFailure):
            raise item.kind(item.message)
        yield item
    # Readers end only when none of their shards holds a training sample.
    raise InputError("no training sample in this process's shards (all held out for "
                     "validation, or unusable): write smaller shards (more of them), hold out "
                     "fewer videos, or use fewer processes or --workers")


__all__ = ["COEFFICIENTS", "CROPS_META", "CROPS_VIDEO", "DEFAULT_SHARD_MB", "INDEX", "META",
           "SampleInfo", "ShardIndex", "ShardInfo", "ShardSample", "ShardSource",
           "StreamFailure", "assign_shards", "epoch_samples", "find_samples", "first_samples",
           "guarded", "is_shard_source", "is_url", "key_stem", "load_index", "read_shard",
           "reader_seed", "sample_key", "shuffled", "stream_batches", "worker_slot",
           "write_shards"]
