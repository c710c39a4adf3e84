"""Retargeting: one photo's face makes a driving video's motions.

The job composes the stages: landmarks and fit of the photo and of the driver (or a driving
coefficient file, a motion template that needs no video), optional temporal smoothing, motion
transfer (:mod:`faceanime.motion`), rendering (:func:`faceanime.tasks.make_renderer`: the classic
dense render, or the learned generator) and streaming video output with the driver's audio and
provenance tags (:mod:`faceanime.tasks`).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from faceanime.coefficients import Coefficients
from faceanime.errors import InputError
from faceanime.fitting import FitConfig, fit_video
from faceanime.io import is_video_path, iter_video_frames, read_video_info
from faceanime.landmarks import (
    TrackerConfig,
    VideoLandmarks,
    create_detector,
    track_video,
)
from faceanime.morphable import FaceModel, load_model
from faceanime.motion import MotionConfig, transfer_motion
from faceanime.parallel import Background
from faceanime.render.mouth_interior import InteriorCapture
from faceanime.render.warp import WarpRenderer
from faceanime.samples import resolve_driving, template_names
from faceanime.tasks import (
    OutputConfig,
    TaskResult,
    callable_module,
    check_output,
    finish_job,
    load_source,
    make_renderer,
)

RetargetResult = TaskResult


@dataclass
class RetargetConfig:
    """Settings of a retargeting run."""

    motion: MotionConfig = field(default_factory=MotionConfig)
    """How the driver's motion is applied (relative by default)."""
    output: OutputConfig = field(default_factory=OutputConfig)
    """Framing, renderer, watermark, device and progress of the output."""
    fit: FitConfig = field(default_factory=FitConfig)
    """Fitter settings, for the photo and the driving video."""
    model: str = "sfm"
    """Morphable model name or path."""
    face_index: int = 0
    """Which face of the photo (and the driver) when there are several (0 = largest)."""
    backend: str = "dlib"
    """Landmark backend for the photo and the driving video: dlib, mediapipe or fan."""
    source_landmarks: str | os.PathLike | None = None
    """The photo's 68 landmarks (an iBUG ``.pts`` or a ``faceanime landmarks`` ``.npz``)
    instead of detecting them."""
    allow_truncated: bool = False
    """Use a driving video that ends before its header says (cut off, damaged) with a warning,
    instead of stopping."""
    smooth: float = 0.0
    """Temporal smoothing of the driver's motion: Gaussian sigma in frames (0 = off)."""
    audio: bool = True
    """Keep the driving video's audio."""
    fps: float | None = None
    """Output frame rate for a driving coefficient file without one (default 25)."""
    track_parts: int = 2
    """Track the driving video in up to this many parts at once, one process each (each part
    of 100 frames or more starts from its own detection; 1: one pass, as ``faceanime fit``)."""
    side_by_side: bool = False
    """Write photo | driver | result side by side (driver frames only for a video driver)."""


def side_by_side(photo: np.ndarray, driver: np.ndarray | None, result: np.ndarray) -> np.ndarray:
    """``photo | driver | result`` as one ``(H, W', 3)`` uint8 frame at the photo's height (the
    driver scaled to it; left out when None)."""
    h = photo.shape[0]
    parts = [photo]
    if driver is not None:
        w = max(1, round(driver.shape[1] * h / driver.shape[0]))
        parts.append(np.asarray(Image.fromarray(driver).resize((w, h), Image.BILINEAR)))
    parts.append(result[:h])
    return np.concatenate(parts, 1)


