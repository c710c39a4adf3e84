"""Eyelid rig: a closure coefficient per eye that brings the upper lid down onto the lower one.

Morphable models such as the Surrey Face Model carry no eyelid motion (its six expression
blendshapes are emotions), so a blink cannot be fitted or transferred. Like the jaw
(:mod:`faceanime.morphable.jaw`), the lids are rigged from the mesh itself:

- Each eye is found by its six iBUG landmarks: the corners (37, 40 / 43, 46), the upper lid
  (38, 39 / 44, 45) and the lower lid (42, 41 / 48, 47), 1-based.
- Along the eye (its corner-to-corner axis, parameter ``s`` in [0, 1]) the *gap* — the vector
  from the upper lid to the lower lid — is interpolated piecewise linearly through 0 at the
  corners and the model's gaps at the two upper/lower landmark pairs.
- A vertex moves by ``closure * weight * gap(s)``. Its weight is 1 on the upper lid and fades to
  0 at the lower lid between them (the eye's own surface folds under the closing lid), and
  fades above the upper lid over ``lift`` times the eye's opening (the lid skin stretches down).
  Beyond the eye's corners and far in depth from the eye, the weight is 0.

At closure 1 the upper-lid landmarks lie on the lower-lid ones; at 0 the mesh is the model's.
Negative closures raise the lid above the model's (eyes opened wider than the mean face's, as in
many photos and in surprise), down to ``CLOSURE_RANGE[0]``. A raised lid takes a band of skin
above it along in full (``plateau`` eye openings, the lid's own skin up to about its crease)
before the motion fades: fading from the lash line itself, a lid raised under skin that an
expression brings down (anger, disgust: d6's wide eyes under lowered brows) pushed its lash
line in under that skin, a fold that hid the eye's upper half. The landmarks' vertices move
alike either way, and offsets are linear in the closure on each side of 0, so the fitter
finds it in closed form per frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from faceanime.errors import InputError
from faceanime.geometry.ramp import smoothstep
from faceanime.morphable.model import FaceModel

CLOSURE_RANGE = (-0.5, 1.0)
"""Bounds of a closure: raised by up to half the model's opening, down to shut."""

PLATEAU = 0.5
"""How far above the upper lid a raised lid's skin moves with it in full, in eye openings
(then fading over the rest of ``lift``): s1 and s42 by d6, blink follow 0.690 → 0.708 and
0.754 → 0.777. The fade's steepest slope is 1.5 / (lift - plateau) per eye opening, so at the
widest raise (``CLOSURE_RANGE[0]``) the rig alone never folds its skin for a plateau up to
lift - 0.75."""

# 0-based iBUG indices per eye: corners (outer/inner in the image's left-to-right order), the
# two upper-lid points and the lower-lid points below them.
EYES = (
    {"corners": (36, 39), "upper": (37, 38), "lower": (41, 40)},
    {"corners": (42, 45), "upper": (43, 44), "lower": (47, 46)},
)


@dataclass
class Eyelids:
    """Eyelid rig of a model.

    Attributes:
        offsets: ``(2, N, 3)`` vertex displacements at full closure of each eye (model units).
        upper: ``(2, 2)`` the upper-lid landmark indices (0-based iBUG) of each eye.
        lower: ``(2, 2)`` the lower-lid landmark indices below them.
        skin: ``(2, N)`` per eye, how much each vertex belongs to the lid skin that a closing
            lid unfolds over the eye: 0 on the lash line and from ``lift`` eye openings above
            it, up to about 0.7 between (a renderer fetches that skin from further up, where the
            photo shows skin rather than the crease's shadow).
        raised: ``(2, N, 3)`` the displacements a negative closure scales (``closure *
            raised``): as ``offsets`` below the lash line and on it, the skin above taken along
            further (the module's docstring).
    """

    offsets: torch.Tensor
    upper: torch.Tensor
    lower: torch.Tensor
    skin: torch.Tensor
    raised: torch.Tensor

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> Eyelids:
        return Eyelids(self.offsets.to(device, dtype), self.upper.to(device),
                       self.lower.to(device), self.skin.to(device, dtype),
                       self.raised.to(device, dtype))


def eyelid_rig(model: FaceModel) -> Eyelids | None:
    """:func:`build_eyelids`, or None for a model whose eye landmarks are not mapped (its lids
    then stay as modelled)."""
    try:
        return build_eyelids(model)
    except InputError:
        return None


def apply_eyelids(vertices: torch.Tensor, closure: torch.Tensor, offsets: torch.Tensor,
                  raised: torch.Tensor | None = None) -> torch.Tensor:
    """Close the lids: ``(B, N, 3)`` vertices, ``(B, 2)`` closures, ``(2, N, 3)`` offsets (and
    ``(2, N, 3)`` ``raised``, for negative closures; None: ``offsets`` both ways) ->
    ``(B, N, 3)``.

    Elementwise, not a matrix product: a frame's vertices do not depend on the batch it is in
    (a batched product may round differently for another batch size)."""
    c = closure.to(vertices.dtype)[:, :, None, None]
    offsets = offsets.to(vertices.dtype)
    if raised is None:
        return vertices + c[:, 0] * offsets[0] + c[:, 1] * offsets[1]
    raised = raised.to(vertices.dtype)
    down, up = c.clamp_min(0), c.clamp_max(0)
    return (vertices + down[:, 0] * offsets[0] + down[:, 1] * offsets[1]
            + up[:, 0] * raised[0] + up[:, 1] * raised[1])


