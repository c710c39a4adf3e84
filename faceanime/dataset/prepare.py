"""``prepare_dataset``: talking-head videos -> coefficient sequences and aligned face crops.

Per video: track the 68 landmarks, fit the morphable model with one identity for the whole video,
save the coefficients, then cut the aligned crops (:mod:`faceanime.dataset.crops`) while decoding
the video a second time, so no video is ever held in memory whole.

A run can stop anywhere (Ctrl-C, a crash, a killed job) and be started again with the same
command: :mod:`faceanime.dataset.manifest` says why that is safe. A video that cannot be used (no
face, too few frames with one, an undecodable file) is *skipped*: recorded in the manifest with the
reason and reported, while the run goes on. Errors that concern the run rather than one video
(unwritable output, a wrong model, a bug) stop it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from faceanime.coefficients import Coefficients
from faceanime.dataset.crops import crop_track, iter_crops
from faceanime.dataset.manifest import (
    COEFFICIENTS,
    CROPS,
    MANIFEST,
    NO_FACE,
    TOO_SHORT,
    UNREADABLE,
    Manifest,
    VideoEntry,
    coefficient_path,
    crop_paths,
    load_manifest,
)
from faceanime.errors import FaceNotFoundError, InputError, MediaError
from faceanime.fitting import FitConfig, fit_landmarks
from faceanime.io import atomic_path, save_npz, write_video
from faceanime.landmarks import (
    BACKENDS,
    DetectorConfig,
    LandmarkDetector,
    TrackerConfig,
    VideoLandmarks,
    create_detector,
    track_video,
)
from faceanime.morphable import FaceModel, load_model

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm")
# Joins the subfolders of a video found inside an input folder into its stem:
# voxceleb/id10001/1zcIwhmdeo4/00001.mp4 -> "id10001__1zcIwhmdeo4__00001".
STEM_SEPARATOR = "__"
LOCK = ".lock"
# Frames warped at once: memory stays a few frames whatever the video's length. On a CPU a batch
# of 8 ran 20-30 % faster than 16 or 32 (the frames stay in cache); a GPU wants more work per call.
CROP_BATCH = {"cpu": 8, "cuda": 64}
# Training data: fewer compression artefacts than write_video's default (7).
CROP_QUALITY = 8
# A manifest save may take at most this fraction of the run: for 10⁵ videos it is 23 MB of JSON
# and takes over a second to write, as long as preparing a short clip on a GPU.
MANIFEST_TIME_SHARE = 0.05


def training_fit() -> FitConfig:
    """The fitter settings of training data: every landmark alike (``lower_face_weight`` 1).

    The jobs fit the chin's and mouth's landmarks at half weight, which keeps pressed lips from
    moving the fitted head (docs/fitting.md). The 3DDP checkpoint that ships in the package and
    the numbers in docs/dynamics.md were made on fits with every landmark alike; retrained on
    half-weight fits, its held-out forecast five frames ahead lost to constant velocity (2.03-
    2.08 mm against 1.93 on d18, over 100-600 steps and 8-32 units) and its free-running speed
    left the real one's band. Training data keeps these settings until the model is retrained
    on a corpus large enough to judge the change."""
    return FitConfig(lower_face_weight=1.0)


@dataclass(frozen=True)
class PrepareConfig:
    """Dataset preparation settings (each field's comment is its CLI help)."""

    model: str = "sfm"  # morphable model name or path (see 'faceanime model info')
    crop_size: int = 256  # side of the aligned face crops in pixels (even)
    crop_scale: float = 1.0  # crop extent: 1 = FFHQ layout, 2 = twice the width around the face
    crop_smooth: float = 2.0  # std of the time window steadying the crops, in frames; 0 = off
    min_frames: int = 25  # skip videos with fewer frames with a face than this
    crops: bool = True  # write aligned face crops (--no-crops: coefficients only)
    backend: str = "dlib"  # landmark backend: dlib, mediapipe or fan
    device: str = "cpu"  # torch device for fitting and cropping: cpu or cuda
    retry_skipped: bool = False  # try again the videos an earlier run skipped
    shard: tuple[int, int] | None = None  # (I, N): only the I-th of N parts of the inputs, by name
    progress: bool = True  # show progress bars
    # Run the per-video work as Ray tasks: "local" starts (or joins) a Ray on this machine, any
    # other value is a cluster's address (ray.init(address=...)); None = in this process.
    ray: str | None = None
    # fitter settings (Python API only); training_fit(): every landmark alike
    fit: FitConfig = field(default_factory=training_fit)

    def __post_init__(self) -> None:
        if int(self.crop_size) != self.crop_size or self.crop_size < 16 or self.crop_size % 2:
            raise InputError(f"crop size {self.crop_size}: must be an even number of pixels, "
                             "16 or more (H.264 needs even sides)")
        if not self.crop_scale > 0:
            raise InputError(f"crop scale {self.crop_scale}: must be positive")
        if not self.crop_smooth >= 0:
            raise InputError(f"crop smoothing {self.crop_smooth}: must be 0 (off) or positive")
        if self.min_frames < 1:
            raise InputError(f"min frames {self.min_frames}: must be at least 1")
        if self.backend not in BACKENDS:
            raise InputError(f"unknown landmark backend {self.backend!r}; choose one of "
                             f"{', '.join(BACKENDS)}")
        if self.shard is not None and not 0 <= self.shard[0] < self.shard[1]:
            raise InputError(f"shard {self.shard[0]}/{self.shard[1]}: needs 0 <= I < N")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise InputError(f"device {self.device!r}: torch sees no CUDA device here; "
                             "use cpu")


@dataclass(frozen=True)
class VideoInput:
    """A video to prepare: its ``stem`` (its name in the dataset), its file ``path``, and the
    dataset folder (``shard``) holding its finished files when it comes from one."""

    stem: str
    path: Path
    shard: Path | None = None


@dataclass
class PrepareReport:
    """What a run did with each of its input videos.

    Attributes:
        root: the dataset folder.
        entries: stem -> manifest entry, for this run's inputs in input order.
        actions: stem -> ``"prepared"``, ``"cropped"`` (crops added to earlier coefficients),
            ``"merged"`` (copied from another dataset folder), ``"done before"``, ``"skipped"``
            or ``"skipped before"``.
        seconds: wall time of the run.
    """

    root: Path
    entries: dict[str, VideoEntry] = field(default_factory=dict)
    actions: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> list[str]:
        return [stem for stem, e in self.entries.items() if e.ok]

    @property
    def skipped(self) -> list[str]:
        return [stem for stem, e in self.entries.items() if not e.ok]

    def add(self, stem: str, entry: VideoEntry, action: str, bar: tqdm) -> None:
        """Record one video's outcome and advance the progress bar."""
        self.entries[stem], self.actions[stem] = entry, action
        bar.set_postfix(ok=len(self.ok), skipped=len(self.skipped), refresh=False)
        bar.update()

    def summary(self) -> str:
        """One line: counts of ok, newly prepared and skipped videos, and where they went."""
        count = {a: sum(v == a for v in self.actions.values())
                 for a in ("prepared", "cropped", "merged", "done before")}
        done = ", ".join(f"{n} {a}" for a, n in count.items() if n)
        return (f"{len(self.ok)} of {len(self.entries)} videos ok"
                + (f" ({done})" if done else "")
                + f", {len(self.skipped)} skipped -> {self.root} ({self.seconds:.1f} s)")

    def skipped_table(self) -> str:
        """A two-column text table of the skipped videos and why; empty when none was."""
        if not self.skipped:
            return ""
        width = max(len("skipped video"), *(len(s) for s in self.skipped))
        lines = [f"{'skipped video':<{width}}  reason"]
        lines += [f"{stem:<{width}}  {self.entries[stem].reason}" for stem in self.skipped]
        return "\n".join(lines)


class _Skip(Exception):
    """A video that cannot be used; deliberately not a FaceAnimeError, so that nothing but the
    steps that judge a video's content can turn an error into a skip."""

    def __init__(self, kind: str, detail: str, frames: int = 0, fps: float = 0.0,
                 valid: int = 0):
        super().__init__(f"{kind}: {detail}")
        self.frames, self.fps, self.valid = frames, fps, valid


def skipped_entry(skip: _Skip, video: VideoInput, size: int) -> VideoEntry:
    """The manifest entry of a video that :meth:`_Preparer.full` found unusable."""
    return VideoEntry("skipped", str(skip), skip.frames, skip.fps, str(video.path), size,
                      skip.valid)


def _detail(exc: Exception, path: Path) -> str:
    """The error's message without the leading path (the report names the video already)."""
    text = str(exc)
    for prefix in (f"{path}: ", f"{path.name}: "):
        if text.startswith(prefix):
            return text[len(prefix):]
    return text


def _walk(folder: Path) -> list[Path]:
    """Video files below ``folder``, sorted; hidden entries and dataset folders (which hold
    crops, not inputs) left out."""
    found = []
    for top, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs
                   if not d.startswith(".") and not (Path(top, d) / MANIFEST).is_file()]
        found += [Path(top, f) for f in files
                  if not f.startswith(".") and Path(f).suffix.lower() in VIDEO_SUFFIXES]
    return sorted(found)


