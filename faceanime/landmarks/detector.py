"""One landmark-detector interface, backends chosen by name.

Every backend is a two-stage pipeline, as the libraries themselves are: a face *detector* that
returns boxes, and a *landmark model* that places 68 iBUG points inside a box. Exposing the two
stages separately is what lets :mod:`faceanime.landmarks.tracking` skip the (expensive) detector on
most video frames and run only the (cheap) landmark model in a box derived from the previous frame.

Detection runs on a copy of the image downscaled to ``DetectorConfig.max_side`` (HOG on a
1280×1024 photo costs ~100 ms, on 640×512 ~25 ms); landmarks are placed on the full-resolution
image. Points are float32 pixel coordinates, 0-based, pixel centre at integer coordinates (see
:mod:`faceanime.landmarks.boxes`).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import ClassVar

import numpy as np

from faceanime.errors import FaceNotFoundError, InputError
from faceanime.landmarks.boxes import rescale_boxes

N_POINTS = 68

# Backend name -> (module:class, the optional import it needs, the pip extra installing it).
# Read-only: adding a backend is adding a line here, not registering at import time.
BACKENDS = MappingProxyType({
    "dlib": ("faceanime.landmarks.dlib_backend:DlibDetector", "dlib", None),
    "mediapipe": ("faceanime.landmarks.mediapipe_backend:MediapipeDetector", "mediapipe",
                  "mediapipe"),
    "fan": ("faceanime.landmarks.fan_backend:FanDetector", "face_alignment", "fan"),
})


@dataclass(frozen=True)
class DetectorConfig:
    """Settings shared by all backends (each field's comment is its CLI help)."""

    max_side: int = 640  # detect faces on a copy whose longer side is at most this many pixels
    upsample_retry: bool = True  # when nothing is found, retry on a copy at twice the size
    fallback: bool = True  # when still nothing: dlib's CNN detector (seconds on a CPU), upright
    upright: bool = True  # photos: look again on turned close-ups for a tilted head (dlib)
    device: str = "cpu"  # torch device for the fan backend (dlib and mediapipe always use the CPU)


@dataclass(frozen=True)
class Face:
    """One detected face.

    Attributes:
        points: ``(68, 2)`` float32 iBUG landmarks ``(x, y)``, 0-based pixel coordinates.
        box: ``(4,)`` float32 detector box ``x0, y0, x1, y1`` in the same coordinates.
        score: detector confidence (backend units: dlib's SVM margin, a probability for
            mediapipe and fan).
        method: how it was found, when not by the backend's own first detector (e.g. "CNN
            detector, face tilted 45°" by dlib's fallback); "" otherwise.
        faces: how many faces the search that found it found in the image (a job's summary
            says which of a group photo's faces moved).
    """

    points: np.ndarray
    box: np.ndarray
    score: float
    method: str = ""
    faces: int = 1

    @property
    def area(self) -> float:
        """Box area in pixels², the sort key for "largest face first"."""
        w, h = self.box[2:] - self.box[:2]
        return float(max(w, 0.0) * max(h, 0.0))


def as_rgb_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Validate an image array: ``(H, W, 3)`` uint8 (``(H, W)`` grey is expanded), C-contiguous.

    Raises:
        InputError: another shape or dtype.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"{name}: expected an (H, W, 3) uint8 RGB image, got "
                         f"{image.shape} {image.dtype}")
    if min(image.shape[:2]) < 8:
        raise InputError(f"{name}: image of {image.shape[1]}×{image.shape[0]} pixels is too small "
                         "to hold a face")
    return np.ascontiguousarray(image)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resample a ``(H, W, 3)`` uint8 image to ``size = (width, height)`` (antialiased bilinear;
    Pillow's C resampler is ~8× faster than torch's here)."""
    from PIL import Image

    w, h = int(size[0]), int(size[1])
    if (w, h) == (image.shape[1], image.shape[0]):
        return image
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR, reducing_gap=2.0))


class LandmarkDetector(ABC):
    """A face detector plus a 68-point landmark model.

    Subclasses implement :meth:`detect_boxes` and :meth:`landmarks_in_box`; :meth:`detect` and
    :meth:`find_boxes` add the downscaling and ordering. Models load lazily, once per instance.
    """

    name: ClassVar[str] = ""
    #: whether :meth:`landmarks_in_box` itself rejects boxes without a face (returns None); the
    #: tracker's convergence test is skipped for such backends.
    self_verifying: ClassVar[bool] = False
    #: whether the detector finds more faces on an upsampled image (HOG's window is 80 px).
    upsample_helps: ClassVar[bool] = False
    #: whether a forked child process may go on using an instance built (and loaded) in its
    #: parent: plain native code with no threads of its own (dlib), unlike graph runtimes.
    fork_safe: ClassVar[bool] = False

    def __init__(self, config: DetectorConfig | None = None):
        self.config = config or DetectorConfig()
        if self.config.max_side < 64:
            raise InputError(f"max_side={self.config.max_side}: must be at least 64 pixels")

    # -- the two stages each backend provides -------------------------------------------------

    @abstractmethod
    def detect_boxes(self, image: np.ndarray, upsample: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Run the face detector on ``image`` as given (no resizing).

        Args:
            image: ``(H, W, 3)`` uint8 RGB.
            upsample: how many times to double the resolution internally (0 = none).

        Returns:
            ``(N, 4)`` float32 boxes in ``image``'s pixel coordinates and ``(N,)`` float32 scores.
        """

    @abstractmethod
    def landmarks_in_box(self, image: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        """Place the 68 landmarks inside a detector-like ``box`` (``(4,)``) of ``image``.

        Returns:
            ``(68, 2)`` float32 points, or None where the backend can tell there is no face.
        """

    # -- shared logic ---------------------------------------------------------------------------

    def find_boxes(self, image: np.ndarray, allow_retry: bool = True
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Detect faces on a downscaled copy of ``image`` and map the boxes back.

        Args:
            image: ``(H, W, 3)`` uint8 RGB.
            allow_retry: permit the upsampled second attempt of ``config.upsample_retry``.

        Returns:
            ``(N, 4)`` float32 boxes in ``image`` coordinates and ``(N,)`` scores, largest first.
        """
        h, w = image.shape[:2]
        scale = min(1.0, self.config.max_side / max(h, w))
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = resize_image(image, size)
        scale_xy = (size[0] / w, size[1] / h)
        boxes, scores = self.detect_boxes(small)
        if len(boxes) == 0 and allow_retry and self.config.upsample_retry and self.upsample_helps:
            # A face below the detector's minimum size (HOG: 80 px) at this scale: look again
            # at twice the scale (a large photo at 2 * max_side, a small one upsampled).
            if scale == 1.0:
                boxes, scores = self.detect_boxes(small, upsample=1)
            else:
                scale = min(1.0, 2 * scale)
                size = (max(1, round(w * scale)), max(1, round(h * scale)))
                scale_xy = (size[0] / w, size[1] / h)
                boxes, scores = self.detect_boxes(resize_image(image, size))
        boxes = rescale_boxes(boxes.reshape(-1, 4), scale_xy)
        scores = np.asarray(scores, dtype=np.float32).reshape(-1)
        areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1],
                                                                       0, None)
        order = np.argsort(-areas, kind="stable")
        return boxes[order], scores[order]

    def detect(self, image: np.ndarray, max_faces: int | None = None) -> list[Face]:
        """All faces in ``image``, largest box first.

        Args:
            image: ``(H, W, 3)`` uint8 RGB (``(H, W)`` grey accepted).
            max_faces: place landmarks for at most this many (largest) faces; None = all.
        """
        image = as_rgb_image(image)
        boxes, scores = self.find_boxes(image)
        if len(boxes) == 0 and self.config.fallback:
            return self.fallback_faces(image)[:max_faces]
        faces = []
        for box, score in zip(boxes[:max_faces], scores[:max_faces], strict=True):
            points = self.landmarks_in_box(image, box)
            if points is not None:
                faces.append(self.upright_face(image, Face(
                    points=np.asarray(points, np.float32), box=box, score=float(score))))
        return faces

    def upright_face(self, image: np.ndarray, face: Face) -> Face:
        """``face`` with its landmarks placed again on the face turned upright, where it is
        tilted far enough that the landmark model (trained on upright faces) misplaces them
        (dlib, with ``config.upright``); as it is otherwise."""
        return face

    def fallback_faces(self, image: np.ndarray) -> list[Face]:
        """Faces found by a slower, more thorough search, for when :meth:`find_boxes` found
        none (dlib: its CNN detector); largest first. None here."""
        return []

    def load(self) -> LandmarkDetector:
        """Load the models now rather than on first use (e.g. before forking processes that
        share them); returns the detector."""
        return self

    def close(self) -> None:  # noqa: B027 - optional hook, deliberately not abstract
        """Release native resources (a no-op for most backends)."""

    def __enter__(self) -> LandmarkDetector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def available_backends() -> list[str]:
    """Names of the backends whose package is importable here (without importing it)."""
    return [name for name, (_, module, _) in BACKENDS.items()
            if importlib.util.find_spec(module) is not None]


def create_detector(name: str = "dlib", config: DetectorConfig | None = None) -> LandmarkDetector:
    """Build the backend called ``name`` (see :data:`BACKENDS`).

    Raises:
        InputError: unknown name.
        BackendUnavailableError: the backend's optional package is not installed.
        ModelFileError: its model files are missing or unreadable.
    """
    if name not in BACKENDS:
        raise InputError(f"unknown landmark backend {name!r}; choose one of "
                         f"{', '.join(BACKENDS)}")
    target, _, _ = BACKENDS[name]
    module_name, cls_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(config)


def _image_and_name(image: np.ndarray | str | os.PathLike, name: str | None
                    ) -> tuple[np.ndarray, str]:
    if isinstance(image, (str, os.PathLike)):
        from faceanime.io import read_image

        return read_image(image), name or str(Path(image))
    return as_rgb_image(image, name or "image"), name or "image"


def detect_faces(image: np.ndarray | str | os.PathLike,
                 detector: str | LandmarkDetector = "dlib", *,
                 config: DetectorConfig | None = None, name: str | None = None) -> list[Face]:
    """All faces of an image (array or file), largest first; an empty list when there is none.

    Args:
        image: ``(H, W, 3)`` uint8 RGB array, or an image file path.
        detector: a backend name or an already built detector (reuses its loaded models).
        config: detector settings when ``detector`` is a name.
        name: how to call the image in error messages (defaults to the path).
    """
    image, name = _image_and_name(image, name)
    if isinstance(detector, str):
        with create_detector(detector, config) as det:
            return det.detect(image)
    return detector.detect(image)


def _check_index(count: int, face_index: int, name: str, backend: LandmarkDetector) -> None:
    if face_index < 0:
        raise InputError(f"face index {face_index}: must be 0 (largest face) or more")
    if count == 0:
        # Hints naming options belong to the command that ran (the CLI adds them).
        how = " (HOG at two scales, then its CNN detector)" if (
            backend.name == "dlib" and backend.config.fallback) else ""
        raise FaceNotFoundError(f"{name}: no face found by the {backend.name} detector{how}")
    if face_index >= count:
        raise FaceNotFoundError(f"{name}: face index {face_index} requested but only {count} "
                                f"face{'s' if count > 1 else ''} found (indices 0–{count - 1}, "
                                "largest first)")


def detect_landmarks(image: np.ndarray | str | os.PathLike,
                     backend: str | LandmarkDetector = "dlib", face_index: int = 0, *,
                     config: DetectorConfig | None = None, name: str | None = None) -> Face:
    """The 68 landmarks of one face: the ``face_index``-th largest (0 = largest).

    Args:
        image: ``(H, W, 3)`` uint8 RGB array, or an image file path.
        backend: a backend name (``"dlib"``, ``"mediapipe"``, ``"fan"``) or a built detector.
        face_index: which face, by decreasing box area.
        config: detector settings when ``backend`` is a name.
        name: how to call the image in error messages (defaults to the path, else "image").

    Returns:
        The :class:`Face` (``points (68, 2)``, ``box (4,)``, ``score``).

    Raises:
        FaceNotFoundError: no face, or ``face_index`` out of range (the message says how many).
    """
    image, name = _image_and_name(image, name)
    if isinstance(backend, str):
        with create_detector(backend, config) as det:
            return detect_landmarks(image, det, face_index, name=name)
    # Only the chosen face gets landmarks: the boxes alone decide the order.
    boxes, scores = backend.find_boxes(image)
    if len(boxes) == 0 and backend.config.fallback:
        faces = backend.fallback_faces(image)
        _check_index(len(faces), face_index, name, backend)
        return replace(faces[face_index], faces=len(faces))
    _check_index(len(boxes), face_index, name, backend)
    points = backend.landmarks_in_box(image, boxes[face_index])
    if points is None:
        raise FaceNotFoundError(f"{name}: the {backend.name} landmark model found no face in the "
                                f"detected box {np.round(boxes[face_index]).astype(int).tolist()}")
    return backend.upright_face(image, Face(points=np.asarray(points, np.float32),
                                            box=boxes[face_index],
                                            score=float(scores[face_index]), faces=len(boxes)))


__all__ = [
    "BACKENDS",
    "N_POINTS",
    "DetectorConfig",
    "Face",
    "LandmarkDetector",
    "as_rgb_image",
    "available_backends",
    "create_detector",
    "detect_faces",
    "detect_landmarks",
    "resize_image",
]
