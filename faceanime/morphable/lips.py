"""Lip rig: one closure coefficient that brings the upper and lower lips together, the chin
left where it is.

The jaw (:mod:`faceanime.morphable.jaw`) opens the mouth by turning the chin; the Surrey Face
Model's expression blendshapes open it too (surprise drops the lower lip). A photo whose mouth
is open partly by an expression (d19: jaw 8° and surprise 0.47) cannot be closed by the jaw
alone: turned up 12° further, the chin rose off the photo's own and left its outline on the
neck. The lip rig closes the lips themselves, like the eyelid rig
(:mod:`faceanime.morphable.eyelid`) closes the eyes:

- **Along the mouth** the motion follows the shape of an opening mouth: the model's mean with
  the jaw opened is measured at the three inner-lip landmark pairs (iBUG 62/68, 63/67, 64/66,
  1-based), and the profile is interpolated piecewise linearly through 0 at the mouth corners
  (49, 55) and those gaps, scaled to 1 at the middle pair.
- **Across it** the motion fades from the inner lip line over ``reach`` inter-ocular distances
  (the lips and the skin to about the nose base and the chin's crease stretch, the nose and
  chin stay).
- **Which way**: the jaw rig's skinning weight tells the lower lip (1) from the upper (0); a
  vertex moves up by ``(2 w - 1)`` times its share (the lower lip up, the upper down, the mouth
  corners and the cap's centre between not at all).

At closure 1 the middle of the lips move together by :data:`LIP_UNIT` inter-ocular distances
(half each); 0 is the model's. Offsets are linear in the closure, applied before the jaw turns
(so the lower lip's share turns with the chin).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from faceanime.errors import InputError
from faceanime.morphable.jaw import Jaw, apply_jaw, build_jaw
from faceanime.morphable.model import FaceModel

LIP_UNIT = 0.1
"""How far the middle of the lips move together at closure 1, in inter-ocular distances (the
outer eye corners'): about the opening of a mouth saying "ah" in the model's mean face."""

LIPS_RANGE = (-1.0, 4.0)
"""Bounds of a closure: parted by one unit more than the model's, up to four units closed."""

# 0-based iBUG indices: the mouth corners, the upper inner-lip points and the lower ones below
# them (same order), the outer eye corners.
_CORNERS = (48, 54)
_UPPER = (61, 62, 63)
_LOWER = (67, 66, 65)
_EYES = (36, 45)
# The jaw opening (radians) at which the mean's mouth shape is measured.
_PROFILE_JAW = 0.3


@dataclass
class Lips:
    """Lip rig of a model.

    Attributes:
        offsets: ``(N, 3)`` vertex displacements at closure 1 (model units).
    """

    offsets: torch.Tensor

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> Lips:
        return Lips(self.offsets.to(device, dtype))


def lip_rig(model: FaceModel, jaw: Jaw | None = None) -> Lips | None:
    """:func:`build_lips`, or None for a model whose lips are not mapped (its mouth then stays
    as modelled)."""
    try:
        return build_lips(model, jaw)
    except InputError:
        return None


def apply_lips(vertices: torch.Tensor, closure: torch.Tensor, offsets: torch.Tensor
               ) -> torch.Tensor:
    """Close the lips: ``(B, N, 3)`` vertices, ``(B,)`` closures, ``(N, 3)`` offsets ->
    ``(B, N, 3)`` (elementwise, so a frame's vertices do not depend on its batch)."""
    return vertices + closure.to(vertices.dtype)[:, None, None] * offsets.to(vertices.dtype)


def _smoothstep(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(0.0, 1.0)
    return x * x * (3 - 2 * x)


def _interpolate(knots: torch.Tensor, values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Piecewise linear through ``(knots, values)`` (knots increasing), 0 outside them."""
    k = torch.searchsorted(knots, x.contiguous()).clamp(1, len(knots) - 1)
    x0, x1 = knots[k - 1], knots[k]
    t = ((x - x0) / (x1 - x0).clamp_min(1e-9)).clamp(0, 1)
    out = torch.lerp(values[k - 1], values[k], t)
    return torch.where((x < knots[0]) | (x > knots[-1]), torch.zeros_like(out), out)


def build_lips(model: FaceModel, jaw: Jaw | None = None, reach: float = 0.2,
               depth: float = 0.3) -> Lips:
    """Rig the lips of ``model`` from its mean shape, landmark mapping and jaw rig.

    Args:
        model: a model whose mouth corners, inner lips and outer eye corners are mapped.
        jaw: its jaw rig (built when None): its weights tell the lower lip from the upper.
        reach: how far from the inner lip line the motion fades out, in inter-ocular
            distances.
        depth: vertices further than this many inter-ocular distances in depth from the lips
            do not move.

    Returns:
        :class:`Lips`.

    Raises:
        InputError: a landmark the rig needs has no vertex.
    """
    ids = model.landmark_indices
    needed = [*_CORNERS, *_UPPER, *_LOWER, *_EYES]
    if any(int(ids[i]) < 0 for i in needed):
        raise InputError(f"model {model.name}: the mouth corners, inner lips and eye corners "
                         "are not all mapped to vertices; the lip rig needs them")
    jaw = jaw if jaw is not None else build_jaw(model)
    mean = model.mean.detach().double()
    weights = jaw.weights.to(mean.device, mean.dtype)
    iod = float((mean[ids[_EYES[0]]] - mean[ids[_EYES[1]]]).norm())
    opened = apply_jaw(mean[None], torch.tensor([_PROFILE_JAW], dtype=mean.dtype,
                                                device=mean.device),
                       jaw.pivot.to(mean.device, mean.dtype), weights)[0]
    upper, lower = ids[list(_UPPER)], ids[list(_LOWER)]
    gaps = (opened[upper, 1] - opened[lower, 1]).clamp_min(0)               # (3,)
    corners = mean[ids[list(_CORNERS)]]
    xs = torch.cat([corners[:1, 0], mean[upper, 0], corners[1:, 0]])
    profile = torch.cat([gaps.new_zeros(1), gaps / gaps[1].clamp_min(1e-9), gaps.new_zeros(1)])
    line = torch.cat([corners[:1, 1], (mean[upper, 1] + mean[lower, 1]) / 2, corners[1:, 1]])
    order = torch.argsort(xs)
    xs, profile, line = xs[order], profile[order], line[order]
    x, y = mean[:, 0], mean[:, 1]
    along = _interpolate(xs, profile, x)                                     # (N,)
    # The inner lip line's height at each vertex's x (clamped to the corners' beyond them).
    height = _interpolate(xs, line, x.clamp(float(xs[0]), float(xs[-1])))
    across = 1 - _smoothstep((y - height).abs() / (reach * iod))
    lip_depth = mean[torch.cat([upper, lower]), 2].mean()
    near = ((mean[:, 2] - lip_depth).abs() < depth * iod).to(mean.dtype)
    share = along * across * near * (2 * weights - 1)
    offsets = torch.zeros_like(mean)
    offsets[:, 1] = share * (LIP_UNIT * iod / 2)
    return Lips(offsets.to(model.dtype))