def find_videos(inputs: Iterable[str | os.PathLike],
                exclude: str | os.PathLike | None = None) -> list[VideoInput]:
    """Expand files and folders into the videos to prepare, each with its dataset stem.

    A file is taken as given (stem: its name without the suffix). A folder contributes every
    video below it (suffixes in :data:`VIDEO_SUFFIXES`; hidden files and folders, and dataset
    folders, left out), sorted, with the subfolders joined into the stem by
    :data:`STEM_SEPARATOR`, so that corpora whose clips share file names (VoxCeleb's
    ``id/video/00001.mp4``) keep them apart. A dataset folder (one holding ``manifest.json``)
    contributes the videos of its manifest, to be merged with their files.

    Args:
        inputs: video files, folders of videos and dataset folders.
        exclude: a folder whose videos are never inputs (the dataset being written, which may
            lie inside an input folder).

    Returns:
        The videos in input order, each file once.

    Raises:
        InputError: a missing input, an unreadable manifest, or two videos that would share a
            stem.
    """
    skip_under = Path(exclude).resolve() if exclude is not None else None
    by_stem: dict[str, VideoInput] = {}
    seen: set[Path] = set()
    for raw in inputs:
        path = Path(raw)
        if skip_under is not None and path.resolve().is_relative_to(skip_under):
            continue
        if (path / MANIFEST).is_file():
            found = [VideoInput(stem, Path(e.source), path)
                     for stem, e in load_manifest(path).videos.items()]
        elif path.is_dir():
            found = [VideoInput(STEM_SEPARATOR.join(f.relative_to(path).with_suffix("").parts),
                                Path(os.path.abspath(f))) for f in _walk(path)]
        elif path.is_file():
            found = [VideoInput(path.stem, Path(os.path.abspath(path)))]
        else:
            raise InputError(f"{path}: no such file or folder")
        for video in found:
            real = video.path.resolve()
            if real in seen or (skip_under is not None and real.is_relative_to(skip_under)):
                continue
            seen.add(real)
            if video.stem in by_stem:
                raise InputError(
                    f"two videos would both be named {video.stem!r} in the dataset: "
                    f"{by_stem[video.stem].path} and {video.path}; pass their common parent "
                    "folder instead (names then include the subfolders) or rename one")
            by_stem[video.stem] = video
    return list(by_stem.values())


