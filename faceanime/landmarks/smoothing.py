"""Temporal smoothing of landmark tracks: the One-Euro filter (Casiez, Roussel & Vogel, CHI 2012).

A first-order low-pass filter whose cutoff rises with the signal's speed: at rest the cutoff is
low (``min_cutoff``) and jitter is removed; when a point moves fast the cutoff grows
(``+ beta * speed``) and the lag shrinks. It is causal (frame ``t`` depends on frames ``≤ t``),
so the same filter works for live streams. A video file is tracked whole before it is smoothed,
so :func:`one_euro_zero_phase` runs it forward and then backward: the two lags cancel.

Two departures from the textbook filter make its parameters portable across videos:

- **scale invariance**: the speed that raises the cutoff is measured in *face sizes per second*
  (speed divided by the face's box size in that frame), so the same ``beta`` suits a face of
  100 px and one of 1000 px, and filtering ``k · x`` with face size ``k · s`` gives ``k`` times the
  result;
- **time in seconds**: cutoffs are in Hz and the frame rate is an argument, so the same settings
  behave the same at 25 and 60 fps.

Every coordinate is filtered independently (a moving mouth does not blur the still eyes); the
update is vectorised over all coordinates, the loop runs over frames only (the filter is
recursive). Frames holding NaN (no face) stay NaN and restart the filter after them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from faceanime.errors import InputError
from faceanime.landmarks.boxes import box_size, points_box


@dataclass(frozen=True)
class OneEuroConfig:
    """One-Euro filter parameters (at smoothing strength 1)."""

    min_cutoff: float = 1.0  # Hz: cutoff frequency when the face is still (lower = smoother)
    beta: float = 20.0  # Hz per face size/s: how fast the cutoff rises with speed (less lag)
    d_cutoff: float = 2.0  # Hz: cutoff of the speed estimate that drives the adaptive cutoff


def _alpha(cutoff: np.ndarray | float, fps: float) -> np.ndarray | float:
    # Exponential-smoothing factor of a first-order low-pass with this cutoff, sampled at fps.
    return 1.0 / (1.0 + fps / (2.0 * math.pi * cutoff))


def face_scale(points: np.ndarray) -> np.ndarray:
    """Per-frame face size ``sqrt(w * h)`` of the landmark box: ``(T, K, 2)`` -> ``(T,)``."""
    return box_size(points_box(points))


def one_euro_filter(x: np.ndarray, fps: float, scale: np.ndarray | float = 1.0,
                    config: OneEuroConfig | None = None, strength: float = 1.0) -> np.ndarray:
    """Filter a track along its first axis.

    Args:
        x: ``(T, ...)`` signal, e.g. ``(T, 68, 2)`` landmarks; frames with any NaN are gaps.
        fps: frames per second.
        scale: face size per frame, ``(T,)``, or one number, in the units of ``x``; the speed that
            opens the filter is divided by it.
        config: filter parameters; their values are for ``strength`` 1.
        strength: 0 returns the input unchanged; ``s > 0`` divides ``min_cutoff`` and ``beta`` by
            ``s`` (2 = about twice the smoothing and twice the lag).

    Returns:
        ``(T, ...)`` float32 filtered signal (NaN where ``x`` is).
    """
    config = config or OneEuroConfig()
    if strength < 0 or not math.isfinite(strength):
        raise InputError(f"smoothing strength {strength}: must be 0 (off) or positive")
    if not fps > 0:
        raise InputError(f"fps {fps}: must be positive to smooth a track")
    x = np.asarray(x, dtype=np.float64)
    if strength == 0 or len(x) == 0:
        return x.astype(np.float32)
    n = len(x)
    scale = np.broadcast_to(np.asarray(scale, dtype=np.float64), (n,))
    min_cutoff = config.min_cutoff / strength
    beta = config.beta / strength
    a_d = _alpha(config.d_cutoff, fps)

    frames = x.reshape(n, -1)
    valid = np.isfinite(frames).all(axis=1) & np.isfinite(scale) & (scale > 0)
    out = np.full_like(frames, np.nan)
    x_hat = dx_hat = None
    for t in range(n):
        if not valid[t]:
            x_hat = None  # a gap: the next face starts afresh, not sliding in from the old one
            continue
        xt = frames[t]
        if x_hat is None:
            x_hat, dx_hat = xt.copy(), np.zeros_like(xt)
        else:
            dx_hat += a_d * ((xt - x_hat) * fps - dx_hat)
            cutoff = min_cutoff + beta * np.abs(dx_hat) / scale[t]
            x_hat += _alpha(cutoff, fps) * (xt - x_hat)
        out[t] = x_hat
    return out.reshape(x.shape).astype(np.float32)


def one_euro_zero_phase(x: np.ndarray, fps: float, scale: np.ndarray | float = 1.0,
                        config: OneEuroConfig | None = None, strength: float = 1.0
                        ) -> np.ndarray:
    """:func:`one_euro_filter` forward and then backward over a whole track, each pass at half
    the ``strength``: no lag, for tracks that are smoothed after they are complete.

    The causal filter trails a moving face: over the fastest quarter of d3's and d6's frames
    its face centre lay 1.8 px behind the unsmoothed one along the motion, this one's 0.02 px.
    Two passes at half the strength leave about the jitter of one pass at the full strength or
    less (frame-to-frame residual after a 7-frame quadratic fit: d3 0.25 px against 0.30, d6
    0.97 against 0.98, d18 0.16 against 0.21), and the points lie nearer the landmarks dlib
    finds on each frame alone (mean distance on d6 1.65 px against 2.02; eye aspect ratio
    correlation 0.806 against 0.792).

    Args and returns as :func:`one_euro_filter`; ``scale`` may be one number or ``(T,)``.
    """
    x = np.asarray(x, dtype=np.float64)
    if strength == 0 or len(x) == 0:
        return one_euro_filter(x, fps, scale, config, strength)
    scale = np.broadcast_to(np.asarray(scale, dtype=np.float64), (len(x),))
    forward = one_euro_filter(x, fps, scale, config, strength / 2)
    back = one_euro_filter(forward[::-1], fps, scale[::-1], config, strength / 2)
    return np.ascontiguousarray(back[::-1])
