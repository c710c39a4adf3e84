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
chin drops. Along the mouth the profile is the model's own opening, a lens, shut at the corners.

**A photo's own opening.** A photo's mouth open round to its corners (d19's "O") closed by that
lens met in the middle and stayed open in two lobes by the corners, which showed the photo's
dark interior. A renderer poses the photo with :func:`photo_lips` instead: the profile is the
photo's own gap along the mouth (:func:`opening_profile`), raised where the rims close slower
(:func:`closing_rate`: towards the corners the jaw's weights blend, and ``2 w - 1`` moves the
rims less), so the whole gap shuts at the closure that shuts its middle; a ``rest`` offset keeps
the photo's fitted closure where it was. (Where dlib put the photo's lower inner lip above the
lip itself, on its teeth, :mod:`faceanime.render.lip_edge` moves the rim down to it; and
the upper rim up to its lip, of a mouth open wide.)

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
    rest: torch.Tensor | None = None
    """``(N, 3)`` displacements applied at every closure, or None: a photo's rig
    (:func:`photo_lips`) keeps the photo's own lips where its fit put them with it."""

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> Lips:
        rest = None if self.rest is None else self.rest.to(device, dtype)
        return Lips(self.offsets.to(device, dtype), self.pucker.to(device, dtype), rest)


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
               corner_hold: float = 0.05, protrusion: float = 0.3,
               profile: tuple[torch.Tensor, torch.Tensor] | None = None) -> Lips:
    """Rig the lips of ``model`` from its mean shape, landmark mapping and jaw rig (along the
    mouth, the mean's own opening, or ``profile``).

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
        profile: how far the closure moves the lips along the mouth, relative to the middle
            inner-lip pair: ``(K,)`` knots (the mean's x, increasing) and ``(K,)`` values
            (:func:`opening_profile`); None: the mean's opening measured at the inner-lip pairs.

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
    lens = torch.cat([gaps.new_zeros(1), gaps / gaps[1].clamp_min(1e-9), gaps.new_zeros(1)])
    line = torch.cat([corners[:1, 1], (mean[upper, 1] + mean[lower, 1]) / 2, corners[1:, 1]])
    order = torch.argsort(xs)
    xs, lens, line = xs[order], lens[order], line[order]
    x, y = mean[:, 0], mean[:, 1]
    if profile is None:
        along = piecewise_linear(xs, lens, x)                                    # (N,)
    else:
        knots, values = (p.to(mean.device, mean.dtype) for p in profile)
        along = piecewise_linear(knots, values, x)
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


def _across_rims(model: FaceModel, jaw: Jaw, loop: torch.Tensor, vertices: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The mouth hole's upper rim (loop vertices whose jaw weight is under one half), ordered
    by the mean's x, and at each of its vertices the lower rim straight below in ``vertices
    (N, 3)`` (posed, model space): ``upper (U,)``, the gap's height ``(U,)`` (clamped at 0)
    and the lower rim's jaw weight there less the upper's ``(U,)``."""
    mean = model.mean.detach().double()
    posed = vertices.detach().to(mean.device, mean.dtype)
    weights = jaw.weights.to(mean.device, mean.dtype)
    upper, lower = loop[weights[loop] < 0.5], loop[weights[loop] >= 0.5]
    upper = upper[torch.argsort(mean[upper, 0])]
    lower = lower[torch.argsort(posed[lower, 0])]
    knots = posed[lower, 0].contiguous()
    at = posed[upper, 0].clamp(float(knots[0]), float(knots[-1])).contiguous()
    gap = (posed[upper, 1] - piecewise_linear(knots, posed[lower, 1].contiguous(), at))
    spread = piecewise_linear(knots, weights[lower].contiguous(), at) - weights[upper]
    return upper, gap.clamp_min(0), spread


