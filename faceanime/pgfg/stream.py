"""Training pairs streamed from tar shards (:mod:`faceanime.dataset.shards`), for datasets
larger than memory.

Each process of a run (and each loader worker) reads its own shards, video by video. From every
video read it draws ``per_video`` pairs as :class:`~faceanime.pgfg.data.PairSampler` does (two
usable frames at most ``max_gap`` apart), decodes only those frames of its crops and builds
their prior pieces; each pair becomes a two-frame :class:`~faceanime.pgfg.data.VideoPairs`,
which passes through a shuffle buffer of ``buffer`` pairs. Batches are taken from the buffer's
output and assembled by :func:`~faceanime.pgfg.data.make_batch` as in the folder layout
(source frame 0, target frame 1 of each pair). Memory holds the buffer's pairs (two crops, their
vertices and prior pieces each: about 0.2 MB at 128 px) and one video's decoded frames.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import torch

from faceanime.dataset.shards import (
    CROPS_META,
    ShardIndex,
    ShardSample,
    epoch_samples,
    find_samples,
    guarded,
    reader_batches,
)
from faceanime.distributed import Ranks
from faceanime.errors import InputError, ShardError
from faceanime.morphable.model import FaceModel
from faceanime.pgfg.data import PriorBank, VideoPairs, crop_frames, video_pairs


def _frames(sample: ShardSample, model: FaceModel, size: int):
    coeffs = sample.coefficients()
    if coeffs.model != model.name:
        raise ShardError(f"{sample.member('coefficients.npz')}: fitted with model "
                         f"{coeffs.model!r}, not {model.name!r}; shard datasets prepared alike")
    try:
        crop, got, lms, usable = crop_frames(coeffs, sample.crop_meta(), sample.member(CROPS_META))
    except (KeyError, ValueError) as exc:
        raise ShardError(f"{sample.member(CROPS_META)}: unusable crop metadata ({exc}); write "
                         "the shards again") from exc
    if got != size:
        raise ShardError(f"{sample.member(CROPS_META)}: crops of {got} px, the index says "
                         f"{size}; write the shards again")
    return crop, lms, usable


def sample_video_pairs(sample: ShardSample, model: FaceModel, size: int, stride: int
                       ) -> VideoPairs:
    """A whole video from a shard, as :func:`~faceanime.pgfg.data.load_video_pairs` reads it
    from a folder (validation)."""
    crop, lms, usable = _frames(sample, model, size)
    return video_pairs(sample.stem, sample.crops(size), crop, lms, usable, model, stride)


def _take(part: VideoPairs, rows: list[int]) -> VideoPairs:
    """Frames ``rows`` of ``part`` as a :class:`VideoPairs` of their own (copies: a view would
    keep the whole part alive in the buffer)."""
    index = torch.tensor(rows)
    bank = PriorBank(part.bank.screen[index], part.bank.visible[index], part.bank.colors[index])
    return VideoPairs(part.name, part.crops[index], part.coeffs.frames(index), bank,
                      part.landmarks[index], part.usable[index],
                      None if part.screen is None else part.screen[index])


class PairStream(torch.utils.data.IterableDataset):
    """This process's training pairs, batch by batch: lists of ``b`` two-frame
    :class:`VideoPairs` (frame 0 the source, 1 the target), ``b`` = this process's share of the
    global batch.

    Args:
        index: the shards (with crops).
        ranks: this process's place in the run (it reads its own shards).
        batch: pairs per batch (this process's share).
        model: the morphable model.
        stride: sparse prior stride.
        max_gap: most frames between a pair's source and target (0: any two).
        per_video: pairs drawn from each video read.
        buffer: pairs in the shuffle buffer.
        seed, start: the run's seed and first step (seed the readers).
        exclude: videos left out (validation).
        screen: keep every vertex's position (for the dense face flow).
    """

    def __init__(self, index: ShardIndex, ranks: Ranks, batch: int, model: FaceModel,
                 stride: int, max_gap: int, per_video: int, buffer: int, seed: int, start: int,
                 exclude: Sequence[str], screen: bool):
        super().__init__()
        if index.crop_size is None:
            raise InputError(f"{index.location}: the shards hold no crops; the generator trains "
                             "on crops: prepare without --no-crops and shard again")
        self.index, self.ranks, self.batch, self.model = index, ranks, batch, model
        self.size, self.stride, self.max_gap = index.crop_size, stride, max_gap
        self.per_video, self.buffer, self.seed, self.start = per_video, buffer, seed, start
        self.exclude, self.screen = tuple(exclude), screen

    def _pairs(self, shards: list[int], rng: random.Random) -> Iterator[VideoPairs]:
        for _ in iter(int, 1):  # epochs, without end: the trainer counts steps
            drawn = 0
            for sample in epoch_samples(self.index, shards, rng, self.exclude):
                crop, lms, usable = _frames(sample, self.model, self.size)
                frames = usable.nonzero()[:, 0].tolist()
                if len(frames) < 2:
                    continue
                pairs = []
                for _ in range(self.per_video):
                    s = rng.choice(frames)
                    near = [f for f in frames if abs(f - s) <= self.max_gap] if self.max_gap \
                        else frames
                    pairs.append((s, rng.choice(near)))
                needed = sorted({f for pair in pairs for f in pair})
                index = torch.tensor(needed)
                part = video_pairs(sample.stem, sample.crops(self.size, needed),
                                   crop.frames(index), lms[index], usable[index], self.model,
                                   self.stride, self.screen)
                row = {f: i for i, f in enumerate(needed)}
                for s, t in pairs:
                    yield _take(part, [row[s], row[t]])
                    drawn += 1
            if not drawn:
                return  # nothing here (its videos held out, or unusable): the others read on

    def _batches(self) -> Iterator[list[VideoPairs]]:
        yield from reader_batches(len(self.index.shards), self.ranks, self.seed, self.start,
                                  self.buffer, self.batch, self._pairs)

    def __iter__(self):
        return guarded(self._batches)


def load_stream_val(index: ShardIndex, names: Sequence[str], model: FaceModel, stride: int
                    ) -> list[VideoPairs]:
    """The validation videos, whole, from the shards that hold them (those with two usable
    frames, as the folder layout keeps)."""
    if index.crop_size is None:
        raise InputError(f"{index.location}: the shards hold no crops; the generator trains on "
                         "crops: prepare without --no-crops and shard again")
    videos = [sample_video_pairs(s, model, index.crop_size, stride)
              for s in find_samples(index, names)]
    return [v for v in videos if int(v.usable.sum()) >= 2]


__all__ = ["PairStream", "load_stream_val", "sample_video_pairs"]
