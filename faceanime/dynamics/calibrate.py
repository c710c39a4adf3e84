"""Calibrating a trained model's sampled motion to the speed of real motion.

A network trained with a likelihood term learns each feature's per-step spread, but what it
learns is the spread of one step given the past, and sampled roll-outs compound it through the
network's own damping: the bundled model's jaw moved about half as fast as real jaws, its head
about as fast as real heads. :func:`calibrate_noise` fits one multiplier of the sampled
innovation per feature (``Normalizer.noise_scale``) so that free-running roll-outs from frames of
the given sequences move, per feature, as fast as those sequences' own windows of the same length
(mean absolute change per frame). The expected path (temperature 0) does not change.
Calibrate on the training videos, never on the videos a model is judged on.
"""

from __future__ import annotations

import torch

from faceanime.dynamics.features import to_features
from faceanime.dynamics.infer import Dynamics, innovations
from faceanime.errors import InputError


def window_speed(raw: torch.Tensor, frames: int, every: int, camera: str = "orthographic"
                 ) -> torch.Tensor:
    """Per-feature speed of a sequence's windows: ``raw (T, D)`` coefficient vectors -> ``(D,)``
    mean absolute change per frame of its ``frames``-long windows (every ``every`` frames;
    the whole sequence when it is shorter), in features relative to each window's start."""
    n = min(frames, raw.shape[0])
    windows = torch.stack([raw[s:s + n] for s in range(0, raw.shape[0] - n + 1, every)])
    return rollout_speed(windows, camera)


def rollout_speed(raw: torch.Tensor, camera: str = "orthographic") -> torch.Tensor:
    """``(B, T, D)`` coefficient vectors -> ``(D,)`` mean absolute per-frame change of their
    features relative to each sequence's first frame."""
    feats = to_features(raw, raw[:, 0], camera)
    return (feats[:, 1:] - feats[:, :-1]).abs().mean((0, 1))


@torch.no_grad()
def calibrate_noise(dyn: Dynamics, sequences: list[torch.Tensor], frames: int = 120,
                    every: int = 10, seeds: int = 2, rounds: int = 8, damping: float = 0.3,
                    limits: tuple[float, float] = (0.25, 4.0), only: torch.Tensor | None = None,
                    aim: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Set ``dyn``'s per-feature noise scale so its temperature-1 roll-outs move as fast as the
    real ``sequences``; returns the scale ``(D,)`` (also in ``dyn.normalizer.noise_scale``).

    Args:
        dyn: a loaded model; its normalizer's ``noise_scale`` is the starting point.
        sequences: ``(T_i, D)`` coefficient vectors of real videos (``Coefficients.to_tensor``
            layout, as the model's training data): the speed to match, every video weighing
            the same, and the frames roll-outs start from.
        frames: roll-out and window length.
        every: a roll-out starts at every ``every``-th frame of each sequence.
        seeds: noise draws per start (seeds ``0 .. seeds - 1``).
        rounds: damped fixed-point updates ``scale *= (real / sampled) ** damping``.
        damping: the updates' exponent. Speed does not grow in proportion to the scale: the
            network feeds its last change back, and on the bundled model a scale of 1.5 on
            every feature made roll-outs 2–3 times faster than real (1.0: 0.5–1.06 times),
            so full steps overshoot and oscillate; 0.3 settles within 3 % in 8 rounds.
        limits: bounds of the scale.
        only: ``(D,)`` bool, the features to calibrate (None: every active one); the others
            keep their scale, though the network couples them: with every feature calibrated
            the bundled model's yaw reached 0.77 rad from d18's frames, beyond any real video's
            0.44 (free-running heads are now held to the training heads' turn as well), so it
            calibrates its jaw, surprise and disgust only.

        aim: the speed to reach, as a multiple of the real one: one number, or ``(D,)`` per
            feature. Below 1 where a feature's extra motion spills into the others through
            the network: the bundled model aims its surprise and disgust at 0.9 and 0.8.

    Raises:
        InputError: no sequence, or one that is not ``(T, D)`` with ``T >= 2``; an aim that
            is not positive.
    """
    d = dyn.dim
    aim = torch.as_tensor(aim, dtype=torch.float64).expand(d)
    if not bool((torch.isfinite(aim) & (aim > 0)).all()):
        raise InputError("calibrate_noise: aim must be positive")
    if not sequences:
        raise InputError("calibrate_noise: give at least one real sequence")
    for s in sequences:
        if s.ndim != 2 or s.shape[1] != d or s.shape[0] < 2:
            raise InputError(f"calibrate_noise: sequences must be (T >= 2, {d}), got "
                             f"{tuple(s.shape)}")
    camera = dyn.normalizer.camera
    real = torch.stack([window_speed(s.double(), frames, every, camera)
                        for s in sequences]).mean(0)
    starts = torch.cat([s[::every, None] for s in sequences]).float()
    active = dyn.normalizer.active.bool()
    if only is not None:
        if tuple(only.shape) != (d,):
            raise InputError(f"calibrate_noise: only must be ({d},) bools, got "
                             f"{tuple(only.shape)}")
        active = active & only.bool().to(active.device)
    scale = dyn.normalizer.noise_scale.clone().double()
    for _ in range(rounds):
        dyn.set_noise_scale(scale)
        rolls = []
        for seed in range(seeds):
            noise = innovations(seed, len(starts), frames - 1, d)
            rolls.append(torch.cat([starts, dyn.rollout(starts, frames - 1, noise=noise)], 1))
        sampled = rollout_speed(torch.cat(rolls).double(), camera)
        ratio = torch.where(active & (sampled > 1e-12), aim * real / sampled.clamp_min(1e-12),
                            torch.ones_like(real))
        scale = (scale * ratio.clamp(0.5, 2.0) ** damping).clamp(*limits)
    dyn.set_noise_scale(scale)
    return dyn.normalizer.noise_scale
