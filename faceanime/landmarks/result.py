"""Landmark tracks: the result of the video path (an image is a one-frame track) and its ``.npz``
file, the format later stages (the 3DMM fitter) read.

``.npz`` keys (see docs/landmarks.md):

==================  ==============  ======================================================
key                 shape, dtype    meaning
==================  ==============  ======================================================
``landmarks``       (T, 68, 2) f32  smoothed points, 0-based pixel ``x, y``; NaN if invalid
``raw_landmarks``   (T, 68, 2) f32  the detector's points before smoothing
``boxes``           (T, 4) f32      face box ``x0, y0, x1, y1`` per frame; NaN if invalid
``valid``           (T,) bool       a face was found in that frame
``image_size``      (2,) int32      ``height, width`` of the frames
``fps``             () f64          frame rate; 0 for a still image
``backend``         () str          landmark backend name
``source``          () str          input file the landmarks came from
``detected``        (T,) bool       the face detector ran on that frame (videos only)
==================  ==============  ======================================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from faceanime.errors import InputError
from faceanime.io import load_npz, save_npz
from faceanime.landmarks.detector import N_POINTS, Face

NPZ_KEYS = ("landmarks", "raw_landmarks", "boxes", "valid", "image_size", "fps", "backend",
            "source")


@dataclass(frozen=True)
class VideoLandmarks:
    """68-point landmarks of one face over ``T`` frames.

    Attributes:
        points: ``(T, 68, 2)`` float32 smoothed landmarks (NaN in invalid frames, never zeros).
        raw: ``(T, 68, 2)`` float32 landmarks before smoothing.
        boxes: ``(T, 4)`` float32 face boxes ``x0, y0, x1, y1`` (NaN in invalid frames).
        valid: ``(T,)`` bool, True where a face was found.
        fps: frames per second (0 for a still image).
        image_size: ``(height, width)`` of the frames.
        backend: the landmark backend's name.
        source: the input's path or name.
        detected: ``(T,)`` bool, True where the face detector ran (the rest were tracked), or
            None (still images, files without it).
    """

    points: np.ndarray
    raw: np.ndarray
    boxes: np.ndarray
    valid: np.ndarray
    fps: float
    image_size: tuple[int, int]
    backend: str = ""
    source: str = ""
    detected: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.points)

    @classmethod
    def from_face(cls, face: Face, image_size: tuple[int, int], backend: str = "",
                  source: str = "") -> VideoLandmarks:
        """A one-frame track (fps 0) holding a still image's face."""
        pts = np.asarray(face.points, np.float32)[None]
        return cls(points=pts.copy(), raw=pts.copy(),
                   boxes=np.asarray(face.box, np.float32)[None].copy(),
                   valid=np.ones(1, dtype=bool), fps=0.0,
                   image_size=(int(image_size[0]), int(image_size[1])),
                   backend=backend, source=source)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the ``.npz`` file (atomically; keys in the module docstring)."""
        extra = {} if self.detected is None else {"detected": np.asarray(self.detected, bool)}
        return save_npz(path, landmarks=np.asarray(self.points, np.float32),
                        raw_landmarks=np.asarray(self.raw, np.float32),
                        boxes=np.asarray(self.boxes, np.float32),
                        valid=np.asarray(self.valid, bool),
                        image_size=np.asarray(self.image_size, np.int32),
                        fps=np.float64(self.fps), backend=np.str_(self.backend),
                        source=np.str_(self.source), **extra)

    @classmethod
    def load(cls, path: str | os.PathLike) -> VideoLandmarks:
        """Read a file written by :meth:`save`.

        Raises:
            InputError: missing file, not an ``.npz``, missing keys or inconsistent shapes.
        """
        path = Path(path)
        arrays = load_npz(path, "landmarks file")
        missing = [k for k in NPZ_KEYS if k not in arrays]
        if missing:
            raise InputError(f"{path}: not a faceanime landmarks file (missing "
                             f"{', '.join(missing)})")
        detected = arrays["detected"].astype(bool) if "detected" in arrays else None
        points = arrays["landmarks"].astype(np.float32)
        t = len(points)
        if (points.shape != (t, N_POINTS, 2) or arrays["raw_landmarks"].shape != points.shape
                or arrays["boxes"].shape != (t, 4) or arrays["valid"].shape != (t,)
                or arrays["image_size"].shape != (2,)):
            raise InputError(f"{path}: inconsistent array shapes in landmarks file")
        return cls(points=points, raw=arrays["raw_landmarks"].astype(np.float32),
                   boxes=arrays["boxes"].astype(np.float32),
                   valid=arrays["valid"].astype(bool), fps=float(arrays["fps"]),
                   image_size=tuple(int(v) for v in arrays["image_size"]),
                   backend=str(arrays["backend"]), source=str(arrays["source"]),
                   detected=detected)
