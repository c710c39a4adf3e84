"""Face swap with 3D priors: a photo's face on a target video's performance, occlusions kept.

FaceShifter (Li et al., 2019/2020) puts a source identity on every target frame with a learned
generator and restores what covers the target face with a second network (HEAR-Net), trained
on the difference between a target frame and the model's reconstruction of it from itself. The
3D fit gives the same two things without weights:

1. **The swapped face.** The target frame's fit with the source's identity: the source's shape
   coefficients at the target's expression, jaw, eyelids and pose
   (:func:`swap_coefficients`), from the brows down (:func:`inner_face_weights`: the hair
   line, a fringe, hair hanging by the temples and strands on the cheeks stay the target's,
   :func:`fringe_mask`, :func:`side_hair_mask`, :func:`strand_mask`), textured with the
   photo's own face (:func:`~faceanime.render.texture.extract_texture`: seen texels from the
   photo, hidden ones from the mirror side) and rendered in the target frame. Its colours
   are matched to the target's face region frame by frame (mean and spread in CIE L*a*b*:
   the target's lighting and white balance; with ``relight``, its shading too,
   :mod:`~faceanime.render.relight`), its tone along the blend brought to the frame's
   (:func:`seam_membrane`), and it is blended in with a feather inside the face outline. The
   mouth interior (the cap closing the model's mouth) stays the target's: its teeth and
   tongue move with its speech.
2. **What covers the face.** The target's own face is rendered the same way from its own
   texture (taken from a few of its frames) at its own fit: its self-reconstruction. Where the
   self-reconstruction and the frame disagree strongly (colour distance in L*a*b*, after
   matching the two's colours) — hair across the face, a hand, glasses frames, a microphone —
   the target's pixels are kept. The brows, eyes and mouth change their look with every frown,
   blink and word, so there the distance must be larger to count; so it must along the
   face's outline, where the fit is a few pixels off and the cheek turns into shadow. The
   mask is opened (specks dropped), grown a little, softened, and carried over time (each
   frame's mask is at least a share of the last one's), so an occluder does not flicker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from faceanime.coefficients import Coefficients, check_same_fit
from faceanime.errors import InputError
from faceanime.landmarks.gaze import eye_slide, measure_gaze, narrowed, open_state
from faceanime.morphable.model import FaceModel
from faceanime.render.frames import BoxRenderer, clip_box
from faceanime.render.mouth_interior import luma
from faceanime.render.paste import (
    close_holes,
    feather_mask,
    fill_from_neighbours,
    gaussian_blur,
    inside_distance,
    match_colors,
    match_lab,
    match_statistics,
    rgb_to_lab,
)
from faceanime.render.rasterize import interpolate
from faceanime.render.relight import fit_light, relight_gain, vertex_normals
from faceanime.render.reshape import bend_offsets
from faceanime.render.texture import (
    TextureConfig,
    extract_texture,
    facing,
    pixel_grid,
    push_pull,
    render_texture,
    sample_image,
)

# 0-based iBUG points around the parts whose look changes with motion: brows, eyes, inner mouth.
# The face size (the mesh's projected extent, mean of width and height, pixels) the blend's
# pixel widths were tuned at: d3's in its 512² frames (d6's 300 in 480²). A larger face in the
# target scales them in proportion (a 1080p video's, 650, about twice): fixed in pixels, the
# feather drew a hard line across the brows there. A smaller face keeps them as they are.
TUNED_FACE = 340.0

# The fewest texels (in a 512² texture) a dark line takes to be a strand of hair rather than
# stubble or grain: s1's and s42's strands on their cheeks are 110-470, s12's grainy stubble
# mostly under 95.
_STRAND_TEXELS = 100

_FEATURES = (tuple(range(17, 22)), tuple(range(22, 27)), tuple(range(36, 42)),
             tuple(range(42, 48)), tuple(range(60, 68)))


@dataclass
class SwapRenderConfig:
    """How the swapped face is made and blended."""

    texture: TextureConfig = field(default_factory=lambda: TextureConfig(size=512))
    """How the source's and the target's face textures are taken (512² texels: a face in a
    512² frame covers fewer pixels than that)."""
    feather: float = 8.0
    """Pixels inside the face outline over which the swapped face fades into the frame, for a
    face of up to ``TUNED_FACE`` (340) pixels across; a target's larger face scales this and the
    blend's other widths in proportion (:attr:`SwapRenderer.pixel_scale`)."""
    colour: str = "mean_std"
    """Colour matching of the swapped face to each target frame: ``mean_std`` (L*a*b*),
    ``rgb_mean_std`` or ``none`` (see :func:`~faceanime.render.paste.match_colors`)."""
    fringe: bool = True
    """Leave out hair that covers the photo's forehead and brows (:func:`fringe_mask`)."""
    temples: float = 0.1
    """With ``fringe``, leave out hair that hangs by the photo's temples and cheeks too, this
    far in from the face's outline (a share of the face texture's side; 0: none). The
    target's own temples and face edge show there."""
    strands: float = 12.0
    """With ``fringe``, also leave out thin dark strands of hair lying on the photo's cheeks
    and temples (:func:`strand_mask`): texels this much darker (L*) than their surroundings'
    closing (0: none). Not connected to the hair beyond the outline, or further in than
    ``temples``, they drew dark streaks down the swapped cheeks (s1's and s42's, most in a
    turned head's far cheek)."""
    strand_band: float = 0.16
    """How far in from the face's outline strands are looked for (a share of the texture's
    side)."""
    hair_cut: bool = True
    """With ``fringe``, grow the hair found so far by its colour (:func:`grown_hair`, OpenCV's
    GrabCut on the face texture): a lock of hair lying further in than ``temples``, or thin
    enough to let the skin through (s42's by her right eye), goes too."""
    seam: bool = True
    """Give the face the frame's tone where they meet (:func:`seam_membrane`): the difference
    along the blend, filled smoothly over the face."""
    relight: bool = False
    """Take the photo's shading off the face and put the target's on
    (:mod:`~faceanime.render.relight`: a first-order spherical-harmonic light fitted to the
    photo's skin and to the target video's, the gain per vertex from the fitted normals), before
    colour matching: a face lit from the side in the photo is lit as the target is. Off by
    default: the swapped face lit as the target's also reads nearer the target's identity to
    dlib (ID retrieval over the shared pairs fell, ``docs/swap.md``)."""
    relight_limit: float = 1.5
    """The most relighting brightens or darkens a point of the face by (a factor)."""
    relight_order: int = 1
    """Spherical-harmonic order of the fitted lights: 1 (ambient and one direction) or 2."""
    max_colour_gain: float = 1.5
    """The most colour matching scales a channel's spread by (a grey or grainy photo's noise
    is not blown up into colour)."""
    max_contrast_gain: float = 1.1
    """With ``mean_std``, the most colour matching scales the face's lightness spread (L*) by;
    its mean lightness and its colour are the frame's whatever this is. Near 1 the photo's
    own contrast, the shading that draws its eyes, brows and lips, stays. Matched to the
    frame's (as the colour's spread is, up to 1.5 times), a contrasty photo on a flat-lit
    target took the target's flat look, and dlib read s1 on d3 as d3's own person in 21 of
    45 frames (ID retrieval over the shared pairs 94.2 %; 99.4 % at 1.1 and at 1)."""
    reshape: bool = True
    """Bend the target frame around the face to the swapped face's shape
    (:mod:`~faceanime.render.reshape`): its jaw and cheeks become the photo's outline, and
    what the swap keeps of the target (its mouth interior, occluders, shut lids) lies where
    the swapped face has it. Off: the photo's face is pasted on the target's unchanged head,
    and where the outlines differ (10-25 px in a 512² frame) one shows beside the other."""
    reshape_reach: float = 0.12
    """How far beyond the face outline the bending fades out, relative to the face's size."""
    keep_mouth: bool = True
    """Keep the target's own mouth interior (teeth, tongue) where the swapped face opens."""
    shut_eyes: float = 0.3
    """From this eyelid closure on (0 open, 1 shut), the eyes show the target's own lids,
    fully from ``shut_eyes_full``: the photo's texture has no closed lid, and its open eye
    pressed under the closing lid showed as a dark smear (1: never)."""
    shut_eyes_full: float = 0.6
    """The closure from which the eyes are the target's own in full. At 1 (from 0.5), lids
    lowered to look down (d3's frames 56-104 and 216-232, closures 0.5-0.65) stayed mostly the
    photo's eye pressed flat: a black eye under s1's make-up, a wide stare on s42; the photo's
    lid skin unfolded from higher up instead (as the warp renderer does) drew s12's brows down
    over his lids."""
    gaze: bool = False
    """The swapped eyes glance as the target's do: the photo's irises slid
    (:func:`~faceanime.landmarks.gaze.eye_slide`) by the target frame's gaze change from its
    rest (when the photo's gaze was measured and the target's landmarks are known). Off by
    default: it cost identity (ID retrieval over the shared pairs 96.3 % → 95.1 %, s1 on d3
    71 % → 62 %)."""
    min_facing: float = 0.08
    """The swapped face fades out where its surface turns from the camera: fully there down
    to twice this cosine of the viewing angle, gone at it (0: never fades)."""
    occlusion: bool = True
    """Keep the target's pixels where its self-reconstruction disagrees with the frame."""
    occlusion_low: float = 14.0
    """Colour distance (ΔE, L*a*b*) below which the frame and its self-reconstruction agree."""
    occlusion_high: float = 26.0
    """Colour distance from which a pixel is fully the target's (smooth between)."""
    feature_tolerance: float = 2.5
    """How many times larger the distance must be over the brows, the eyes and the inner
    mouth, whose look changes with every frown, blink and word."""
    rim_tolerance: float = 2.0
    """How many times larger the distance must be at the target face's outline, fading to 1
    at ``rim_width`` inside it: there the fit's outline is a few pixels off and the cheek
    turns into shadow the reference frames did not have (a dark streak of the target's cheek
    edge was kept inside the swapped face)."""
    rim_width: float = 0.06
    """How far in from the target face's outline ``rim_tolerance`` reaches, relative to the
    face's size."""
    occlusion_grow: int = 4
    """Pixels the occlusion mask grows by after its specks are dropped (its edges stay the
    target's), scaled with a face larger than ``TUNED_FACE`` as ``feather`` is."""
    occlusion_scale: float = 0.5
    """The resolution the occlusion mask is found at, relative to the frame's (divided by
    :attr:`SwapRenderer.pixel_scale` for a face larger than ``TUNED_FACE``)."""
    occlusion_memory: float = 0.6
    """Each frame's occlusion mask is at least this share of the previous frame's (0: none)."""
    reference_frames: int = 8
    """Target frames (spread over the video) its own texture is taken from."""
    batch_size: int = 0
    """Frames rendered at once (memory grows with it and the image size); 0: 8 on the CPU,
    32 on CUDA (:func:`faceanime.parallel.default_batch`)."""
    backend: str = "torch"
    """Rasterizer backend (``torch`` or ``pytorch3d``)."""

    def __post_init__(self) -> None:
        for name in ("feather", "occlusion_low", "feature_tolerance", "min_facing",
                     "reshape_reach", "temples", "rim_width", "strands", "strand_band"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise InputError(f"swap setting {name} must be a number ≥ 0, got {value!r}")
        for name, flag in (("max_colour_gain", ""), ("max_contrast_gain", " (--contrast-gain)")):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 1):
                raise InputError(f"swap setting {name}{flag} must be a number ≥ 1 (1: the "
                                 f"photo's own spread), got {value!r}")
        if not (math.isfinite(self.rim_tolerance) and self.rim_tolerance >= 1):
            raise InputError(f"swap setting rim_tolerance must be a number ≥ 1, got "
                             f"{self.rim_tolerance!r}")
        if not self.occlusion_high > self.occlusion_low:
            raise InputError(f"swap setting occlusion_high ({self.occlusion_high}) must exceed "
                             f"occlusion_low ({self.occlusion_low})")
        if not 0 < self.occlusion_scale <= 1:
            raise InputError(f"swap setting occlusion_scale must be in (0, 1], got "
                             f"{self.occlusion_scale!r}")
        if not 0 <= self.shut_eyes <= 1:
            raise InputError(f"swap setting shut_eyes must be from 0 to 1, got "
                             f"{self.shut_eyes!r}")
        if not (self.shut_eyes < self.shut_eyes_full <= 1 or self.shut_eyes == 1):
            raise InputError(f"swap setting shut_eyes_full must be above shut_eyes "
                             f"({self.shut_eyes}) and at most 1, got {self.shut_eyes_full!r}")
        if not 0 <= self.occlusion_memory < 1:
            raise InputError(f"swap setting occlusion_memory must be from 0 to below 1, got "
                             f"{self.occlusion_memory!r}")
        if not (math.isfinite(self.relight_limit) and self.relight_limit >= 1):
            raise InputError(f"swap setting relight_limit must be a number ≥ 1, got "
                             f"{self.relight_limit!r}")
        if self.relight_order not in (1, 2):
            raise InputError(f"swap setting relight_order must be 1 or 2, got "
                             f"{self.relight_order!r}")
        if int(self.reference_frames) < 1:
            raise InputError("swap setting reference_frames must be ≥ 1")
        if int(self.batch_size) < 0:
            raise InputError("swap setting batch_size must be ≥ 0 (0: by device)")


