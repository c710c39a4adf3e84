"""Training data from talking-head videos: per-video coefficient sequences (for the 3DDP dynamics
model) and aligned face crops (for the generator), in one resumable dataset folder.

::

    from faceanime.dataset import PrepareConfig, prepare_dataset, load_manifest
    report = prepare_dataset(["videos/"], "dataset", PrepareConfig(crop_size=256))
    report.ok, report.skipped, report.skipped_table()
    manifest = load_manifest("dataset")      # manifest.videos[stem].status, .frames, .fps

- :mod:`~faceanime.dataset.prepare` — the run: find videos, track, fit, crop, resume, report;
- :mod:`~faceanime.dataset.crops` — steady per-frame crop transforms and streamed crops;
- :mod:`~faceanime.dataset.manifest` — the folder layout and ``manifest.json``;
- :mod:`~faceanime.dataset.shards` — the folder as tar shards with an index
  (``faceanime dataset shard``), and the streaming reader the trainers use on them.

The layout, resumability and skip reasons are in ``docs/dataset.md``.
"""

from faceanime.dataset.crops import crop_track, iter_crops, smooth_affines
from faceanime.dataset.manifest import (
    NO_FACE,
    TOO_SHORT,
    UNREADABLE,
    Manifest,
    VideoEntry,
    coefficient_path,
    crop_paths,
    load_manifest,
)
from faceanime.dataset.prepare import (
    STEM_SEPARATOR,
    VIDEO_SUFFIXES,
    PrepareConfig,
    PrepareReport,
    VideoInput,
    find_videos,
    prepare_dataset,
    select_shard,
)

__all__ = [
    "NO_FACE",
    "STEM_SEPARATOR",
    "TOO_SHORT",
    "UNREADABLE",
    "VIDEO_SUFFIXES",
    "Manifest",
    "PrepareConfig",
    "PrepareReport",
    "VideoEntry",
    "VideoInput",
    "coefficient_path",
    "crop_paths",
    "crop_track",
    "find_videos",
    "iter_crops",
    "load_manifest",
    "prepare_dataset",
    "select_shard",
    "smooth_affines",
]
