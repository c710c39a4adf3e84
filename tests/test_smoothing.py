"""The One-Euro filter on synthetic signals: constants, steps, ramps, noise, gaps, invariances."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_close

from faceanime.errors import InputError
from faceanime.landmarks import (
    OneEuroConfig,
    face_scale,
    one_euro_filter,
    one_euro_zero_phase,
)

FPS = 30.0


def _track(values: np.ndarray, k: int = 68) -> np.ndarray:
    """``(T,)`` values -> ``(T, k, 2)`` track with every coordinate following them."""
    return np.repeat(np.asarray(values, np.float64)[:, None, None], k, axis=1).repeat(2, axis=2)


def test_constant_signal_stays_constant():
    x = np.full((50, 68, 2), 123.25)
    assert_close(one_euro_filter(x, FPS, scale=200.0), x)


def test_step_converges_without_overshoot():
    x = _track(np.r_[np.zeros(10), np.full(40, 10.0)])
    y = one_euro_filter(x, FPS, scale=200.0)[:, 0, 0]
    assert (np.diff(y) >= -1e-6).all() and y.max() <= 10.0 + 1e-6  # monotone, no overshoot
    assert y[10] > 0  # it starts moving on the step frame itself
    assert abs(y[-1] - 10.0) < 0.05


def test_ramp_lag_below_one_frame():
    # 0.5 face sizes per second (a brisk head turn): the steady lag must stay under a frame.
    speed = 0.5 * 200.0 / FPS  # px per frame
    x = _track(np.r_[np.zeros(10), np.arange(1, 41) * speed])
    y = one_euro_filter(x, FPS, scale=200.0)[:, 0, 0]
    lag_frames = (x[10:, 0, 0] - y[10:]) / speed
    assert lag_frames.max() < 1.0


def test_noise_is_reduced_and_strength_orders_it():
    rng = np.random.default_rng(0)
    x = 100.0 + rng.normal(0, 1.0, (200, 68, 2))
    jitter = {s: np.abs(np.diff(one_euro_filter(x, FPS, 200.0, strength=s), axis=0)).mean()
              for s in (0, 1, 2)}
    assert jitter[0] == pytest.approx(np.abs(np.diff(x, axis=0)).mean(), rel=1e-5)  # 0 = off
    assert jitter[1] < 0.35 * jitter[0]
    assert jitter[2] < jitter[1]


def test_scale_invariance():
    rng = np.random.default_rng(1)
    t = np.arange(90) / FPS
    x = (50 + 30 * np.sin(2 * np.pi * 0.7 * t)[:, None, None]
         + rng.normal(0, 0.5, (90, 68, 2)))
    scale = 150 + 10 * np.sin(t)
    k = 3.7
    assert_close(one_euro_filter(k * x, FPS, k * scale), k * one_euro_filter(x, FPS, scale),
                 rtol=1e-4, atol=1e-3)


def test_frame_rate_invariance():
    # The same motion sampled at 30 and 60 fps gives the same curve (cutoffs are in Hz).
    def sampled(fps):
        t = np.arange(int(2 * fps)) / fps
        return t, _track(np.where(t < 0.5, 0.0, 40.0 * (t - 0.5)), k=1)
    t30, x30 = sampled(30.0)
    t60, x60 = sampled(60.0)
    y30 = one_euro_filter(x30, 30.0, 200.0)[:, 0, 0]
    y60 = one_euro_filter(x60, 60.0, 200.0)[:, 0, 0]
    assert np.abs(np.interp(t30, t60, y60) - y30).max() < 0.5  # px, on a 60 px motion


def test_nan_gaps_stay_nan_and_restart():
    x = _track(np.r_[np.zeros(10), np.full(5, np.nan), np.full(10, 50.0)])
    y = one_euro_filter(x, FPS, face_scale(x + np.arange(68)[None, :, None]))
    assert np.isnan(y[10:15]).all()
    assert_close(y[15], x[15])  # no slide from the old position into the new face
    assert np.isfinite(y[:10]).all() and np.isfinite(y[15:]).all()


def test_config_is_used_and_arguments_checked():
    x = _track(np.r_[np.zeros(5), np.full(20, 10.0)], k=1)
    slow = one_euro_filter(x, FPS, 200.0, OneEuroConfig(min_cutoff=0.1, beta=0.0))
    fast = one_euro_filter(x, FPS, 200.0, OneEuroConfig(min_cutoff=10.0, beta=0.0))
    assert slow[6, 0, 0] < fast[6, 0, 0]
    with pytest.raises(InputError, match="strength"):
        one_euro_filter(x, FPS, strength=-1)
    with pytest.raises(InputError, match="fps"):
        one_euro_filter(x, 0.0)


def test_zero_phase_has_no_lag_on_a_ramp():
    """Forward and back: mid-ramp the output lies on the true line (the causal pass lags)."""
    rng = np.random.default_rng(2)
    speed = 0.5 * 200.0 / FPS
    truth = np.r_[np.zeros(20), np.arange(1, 61) * speed, np.full(20, 60 * speed)]
    x = _track(truth) + rng.normal(0, 0.3, (100, 68, 2))
    mid = slice(35, 65)
    causal = one_euro_filter(x, FPS, 200.0)[mid].mean(axis=(1, 2)) - truth[mid]
    both = one_euro_zero_phase(x, FPS, 200.0)[mid].mean(axis=(1, 2)) - truth[mid]
    assert causal.mean() < -0.3 * speed  # behind the motion
    assert abs(both.mean()) < 0.05 * speed


def test_zero_phase_smooths_as_much_and_keeps_what_it_should():
    rng = np.random.default_rng(3)
    x = 100.0 + rng.normal(0, 1.0, (200, 68, 2))
    jitter = {name: np.abs(np.diff(f(x, FPS, 200.0), axis=0)).mean()
              for name, f in (("causal", one_euro_filter), ("zero", one_euro_zero_phase))}
    assert jitter["zero"] <= jitter["causal"]
    assert_close(one_euro_zero_phase(x, FPS, 200.0, strength=0), x)
    still = np.full((40, 68, 2), 7.5)
    assert_close(one_euro_zero_phase(still, FPS, 200.0), still)
    gappy = x[:60].copy()
    gappy[20:25] = np.nan
    out = one_euro_zero_phase(gappy, FPS, np.full(60, 200.0))
    assert np.isnan(out[20:25]).all()
    assert np.isfinite(out[:20]).all() and np.isfinite(out[25:]).all()
