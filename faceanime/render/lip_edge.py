"""The photo's lips found by their colour beyond the fitted inner lip.

dlib puts the lower inner-lip points of an open mouth on whatever edge is sharpest there: on
d19's "O" the top of the lower teeth, 9–14 px (0.05–0.07 inter-ocular distances) above where
her lip begins. The fitted mesh's lower lip then holds a band of the cavity's floor and the
teeth, and a target that closes the mouth showed it as a dark crescent under the lips' line.

:func:`lip_edge_depth` walks down from each vertex of the mouth hole's lower rim (along the
face's own down) until the photo's pixels take the lower lip's colour (CIE L*a*b*, within
:data:`EDGE_TOLERANCE` of its median between the inner and the outer lip points, two pixels in
a row). :func:`lip_edge_offsets` turns those depths into a displacement of the lower lip's
vertices (the rim by all of it, fading to nothing at the outer lip line), and
:class:`LipEdge` applies it as far as a frame's mouth is open relative to the photo's: in full
at the photo's own opening (the zero-motion identity holds, and the photo's band lies inside
the hole, with its interior), not at all when the lips meet, where the rim's neighbours then
fetch the lip itself.

A mouth open wide (:data:`UPPER_EDGE_GAP`) has its upper lip found the same way, walking up
from the upper rim: dlib's upper inner-lip points lie in the dark inside under d19's upper lip
(4–8 px), shut a dark band under it. Parted lips keep their fitted upper rim: there the search
walks up their teeth and stops at the teeth's edge.

The lower lip's outer line is found too (:func:`skin_edge_depth`), walking down from the fitted
outer points until the pixels' chroma is nearer the chin's skin than the lip's: on d19's "O"
dlib puts them in the lip's middle, 11–17 px (0.05–0.08 inter-ocular distances) above where
the skin begins, and the lip's lower half, fetched by the chin's mesh, doubled the height of
the lower lip when the mouth closed (a tall pink tongue under the lips' line).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from faceanime.geometry.ramp import piecewise_linear, smoothstep
from faceanime.morphable.jaw import Jaw
from faceanime.morphable.model import FaceModel
from faceanime.render.paste import rgb_to_lab
from faceanime.render.texture import sample_image

EDGE_TOLERANCE = 10.0
"""How near (CIE76 ΔE) a pixel's colour must be to the lower lip's to count as lip: the lips'
own samples spread by about 6 on d19, the teeth and the cavity lie 20–30 away."""

EDGE_REACH = 0.12
"""How far below the fitted rim the lip's edge is looked for, in inter-ocular distances."""

UPPER_EDGE_GAP = 0.15
"""How wide open (the middle inner-lip pair's gap, inter-ocular distances) a photo's mouth must
be for its upper lip's edge to be looked for too, above the fitted upper rim: a mouth open
that far shows a dark inside under the upper lip (d19: 0.37), while parted lips (s42: 0.07)
show their teeth there, whose edge the search would take for the lip's."""

# 0-based iBUG: the lower inner-lip points and the outer ones below them (the upper ones,
# above); the middle inner-lip pair; the mouth's corners; the chin below the lower lip; the
# outer eye corners.
_INNER_LOWER = (65, 66, 67)
_OUTER_LOWER = (56, 57, 58)
_INNER_UPPER = (61, 62, 63)
_OUTER_UPPER = (50, 51, 52)
_INNER_MIDDLE = (62, 66)
_OUTER_LINE = (55, 56, 57, 58, 59)
_CORNERS = (48, 54)
_CHIN = (7, 8, 9)
_EYES = (36, 45)
# How many lips' heights below its outer line the lower lip's move fades out.
_CHIN_FADE = 3.0


