"""Running a trained dynamics model on coefficient files: :func:`predict` (free-running) and
:func:`animate` (target-driven).

Both keep the input's identity, model, camera and image size; the predicted frames replace the
per-frame expression, jaw and pose. The noise comes from a seeded generator on the CPU, so a seed
gives the same future on any device.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Literal

import torch

from faceanime.coefficients import Coefficients
from faceanime.dynamics.checkpoint import Checkpoint, load_checkpoint
from faceanime.dynamics.features import from_features, group_slices, to_features
from faceanime.errors import InputError


class Dynamics:
    """A checkpoint's network ready to run, on ``device`` (CPU by default)."""

    def __init__(self, checkpoint: Checkpoint, device: torch.device | str | None = None):
        self.checkpoint = checkpoint
        self.normalizer = checkpoint.normalizer
        self.device = torch.device(device or "cpu")
        self.model = checkpoint.build_model(self.device)

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str | None = None) -> Dynamics:
        return cls(load_checkpoint(path), device)

    @property
    def dim(self) -> int:
        return self.normalizer.dim

    def set_noise_scale(self, scale: torch.Tensor) -> None:
        """Use ``scale (D,)`` as the per-feature multiplier of sampled innovations (in the
        normalizer, which a saved checkpoint's JSON carries, and in the running network)."""
        scale = scale.detach().float().cpu()
        self.normalizer = replace(self.normalizer, noise_scale=scale)
        self.model.noise_scale.copy_(scale.to(self.model.noise_scale.device))

    def check(self, coeffs: Coefficients, what: str = "coefficients") -> None:
        """Raise :class:`InputError` when ``coeffs`` were not fitted like the training data."""
        info = self.checkpoint.info
        model = info.get("model")
        if model is not None and coeffs.model != model:
            raise InputError(f"{what} were fitted with model {coeffs.model!r} but the dynamics "
                             f"checkpoint {self.checkpoint.path.name} was trained on {model!r}: "
                             f"fit them with {model!r}")
        if coeffs.expression.shape[1] != self.normalizer.n_expression:
            raise InputError(f"{what} have {coeffs.expression.shape[1]} expression coefficients, "
                             f"the checkpoint {self.normalizer.n_expression}: fit them with the "
                             "checkpoint's model")
        if coeffs.camera != self.normalizer.camera:
            raise InputError(f"{what} use the {coeffs.camera} camera, the checkpoint was trained "
                             f"on the {self.normalizer.camera} one: fit with --camera "
                             f"{self.normalizer.camera}")
        if coeffs.n_frames < 1:
            raise InputError(f"{what} hold no frame")

    @torch.no_grad()
    def rollout(self, observed: torch.Tensor, steps: int, target: torch.Tensor | None = None,
                noise: torch.Tensor | None = None, temperature: float = 1.0) -> torch.Tensor:
        """Roll out raw coefficient vectors.

        Args:
            observed: ``(B, K, D)`` raw vectors (``Coefficients.to_tensor``).
            steps: frames to predict.
            target: ``(B, D)`` raw target vector of the last predicted frame, or None.
            noise: ``(B, steps, D)`` standard normal innovations, or None (expected path).
            temperature: noise multiplier.

        Returns:
            ``(B, steps, D)`` raw vectors of the frames after the observed ones.
        """
        if observed.ndim != 3 or observed.shape[-1] != self.dim or observed.shape[1] < 1:
            raise InputError(f"observed frames must be (B, K >= 1, {self.dim}), "
                             f"got {tuple(observed.shape)}")
        if steps < 1:
            raise InputError(f"steps must be >= 1, got {steps}")
        camera = self.normalizer.camera
        observed = observed.to(self.device, torch.float32)
        ref = observed[:, 0]
        feat = to_features(observed, ref, camera)
        target_feat = None
        if target is not None:
            target_feat = to_features(target.to(self.device, torch.float32)[:, None], ref,
                                      camera)[:, 0]
        if noise is not None:
            noise = noise.to(self.device, torch.float32)
        pred = self.model.rollout(feat, steps, target=target_feat, noise=noise,
                                  temperature=temperature)
        return from_features(pred, ref, camera)


def innovations(seed: int, batch: int, steps: int, dim: int) -> torch.Tensor:
    """``(batch, steps, dim)`` standard normal noise of a seed (drawn on the CPU)."""
    return torch.randn(batch, steps, dim, generator=torch.Generator().manual_seed(seed))


def _dynamics(checkpoint: Dynamics | Checkpoint | str | os.PathLike,
              device: torch.device | str | None) -> Dynamics:
    if isinstance(checkpoint, Dynamics):
        return checkpoint
    if isinstance(checkpoint, Checkpoint):
        return Dynamics(checkpoint, device)
    return Dynamics.load(checkpoint, device)