def build_eyelids(model: FaceModel, lift: float = 1.5, depth: float = 0.6,
                  lashes: float = 0.6, corners: float = 0.2, plateau: float = PLATEAU
                  ) -> Eyelids:
    """Rig the eyelids of ``model`` from its mean shape and landmark mapping.

    Args:
        model: a model whose six landmarks of each eye are mapped to vertices.
        lift: how far above the upper lid the closing motion fades out, in eye openings.
        depth: vertices further than this many eye widths in depth from the eye's landmarks do
            not move (the nose beside the inner corner, the temple behind the outer one).
        lashes: the lash line's height above the upper lid, in eye openings: its vertices are
            not lid skin (``Eyelids.skin`` rises from 0 over this height).
        corners: and reaches this share of the eye's width beyond its corners.
        plateau: how far above the upper lid a raised lid's skin moves with it in full before
            fading out by ``lift``, in eye openings (below ``lift``).

    Returns:
        :class:`Eyelids`.

    Raises:
        InputError: an eye landmark has no vertex.
    """
    if not 0 <= plateau < lift:
        raise InputError(f"eyelid plateau {plateau} must be from 0 to below lift ({lift})")
    mean = model.mean.detach().double()
    ids = model.landmark_indices
    offsets = torch.zeros(2, *mean.shape, dtype=torch.float64, device=mean.device)
    raised = torch.zeros_like(offsets)
    skin = torch.zeros(2, mean.shape[0], dtype=torch.float64, device=mean.device)
    for e, eye in enumerate(EYES):
        needed = [*eye["corners"], *eye["upper"], *eye["lower"]]
        if any(int(ids[i]) < 0 for i in needed):
            raise InputError(f"model {model.name}: the eye landmarks are not all mapped to "
                             "vertices; the eyelid rig needs them")
        a, b = (mean[ids[i]] for i in eye["corners"])
        if a[0] > b[0]:
            a, b = b, a
        axis = b[:2] - a[:2]
        width = float(axis.norm())
        # Position along the eye and height across it, in the model's frontal plane.
        rel = mean[:, :2] - a[:2]
        s = (rel @ axis) / width ** 2                                     # (N,)
        normal = torch.stack([-axis[1], axis[0]]) / width                 # points up (y up)
        height = rel @ normal                                             # (N,)
        ups = [mean[ids[i]] for i in eye["upper"]]
        lows = [mean[ids[i]] for i in eye["lower"]]
        knots_s = torch.stack([torch.zeros((), dtype=mean.dtype, device=mean.device),
                               *[((u[:2] - a[:2]) @ axis) / width ** 2 for u in ups],
                               torch.ones((), dtype=mean.dtype, device=mean.device)])
        order = torch.argsort(knots_s)
        gaps = torch.stack([torch.zeros(3, dtype=mean.dtype, device=mean.device),
                            *[lo - up for up, lo in zip(ups, lows, strict=True)],
                            torch.zeros(3, dtype=mean.dtype, device=mean.device)])[order]
        knots_s = knots_s[order]
        upper_h = torch.stack([torch.zeros((), dtype=mean.dtype, device=mean.device),
                               *[(u[:2] - a[:2]) @ normal for u in ups],
                               torch.zeros((), dtype=mean.dtype, device=mean.device)])[order]
        lower_h = torch.stack([torch.zeros((), dtype=mean.dtype, device=mean.device),
                               *[(lo[:2] - a[:2]) @ normal for lo in lows],
                               torch.zeros((), dtype=mean.dtype, device=mean.device)])[order]
        inside = (s > 0) & (s < 1)
        clamped = s.clamp(0, 1)
        k = torch.searchsorted(knots_s, clamped.contiguous()).clamp(1, len(knots_s) - 1)
        s0, s1 = knots_s[k - 1], knots_s[k]
        t = ((clamped - s0) / (s1 - s0).clamp_min(1e-9))[:, None]
        gap = torch.lerp(gaps[k - 1], gaps[k], t)                          # (N, 3)
        up_h = torch.lerp(upper_h[k - 1], upper_h[k], t[:, 0])
        low_h = torch.lerp(lower_h[k - 1], lower_h[k], t[:, 0])
        opening = float((upper_h - lower_h).max())
        between = ((height - low_h) / (up_h - low_h).clamp_min(1e-6)).clamp(0, 1)
        above = 1 - smoothstep((height - up_h) / (lift * opening))
        weight = torch.where(height <= up_h, between, above)
        eye_depth = torch.stack([*ups, *lows])[:, 2].mean()
        near = (mean[:, 2] - eye_depth).abs() < depth * width
        offsets[e] = torch.where((inside & near)[:, None], weight[:, None] * gap,
                                 torch.zeros_like(gap))
        # As far up as a closing lid's motion reaches, not further (the brows stay).
        band = 1 - smoothstep((height - up_h - plateau * opening)
                              / ((lift - plateau) * opening))
        weight = torch.where(height <= up_h, between, band)
        raised[e] = torch.where((inside & near)[:, None], weight[:, None] * gap,
                                torch.zeros_like(gap))
        # The lid skin: from the lash line up to about the crease, and a little beyond the
        # corners (where the crease's shadow would otherwise stay as a dark notch).
        rise = (height - up_h) / opening
        along = smoothstep((s + corners) / corners) * smoothstep((1 + corners - s) / corners)
        lid = smoothstep(rise / lashes) * (1 - smoothstep(rise / lift)) * along
        skin[e] = torch.where(near & (height > up_h), lid, torch.zeros_like(lid))
    upper = torch.tensor([eye["upper"] for eye in EYES])
    lower = torch.tensor([eye["lower"] for eye in EYES])
    return Eyelids(offsets.to(model.dtype), upper.to(mean.device), lower.to(mean.device),
                   skin.to(model.dtype), raised.to(model.dtype))