def select_shard(videos: Sequence[VideoInput], index: int, count: int) -> list[VideoInput]:
    """The videos of shard ``index`` of ``count``: chosen by a hash of the stem, so a video stays
    in its shard when the corpus grows, and the shards are disjoint and cover every video."""
    return [v for v in videos if zlib.crc32(v.stem.encode()) % count == index]


@contextlib.contextmanager
def _exclusive(root: Path) -> Iterator[None]:
    """Hold ``root/.lock`` so that two runs never write one dataset (each would also delete the
    other's temporary files as leftovers). The lock dies with its process: no stale lock."""
    unwritable = f"{root}: cannot write in the dataset folder ({{}}); choose a writable one"
    try:
        handle = open(root / LOCK, "a")
    except OSError as exc:
        raise MediaError(unwritable.format(exc.strerror)) from exc
    with handle:
        try:
            # The lock file may exist already: prove that new files can be made, before any work.
            tempfile.TemporaryFile(dir=root).close()
        except OSError as exc:
            raise MediaError(unwritable.format(exc.strerror)) from exc
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; one run at a time is on the user
            yield
            return
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"{root}: another 'faceanime prepare' is writing this dataset; "
                             "wait for it to finish or choose another output folder") from None
        yield


def _make_folders(root: Path, crops: bool) -> None:
    for folder in (root, root / COEFFICIENTS, *((root / CROPS,) if crops else ())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MediaError(f"{folder}: cannot create the dataset folder "
                             f"({exc.strerror or exc}); choose a writable output folder") from exc


def _remove_leftovers(root: Path) -> int:
    """Delete temporary files of interrupted writes (``.NAME.XXXX.part.EXT``, see
    :func:`~faceanime.io.atomic_path`); nothing else ever names a file like that."""
    removed = 0
    for folder in (root, root / COEFFICIENTS, root / CROPS):
        for leftover in folder.glob(".*.part.*") if folder.is_dir() else ():
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
                removed += 1
    return removed


class _ManifestWriter:
    """Keeps ``manifest.json`` current: saved after every change, except that on a huge corpus
    saves are spaced so they take at most :data:`MANIFEST_TIME_SHARE` of the time. A change that
    withdraws an ``ok`` is always saved at once, before any of that video's files is touched."""

    def __init__(self, manifest: Manifest, root: Path):
        self.manifest, self.root = manifest, root
        self.dirty = False
        self.last = 0.0
        self.cost = 0.0

    def set(self, stem: str, entry: VideoEntry | None, now: bool = False) -> None:
        if entry is None:
            self.manifest.videos.pop(stem, None)
        else:
            self.manifest.videos[stem] = entry
        self.dirty = True
        if now or time.monotonic() - self.last >= self.cost / MANIFEST_TIME_SHARE:
            self.flush()

    def flush(self) -> None:
        if not self.dirty:
            return
        start = time.monotonic()
        self.manifest.save(self.root)
        self.last = time.monotonic()
        self.cost = self.last - start
        self.dirty = False


def _same_video(entry: VideoEntry, video: VideoInput, size: int) -> bool:
    """Whether a manifest entry describes this input file: the same path, or a corpus moved
    elsewhere (same file name and size)."""
    if entry.source == str(video.path):
        return True
    return Path(entry.source).name == video.path.name and entry.bytes == size


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


class _Preparer:
    """One run's shared tools (model, landmark detector) and settings; nothing outlives it."""

    def __init__(self, root: Path, config: PrepareConfig, model: FaceModel,
                 manifest: _ManifestWriter, shards: dict[Path, Manifest]):
        self.root, self.cfg, self.model, self.writer = root, config, model, manifest
        self.shards = shards
        self.fit = dataclasses.replace(config.fit, device=config.device)
        self.tracker = TrackerConfig(backend=config.backend, progress=config.progress,
                                     detector=DetectorConfig(device=config.device))
        self._detector: LandmarkDetector | None = None

    def close(self) -> None:
        if self._detector is not None:
            self._detector.close()

    @property
    def detector(self) -> LandmarkDetector:
        # Built on first use: a resumed run with nothing left to do never loads it.
        if self._detector is None:
            self._detector = create_detector(self.cfg.backend, self.tracker.detector)
        return self._detector

    def outputs(self, stem: str) -> list[Path]:
        return [coefficient_path(self.root, stem), *crop_paths(self.root, stem)]

    def complete(self, stem: str) -> bool:
        paths = self.outputs(stem)
        return all(p.is_file() for p in (paths if self.cfg.crops else paths[:1]))

    def video(self, video: VideoInput, size: int) -> tuple[VideoEntry, str]:
        """Bring one video up to date; returns its entry and what was done."""
        planned = self.plan(video, size)
        if planned is not None:
            return planned
        try:
            entry = self.full(video, size)
        except _Skip as skip:
            return self.record_skip(video, skipped_entry(skip, video, size)), "skipped"
        self.writer.set(video.stem, entry)
        return entry, "prepared"

    def plan(self, video: VideoInput, size: int) -> tuple[VideoEntry, str] | None:
        """Do what a video needs short of a full preparation (merge, keep, add crops) and return
        its entry and action; None when it needs :meth:`full`, its old entry and files then
        withdrawn. Split from :meth:`video` so that the Ray driver runs this part itself and
        only the full preparation as a task (:mod:`faceanime.dataset.on_ray`)."""
        merged = video.shard is not None and self._merge(video, video.shard)
        planned = self._update(video, size)
        if planned is not None and merged and planned[1] in (
                "done before", "skipped before", "cropped"):
            planned = planned[0], "merged"
        return planned

    def record_skip(self, video: VideoInput, entry: VideoEntry) -> VideoEntry:
        """Record a video found unusable by :meth:`full`; any files it left are removed."""
        for path in self.outputs(video.stem):
            path.unlink(missing_ok=True)
        self.writer.set(video.stem, entry)
        return entry

    def _merge(self, video: VideoInput, shard: Path) -> bool:
        """Copy a video's entry and files from the dataset folder ``shard``, unless this dataset
        has them already; False when there was nothing (usable) to copy."""
        entry = self.shards[shard].videos[video.stem]
        old = self.writer.manifest.videos.get(video.stem)
        if old is not None and old.bytes == entry.bytes and (
                (old.ok and self.complete(video.stem)) or not entry.ok):
            return False
        sources = [coefficient_path(shard, video.stem), *crop_paths(shard, video.stem)]
        if entry.ok and not sources[0].is_file():
            return False  # a damaged shard: the video is prepared from its source instead
        if old is not None:
            self.writer.set(video.stem, None, now=True)
        for path in self.outputs(video.stem):
            path.unlink(missing_ok=True)
        copy = []
        if entry.ok:
            # Crops travel only as a pair; without them they are made from the source later.
            crops = self.cfg.crops and all(p.is_file() for p in sources[1:])
            copy = sources if crops else sources[:1]
        for source, target in zip(copy, self.outputs(video.stem), strict=False):
            with atomic_path(target) as tmp:
                shutil.copyfile(source, tmp)
        self.writer.set(video.stem, entry)
        return True

    def _update(self, video: VideoInput, size: int) -> tuple[VideoEntry, str] | None:
        old = self.writer.manifest.videos.get(video.stem)
        if old is not None and old.bytes == size:
            moved = dataclasses.replace(old, source=str(video.path))
            if old.ok and coefficient_path(self.root, video.stem).is_file():
                if self.complete(video.stem):
                    return self._keep(video.stem, old, moved), "done before"
                with contextlib.suppress(_Skip):
                    entry = self._crops_only(video, moved)
                    self.writer.set(video.stem, entry)
                    return entry, "cropped"
            retry = self.cfg.retry_skipped or ((old.reason or "").startswith(TOO_SHORT)
                                               and old.valid_frames >= self.cfg.min_frames)
            if not old.ok and not retry:
                return self._keep(video.stem, old, moved), "skipped before"
        if old is not None:
            # Withdraw the entry before touching its files: an interruption from here on must
            # leave the video not-ok, whatever mix of old and new files it finds.
            self.writer.set(video.stem, None, now=True)
        for path in self.outputs(video.stem):
            path.unlink(missing_ok=True)
        return None

    def _keep(self, stem: str, old: VideoEntry, new: VideoEntry) -> VideoEntry:
        if new != old:  # the corpus moved: record where the video is now
            self.writer.set(stem, new)
        return new

    def full(self, video: VideoInput, size: int, root: Path | None = None) -> VideoEntry:
        """Track, fit and crop one video into ``root`` (the dataset by default; a Ray task
        passes a scratch folder whose files the driver then moves in). Raises _Skip."""
        return self.fit_and_crop(video, self.track(video), size, root)

    def track(self, video: VideoInput) -> VideoLandmarks:
        """The landmarks of every frame of one video (the CPU-bound half of :meth:`full`).
        Raises _Skip: no face, unreadable, or too few frames with a face."""
        path = video.path
        try:
            track = track_video(path, self.tracker, detector=self.detector)
        except FaceNotFoundError as exc:
            raise _Skip(NO_FACE, _detail(exc, path)) from exc
        except (MediaError, InputError) as exc:
            raise _Skip(UNREADABLE, _detail(exc, path)) from exc
        frames, fps, valid = len(track), float(track.fps), int(track.valid.sum())
        if valid < self.cfg.min_frames:
            raise _Skip(TOO_SHORT, f"{valid} of {frames} frames have a face, fewer than the "
                        f"{self.cfg.min_frames} required (min_frames)", frames, fps, valid)
        return track

    def fit_and_crop(self, video: VideoInput, track: VideoLandmarks, size: int,
                     root: Path | None = None) -> VideoEntry:
        """Fit a tracked video and cut its crops into ``root`` (the dataset by default): the
        half of :meth:`full` that runs on the device. Raises _Skip."""
        root = self.root if root is None else root
        path = video.path
        frames, fps, valid = len(track), float(track.fps), int(track.valid.sum())
        try:
            coeffs = fit_landmarks(self.model, torch.from_numpy(track.points), track.image_size,
                                   self.fit, fps=fps)
        except FaceNotFoundError as exc:
            raise _Skip(NO_FACE, str(exc), frames, fps, valid) from exc
        coeffs.save(coefficient_path(root, video.stem))
        if self.cfg.crops:
            self._write_crops(video, coeffs, root)
        return VideoEntry("ok", None, frames, fps, str(path), size, valid)

    def _crops_only(self, video: VideoInput, entry: VideoEntry) -> VideoEntry:
        """Crops for coefficients an earlier run made (from the landmarks stored with them)."""
        try:
            coeffs = Coefficients.load(coefficient_path(self.root, video.stem))
        except InputError as exc:
            raise _Skip(UNREADABLE, str(exc)) from exc
        if coeffs.landmarks is None or coeffs.n_frames != entry.frames:
            raise _Skip(UNREADABLE, "coefficient file without the landmarks of every frame")
        self._write_crops(video, coeffs)
        return entry

    def _write_crops(self, video: VideoInput, coeffs: Coefficients,
                     root: Path | None = None) -> None:
        cfg = self.cfg
        valid = coeffs.valid
        if valid is None:
            valid = torch.ones(coeffs.n_frames, dtype=torch.bool, device=coeffs.landmarks.device)
        try:
            affine, used = crop_track(coeffs.landmarks, valid, cfg.crop_size, cfg.crop_scale,
                                      cfg.crop_smooth)
        except InputError as exc:
            raise _Skip(NO_FACE, str(exc), coeffs.n_frames, coeffs.fps) from exc
        movie, arrays = crop_paths(self.root if root is None else root, video.stem)
        batch = CROP_BATCH["cuda" if cfg.device.startswith("cuda") else "cpu"]
        frames = iter_crops(video.path, affine, cfg.crop_size, batch, cfg.device)
        with tqdm(total=coeffs.n_frames, unit="frame", desc=f"crops {video.stem}", leave=False,
                  disable=not cfg.progress) as bar:
            write_video(movie, self._judged(frames, video, bar, coeffs), fps=coeffs.fps,
                        quality=CROP_QUALITY)
        save_npz(arrays, affine=affine.to(torch.float32).cpu().numpy(),
                 crop_size=np.int32(cfg.crop_size), crop_scale=np.float64(cfg.crop_scale),
                 valid=used.cpu().numpy())

    @staticmethod
    def _judged(frames: Iterator[np.ndarray], video: VideoInput, bar: tqdm,
                coeffs: Coefficients) -> Iterator[np.ndarray]:
        """The crops, with a decoding failure turned into a skip (write errors stay errors)."""
        try:
            for frame in frames:
                bar.update()
                yield frame
        except (MediaError, InputError) as exc:
            raise _Skip(UNREADABLE, _detail(exc, video.path), coeffs.n_frames,
                        coeffs.fps) from exc


# One worker process's preparers, kept between its Ray tasks so that the morphable model and the
# landmark detector load once per worker rather than once per video: by settings, as a worker
# may run both tracking tasks (on the CPU) and fitting tasks (on the run's device).
_WORKER: list[tuple[PrepareConfig, _Preparer]] = []


def _worker_preparer(config: PrepareConfig) -> _Preparer:
    for known, preparer in _WORKER:
        if known == config:
            return preparer
    while len(_WORKER) >= 2:  # another run's: this worker serves a new one now
        _WORKER.pop(0)[1].close()
    model = load_model(config.model, device=config.device)
    scratch = Path(tempfile.gettempdir())  # never written: full() is given its folder
    writer = _ManifestWriter(Manifest(model=model.name), scratch)
    _WORKER.append((config, _Preparer(scratch, config, model, writer, {})))
    return _WORKER[-1][1]


def _tracking_config(config: PrepareConfig) -> PrepareConfig:
    """The settings a tracking task runs with: on the CPU (dlib's tracker is CPU-bound, and a
    CPU worker has no GPU to load anything onto)."""
    return dataclasses.replace(config, device="cpu")


def track_video_task(stem: str, path: str, size: int, config: PrepareConfig
                     ) -> dict[str, Any]:
    """Track one video: the first Ray task of each video, on a CPU worker (1 CPU, no GPU).

    Returns:
        ``{"track": VideoLandmarks}``, or the result of a skipped video (as
        :func:`prepare_video_task` returns it) when it has no face, cannot be read or is too
        short. It goes from worker to worker through Ray's object store; the driver never
        unpickles it.
    """
    preparer = _worker_preparer(_tracking_config(config))
    video = VideoInput(stem, Path(path))
    try:
        return {"track": preparer.track(video)}
    except _Skip as skip:
        return _result(skipped_entry(skip, video, size), [])


def prepare_video_task(tracked: dict[str, Any], stem: str, path: str, size: int,
                       config: PrepareConfig) -> dict[str, Any]:
    """Fit a tracked video (:func:`track_video_task`'s result) and cut its crops in a scratch
    folder, returning its files: the second Ray task of each video (with ``--device cuda``,
    the one that holds a GPU).

    Returns:
        Plain data only (nothing custom to unpickle on the driver): ``status`` ("ok" or
        "skipped"), ``reason``, ``frames``, ``fps``, ``valid_frames``, and ``files``: the bytes
        of the coefficient file, then (with crops) of the crop video and of its arrays.
    """
    if "track" not in tracked:
        return tracked  # skipped while tracking
    preparer = _worker_preparer(config)
    video = VideoInput(stem, Path(path))
    with tempfile.TemporaryDirectory(prefix="faceanime-task-") as tmp:
        root = Path(tmp)
        _make_folders(root, config.crops)
        try:
            entry = preparer.fit_and_crop(video, tracked["track"], size, root)
        except _Skip as skip:
            entry = skipped_entry(skip, video, size)
            files: list[bytes] = []
        else:
            written = [coefficient_path(root, stem), *crop_paths(root, stem)]
            files = [p.read_bytes() for p in written[:3 if config.crops else 1]]
    return _result(entry, files)


def _result(entry: VideoEntry, files: list[bytes]) -> dict[str, Any]:
    return {"status": entry.status, "reason": entry.reason, "frames": entry.frames,
            "fps": entry.fps, "valid_frames": entry.valid_frames, "files": files}


def _store(preparer: _Preparer, video: VideoInput, size: int, result: dict[str, Any]
           ) -> tuple[VideoEntry, str]:
    """Write one task's result into the dataset, as :meth:`_Preparer.video` would have."""
    entry = VideoEntry(str(result["status"]), result["reason"], int(result["frames"]),
                       float(result["fps"]), str(video.path), size, int(result["valid_frames"]))
    if not entry.ok:
        return preparer.record_skip(video, entry), "skipped"
    files: Sequence[bytes] = result["files"]
    expected = 3 if preparer.cfg.crops else 1
    if len(files) != expected or not all(isinstance(f, bytes) for f in files):
        raise MediaError(f"{video.path}: a Ray task returned {len(files)} files, expected "
                         f"{expected}; do the workers run another faceanime version?")
    for data, target in zip(files, preparer.outputs(video.stem), strict=False):
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)
    preparer.writer.set(video.stem, entry)
    return entry, "prepared"