def opening_profile(model: FaceModel, jaw: Jaw, loop: torch.Tensor, vertices: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """How open a posed mouth is along its length, as :func:`build_lips`'s ``profile``.

    Args:
        model: the model (its mean's x places the profile, as the rig's).
        jaw: its jaw rig: a weight under one half marks the hole's upper rim.
        loop: ``(M,)`` the mouth hole's boundary vertices (:class:`~faceanime.morphable.mouth.
            MouthCap`'s ``loop``).
        vertices: ``(N, 3)`` the posed face (model space, y up).

    Returns:
        ``knots (K,)`` (the corners' and the upper rim's x in the mean, increasing), ``values
        (K,)`` (each upper rim vertex's height above the lower rim at its x, over that height
        at the middle inner-lip pair; 0 at the corners; NaN when the middle is shut) and the
        middle's height in inter-ocular distances.
    """
    ids = model.landmark_indices
    mean = model.mean.detach().double()
    upper, gap, _ = _across_rims(model, jaw, loop, vertices)
    xs = mean[upper, 0].contiguous()
    middle = float(piecewise_linear(xs, gap, mean[ids[_UPPER[1]], 0].reshape(1)))
    iod = float((mean[ids[_EYES[0]]] - mean[ids[_EYES[1]]]).norm())
    corners = mean[ids[list(_CORNERS)], 0].sort().values
    knots = torch.cat([corners[:1], xs, corners[1:]])
    values = torch.cat([gap.new_zeros(1), gap / middle if middle > 0 else gap * float("nan"),
                        gap.new_zeros(1)])
    return knots, values, middle / iod


def closing_rate(model: FaceModel, jaw: Jaw, loop: torch.Tensor, vertices: torch.Tensor
                 ) -> torch.Tensor:
    """``(K,)`` on :func:`opening_profile`'s knots: how fast the rig's closure brings the rims
    together there for a profile of 1, relative to the middle (the lower rim's ``2 w - 1``
    less the upper's, over two): 1 over the middle, where the jaw's weights are 0 above and 1
    below, falling towards the corners, where they blend (0 at the corners themselves)."""
    ids = model.landmark_indices
    mean = model.mean.detach().double()
    upper, _, spread = _across_rims(model, jaw, loop, vertices)
    xs = mean[upper, 0].contiguous()
    middle = float(piecewise_linear(xs, spread, mean[ids[_UPPER[1]], 0].reshape(1)))
    rate = spread / max(middle, 1e-6)
    return torch.cat([rate.new_zeros(1), rate, rate.new_zeros(1)])

MIN_RATE = 0.25
"""The slowest closing rate (:func:`closing_rate`) a photo's profile is raised for: at the
corners themselves the rims do not close at all, and the photo's gap is 0 there too."""

PHOTO_PROFILE_GAP = (0.03, 0.08)
"""From what middle opening (inter-ocular distances) a photo's own opening along the mouth
starts to replace the mean's as the closure's profile (:func:`photo_lips`), and from what
opening it does so in full. Below, the lips nearly meet and their gaps are the fit's noise (s1:
0.022, its profile 0.7-1.5 at random); d19's "O" is 0.33 open, s42's parted lips 0.07."""


def open_share(middle: float) -> float:
    """How far a photo whose mouth is ``middle`` inter-ocular distances open in the middle
    counts as open (:data:`PHOTO_PROFILE_GAP`): 0 to 1."""
    low, high = PHOTO_PROFILE_GAP
    return float(smoothstep(torch.tensor((middle - low) / (high - low))))


def photo_lips(model: FaceModel, jaw: Jaw, loop: torch.Tensor, vertices: torch.Tensor,
               closure: float, lips: Lips | None = None,
               profile: tuple[torch.Tensor, torch.Tensor, float] | None = None) -> Lips | None:
    """The lip rig a photo's renderer poses with: the closure moves the lips along the mouth as
    far as the photo's own mouth is open there (:func:`opening_profile`), so a mouth open round
    to its corners (d19's "O") closes along its whole length instead of in the middle alone,
    where the mean's opening (a lens, shut at the corners) left two open lobes. Blended with
    ``lips`` (the model's rig, :func:`build_lips`) as the photo's mouth is open
    (:data:`PHOTO_PROFILE_GAP`); None without a rig.

    Its ``rest`` keeps the photo's fitted closure where it was: posed at ``closure`` (the
    photo's, ``Coefficients.lips``) the rig gives the vertices the model's rig does, and a
    target's closure moves them from there by the photo's profile.

    Args:
        vertices: ``(N, 3)`` the photo's posed face (model space), ``loop`` its mouth hole's
            boundary and ``jaw`` its jaw rig, as in :func:`opening_profile`.
        profile: :func:`opening_profile` of these, when the caller has it (measured if None).
    """
    lips = lips if lips is not None else lip_rig(model, jaw)
    if lips is None:
        return None
    knots, values, middle = (profile if profile is not None
                             else opening_profile(model, jaw, loop, vertices))
    share = open_share(middle)
    if share == 0 or not bool(torch.isfinite(values).all()):
        return lips
    # Towards the corners the rims close slower for the same profile (their jaw weights
    # blend): the profile is raised there by as much, or the lips met in the middle and two
    # lobes by the corners stayed open.
    rate = closing_rate(model, jaw, loop, vertices).clamp_min(MIN_RATE)
    own = build_lips(model, jaw, profile=(knots, (values / rate).clamp(0, 1.5)))
    change = share * (own.offsets - lips.offsets)
    return Lips(lips.offsets + change, lips.pucker, -closure * change)
