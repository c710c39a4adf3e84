"""Training windows streamed from tar shards (:mod:`faceanime.dataset.shards`), for datasets
larger than memory.

Each process of a run (and each loader worker) reads its own shards, video by video; every
video read gives windows of ``W`` valid frames at random places (``per_video`` of them, or with
``balanced`` off about one per ``W`` frames, so that long videos weigh more), which pass through
a shuffle buffer of ``buffer`` windows; batches are taken from the buffer's output. Memory holds
the buffer's windows and one video's coefficients, whatever the dataset's size.

What the in-memory trainer computes over all training videos comes from a bounded part here:
the feature statistics (:class:`~faceanime.dynamics.features.Normalizer`) from the first
``stats_videos`` training videos in the index's order, read alike by every process; the
validation videos are held in memory, as in the folder layout.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Iterator, Sequence

import torch

from faceanime.dataset.shards import (
    ShardIndex,
    epoch_samples,
    find_samples,
    first_samples,
    guarded,
    reader_batches,
)
from faceanime.distributed import Ranks
from faceanime.dynamics.data import Dataset, VideoSequence, sequence
from faceanime.errors import InputError, ShardError


def _check(video: VideoSequence, model: str, camera: str, ke: int, n_shape: int, shard: str,
           got_model: str, got_camera: str) -> None:
    got_ke = video.raw.shape[1] - 8
    if (got_model, got_camera, got_ke) != (model, camera, ke) or video.shape.shape[0] > n_shape:
        raise ShardError(f"{shard}: video {video.name!r} was fitted with model {got_model!r}, "
                         f"camera {got_camera!r}, {got_ke} expressions and "
                         f"{video.shape.shape[0]} shape coefficients, the others with "
                         f"{model!r}, {camera!r}, {ke} and at most {n_shape}; shard datasets "
                         "prepared alike")


def load_stream_dataset(index: ShardIndex, val_names: Sequence[str], stats_videos: int,
                        with_val: bool) -> tuple[Dataset, list[VideoSequence],
                                                 list[VideoSequence]]:
    """The bounded part of a shard set the trainer holds: the first ``stats_videos`` training
    videos (for the feature statistics) and, ``with_val``, the validation videos.

    Returns:
        A :class:`Dataset` of both (for the model checks), the statistics' videos and the
        validation videos.

    Raises:
        ShardError: unreadable shards, or videos fitted with different models or cameras.
    """
    stats, fits = [], []
    for sample in first_samples(index, stats_videos, exclude=val_names, crops=False):
        coeffs = sample.coefficients()
        stats.append(sequence(sample.stem, coeffs))
        fits.append((sample.shard, coeffs.model, coeffs.camera))
    if not stats:
        raise InputError(f"{index.location}: every video is held out for validation; leave at "
                         "least one to train on")
    val = []
    if with_val and val_names:
        for sample in find_samples(index, val_names, crops=False):
            coeffs = sample.coefficients()
            val.append(sequence(sample.stem, coeffs))
            fits.append((sample.shard, coeffs.model, coeffs.camera))
    model, camera = fits[0][1], fits[0][2]
    ke = stats[0].raw.shape[1] - 8
    n_shape = max(v.shape.shape[0] for v in stats + val)
    for video, (shard, got_model, got_camera) in zip(stats + val, fits, strict=True):
        _check(video, model, camera, ke, n_shape, shard, got_model, got_camera)
    if index.model != model:
        raise ShardError(f"{index.location}: the index says model {index.model!r} but the "
                         f"coefficients were fitted with {model!r}; write the shards again")
    return Dataset(index.location, model, camera, ke, stats + val), stats, val


class WindowStream(torch.utils.data.IterableDataset):
    """This process's training windows, batch by batch: ``(b, S, D)`` raw windows and
    ``(b, Ks)`` identities, ``b`` = this process's share of the global batch.

    Args:
        index: the shards.
        ranks: this process's place in the run (it reads its own shards).
        batch: windows per batch (this process's share).
        window: frames per window ``S``.
        dataset: the :func:`load_stream_dataset` videos: model, camera and sizes every streamed
            video must share (identities are padded to their widest).
        per_video: windows drawn from each video read (``balanced``).
        balanced: draw ``per_video`` windows from every video (else about one per ``window``
            frames it has windows for).
        buffer: windows in the shuffle buffer.
        seed, start: the run's seed and first step (seed the readers).
        exclude: videos left out (validation).
    """

    def __init__(self, index: ShardIndex, ranks: Ranks, batch: int, window: int,
                 dataset: Dataset, per_video: int, balanced: bool, buffer: int, seed: int,
                 start: int, exclude: Sequence[str]):
        super().__init__()
        self.index, self.ranks, self.batch, self.window = index, ranks, batch, window
        self.model, self.camera, self.ke = dataset.model, dataset.camera, dataset.n_expression
        self.n_shape = max(v.shape.shape[0] for v in dataset.videos)
        self.per_video, self.balanced, self.buffer = per_video, balanced, buffer
        self.seed, self.start, self.exclude = seed, start, tuple(exclude)

    def _windows(self, shards: list[int], rng: random.Random
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for _ in iter(int, 1):  # epochs, without end: the trainer counts steps
            drawn = 0
            for sample in epoch_samples(self.index, shards, rng, self.exclude, crops=False):
                coeffs = sample.coefficients()
                video = sequence(sample.stem, coeffs)
                _check(video, self.model, self.camera, self.ke, self.n_shape, sample.shard,
                       coeffs.model, coeffs.camera)
                segments = video.segments(self.window)
                # Every window start, numbered over the segments: first[i] + j for j < count.
                first = [start for start, _ in segments]
                ends = list(itertools.accumulate(stop - start - self.window + 1
                                                 for start, stop in segments))
                total = ends[-1] if ends else 0
                if not total:
                    continue
                shape = torch.nn.functional.pad(video.shape, (0, self.n_shape -
                                                              video.shape.shape[0]))
                draws = self.per_video if self.balanced else math.ceil(total / self.window)
                for _ in range(draws):
                    pick = rng.randrange(total)
                    seg = bisect.bisect_right(ends, pick)
                    at = first[seg] + pick - (ends[seg - 1] if seg else 0)
                    # A copy: a view would keep the whole video alive in the buffer.
                    yield video.raw[at:at + self.window].clone(), shape
                    drawn += 1
            if not drawn:
                return  # nothing here (its videos held out, or too short): the others read on

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for chunk in reader_batches(len(self.index.shards), self.ranks, self.seed, self.start,
                                    self.buffer, self.batch, self._windows):
            yield torch.stack([r for r, _ in chunk]), torch.stack([s for _, s in chunk])

    def __iter__(self):
        return guarded(self._batches)


__all__ = ["WindowStream", "load_stream_dataset"]
