"""Synthetic data for the dynamics tests: a tiny morphable model and coefficient sequences from a
known process, written in the dataset layout that ``faceanime prepare`` produces."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from faceanime.coefficients import Coefficients
from faceanime.geometry.rotation import so3_exp
from faceanime.morphable.model import FaceModel

KE = 3  # expression coefficients of the tiny model
# Per raw dimension (expression x3, jaw, rotation x3, translation x3, log scale): the period in
# frames of the damped oscillation and its amplitude. Translation z is unused (orthographic).
PERIODS = (18.0, 26.0, 34.0, 22.0, 30.0, 40.0, 24.0, 28.0, 36.0, 1.0, 32.0)
AMPLITUDES = (0.25, 0.2, 0.15, 0.08, 0.12, 0.1, 0.05, 12.0, 8.0, 0.0, 0.04)
DAMPING = 0.985  # per-frame decay of the oscillation
PROCESS_NOISE = 0.03  # innovation std, as a share of the amplitude
OFFSETS = (0.6, 0.5, 0.4, 0.15, 0.0, 0.0, 0.0, 256.0, 256.0, 0.0, math.log(2.0))


def tiny_face_model() -> FaceModel:
    """A 9x13 grid face (10 mm spacing), 4 identity and 3 expression components, and just the
    iBUG points the jaw rig needs (lips, chin, nose base, eye and mouth corners)."""
    xs, ys = torch.linspace(-40, 40, 9), torch.linspace(-60, 60, 13)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    z = 20 - 0.004 * (gx**2 + gy**2)
    mean = torch.stack([gx, gy, z], -1).reshape(-1, 3)

    def vid(x: float, y: float) -> int:
        return round((y + 60) / 10) * 9 + round((x + 40) / 10)

    landmarks = torch.full((68,), -1, dtype=torch.long)
    for i, x in zip((56, 57, 58, 59, 60, 66, 67, 68), (20, 10, 0, -10, -20, 10, 0, -10),
                    strict=True):
        landmarks[i - 1] = vid(x, -30)
    for i, x in zip((50, 51, 52, 53, 54, 62, 63, 64), (-20, -10, 0, 10, 20, -10, 0, 10),
                    strict=True):
        landmarks[i - 1] = vid(x, -20)
    for i, (x, y) in {9: (0, -60), 34: (0, -10), 37: (-40, 20), 46: (40, 20), 49: (-30, -30),
                      55: (30, -30)}.items():
        landmarks[i - 1] = vid(x, y)
    g = torch.Generator().manual_seed(1)
    # Smooth fields: low-frequency functions of the position, a few mm per unit.
    u, v = mean[:, 0] / 40, mean[:, 1] / 60

    def field(fx, fy, fz):
        return torch.stack([fx, fy, fz], -1)

    expression = torch.stack([field(0 * u, -5 * (v < -0.3) * (0.5 - v), 2 * u * u),
                              field(4 * u * (v > 0), 3 * v * v, 0 * u),
                              field(-2 * u, 2 * (v > 0.2).float(), -u * v)])
    shape = 2 * torch.randn(4, 1, 3, generator=g) * torch.stack([u, v, u * v], -1)[None]
    quads = [(r * 9 + c, r * 9 + c + 1, (r + 1) * 9 + c, (r + 1) * 9 + c + 1)
             for r in range(12) for c in range(8)]
    triangles = torch.tensor([t for a, b, c, d in quads for t in ((a, b, d), (a, d, c))])
    return FaceModel(name="tiny", mean=mean, shape_basis=shape, shape_eigenvalues=torch.ones(4),
                     expression_basis=expression.float(), expression_eigenvalues=None,
                     expression_names=["e0", "e1", "e2"], triangles=triangles, texcoords=None,
                     landmark_indices=landmarks)


def oscillation(frames: int, generator: torch.Generator) -> torch.Tensor:
    """``(frames, KE + 8)`` raw vectors of the known process: per dimension a damped oscillation
    ``y_{t+1} = 2 r cos(w) y_t - r^2 y_{t-1} + e_t`` (an AR(2) process: the expected future is a
    damped sinusoid continuing the observed one) started at a random amplitude and phase,
    around a fixed offset."""
    d = len(PERIODS)
    omega = 2 * math.pi / torch.tensor(PERIODS, dtype=torch.float64)
    amp = torch.tensor(AMPLITUDES, dtype=torch.float64)
    a1, a2 = 2 * DAMPING * torch.cos(omega), -(DAMPING**2)
    phase = 2 * math.pi * torch.rand(d, generator=generator, dtype=torch.float64)
    size = 0.5 + torch.rand(d, generator=generator, dtype=torch.float64)
    y = torch.zeros(frames, d, dtype=torch.float64)
    y[0] = size * torch.cos(phase)
    y[1] = size * DAMPING * torch.cos(phase + omega)
    noise = PROCESS_NOISE * torch.randn(frames, d, generator=generator, dtype=torch.float64)
    for t in range(1, frames - 1):
        y[t + 1] = a1 * y[t] + a2 * y[t - 1] + noise[t + 1]
    values = torch.tensor(OFFSETS, dtype=torch.float64) + amp * y
    # Translation z (index KE + 6 of the raw vector) is the constant offset 0.
    return values.float()


def expected_future(raw: torch.Tensor, observe: int, steps: int) -> torch.Tensor:
    """The process's exact conditional mean of the next ``steps`` frames after the first
    ``observe`` of ``(B, >= observe, D)`` raw vectors (the oracle the model is compared with)."""
    omega = 2 * math.pi / torch.tensor(PERIODS)
    amp = torch.tensor(AMPLITUDES)
    offsets = torch.tensor(OFFSETS)
    a1, a2 = 2 * DAMPING * torch.cos(omega), -(DAMPING**2)
    y_prev, y = raw[:, observe - 2] - offsets, raw[:, observe - 1] - offsets
    out = []
    for _ in range(steps):
        y, y_prev = a1 * y + a2 * y_prev, y
        out.append(offsets + torch.where(amp > 0, y, torch.zeros_like(y)))
    return torch.stack(out, 1)


def coefficients(raw: torch.Tensor, shape: torch.Tensor, model: str = "tiny",
                 fps: float = 30.0) -> Coefficients:
    """A :class:`Coefficients` holding raw vectors ``(T, KE + 8)``."""
    t = raw.shape[0]
    template = Coefficients(model=model, shape=shape, expression=torch.zeros(t, KE),
                            jaw=torch.zeros(t), rotation=so3_exp(torch.zeros(t, 3)),
                            translation=torch.zeros(t, 3), scale=torch.ones(t),
                            image_size=torch.tensor([512, 512]), fps=fps)
    out = template.with_tensor(raw)
    out.valid = torch.ones(t, dtype=torch.bool)
    return out


def write_dataset(root: Path, sequences: dict[str, torch.Tensor], model: str = "tiny",
                  skipped: tuple[str, ...] = ()) -> Path:
    """Write ``sequences`` (name -> raw ``(T, D)``) in the ``faceanime prepare`` layout."""
    (root / "coefficients").mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(7)
    videos = {}
    for name, raw in sequences.items():
        coefficients(raw, 0.5 * torch.randn(4, generator=g), model).save(
            root / "coefficients" / f"{name}.npz")
        videos[name] = {"status": "ok", "frames": raw.shape[0]}
    for name in skipped:
        videos[name] = {"status": "skipped", "reason": "no face: test"}
    (root / "manifest.json").write_text(json.dumps({"version": 1, "model": model,
                                                    "videos": videos}))
    return root
