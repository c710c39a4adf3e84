"""The dataset folder's layout and its ``manifest.json``: which videos are done, which were skipped
and why. The manifest is the only thing a resumed run trusts; every file it points to was written
atomically (a temporary name renamed when complete), and an entry turns ``ok`` only after all of
its video's files are in place.

Layout (docs/dataset.md)::

    DATASET_DIR/manifest.json
    DATASET_DIR/coefficients/<stem>.npz   Coefficients.save, one per video
    DATASET_DIR/crops/<stem>.mp4          aligned face crops, crop_size², same frames and fps
    DATASET_DIR/crops/<stem>.npz          affine (T, 2, 3), crop_size, valid (T,)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from faceanime.errors import InputError
from faceanime.io import atomic_path

MANIFEST = "manifest.json"
COEFFICIENTS = "coefficients"
CROPS = "crops"
MANIFEST_VERSION = 1

# Skip reasons start with one of these, then ": " and the details.
NO_FACE = "no face"
TOO_SHORT = "too short"
UNREADABLE = "unreadable"


def coefficient_path(root: str | os.PathLike, stem: str) -> Path:
    """``root/coefficients/<stem>.npz``."""
    return Path(root) / COEFFICIENTS / f"{stem}.npz"


def crop_paths(root: str | os.PathLike, stem: str) -> tuple[Path, Path]:
    """``root/crops/<stem>.mp4`` and ``root/crops/<stem>.npz``."""
    folder = Path(root) / CROPS
    return folder / f"{stem}.mp4", folder / f"{stem}.npz"


@dataclass(frozen=True)
class VideoEntry:
    """One video of the dataset, as the manifest records it.

    Attributes:
        status: ``"ok"`` (its files are complete) or ``"skipped"``.
        reason: why it was skipped (``"no face: ..."``, ``"too short: ..."``,
            ``"unreadable: ..."``), None when ok.
        frames: frame count ``T`` (0 when unreadable).
        fps: frame rate (0 when unreadable).
        source: absolute path of the input video.
        bytes: size of the input file, to notice a replaced video.
        valid_frames: frames with a face.
    """

    status: Literal["ok", "skipped"]
    reason: str | None
    frames: int
    fps: float
    source: str
    bytes: int = 0
    valid_frames: int = 0

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "reason": self.reason, "frames": self.frames,
                "fps": self.fps, "source": self.source, "bytes": self.bytes,
                "valid_frames": self.valid_frames}


@dataclass
class Manifest:
    """``manifest.json``: the settings shared by every video and one entry per video stem.

    Attributes:
        model: name of the morphable model the coefficients belong to.
        crop_size: side of the crops, None while no crops were made.
        crop_scale: the crops' extent (see :class:`~faceanime.dataset.PrepareConfig`).
        videos: stem -> entry.
    """

    model: str
    crop_size: int | None = None
    crop_scale: float | None = None
    videos: dict[str, VideoEntry] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"version": MANIFEST_VERSION, "model": self.model, "crop_size": self.crop_size,
                "crop_scale": self.crop_scale,
                "videos": {stem: e.to_json() for stem, e in sorted(self.videos.items())}}

    def save(self, root: str | os.PathLike) -> Path:
        """Write ``root/manifest.json`` atomically."""
        path = Path(root) / MANIFEST
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")
        return path


def load_manifest(root: str | os.PathLike) -> Manifest:
    """Read ``root/manifest.json``.

    Raises:
        InputError: missing, not JSON, or not a dataset manifest of a known version.
    """
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise InputError(f"{path}: no such manifest; {root} is not a dataset folder "
                         "(make one with 'faceanime prepare')")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data["version"] != MANIFEST_VERSION:
            raise InputError(f"{path}: manifest version {data['version']}, this faceanime "
                             f"reads version {MANIFEST_VERSION}")
        for stem, e in data["videos"].items():
            if e["status"] not in ("ok", "skipped"):
                raise ValueError(f"video {stem!r} has status {e['status']!r}")
        videos = {str(stem): VideoEntry(
            status=e["status"], reason=e["reason"], frames=int(e["frames"]),
            fps=float(e["fps"]), source=str(e["source"]), bytes=int(e.get("bytes", 0)),
            valid_frames=int(e.get("valid_frames", 0))) for stem, e in data["videos"].items()}
        size = data.get("crop_size")
        scale = data.get("crop_scale")
        return Manifest(model=str(data["model"]), crop_size=None if size is None else int(size),
                        crop_scale=None if scale is None else float(scale), videos=videos)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{path}: not a readable dataset manifest ({type(exc).__name__}: "
                         f"{exc}); delete it to start the dataset afresh") from exc