def swap_coefficients(source: Coefficients, target: Coefficients) -> Coefficients:
    """The target's frames with the source's identity: ``T`` frames of ``target`` whose shape
    coefficients are ``source``'s (its first frame's); expression, jaw, eyelids, pose, camera
    and image size stay the target's.

    Raises:
        InputError: the two were fitted with different models or cameras.
    """
    check_same_fit(source, target, "target")
    shape = source.shape.to(target.shape.device, target.shape.dtype)
    return replace(target, shape=shape.clone(), landmarks=None, fitted_landmarks=None)


def disc_max(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """The largest value of ``(B, 1, H, W)`` masks within ``radius`` pixels (Euclidean: a
    digital disc, the union of one centred rectangle per row offset, each a separable max
    pool). A square window grew every speck into a square: the kept target pixels showed as
    rectangles on the swapped face."""
    if radius <= 0:
        return mask
    out = None
    for a in range(radius + 1):
        b = math.isqrt(radius * radius - a * a)
        pooled = F.max_pool2d(mask, (2 * a + 1, 2 * b + 1), stride=1, padding=(a, b))
        out = pooled if out is None else torch.maximum(out, pooled)
    return out


def open_mask(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Morphological opening of ``(B, 1, H, W)`` soft masks with a disc of ``radius``
    (erode, then dilate): drops specks narrower than the disc."""
    return disc_max(-disc_max(-mask, radius), radius)


def grow_mask(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Dilate ``(B, 1, H, W)`` soft masks by a disc of ``radius`` pixels."""
    return disc_max(mask, radius)


def seam_membrane(face: torch.Tensor, background: torch.Tensor, alpha: torch.Tensor,
                  tolerance: float = 0.12, smooth: float = 3.0, scale: int = 4) -> torch.Tensor:
    """What to add to a face so it meets its background along the blend without a step.

    Colour matching gives the face the frame's mean and spread, but not the frame's tone where
    they meet: the target's forehead above the swapped region, its cheeks at the jaw and its
    lids around shut eyes are lit and tinted locally, and the feather showed a line across the
    brows where the two skins differed. As Poisson cloning does (Pérez et al. 2003; a membrane
    interpolation, Farbman et al. 2009), the difference background − face along the blend band
    (where the share is between 0 and 1 and the two agree within ``tolerance``: skin beside
    skin, not a mouth interior or hair beside skin) is smoothed along the band and filled
    smoothly over the rest (:func:`~faceanime.render.texture.push_pull`): the face keeps its
    own detail and takes the frame's tone at its edge.

    Args:
        face: ``(T, 3, h, w)`` the faces, colour-matched, in [0, 1].
        background: ``(T, 3, h, w)`` what they are blended into.
        alpha: ``(T, 1, h, w)`` the face's share.
        tolerance: the largest per-channel difference that counts as the same skin.
        smooth: Gaussian sigma (pixels) of the smoothing along the band and of the fill.
        scale: the membrane is found at ``1 / scale`` of the resolution and interpolated.

    Returns:
        ``(T, 3, h, w)`` offsets; zeros for a frame without a band.
    """
    band = ((alpha > 0.02) & (alpha < 0.98)).to(face.dtype)
    difference = background - face
    agree = (difference.abs().amax(1, keepdim=True) < tolerance).to(face.dtype)
    weight = band * agree
    # At a quarter of the resolution: the membrane is smooth by design, and at full size it
    # cost a fifth of the swap's time.
    h, w = face.shape[-2:]
    weight_small = F.avg_pool2d(weight, scale, ceil_mode=True)
    sums = F.avg_pool2d(difference * weight, scale, ceil_mode=True)
    sigma = max(smooth / scale, 0.5)
    total = gaussian_blur(weight_small, sigma, border="zero")
    along = gaussian_blur(sums, sigma, border="zero") / total.clamp_min(1e-6)
    known = (weight_small > 0).to(face.dtype) * (total > 1e-3).to(face.dtype)
    filled = push_pull(along * known, known)
    filled[known.flatten(1).sum(1) == 0] = 0
    return F.interpolate(gaussian_blur(filled, sigma), size=(h, w), mode="bilinear",
                         align_corners=False)


def inner_face_weights(model: FaceModel, above_brows: float = 0.3, fade: float = 0.6
                       ) -> torch.Tensor:
    """``(N,)`` per vertex, how much it belongs to the swapped region: 1 up to
    ``above_brows`` brow-to-eye distances above the brows (the mean face's iBUG 20 and 25),
    fading to 0 over ``fade`` more. The forehead above belongs to the hair line, which differs
    between people and is often covered by a fringe: it stays the target's."""
    ids = model.landmark_indices
    brows, eyes = ids[torch.tensor([19, 24])], ids[torch.tensor([37, 44])]
    if bool((brows < 0).any() or (eyes < 0).any()):
        return torch.ones(model.mean.shape[0], dtype=model.mean.dtype)
    up = model.mean[:, 1]  # the model's y points up (brows above eyes above chin)
    brow, eye = up[brows].mean(), up[eyes].mean()
    span = (brow - eye).abs()
    top = brow + above_brows * span
    return ((top + fade * span - up) / (fade * span)).clamp(0, 1)


def feature_texels(model: FaceModel, texcoords: torch.Tensor, size: int, grow: float,
                   features: tuple[tuple[int, ...], ...] = _FEATURES) -> torch.Tensor:
    """``(S, S)`` bool: the texels of an ``S``² UV layout inside the ``features``' polygons
    (their 0-based iBUG points' convex hulls in UV), grown ``grow`` times about their
    centres."""
    from faceanime.render.warp import convex_depth

    texel = torch.arange(size, dtype=texcoords.dtype) / (size - 1)  # as texel_positions
    grid = torch.stack(torch.meshgrid(texel, texel, indexing="xy"), -1).reshape(-1, 2)
    inside = torch.zeros(size * size, dtype=torch.bool)
    ids = model.landmark_indices
    for points in features:
        index = ids[list(points)]
        if bool((index < 0).any()):
            continue
        polygon = texcoords[index]
        centre = polygon.mean(0)
        inside |= convex_depth(grid, centre + grow * (polygon - centre)) >= 0
    return inside.reshape(size, size)


def own_skin_texels(model: FaceModel, texcoords: torch.Tensor, region: torch.Tensor,
                    lip_v: float) -> torch.Tensor:
    """``(S, S)`` bool: texels of ``region`` that are the photo's face whatever its hair: all
    between the eyes' outer corners (hair over the forehead is the fringe's to find: grown by
    colour, s1's took the shadows of her eye sockets), the brows and what lies below the lower
    lip (``lip_v``). Beside the eyes only the brows themselves: a lock of hair touching a
    brow's outer end (s42's) is decided by its colour (:func:`grown_hair`)."""
    size = region.shape[-1]
    rows = torch.arange(size)[:, None].expand(size, size)
    cols = torch.arange(size)[None, :].expand(size, size)
    ids = model.landmark_indices
    left, right = sorted(float(texcoords[ids[i], 0]) * (size - 1) for i in (36, 45))
    brows = feature_texels(model, texcoords, size, 1.0, _FEATURES[:2])
    return region & (((cols >= left) & (cols <= right)) | brows | (rows > lip_v * (size - 1)))


def _mask_texture(model: FaceModel, mesh_triangles: torch.Tensor, texcoords: torch.Tensor,
                  size: int, tolerance: float, backend: str) -> torch.Tensor:
    """``(1, 3, S, S)`` per texel: the occlusion tolerance (``tolerance`` over the brows, the
    eyes and the inner mouth — their landmarks' polygons in UV, grown by a half — and 1
    elsewhere) and
    the inner-face weight (:func:`inner_face_weights`); the third channel is 1."""
    from faceanime.render.rasterize import interpolate
    from faceanime.render.texture import uv_fragments

    feature = feature_texels(model, texcoords, size, 1.5).reshape(-1)
    scale = torch.where(feature, tolerance, 1.0).to(texcoords.dtype)
    weights = inner_face_weights(model).to(texcoords.dtype)
    n = texcoords.shape[0]
    # The mesh may hold more vertices than the model (the mouth cap): they are inner face.
    weights = torch.cat([weights, weights.new_ones(n - weights.shape[0])])
    fragments = uv_fragments(mesh_triangles, texcoords, size, backend)
    inner = interpolate(fragments, weights[:, None], mesh_triangles)[0, 0].reshape(-1)
    out = torch.stack([scale, inner, torch.ones_like(scale)])
    return out.reshape(1, 3, size, size).contiguous()


def _not_skin(texture: torch.Tensor, skin_uv: torch.Tensor, threshold: float) -> torch.Tensor:
    """``(S, S)`` bool: texels of ``texture (1, 3, S, S)`` more than ``threshold`` (ΔE,
    L*a*b*) from the skin's colour, the median of small patches around ``skin_uv (K, 2)``."""
    size = texture.shape[-1]
    lab = rgb_to_lab(texture.double())[0]                                   # (3, S, S)
    pos = (skin_uv.double() * (size - 1)).round().long().clamp(0, size - 1)
    r = max(1, size // 128)
    patches = [lab[:, max(y - r, 0):y + r + 1, max(x - r, 0):x + r + 1].reshape(3, -1)
               for x, y in pos.tolist()]
    skin = torch.cat(patches, 1).median(1).values                            # (3,)
    # Not .norm(dim=0): torch's CPU norm across an image's channels is some hundred times
    # slower than this (tools/bench_swap.py).
    return (lab - skin[:, None, None]).square().sum(0).sqrt() > threshold


def _reaching(candidate: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """The connected parts of the bool array ``candidate`` that touch ``seeds``."""
    from scipy import ndimage

    labels, _ = ndimage.label(candidate)
    touching = np.unique(labels[seeds & candidate])
    return np.isin(labels, touching[touching > 0])


def fringe_mask(texture: torch.Tensor, region: torch.Tensor, skin_uv: torch.Tensor,
                eyes_v: float, threshold: float = 22.0,
                centre: tuple[float, float] | None = None) -> torch.Tensor:
    """``(S, S)`` bool: texels of a face texture covered by hair that comes down from above
    (a fringe over the forehead and brows), which a swap must not carry onto another face.

    A texel is not skin when its colour is more than ``threshold`` (ΔE, L*a*b*) from the skin's
    (the median around ``skin_uv``, e.g. the nose). Hair is the non-skin region above the eyes
    (``v < eyes_v``) connected to the top of the swapped ``region``: brows under bare skin
    are not connected to it and stay; brows under a fringe go with it. With ``centre`` (the
    ``u`` range between the brows' middles), only hair that reaches the top there counts: hair
    hanging by the temples (s42's) touched the brows' outer ends and took both brows with it,
    and the target's brows showed on the photo's face (s42 on d3: identity distance 0.45,
    against 0.34 with its brows kept).

    Args:
        texture: ``(1, 3, S, S)`` in [0, 1].
        region: ``(S, S)`` bool, the swapped part of the layout.
        skin_uv: ``(K, 2)`` texture coordinates where the face shows skin.
        eyes_v: the texture coordinate ``v`` of the upper eyelids (v grows downwards).
        threshold: the colour distance from the skin's beyond which a texel is not skin.
        centre: ``(u0, u1)`` where a fringe must reach the top (None: anywhere).
    """
    from scipy import ndimage

    size = texture.shape[-1]
    r = max(1, size // 128)
    far = _not_skin(texture, skin_uv, threshold)
    rows = torch.arange(size)[:, None].expand(size, size)
    above = rows < eyes_v * (size - 1)
    candidate = (far & region & above).numpy()
    # The top of the region: its first rows in every column (where the forehead is cut).
    top = region & ~torch.cat([torch.zeros(r + 1, size, dtype=torch.bool), region[:-(r + 1)]])
    if centre is not None:
        cols = torch.arange(size)[None, :].expand(size, size)
        low, high = (round(min(centre) * (size - 1)), round(max(centre) * (size - 1)))
        top = top & (cols >= low) & (cols <= high)
    hair = _reaching(candidate, top.numpy())
    return torch.from_numpy(ndimage.binary_dilation(hair, iterations=r)) & region


def grown_hair(texture: torch.Tensor, region: torch.Tensor, hair: torch.Tensor,
               skin: torch.Tensor, iterations: int = 5) -> torch.Tensor:
    """``(S, S)`` bool: ``hair`` and the texels of ``region`` that look like it, connected to
    it, by colour (OpenCV's GrabCut: a Gaussian mixture of the hair's colours against the
    skin's, and a graph cut that keeps the boundary where the colour changes).

    A lock of hair over the temple is often lighter than the hair beyond the outline and lets
    the skin through (s42's, by her right eye): too close to the skin's colour for a fixed
    threshold, and wider than a top-hat. The hair already found seeds the hair model; the
    ``skin`` texels (the inner face, the brows and eyes, below the lips) seed the skin model
    and never become hair; what lies between is decided by GrabCut.

    Args:
        texture: ``(1, 3, S, S)`` in [0, 1].
        region: ``(S, S)`` bool, the swapped part of the layout.
        hair: ``(S, S)`` bool, the hair found so far.
        skin: ``(S, S)`` bool, texels that are the face's own.
        iterations: GrabCut's.
    """
    import cv2  # OpenCV: a dependency; only a swap's set-up needs it

    from faceanime.render.head_mask import seeded_grabcut

    known = (hair & region).numpy()
    inside = region.numpy()
    if not known.any() or not (inside & ~known).any():
        return hair.clone()
    rgb = (texture[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    # Outside the region the texture holds a filler, skin-coloured: painted as hair, it does
    # not teach the hair model the skin's colour.
    image = rgb.copy()
    image[~inside] = np.median(rgb[known], 0).astype(np.uint8)
    labels = np.full(inside.shape, cv2.GC_PR_FGD, np.uint8)  # the foreground is the skin
    labels[~inside | known] = cv2.GC_BGD
    labels[inside & ~known & skin.numpy()] = cv2.GC_FGD
    if not seeded_grabcut(image, labels, iterations):
        return hair.clone()
    from scipy import ndimage

    found = inside & ((labels == cv2.GC_BGD) | (labels == cv2.GC_PR_BGD))
    grown = _reaching(found, known) & ~known
    # The cut runs where the colour changes most, inside a lock's thinning edge (hair over
    # skin, a few texels wide): that edge goes with it.
    r = max(1, texture.shape[-1] // 128)
    grown = ndimage.binary_dilation(grown, iterations=2 * r) & inside & ~skin.numpy()
    return torch.from_numpy(grown | known) | hair


def side_hair_mask(texture: torch.Tensor, region: torch.Tensor, skin_uv: torch.Tensor,
                   protected: torch.Tensor, below_v: float, band: float,
                   threshold: float = 22.0) -> torch.Tensor:
    """``(S, S)`` bool: texels of a face texture covered by hair that hangs by the temples
    and cheeks (s42's strands lay on the target's brow ends, s1's on its cheeks), which a
    swap must not carry onto another face.

    A texel is hair when it is not skin (as :func:`fringe_mask` has it), lies above
    ``below_v``, within ``band`` (a share of the texture's side) of the swapped ``region``'s
    outline and is connected to that outline through such texels. The ``protected`` texels
    (the brows and eyes, grown) never are: hair touching a brow's end does not take it.

    Args:
        texture: ``(1, 3, S, S)`` in [0, 1].
        region: ``(S, S)`` bool, the swapped part of the layout.
        skin_uv: ``(K, 2)`` texture coordinates where the face shows skin.
        protected: ``(S, S)`` bool.
        below_v: the texture coordinate ``v`` (growing downwards) hair may reach down to.
        band: how far in from the outline.
        threshold: the colour distance from the skin's beyond which a texel is not skin.
    """
    from scipy import ndimage

    r = max(1, texture.shape[-1] // 128)
    within, depth = _side_band(region, protected, below_v, band)
    candidate = _not_skin(texture, skin_uv, threshold).numpy() & within
    hair = _reaching(candidate, depth < 2)
    return torch.from_numpy(ndimage.binary_dilation(hair, iterations=r)) & region


def _side_band(region: torch.Tensor, protected: torch.Tensor, below_v: float, band: float
               ) -> tuple[np.ndarray, np.ndarray]:
    """Where side hair may lie on an ``(S, S)`` layout: ``(S, S)`` bool, the texels of
    ``region`` within ``band`` (a share of the side) of its outline, above ``below_v``, off
    the ``protected`` texels grown by a 64th of the side; and ``(S, S)`` each texel's distance
    to the outline (to the nearest texel outside the region, the layout's edge counting as
    outside)."""
    from scipy import ndimage

    size = region.shape[-1]
    inside = region.numpy()
    depth = ndimage.distance_transform_edt(np.pad(inside, 1))[1:-1, 1:-1]
    keep = ndimage.binary_dilation(protected.numpy(), iterations=2 * max(1, size // 128))
    rows = np.arange(size)[:, None] < below_v * (size - 1)
    return inside & ~keep & rows & (depth <= band * size), depth


def strand_mask(texture: torch.Tensor, region: torch.Tensor, protected: torch.Tensor,
                below_v: float, band: float, contrast: float) -> torch.Tensor:
    """``(S, S)`` bool: thin dark strands of hair on a face texture's cheeks and temples, which
    a swap must not carry onto another face.

    A strand is darker than the grey-scale closing of its surroundings (a disc of a 64th of
    the texture's side, wider than a strand, narrower than the face's shading) by ``contrast``
    (L*) or more — a black top-hat, which smooth shading, however dark, does not pass. Only
    within ``band`` (a share of the side) of the swapped ``region``'s outline, above
    ``below_v``, never on the ``protected`` texels (the brows and eyes, grown): there the
    face's own dark lines are; and only lines of 100 texels or more (in a 512² texture), not
    the specks of stubble and grain.

    Args:
        texture: ``(1, 3, S, S)`` in [0, 1].
        region: ``(S, S)`` bool, the swapped part of the layout.
        protected: ``(S, S)`` bool.
        below_v: the texture coordinate ``v`` (growing downwards) strands may reach down to.
        band: how far in from the outline.
        contrast: the L* a strand lies below its surroundings' closing by.
    """
    from scipy import ndimage

    size = texture.shape[-1]
    r = max(1, size // 128)
    reach = max(2, size // 64)
    lightness = rgb_to_lab(texture.double())[0, 0].numpy()
    ys, xs = np.mgrid[-reach:reach + 1, -reach:reach + 1]
    closed = ndimage.grey_closing(lightness, footprint=np.hypot(ys, xs) <= reach)
    within, _ = _side_band(region, protected, below_v, band)
    strands = (closed - lightness > contrast) & within
    # Strands are long: specks (stubble, film grain, pores) are not taken.
    labels, count = ndimage.label(strands)
    sizes = ndimage.sum(strands, labels, np.arange(1, count + 1))
    long = np.flatnonzero(sizes >= _STRAND_TEXELS * (size / 512) ** 2) + 1
    strands = np.isin(labels, long)
    return torch.from_numpy(ndimage.binary_dilation(strands, iterations=2 * r)) & region


@dataclass
class SwapBatch:
    """:meth:`SwapRenderer.prepare`'s result for ``T`` frames, for
    :meth:`SwapRenderer.finish`."""

    frames: torch.Tensor
    """``(T, 3, H, W)`` the target frames in [0, 1]."""
    box: tuple[int, int, int, int] | None
    """``(x0, y0, x1, y1)`` where the faces are (None: no face in these frames)."""
    face: torch.Tensor | None = None
    """``(T, 3, h, w)`` the swapped faces over the box, colour-matched."""
    alpha: torch.Tensor | None = None
    """``(T, 1, h, w)`` their feathered share, before occlusion."""
    covered: torch.Tensor | None = None
    """``(T, 1, h, w)`` each frame's own occlusion mask (None: occlusion off)."""
    background: torch.Tensor | None = None
    """``(T, 3, h', w')`` the target frames bent to the swapped face's shape over
    ``background_box`` (None: not reshaped)."""
    background_box: tuple[int, int, int, int] | None = None
    """``(x0, y0, x1, y1)`` of ``background``: the box, grown by the bending's reach."""


class SwapRenderer(BoxRenderer):
    """Put the face of one photo on the frames of one target.

    Args:
        model: the morphable model both were fitted with.
        source_image: the photo, ``(H, W, 3)`` uint8 or ``(3, H, W)`` float in [0, 1].
        source: its fitted coefficients (frame 0 is used).
        reference: ``(R, 3, h, w)`` target frames in [0, 1] its own texture is taken from.
        reference_coeffs: their ``R`` fitted frames.
        config: settings.
    """

    def __init__(self, model: FaceModel, source_image, source: Coefficients,
                 reference: torch.Tensor, reference_coeffs: Coefficients,
                 config: SwapRenderConfig | None = None) -> None:
        self.config = c = config or SwapRenderConfig()
        self._set_up(model, source_image, source, mouth_interior=True)
        if model.texcoords is None:
            raise InputError(f"model {model.name} has no texture coordinates; the swap needs them")
        self.source = source.frames(slice(0, 1))
        # The photo's texture is read with its lips where its pixels show them (an open
        # mouth's lower lip reaches below dlib's points: d19's lip was read from its teeth and
        # its chin, a pale band over a tall pink lip on a closed target); the swapped faces
        # are posed without that move, on the target's own lips.
        self.texture = extract_texture(
            self.image[None], self._screen(self.source, self._photo_lip_edge(self.source)),
            model.triangles, self.mesh.texcoords, self.mesh.symmetry, c.texture).image
        if reference.ndim != 4 or reference.shape[0] != reference_coeffs.n_frames:
            raise InputError(f"swap: {reference_coeffs.n_frames} reference coefficients for "
                             f"reference frames of shape {tuple(reference.shape)}")
        self.target_texture = self._merged_texture(reference.to(self.image), reference_coeffs)
        # One scale for the whole video (a per-batch one would make the blend jump between
        # batches as the head comes nearer): the reference frames' median face size.
        own = self._screen(reference_coeffs)[..., :2]
        extent = (own.amax(1) - own.amin(1)).mean(-1)
        extent = extent[torch.isfinite(extent)]
        self.pixel_scale = max(1.0, float(extent.median()) / TUNED_FACE) if len(extent) else 1.0
        """How many times the target's face is larger than ``TUNED_FACE``: the feather, the
        seam membrane's smoothing, the holes closed and the occlusion mask's resolution follow
        it (at least 1)."""
        # The target's eyes at rest (the median of its reference frames' gaze) and open (their
        # 90th percentile opening): its glances are changes from the one, measured where the
        # eyes are open enough against the other.
        self.rest_gaze = self.open_eyes = None
        if reference_coeffs.landmarks is not None:
            points = reference_coeffs.landmarks.to(self.image)
            self.rest_gaze = measure_gaze(reference.to(self.image), points).nanmedian(0).values
            self.open_eyes = open_state(points)
        self.masks = _mask_texture(model, self.mesh.triangles, self.mesh.texcoords.to(
            self.image.dtype), c.texture.size, c.feature_tolerance, c.backend).to(self.image)
        self.first_cap = int(self.cap.triangles[0]) if self.cap is not None else None
        if c.fringe:
            # The photo's own fringe stays off the swapped face: the target's forehead shows.
            ids = model.landmark_indices
            uv = self.mesh.texcoords.to(self.image.dtype)
            skin = uv[ids[torch.tensor([28, 29, 30])]]
            # Down to a third of the way from the brows to the upper lids: the lids, lashes and
            # eye make-up are the photo's eyes, never hair.
            brows_v = float(uv[ids[torch.tensor([19, 24])], 1].mean())
            lids_v = float(uv[ids[torch.tensor([37, 38, 43, 44])], 1].min())
            eyes_v = brows_v + (lids_v - brows_v) / 3
            region = self.masks[0, 1] > 0.5
            brows_u = uv[ids[torch.tensor([19, 24])], 0].tolist()
            hair = fringe_mask(self.texture.cpu(), region.cpu(), skin.cpu(), eyes_v,
                               centre=(brows_u[0], brows_u[1]))
            if (c.temples > 0 or c.strands > 0) and int(ids[57]) >= 0:  # to the lower lip
                brows_eyes = feature_texels(model, uv.cpu(), c.texture.size, 1.5, _FEATURES[:4])
                lip_v = float(uv[ids[57], 1])
                if c.temples > 0:
                    hair |= side_hair_mask(self.texture.cpu(), region.cpu(), skin.cpu(),
                                           brows_eyes, lip_v, c.temples)
                if c.strands > 0:
                    hair |= strand_mask(self.texture.cpu(), region.cpu(), brows_eyes, lip_v,
                                        c.strand_band, c.strands)
                if c.hair_cut:
                    hair = grown_hair(self.texture.cpu(), region.cpu(), hair,
                                      own_skin_texels(model, uv.cpu(), region.cpu(), lip_v))
            self.source_masks = self.masks.clone()
            self.source_masks[0, 1] *= (~hair).to(self.masks)
        else:
            self.source_masks = self.masks
        self.light = None
        if c.relight:
            self.light = self._fit_lights(reference.to(self.image), reference_coeffs)
        # Each face looked up once a frame with the mask it needs (the photo's region, the
        # target's occlusion tolerance), and in L*a*b* where it is matched and compared there:
        # the face box is converted back once a frame, not there and back (relighting scales
        # the photo's colours in sRGB first).
        self._lab = c.colour == "mean_std" and self.light is None
        last = torch.channels_last
        self._source_lookup = torch.cat([rgb_to_lab(self.texture) if self._lab else self.texture,
                                         self.source_masks[:, 1:2]], 1).contiguous(
                                             memory_format=last)
        self._target_lookup = torch.cat([rgb_to_lab(self.target_texture), self.masks[:, :1]],
                                        1).contiguous(memory_format=last)
        self._last: torch.Tensor | None = None

    def _skin_weight(self, masks: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
        """``(B, N)`` per vertex of ``B`` posed meshes (``normals (B, N, 3)``): 1 where it is
        skin that faces the camera, by the UV ``masks`` (features and the region left out are
        not skin), 0 elsewhere."""
        size = masks.shape[-1]
        uv = self.mesh.texcoords.to(masks)
        col = (uv[:, 0] * (size - 1)).round().long().clamp(0, size - 1)
        row = (uv[:, 1] * (size - 1)).round().long().clamp(0, size - 1)
        skin = (masks[0, 0, row, col] == 1) & (masks[0, 1, row, col] > 0.5)
        skin[self.model.n_vertices:] = False                      # the mouth cap is no skin
        return (skin[None] & (normals[..., 2] > 0.3)).to(normals.dtype)

    def _fit_lights(self, reference: torch.Tensor, coeffs: Coefficients
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The photo's and the target's light (``(K, 1)`` each, :func:`fit_light` on the skin's
        luma: one gain for every channel, a tint is colour matching's), the photo's vertex
        normals ``(N, 3)`` and the vertices whose gains average 1 ``(N,)``."""
        triangles = self.mesh.triangles
        photo = self._screen(self.source)                                     # (1, N, 3)
        photo_normals = vertex_normals(photo, triangles)
        photo_skin = self._skin_weight(self.source_masks, photo_normals)[0]
        colours = sample_image(self.image[None], photo)[0]                    # (N, 3)
        order = self.config.relight_order
        own = self._screen(coeffs)                                            # (R, N, 3)
        own_normals = vertex_normals(own, triangles)
        own_skin = self._skin_weight(self.masks, own_normals)
        seen = sample_image(reference, own)                                   # (R, N, 3)
        try:
            photo_light = fit_light(luma(colours)[:, None], photo_normals[0], photo_skin, order)
            target_light = fit_light(luma(seen.reshape(-1, 3))[:, None],
                                     own_normals.reshape(-1, 3), own_skin.reshape(-1), order)
        except InputError as error:
            raise InputError(f"relighting: too little skin faces the camera to fit a light "
                             f"({error}); swap without --relight") from error
        return photo_light, target_light, photo_normals[0], photo_skin

    def _merged_texture(self, frames: torch.Tensor, coeffs: Coefficients) -> torch.Tensor:
        """``(1, 3, S, S)`` the target's face texture from several of its frames: each texel
        the mean of the frames that saw it (mirrored or filled where none did)."""
        textures = extract_texture(frames, self._screen(coeffs), self.model.triangles,
                                   self.mesh.texcoords, self.mesh.symmetry, self.config.texture)
        seen = (textures.origin >= 1).to(frames.dtype)
        anyone = (textures.origin > 0).to(frames.dtype) * 1e-3
        weight = seen + anyone
        merged = (textures.image * weight).sum(0, keepdim=True) / weight.sum(0, keepdim=True) \
            .clamp_min(1e-9)
        return merged.contiguous(memory_format=torch.channels_last)

    def render_frames(self, frames: torch.Tensor, target: Coefficients
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Swap the faces of ``T`` consecutive target frames (continuing the last call's
        video: the occlusion mask carries over).

        Args:
            frames: ``(T, 3, H, W)`` target frames in [0, 1].
            target: their ``T`` fitted coefficients.

        Returns:
            ``(T, 3, H, W)`` swapped frames in [0, 1] and ``(T, 1, H, W)`` the share of each
            pixel that is the source's face (0 off the face, where occluded and in the mouth).
        """
        return self.finish(self.prepare(frames, target))

    def prepare(self, frames: torch.Tensor, target: Coefficients) -> SwapBatch:
        """The work of :meth:`render_frames` that does not depend on the frames before: the
        swapped faces and each frame's own occlusion. Independent batches of a video can be
        prepared at once (on worker threads); :meth:`finish` must then take them in order."""
        c = self.config
        if frames.ndim != 4 or frames.shape[0] != target.n_frames:
            raise InputError(f"swap: {target.n_frames} coefficient frames for frames of shape "
                             f"{tuple(frames.shape)}")
        full = frames.to(self.image)
        swapped = swap_coefficients(self.source, target)
        screen = self._screen(swapped)
        own_screen = self._screen(target) if c.occlusion or c.reshape else screen
        # Everything happens in the box the two faces cover (a fifth of a 512² frame).
        both = torch.cat([screen[..., :2], own_screen[..., :2]], 1).reshape(-1, 2)
        both = both[torch.isfinite(both).all(-1)]
        if both.numel() == 0:
            return SwapBatch(full, None)
        scale = self.pixel_scale
        feather = c.feather * scale
        margin = math.ceil(feather) + round(8 * scale)
        x0, y0, x1, y1 = clip_box(both.amin(0), both.amax(0), tuple(full.shape[-2:]), margin)
        shift = torch.tensor([x0, y0, 0], dtype=screen.dtype, device=screen.device)
        screen, own_screen = screen - shift, own_screen - shift
        frames = full[..., y0:y1, x0:x1]
        size = (y1 - y0, x1 - x0)
        lookup, mask, fragments = render_texture(self._source_lookup, screen,
                                                 self.mesh.triangles, self.mesh.texcoords, size,
                                                 c.backend)
        face, inner = lookup[:, :3], lookup[:, 3:]
        if self.light is not None:
            photo_light, target_light, photo_normals, skin = self.light
            gain = relight_gain(photo_normals, vertex_normals(screen, self.mesh.triangles),
                                photo_light, target_light, skin, c.relight_limit)
            # Before the pinholes are filled: they take the relit face's colour around them.
            face = face * interpolate(fragments, gain, self.mesh.triangles)
        # Pinholes where the nostrils' inner triangles turn away: filled from around them,
        # not left showing the target's skin as a dotted ring.
        holes = round(2 * scale)
        closed = close_holes(mask, holes)
        face = fill_from_neighbours(face, mask, closed, holes)
        mask = closed * self._facing_weight(screen, fragments)
        if c.keep_mouth and self.first_cap is not None:
            mask = mask * (fragments.face_index < self.first_cap)[:, None].to(mask.dtype)
        mask = mask * inner
        # Statistics from every other pixel: the face box's reference colours are converted at a
        # quarter of its pixels.
        gains = (c.max_contrast_gain, c.max_colour_gain, c.max_colour_gain) \
            if c.colour == "mean_std" else c.max_colour_gain
        if self._lab:
            face = match_lab(face, frames, mask, gains, stride=2)
        else:
            face = match_colors(face, frames, mask, c.colour, gains, stride=2)
        plain = face
        if c.gaze:
            # After the colour statistics: only the eyes change.
            face = self._look_as_target(face, full, target, screen)
        alpha = feather_mask(mask, feather)
        if c.shut_eyes < 1 and swapped.eyes is not None:
            alpha = alpha * (1 - self._shut_eyes(swapped, shift, size))
        covered = self._occlusion(frames, own_screen, size) if c.occlusion else None
        background = grown = None
        behind = frames
        if c.reshape:
            background, grown = self._reshaped(full, fragments, own_screen, screen,
                                               (x0, y0, x1, y1))
            gx0, gy0 = grown[:2]
            behind = background[..., y0 - gy0:y1 - gy0, x0 - gx0:x1 - gx0]
        if c.seam:
            # Here, on the worker threads, with each frame's own occlusion (finish carries the
            # last frame's over: a few pixels more at most) rather than in finish, which runs
            # in order on one thread.
            # From the face before its eyes were slid: the glance changes the eyes alone.
            share = alpha if covered is None else alpha * (1 - covered)
            face = (face + seam_membrane(plain, behind, share, smooth=3.0 * scale,
                                         scale=round(4 * scale))).clamp(0, 1)
        return SwapBatch(full, (x0, y0, x1, y1), face, alpha, covered, background, grown)

    def _reshaped(self, full: torch.Tensor, fragments, own: torch.Tensor, screen: torch.Tensor,
                  box: tuple[int, int, int, int]
                  ) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
        """The target frames ``full (T, 3, H, W)`` bent to the swapped mesh's shape around the
        box: ``(T, 3, h', w')`` over the box grown by the bending's reach (clipped to the
        frame), and that grown box. ``fragments``: the swapped mesh ``screen`` rasterized over
        the box; ``own`` the target's own mesh, both in the box's pixels."""
        x0, y0, x1, y1 = box
        face = screen[..., :2].reshape(-1, 2)
        face = face[torch.isfinite(face).all(-1)]
        size = float((face.amax(0) - face.amin(0)).mean()) if len(face) else 0.0
        reach = max(self.config.reshape_reach * size, 2.0)
        offsets, pad = bend_offsets(fragments, own[..., :2], self.mesh.triangles.to(own.device),
                                    reach)                             # (T, 2, h + 2p, w + 2p)
        h, w = full.shape[-2:]
        gx0, gy0 = max(x0 - pad, 0), max(y0 - pad, 0)
        gx1, gy1 = min(x1 + pad, w), min(y1 + pad, h)
        offsets = offsets[..., gy0 - (y0 - pad):gy1 - (y0 - pad),
                          gx0 - (x0 - pad):gx1 - (x0 - pad)]
        ys = torch.arange(gy0, gy1, dtype=offsets.dtype, device=offsets.device)
        xs = torch.arange(gx0, gx1, dtype=offsets.dtype, device=offsets.device)
        fetch = offsets.permute(0, 2, 3, 1) + torch.stack(torch.broadcast_tensors(
            xs[None, :], ys[:, None]), -1)                                 # (T, h', w', 2)
        background = F.grid_sample(full, pixel_grid(fetch, h, w, inplace=True), mode="bilinear",
                                   padding_mode="border", align_corners=True)
        return background, (gx0, gy0, gx1, gy1)

    def finish(self, batch: SwapBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`render_frames`' result from a batch :meth:`prepare` made: the occlusion mask
        carried over from the frames before (this renderer's last finished frame), then the
        swapped face blended into each frame."""
        full = batch.frames
        if batch.box is None:
            return full.clone(), torch.zeros_like(full[:, :1])
        x0, y0, x1, y1 = batch.box
        alpha = batch.alpha
        occluded = None
        if batch.covered is not None:
            occluded = self._remembered(batch.covered, batch.box, tuple(full.shape[-2:]))
            alpha = alpha * (1 - occluded)
        out = full.clone()
        if batch.background is not None:
            gx0, gy0, gx1, gy1 = batch.background_box
            out[..., gy0:gy1, gx0:gx1] = batch.background
            if occluded is not None:
                # What covers the face is in front of the head: it stays where it is, not
                # bent with the head (a hand, a bar across the cheeks).
                out[..., y0:y1, x0:x1] = torch.lerp(out[..., y0:y1, x0:x1],
                                                    full[..., y0:y1, x0:x1],
                                                    occluded.expand(-1, 3, -1, -1))
        frames = out[..., y0:y1, x0:x1]
        out[..., y0:y1, x0:x1] = torch.lerp(frames, batch.face, alpha.expand_as(batch.face))
        share = torch.zeros_like(full[:, :1])
        share[..., y0:y1, x0:x1] = alpha
        return out, share

    def _look_as_target(self, face: torch.Tensor, frames: torch.Tensor, target: Coefficients,
                        screen: torch.Tensor) -> torch.Tensor:
        """``face (T, 3, h, w)`` (the swapped faces over the box, whose mesh is ``screen``,
        in the box's pixels) with each eye's content slid by the target frame's glance: its
        gaze (measured in ``frames (T, 3, H, W)`` at ``target``'s landmarks) changed from its
        rest, both eyes' mean, as retarget's relative transfer does (the photo's and the
        target's iris positions are not comparable: taken as they are, s1's irises moved a
        fifth of an eye while both looked at the camera). Unchanged where a gaze is unknown or
        the target's eyes are narrowed."""
        ids = self.model.landmark_indices[36:48]
        if (self.source.gaze is None or self.rest_gaze is None or target.landmarks is None
                or bool((ids < 0).any())):
            return face
        points = target.landmarks.to(frames)
        seen = measure_gaze(frames, points)                                         # (T, 2, 2)
        seen[narrowed(points, opened=self.open_eyes)] = float("nan")
        source = self.source.gaze.to(face)[0]                                       # (2, 2)
        change = (seen - self.rest_gaze).nanmean(1, keepdim=True).expand(-1, 2, -1)
        if not bool((torch.nan_to_num(change).abs() > 1e-4).any()):
            return face
        t, _, h, w = face.shape
        hexagons = screen[:, ids.to(screen.device), :2].reshape(t, 2, 6, 2)
        # Only the eyes' box is resampled.
        margin = float((hexagons[:, :, 3] - hexagons[:, :, 0]).norm(dim=-1).max()) / 4 + 2
        low = (hexagons.reshape(-1, 2).amin(0) - margin).floor().clamp_min(0)
        high = hexagons.reshape(-1, 2).amax(0) + margin
        x0, y0 = (int(v) for v in low.tolist())
        x1, y1 = min(int(high[0]) + 1, w), min(int(high[1]) + 1, h)
        if x1 <= x0 or y1 <= y0:
            return face
        ys, xs = torch.meshgrid(torch.arange(y0, y1, dtype=face.dtype, device=face.device),
                                torch.arange(x0, x1, dtype=face.dtype, device=face.device),
                                indexing="ij")
        pixels = torch.stack([xs, ys], -1).reshape(1, -1, 2).expand(t, -1, -1)    # (T, P, 2)
        fetch = pixels.clone()
        n = pixels.shape[1]
        for e in range(2):
            fetch = fetch - eye_slide(pixels, hexagons[:, e, None].expand(t, n, 6, 2),
                                      source[e, 0].expand(t, n),
                                      change[:, e, None].expand(t, n, 2))
        scale = torch.tensor([2 / max(w - 1, 1), 2 / max(h - 1, 1)], dtype=face.dtype,
                             device=face.device)
        grid = (fetch * scale - 1).reshape(t, y1 - y0, x1 - x0, 2)
        moved = (fetch != pixels).any(-1).reshape(t, 1, y1 - y0, x1 - x0)
        out = face.clone()
        # Resampled where the eyes slide only (bilinear at a pixel centre is not exact).
        out[..., y0:y1, x0:x1] = torch.where(moved, F.grid_sample(
            face, grid, mode="bilinear", padding_mode="border", align_corners=True),
            face[..., y0:y1, x0:x1])
        return out

    def _shut_eyes(self, swapped: Coefficients, shift: torch.Tensor, size: tuple[int, int]
                   ) -> torch.Tensor:
        """``(T, 1, h, w)`` in [0, 1] over the box: where the target's own eyelids show. Each
        eye's region is a soft ellipse around where its open eye lies (the swapped face's
        eye landmarks with the lids open), widened upwards over the lid, weighted by how far
        the target's lid is shut from ``shut_eyes`` to ``shut_eyes_full``."""
        c = self.config
        closure = swapped.eyes.to(shift)                                       # (T, 2)
        ramp = max(c.shut_eyes_full - c.shut_eyes, 1e-6)
        weight = ((closure - c.shut_eyes) / ramp).clamp(0, 1)
        h, w = size
        out = shift.new_zeros(closure.shape[0], 1, h, w)
        if not bool((weight > 0).any()):
            return out
        opened = replace(swapped, eyes=torch.zeros_like(swapped.eyes))
        ids = self.model.landmark_indices[36:48]
        if bool((ids < 0).any()):
            return out  # a model without eye landmarks: nothing to place the lids with
        points = (self._screen(opened)[:, ids, :2] - shift[:2]).view(-1, 2, 6, 2)  # (T, 2, 6, 2)
        corners = points[:, :, 3] - points[:, :, 0]                              # (T, 2, 2)
        length = corners.norm(dim=-1).clamp_min(1)                               # (T, 2)
        cos, sin = (corners / length[..., None]).unbind(-1)
        half_width = 0.6 * length
        opening = (points[:, :, [1, 2]] - points[:, :, [5, 4]]).norm(dim=-1).amax(-1)
        half_height = (0.9 * opening).clamp_min(0.25 * half_width)               # (T, 2)
        # Centred a little above the eye: the upper lid and its crease are what changes.
        centre = points.mean(2) + 0.3 * half_height[..., None] * torch.stack([sin, -cos], -1)
        ys = torch.arange(h, dtype=shift.dtype, device=shift.device)[:, None]
        xs = torch.arange(w, dtype=shift.dtype, device=shift.device)[None, :]
        for e in range(2):
            dx = xs - centre[:, e, 0, None, None]
            dy = ys - centre[:, e, 1, None, None]
            along = (dx * cos[:, e, None, None] + dy * sin[:, e, None, None]) \
                / half_width[:, e, None, None]
            across = (dy * cos[:, e, None, None] - dx * sin[:, e, None, None]) \
                / half_height[:, e, None, None]
            inside = ((1.3 - (along ** 2 + across ** 2)) / 0.6).clamp(0, 1)      # soft edge
            out[:, 0] = torch.maximum(out[:, 0], inside * weight[:, e, None, None])
        return out

    def _facing_weight(self, screen: torch.Tensor, fragments) -> torch.Tensor:
        """``(T, 1, H, W)``: 1 where the swapped surface faces the camera, fading to 0 where
        it turns away (the far cheek under a turn): there the photo's texture is stretched
        or mirrored, and the target's own pixels are better."""
        if self.config.min_facing <= 0:
            return torch.ones_like(fragments.face_index[:, None], dtype=screen.dtype)
        cosine = facing(screen, self.mesh.triangles).abs()                  # (T, F)
        weight = ((cosine - self.config.min_facing) / self.config.min_facing).clamp(0, 1)
        index = fragments.face_index                                        # (T, H, W)
        t = index.shape[0]
        per_pixel = weight.gather(1, index.clamp_min(0).reshape(t, -1)).reshape(index.shape)
        # Holes closed around a covered pixel take its neighbours' weight: 1.
        return torch.where(index >= 0, per_pixel, torch.ones_like(per_pixel))[:, None]

    def _occlusion(self, frames: torch.Tensor, screen: torch.Tensor, size: tuple[int, int]
                   ) -> torch.Tensor:
        """``(T, 1, h, w)`` in [0, 1] over the box of ``frames (T, 3, h, w)``: where each
        target frame's face is covered, on its own. ``screen`` is the target's own mesh, in
        the box's pixels."""
        c = self.config
        # At half the resolution of a face of the tuned size (a larger face's frames shrunk
        # further): occluders are far larger than a pixel, this is most of the swap's work, and
        # the blur, opening and growth below are in these pixels.
        k = c.occlusion_scale / self.pixel_scale
        small = (max(1, round(size[0] * k)), max(1, round(size[1] * k)))
        frames = F.interpolate(frames, size=small, mode="bilinear", align_corners=False,
                               antialias=True)
        # Pixel centres at integers: x' = (x + 0.5) k - 0.5.
        gain = torch.tensor([small[1] / size[1], small[0] / size[0], 1.0], dtype=screen.dtype,
                            device=screen.device)
        screen = (screen + torch.tensor([0.5, 0.5, 0.0], dtype=screen.dtype,
                                        device=screen.device)) * gain \
            - torch.tensor([0.5, 0.5, 0.0], dtype=screen.dtype, device=screen.device)
        lookup, mask, fragments = render_texture(self._target_lookup, screen,
                                                 self.mesh.triangles, self.mesh.texcoords, small,
                                                 c.backend)
        own, scale = lookup[:, :3], lookup[:, 3:]          # own already in L*a*b*
        inner = mask
        if self.first_cap is not None:
            inner = mask * (fragments.face_index < self.first_cap)[:, None].to(mask.dtype)
        # In L*a*b* throughout: the frames converted once (matched there, compared there),
        # not back to RGB and converted again for the distance.
        frames = rgb_to_lab(frames)
        matched, total = match_statistics(own, frames, inner)
        own = torch.where((inner > 0) & (total > 0), matched, own)
        # The colour distance as a sum of squares: torch's CPU .norm(dim=1) over a batch of
        # images took 62 ms where this takes 0.5 (8 × 3 × 220 × 200, the same values to 1e-7).
        difference = gaussian_blur(own, 1.0) - gaussian_blur(frames, 1.0)
        tolerance = scale.clamp_min(1)
        face = screen[..., :2].reshape(-1, 2)
        face = face[torch.isfinite(face).all(-1)]
        rim = c.rim_width * float((face.amax(0) - face.amin(0)).mean()) if len(face) else 0.0
        if c.rim_tolerance > 1 and rim >= 1:
            depth = inside_distance(mask >= 0.5, math.ceil(rim))
            edge = (1 - (depth - 1) / rim).clamp(0, 1)
            tolerance = tolerance * (1 + (c.rim_tolerance - 1) * edge)
        distance = difference.square().sum(1, keepdim=True).sqrt() / tolerance
        covered = ((distance - c.occlusion_low) / (c.occlusion_high - c.occlusion_low))
        covered = covered.clamp(0, 1) * (inner >= 0.5)
        grow = max(1, round(c.occlusion_grow * c.occlusion_scale))
        covered = gaussian_blur(grow_mask(open_mask(covered, 1), grow), 1.0)
        return F.interpolate(covered, size=size, mode="bilinear", align_corners=False)

    def _remembered(self, covered: torch.Tensor, box: tuple[int, int, int, int],
                    frame_size: tuple[int, int]) -> torch.Tensor:
        """``covered (T, 1, h, w)`` over ``box``, each frame's mask at least
        ``occlusion_memory`` times the previous frame's (the last call's last frame first):
        an occluder does not flicker out for a frame where it matches the face's colours."""
        c = self.config
        x0, y0, x1, y1 = box
        masks = []
        for frame_mask in covered:
            if self._last is not None and tuple(self._last.shape[-2:]) == frame_size:
                frame_mask = torch.maximum(frame_mask,
                                           c.occlusion_memory * self._last[:, y0:y1, x0:x1])
            masks.append(frame_mask)
            last = frame_mask.new_zeros(1, *frame_size)
            last[:, y0:y1, x0:x1] = frame_mask
            self._last = last
        return torch.stack(masks)