def lip_edge_depth(image: torch.Tensor, rim: torch.Tensor, down: torch.Tensor,
                   lip: torch.Tensor, reach: int, tolerance: float = EDGE_TOLERANCE
                   ) -> torch.Tensor:
    """How many pixels below each rim point the lower lip begins.

    Args:
        image: ``(3, H, W)`` the photo in [0, 1].
        rim: ``(V, 2)`` pixel positions of the mouth hole's lower rim.
        down: ``(2,)`` unit image direction of the face's down.
        lip: ``(3,)`` the lower lip's colour, L*a*b*.
        reach: how many pixels to look down.
        tolerance: :data:`EDGE_TOLERANCE`.

    Returns:
        ``(V,)`` pixels (0 where the rim is on the lip already, or where no lip is found within
        ``reach``: a rim point beside the mouth's corner, on skin).
    """
    steps = torch.arange(reach + 1, dtype=rim.dtype, device=rim.device)
    points = rim[:, None, :] + steps[None, :, None] * down.to(rim)                # (V, K, 2)
    v, k = points.shape[:2]
    colours = sample_image(image[None], points.reshape(1, -1, 2))[0]             # (V K, 3)
    lab = rgb_to_lab(colours.T.reshape(1, 3, v, k))[0].permute(1, 2, 0)          # (V, K, 3)
    near = (lab - lip.to(lab)).norm(dim=-1) < tolerance
    run = near[:, :-1] & near[:, 1:]
    found = run.any(1)
    first = run.to(torch.uint8).argmax(1).to(rim.dtype)
    return torch.where(found, first, torch.zeros_like(first))


def skin_edge_depth(image: torch.Tensor, points: torch.Tensor, down: torch.Tensor,
                    lip: torch.Tensor, skin: torch.Tensor, reach: int) -> torch.Tensor:
    """How many pixels below each of the lower lip's outer points the skin begins.

    The chroma (a*, b*) alone decides, the nearer of the lip's and the skin's: the shadow under
    a lip is darker than both but no redder than the skin (image_0010: with the lightness
    counted, the edge was found in that shadow, 2–3 px further down).

    Args:
        image: ``(3, H, W)`` the photo in [0, 1].
        points: ``(V, 2)`` pixel positions on the lower lip's outer line.
        down: ``(2,)`` unit image direction of the face's down.
        lip, skin: ``(3,)`` the colours of the lower lip and of the skin below it, L*a*b*.
        reach: how many pixels to look down.

    Returns:
        ``(V,)`` pixels (0 where the point is on the skin already, or where no skin is found
        within ``reach``).
    """
    steps = torch.arange(reach + 1, dtype=points.dtype, device=points.device)
    along = points[:, None, :] + steps[None, :, None] * down.to(points)          # (V, K, 2)
    v, k = along.shape[:2]
    colours = sample_image(image[None], along.reshape(1, -1, 2))[0]              # (V K, 3)
    ab = rgb_to_lab(colours.T.reshape(1, 3, v, k))[0, 1:].permute(1, 2, 0)       # (V, K, 2)
    nearer = ((ab - skin[1:].to(ab)).norm(dim=-1) < (ab - lip[1:].to(ab)).norm(dim=-1))
    run = nearer[:, :-1] & nearer[:, 1:]
    found = run.any(1)
    first = run.to(torch.uint8).argmax(1).to(points.dtype)
    return torch.where(found, first, torch.zeros_like(first))


@dataclass
class LipEdge:
    """A photo's lower lip moved down to its edges (and a wide-open mouth's upper lip up to its
    own), as far as a frame's mouth is open.

    Attributes:
        offsets: ``(N, 3)`` the displacement at the photo's own opening (model space, applied
            after the jaw).
        top, bottom: the middle inner-lip pair's vertices (iBUG 63 and 67, 1-based).
        gap: their distance apart in the photo (model units), where ``offsets`` apply in full.
    """

    offsets: torch.Tensor
    top: int
    bottom: int
    gap: float

    def apply(self, vertices: torch.Tensor) -> torch.Tensor:
        """``(T, N, 3)`` posed vertices with the edge's share each frame's opening gives (0
        shut, 1 at the photo's opening and wider)."""
        opening = vertices[:, self.top, 1] - vertices[:, self.bottom, 1]
        share = (opening / self.gap).clamp(0, 1).to(vertices.dtype)
        return vertices + share[:, None, None] * self.offsets.to(vertices)


def mouth_rim(model: FaceModel, jaw: Jaw, loop: torch.Tensor, upper: bool = False
              ) -> torch.Tensor:
    """``(V,)`` the mouth hole's lower rim: ``loop``'s vertices whose jaw weight is one half or
    more (with ``upper``, the upper rim: those under one half), in the order of their x in the
    mean."""
    lower = jaw.weights.to(loop.device)[loop] >= 0.5
    rim = loop[~lower if upper else lower]
    return rim[torch.argsort(model.mean[rim, 0])]