def _prepare_on_ray(preparer: _Preparer, inputs: Sequence[VideoInput], sizes: dict[str, int],
                    report: PrepareReport, bar: tqdm) -> None:
    """Bring every input up to date with the full preparations run as Ray tasks (two a video:
    :func:`track_video_task` on a CPU worker, then :func:`prepare_video_task`, the fit and
    crops, with a GPU under ``--device cuda``; the code a local run uses); what else a video
    needs (keep, merge, add crops) is decided and done here, beside the manifest. Each outcome
    goes into ``report`` as it arrives."""
    from faceanime.dataset.on_ray import run_tasks  # imports Ray: only with --ray

    cfg = preparer.cfg
    assert cfg.ray is not None
    gpus = 1 if cfg.device.startswith("cuda") else 0
    # On a worker Ray shows the GPU it was given as the only one: "cuda".
    worker = dataclasses.replace(cfg, progress=False, ray=None,
                                 device="cuda" if gpus else cfg.device)
    by_stem = {v.stem: v for v in inputs}

    def jobs() -> Iterator[tuple[str, tuple[Any, ...]]]:
        # Lazy: a video is planned when a worker is about to be free for it.
        for video in inputs:
            planned = preparer.plan(video, sizes[video.stem])
            if planned is not None:
                report.add(video.stem, *planned, bar)
            else:
                yield video.stem, (video.stem, str(video.path), sizes[video.stem])

    def done(stem: str, result: dict[str, Any]) -> None:
        video = by_stem[stem]
        report.add(stem, *_store(preparer, video, sizes[stem], result), bar)

    run_tasks(cfg.ray, prepare_video_task, jobs(), worker, done,
              {stem: str(v.path) for stem, v in by_stem.items()}, gpus=gpus,
              first=track_video_task)


