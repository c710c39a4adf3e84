"""Fit photos and videos end to end: landmarks (detected, or read from a file), then the model.

Numpy and files meet tensors here; :func:`faceanime.fitting.fitter.fit_landmarks` is the pure
tensor core.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from faceanime.coefficients import Coefficients
from faceanime.errors import InputError
from faceanime.fitting.fitter import FitConfig, fit_landmarks
from faceanime.io import is_video_path, read_image, read_video_info
from faceanime.landmarks import (
    LandmarkDetector,
    TrackerConfig,
    VideoLandmarks,
    detect_landmarks,
    read_pts,
    track_video,
)
from faceanime.morphable import FaceModel, load_model


def read_landmarks_file(path: str | os.PathLike) -> np.ndarray:
    """68-point landmarks from an iBUG ``.pts`` file (one frame) or a ``faceanime landmarks``
    ``.npz`` (``T`` frames, NaN where no face).

    Returns:
        ``(T, 68, 2)`` float32, 0-based pixels.

    Raises:
        InputError: unreadable, not 68 points, or NaN inside a ``.pts`` file.
    """
    path = Path(path)
    if path.suffix.lower() == ".pts":
        points = read_pts(path)[None]
    elif path.suffix.lower() == ".npz":
        points = VideoLandmarks.load(path).points
    else:
        raise InputError(f"{path}: landmarks must be a .pts or .npz file")
    if points.ndim != 3 or points.shape[1:] != (68, 2):
        raise InputError(f"{path}: expected 68 landmarks per frame, got {points.shape[1]}; "
                         "the fitter needs the iBUG 68-point layout")
    return points.astype(np.float32)


def _model(model: FaceModel | str) -> FaceModel:
    return model if isinstance(model, FaceModel) else load_model(model)


def fit_image(image: str | os.PathLike | np.ndarray, model: FaceModel | str = "sfm",
              landmarks: np.ndarray | str | os.PathLike | None = None,
              config: FitConfig | None = None, backend: str | LandmarkDetector = "dlib",
              face_index: int = 0) -> Coefficients:
    """Fit one photo.

    Args:
        image: a path or an ``(H, W, 3)`` uint8 array.
        model: a loaded model or a name/path for :func:`~faceanime.morphable.load_model`.
        landmarks: ``(68, 2)`` points or a ``.pts``/``.npz`` file; detected when None.
        config: fitter settings.
        backend: landmark backend when detecting: a name, or a built detector to reuse (its
            models stay loaded for the next photo or video).
        face_index: which face when several (0 = largest).
    """
    name = str(image) if not isinstance(image, np.ndarray) else "image"
    pixels = read_image(image) if not isinstance(image, np.ndarray) else image
    if landmarks is None:
        points = detect_landmarks(pixels, backend, face_index, name=name).points[None]
    elif isinstance(landmarks, (str, os.PathLike)):
        points = read_landmarks_file(landmarks)[:1]
    else:
        points = np.asarray(landmarks, np.float32).reshape(-1, 68, 2)[:1]
    return fit_landmarks(_model(model), torch.from_numpy(points), pixels.shape[:2], config)


def fit_video(video: str | os.PathLike, model: FaceModel | str = "sfm",
              landmarks: VideoLandmarks | str | os.PathLike | None = None,
              config: FitConfig | None = None,
              tracker: TrackerConfig | None = None) -> Coefficients:
    """Fit every frame of a video with one shared identity.

    Frames where no face was found are marked ``valid = False`` and their coefficients are
    interpolated from the neighbouring valid frames (never left at zero).

    Args:
        video: the video file.
        model: a loaded model or a name/path.
        landmarks: a track or a landmark ``.npz``; tracked from the video when None.
        config: fitter settings.
        tracker: landmark tracking settings when tracking.
    """
    if landmarks is None:
        landmarks = track_video(video, tracker)
    track = landmarks if isinstance(landmarks, VideoLandmarks) else None
    points = track.points if track is not None else read_landmarks_file(landmarks)
    if track is not None and track.fps > 0:
        # A video's track holds the frame size and rate: no second look at the file (~0.1 s).
        size, fps = track.image_size, track.fps
    else:
        info = read_video_info(video)
        size, fps = info.size[::-1], info.fps
    return fit_landmarks(_model(model), torch.from_numpy(np.asarray(points, np.float32)),
                         tuple(size), config, fps=fps)


def fit_file(path: str | os.PathLike, model: FaceModel | str = "sfm",
             landmarks: str | os.PathLike | None = None, config: FitConfig | None = None,
             tracker: TrackerConfig | None = None) -> Coefficients:
    """:func:`fit_video` or :func:`fit_image` by the file's extension."""
    if is_video_path(path):
        return fit_video(path, model, landmarks, config, tracker)
    tracker = tracker or TrackerConfig()
    return fit_image(path, model, landmarks, config, tracker.backend, tracker.face_index)