def lip_edge_offsets(model: FaceModel, jaw: Jaw, loop: torch.Tensor, depth: torch.Tensor,
                     height: float, depth_reach: float = 0.3, upper: bool = False,
                     outer: torch.Tensor | None = None) -> torch.Tensor:
    """``(N, 3)``: the lower lip moved down (model -y) by ``depth (V,)`` model units at the
    hole's lower rim (``loop``'s vertices whose jaw weight is one half or more, in the order of
    their x in the mean), fading below the rim to nothing at ``height`` model units (the lip's
    height), and between the rim's points by x. Only the lower lip's vertices (jaw weight one
    half or more) within ``depth_reach`` inter-ocular distances of the lips in depth move. With
    ``upper``, the upper lip moved up from the upper rim the same way.

    ``outer (5,)`` (lower lip only) moves the lip's outer line down too, by that many model
    units at its points (0-based iBUG 55–59; nothing at the corners): it rises from the rim to
    the outer line (``height`` below it) and fades to nothing three ``height`` further down,
    into the chin."""
    mean = model.mean.detach().double()
    weights = jaw.weights.to(mean.device, mean.dtype)
    ids = model.landmark_indices
    iod = float((mean[ids[_EYES[0]]] - mean[ids[_EYES[1]]]).norm())
    rim = mouth_rim(model, jaw, loop, upper)
    xs = mean[rim, 0].contiguous()
    x, y = mean[:, 0], mean[:, 1]
    along = piecewise_linear(xs, depth.to(mean), x)
    rim_y = piecewise_linear(xs, mean[rim, 1].contiguous(), x.clamp(float(xs[0]), float(xs[-1])))
    beyond = ((y - rim_y) if upper else (rim_y - y)).clamp_min(0)
    fade = 1 - smoothstep(beyond / max(height, 1e-9))
    lips_depth = mean[rim, 2].mean()
    near = (mean[:, 2] - lips_depth).abs() < depth_reach * iod
    side = (weights < 0.5) if upper else (weights >= 0.5)
    move = along * fade
    if outer is not None and not upper:
        ends = ids[list(_CORNERS)]
        knots = torch.cat([mean[ends, 0], mean[ids[list(_OUTER_LINE)], 0]])
        values = torch.cat([torch.zeros(2, dtype=mean.dtype, device=mean.device),
                            outer.to(mean)])
        order = torch.argsort(knots)
        line = piecewise_linear(knots[order].contiguous(), values[order], x)
        # Down into the chin over three lips' heights: over one, the chin's skin there was
        # squeezed into a few pixels of the photo, a smear when the lip moved up.
        part = beyond / max(height, 1e-9)
        rise = torch.where(part <= 1, smoothstep(part), 1 - smoothstep((part - 1) / _CHIN_FADE))
        move = move + line * rise
    move = move * near * side
    offsets = torch.zeros_like(mean)
    offsets[:, 1] = move if upper else -move
    return offsets.to(model.dtype)


def _edge_depth(image: torch.Tensor, model: FaceModel, jaw: Jaw, loop: torch.Tensor,
                screen: torch.Tensor, lip: torch.Tensor, reach: int, step: torch.Tensor,
                height: float, upper: bool) -> torch.Tensor:
    """``(V,)`` model units from each vertex of a rim (:func:`mouth_rim`) to its lip's edge
    (the lip's colour ``lip``, L*a*b*), found by colour along the face's down (up for
    ``upper``; ``step`` pixels per model unit) within ``reach`` pixels, the lone ones dropped,
    at most 0.6 of the lip's ``height``."""
    per_unit = float(step.norm())
    rim = mouth_rim(model, jaw, loop, upper)
    found = lip_edge_depth(image, screen[rim, :2], (-step if upper else step) / per_unit, lip,
                           reach)
    depth = (found / per_unit).clamp(max=0.6 * height)
    # Lone points (a dark fleck on the lip) do not move the rim: the median of three.
    padded = torch.cat([depth[:1], depth, depth[-1:]])
    return padded.unfold(0, 3, 1).median(-1).values