def _check_compatible(folder: Path, manifest: Manifest, config: PrepareConfig,
                      model_name: str) -> None:
    """Raise InputError where a dataset folder was made with another model or crop layout."""
    if manifest.model != model_name:
        raise InputError(f"{folder} holds coefficients of the {manifest.model!r} model, this "
                         f"run fits {model_name!r}; use the same model or another folder")
    if config.crops and manifest.crop_size is not None and (
            (manifest.crop_size, manifest.crop_scale) != (config.crop_size, config.crop_scale)):
        raise InputError(
            f"{folder} holds crops of size {manifest.crop_size} at scale "
            f"{manifest.crop_scale:g}, this run asks for {config.crop_size} at "
            f"{config.crop_scale:g}; use the same crop settings or another folder")


def _open_manifest(root: Path, config: PrepareConfig, model_name: str) -> Manifest:
    """The dataset's manifest (a new one for a new dataset), checked against this run's settings.

    Raises:
        InputError: the dataset was made with another model, or crops of another size.
    """
    if not (root / MANIFEST).exists():
        manifest = Manifest(model=model_name)
    else:
        manifest = load_manifest(root)
        _check_compatible(root, manifest, config, model_name)
    if config.crops and manifest.crop_size is None:
        manifest.crop_size, manifest.crop_scale = config.crop_size, config.crop_scale
    return manifest


