"""Training data: per-video coefficient sequences from a dataset folder, the train/validation
split (by video, never by frame: windows of one video are too alike for an honest validation),
and fixed-length windows drawn from them.

Dataset layout read here (written by ``faceanime prepare``; docs/dynamics.md)::

    DATASET_DIR/manifest.json           {"version": 1, "model": "sfm",
                                          "videos": {stem: {"status": "ok" | "skipped", ...}}}
    DATASET_DIR/coefficients/<stem>.npz  Coefficients.save() of the whole video

Only videos with status ``ok`` are read. Frames where the fitter found no face (``valid`` False)
split a video into segments; windows never cross them.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from faceanime.coefficients import Coefficients
from faceanime.errors import InputError

MANIFEST = "manifest.json"
COEFFICIENTS = "coefficients"


@dataclass
class VideoSequence:
    """One video's coefficients.

    Attributes:
        name: the video's stem.
        raw: ``(T, D)`` raw coefficient vectors (``Coefficients.to_tensor``).
        shape: ``(Ks,)`` identity.
        valid: ``(T,)`` bool, frames with a face.
        fps: frame rate.
    """

    name: str
    raw: torch.Tensor
    shape: torch.Tensor
    valid: torch.Tensor
    fps: float

    def segments(self, min_length: int) -> list[tuple[int, int]]:
        """``(start, stop)`` of the runs of valid frames at least ``min_length`` long."""
        runs, start = [], None
        for i, ok in enumerate([*self.valid.tolist(), False]):
            if ok and start is None:
                start = i
            elif not ok and start is not None:
                if i - start >= min_length:
                    runs.append((start, i))
                start = None
        return runs


@dataclass
class Dataset:
    """The sequences of a dataset folder (or of a shard set's bounded part) and what they were
    fitted with."""

    root: Path | str
    model: str
    camera: str
    n_expression: int
    videos: list[VideoSequence]

    def select(self, names: list[str] | tuple[str, ...]) -> list[VideoSequence]:
        by_name = {v.name: v for v in self.videos}
        return [by_name[n] for n in names]


def sequence(stem: str, coeffs: Coefficients) -> VideoSequence:
    """A video's coefficients as a :class:`VideoSequence` (frames without a ``valid`` flag count
    as valid; a video without a frame rate is taken as 30 fps)."""
    valid = coeffs.valid if coeffs.valid is not None else torch.ones(coeffs.n_frames,
                                                                     dtype=torch.bool)
    return VideoSequence(stem, coeffs.to_tensor().float(), coeffs.shape.float(), valid.bool(),
                         coeffs.fps or 30.0)


def read_manifest(root: str | os.PathLike) -> dict:
    """The dataset's ``manifest.json``.

    Raises:
        InputError: missing, unreadable or of an unknown version.
    """
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise InputError(f"{path}: no manifest; DATASET_DIR must be a folder written by "
                         "'faceanime prepare'")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable manifest ({exc}); re-run 'faceanime prepare'") \
            from exc
    if not isinstance(manifest, dict) or manifest.get("version") != 1 \
            or not isinstance(manifest.get("videos"), dict):
        raise InputError(f"{path}: not a version-1 dataset manifest; re-run 'faceanime prepare'")
    return manifest


def load_dataset(root: str | os.PathLike) -> Dataset:
    """Read every ``ok`` video of a dataset folder.

    Raises:
        InputError: no usable video, or videos fitted with different models, cameras or
            expression sizes.
    """
    root = Path(root)
    manifest = read_manifest(root)
    videos, model, camera, ke = [], None, None, None
    for stem in sorted(manifest["videos"]):
        entry = manifest["videos"][stem]
        if not isinstance(entry, dict) or entry.get("status") != "ok":
            continue
        path = root / COEFFICIENTS / f"{stem}.npz"
        coeffs = Coefficients.load(path)
        for what, have, got in (("model", model, coeffs.model), ("camera", camera, coeffs.camera),
                                ("expression size", ke, coeffs.expression.shape[1])):
            if have is not None and have != got:
                raise InputError(f"{path}: {what} {got!r} differs from the other videos' "
                                 f"{have!r}; prepare the dataset with one model and camera")
        model, camera, ke = coeffs.model, coeffs.camera, coeffs.expression.shape[1]
        videos.append(sequence(stem, coeffs))
    if not videos:
        raise InputError(f"{root}: no video with status 'ok' in the manifest; nothing to train on")
    expected = manifest.get("model")
    if expected is not None and str(expected) != model:
        raise InputError(f"{root}: the manifest says model {expected!r} but the coefficients "
                         f"were fitted with {model!r}; re-run 'faceanime prepare'")
    return Dataset(root, model, camera, ke, videos)


def split_videos(names: list[str], val_videos: tuple[str, ...] = (), val_fraction: float = 0.2,
                 seed: int = 0, limit: int | None = None) -> tuple[list[str], list[str]]:
    """Train and validation video names.

    Args:
        names: all videos.
        val_videos: explicit validation videos (must exist); empty: a seeded random
            ``val_fraction`` of them, at least one when there are two or more videos.
        val_fraction: see above.
        seed: seeds the random choice.
        limit: most videos the fraction holds out (None: no limit); streaming from shards
            holds the validation videos in memory, so it caps them.

    Returns:
        ``(train, val)``, each sorted; ``val`` may be empty (one video, or fraction 0).
    """
    names = sorted(names)
    if val_videos:
        unknown = sorted(set(val_videos) - set(names))
        if unknown:
            raise InputError(f"validation video(s) {unknown} are not in the dataset "
                             f"(videos: {', '.join(names)})")
        val = sorted(set(val_videos))
    else:
        count = math.ceil(val_fraction * len(names)) if val_fraction > 0 else 0
        count = min(count, len(names) - 1, len(names) if limit is None else limit)
        order = torch.randperm(len(names), generator=torch.Generator().manual_seed(seed))
        val = sorted(names[i] for i in order[:count].tolist())
    train = [n for n in names if n not in val]
    if not train:
        raise InputError("every video is held out for validation; leave at least one to train on")
    return train, val


class WindowSampler:
    """Windows of ``window`` valid frames, drawn uniformly over all such windows of a set of
    videos (a long video gives proportionally more), on any device.

    Args:
        videos: the sequences.
        window: frames per window.
    """

    def __init__(self, videos: list[VideoSequence], window: int):
        raws, shapes, starts, counts, owners = [], [], [], [], []
        offset = 0
        for i, video in enumerate(videos):
            for start, stop in video.segments(window):
                starts.append(offset + start)
                counts.append(stop - start - window + 1)
                owners.append(i)
            raws.append(video.raw)
            shapes.append(video.shape)
            offset += video.raw.shape[0]
        if not starts:
            names = ", ".join(v.name for v in videos)
            raise InputError(f"no run of {window} frames with a face in {names}: use a shorter "
                             "--window or longer videos")
        self.window = window
        self.raw = torch.cat(raws)
        width = max(s.shape[0] for s in shapes)
        self.shapes = torch.stack([torch.nn.functional.pad(s, (0, width - s.shape[0]))
                                   for s in shapes])
        self.starts = torch.tensor(starts)
        self.counts = torch.tensor(counts)
        self.cumulative = self.counts.cumsum(0)
        self.owners = torch.tensor(owners)

    @property
    def n_windows(self) -> int:
        return int(self.cumulative[-1])

    def _gather(self, segment: torch.Tensor, offset: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        first = self.starts[segment] + offset
        index = first[:, None] + torch.arange(self.window)
        return self.raw[index], self.shapes[self.owners[segment]]

    def sample(self, batch: int, generator: torch.Generator, balanced: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch`` random windows: raw ``(B, W, D)`` and identities ``(B, Ks)``.

        Args:
            batch: ``B``.
            generator: the random source.
            balanced: draw each video equally often (else each window: long videos dominate).
        """
        if balanced:
            owners = self.owners.unique()
            video = owners[torch.randint(len(owners), (batch,), generator=generator)]
            # Windows of the chosen video lie in its segments, a contiguous range of ``pick``.
            first = torch.searchsorted(self.owners, video)
            last = torch.searchsorted(self.owners, video, right=True) - 1
            base = torch.cat([torch.zeros(1, dtype=torch.long), self.cumulative])
            lo, hi = base[first], self.cumulative[last]
            pick = lo + (torch.rand(batch, generator=generator) * (hi - lo)).long().clamp(
                max=(hi - lo - 1).clamp_min(0))
        else:
            pick = torch.randint(self.n_windows, (batch,), generator=generator)
        segment = torch.searchsorted(self.cumulative, pick, right=True)
        before = torch.cat([torch.zeros(1, dtype=torch.long), self.cumulative])[segment]
        return self._gather(segment, pick - before)

    def fixed(self, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Every window starting at a multiple of ``stride`` within each segment (validation):
        raw ``(N, W, D)`` and identities ``(N, Ks)``."""
        segs, offs = [], []
        for s, count in enumerate(self.counts.tolist()):
            for off in range(0, count, stride):
                segs.append(s)
                offs.append(off)
        return self._gather(torch.tensor(segs), torch.tensor(offs))