def _colour(image: torch.Tensor, landmarks: torch.Tensor, inner: tuple[int, ...],
            outer: tuple[int, ...], share: float = 0.6) -> torch.Tensor:
    """``(3,)`` the median L*a*b* colour of ``image (3, H, W)`` at the points ``share`` of the
    way from the ``inner`` landmarks to the ``outer`` ones (``landmarks (68, 2)``)."""
    points = (1 - share) * landmarks[list(inner)] + share * landmarks[list(outer)]
    samples = sample_image(image[None], points.to(image.dtype)[None])[0]             # (3, P)
    return rgb_to_lab(samples.T.reshape(1, 3, -1, 1))[0, :, :, 0].median(-1).values


def _skin_depth(image: torch.Tensor, model: FaceModel, screen: torch.Tensor,
                lip: torch.Tensor, skin: torch.Tensor, reach: int, step: torch.Tensor,
                height: float) -> torch.Tensor:
    """``(5,)`` model units from the lower lip's outer points (0-based iBUG 55–59, as fitted)
    down to the skin (:func:`skin_edge_depth`, within ``reach`` pixels), at most the lip's
    ``height``."""
    per_unit = float(step.norm())
    points = screen[model.landmark_indices[list(_OUTER_LINE)], :2]
    found = skin_edge_depth(image, points, step / per_unit, lip, skin, reach)
    return (found / per_unit).clamp(max=height)


def photo_lip_edge(image: torch.Tensor, model: FaceModel, jaw: Jaw, loop: torch.Tensor,
                   posed: torch.Tensor, screen: torch.Tensor, landmarks: torch.Tensor,
                   rotation: torch.Tensor, scale: float, share: float) -> LipEdge | None:
    """The :class:`LipEdge` of a photo whose mouth is open (``share`` of it, :func:`~faceanime.
    morphable.lips.open_share`; None at 0, or where no rim point is off the lip).

    Args:
        image: ``(3, H, W)`` the photo in [0, 1].
        model, jaw, loop: the renderer's capped mesh, its jaw rig and its mouth hole.
        posed: ``(N, 3)`` the photo's posed vertices (model space); ``screen`` the same
            projected (pixels, depth).
        landmarks: ``(68, 2)`` the photo's detected points (each lip's colour is read between
            its inner and outer points).
        rotation: ``(3, 3)`` and ``scale`` its pose (pixels per model unit).
    """
    if share <= 0:
        return None
    ids = model.landmark_indices
    # Model -y on the image: u = s (R X)_x, v = -s (R X)_y.
    step = torch.stack([-rotation[0, 1], rotation[1, 1]]).to(screen.dtype) * scale   # px / unit
    height = float(posed[ids[_INNER_MIDDLE[1]], 1] - posed[ids[57], 1])
    reach = int(EDGE_REACH * float((landmarks[_EYES[0]] - landmarks[_EYES[1]]).norm())) + 1
    lip = _colour(image, landmarks, _INNER_LOWER, _OUTER_LOWER)
    # The skin between the lower lip's outer points and the chin's.
    skin = _colour(image, landmarks, _OUTER_LOWER, _CHIN, 0.45)
    depth = _edge_depth(image, model, jaw, loop, screen, lip, reach, step, height, upper=False)
    below = _skin_depth(image, model, screen, lip, skin, reach, step, height)
    offsets = lip_edge_offsets(model, jaw, loop, share * depth, height, outer=share * below)
    gap = float(posed[ids[_INNER_MIDDLE[0]], 1] - posed[ids[_INNER_MIDDLE[1]], 1])
    iod = float((posed[ids[_EYES[0]]] - posed[ids[_EYES[1]]]).norm())
    if gap >= UPPER_EDGE_GAP * iod:
        # A mouth open wide: dlib's upper inner-lip points, like the lower ones, lie on the
        # dark inside under the lip (d19: 4-8 px), a dark band under the lip once shut.
        above = float(posed[ids[51], 1] - posed[ids[_INNER_MIDDLE[0]], 1])
        upper_lip = _colour(image, landmarks, _INNER_UPPER, _OUTER_UPPER)
        up = _edge_depth(image, model, jaw, loop, screen, upper_lip, reach, step, above,
                         upper=True)
        offsets = offsets + lip_edge_offsets(model, jaw, loop, share * up, above, upper=True)
    if not bool((offsets != 0).any()):
        return None
    return LipEdge(offsets, int(ids[_INNER_MIDDLE[0]]), int(ids[_INNER_MIDDLE[1]]), gap)
