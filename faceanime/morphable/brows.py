"""Brow rig: each brow's inner and outer half raised or lowered on its own, the skin between it
and the eye and the forehead above stretching, the eyes and the hair line staying where they
are.

The Surrey Face Model's six emotions move the brows only with the rest of an expression
(surprise raises them and drops the jaw, anger lowers them and presses the lips), so a fit
explains about half of a talking driver's brow motion: over d3 and d6 the fitted brows' height
above the eyes varies 0.5-0.6 times as much as dlib's brow points' (standard deviations, in
inter-ocular distances), and a raised brow or a frown reached the photo at half strength. The
rig carries the rest, like the eyelid rig (:mod:`faceanime.morphable.eyelid`) carries blinks:

- **Along a brow** the motion is full between its end landmarks (iBUG 18-22 and 23-27,
  1-based) and fades out beyond them over ``beyond`` inter-ocular distances (at the nose's
  bridge the two brows' shares meet at about nothing, so the glabella stays).
- **Above it** the brow and the skin up to ``hold`` above its line move in full, then fade
  out over ``above`` (the forehead stretches, the hair line stays); **below it** the motion
  fades out towards the upper lid's line (the skin between stretches, the lids stay).
- **Two halves**: the inner and the outer half of a brow rise apart, as FACS's inner and
  outer brow raisers (AU1, AU2) and the brow lowerer (AU4, the inner ends down) move them:
  along the brow the inner part's share falls linearly from 1 at its inner end to 0 at its
  outer end, the outer part's rises, so the two raised alike move the brow as one. One raise
  per brow left a frown's and a raised inner brow's shape unfitted (d3's and d6's vertical
  error at the brows 0.009 and 0.016 inter-ocular distances; with the halves 0.0065 and 0.010).
- **Drawn in**: a frown (the corrugator, FACS's AU4) also pulls each brow's inner end
  towards the nose, and the skin between the brows bunches. Raises alone left that unfitted:
  the gap between the brows' inner ends (iBUG 22 and 23) varies over d3 and d6 half as much in
  the fit as in dlib's points (standard deviations 0.012 against 0.026 and 0.012 against 0.023
  inter-ocular distances). A third part per brow moves its inner half sideways, towards the
  other brow, with the same share as its inner raise.
- **Which way**: up, the model's y axis (it points from the chin to the brows), and for the
  third part towards the face's middle along its x axis; at 1 the part moves
  :data:`BROW_UNIT` inter-ocular distances at its own end, negative lowers it (or moves it
  out).

Offsets are linear in the raise, applied with the lids and lips, before the jaw turns (which
does not reach the brows). Fitted per frame from the brows' landmarks after the main fit
(:mod:`faceanime.fitting.brows`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from faceanime.errors import InputError
from faceanime.geometry.ramp import piecewise_linear, smoothstep
from faceanime.morphable.model import FaceModel

BROW_UNIT = 0.05
"""How far a brow moves at raise 1, in inter-ocular distances (the outer eye corners'): about a
third of the mean face's brow-to-lid distance, a clearly raised brow."""

BROWS_RANGE = (-1.5, 3.0)
"""Bounds of a raise: lowered by up to 0.075 inter-ocular distances (a frown), raised by up to
0.15."""

BROWS_IN_RANGE = (-1.5, 1.5)
"""Bounds of a brow drawn in (or moved out) at its inner end: 0.075 inter-ocular distances
either way. The brows' inner ends lie about 0.2-0.3 apart, so drawn in alike they still do not
meet (d3's and d6's fits stay within -0.72...0.56)."""


def bound_brows(amounts: torch.Tensor) -> torch.Tensor:
    """``(T, 6)`` amounts of the rig's parts (:data:`PARTS`) within their bounds: the raises
    within :data:`BROWS_RANGE`, the parts drawing the brows in within :data:`BROWS_IN_RANGE`."""
    raises, drawn = amounts[:, :4], amounts[:, 4:]
    return torch.cat([raises.clamp(*BROWS_RANGE), drawn.clamp(*BROWS_IN_RANGE)], 1)

# 0-based iBUG indices: each brow's five points (iBUG's 18-22 brow first), the upper lids'
# two points under each, the outer eye corners.
BROWS = ((17, 18, 19, 20, 21), (22, 23, 24, 25, 26))
PARTS = ("first inner", "first outer", "second inner", "second outer", "first in",
         "second in")
"""The rig's parts, in the order of :attr:`Brows.offsets` and of a coefficient file's
``brows``: each brow's inner and outer half raised (iBUG 18-22's brow, 1-based, first, its
inner half before its outer), then each brow's inner half drawn in (files written before those
two read them as 0)."""
_LIDS = ((37, 38), (43, 44))
_EYES = (36, 45)


@dataclass
class Brows:
    """Brow rig of a model.

    Attributes:
        offsets: ``(6, N, 3)`` vertex displacements of each part (:data:`PARTS`) at raise 1
            (model units).
    """

    offsets: torch.Tensor

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> Brows:
        return Brows(self.offsets.to(device, dtype))


def brow_rig(model: FaceModel) -> Brows | None:
    """:func:`build_brows`, or None for a model whose brows are not mapped (they then move
    with its expressions alone)."""
    try:
        return build_brows(model)
    except InputError:
        return None


def apply_brows(vertices: torch.Tensor, raises: torch.Tensor, offsets: torch.Tensor
                ) -> torch.Tensor:
    """Raise (or lower) the brows and draw them in: ``(B, N, 3)`` vertices, ``(B, P)`` amounts
    of the first ``P`` parts (:data:`PARTS`; 4: raises alone, as before the parts that draw the
    brows in), ``(6, N, 3)`` offsets (:attr:`Brows.offsets`) -> ``(B, N, 3)`` (per frame, so a
    frame's vertices do not depend on its batch)."""
    dtype = vertices.dtype
    return vertices + torch.einsum("be,end->bnd", raises.to(dtype),
                                   offsets[:raises.shape[1]].to(dtype))


def build_brows(model: FaceModel, beyond: float = 0.12, hold: float = 0.08,
                above: float = 0.35) -> Brows:
    """Rig the brows of ``model`` from its mean shape and landmark mapping.

    Args:
        model: a model whose brows, upper lids and outer eye corners are mapped.
        beyond: over how far beyond a brow's ends its motion fades out (inter-ocular
            distances).
        hold: how far above a brow's line the skin moves in full (the brow's hair).
        above: over how much further up the motion fades out (the forehead).

    Returns:
        :class:`Brows`.

    Raises:
        InputError: a landmark the rig needs has no vertex.
    """
    ids = model.landmark_indices
    needed = [i for brow in BROWS for i in brow] + [i for lid in _LIDS for i in lid] + [*_EYES]
    if any(int(ids[i]) < 0 for i in needed):
        raise InputError(f"model {model.name}: the brows, upper lids and eye corners are not "
                         "all mapped to vertices; the brow rig needs them")
    mean = model.mean.detach().double()
    iod = float((mean[ids[_EYES[0]]] - mean[ids[_EYES[1]]]).norm())
    x, y = mean[:, 0], mean[:, 1]
    offsets = torch.zeros(len(PARTS), *mean.shape, dtype=mean.dtype, device=mean.device)
    # Each brow's inner end: the one nearer the other brow.
    middle = float(mean[ids[[BROWS[0][-1], BROWS[1][0]]], 0].mean())
    for e, (brow, lid) in enumerate(zip(BROWS, _LIDS, strict=True)):
        points = mean[ids[list(brow)]]
        order = torch.argsort(points[:, 0])
        xs, ys = points[order, 0], points[order, 1]
        # The brow's line at each vertex's x (held level beyond its ends).
        line = piecewise_linear(xs, ys, x.clamp(float(xs[0]), float(xs[-1])))
        outside = torch.maximum(xs[0] - x, x - xs[-1]).clamp_min(0)
        along = 1 - smoothstep(outside / (beyond * iod))
        lid_line = float(mean[ids[list(lid)], 1].mean())
        up = y - line
        over = 1 - smoothstep((up - hold * iod) / (above * iod))
        under = smoothstep((y - lid_line) / (line - lid_line).clamp_min(1e-9))
        share = along * torch.where(up >= 0, over, under)
        inner, outer = (xs[0], xs[-1]) if abs(float(xs[0]) - middle) < abs(
            float(xs[-1]) - middle) else (xs[-1], xs[0])
        towards_outer = ((x - inner) / (outer - inner)).clamp(0, 1)
        offsets[2 * e, :, 1] = share * (1 - towards_outer) * (BROW_UNIT * iod)
        offsets[2 * e + 1, :, 1] = share * towards_outer * (BROW_UNIT * iod)
        inwards = 1.0 if float(inner) < middle else -1.0
        offsets[2 * len(BROWS) + e, :, 0] = inwards * share * (1 - towards_outer) * (
            BROW_UNIT * iod)
    return Brows(offsets.to(model.dtype))