def smooth_coefficients(coeffs: Coefficients, sigma: float) -> Coefficients:
    """Gaussian smoothing over time of the per-frame motion (expression, jaw, rotation vector,
    translation, log scale), edges mirrored so that the first and last frames do not drift.

    Args:
        coeffs: ``T`` frames.
        sigma: standard deviation in frames; 0 returns ``coeffs`` unchanged.
    """
    if sigma < 0 or not math.isfinite(sigma):
        raise InputError(f"--smooth must be a number of frames >= 0, got {sigma}")
    if sigma == 0 or coeffs.n_frames < 2:
        return coeffs
    radius = max(1, min(math.ceil(3 * sigma), coeffs.n_frames - 1))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(coeffs.expression.dtype)
    raw = coeffs.to_tensor()  # (T, D)
    padded = F.pad(raw.T[None], (radius, radius), mode="reflect")  # (1, D, T + 2r)
    out = F.conv1d(padded, kernel.expand(raw.shape[1], 1, -1).contiguous(),
                   groups=raw.shape[1])[0].T
    smoothed = coeffs.with_tensor(out)
    return replace(smoothed, landmarks=coeffs.landmarks, valid=coeffs.valid, fps=coeffs.fps)


def driver_tracker(config: RetargetConfig) -> TrackerConfig:
    """How a driving video is tracked in a job."""
    return TrackerConfig(backend=config.backend, face_index=config.face_index,
                         progress=config.output.progress,
                         parts=config.track_parts, allow_truncated=config.allow_truncated)


def load_driving(driving: str | os.PathLike, model: FaceModel, config: RetargetConfig,
                 landmarks: VideoLandmarks | None = None) -> tuple[Coefficients, Path | None]:
    """The driver's coefficients: fitted from a video, or read from a ``faceanime fit`` file.
    Also returns the file to take audio from (None for a coefficient file).

    A video is tracked unless its ``landmarks`` (:func:`~faceanime.landmarks.track_video` with
    :func:`driver_tracker`) are already at hand."""
    path = Path(driving)
    if path.suffix.lower() == ".npz":
        coeffs = Coefficients.load(path)
        if coeffs.model != model.name:
            raise InputError(f"{path}: fitted with model {coeffs.model!r}, but this run uses "
                             f"{model.name!r}; pass --model {coeffs.model} or refit the driver")
        if coeffs.n_frames < 1:
            raise InputError(f"{path}: the coefficient file holds no frame")
        return coeffs, None
    if not is_video_path(path):
        raise InputError(f"{path}: the driver must be a video (mp4, mov, ...) or a coefficient "
                         "file (.npz) from 'faceanime fit'")
    if landmarks is None:
        read_video_info(path)  # a missing or undecodable video fails here, before any fitting
    return fit_video(path, model, landmarks, config=config.fit,
                     tracker=driver_tracker(config)), path


def wants_driver_mouth(renderer, config: RetargetConfig) -> bool:
    """Whether the job's renderer draws a captured mouth interior: the warp with its mouth cap
    and ``driver_interior`` on, with the mouth's motion transferred."""
    motion = config.motion
    mouth = motion.mouth or (motion.mode if motion.expression else "off")
    return (isinstance(renderer, WarpRenderer) and renderer.cap is not None
            and renderer.config.driver_interior and mouth != "off")


def check_driving(driving: str | os.PathLike) -> Path:
    """Refuse a driver of the wrong kind before the photo is fitted; returns its path (a motion
    template's name becomes its bundled file, :func:`faceanime.samples.resolve_driving`)."""
    path = resolve_driving(driving)
    if path.suffix.lower() != ".npz" and not is_video_path(path):
        raise InputError(f"{path}: the driver must be a video (mp4, mov, ...), a coefficient "
                         "file (.npz) from 'faceanime fit', or a motion template "
                         f"({', '.join(template_names())})")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    # Reading the header (or the coefficients) is cheap: a broken driver fails in a moment.
    if path.suffix.lower() == ".npz":
        Coefficients.load(path)
    else:
        read_video_info(path)
    return path


@dataclass
class Prepared:
    """A job's inputs, ready to render: see :func:`prepare`."""

    model: FaceModel
    image: np.ndarray
    """The photo in the output's framing, ``(H, W, 3)`` uint8."""
    source: Coefficients
    """Its fitted coefficients."""
    renderer: object
    """From :func:`faceanime.tasks.make_renderer`."""
    driving: Coefficients | None
    """The driver's coefficients (None without a driver)."""
    audio: Path | None
    """The file to take audio from (the driving video), if any."""
    notes: list[str] = field(default_factory=list)
    """For the summary line: how the photo's face was found, when not as usual."""


