"""Prediction: how the face in one photo may move next.

The job composes the stages: fit the photo (and, with ``observe``, a video or coefficient file
whose motion is transferred onto the photo, relative to its first frame, as observed history),
roll the learned 3DDP dynamics forward from it (:func:`faceanime.dynamics.predict`, seeded: another
seed, another plausible future), render the photo's face along the prediction
(:func:`faceanime.jobs.common.make_renderer`) and stream the frames out.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from faceanime.errors import InputError
from faceanime.jobs.common import (
    JobInputs,
    TaskResult,
    callable_module,
    check_driving,
    check_frames,
    check_outputs,
    finish_job,
    on_device,
    prepare,
)
from faceanime.motion import transfer_motion
from faceanime.samples import DEFAULT_DYNAMICS


@dataclass
class PredictConfig(JobInputs):
    """Settings of a prediction run (besides the frame count, checkpoint, history and seed)."""

    temperature: float = 1.0
    """Noise multiplier: 0 gives the expected (deterministic, calmer) path."""
    observe_frames: int | None = None
    """How many of the history's last frames the model observes (default: as trained)."""
    include_observed: bool = False
    """Start the video with the observed frames (the photo itself when there is no history)."""


def predict(source: str | os.PathLike, output: str | os.PathLike | None = None, *,
            dynamics: str | os.PathLike | None = None, frames: int = 120,
            observe: str | os.PathLike | None = None, seed: int = 0,
            config: PredictConfig | None = None,
            save_coefficients: str | os.PathLike | None = None) -> TaskResult:
    """Animate the face in ``source`` with ``frames`` predicted frames.

    Args:
        source: the photo.
        output: ``.mp4`` to write; None returns the frames in ``result.video``.
        dynamics: a 3DDP checkpoint (``faceanime train dynamics``); None: the one that ships
            in the package (:data:`faceanime.samples.DEFAULT_DYNAMICS`).
        frames: predicted frames, >= 1.
        observe: a video or coefficient file whose motion (relative to its first frame, applied
            to the photo) is the observed history; None: the photo alone.
        seed: seeds the motion.
        config: settings.
        save_coefficients: also write the rendered coefficients (``.npz``).

    Returns:
        :class:`~faceanime.jobs.common.TaskResult` at the history's frame rate (a photo's: the
        training videos').
    """
    from faceanime.dynamics import Dynamics
    from faceanime.dynamics import predict as roll_out

    config = on_device(config or PredictConfig())
    started = time.perf_counter()
    check_frames(frames)
    output = check_outputs(output, save_coefficients)
    if observe is not None:
        observe = check_driving(observe)
    out_cfg = config.output
    # A bad checkpoint fails before fitting.
    dyn = Dynamics.load(DEFAULT_DYNAMICS if dynamics is None else dynamics, out_cfg.device)
    if config.temperature < 0:
        raise InputError(f"temperature must be >= 0, got {config.temperature}")
    # The observed video (if any) is tracked in the background while the photo is fitted.
    prepared = prepare(source, observe, config)
    start, renderer = prepared.source, prepared.renderer
    history = (start if observe is None
               else transfer_motion(start, prepared.driving, model=prepared.model))
    path = roll_out(history, frames, seed, checkpoint=dyn, observe=config.observe_frames,
                    temperature=config.temperature, include_observed=config.include_observed)
    return finish_job("predict", source, output, renderer, path, path.fps, out_cfg, started,
                      save_coefficients=save_coefficients, notes=prepared.notes)


callable_module(__name__, predict)
