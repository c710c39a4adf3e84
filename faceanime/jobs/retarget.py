"""Retargeting: one photo's face makes a driving video's motions.

The job composes the stages: landmarks and fit of the photo and of the driver (or a driving
coefficient file, a motion template that needs no video: :func:`~faceanime.jobs.common.prepare`),
optional temporal smoothing, motion transfer (:mod:`faceanime.motion`), rendering (the warp of
the photo, the pasted mask or the learned generator) and streaming video output with the
driver's audio and provenance tags (:mod:`faceanime.jobs.common`).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from faceanime.capture import capture_driver
from faceanime.coefficients import Coefficients
from faceanime.errors import InputError
from faceanime.io import is_video_path, iter_video_frames
from faceanime.jobs.common import (
    JobInputs,
    TaskResult,
    callable_module,
    check_driving,
    check_outputs,
    finish_job,
    on_device,
    prepare,
)
from faceanime.landmarks import VideoLandmarks
from faceanime.motion import MotionConfig, transfer_motion
from faceanime.render.mouth_interior import InteriorCapture
from faceanime.render.warp import WarpRenderer

RetargetResult = TaskResult


@dataclass
class RetargetConfig(JobInputs):
    """Settings of a retargeting run: the inputs' (:class:`~faceanime.jobs.common.JobInputs`:
    output, fit, model, face index, backend, photo landmarks, the driver's tracking) and these."""

    motion: MotionConfig = field(default_factory=MotionConfig)
    """How the driver's motion is applied (relative by default)."""
    smooth: float = 0.0
    """Temporal smoothing of the driver's motion: Gaussian sigma in frames (0 = off)."""
    audio: bool = True
    """Keep the driving video's audio."""
    fps: float | None = None
    """Output frame rate for a driving coefficient file without one (default 25)."""
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


def wants_driver_mouth(renderer, config: RetargetConfig) -> bool:
    """Whether the job's renderer draws a captured mouth interior: the warp with its mouth cap
    and ``driver_interior`` on, with the mouth's motion transferred."""
    motion = config.motion
    mouth = motion.mouth or (motion.mode if motion.expression else "off")
    return (isinstance(renderer, WarpRenderer) and renderer.cap is not None
            and renderer.config.driver_interior and mouth != "off")


def retarget(source: str | os.PathLike, driving: str | os.PathLike,
             output: str | os.PathLike | None = None, config: RetargetConfig | None = None,
             save_coefficients: str | os.PathLike | None = None,
             driver_landmarks: VideoLandmarks | None = None) -> TaskResult:
    """Make the face in ``source`` (a photo) move as the driver does.

    Args:
        source: the photo.
        driving: a video, a coefficient file from ``faceanime fit``, or the name of a motion
            template (:data:`faceanime.samples.MOTION_TEMPLATES`: ``"talk"``, ...).
        output: the ``.mp4`` to write (atomically: nothing is left on failure); None returns
            the frames in ``result.video`` instead (memory grows with the length).
        config: settings.
        save_coefficients: also write the rendered coefficients here (``.npz``).
        driver_landmarks: the driving video's landmarks
            (:func:`~faceanime.jobs.common.track_driver`), to drive several photos with one
            tracking of the video.

    Returns:
        :class:`~faceanime.jobs.common.TaskResult`.
    """
    config = on_device(config or RetargetConfig())
    started = time.perf_counter()
    output = check_outputs(output, save_coefficients)
    driving = check_driving(driving)
    out_cfg = config.output
    prepared = prepare(source, driving, config, landmarks=driver_landmarks)
    image, source_coeffs, renderer = prepared.image, prepared.source, prepared.renderer
    driving_coeffs, audio = prepared.driving, prepared.audio
    if is_video_path(driving):
        # The driver's teeth and tongue, for where the target opens wider than the photo, and
        # where its eyes look.
        interiors = (InteriorCapture(prepared.model) if wants_driver_mouth(renderer, config)
                     else None)
        capture_driver(driving, driving_coeffs, interiors,
                       gaze=config.motion.gaze and isinstance(renderer, WarpRenderer),
                       progress=out_cfg.progress)
    driving_coeffs = smooth_coefficients(driving_coeffs, config.smooth)
    target = transfer_motion(source_coeffs, driving_coeffs, config.motion, prepared.model)
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
