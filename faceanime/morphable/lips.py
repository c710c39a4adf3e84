"""Lip rig: a closure that brings the upper and lower lips together, the chin left where it
is, and a pucker that draws the mouth's corners together (an "o", an "oo").

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
(so the lower lip's share turns with the chin). The fitter finds each frame's closure from the
inner lips' gaps (:mod:`faceanime.fitting.lips`): a talking face parts its lips more than its
chin drops. Along the mouth the profile is the model's own opening, a lens: a photo's mouth
open round to its corners (d19's "O") closes in the middle and stays open in two lobes by the
corners (``docs/render.md``, Limits).

**Pucker.** The Surrey Face Model's six emotions cannot round the lips: a driver saying "o"
was fitted with a mouth as wide as ever, so the photo's stayed wide, and the driver's captured
mouth interior took in its own lips at the corners. The pucker narrows the mouth: along it, the
lips and the skin beside them move towards the mouth's middle in proportion to their distance
from it (the corners by :data:`PUCKER_UNIT` / 2 inter-ocular distances each at pucker 1), fading
out beyond the corners and above and below the lips; the lips' middle pushes forward a little
(a rounded mouth protrudes). Negative values widen the mouth. It is fitted per frame from the
mouth's landmark widths (:mod:`faceanime.fitting.lips`), and applied with the closure.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from faceanime.errors import InputError
from faceanime.geometry.ramp import piecewise_linear, smoothstep
from faceanime.morphable.jaw import Jaw, apply_jaw, build_jaw
from faceanime.morphable.model import FaceModel

LIP_UNIT = 0.1
"""How far the middle of the lips move together at closure 1, in inter-ocular distances (the
outer eye corners'): about the opening of a mouth saying "ah" in the model's mean face."""

LIPS_RANGE = (-1.0, 4.0)
"""Bounds of a closure: parted by one unit more than the model's, up to four units closed."""

PUCKER_UNIT = 0.1
"""How much narrower the mouth (corner to corner) is at pucker 1, in inter-ocular distances:
about a fifth of the model's mean mouth width, a lightly rounded "o"."""

PUCKER_RANGE = (-3.0, 3.0)
"""Bounds of a pucker: the mouth up to 0.3 inter-ocular distances wider or narrower."""

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
        pucker: ``(N, 3)`` vertex displacements at pucker 1 (model units).
    """

    offsets: torch.Tensor
    pucker: torch.Tensor

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> Lips:
        return Lips(self.offsets.to(device, dtype), self.pucker.to(device, dtype))


def lip_rig(model: FaceModel, jaw: Jaw | None = None) -> Lips | None:
    """:func:`build_lips`, or None for a model whose lips are not mapped (its mouth then stays
    as modelled)."""
    try:
        return build_lips(model, jaw)
    except InputError:
        return None


def apply_lips(vertices: torch.Tensor, closure: torch.Tensor, offsets: torch.Tensor
               ) -> torch.Tensor:
    """Close (or pucker) the lips: ``(B, N, 3)`` vertices, ``(B,)`` closures (puckers),
    ``(N, 3)`` offsets (:attr:`Lips.offsets` or :attr:`Lips.pucker`) -> ``(B, N, 3)``
    (elementwise, so a frame's vertices do not depend on its batch)."""
    return vertices + closure.to(vertices.dtype)[:, None, None] * offsets.to(vertices.dtype)


def build_lips(model: FaceModel, jaw: Jaw | None = None, reach: float = 0.2,
               depth: float = 0.3, lip_height: float = 0.1, pucker_reach: float = 0.15,
               corner_hold: float = 0.05, protrusion: float = 0.3) -> Lips:
    """Rig the lips of ``model`` from its mean shape, landmark mapping and jaw rig.

    Args:
        model: a model whose mouth corners, inner lips and outer eye corners are mapped.
        jaw: its jaw rig (built when None): its weights tell the lower lip from the upper.
        reach: how far from the inner lip line the closure fades out, in inter-ocular
            distances.
        depth: vertices further than this many inter-ocular distances in depth from the lips
            do not move.
        lip_height: how far above and below the inner lip line the pucker moves the lips in
            full (the lips' height, inter-ocular distances).
        pucker_reach: over how much further (above, below, and beyond the corners) the pucker
            fades out, in inter-ocular distances.
        corner_hold: how far beyond the model's corner vertices the pucker still moves the
            skin as far as the corners (inter-ocular distances): the corners a viewer (and
            dlib) sees lie that much further out (the fitted mouth is 0.06-0.09 narrower than
            dlib's on the shared data); fading from the vertices on, a pucker moved them 0.55
            times as far as the rig's corners.
        protrusion: how far the lips' middle comes forward at pucker 1, relative to each
            corner's inward motion.

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
    along = piecewise_linear(xs, profile, x)                                     # (N,)
    # The inner lip line's height at each vertex's x (clamped to the corners' beyond them).
    height = piecewise_linear(xs, line, x.clamp(float(xs[0]), float(xs[-1])))
    across = 1 - smoothstep((y - height).abs() / (reach * iod))
    lip_depth = mean[torch.cat([upper, lower]), 2].mean()
    near = ((mean[:, 2] - lip_depth).abs() < depth * iod).to(mean.dtype)
    share = along * across * near * (2 * weights - 1)
    offsets = torch.zeros_like(mean)
    offsets[:, 1] = share * (LIP_UNIT * iod / 2)
    # Pucker: x towards the mouth's middle, linear between the corners (they move by half a
    # unit each), held a little beyond them, then fading; full over the lips' height, fading
    # above and below.
    middle = corners[:, 0].mean()
    half = (corners[1, 0] - corners[0, 0]).abs() / 2
    offset = (x - middle) / half.clamp_min(1e-9)
    beyond = 1 - smoothstep(((offset.abs() - 1) * half - corner_hold * iod)
                            / (pucker_reach * iod))
    along = torch.where(offset.abs() <= 1, offset, offset.sign() * beyond)
    off_line = (y - height).abs()
    across = 1 - smoothstep((off_line - lip_height * iod) / (pucker_reach * iod))
    inward = PUCKER_UNIT * iod / 2
    pucker = torch.zeros_like(mean)
    pucker[:, 0] = -along * across * near * inward
    # Forward: the lips' middle most, nothing at the corners, over the lips alone (the nose
    # base and the chin's crease stay).
    bulge = (1 - offset ** 2).clamp_min(0)
    lift = 1 - smoothstep(off_line / ((lip_height + pucker_reach / 2) * iod))
    pucker[:, 2] = bulge * lift * near * (protrusion * inward)
    return Lips(offsets.to(model.dtype), pucker.to(model.dtype))