def prepare(source: str | os.PathLike, driving: str | os.PathLike | None,
            config: RetargetConfig) -> Prepared:
    """Fit the photo and build its renderer, and fit the driver (a video or a coefficient file;
    None for none).

    dlib holds the GIL while it tracks, so a driving video is tracked in background processes
    (:class:`~faceanime.parallel.Background`, in ``config.track_parts`` parts) while this one
    fits the photo and takes its texture: the same landmarks as tracking first, in less time.
    Each process loads its own dlib models. Loading them here first, for the tracking to
    inherit, kept one core idle meanwhile and measured no faster. The photo fails first: a
    photo without a face stops the tracking.
    """
    out_cfg = config.output
    with contextlib.ExitStack() as stack:
        tracking = None
        if driving is not None and is_video_path(driving):
            tracking = stack.enter_context(Background(track_video, Path(driving),
                                                      driver_tracker(config)))
        detector = stack.enter_context(create_detector(config.backend))
        model = load_model(config.model, device=out_cfg.device or config.fit.device)
        notes: list[str] = []
        image, source_coeffs = load_source(source, model, out_cfg, config.fit, config.face_index,
                                           detector, config.source_landmarks, notes)
        renderer = make_renderer(model, image, source_coeffs, out_cfg)
        landmarks = tracking.result() if tracking is not None else None
    driving_coeffs, audio = (load_driving(driving, model, config, landmarks=landmarks)
                             if driving is not None else (None, None))
    return Prepared(model, image, source_coeffs, renderer, driving_coeffs, audio, notes)


def retarget(source: str | os.PathLike, driving: str | os.PathLike,
             output: str | os.PathLike | None = None, config: RetargetConfig | None = None,
             save_coefficients: str | os.PathLike | None = None) -> TaskResult:
    """Make the face in ``source`` (a photo) move as the driver does.

    Args:
        source: the photo.
        driving: a video, a coefficient file from ``faceanime fit``, or the name of a motion
            template (:data:`faceanime.samples.MOTION_TEMPLATES`: ``"talk"``, ...).
        output: the ``.mp4`` to write (atomically: nothing is left on failure); None returns
            the frames in ``result.video`` instead (memory grows with the length).
        config: settings.
        save_coefficients: also write the rendered coefficients here (``.npz``).

    Returns:
        :class:`~faceanime.tasks.TaskResult`.
    """
    config = config or RetargetConfig()
    started = time.perf_counter()
    if output is not None:
        output = check_output(output)
    if save_coefficients is not None:
        check_output(save_coefficients, (".npz",))
    driving = check_driving(driving)
    out_cfg = config.output
    prepared = prepare(source, driving, config)
    image, source_coeffs, renderer = prepared.image, prepared.source, prepared.renderer
    driving_coeffs, audio = prepared.driving, prepared.audio
    if wants_driver_mouth(renderer, config) and is_video_path(driving):
        # The driver's teeth and tongue, for where the target opens wider than the photo.
        driving_coeffs.mouth = InteriorCapture(prepared.model).video(
            driving, driving_coeffs, progress=out_cfg.progress)
    driving_coeffs = smooth_coefficients(driving_coeffs, config.smooth)
    target = transfer_motion(source_coeffs, driving_coeffs, config.motion)
    fps = driving_coeffs.fps or config.fps or 25.0
    if not config.audio:
        audio = None

    decorate = None
    if config.side_by_side:
        def decorate(frames):
            driver = iter_video_frames(driving) if is_video_path(driving) else None
            for frame in frames:
                yield side_by_side(image, next(driver) if driver is not None else None, frame)
    return finish_job("retarget", source, output, renderer, target, fps, out_cfg, started,
                      audio, save_coefficients, decorate, prepared.notes)


callable_module(__name__, retarget)
