"""The warp renderer: the photo itself moves. Every output pixel is a photo pixel, fetched
through a dense backward flow field built from the 3D fit (GUIDE §1, issue 15).

**Inside the face** the flow is exact: the target mesh is rasterized, and each covered pixel
fetches the photo at the position the *same surface point* had under the source fit (its
barycentric coordinates carry over). A surface point the photo does not show (hidden behind the
nose or the cheek's silhouette), or shows so obliquely that the target would magnify it more
than ``max_stretch`` times, is fetched from its mirror point on the other half of the face when
that one is seen better; otherwise from where the photo shows it, stretched. Nothing is left as a
hole or a dark dot.

**Outside the face** the head moves as one, in 3D. Every output pixel near the face is given a
depth on a *head proxy*: the fitted face's own depth on the face, continued smoothly outwards
(normalized convolution) into an ellipsoid head (``head_ellipsoid``) behind and around it, so hair,
ears and the top of the head turn with the parallax of a real head, not as a flat picture. The
head's rigid motion (a 3D affine map from the target screen back to the photo, fitted to the
face's vertices at its neutral expression posed both ways, so it holds the pose change alone:
exact for the orthographic camera) carries those points back into the photo. Outside the face
the head follows only part of the fitted pose (:func:`head_pose`: the shares were calibrated on
the real videos' hair motion, ``docs/render.md``); the face's own motion at its edge (the jaw,
the cheeks, the rest of the pose) is continued a short way outwards so the two join. The motion
is weighted by a *head region* fixed in the photo: 1 over the segmented head and hair, fading out
beyond them, quickly below the chin (the neck and shoulders stay), and at the image border, so
the far background stays still. This backward field lives on a coarse grid, is smoothed where
it would fold the photo over itself (:func:`unfold`) and is interpolated; the exact face flow
is blended into it over a few pixels inside the face's edge. What the head uncovers as it moves
is fetched from the region the moving flow leaves behind: background stretched over it, never
black, never a second face.

**The mouth** is closed by the recessed cap of :mod:`faceanime.morphable.mouth`. While the
target mouth opens no wider than the photo's, the photo's own lips and interior are warped (a
photo with teeth keeps its teeth); wider, a mouth interior is synthesised from the photo's lip
colour, darkening smoothly towards the back.

Zero motion is the identity: at the source's own coefficients every flow is zero (to float
rounding) and the output is the photo. Alternatives measured against this design are in
``docs/render.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from scipy import ndimage

from faceanime.coefficients import Coefficients
from faceanime.errors import InputError
from faceanime.geometry.ramp import smoothstep
from faceanime.geometry.rotation import so3_exp, so3_log
from faceanime.landmarks.gaze import eye_frames, eye_slide
from faceanime.morphable.model import FaceModel
from faceanime.morphable.mouth import boundary_loops
from faceanime.reconstruction import project_vertices
from faceanime.render.frames import Box, BoxRenderer, clip_box, to_uint8
from faceanime.render.head_mask import head_mask
from faceanime.render.mouth_interior import (
    colour_spread,
    face_highlight,
    highlight_shoulder,
    interior_saturation,
    luma,
    median_colours,
    mouth_layout,
    outer_lip_vertices,
    red_response,
    sample_texture,
    skin_gain,
    skin_vertices,
    synthetic_interior,
    tone_interior,
    upper_teeth,
    warm_tint,
)
from faceanime.render.mouth_interior import mouth_uv as mouth_uv_of
from faceanime.render.paste import feather_mask, gaussian_blur, inside_distance
from faceanime.render.rasterize import interpolate_covered, rasterize, signed_areas
from faceanime.render.texture import pixel_grid

# Every this many vertices of the neutral face summarise the head's rigid motion.
_RIGID_STRIDE = 4
# The face's motion is continued outwards from this many of its outermost coarse cells.
_EDGE_CELLS = 2
# From this much lid skin on (a closure times the rig's skin weight, which peaks near 0.7),
# a dark feature on the unfolded lid takes the skin fill in full.
_LID_FULL = 0.35


@dataclass
class WarpConfig:
    """Settings of the warp renderer. Sizes relative to the face are to the width and height of
    the fitted face mesh (ear to ear, chin to the top of the forehead) in the photo."""

    head_width: float = 1.5
    """Width of the head region that moves as one, relative to the face's width."""
    head_height: float = 1.7
    """Height of the head region, relative to the face's height."""
    head_raise: float = 0.15
    """How far above the face's centre the head region's centre sits (hair), relative to the
    face's height."""
    falloff: float = 0.6
    """Over how much further, relative to the head region's radius, the head motion fades into
    the still background."""
    neck: float = 0.35
    """Below the chin the motion fades over this much of the face's height (the shoulders stay)."""
    pivot_follow: float = 0.25
    """How much of the fitted *vertical* motion of the neck's pivot (the mouth's height, the
    head's centre depth) the head outside the face follows. The fit reads much of a nod as the
    head moving down; the hair top of a nodding head barely moves. 1: as fitted; 0: the pivot
    stays; sideways motion is always followed in full."""
    rotation_follow: float = 0.75
    """How much of the fitted rotation (about the pivot) the head outside the face follows: the
    fit turns the face further than the hair and the skull's outline go (the face's landmarks
    turn with the expression too)."""
    scale_follow: float = 0.0
    """How much of the fitted change of scale the head outside the face follows: the fit's scale
    breathes with expressions the model lacks (raised brows, a pursed mouth); a head seldom comes
    nearer in a talking video. The ``*_follow`` values were calibrated on the optical flow of
    the hair in the shared videos (``tools/hair_flow.py``, ``docs/render.md``)."""
    segment: bool = True
    """Find the head and hair in the photo (GrabCut, :mod:`faceanime.render.head_mask`): they
    move as one up to their edge, and the background beside them stays still. Off: the head
    region is the ellipse alone, fading out over ``falloff``."""
    segment_reach: float = 1.4
    """With ``segment``, the ellipse that bounds the segmented head is this many times larger
    (the mask decides within it)."""
    segment_band: float = 0.1
    """With ``segment``, the least width, relative to the face's size, over which the motion
    fades out beyond the head's edge (it widens with the frame's motion)."""
    border: float = 0.03
    """Band along the image border, relative to the image's shorter side, over which all motion
    fades out (the frame's edge stays still)."""
    border_stretch: float = 2.0
    """Near the photo content's edge, the head's motion towards that edge is kept under the
    distance to it divided by this, so nothing is fetched from beyond the photo: a head moving
    away from the frame's top that crops its hair stretches the hair beside the edge (over
    twice the motion) instead of repeating the photo's last row in streaks (0: off, the
    border's fade alone)."""
    extend_sigma: float = 0.08
    """Reach of the face's non-rigid motion (jaw, cheeks) and depth beyond its edge: the
    Gaussian's sigma relative to the face's size."""
    extend_adapt: float = 1.6
    """Where the face's edge moves further than the reach can fade without folding (the chin
    rising 45 px as an open-mouthed photo's mouth closes), the reach grows up to 4 times, to
    this many times the motion (a Gaussian fade stays one-to-one while its sigma exceeds 0.8
    times the motion): fading too fast, the outside fetched the photo's chin again under the
    new chin (0: the fixed reach)."""
    face_stretch: float = 1.33
    """Beside the face, ``border_stretch`` eases to this (at least 1): the face's own motion
    towards the photo's edge (a chin near the bottom edge rising) may take up to ``1 / this``
    of the room before the edge, which the outside must reach to meet the face's exact flow
    without a jump (0: ``border_stretch`` everywhere)."""
    proxy_smooth: float = 8.0
    """The head proxy's depth beyond the face (the face's own depth continued, less the
    ellipsoid's) is blurred over this many pixels (a Gaussian's sigma), so that the face's
    outline cells, each covered in part, do not make it jump from cell to cell (0: off)."""
    grid: int = 4
    """The outside flow is computed on a grid this many times coarser than the photo and
    interpolated (it is smooth; the face's own flow is computed per pixel)."""
    proxy: str = "ellipsoid"
    """Depth of the head beyond the face: ``ellipsoid`` (the face continued into an ellipsoid
    head: hair and ears turn with a head's parallax) or ``plane`` (the face continued into the
    plane of its edge: the head turns as a flat picture). Measured in ``docs/render.md``."""
    flank_stretch: float = 3.0
    """The ellipsoid's flank, seen edge-on in the photo, is magnified without bound as a turn
    brings it into view: the thin band of hair beside the head's outline swept sideways into
    streaks, an ear pulled off the head. Frame by frame, the flank is softened (see
    :func:`ellipsoid_depth`'s ``rim``) just enough that the head beyond the face magnifies the
    photo at most about this many times; small turns keep the exact ellipsoid. 0: never
    softened."""
    feather: float = 4.0
    """Pixels inside the face's edge over which its exact flow blends into the outside flow."""
    seam: float = 8.0
    """Reach (a Gaussian's sigma, pixels) over which the exact face flow's difference from the
    outside flow is continued beyond the face's outline at full resolution, so the two join
    without a seam (0: off; the coarse outside flow alone meets the exact one there). Where a
    temple turns away that difference is 10-15 px, and a shorter reach folds the photo there."""
    unfold: float = 0.25
    """The outside flow must not fold the photo over itself (a region shown twice, mirrored:
    streaks where the head proxy's side turns into view, or where the face's edge motion meets
    the head's): where its Jacobian determinant falls below this, it is smoothed locally until
    it does not. 0: off."""
    mirror: bool = False
    """Fetch surface the photo does not show well from its mirror point."""
    max_stretch: float = 3.0
    """A surface point seen in the photo is fetched from it unless the target magnifies its
    triangle more than this many times (seen edge-on in the photo) and the mirror side is
    magnified less."""
    depth_tolerance: float = 0.01
    """Depth-test margin, as a fraction of the face's depth range in the photo."""
    mouth_interior: bool = True
    """Close the mouth with a recessed cap: the photo's own interior where it shows one, a
    synthesised one where the target opens wider."""
    interior_darkness: float = 0.8
    """How dark the back of a synthesised mouth interior is (0: lip colour, 1: black)."""
    mouth_feather: float = 1.5
    """Pixels inside the mouth's outline over which the interior fades in from the lips (0:
    a hard, aliased edge)."""
    mouth_shadow: float = 0.45
    """The lips shade the mouth's inside where they meet it: the interior (the driver's or the
    synthesised) darkens towards the outline by up to this share (0: off). Without it the
    driver's own lit lip edges and the teeth's tops ended in a pale rim along the cap's
    outline, a cut-out's edge at 1024² and more."""
    mouth_shadow_width: float = 0.06
    """How far in from the outline the lips' shadow reaches, in the photo's mouth widths."""
    mouth_blend: float = 0.0125
    """Inside the mouth, where the photo's own (stretched) mouth meets the new interior, the
    two are blended over a Gaussian of this many mouth widths (0: per pixel). The photo's cap
    is a thin band that an opening stretches several times, so its per-pixel visibility came
    out in steps of a few pixels."""
    lid_skin: float = 0.8
    """A lid closing further than the photo's unfolds skin the photo hides (under the
    crease): it is fetched from up to this many of the photo's eye openings higher, where the
    photo shows skin, instead of stretching the crease's shadow over the eye (0: stretch)."""
    lash_line: float = 0.5
    """A closing eye hides its eyeball under the lid instead of squeezing the white and the
    iris into a pale line: from this share of the photo's eye opening closed onwards, what
    shows of the eye fades to the photo's lash colour, fully at shut (1: never)."""
    lash_band: float = 0.2
    """A shut eye's lashes hang over its lower lid: the lash colour reaches this many of the
    photo's eye heights further out at shut (growing from ``lash_line`` on). Without it a shut
    eye was a pencil-thin line that dlib read as open (cross closed-eye ratio 0.727 → 0.661;
    0.3 gave 0.667 and looked like eyeliner); 0: the thin line."""
    lid_fill: float = 0.7
    """How much of that unfolded lid skin is the photo's skin colour around the eye (the
    surrounding skin smoothed, its dark features left out) rather than fetched pixels: 0 to
    1. Deep-set eyes leave little skin between crease and brow to fetch."""
    lid_dark: float = 0.2
    """Fetched lid pixels darker than that skin colour by this share of its brightness or more
    are a dark feature pulled over the eye (the brow of a deep-set eye, the crease's shadow) and
    take the skin colour in full, fading in from the skin colour's brightness down (0: off,
    ``lid_fill`` alone)."""
    lid_feather: float = 0.3
    """The unfolded lid's cover (how much of it is the skin colour) is blurred over this many of
    the photo's eye heights (a Gaussian's sigma), so it fades into the fetched pixels around it
    instead of ending in a hard, polygonal outline (0: off)."""
    lid_grain: float = 0.04
    """The unfolded lid skin takes the photo's fine texture (film grain, pores: the photo less
    its blur over a pixel, where that detail's luma stays under this; it fades out by twice
    this, so lashes and hair strands stay out), copied 1:1 from the cheek an eye's width below
    the output pixel: the smoothed skin colour alone was a flat patch in a grainy photo, and
    grain fetched through the lid's stretched flow drew streaks (0: off)."""
    driver_interior: bool = True
    """Where the target carries the driver's mouth interior (``Coefficients.mouth``, captured
    from a driving video), show its teeth and tongue instead of the synthesised ones."""
    rigid_teeth: bool = True
    """Where the target opens wider than the photo, its own mouth interior moves as two rows,
    each with its lip: what lies above the darkest line between the photo's lips keeps its
    height under the upper lip, what lies below it over the lower lip, and the part the
    opening adds between them is the mouth's inside (a smile's teeth stay teeth). False: the
    interior is stretched with the opening by the mouth cap's fan."""
    batch_size: int = 0
    """Frames rendered at once (memory grows with it and the image size); 0: 8 on the CPU,
    32 on CUDA (:func:`faceanime.parallel.default_batch`)."""
    workers: int = 0
    """Batches rendered at once on as many threads, sharing the torch threads out (0: one per
    torch CPU thread, at most 4; 1 on CUDA). See :mod:`faceanime.parallel`."""
    backend: str = "torch"
    """Rasterizer backend (``torch`` or ``pytorch3d``)."""

    def __post_init__(self) -> None:
        for name in ("extend_adapt", "proxy_smooth"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise InputError(f"warp setting {name} must be ≥ 0, got {value!r}")
        positive = ("head_width", "head_height", "falloff", "neck", "extend_sigma",
                    "max_stretch", "segment_reach", "segment_band")
        for name in positive:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise InputError(f"warp setting {name} must be a positive number, got {value!r}")
        for name in ("pivot_follow", "rotation_follow", "scale_follow", "lid_fill",
                     "lash_line", "lid_dark", "lash_band", "lid_grain"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value <= 1):
                raise InputError(f"warp setting {name} must be between 0 and 1, got {value!r}")
        if not (isinstance(self.flank_stretch, (int, float)) and math.isfinite(self.flank_stretch)
                and (self.flank_stretch == 0 or self.flank_stretch > 1)):
            raise InputError(f"warp setting flank_stretch must be 0 (off) or above 1, got "
                             f"{self.flank_stretch!r}")
        for name in ("border_stretch", "face_stretch"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value)
                    and (value == 0 or value >= 1)):
                raise InputError(f"warp setting {name} must be 0 (off) or at least 1, got "
                                 f"{value!r}")
        if self.proxy not in ("ellipsoid", "plane"):
            raise InputError(f"warp setting proxy must be ellipsoid or plane, got {self.proxy!r}")
        if not isinstance(self.grid, int) or self.grid < 1:
            raise InputError(f"warp setting grid must be a whole number ≥ 1, got {self.grid!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 0:
            raise InputError(f"warp setting batch_size must be a whole number ≥ 0 (0: by "
                             f"device), got {self.batch_size!r}")
        if not (math.isfinite(self.unfold) and 0 <= self.unfold < 1):
            raise InputError(f"warp setting unfold must be from 0 to below 1, got "
                             f"{self.unfold!r}")
        if not (isinstance(self.lid_feather, (int, float)) and math.isfinite(self.lid_feather)
                and self.lid_feather >= 0):
            raise InputError(f"warp setting lid_feather must be ≥ 0 eye heights, got "
                             f"{self.lid_feather!r}")
        if not (isinstance(self.lid_skin, (int, float)) and math.isfinite(self.lid_skin)
                and self.lid_skin >= 0):
            raise InputError(f"warp setting lid_skin must be ≥ 0 eye openings, got "
                             f"{self.lid_skin!r}")
        for name in ("feather", "mouth_feather", "seam", "mouth_blend"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                unit = "mouth widths" if name == "mouth_blend" else "pixels"
                raise InputError(f"warp setting {name} must be ≥ 0 {unit}, got {value!r}")


# --- pure functions on tensors --------------------------------------------------------------


def fit_affine(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Least-squares affine maps from points ``source (B, R, k)`` or ``(R, k)`` to
    ``target (B, R, m)``: ``(B, k + 1, m)`` matrices ``M`` with ``target ≈ [source, 1] @ M``.

    Solved in float64 around the points' centroids (well conditioned for pixel coordinates)."""
    y = target.double()
    x = source.double().expand(y.shape[0], -1, -1)
    xc, yc = x.mean(1, keepdim=True), y.mean(1, keepdim=True)
    x, y = x - xc, y - yc
    gram = x.transpose(1, 2) @ x
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    ridge = 1e-9 * gram.diagonal(dim1=1, dim2=2).sum(-1)[:, None, None]
    linear = torch.linalg.solve(gram + ridge * eye, x.transpose(1, 2) @ y)     # (B, k, m)
    shift = yc - xc @ linear                                                  # (B, 1, m)
    return torch.cat([linear, shift], 1).to(target.dtype)


def apply_affine(matrix: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``[points, 1] @ matrix`` for ``matrix (B, k + 1, m)`` and ``points (B, ..., k)``:
    ``(B, ..., m)``."""
    b, k = matrix.shape[0], matrix.shape[1] - 1
    flat = points.reshape(b, -1, k)
    out = flat @ matrix[:, :k] + matrix[:, k:]
    return out.reshape(*points.shape[:-1], matrix.shape[-1])


def extend_field(field: torch.Tensor, weight: torch.Tensor, sigma: float,
                 keep: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalized convolution: where ``weight (B, 1, H, W)`` is at most ``keep``, ``field
    (B, C, H, W)`` takes the Gaussian-weighted mean of the values around (each counted by its
    weight); elsewhere it keeps its own value.

    Returns:
        ``(B, C, H, W)`` extended field and ``(B, 1, H, W)`` density: the blurred weight, about
        1 deep inside the known region, 0.5 at its edge, falling to 0 a few sigma away.
    """
    blurred = gaussian_blur(torch.cat([field * weight, weight.expand(field.shape[0], -1, -1,
                                                                     -1)], 1),
                            max(sigma, 0.5), border="zero")
    density = blurred[:, -1:]
    extended = torch.where(weight > keep, field, blurred[:, :-1] / density.clamp_min(1e-6))
    return extended, density


def depth_slope(zbuf: torch.Tensor) -> torch.Tensor:
    """``(..., H, W)`` how fast depth buffers ``(..., H, W)`` (``-inf`` at background) change per
    pixel on smooth surface: per axis the smaller of the two one-sided differences, summed over
    the axes; 0 at background."""
    z = torch.where(torch.isfinite(zbuf), zbuf, torch.full_like(zbuf, torch.nan))
    h, w = z.shape[-2:]
    padded = F.pad(z.reshape(-1, 1, h, w), (1, 1, 1, 1), value=float("nan"))
    padded = padded.reshape(*z.shape[:-2], h + 2, w + 2)

    def smaller(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.fmin((a - z).abs(), (b - z).abs()).nan_to_num(0.0)

    return (smaller(padded[..., 1:-1, :-2], padded[..., 1:-1, 2:])
            + smaller(padded[..., :-2, 1:-1], padded[..., 2:, 1:-1]))


def convex_depth(points: torch.Tensor, polygon: torch.Tensor) -> torch.Tensor:
    """``(P,)`` signed distance of points ``(P, 2)`` into the convex polygon ``(K, 2)`` (either
    winding): the distance to the nearest edge's line, positive inside, negative outside (exact
    outside only near an edge, which is where it is used)."""
    edge = polygon.roll(-1, 0) - polygon                                    # (K, 2)
    rel = points[:, None, :] - polygon[None]                                # (P, K, 2)
    cross = edge[None, :, 0] * rel[..., 1] - edge[None, :, 1] * rel[..., 0]  # (P, K)
    area = (polygon[:, 0] * polygon.roll(-1, 0)[:, 1]
            - polygon.roll(-1, 0)[:, 0] * polygon[:, 1]).sum()
    sign = 1.0 if float(area) >= 0 else -1.0
    return (sign * cross / edge.norm(dim=-1).clamp_min(1e-9)).amin(1)


def in_box(points: torch.Tensor, low: torch.Tensor, high: torch.Tensor,
           keep: torch.Tensor) -> torch.Tensor:
    """Indices ``(K,)`` of the ``points (P, 2)`` with ``keep (P,)`` True inside the box from
    ``low`` to ``high`` ``(2,)`` (edges included). Column by column: ``(points >= low).all(1)``
    took 3.5 times as long on this CPU torch (a reduction over a last dimension of 2)."""
    x, y = points[:, 0], points[:, 1]
    lo, hi = low.tolist(), high.tolist()
    return (keep & (x >= lo[0]) & (x <= hi[0]) & (y >= lo[1]) & (y <= hi[1])).nonzero()[:, 0]


def ellipsoid_depth(points: torch.Tensor, model_to_screen: torch.Tensor, centre: torch.Tensor,
                    radii: torch.Tensor, rim: torch.Tensor | None = None) -> torch.Tensor:
    """Screen depth of an ellipsoid's front surface at pixels ``points (B, ..., 2)``.

    The ellipsoid is given in model space (``centre (3,)``, axis-aligned ``radii (3,)``) and
    brought to each screen by the affine ``model_to_screen (B, 4, 3)`` (model point -> ``u, v,
    depth``). Along each pixel's line of sight the nearer intersection is taken; a pixel outside
    the ellipsoid's outline gets the depth of its closest approach (the outline's depth), so the
    result is continuous.

    ``rim (B,)`` in ``[0, 1)`` softens the flank: where a line of sight's half-chord, squared,
    falls below ``rim`` of the largest (the centre's), the depth goes on along its tangent in
    that measure instead of dropping vertically at the outline, reaching the outline's depth
    where the squared half-chord is ``-rim`` (beyond the exact outline). On a sphere the slope is
    then at most ``sqrt((1 + rim) / rim)`` depth radii per radius. 0 or None: the exact surface.

    Returns:
        ``(B, ...)`` depths (larger = nearer).
    """
    b = points.shape[0]
    linear, shift = model_to_screen[:, :3], model_to_screen[:, 3:]           # (B,3,3) (B,1,3)
    inverse = torch.linalg.inv(linear.double()).to(points.dtype)
    flat = points.reshape(b, -1, 2)
    # Model point on the line of sight of pixel (u, v) at depth d: X0 + d e.
    base = (torch.cat([flat, torch.zeros_like(flat[..., :1])], -1) - shift) @ inverse - centre
    direction = inverse[:, 2:3]                                               # (B, 1, 3)
    p, e = base / radii, direction / radii
    qa = (e * e).sum(-1)
    qb = 2 * (p * e).sum(-1)
    qc = (p * p).sum(-1) - 1
    # The squared half-chord over its largest (1 through the centre, 0 at the outline, negative
    # beyond it).
    chord = qb * qb / (4 * qa) - qc
    half = chord.clamp_min(0.0).sqrt()
    if rim is not None:
        k = rim.to(chord).reshape(b, 1).clamp(0.0, 0.99)
        root = k.sqrt().clamp_min(1e-6)
        tangent = (root + (chord - k) / (2 * root)).clamp_min(0.0)
        half = torch.where((chord < k) & (k > 0), tangent, half)
    # Larger screen depth is nearer: of the two intersections take the larger d.
    depth = (-qb / 2 + half * qa.sqrt()) / qa
    return depth.reshape(points.shape[:-1])


def flank_rim(relative: torch.Tensor, radii: torch.Tensor, stretch: float) -> torch.Tensor:
    """``(B,)`` the ``rim`` of :func:`ellipsoid_depth` that keeps the magnification of an
    ellipsoid with ``radii (3,)`` (x, y, depth) under the rotations ``relative (B, 3, 3)`` (target
    from source, camera space) below about ``stretch``.

    A turn by ``θ`` out of the image plane maps a surface of slope ``s`` (depth per sideways
    unit) back with derivative ``cos θ - s sin θ``: it stays at least ``1 / stretch`` while
    ``s <= (cos θ - 1 / stretch) / sin θ``. The softened flank's steepest slope is
    ``sqrt((1 + rim) / rim)`` times the ellipsoid's depth-to-width ratio (taken over its
    narrower side), so ``rim`` is the smallest that meets it; 0 for no turn, at most 0.99
    (beyond about 24° on a sphere, for ``stretch`` 3, none meets it and that softest one is
    used)."""
    cos = relative[:, 2, 2].clamp(-1.0, 1.0)
    sin = (1 - cos * cos).clamp_min(0.0).sqrt()
    slope = (cos - 1 / stretch) / sin.clamp_min(1e-6)
    ratio = radii[2] / radii[:2].min()
    q = (slope / ratio) ** 2
    rim = torch.where(q > 1, 1 / (q - 1).clamp_min(1e-6), torch.ones_like(q))
    return torch.where(sin > 1e-6, rim, torch.zeros_like(rim)).clamp(0.0, 0.99)


def head_ellipsoid(model: FaceModel) -> tuple[torch.Tensor, torch.Tensor]:
    """A head proxy around a face model's mean: ``centre (3,)`` and ``radii (3,)`` in model
    units. As wide as the face plus a little (ears), a little taller than it (the skull above
    the forehead), its centre as far back as the face's edge (the ears), its front at the nose
    tip."""
    mean = model.mean.detach()
    low, high = mean.amin(0), mean.amax(0)
    size = high - low
    centre = torch.stack([(low[0] + high[0]) / 2, (low[1] + high[1]) / 2 + 0.1 * size[1],
                          low[2]])
    radii = torch.stack([0.58 * size[0], 0.62 * size[1], size[2]])
    return centre, radii


def jacobian_determinant(displacement: torch.Tensor, step: float) -> torch.Tensor:
    """``(B, H, W)`` the Jacobian determinant of the map ``x -> x + d(x)`` for a displacement
    field ``d (B, 2, H, W)`` sampled every ``step`` pixels (central differences, one-sided at the
    edges)."""
    padded = F.pad(displacement, (1, 1, 1, 1), mode="replicate")
    dx = (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2]) / (2 * step)
    dy = (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1]) / (2 * step)
    return (1 + dx[:, 0]) * (1 + dy[:, 1]) - dx[:, 1] * dy[:, 0]


def unfold(displacement: torch.Tensor, step: float, least: float = 0.25,
           iterations: int = 12, ignore: torch.Tensor | None = None) -> torch.Tensor:
    """A displacement field ``(B, 2, H, W)`` (sampled every ``step`` pixels) smoothed where its
    map folds or nearly folds (Jacobian determinant below ``least``) and two samples around, by
    repeated 5×5 averaging there only, until no sample is below ``least`` or after
    ``iterations`` rounds. Elsewhere it is unchanged. Samples where ``ignore (B, 1, H, W)`` is
    True do not count as folds (the renderer's exact face flow replaces the field there)."""

    def folded(field: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        bad = (jacobian_determinant(field, step) < least)[:, None]
        return bad if skip is None else bad & ~skip

    bad = folded(displacement, ignore)
    if not bool(bad.any()):
        return displacement
    # Only the box around the folds is worked on: a round spreads the smoothing 2 samples.
    h, w = displacement.shape[-2:]
    rows = bad.any(3).any(1).any(0).nonzero()[:, 0]
    cols = bad.any(2).any(1).any(0).nonzero()[:, 0]
    margin = 2 * iterations + 3
    y0, y1 = max(int(rows[0]) - margin, 0), min(int(rows[-1]) + margin + 1, h)
    x0, x1 = max(int(cols[0]) - margin, 0), min(int(cols[-1]) + margin + 1, w)
    field = displacement[..., y0:y1, x0:x1]
    skip = None if ignore is None else ignore[..., y0:y1, x0:x1]
    for _ in range(iterations):
        bad = folded(field, skip)
        if not bool(bad.any()):
            break
        near = F.max_pool2d(bad.to(field), 5, stride=1, padding=2)
        smooth = F.avg_pool2d(F.pad(field, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
        field = torch.where(near > 0, smooth, field)
    out = displacement.clone()
    out[..., y0:y1, x0:x1] = field
    return out


def content_box(image: torch.Tensor, tolerance: float = 6 / 255,
                most: float = 0.4) -> tuple[int, int, int, int]:
    """The photo inside its uniform margins: ``(x0, y0, x1, y1)`` of ``image (3, H, W)``.

    A margin is a run of whole rows or columns along an edge, each of one colour (every channel
    within ``tolerance``) and that of the edge's outermost line: the white or black bars of a
    screenshot, a letterboxed frame, a padded portrait. At most ``most`` of the image's side is
    taken from each edge; an image without margins is its own box."""
    h, w = image.shape[-2:]

    def run(lines: torch.Tensor) -> int:
        # ``lines (L, 3, N)``, outermost first: how many lead, each uniform and of the first's
        # colour.
        low, high = lines.amin(-1), lines.amax(-1)                            # (L, 3)
        uniform = ((high - low).amax(-1) <= tolerance) & \
            ((lines.mean(-1) - lines[:1].mean(-1)).abs().amax(-1) <= tolerance)
        return int(uniform.int().cumprod(0).sum())

    limit_x, limit_y = int(most * w), int(most * h)
    left = run(image[:, :, :limit_x].permute(2, 0, 1))
    right = run(image[:, :, w - limit_x:].flip(-1).permute(2, 0, 1))
    top = run(image[:, :limit_y].permute(1, 0, 2))
    bottom = run(image[:, h - limit_y:].flip(-2).permute(1, 0, 2))
    return left, top, w - right, h - bottom


def head_pose(source: Coefficients, target: Coefficients, pivot: torch.Tensor,
              rotation_follow: float = 1.0, scale_follow: float = 1.0,
              vertical_follow: float = 1.0) -> Coefficients:
    """The pose the head *outside the face* takes in each target frame: the source's pose moved
    part of the way to the target's.

    The rotation change is scaled along its geodesic by ``rotation_follow`` about the model-space
    ``pivot (3,)``; the scale change (log scale) by ``scale_follow``; the pivot's vertical screen
    motion by ``vertical_follow``, its sideways motion is kept. For the perspective camera the
    same is done to the pivot's camera-space position (vertical: ``y``; scale: depth ``z``), an
    approximation of the screen motion. All follows 1 give the target's pose.

    Args:
        source: one frame's coefficients (the photo's).
        target: ``T`` frames.
        pivot: ``(3,)`` model-space point.

    Returns:
        ``target`` with rotation, translation and (orthographic) scale replaced, ``T`` frames.
    """
    dtype, device = target.rotation.dtype, target.rotation.device
    src_rotation = source.rotation[:1].to(device, dtype)
    relative = target.rotation @ src_rotation.transpose(-1, -2)
    rotation = so3_exp(rotation_follow * so3_log(relative)) @ src_rotation
    p = pivot.to(device, dtype)
    t = target.n_frames
    if target.camera == "orthographic":
        src_scale = source.scale[:1].to(device, dtype)
        scale = src_scale * (target.scale.to(device, dtype) / src_scale) ** scale_follow
        at_source = project_vertices(source.frames(slice(0, 1)), p[None, None])[:, 0, :2]
        at_target = project_vertices(target, p[None, None].expand(t, 1, 3))[:, 0, :2]
        want = at_target.clone()
        want[:, 1] = torch.lerp(at_source[:, 1], at_target[:, 1], vertical_follow)
        # Orthographic: the pivot's screen position minus that without translation is the
        # translation (u = x + t_x, v = t_y - y).
        placed = replace(target, rotation=rotation, scale=scale,
                         translation=torch.zeros_like(target.translation))
        offset = project_vertices(placed, p[None, None].expand(t, 1, 3))[:, 0, :2]
        translation = target.translation.clone()
        translation[:, :2] = want - offset
        return replace(placed, translation=translation)
    cam_source = source.rotation[:1].to(device, dtype) @ p + source.translation[:1].to(device,
                                                                                         dtype)
    cam_target = target.rotation @ p + target.translation
    want = cam_target.clone()
    want[:, 1] = torch.lerp(cam_source[:, 1], cam_target[:, 1], vertical_follow)
    want[:, 2] = torch.lerp(cam_source[:, 2], cam_target[:, 2], scale_follow)
    return replace(target, rotation=rotation, translation=want - rotation @ p)


def sample_field(field: torch.Tensor, points: torch.Tensor, step: int) -> torch.Tensor:
    """Bilinear values of a coarse field ``(B, C, h, w)`` whose cell ``(i, j)`` sits at fine pixel
    ``(j step + (step - 1) / 2, i step + (step - 1) / 2)``, at fine pixel positions
    ``points (B, H', W', 2)``: ``(B, C, H', W')`` (edge values beyond the grid)."""
    h, w = field.shape[-2:]
    cell = (points - (step - 1) / 2) / step
    return F.grid_sample(field, pixel_grid(cell, h, w), mode="bilinear",
                         padding_mode="border", align_corners=True)


# --- the renderer ----------------------------------------------------------------------------


def mouth_axes(left: torch.Tensor, right: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The mouth's frame from its corners ``left``, ``right`` ``(..., 2)`` (pixels): the unit
    vector along it ``(..., 2)``, the one across it (down the face) ``(..., 2)`` and its width
    ``(...,)``."""
    axis = right - left
    width = axis.norm(dim=-1).clamp_min(1e-6)
    along = axis / width[..., None]
    across = torch.stack([-along[..., 1], along[..., 0]], -1)
    return along, across, width


def chain_height(u: torch.Tensor, chain_u: torch.Tensor, chain_v: torch.Tensor) -> torch.Tensor:
    """``(M,)`` the height ``v`` of a lip's edge at positions ``u (M,)`` along the mouth: the
    piecewise-linear chain through ``(chain_u, chain_v)`` ``(M, K)`` (each row sorted by ``u``),
    held level beyond its ends."""
    k = chain_u.shape[1]
    hi = torch.searchsorted(chain_u.contiguous(), u[:, None].contiguous()).clamp(1, k - 1)
    lo = hi - 1
    u0, u1 = chain_u.gather(1, lo)[:, 0], chain_u.gather(1, hi)[:, 0]
    v0, v1 = chain_v.gather(1, lo)[:, 0], chain_v.gather(1, hi)[:, 0]
    t = ((u - u0) / (u1 - u0).clamp_min(1e-6)).clamp(0, 1)
    return torch.lerp(v0, v1, t)


def lip_chains(points: torch.Tensor, left: torch.Tensor, along: torch.Tensor,
               across: torch.Tensor, width: torch.Tensor, upper: torch.Tensor,
               lower: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The inner lips' edges of ``B`` posed mouths in their own frames: ``points (B, K, 2)``
    the loop's screen positions, the frames' corner ``left``, axes and widths ``(B, 2)``,
    ``(B,)``; ``upper`` and ``lower`` the loop's indices of each lip. Returns the upper lip's
    ``u`` and ``v`` (sorted by ``u``) and the lower lip's, ``(B, Ku)`` and ``(B, Kl)``."""
    rel = points - left[:, None]
    u = (rel * along[:, None]).sum(-1) / width[:, None]
    v = (rel * across[:, None]).sum(-1)
    out = []
    for index in (upper, lower):
        cu, order = u[:, index].sort(1)
        out += [cu, v[:, index].gather(1, order)]
    return tuple(out)


def lips_beside(frames: torch.Tensor, pixels: torch.Tensor, sigma: float) -> torch.Tensor:
    """``(M, 3)`` the colour of the pixels around each of ``pixels`` ``(M,)`` (flat over
    ``(T, H, W)`` of ``frames (T, 3, H, W)``) that are not among them: a Gaussian of ``sigma``
    pixels over the rest, normalised (a pixel with none of the rest within three sigmas gets
    black: deep inside a mouth, where the caller gives this colour no weight).

    At a mouth's outline these are the lips where they meet the interior, in their own light:
    the photo's median lip colour (its outer lip line, skin and lip) is paler than the
    shaded edge of the lips, and drew a pale ring round the mouth (s42 opened: 115 against
    99-110 of the lips beside it, in luma)."""
    t, _, h, w = frames.shape
    frame = pixels.div(h * w, rounding_mode="floor")
    rest = pixels - frame * (h * w)
    row, col = rest.div(w, rounding_mode="floor"), rest % w
    pad = math.ceil(3 * sigma) + 1
    r0, c0 = max(int(row.min()) - pad, 0), max(int(col.min()) - pad, 0)
    r1, c1 = min(int(row.max()) + pad + 1, h), min(int(col.max()) + pad + 1, w)
    inside = torch.zeros(t, 1, r1 - r0, c1 - c0, dtype=frames.dtype, device=frames.device)
    inside[frame, 0, row - r0, col - c0] = 1
    outside = 1 - inside
    both = gaussian_blur(torch.cat([frames[:, :, r0:r1, c0:c1] * outside, outside], 1), sigma,
                         border="zero")
    colour = both[:, :3] / both[:, 3:].clamp_min(1e-6)
    return colour[frame, :, row - r0, col - c0]


class WarpRenderer(BoxRenderer):
    """Animate one photo by warping it with the flow between its fit and target coefficients.

    Args:
        model: the morphable model the coefficients were fitted with.
        source_image: the photo, ``(H, W, 3)`` uint8 or ``(3, H, W)`` float in [0, 1].
        source: its fitted coefficients (frame 0 is used).
        config: settings.
    """

    def __init__(self, model: FaceModel, source_image, source: Coefficients,
                 config: WarpConfig | None = None) -> None:
        self.config = c = config or WarpConfig()
        self._set_up(model, source_image, source, c.mouth_interior, own_lips=True)
        self.n_face_vertices = model.n_vertices
        self.n_face_triangles = model.n_triangles
        self.triangles = self.mesh.triangles.to(model.device)
        self.rigid = torch.arange(0, model.n_vertices, _RIGID_STRIDE, device=model.device)
        loops = boundary_loops(model.triangles.cpu().numpy())
        self.outline = torch.tensor(max(loops, key=len), device=model.device)
        self.source = source.frames(slice(0, 1))
        src = self._screen(self.source)[0]                                  # (N, 3)
        self.source_screen = src
        # The photo's identity at its neutral expression: posed at the source and at each
        # target, its vertices give the pose change alone (an expression or an open jaw would
        # otherwise read as the head stretching, and drag the hair).
        shape = self.source.shape.to(model.device, model.dtype)[None]
        self.neutral = model.vertices(shape)[0, self.rigid].to(src.dtype)     # (R, 3)
        self.neutral_source = project_vertices(self.source, self.neutral[None])[0]
        symmetry = self.mesh.symmetry
        self.has_mirror = symmetry is not None and c.mirror
        if not self.has_mirror:
            symmetry = torch.arange(src.shape[0])
        symmetry = symmetry.to(src.device)
        # Per vertex: its source position and depth, and its mirror point's when mirroring
        # (otherwise never read, so not interpolated either): (N, 6) or (N, 3).
        self.attributes = torch.cat([src, src[symmetry]], 1) if self.has_mirror else src
        self.source_area = signed_areas(src[None][:, self.triangles])[0].abs()
        self.mirror_area = signed_areas(src[None][:, symmetry[self.triangles]])[0].abs()
        face = src[:self.n_face_vertices, :2]
        self.face_low, self.face_high = face.amin(0), face.amax(0)
        self.face_size = float((self.face_high - self.face_low).mean())
        ends = self.mesh.landmark_indices[[48, 54]]
        self.mouth_width = (float((src[ends[0], :2] - src[ends[1], :2]).norm())
                            if bool((ends >= 0).all()) else 0.1 * self.face_size)
        self.content = content_box(self.image)
        self._depth_buffer(src)
        self.lid_reach = self.lid_fill = self.eye_polygons = self.lash_colours = None
        self.lid_grain, self.grain_offset = None, 0
        if self.eyelids is not None and c.lid_skin > 0:
            # Per vertex, how much it is lid skin of each eye, and the few triangles that hold
            # any (only their pixels are looked at); per eye, the photo's upper lid's screen
            # motion per unit of closure.
            rig = self.eyelids.to(src.device, src.dtype)
            self.lid_skin = rig.skin.T.contiguous()                                 # (N, 2)
            self.lid_triangles = (self.lid_skin[self.triangles] > 0).flatten(1).any(1)  # (F,)
            ids = self.mesh.landmark_indices.to(src.device)
            reach = []
            for e in range(2):
                shut = self.source.frames([0])
                eyes = shut.eyes.clone()
                eyes[:, e] += 1
                shut.eyes = eyes
                lid = ids[rig.upper[e]]
                reach.append((self._screen(shut)[0, lid, :2] - src[lid, :2]).mean(0))
            self.lid_reach = -c.lid_skin * torch.stack(reach)                   # (2, 2)
            opening = float(torch.stack(reach).norm(dim=-1).mean())
            self.lid_fill = self._skin_fill(max(opening, 1.0)) if c.lid_fill > 0 else None
            self.eye_polygons, self.lash_colours = self._eyes(src, ids)
            if self.lid_fill is not None and c.lid_grain > 0:
                self.lid_grain = self._skin_grain(c.lid_grain)
                corners = self.eye_polygons[:, 3] - self.eye_polygons[:, 0]          # (2, 2)
                self.grain_offset = round(float(corners.norm(dim=-1).mean()))
            self.eye_heights = torch.stack(reach).norm(dim=-1)                  # (2,)
        self.gaze_eyes = self._gaze_eyes(src)
        self._head_region()
        self.ellipsoid = head_ellipsoid(model)
        # The neck's pivot, in model space: the mouth's height, the head ellipsoid's depth.
        mouth = self.neutral_mouth_height(model)
        self.pivot = torch.stack([self.ellipsoid[0][0], mouth, self.ellipsoid[0][2]]).to(src)
        self.lip_colour = self._lip_colour(src)
        self.teeth_rows = self._teeth_rows(src) if c.rigid_teeth else None
        if self.cap is not None:
            self.layout = mouth_layout(self.cap).to(src.device)
            skin_colour = median_colours(self.image[None], src[None, skin_vertices(
                self.mesh).to(src.device), :2])[0].clamp_min(0.05)             # (3,)
            skin = float(luma(skin_colour))
            self.skin = skin
            self.synthetic = synthetic_interior(self.layout, self.lip_colour, skin,
                                                c.interior_darkness)[None]    # (1, 4, h, w)
            # Captured interiors are stored at a reference skin colour: back to the photo's
            # (the synthesised teeth take on the same hue).
            self.interior_gain = 1 / skin_gain(skin_colour)
            self.teeth_tint = warm_tint(self.interior_gain)
            # A monochrome photo shows a driver's pink tongue in its own tone: the hue of its
            # skin is not enough to say (a tinted black-and-white face is as warm as a pale
            # colour one).
            zx0, zy0, zx1, zy1 = self.zbox
            face = self.image[:, zy0:zy1, zx0:zx1][:, torch.isfinite(self.zbuf)].T  # (P, 3)
            self.interior_saturation = interior_saturation(colour_spread(face))
            # The interior's colours roll off below the face's brightest skin, not at 1.
            self.highlight = face_highlight(face)
            self.red_response = red_response(float(luma(self.lip_colour)) / skin)
            self.tone = skin_colour / luma(skin_colour)

    # -- source-side set-up, once per photo --

    @staticmethod
    def neutral_mouth_height(model: FaceModel) -> torch.Tensor:
        """The model's mean mouth height (iBUG 63's y, else the mean's centre)."""
        index = int(model.landmark_indices[62])
        return model.mean[index, 1] if index >= 0 else model.mean[:, 1].mean()

    def _teeth_rows(self, src: torch.Tensor) -> tuple | None:
        """The photo's mouth in its own frame, for :meth:`_rigid_interior`: the loop's
        vertices of each lip and their edges (:func:`lip_chains`), or None without a cap or
        mapped mouth corners."""
        if self.cap is None:
            return None
        ends = self.mesh.landmark_indices[[48, 54]]
        if bool((ends < 0).any()):
            return None
        loop = self.cap.loop.to(src.device)
        points = src[loop, :2]
        left, right = src[ends[0], :2], src[ends[1], :2]
        along, across, width = mouth_axes(left, right)
        rel = points - left
        u = (rel * along).sum(-1) / width
        v = (rel * across).sum(-1)
        # The loop runs corner to corner and back: split at its ends along the mouth; the arc
        # lying higher is the upper lip's.
        k = len(loop)
        first, last = int(u.argmin()), int(u.argmax())
        a = torch.arange(first, first + (last - first) % k + 1, device=src.device) % k
        b = torch.arange(last, last + (first - last) % k + 1, device=src.device) % k
        upper, lower = (a, b) if float(v[a].mean()) < float(v[b].mean()) else (b, a)
        chains = lip_chains(points[None], left[None], along[None], across[None], width[None],
                            upper, lower)
        # Where the two rows meet, along the mouth: the darkest point between the lips (the
        # line between the teeth, the mouth's dark inside) in each of a few strips across it,
        # as a share of the opening there, smoothed along the mouth.
        us = torch.linspace(0.05, 0.95, 32, dtype=src.dtype, device=src.device)
        top = chain_height(us, chains[0].expand(32, -1), chains[1].expand(32, -1))
        bottom = chain_height(us, chains[2].expand(32, -1), chains[3].expand(32, -1))
        shares = torch.linspace(0.1, 0.9, 17, dtype=src.dtype, device=src.device)
        depth = top[:, None] + shares[None] * (bottom - top).clamp_min(0)[:, None]   # (32, 17)
        where = (left + (us * width)[:, None, None] * along
                 + depth[..., None] * across)                                   # (32, 17, 2)
        h, w = self.image.shape[-2:]
        lum = F.grid_sample(luma(self.image.movedim(0, -1))[None, None],
                            pixel_grid(where[None], h, w).to(self.image.dtype),
                            mode="bilinear", padding_mode="border", align_corners=True)[0, 0]
        split = shares[lum.argmin(1)]
        split = torch.where((bottom - top) >= 2, split, torch.full_like(split, 0.5))
        split = torch.from_numpy(ndimage.median_filter(split.cpu().numpy(), 5, mode="nearest")
                                 ).to(split)
        return loop, ends, upper, lower, (left, along, across, width), chains, (us, split)

    def _rigid_interior(self, screen: torch.Tensor, xy: torch.Tensor, frame: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(M, 2)`` where the photo's own mouth interior is fetched for target pixels
        ``xy (M, 2)`` of frames ``frame (M,)`` on the mouth cap (``screen (T, N, 3)``): each
        pixel keeps its distance from its lip (in the photo's pixels), up to where the photo's
        rows meet there (the darkest line between its lips); the rest of a wider opening
        fetches that line. At the photo's own pose every pixel fetches itself. Also ``(M,)``
        how far in from the lips each pixel lies and ``(M,)`` how far into that wider part,
        each in [0, 1] over two of the photo's pixels, and ``(M,)`` that share where the
        photo's own teeth show above it."""
        loop, ends, upper, lower, photo, chains, (split_u, split) = self.teeth_rows
        left, right = screen[:, ends[0], :2], screen[:, ends[1], :2]
        along, across, width = mouth_axes(left, right)                           # (T, 2), (T,)
        up_u, up_v, low_u, low_v = lip_chains(screen[:, loop, :2], left, along, across, width,
                                              upper, lower)
        rel = xy - left[frame]
        u = (rel * along[frame]).sum(-1) / width[frame]
        v = (rel * across[frame]).sum(-1)
        p_left, p_along, p_across, p_width = photo
        scale = p_width / width[frame]                                            # (M,)
        a = (v - chain_height(u, up_u[frame], up_v[frame])) * scale
        b = (chain_height(u, low_u[frame], low_v[frame]) - v) * scale
        m = len(u)
        top = chain_height(u, chains[0].expand(m, -1), chains[1].expand(m, -1))
        bottom = chain_height(u, chains[2].expand(m, -1), chains[3].expand(m, -1))
        share = chain_height(u, split_u.expand(m, -1), split.expand(m, -1))
        upper_rows = ((bottom - top) * share).clamp_min(0)
        lower_rows = ((bottom - top) * (1 - share)).clamp_min(0)
        depth = torch.where(a <= share * (a + b), top + torch.minimum(a, upper_rows),
                            bottom - torch.minimum(b, lower_rows))
        rigid = p_left + (u * p_width)[:, None] * p_along + depth[:, None] * p_across
        # Where the target opens wider than the photo's rows reach: the mouth's inside, not a
        # line of the photo stretched down each column (stripes).
        gap = (torch.minimum(a - upper_rows, b - lower_rows) / 2).clamp(0, 1)
        # The synthesised teeth are left out there only where the photo's upper rows are tall
        # enough to hold its own (a twentieth of the mouth's width): lips together hold none.
        own_teeth = gap * (upper_rows / (0.05 * p_width)).clamp(0, 1)
        # At the lips the cap's own correspondence (exact along its rasterized outline, which
        # the lips' polylines only approximate): blended in over two of the photo's pixels. And
        # where the target's opening is no wider than the photo's: a mouth closing from the
        # photo's is squeezed by the cap's fan, smoothly (as two rows overlapping, d19's open
        # "O" showed the step between them).
        wider = ((a + b - (bottom - top)) / 2).clamp(0, 1)
        return (rigid, torch.minimum((torch.minimum(a, b) / 2).clamp(0, 1), wider), gap,
                own_teeth)

    def _depth_buffer(self, src: torch.Tensor) -> None:
        """The photo's depth buffer over its face box: which surface point each pixel shows."""
        self.zbox = clip_box(src[:, :2].amin(0), src[:, :2].amax(0), self.image_size)
        zx0, zy0, zx1, zy1 = self.zbox
        offset = torch.tensor([zx0, zy0, 0], dtype=src.dtype, device=src.device)
        self.zbuf = rasterize((src - offset)[None], self.triangles, (zy1 - zy0, zx1 - zx0),
                              backend=self.config.backend).depth[0]
        depth = src[:, 2]
        margin = self.config.depth_tolerance * float(depth.max() - depth.min())
        # A point is compared with the depth at its nearest pixel centre, up to 0.7 px away: on
        # surface seen obliquely the depth changes fast across a pixel, so the margin grows by
        # the local slope (the smaller one-sided difference per axis, so a jump at an occluding
        # edge, large on one side only, does not widen it).
        self.tolerance = margin + depth_slope(self.zbuf)

    def _cells(self, box: Box) -> torch.Tensor:
        """Fine-pixel positions ``(hc, wc, 2)`` of a coarse grid's cells over ``box``: cell
        ``(i, j)`` at ``(x0 + j g + (g - 1) / 2, y0 + i g + (g - 1) / 2)``."""
        g = self.config.grid
        x0, y0, x1, y1 = box
        dtype, device = self.image.dtype, self.image.device
        xs = torch.arange(-(-(x1 - x0) // g), dtype=dtype, device=device) * g + x0 + (g - 1) / 2
        ys = torch.arange(-(-(y1 - y0) // g), dtype=dtype, device=device) * g + y0 + (g - 1) / 2
        return torch.stack(torch.broadcast_tensors(xs[None, :], ys[:, None]), -1)

    def _head_region(self) -> None:
        """How much of the head's motion each photo pixel takes, on a coarse grid over the
        photo.

        Above the middle of the face: an ellipse around the face sized for hair and ears,
        fading out beyond it. Below: the ellipse fades out over ``neck`` of the face's height,
        and only a band around the face's own outline (the jaw, the chin, the neck right under
        it) keeps moving, so the shoulders beside and below the jaw stay still."""
        c = self.config
        h, w = self.image_size
        g = c.grid
        cells = self._cells((0, 0, w, h))
        low, high = self.face_low, self.face_high
        size = (high - low).clamp_min(1.0)
        middle = (low + high) / 2 - torch.stack([torch.zeros_like(size[1]),
                                                 c.head_raise * size[1]])
        axes = size * torch.tensor([c.head_width, c.head_height], dtype=size.dtype,
                                   device=size.device) / 2
        if c.segment:
            axes = axes * c.segment_reach
        radius = ((cells - middle) / axes).norm(dim=-1)
        ellipse = 1 - smoothstep((radius - 1) / c.falloff)
        level = (low[1] + high[1]) / 2
        upper = ellipse * (1 - smoothstep((cells[..., 1] - level) / (c.neck * size[1])))
        # The face's own outline, dilated by normalized convolution of its coverage.
        zx0, zy0, zx1, zy1 = self.zbox
        covered = torch.zeros(h, w, dtype=cells.dtype, device=cells.device)
        covered[zy0:zy1, zx0:zx1] = torch.isfinite(self.zbuf).to(cells.dtype)
        share = F.avg_pool2d(covered[None, None], g, ceil_mode=True)
        near = (2 * gaussian_blur(share, c.extend_sigma * self.face_size / g, border="zero")
                ).clamp(0, 1)
        below_chin = 1 - smoothstep((cells[..., 1] - high[1]) / (0.5 * c.neck * size[1]))
        self.head_near = (near[0, 0] * below_chin)[None, None]                # (1, 1, hc, wc)
        self.head_upper = upper[None, None]
        self.head_distance = None
        if c.segment:
            # The head and hair as GrabCut finds them; per frame, the motion fades out beyond
            # them over a band wider than the motion (see :meth:`_head_weight`).
            face = self.source_screen[:self.n_face_vertices, :2].cpu().double().numpy()
            head = head_mask(to_uint8(self.image[None])[0], face)
            inside = F.avg_pool2d(torch.from_numpy(head).to(cells)[None, None], g,
                                  ceil_mode=True)[0, 0] >= 0.5
            self.head_distance = torch.from_numpy(
                ndimage.distance_transform_edt(~inside.cpu().numpy()) * g
            ).to(cells)[None, None]                                            # (1, 1, hc, wc)
        moving = (torch.maximum(self.head_upper, self.head_near)[0, 0] > 0).nonzero()
        self.moving_box = (int(moving[:, 1].min()) * g, int(moving[:, 0].min()) * g,
                           min(int(moving[:, 1].max() + 1) * g, w),
                           min(int(moving[:, 0].max() + 1) * g, h))

    def _head_weight(self, reach: torch.Tensor) -> torch.Tensor:
        """``(T, 1, hc, wc)`` how much of the head's motion each photo cell takes, for frames
        whose head moves up to ``reach (T,)`` pixels. With the segmented head, the motion fades
        out beyond the head's edge over at least twice that: a narrower fade would fold the
        background over itself (the map ``x -> x + w(x) d`` stays one-to-one while ``w`` changes
        by less than ``1 / d`` per pixel; smoothstep's steepest slope is 1.5 / band)."""
        upper = self.head_upper
        if self.head_distance is not None:
            band = torch.clamp(2 * reach, min=self.config.segment_band * self.face_size)
            upper = upper * (1 - smoothstep(self.head_distance / band[:, None, None, None]))
        return torch.maximum(upper, self.head_near).expand(reach.shape[0], -1, -1, -1)

    def _fade(self, share: torch.Tensor, edge: torch.Tensor, extended: torch.Tensor,
              sigma: float) -> torch.Tensor:
        """``(T, 1, hc, wc)`` how much of the face's continued motion ``extended (T, 2, hc,
        wc)`` each coarse cell takes, from the face's coverage ``share (T, 1, hc, wc)`` and
        its outermost cells' weights ``edge``; ``sigma`` in cells.

        A Gaussian's normalized density falls from 1 at the outline; where the motion is
        large for ``sigma`` (``extend_adapt``), the density of a Gaussian up to 4 times wider
        takes over, interpolated per cell in the log of the width. Each width's density is
        divided by its value at the outline (carried outwards): a wide Gaussian's density on a
        convex outline (the chin) is under a half, and its fade started with a jump there."""
        c = self.config
        if c.extend_adapt <= 0:
            return (2 * gaussian_blur(share, max(sigma, 0.5), border="zero")).clamp(0.0, 1.0)
        need = (c.extend_adapt * extended.norm(dim=1, keepdim=True)
                / (sigma * c.grid)).clamp(1.0, 4.0).log2()
        # The wider Gaussians only where some cell needs them (a frame's fade is the same
        # either way: lerp by 0 is exact, so a frame renders the same in any batch).
        widths = (1, 2, 4) if bool((need > 0).any()) else (1,)
        density = torch.cat([gaussian_blur(share, max(sigma * m, 0.5), border="zero")
                             for m in widths], 1)
        at_edge, _ = extend_field(density, edge, sigma)
        levels = (density / at_edge.clamp_min(1e-6)).clamp(0.0, 1.0)
        if len(widths) == 1:
            return levels
        return torch.where(need < 1, torch.lerp(levels[:, :1], levels[:, 1:2], need),
                           torch.lerp(levels[:, 1:2], levels[:, 2:], (need - 1).clamp_min(0)))

    def _border_room(self, displacement: torch.Tensor, cells: torch.Tensor,
                     fade: torch.Tensor | None = None) -> torch.Tensor:
        """``(T, 1, hc, wc)`` how much of its ``displacement (T, 2, hc, wc)`` (the photo
        position each coarse cell at ``cells (hc, wc, 2)`` fetches, less its own) a cell keeps
        so that it fetches at most ``1 / config.border_stretch`` of its distance beyond itself
        towards the photo content's edge (:func:`content_box`): a head that moves away from an
        edge it touches (hair cropped by the frame's top, a head moving down) fetched from
        beyond the photo, whose last row the sampling repeats: the hair above her head drawn
        as waves of that row (image_0010 by d3's frame 261, looked at); now the hair beside the
        edge is stretched over the band instead. 1 where the motion is small for its room."""
        x0, y0, x1, y1 = self.content
        stretch = self.config.border_stretch
        if fade is not None and self.config.face_stretch > 0:
            # Beside the face (``fade`` ~1) its own motion must get through to meet the exact
            # flow; the still head beyond keeps the configured stretch.
            eased = min(stretch, self.config.face_stretch)
            stretch = stretch + (eased - stretch) * fade[:, 0]
        x, y = cells[..., 0], cells[..., 1]
        dx, dy = displacement[:, 0], displacement[:, 1]
        # Room before the content's outermost pixel, which stays still (as _border_weight).
        room_x = torch.where(dx < 0, x - x0 - 1, (x1 - 2) - x).clamp_min(0)
        room_y = torch.where(dy < 0, y - y0 - 1, (y1 - 2) - y).clamp_min(0)
        keep = torch.minimum(room_x / (stretch * dx.abs()).clamp_min(1e-6),
                             room_y / (stretch * dy.abs()).clamp_min(1e-6))
        return keep.clamp(max=1.0)[:, None]

    def _border_weight(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """``(h, w)`` motion weight at pixels ``xs (w,)``, ``ys (h,)``: 1 inside, fading over
        ``config.border`` of the image's shorter side to 0 on the outermost two pixels of the
        photo's content (:func:`content_box`: inside a screenshot's or a padded portrait's
        uniform margins, which would otherwise be pulled into the picture), which stay exactly
        still, as do the margins."""
        x0, y0, x1, y1 = self.content
        band = max(self.config.border * min(x1 - x0, y1 - y0), 1.0)
        edge_x = smoothstep((torch.minimum(xs - x0, (x1 - 1) - xs) - 1) / band)
        edge_y = smoothstep((torch.minimum(ys - y0, (y1 - 1) - ys) - 1) / band)
        return edge_y[:, None] * edge_x[None, :]

    def _lip_colour(self, src: torch.Tensor) -> torch.Tensor:
        """``(3,)`` the photo's lip colour (the median over the outer lip landmarks' vertices):
        the base of a synthesised mouth interior. Not the inner lip line, which in a photo
        with an open mouth is already the dark interior."""
        lips = outer_lip_vertices(self.model).to(src.device)
        if self.cap is None or len(lips) == 0:
            return torch.full((3,), 0.5, dtype=self.image.dtype, device=self.image.device)
        return median_colours(self.image[None], src[None, lips, :2])[0]

    def _eyes(self, src: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per eye, the photo's eye opening ``(2, 6, 2)`` (its six landmarks on the fit) and
        its lash colour ``(2, 3)``: the median of the darkest tenth of the pixels around the
        opening (lashes, pupil)."""
        polygons = src[ids[36:48], :2].reshape(2, 6, 2)
        h, w = self.image_size
        colours = []
        for polygon in polygons:
            low, high = polygon.amin(0), polygon.amax(0)
            pad = 0.25 * (high - low)
            x0, y0 = (low - pad).floor().clamp_min(0).long().tolist()
            x1, y1 = (high + pad).ceil().long().tolist()
            patch = self.image[:, y0:max(min(y1, h), y0 + 1), x0:max(min(x1, w), x0 + 1)]
            pixels = patch.reshape(3, -1).T                                     # (Q, 3)
            lum = luma(pixels)
            dark = lum <= lum.quantile(0.1)
            colours.append(pixels[dark].median(0).values)
        return polygons, torch.stack(colours)

    def _gaze_eyes(self, src: torch.Tensor) -> tuple[torch.Tensor, ...] | None:
        """The photo's eyes, for moving its irises: per eye its width ``(2,)``
        (:func:`~faceanime.landmarks.gaze.eye_frames`), its landmarks' hexagon ``(2, 6, 2)``
        and its iris ``(2, 2)``; None when the photo's gaze was not measured. The detected
        landmarks, which the gaze was measured in, where the coefficients hold them; else the
        fit's."""
        gaze = self.source.gaze
        if gaze is None or not bool(torch.isfinite(gaze).any()):
            return None
        points = self.source.landmarks
        if points is None or not bool(torch.isfinite(points[0, 36:48]).all()):
            points = src[None, self.mesh.landmark_indices.to(src.device), :2]
        points = points[:1].to(src.device, src.dtype)
        _, _, width = eye_frames(points)
        return width[0], points[0, 36:48].reshape(2, 6, 2), gaze[0].to(src.device, src.dtype)

    def _move_irises(self, target: Coefficients, position: torch.Tensor, valid: torch.Tensor,
                     frame: torch.Tensor) -> torch.Tensor:
        """Face pixels' photo positions ``(P, 2)`` with each eye's content slid
        (:func:`~faceanime.landmarks.gaze.eye_slide`) so that its iris sits where
        ``target.gaze`` puts it (frames ``(P,)``); an eye not measured stays."""
        dtype, device = position.dtype, position.device
        width, hexagon, iris = (x.to(device, dtype) for x in self.gaze_eyes)
        change = target.gaze.to(device, dtype) - iris                             # (T, 2, 2)
        if not bool((torch.nan_to_num(change).abs() > 1e-4).any()):
            return position
        position = position.clone()
        for e in range(2):
            grow = float(width[e]) / 10 + 1      # past the white's edge (eye_slide fades there)
            low, high = hexagon[e].amin(0) - grow, hexagon[e].amax(0) + grow
            near = in_box(position, low, high, valid)
            if near.numel() == 0:
                continue
            p = position[near]
            n = near.shape[0]
            position[near] = p - eye_slide(p, hexagon[e].expand(n, 6, 2),
                                           iris[e, 0].expand(n), change[frame[near], e])
        return position

    def _skin_fill(self, opening: float) -> torch.Tensor:
        """``(3, h, w)`` over the photo's face box (``zbox``): its skin colour, smoothed over
        about an eye opening, with the dark features (lashes, brows, the crease's shadow, the
        eyes themselves: darker than their surroundings) left out by normalized convolution."""
        x0, y0, x1, y1 = self.zbox
        patch = self.image[None, :, y0:y1, x0:x1]
        lum = luma(patch.movedim(1, -1))[:, None]                           # (1, 1, h, w)
        ones = torch.ones_like(lum)
        wide = 3 * opening
        surround = gaussian_blur(lum, wide, border="zero") / gaussian_blur(
            ones, wide, border="zero").clamp_min(1e-6)
        skin = (lum >= 0.9 * surround).to(patch.dtype)
        fill = gaussian_blur(torch.cat([patch * skin, skin], 1), opening, border="zero")
        return (fill[0, :3] / fill[0, 3:].clamp_min(1e-6)).clamp(0, 1)

    def _skin_grain(self, limit: float) -> torch.Tensor:
        """``(3, h, w)`` over ``zbox``: the photo's fine texture (itself less its blur over a
        pixel), kept where its luma is under ``limit`` (skin pores, film grain) and faded out
        above twice that (lashes, hair, the brow's strands)."""
        x0, y0, x1, y1 = self.zbox
        patch = self.image[None, :, y0:y1, x0:x1]
        detail = patch - gaussian_blur(patch, 1.0)
        size = luma(detail.movedim(1, -1)).abs()[:, None]
        keep = 1 - smoothstep((size - limit) / limit)
        return (detail * keep)[0]

    # -- per batch of target frames --

    def _seen(self, points: torch.Tensor) -> torch.Tensor:
        """``(P,)`` bool: surface points ``(P, 3)`` (source pixel u, v, depth) are what the
        photo shows there (not behind other surface)."""
        zx0, zy0, zx1, zy1 = self.zbox
        j = points[:, 0].round().long() - zx0
        i = points[:, 1].round().long() - zy0
        inside = (j >= 0) & (j < zx1 - zx0) & (i >= 0) & (i < zy1 - zy0)
        i, j = i.clamp(0, zy1 - zy0 - 1), j.clamp(0, zx1 - zx0 - 1)
        return ~inside | (points[:, 2] >= self.zbuf[i, j] - self.tolerance[i, j])

    def flow(self, target: Coefficients) -> tuple[Box, torch.Tensor, torch.Tensor]:
        """The backward flow of ``T`` target frames over the box they change.

        Returns:
            ``box = (x0, y0, x1, y1)``; ``(T, 2, h, w)`` source pixel positions (x, y) each
            output pixel of the box fetches; ``(T, 1, h, w)`` how much of each pixel is a
            synthesised mouth interior instead (0 almost everywhere).
        """
        box, positions, mouth = self._flow(target)
        t, h, w, _ = positions.shape
        interior = positions.new_zeros(t * h * w)
        interior[mouth[0]] = mouth[1]
        return box, positions.permute(0, 3, 1, 2), interior.view(t, 1, h, w)

    def _flow(self, target: Coefficients) -> tuple[Box, torch.Tensor, tuple[torch.Tensor, ...]]:
        """:meth:`flow`, with the positions as ``(T, h, w, 2)`` and the mouth interior as flat
        pixel indices ``(M,)`` over ``(T, h, w)``, their share of interior ``(M,)`` and texel
        positions in the interior layout ``(M, 2)``, each frame's mouth corners in the box
        ``(T, 2, 2)``, per mouth pixel ``(M, 3)`` the lips' shadow on the interior, the share
        of the lips' colour at the outline and how far the photo's own teeth show above it
        (``rigid_teeth``), then the closing lids' and the lash line's pixels."""
        c = self.config
        screen = self._screen(target)                                       # (T, N, 3)
        t = screen.shape[0]
        dtype, device = screen.dtype, screen.device
        # The head's rigid motion, target screen (u, v, depth) -> photo pixel: a 3D affine map,
        # exact for the orthographic camera.
        head = head_pose(self.source, target, self.pivot, c.rotation_follow, c.scale_follow,
                         c.pivot_follow)
        neutral = project_vertices(head, self.neutral.expand(t, -1, -1)).to(dtype)
        back = fit_affine(neutral, self.neutral_source[None, :, :2].expand(t, -1, -1))
        # The box: the target face, and the photo's moving region where it goes.
        frame_reach = (neutral[..., :2] - self.neutral_source[None, :, :2]).norm(dim=-1).amax(1)
        reach = float(frame_reach.max())
        mx0, my0, mx1, my1 = self.moving_box
        face = screen[..., :2]
        low = torch.minimum(torch.tensor([mx0 - reach, my0 - reach], dtype=dtype,
                                         device=device), face.amin((0, 1)))
        high = torch.maximum(torch.tensor([mx1 + reach, my1 + reach], dtype=dtype,
                                          device=device), face.amax((0, 1)))
        x0, y0, x1, y1 = clip_box(low, high, self.image_size)
        # The coarse grid lies on the photo's multiples of ``grid`` whatever the box, so a frame
        # renders the same in any batch.
        g = c.grid
        x0, y0 = x0 - x0 % g, y0 - y0 % g
        box = x0, y0, x1, y1
        h, w = y1 - y0, x1 - x0
        grid_x = torch.arange(x0, x1, dtype=dtype, device=device)
        grid_y = torch.arange(y0, y1, dtype=dtype, device=device)

        # The face: exact flow at the covered pixels. Rasterized over the faces' own box (a
        # sixth of the head's box at 512²), with room for the feather inside it; ``pixel``
        # indexes that box, ``at`` the same pixels in the head's box.
        margin = math.ceil(c.feather) + 2
        fx0, fy0, fx1, fy1 = clip_box(face.amin((0, 1)) - margin, face.amax((0, 1)) + margin,
                                      self.image_size)
        fx0, fy0, fx1, fy1 = max(fx0, x0), max(fy0, y0), min(fx1, x1), min(fy1, y1)
        fh, fw = fy1 - fy0, fx1 - fx0
        offset = torch.tensor([fx0, fy0, 0], dtype=dtype, device=device)
        fragments = rasterize(screen - offset, self.triangles, (fh, fw), backend=c.backend)
        pixel, values = interpolate_covered(fragments, self.attributes, self.triangles)
        tri = fragments.face_index.reshape(-1)[pixel]
        frame = pixel.div(fh * fw, rounding_mode="floor")
        flat = pixel % (fh * fw)
        row = flat.div(fw, rounding_mode="floor") + (fy0 - y0)                # in the head's box
        col = flat % fw + (fx0 - x0)
        at = (frame * h + row) * w + col
        xy = torch.stack([col + x0, row + y0], 1).to(dtype)                  # (P, 2)
        target_area = signed_areas(screen[:, self.triangles]).abs()          # (T, F)
        grown = target_area[frame, tri]
        stretch = grown / self.source_area[tri].clamp_min(1e-6)
        seen = self._seen(values[:, :3])
        use = seen & (stretch <= c.max_stretch)
        on_cap = tri >= self.n_face_triangles
        mirrored = torch.zeros_like(use)
        if self.has_mirror:
            mirror_stretch = grown / self.mirror_area[tri].clamp_min(1e-6)
            mirrored = (~use & ~on_cap & self._seen(values[:, 3:])
                        & (~seen | (mirror_stretch < stretch)))
        use = use | (seen & ~mirrored)
        valid = use | mirrored
        position = torch.where(mirrored[:, None], values[:, 3:5], values[:, :2]) \
            if self.has_mirror else values[:, :2]
        if self.teeth_rows is not None and bool(on_cap.any()):
            position = position.clone()
            rigid, weight, cap_gap, own_teeth = self._rigid_interior(screen, xy[on_cap],
                                                                     frame[on_cap])
            # Between the rows, what the interior does not cover yet (it fades in as the cap
            # grows from the photo's area to 1.5 times it, below) is the cap's fan over the
            # photo's own mouth: the rows' continuation there, the darkest line between the
            # photo's lips, was stretched down each column in stripes (d19's yawn by d3's
            # "O", its cap 1.15 times the photo's: 78 % of the gap showed it).
            hidden = smoothstep((self._cap_ratio(target_area) - 1) / 0.5)[frame[on_cap]]
            fan = cap_gap * (1 - hidden)
            position[on_cap] = torch.lerp(position[on_cap], rigid, (weight * (1 - fan))[:, None])
            if bool((fan > 0).any()):
                # The rows and the fan fetch different parts of the photo where they meet (a
                # jagged dark line across the mouth): around the fan's share the fetch is
                # smoothed over the cap, as a displacement (zero motion stays the identity),
                # over 0.06 of the photo's mouth width. Elsewhere it is left as it was: smoothed
                # everywhere, the lips' rim moved, and dlib's reading of the eyes with it
                # (cross closed-eye ratio 0.682 → 0.707).
                moved = position[on_cap] - xy[on_cap]
                smooth = self._smooth_on_cap(fragments, pixel[on_cap],
                                             torch.cat([moved, fan[:, None]], 1),
                                             0.06 * self.mouth_width)
                near = (2 * smooth[:, 2:]).clamp(0, 1)
                position[on_cap] = xy[on_cap] + torch.lerp(moved, smooth[:, :2], near)
        else:
            cap_gap = own_teeth = None
        lid = None
        if self.lid_reach is not None:
            # Lids closing further than the photo's show its lid skin from higher up.
            closing = (target.eyes.to(device, dtype)
                       - self.source.eyes.to(device, dtype)).clamp_min(0)          # (T, 2)
            if bool((closing > 0).any()):
                on_lid = self.lid_triangles[tri].nonzero()[:, 0]                   # (L,)
                bary = fragments.bary.reshape(-1, 3)[pixel[on_lid]]               # (L, 3)
                skin = (bary[..., None] * self.lid_skin[self.triangles[tri[on_lid]]]).sum(1)
                share = closing[frame[on_lid]] * skin                               # (L, 2)
                position = position.clone()
                position[on_lid] += share @ self.lid_reach
                if self.lid_fill is not None:
                    amount = share.sum(1).clamp(0, 1)
                    # Every pixel of a closing lid, the ones the photo's depth test calls
                    # hidden too: theirs kept the outside flow's fetch, the photo's lashes, as
                    # dark specks among the filled skin (image_0010's far eye).
                    keep = amount > 0
                    lid = at[on_lid][keep], amount[keep], position[on_lid][keep]

        # What the face's pixels fetch, the irises moved: the flow beyond the face continues
        # the face's motion without the eyes' (which would leak into the skin around them).
        fetch = position
        if self.gaze_eyes is not None and target.gaze is not None:
            fetch = self._move_irises(target, position, valid, frame)
        lash = None
        if self.eye_polygons is not None and c.lash_line < 1:
            lash = self._lash(target, position, valid, frame, at)

        # The head, on a coarse grid: each pixel's depth on the head proxy (the face's own depth
        # continued outwards into the ellipsoid), carried back rigidly; plus the face's
        # non-rigid motion continued a short way beyond its edge. Pooled from the seen face
        # pixels alone.
        depth = fragments.depth.reshape(-1)[pixel]
        seen_points = torch.cat([xy, depth[:, None]], 1)[valid]
        seen_frame = frame[valid]
        # The pixels come frame by frame: one small matrix product per frame, not one per pixel.
        counts = torch.bincount(seen_frame, minlength=t).tolist()
        rigid_back = torch.cat([points @ back[k, :3] + back[k, 3] for k, points in
                                enumerate(seen_points.split(counts))])
        residual = position[valid] - rigid_back
        hc, wc = -(-h // g), -(-w // g)
        cell = (seen_frame * hc + row[valid].div(g, rounding_mode="floor")) * wc \
            + col[valid].div(g, rounding_mode="floor")
        sums = residual.new_zeros(t * hc * wc, 4)
        sums.index_add_(0, cell, torch.cat([residual, depth[valid, None],
                                            torch.ones_like(depth[valid, None])], 1))
        sums = sums.view(t, hc, wc, 4).permute(0, 3, 1, 2)
        share = sums[:, 3:] / (g * g)
        mean = sums[:, :3] / sums[:, 3:].clamp_min(1)
        sigma = c.extend_sigma * self.face_size / g
        # Cells the face covers in part are known in part: their few pixels at the face's edge
        # are blended with the neighbours' values (on their own they make the field jump from
        # cell to cell along the outline, folding the photo over itself there).
        whole = 1 - 1e-6
        # The values are continued from the face's outermost cells alone: at a temple or cheek
        # turning away the face's edge outruns the head's rigid motion most, and the interior's
        # smaller residual diluted it (the head beyond then fetched the photo's face again:
        # its hairline drawn as a dark stroke on the temple, skin again beyond it).
        full = (share > whole).to(share)
        interior = -F.max_pool2d(-full, 2 * _EDGE_CELLS + 1, stride=1, padding=_EDGE_CELLS)
        edge = share * (1 - interior)
        extended, _ = extend_field(mean, edge, sigma)
        extended = torch.where(share > whole, mean, extended)
        fade = torch.where(share > whole, 1.0, self._fade(share, edge, extended[:, :2], sigma))
        cells = self._cells(box)                                             # (hc, wc, 2)
        model_to_screen = fit_affine(self.neutral, neutral)                  # (T, 4, 3)
        centre, radii = self.ellipsoid
        rim = None
        if c.flank_stretch > 0:
            relative = head.rotation @ self.source.rotation[:1].to(device, dtype).transpose(-1, -2)
            rim = flank_rim(relative, radii.to(dtype), c.flank_stretch)
        ellipsoid = ellipsoid_depth(cells.expand(t, -1, -1, -1), model_to_screen,
                                    centre.to(dtype), radii.to(dtype), rim)[:, None]
        if c.proxy == "plane":
            # The depth of the face's outline, everywhere beyond it.
            outline = screen[:, self.outline, 2].mean(1)
            ellipsoid = outline[:, None, None, None].expand_as(ellipsoid)
        proxy = torch.lerp(ellipsoid, extended[:, 2:], fade)
        if c.proxy_smooth > 0:
            # The face's depth at its outline is a mean over the part of each cell it covers,
            # which jumps from cell to cell where a cheek turns away (the depth steepest there);
            # carried through the head's turn, those jumps drew skin-coloured bumps into the
            # background along the cheek (d19 by d6's frame 393). Smoothed as an offset from
            # the ellipsoid, which is smooth itself.
            proxy = ellipsoid + gaussian_blur(proxy - ellipsoid, c.proxy_smooth / g)
        carried = apply_affine(back, torch.cat([cells.expand(t, -1, -1, -1),
                                                proxy.permute(0, 2, 3, 1)], -1))
        weight = sample_field(self._head_weight(frame_reach), carried, g)
        # Contiguous first: the field is laid out channels-last (from the permute), and pooling
        # (unfold) and upsampling that layout are several times slower on the CPU.
        coarse = (weight * ((carried - cells).permute(0, 3, 1, 2) + fade * extended[:, :2])
                  ).contiguous()
        if c.border_stretch > 0:
            coarse = coarse * self._border_room(coarse, cells, fade)
        if c.unfold > 0:
            coarse = unfold(coarse, g, c.unfold, ignore=share > whole)
        outside = F.interpolate(coarse, size=(hc * g, wc * g), mode="bilinear",
                                align_corners=False)[..., :h, :w]
        # From here on pixel-last, (T, h, w, 2), the layout grid_sample reads: one copy here
        # instead of one per step below.
        positions = torch.empty(t, h, w, 2, dtype=dtype, device=device)
        still = self._border_weight(grid_x, grid_y)                          # (h, w)
        torch.mul(outside.permute(0, 2, 3, 1), still[..., None], out=positions)
        positions += torch.stack(torch.broadcast_tensors(grid_x[None, :], grid_y[:, None]), -1)

        # The exact flow blends into the outside one at the face's outline only; surface the
        # photo does not show keeps the outside flow (the seen surface's motion continued).
        if c.feather > 0:
            covered = (fragments.face_index >= 0)[:, None].to(dtype)
            alpha = feather_mask(covered, c.feather).reshape(-1)[pixel[valid]]
        else:
            alpha = torch.ones_like(depth[valid])
        flat_positions = positions.view(-1, 2)
        chosen = at[valid]
        if c.seam > 0:
            # The coarse outside flow cannot follow the exact one's sharp change at the face's
            # outline (a cheek turning away): the photo's face edge showed as a jagged seam of
            # skin and hair. Their difference, known on the seen face, is continued outwards at
            # full resolution and added around it (:meth:`_seam`).
            self._seam(positions, position[valid] - flat_positions[chosen], pixel[valid],
                       (fx0 - x0, fy0 - y0, fw, fh), (x0, y0), still)
        flat_positions[chosen] = torch.lerp(flat_positions[chosen], fetch[valid],
                                            alpha[:, None])

        mouth_pixels = pixel[:0]
        mouth_share = depth[:0]
        mouth_edge = depth.new_zeros(0, 3)
        mouth_uv = xy[:0]
        corners = screen.new_zeros(t, 2, 2)
        if self.cap is not None:
            # The photo's own mouth serves while the target mouth opens not much wider than
            # the photo's (the cap's projected area); from 1.5 to 3 times that it would be
            # stretched more and more, and a synthesised interior takes over.
            ratio = self._cap_ratio(target_area)
            synthetic = smoothstep((ratio - 1.5) / 1.5)[frame[on_cap]]
            # What the photo's lips hide of its cap takes the interior as the mouth opens
            # wider than the photo's, in full from 1.5 times: at or below the photo's opening
            # the lips in front serve (s1's lips apart by a hair showed a white band of
            # synthesised teeth at d3's closed mouth).
            hidden = smoothstep((ratio - 1) / 0.5)[frame[on_cap]]
            # The widened part beyond the photo's rows (``rigid_teeth``) is the mouth's inside,
            # fading in as the hidden part does.
            gap = cap_gap * hidden if cap_gap is not None else torch.zeros_like(synthetic)
            no_teeth = (torch.where(valid[on_cap], own_teeth * hidden, 0.0)
                        if own_teeth is not None else torch.zeros_like(synthetic))
            mouth_share = torch.where(valid[on_cap], torch.maximum(synthetic, gap), hidden)
            if len(mouth_share):
                # Scaled by the photo's mouth, not the batch's: a frame renders the same in any
                # batch.
                whole, mouth_share, deep = self._cap_share(
                    fragments, pixel[on_cap], mouth_share, c.mouth_feather,
                    c.mouth_blend * self.mouth_width, c.mouth_shadow_width * self.mouth_width)
                # The interior darkened by the lips' shadow, and at the outline what the
                # feather gives back taken as the lips' colour: the photo's own cap there is
                # its lip line (a hair of teeth for s1 and s42) stretched into a pale rim.
                mouth_edge = torch.stack([1 - c.mouth_shadow * (1 - deep).square(),
                                          whole - mouth_share, no_teeth], 1)
                keep = mouth_share > 0
                mouth_pixels = at[on_cap][keep]
                mouth_share = mouth_share[keep]
                mouth_edge = mouth_edge[keep]
            else:
                keep = mouth_share > 0
            # Where on the cap each pixel lies, in the interior textures' layout.
            cap_triangle = tri[on_cap][keep] - self.n_face_triangles
            bary = fragments.bary.reshape(-1, 3)[pixel[on_cap][keep]]
            mouth_uv = mouth_uv_of(self.layout, cap_triangle, bary)
            # The mouth corners (iBUG 49, 55) in the head's box: the teeth hang across the
            # mouth between them, however the head is tilted.
            ends = self.mesh.landmark_indices[[48, 54]].to(device)
            corners = screen[:, ends, :2] - torch.tensor([x0, y0], dtype=dtype, device=device)
        return box, positions, (mouth_pixels, mouth_share, mouth_uv, corners, mouth_edge, lid,
                                lash)

    def _seam(self, positions: torch.Tensor, difference: torch.Tensor, pixel: torch.Tensor,
              face_box: tuple[int, int, int, int], origin: tuple[int, int],
              still: torch.Tensor) -> None:
        """Continue the exact face flow's ``difference (P, 2)`` from the outside flow, known at
        the seen face's pixels (``pixel (P,)``, flat over the face box's ``(T, fh, fw)``; the
        face box ``(x, y, fw, fh)`` in the head's box, whose corner in the photo is
        ``origin``), outwards beyond the outline over ``config.seam`` pixels (a normalized
        Gaussian convolution faded by its own density), and add it to ``positions (T, h, w,
        2)`` (the head's box) in place, scaled by ``still (h, w)`` (the image border's motion
        weight).

        The band is laid out around the face's box grown by three sigmas, where the
        continuation has faded: laid out over the face's box itself (grown by 6 px, what the
        rasterizer needs), it ended there in a straight cut, a jump of up to 19 px between
        neighbouring fetches where the face's motion is large (image_0010 by d3's largest
        turn, in the shadow under her chin). Its cells lie on the photo's multiples of their
        size, so a frame renders the same in any batch."""
        c = self.config
        t, h, w, _ = positions.shape
        ox, oy, fw, fh = face_box
        x0, y0 = origin
        sigma = c.seam
        scale = 2 if sigma <= 4 else 4
        pad = math.ceil(3 * sigma)
        # The band's box, its corner on the photo's multiples of ``scale``; it may reach beyond
        # the head's box (zeros there), and only its part inside is added.
        bx0 = (x0 + ox - pad) // scale * scale - x0
        by0 = (y0 + oy - pad) // scale * scale - y0
        hc, wc = -(-(oy + fh + pad - by0) // scale), -(-(ox + fw + pad - bx0) // scale)
        # Pooled straight into the band's coarse cells (a sixteenth of its pixels at a scale of
        # 4), blurred there (the continuation is smooth: a sigma of 1-2 cells), then
        # interpolated back.
        frame = pixel.div(fh * fw, rounding_mode="floor")
        flat = pixel - frame * (fh * fw)
        row = (flat.div(fw, rounding_mode="floor") + (oy - by0)).div(scale, rounding_mode="floor")
        col = (flat % fw + (ox - bx0)).div(scale, rounding_mode="floor")
        known = torch.cat([difference, torch.ones_like(difference[:, :1])], 1)       # (P, 3)
        sums = known.new_zeros(t * hc * wc, 3).index_add_(0, (frame * hc + row) * wc + col,
                                                            known)
        coarser = sums.view(t, hc, wc, 3).permute(0, 3, 1, 2) / scale ** 2
        coarser = gaussian_blur(coarser, sigma / scale, border="zero")
        density = coarser[:, 2:]
        # Two planar channels upsampled: the channels-last layout is several times slower.
        faded = coarser[:, :2] / density.clamp_min(1e-6) * (2 * density).clamp(0.0, 1.0)
        faded = F.interpolate(faded.contiguous(), scale_factor=scale, mode="bilinear",
                              align_corners=False)
        # Its part inside the head's box.
        cx0, cy0 = max(bx0, 0), max(by0, 0)
        cx1, cy1 = min(bx0 + wc * scale, w), min(by0 + hc * scale, h)
        faded = faded[..., cy0 - by0:cy1 - by0, cx0 - bx0:cx1 - bx0] * still[cy0:cy1, cx0:cx1]
        positions[:, cy0:cy1, cx0:cx1] += faded.permute(0, 2, 3, 1)

    def _lash(self, target: Coefficients, position: torch.Tensor, valid: torch.Tensor,
              frame: torch.Tensor, at: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """The face pixels that fetch the photo's eye opening while their eye closes: flat
        indices into the head's box ``(E,)``, how much of the lash colour each takes ``(E,)``,
        and which eye ``(E,)``; None when no eye closes far enough."""
        dtype, device = position.dtype, position.device
        source = self.source.eyes.to(device, dtype)[0]                              # (2,)
        # Share of the photo's own opening that is closed (1: shut).
        shut = ((target.eyes.to(device, dtype) - source).clamp_min(0)
                / (1 - source).clamp_min(0.25))                                     # (T, 2)
        amount = smoothstep((shut - self.config.lash_line) / (1 - self.config.lash_line))
        if not bool((amount > 0).any()):
            return None
        polygons = self.eye_polygons.to(device, dtype)
        # The landmarks' hexagon lies inside the visible white: grown by a fifth of the eye's
        # height, with a soft edge of as much, so no pale rim or jagged pixel steps remain.
        heights = self.eye_heights.to(device, dtype)
        grow = heights / 5 + 0.5                                                    # (2,)
        band = self.config.lash_band * heights                                      # (2,)
        low = polygons.amin((0, 1)) - float((grow + band).max())
        high = polygons.amax((0, 1)) + float((grow + band).max())
        near = in_box(position, low, high, valid)
        pixels, eyes, shares = [], [], []
        for e in range(2):
            reach = grow[e] + band[e] * amount[frame[near], e]
            inside = smoothstep(convex_depth(position[near], polygons[e]) / reach + 1)
            share = amount[frame[near], e] * inside
            keep = share > 0
            pixels.append(at[near][keep])
            shares.append(share[keep])
            eyes.append(torch.full_like(pixels[-1], e))
        return torch.cat(pixels), torch.cat(shares), torch.cat(eyes)

    def _feather_lid(self, cover: torch.Tensor, frame: torch.Tensor, pixel: torch.Tensor,
                     t: int, h: int, w: int) -> torch.Tensor:
        """The lid pixels' cover ``(L,)`` (frames ``(L,)``, flat pixel indices ``(L,)`` into an
        ``h × w`` box) blurred over ``lid_feather`` eye heights, the pixels around the lid
        counting as uncovered: the cover falls to about half at the lid's outline."""
        sigma = self.config.lid_feather * float(self.eye_heights.mean())
        if sigma < 0.25 or cover.numel() == 0:
            return cover
        ys, xs = pixel.div(w, rounding_mode="floor"), pixel % w
        reach = math.ceil(3 * sigma) + 1
        y0, x0 = max(int(ys.min()) - reach, 0), max(int(xs.min()) - reach, 0)
        y1, x1 = min(int(ys.max()) + reach + 1, h), min(int(xs.max()) + reach + 1, w)
        grid = cover.new_zeros(t, 1, y1 - y0, x1 - x0)
        grid[frame, 0, ys - y0, xs - x0] = cover
        return gaussian_blur(grid, sigma, border="zero")[frame, 0, ys - y0, xs - x0]

    def _cap_ratio(self, target_area: torch.Tensor) -> torch.Tensor:
        """``(T,)`` the target mouth cap's area over the photo's, from the target's triangle
        areas ``(T, F)``: how far each frame's mouth opens relative to the photo's."""
        cap_area = target_area[:, self.n_face_triangles:].sum(1)
        return cap_area / self.source_area[self.n_face_triangles:].sum().clamp_min(1e-6)

    def _smooth_on_cap(self, fragments, pixels: torch.Tensor, values: torch.Tensor,
                       sigma: float) -> torch.Tensor:
        """``values (M, C)`` at the mouth cap's pixels ``(M,)``, all of them (flat over the
        fragments' ``(T, h, w)``), smoothed over the cap by a Gaussian of ``sigma`` pixels,
        normalised within the cap (the lips beyond hold no values)."""
        if sigma < 0.5 or len(pixels) == 0:
            return values
        h, w = fragments.face_index.shape[1:]
        frame = pixels.div(h * w, rounding_mode="floor")
        rest = pixels - frame * (h * w)
        row, col = rest.div(w, rounding_mode="floor"), rest % w
        pad = math.ceil(3 * sigma)
        r0, c0 = int(row.min()), int(col.min())
        rows, cols = int(row.max()) - r0 + 1 + 2 * pad, int(col.max()) - c0 + 1 + 2 * pad
        t, channels = int(frame.max()) + 1, values.shape[1]
        dense = values.new_zeros(t, channels + 1, rows, cols)
        at = (frame, slice(None), row - r0 + pad, col - c0 + pad)
        dense[at] = torch.cat([values, torch.ones_like(values[:, :1])], 1)
        dense = gaussian_blur(dense, sigma, border="zero")[at]
        return dense[:, :channels] / dense[:, channels:].clamp_min(1e-6)

    def _cap_share(self, fragments, pixels: torch.Tensor, share: torch.Tensor, feather: float,
                   sigma: float, reach: float
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The interior's share ``(M,)`` at the mouth cap's pixels ``(M,)`` (flat over the
        fragments' ``(T, h, w)``), smoothed over the cap by a Gaussian of ``sigma`` pixels
        (normalised within the cap, so its outline does not dim it): ``(M,)`` so, and ``(M,)``
        also faded to 0 at the outline over ``feather`` pixels. The cap is rasterized without
        antialiasing; a hard-edged interior, its teeth white against the lips, showed as a
        jagged white rim. Last, ``(M,)`` how deep each pixel lies in the cap: its distance to
        the outline over ``reach`` pixels, at most 1 (1 everywhere for ``reach`` under half a
        pixel)."""
        h, w = fragments.face_index.shape[1:]
        frame = pixels.div(h * w, rounding_mode="floor")
        rest = pixels - frame * (h * w)
        row, col = rest.div(w, rounding_mode="floor"), rest % w
        # Only the box around the cap, with room for the outline beyond it.
        pad = math.ceil(max(feather, reach)) + 1
        r0, c0 = max(int(row.min()) - pad, 0), max(int(col.min()) - pad, 0)
        r1, c1 = min(int(row.max()) + pad + 1, h), min(int(col.max()) + pad + 1, w)
        cap = (fragments.face_index[:, r0:r1, c0:c1] >= self.n_face_triangles)[:, None]
        cap = cap.to(self.image.dtype)
        share = self._smooth_on_cap(fragments, pixels, share[:, None], sigma)[:, 0]
        whole = share
        if feather > 0:
            share = share * feather_mask(cap, feather)[frame, 0, row - r0, col - c0]
        deep = torch.ones_like(share)
        if reach >= 0.5:
            # Half a pixel in at the outermost pixels, as the feather measures.
            distance = inside_distance(cap >= 0.5, math.ceil(reach))[frame, 0, row - r0,
                                                                      col - c0]
            deep = ((distance - 0.5) / reach).clamp(0, 1)
        return whole, share, deep

    def _interior(self, target: Coefficients, pixels: torch.Tensor, uv: torch.Tensor,
                  corners: torch.Tensor, box: tuple[int, int],
                  no_teeth: torch.Tensor | None = None) -> torch.Tensor:
        """``(M, 3)`` the mouth interior at mouth pixels (flat over ``(T, h, w)`` of a box of
        ``box = (h, w)``) lying at texel positions ``uv (M, 2)``: the driver's own where the
        target carries it (scaled to the photo's skin brightness) and its mouth was open, the
        synthesised one elsewhere (teeth below the upper lip of mouths between ``corners``,
        ``(T, 2, 2)``, but for pixels weighted by ``no_teeth (M,)``, where the photo's own
        teeth already show)."""
        h, w = box
        frame = pixels.div(h * w, rounding_mode="floor")
        flat = pixels % (h * w)
        synthetic = sample_texture(self.synthetic, torch.zeros_like(frame), uv)[:, :3]
        teeth, white = upper_teeth(flat.div(w, rounding_mode="floor"), flat % w, frame, corners,
                                   self.skin)
        if no_teeth is not None:
            # The photo's own teeth already hang from its upper lip there (a smile widened).
            teeth = teeth * (1 - no_teeth)
        synthetic = torch.lerp(synthetic, highlight_shoulder(white * self.teeth_tint,
                                                             self.highlight), teeth[:, None])
        if target.mouth is None or not self.config.driver_interior:
            return synthetic
        driver = sample_texture(target.mouth.to(uv.device, uv.dtype) / 255, frame, uv)
        colour = tone_interior(highlight_shoulder(driver[:, :3] * self.interior_gain,
                                                  self.highlight), self.tone,
                               self.interior_saturation, self.red_response).clamp(0, 1)
        return torch.lerp(synthetic, colour, driver[:, 3:])

    def _render_box(self, target: Coefficients) -> tuple[Box, torch.Tensor]:
        box, positions, (pixels, share, uv, corners, edge, lid, lash) = self._flow(target)
        h, w = self.image_size
        grid = pixel_grid(positions, h, w, inplace=True)  # the positions are not needed after
        photo = self.image[None].expand(positions.shape[0], -1, -1, -1)
        # Bilinear samples of a photo in [0, 1] stay in [0, 1]: no clamp over the whole box.
        out = F.grid_sample(photo, grid, mode="bilinear", padding_mode="border",
                            align_corners=True)
        if len(pixels):
            t, _, bh, bw = out.shape
            mouth = self._interior(target, pixels, uv, corners, (bh, bw),
                                   edge[:, 2]).clamp(0, 1)                                # (M, 3)
            mouth = mouth * edge[:, :1]
            frame = pixels.div(bh * bw, rounding_mode="floor")
            flat = out.view(t, 3, bh * bw)
            at = (frame, slice(None), pixels - frame * (bh * bw))
            photo = torch.lerp(flat[at], lips_beside(out, pixels, self.config.mouth_feather + 1),
                               edge[:, 1:2])
            flat[at] = torch.lerp(photo, mouth, share[:, None])
        if lid is not None:
            t, _, bh, bw = out.shape
            lid_pixels, lid_share, fetch = lid
            zx0, zy0, zx1, zy1 = self.zbox
            j = (fetch[:, 0].round().long() - zx0).clamp(0, zx1 - zx0 - 1)
            i = (fetch[:, 1].round().long() - zy0).clamp(0, zy1 - zy0 - 1)
            frame = lid_pixels.div(bh * bw, rounding_mode="floor")
            flat = out.view(t, 3, bh * bw)
            at = (frame, slice(None), lid_pixels - frame * (bh * bw))
            fill = self.lid_fill[:, i, j].T                                       # (L, 3)
            fetched = flat[at]
            pixel = lid_pixels - frame * (bh * bw)
            grain = 0.0
            if self.lid_grain is not None:
                # Taken 1:1 with the output's pixels (from the cheek below), not through the
                # lid's flow, whose stretch drew the grain out into streaks.
                gy = pixel.div(bw, rounding_mode="floor") + (box[1] + self.grain_offset - zy0)
                gx = pixel % bw + (box[0] - zx0)
                grain = self.lid_grain[:, gy.clamp(0, zy1 - zy0 - 1),
                                       gx.clamp(0, zx1 - zx0 - 1)].T                 # (L, 3)
            cover = lid_share * self.config.lid_fill
            if self.config.lid_dark > 0:
                # Fetched pixels darker than the skin around them are the brow or the crease's
                # shadow pulled down over the eye: those take the skin colour in full.
                darker = 1 - luma(fetched) / luma(fill).clamp_min(1e-6)
                dark = (darker / self.config.lid_dark).clamp(0, 1)
                cover = torch.lerp(cover, (lid_share / _LID_FULL).clamp(max=1), dark)
            if self.config.lid_feather > 0:
                cover = self._feather_lid(cover, frame, pixel, t, bh, bw)
            flat[at] = torch.lerp(fetched, (fill + grain).clamp(0, 1), cover[:, None])
        if lash is not None:
            t, _, bh, bw = out.shape
            lash_pixels, lash_share, eye = lash
            frame = lash_pixels.div(bh * bw, rounding_mode="floor")
            flat = out.view(t, 3, bh * bw)
            at = (frame, slice(None), lash_pixels - frame * (bh * bw))
            colour = self.lash_colours.to(out.dtype)[eye]
            flat[at] = torch.lerp(flat[at], colour, lash_share[:, None])
        return box, out
