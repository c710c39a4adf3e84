"""Animation: photo A's face moves into photo B's head pose and expression.

The job composes the stages: fit both photos, make the path from A's coefficients to B's (the
learned target-driven 3DDP roll-out, :func:`faceanime.dynamics.animate`, with a dynamics
checkpoint; without one the non-learned :func:`interpolate_coefficients`), render A's face along
it (:func:`faceanime.jobs.common.make_renderer`) and stream the frames out.

The non-learned path: the rotation follows the geodesic (slerp) from A's to B's, and expression,
jaw, translation and log-scale move linearly, all timed by the smoothstep ease ``3s² - 2s³`` so
that the face starts and stops at rest. Frame 0 is A exactly, the last frame B's pose and
expression exactly.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Literal

import torch

from faceanime.coefficients import Coefficients
from faceanime.errors import InputError
from faceanime.fitting import fit_image
from faceanime.geometry.ramp import smoothstep
from faceanime.geometry.rotation import so3_exp, so3_log
from faceanime.io import read_image
from faceanime.jobs.common import (
    PhotoInputs,
    TaskResult,
    callable_module,
    check_frames,
    check_outputs,
    finish_job,
    load_source,
    make_renderer,
    on_device,
)
from faceanime.landmarks import create_detector
from faceanime.morphable import load_model


@dataclass
class AnimateConfig(PhotoInputs):
    """Settings of an animation run (besides the frame count, checkpoint and seed)."""

    placement: Literal["source", "target"] = "source"
    """Where the head ends up: source keeps A's position and size in its photo (B's pixels mean
    nothing in A's image); target takes B's (for photos framed alike)."""
    temperature: float = 0.0
    """Noise multiplier of the learned path (0: its expected, smoothest path)."""
    fps: float = 25.0
    """Frame rate of the non-learned path (the learned one uses its training videos')."""


def interpolate_coefficients(start: Coefficients, end: Coefficients, steps: int,
                             placement: Literal["source", "target"] = "source") -> Coefficients:
    """The non-learned path from one face's expression and pose to another's.

    Args:
        start: the starting face (frame 0 is used); its identity, camera and image size are kept.
        end: holds the target expression, jaw and pose (frame 0; its identity is not used).
        steps: frames of the path, >= 1; frame 0 is ``start``, frame ``steps - 1`` ``end``
            (a single frame is ``end``).
        placement: ``"source"``: translation and scale stay ``start``'s; ``"target"``: they move
            to ``end``'s.

    Returns:
        ``steps`` frames: rotation ``R0 exp(e(t) log(R0ᵀ R1))`` (slerp), expression, jaw,
        translation and log-scale ``x0 + e(t) (x1 - x0)``, with ``e`` the smoothstep ease of
        ``t = i / (steps - 1)``.
    """
    check_frames(steps)
    if placement not in ("source", "target"):
        raise InputError(f"unknown placement {placement!r}: use source or target")
    if start.model != end.model or start.camera != end.camera:
        raise InputError(f"the two faces were fitted differently ({start.model}/{start.camera} "
                         f"and {end.model}/{end.camera}): fit both with the same model and camera")
    a = start.frames(slice(0, 1))
    b = end.frames(slice(0, 1)).to(a.rotation.device, a.rotation.dtype)
    t = torch.linspace(0, 1, steps, dtype=a.rotation.dtype, device=a.rotation.device)
    if steps == 1:
        t = torch.ones(1, dtype=t.dtype, device=t.device)
    e = smoothstep(t)
    r0, r1 = a.rotation[0], b.rotation[0]
    rotation = r0 @ so3_exp(e[:, None] * so3_log(r0.T @ r1))

    def lerp(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        w = e.view(-1, *([1] * (x0.ndim - 1)))
        return x0 + w * (x1 - x0)

    if placement == "target":
        translation = lerp(a.translation, b.translation)
        scale = lerp(a.scale.log(), b.scale.log()).exp()
    else:
        translation, scale = a.translation.expand(steps, -1), a.scale.expand(steps)
    return Coefficients(model=a.model, shape=a.shape, expression=lerp(a.expression, b.expression),
                        jaw=lerp(a.jaw, b.jaw), eyes=lerp(a.eyes, b.eyes), rotation=rotation,
                        translation=translation.clone(), scale=scale.clone(), camera=a.camera,
                        image_size=a.image_size, valid=torch.ones(steps, dtype=torch.bool))


def animate(source: str | os.PathLike, target: str | os.PathLike,
            output: str | os.PathLike | None = None, *, frames: int = 60,
            dynamics: str | os.PathLike | None = None, seed: int = 0,
            config: AnimateConfig | None = None,
            save_coefficients: str | os.PathLike | None = None) -> TaskResult:
    """Move the face of photo ``source`` (A) into the head pose and expression of photo
    ``target`` (B), over ``frames`` frames.

    Args:
        source: photo A, whose face moves (and whose image is shown).
        target: photo B, or a coefficient file (its last frame is the target).
        output: ``.mp4`` to write, or an image (``.png``/``.jpg``: the last frame only);
            None returns the frames in ``result.video``.
        frames: frames in all, >= 1 (>= 2 with ``dynamics``): the first is A, the last B's pose.
        dynamics: a 3DDP checkpoint for the learned target-driven path; None: the non-learned
            :func:`interpolate_coefficients`.
        seed: seeds the learned path's noise (with ``config.temperature > 0``).
        config: settings.
        save_coefficients: also write the rendered coefficients (``.npz``).
    """
    config = on_device(config or AnimateConfig())
    started = time.perf_counter()
    check_frames(frames)
    if dynamics is not None and frames < 2:
        raise InputError(f"--frames {frames}: the learned path needs at least 2 frames")
    output = check_outputs(output, save_coefficients, (".mp4", ".png", ".jpg", ".jpeg"))
    out_cfg = config.output
    is_coeffs = str(target).lower().endswith(".npz")
    end = Coefficients.load(target) if is_coeffs else None
    if not is_coeffs:
        read_image(target)  # an unreadable target fails before any fitting
    dyn = None
    if dynamics is not None:
        from faceanime.dynamics import Dynamics

        dyn = Dynamics.load(dynamics, out_cfg.device)  # a bad checkpoint fails before fitting
    model = load_model(config.model, device=out_cfg.device or config.fit.device)
    with create_detector(config.backend) as detector:
        notes: list[str] = []
        image, start = load_source(source, model, out_cfg, config.fit, config.face_index,
                                   detector, config.source_landmarks, notes)
        if end is not None:
            end = end.frames(slice(end.n_frames - 1, None))
        else:
            end = fit_image(target, model, config=config.fit, face_index=config.face_index,
                            backend=detector)
    if dyn is None:
        path = interpolate_coefficients(start, end, frames, config.placement)
        fps = config.fps
    else:
        from faceanime.dynamics import animate as roll_out

        path = roll_out(start, end, frames - 1, seed, checkpoint=dyn,
                        temperature=config.temperature, placement=config.placement,
                        include_observed=True)
        fps = path.fps
    renderer = make_renderer(model, image, start, out_cfg)
    return finish_job("animate", source, output, renderer, path, fps, out_cfg, started,
                      save_coefficients=save_coefficients, notes=notes)


callable_module(__name__, animate)