def _observed(coeffs: Coefficients, observe: int | None, dyn: Dynamics) -> Coefficients:
    """The last ``observe`` frames (default: up to the training's largest observed count)."""
    k = observe if observe is not None else dyn.checkpoint.train.observe
    if k < 1:
        raise InputError(f"observe must be >= 1, got {k}")
    return coeffs.frames(slice(max(0, coeffs.n_frames - k), None))


def _result(source: Coefficients, raw: torch.Tensor, dyn: Dynamics) -> Coefficients:
    out = source.with_tensor(raw.cpu())
    return replace(out, fps=source.fps or dyn.normalizer.fps,
                   valid=torch.ones(out.n_frames, dtype=torch.bool))


def predict(coeffs_0: Coefficients, steps: int, seed: int = 0, *,
            checkpoint: Dynamics | Checkpoint | str | os.PathLike,
            observe: int | None = None, temperature: float = 1.0,
            include_observed: bool = False,
            device: torch.device | str | None = None) -> Coefficients:
    """Free-running prediction: how the face in ``coeffs_0`` may move next.

    Args:
        coeffs_0: a photo's coefficients (one frame) or a video's (its last frames are observed).
        steps: frames to predict.
        seed: seeds the motion: another seed, another plausible future.
        checkpoint: a trained model (path, :class:`Checkpoint` or :class:`Dynamics`).
        observe: how many of the last frames to observe (default: the training's ``observe``).
        temperature: noise multiplier; 0 gives the expected (deterministic, calmer) path.
        include_observed: prepend the observed frames to the result.
        device: where to run (default CPU).

    Returns:
        ``steps`` frames (plus the observed ones), at the input's frame rate (a photo's: the
        training videos').

    Raises:
        InputError: coefficients of another model or camera than the training data's.
        ModelFileError: an unusable checkpoint.
    """
    dyn = _dynamics(checkpoint, device)
    dyn.check(coeffs_0)
    seen = _observed(coeffs_0, observe, dyn)
    noise = innovations(seed, 1, steps, dyn.dim) if temperature else None
    raw = dyn.rollout(seen.to_tensor()[None], steps, noise=noise, temperature=temperature)[0]
    if include_observed:
        raw = torch.cat([seen.to_tensor().to(raw), raw])
    return _result(seen, raw, dyn)


def animate(coeffs_source: Coefficients, coeffs_target: Coefficients, steps: int,
            seed: int = 0, *, checkpoint: Dynamics | Checkpoint | str | os.PathLike,
            target_frame: int = -1, observe: int | None = None, temperature: float = 0.0,
            placement: Literal["auto", "target", "source"] = "auto",
            include_observed: bool = False,
            device: torch.device | str | None = None) -> Coefficients:
    """Target-driven animation: from the source's face to the target's expression and pose,
    arriving exactly at the last of ``steps`` frames.

    Args:
        coeffs_source: the starting face (its last frames are observed).
        coeffs_target: holds the target frame; its identity is not used.
        steps: frames to generate; the last equals the target.
        seed: seeds the noise when ``temperature > 0``.
        checkpoint: a trained model.
        target_frame: which frame of ``coeffs_target``.
        observe: observed source frames (default: the training's ``observe``).
        temperature: noise multiplier; 0 (default) is the expected path, the smoothest.
        placement: where the head ends up in the image: ``"target"`` uses the target's
            translation and scale, ``"source"`` keeps the source's last ones (the target's
            pixels mean nothing in another image), ``"auto"``: target when both have the same
            image size, else source.
        include_observed: prepend the observed frames.
        device: where to run.

    Raises:
        InputError: other model or camera, a target frame out of range, an unknown placement.
    """
    dyn = _dynamics(checkpoint, device)
    dyn.check(coeffs_source, "source coefficients")
    dyn.check(coeffs_target, "target coefficients")
    t = coeffs_target.n_frames
    if not -t <= target_frame < t:
        raise InputError(f"target frame {target_frame} is outside the target's {t} frame(s)")
    if placement not in ("auto", "target", "source"):
        raise InputError(f"unknown placement {placement!r}: use auto, target or source")
    seen = _observed(coeffs_source, observe, dyn)
    start = seen.to_tensor()
    target = coeffs_target.frames(slice(target_frame % t, target_frame % t + 1)).to_tensor()[0]
    if placement == "auto":
        same = (coeffs_source.image_size is not None and coeffs_target.image_size is not None
                and bool((coeffs_source.image_size == coeffs_target.image_size).all()))
        placement = "target" if same else "source"
    if placement == "source":
        s = group_slices(dyn.normalizer.n_expression)
        for name in ("translation", "scale"):
            target[s[name]] = start[-1, s[name]]
    noise = innovations(seed, 1, steps, dyn.dim) if temperature else None
    raw = dyn.rollout(start[None], steps, target=target[None], noise=noise,
                      temperature=temperature)[0]
    if include_observed:
        raw = torch.cat([start.to(raw), raw])
    return _result(seen, raw, dyn)
