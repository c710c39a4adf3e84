"""Retargeting: one photo's face makes a driving video's motions.

The job composes the stages: landmarks and fit of the photo and of the driver (or a driving
coefficient file, a motion template that needs no video), motion transfer
(:mod:`faceanime.motion`), rendering (the classic dense render; the learned generator arrives
with issue 7), and streaming video output with the driver's audio.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from faceanime.coefficients import Coefficients
from faceanime.errors import InputError
from faceanime.fitting import FitConfig, fit_image, fit_video
from faceanime.io import (
    is_video_path,
    iter_video_frames,
    read_image,
    read_video_info,
    write_video,
)
from faceanime.landmarks import TrackerConfig
from faceanime.morphable import FaceModel, load_model
from faceanime.motion import MotionConfig, transfer_motion
from faceanime.render.classic import ClassicConfig, ClassicRenderer


@dataclass
class RetargetConfig:
    """Settings of a retargeting run."""

    motion: MotionConfig = field(default_factory=MotionConfig)
    """How the driver's motion is applied (relative by default)."""
    render: ClassicConfig = field(default_factory=ClassicConfig)
    """The classic renderer's settings."""
    fit: FitConfig = field(default_factory=FitConfig)
    """Fitter settings, for the photo and the driving video."""
    model: str = "sfm"
    """Morphable model name or path."""
    face_index: int = 0
    """Which face of the photo (and the driver) when there are several (0 = largest)."""
    audio: bool = True
    """Keep the driving video's audio."""
    fps: float | None = None
    """Output frame rate for a driving coefficient file without one (default 25)."""
    side_by_side: bool = False
    """Write photo | driver | result side by side (driver frames only for a video driver)."""
    progress: bool = True
    """Show progress bars."""


@dataclass
class RetargetResult:
    """What a run produced."""

    output: Path
    frames: int
    fps: float
    seconds: float
    coefficients: Coefficients
    """The rendered (target) coefficients, one frame per output frame."""


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


def load_driving(driving: str | os.PathLike, model: FaceModel, config: RetargetConfig
                 ) -> tuple[Coefficients, Path | None]:
    """The driver's coefficients: fitted from a video, or read from a ``faceanime fit`` file.
    Also returns the file to take audio from (None for a coefficient file)."""
    path = Path(driving)
    if path.suffix.lower() == ".npz":
        coeffs = Coefficients.load(path)
        if coeffs.model != model.name:
            raise InputError(f"{path}: fitted with model {coeffs.model!r}, but this run uses "
                             f"{model.name!r}; pass --model {coeffs.model} or refit the driver")
        return coeffs, None
    if not is_video_path(path):
        raise InputError(f"{path}: the driver must be a video (mp4, mov, ...) or a coefficient "
                         "file (.npz) from 'faceanime fit'")
    tracker = TrackerConfig(face_index=config.face_index, progress=config.progress)
    return fit_video(path, model, config=config.fit, tracker=tracker), path


def retarget(source: str | os.PathLike, driving: str | os.PathLike,
             output: str | os.PathLike, config: RetargetConfig | None = None,
             save_coefficients: str | os.PathLike | None = None) -> RetargetResult:
    """Make the face in ``source`` (a photo) move as the driver does, and write ``output``.

    Args:
        source: the photo.
        driving: a video, or a coefficient file from ``faceanime fit``.
        output: the ``.mp4`` to write (atomically: nothing is left on failure).
        config: settings.
        save_coefficients: also write the rendered coefficients here (``.npz``).

    Returns:
        :class:`RetargetResult`.
    """
    config = config or RetargetConfig()
    started = time.perf_counter()
    output = Path(output)
    if output.suffix.lower() != ".mp4":
        raise InputError(f"{output}: the output must be an .mp4 file")
    if not output.parent.is_dir():
        raise InputError(f"{output}: output folder {output.parent} does not exist; create it "
                         "first")
    if save_coefficients is not None and Path(save_coefficients).suffix.lower() != ".npz":
        raise InputError(f"{save_coefficients}: coefficients are saved as .npz")
    model = load_model(config.model, device=config.fit.device)
    photo = read_image(source)
    # The path (not the pixels) so that "no face" names the file.
    source_coeffs = fit_image(source, model, config=config.fit, face_index=config.face_index)
    driving_coeffs, audio = load_driving(driving, model, config)
    target = transfer_motion(source_coeffs, driving_coeffs, config.motion)
    fps = driving_coeffs.fps or config.fps or 25.0
    if audio is not None and not config.audio:
        audio = None
    if audio is not None and not read_video_info(audio).has_audio:
        audio = None

    renderer = ClassicRenderer(model, photo, source_coeffs, config.render)
    bar = tqdm(total=target.n_frames, desc=f"retarget {Path(source).name}", unit="frame",
               disable=not config.progress, leave=False)

    def frames():
        rendered = renderer.iter_frames(target)
        if config.side_by_side:
            driver = iter_video_frames(driving) if is_video_path(driving) else None
            rendered = (side_by_side(photo, next(driver) if driver is not None else None, frame)
                        for frame in rendered)
        for frame in rendered:
            bar.update(1)
            yield frame

    try:
        count = write_video(output, frames(), fps=fps, audio_from=audio)
    finally:
        bar.close()
    if save_coefficients is not None:
        target.save(save_coefficients)
    return RetargetResult(output=output, frames=count, fps=fps,
                          seconds=time.perf_counter() - started, coefficients=target)