def prepare_dataset(videos: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
                    config: PrepareConfig | None = None) -> PrepareReport:
    """Prepare (or bring up to date) a dataset folder from talking-head videos.

    Args:
        videos: video files and folders of videos (see :func:`find_videos`).
        out_dir: the dataset folder; created if missing, resumed if it holds a manifest.
        config: settings; defaults to :class:`PrepareConfig`.

    Returns:
        What happened to each input; ``report.ok`` may be empty (every video skipped).

    Raises:
        InputError: no input video, two videos with one name, settings that contradict the
            existing dataset, or another run writing into it.
        MediaError: the output folder cannot be written; with ``config.ray``, a video whose
            Ray worker died on every try.
        ModelFileError: the morphable model cannot be loaded.
        BackendUnavailableError: ``config.ray`` is set and Ray is not installed, or cannot be
            started or joined.
    """
    config = config or PrepareConfig()
    start = time.monotonic()
    if config.ray is not None:  # a missing Ray is a one-line error before any work
        from faceanime.dataset.on_ray import import_ray

        import_ray()
    root = Path(out_dir)
    inputs = find_videos(videos, exclude=root)
    if not inputs:
        raise InputError(f"no input videos in {', '.join(str(v) for v in videos) or 'nothing'} "
                         f"(looked for {', '.join(VIDEO_SUFFIXES)})")
    if config.shard is not None:
        total, inputs = len(inputs), select_shard(inputs, *config.shard)
        if not inputs:
            raise InputError(f"shard {config.shard[0]}/{config.shard[1]} of the {total} input "
                             "videos is empty; use fewer shards")
    _make_folders(root, config.crops)
    report = PrepareReport(root)
    with _exclusive(root):
        _remove_leftovers(root)
        model = load_model(config.model, device=config.device)
        new = not (root / MANIFEST).exists()
        writer = _ManifestWriter(_open_manifest(root, config, model.name), root)
        shards: dict[Path, Manifest] = {}
        for shard in dict.fromkeys(v.shard for v in inputs if v.shard is not None):
            shards[shard] = load_manifest(shard)
            _check_compatible(shard, shards[shard], config, model.name)
        if new:  # an interrupted first run still leaves a folder recognisable as a dataset
            writer.dirty = True
            writer.flush()
        # A merged video is known by its record: its source may live on another machine.
        sizes = {v.stem: shards[v.shard].videos[v.stem].bytes if v.shard is not None
                 else _file_size(v.path) for v in inputs}
        for video in inputs:
            old = writer.manifest.videos.get(video.stem)
            if old is not None and not _same_video(old, video, sizes[video.stem]):
                raise InputError(
                    f"{root} already holds a video named {video.stem!r} from {old.source}, a "
                    f"different file than {video.path}; rename one or use another folder")
        preparer = _Preparer(root, config, model, writer, shards)
        try:
            with tqdm(total=len(inputs), unit="video", desc="prepare", leave=False,
                      disable=not config.progress) as bar:
                if config.ray is not None:
                    _prepare_on_ray(preparer, inputs, sizes, report, bar)
                for video in inputs:
                    if video.stem in report.entries:  # done on Ray
                        continue
                    entry, action = preparer.video(video, sizes[video.stem])
                    report.add(video.stem, entry, action, bar)
            # Ray reports videos as they finish; the report keeps the inputs' order.
            report.entries = {v.stem: report.entries[v.stem] for v in inputs}
            report.actions = {v.stem: report.actions[v.stem] for v in inputs}
        finally:
            preparer.close()
            writer.flush()
    report.seconds = time.monotonic() - start
    return report

