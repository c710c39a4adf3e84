"""The mouth interior a photo renderer shows where the target opens the mouth wider than the
photo does: the driver's own teeth and tongue, or a synthesised interior, as an RGBA texture
over the mouth cap in one canonical layout.

**Layout.** The cap (:mod:`faceanime.morphable.mouth`) is a fan of triangles from the
inner-lip loop to a centre vertex set back in the mouth. Its canonical layout is the model's
mean face with the jaw opened by :data:`LAYOUT_JAW`, seen from the front and stretched to fill
an ``(h, w)`` texture: the upper lip's edge along the top, the lower lip's along the bottom.
Any posed cap maps to it triangle by triangle (same barycentric weights), so an interior
captured from one face at one opening is drawn on another face at another opening, following
its lip contour ("Bringing Portraits to Life", Averbuch-Elor et al. 2017, transfers the
driver's mouth the same way, by a warp to the target's lips).

**Capture** (:func:`capture_interior`): for each driving frame, every texel's cap point posed
by the driver's fit is looked up in the driving frame. The colours are normalised by the
driver's skin colour (the nose bridge's, to :data:`REFERENCE_SKIN`; :func:`skin_gain`:
brightness in full, hue in part, as a chromatic adaptation transform does), so a renderer
takes them to its photo's skin: a dark video's teeth are not grey on a bright photo, and a
vivid video's pink tongue is toned down in a sepia portrait, and a monochrome photo
(:func:`colour_spread`) shows it in its own tone (:func:`tone_interior`). (Lips would be a
worse reference: pale and red lips differ more than the light does.) Alpha says how far the
driver's own mouth is open in that frame: closed, the texture holds only lips, and a renderer
falls back to the synthesised interior; towards the corners it also leaves out texels that show
the driver's lips (:func:`lip_texels`).

**Synthesis** (:func:`synthetic_interior`, :func:`upper_teeth`): an upper row of teeth under
the upper lip, a tongue at the bottom, a darker cavity between, shaded from the photo's lip
and skin; for drivers that hold no frames (``predict``, ``animate``, coefficient files).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from faceanime.coefficients import Coefficients
from faceanime.morphable.eyelid import eyelid_rig
from faceanime.morphable.jaw import apply_jaw, build_jaw
from faceanime.morphable.lips import lip_rig
from faceanime.morphable.model import FaceModel
from faceanime.morphable.mouth import MouthCap, add_mouth_cap, flatten_cap
from faceanime.reconstruction import face_vertices, project_vertices
from faceanime.render.frames import frames_tensor
from faceanime.render.paste import rgb_to_lab
from faceanime.render.rasterize import rasterize, signed_areas
from faceanime.render.texture import pixel_grid

LAYOUT_JAW = 0.3
"""Jaw opening (radians) of the canonical layout: wide enough that the cap is a full oval."""

_LUMA = (0.299, 0.587, 0.114)

REFERENCE_SKIN = torch.tensor([0.6901, 0.5, 0.44])
"""Skin colour (RGB in [0, 1]) the captured colours are normalised to, channel by channel."""

REFERENCE_LUMA = float(REFERENCE_SKIN @ torch.tensor(_LUMA))
"""The reference skin's brightness (Rec. 601 luma, [0, 1]): 0.55."""

CHROMA_ADAPTATION = 0.35
"""How much of the hue difference between two faces' skins a captured interior takes on when
moved from one face to the other (0: none, only brightness; 1: all, a full von Kries white
balance), as the degree of adaptation of a chromatic adaptation transform. Skin hue is part
light, part the person (blush, make-up, a tan): all of it turned white teeth pink on a rosy
face (s1; half of it still left them too warm to read as teeth), none left a vivid pink tongue
in a sepia portrait (s12)."""

SHOULDER_KNEE = 0.8
"""Share of a photo's highlight (:func:`highlight_shoulder`) up to which the mouth's colours
are left as they are; above it they are compressed towards the highlight."""

REFERENCE_LIP_RATIO = 0.65
"""A face's lips' brightness over its skin's (Rec. 601 luma) as colour film and video show it:
the shared drivers' 0.54-0.80 (d3, d6, d0), s1's and s42's 0.59 and 0.63."""

RED_TISSUE = (0.15, 0.35)
"""Redness (:func:`redness`) over which an interior colour goes from neutral (teeth) to red
tissue (tongue, gums, lips): d6's captured interiors 0.16-0.61, median 0.33-0.40."""

TEXTURE_SIZE = (48, 96)
"""``(h, w)`` of an interior texture: about the mouth's size in a 512² frame."""

OPEN_RANGE = (0.3, 0.45)
"""The driver's opening (cap area over the outer lips' area) over which its own interior fades
in: below the first, its mouth shows lips only; above the second, a full interior. (On d3 a
closed mouth measures 0.18-0.29, the widest 0.61: SFM's mouth hole is open at rest.)"""

LIP_GUARD = (0.55, 0.85)
"""Across the mouth (0 at its middle, 1 at a corner of the canonical layout), where a captured
texel that looks like the driver's lips rather than its mouth's inside starts to be left out,
and from where in full. The fit's mouth corners reach past where a driver's lips meet, so the
capture's ends hold the driver's own lips: pasted into another face's mouth, pale wedges inside
its lips (s1 by d18's frames 92 and 123, whose lips are paler than s1's)."""

MONOCHROME_SPREAD = (8.0, 14.0)
"""How far a face's colours spread in hue and saturation (the 99th percentile of their CIELAB
``(a*, b*)`` distance from the face's median, :func:`colour_spread`) over which a photo goes from
monochrome to colour, as :func:`interior_saturation` reads it. Measured over the fitted face:
the old black-and-white portrait s12, tinted by hand, 7.8 (its moustache, hair and skin in one
tone); the colour portraits d19 16.9, s1 31, s42 35 (its red lips: its pale skin is less
saturated than s12's tint), image_0010 43; the colour videos' faces 16-24 (inside the
landmarks' hull, the median over frames; d6's least colourful frame 11); a grey photo 0.1."""

_OUTER_LIP = tuple(range(48, 60))  # iBUG 49-60, 0-based
# Strips (pixels along the mouth) on either side over which the teeth's upper edge is averaged.
_EDGE_STRIPS = 3
_NOSE_BRIDGE = (27, 28, 29)  # iBUG 28-30: skin, lit like the face, rarely in shadow


def luma(colour: torch.Tensor) -> torch.Tensor:
    """``(..., 3) -> (...)`` Rec. 601 luma."""
    return colour @ torch.tensor(_LUMA, dtype=colour.dtype, device=colour.device)


@dataclass
class MouthLayout:
    """Where each texel of an interior texture lies on the cap.

    Attributes:
        size: ``(h, w)`` of the texture.
        corners: ``(Fc, 3, 2)`` texel positions (x, y) of each cap triangle's corners, in the
            order the capped model lists them (the centre first).
        triangle: ``(h, w)`` the cap triangle (0-based among the cap's) each texel lies in;
            texels outside the cap take their nearest inside texel's.
        bary: ``(h, w, 3)`` the texel's barycentric weights in that triangle.
        inside: ``(h, w)`` bool, True for texels on the cap.
    """

    size: tuple[int, int]
    corners: torch.Tensor
    triangle: torch.Tensor
    bary: torch.Tensor
    inside: torch.Tensor

    def to(self, device: torch.device | str) -> MouthLayout:
        return MouthLayout(self.size, self.corners.to(device), self.triangle.to(device),
                           self.bary.to(device), self.inside.to(device))


def cap_corners(cap: MouthCap) -> torch.Tensor:
    """``(Fc, 3)`` the capped model's vertex indices of the cap's triangles."""
    return cap.model.triangles[cap.triangles]


def mouth_layout(cap: MouthCap, size: tuple[int, int] = TEXTURE_SIZE,
                 margin: float = 1.5) -> MouthLayout:
    """The canonical layout of ``cap`` in an ``(h, w)`` texture, ``margin`` texels from its
    edges."""
    h, w = size
    model = cap.model
    mean = model.mean.detach().double().cpu()[None]
    opened = apply_jaw(mean, torch.tensor([LAYOUT_JAW], dtype=mean.dtype),
                       cap.jaw.pivot.double().cpu(), cap.jaw.weights.double().cpu())[0]
    opened = flatten_cap(opened, cap)       # as renderers and the capture pose it
    corners = opened[cap_corners(cap).cpu()][..., :2]                       # (Fc, 3, 2)
    corners[..., 1] = -corners[..., 1]                                      # image y is down
    low = corners.reshape(-1, 2).amin(0)
    high = corners.reshape(-1, 2).amax(0)
    span = torch.tensor([w - 1 - 2 * margin, h - 1 - 2 * margin], dtype=corners.dtype)
    corners = (corners - low) / (high - low).clamp_min(1e-9) * span + margin
    flat = torch.cat([corners.reshape(-1, 2), torch.zeros(corners.shape[0] * 3, 1,
                                                           dtype=corners.dtype)], 1)
    triangles = torch.arange(flat.shape[0]).view(-1, 3)
    fragments = rasterize(flat[None].float(), triangles, (h, w))
    triangle, bary = fragments.face_index[0], fragments.bary[0]
    inside = triangle >= 0
    # Texels off the cap take the nearest cap texel's point: bilinear lookups at the rim and
    # the captured colours there stay on the mouth.
    _, (rows, cols) = ndimage.distance_transform_edt(~inside.numpy(), return_indices=True)
    rows, cols = torch.from_numpy(rows), torch.from_numpy(cols)
    return MouthLayout(size=(h, w), corners=corners.float(), triangle=triangle[rows, cols],
                       bary=bary[rows, cols], inside=inside)


def mouth_uv(layout: MouthLayout, triangle: torch.Tensor, bary: torch.Tensor) -> torch.Tensor:
    """Texel positions ``(P, 2)`` (x, y) of cap points given by their cap triangle ``(P,)``
    (0-based among the cap's) and barycentric weights ``(P, 3)``."""
    corners = layout.corners.to(bary.device, bary.dtype)[triangle]          # (P, 3, 2)
    return (bary[..., None] * corners).sum(1)


def sample_texture(texture: torch.Tensor, frame: torch.Tensor, uv: torch.Tensor
                   ) -> torch.Tensor:
    """Bilinear lookups in a batch of textures ``(T, C, h, w)``: ``(P, C)`` at texel
    positions ``uv (P, 2)`` of frames ``frame (P,)`` (edge texels beyond the edge)."""
    _, c, h, w = texture.shape
    flat = texture.permute(0, 2, 3, 1).reshape(-1, c)
    x = uv[:, 0].clamp(0, w - 1)
    y = uv[:, 1].clamp(0, h - 1)
    x0 = x.floor().long().clamp(max=w - 2)  # textures are at least 2 x 2
    y0 = y.floor().long().clamp(max=h - 2)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    base = frame * (h * w) + y0 * w + x0
    top = torch.lerp(flat[base], flat[base + 1], fx)
    bottom = torch.lerp(flat[base + w], flat[base + w + 1], fx)
    return torch.lerp(top, bottom, fy)


def skin_gain(skin: torch.Tensor) -> torch.Tensor:
    """``(..., 3)`` per-channel gains that take colours seen on a face whose skin is ``skin
    (..., 3)`` to the reference face's (:data:`REFERENCE_SKIN`): its brightness all the way,
    its hue by :data:`CHROMA_ADAPTATION` (in log space). Their inverse takes them back to
    another face's."""
    skin = skin.clamp_min(0.05)
    reference = REFERENCE_SKIN.to(skin)
    brightness = luma(reference) / luma(skin)
    chroma = (reference / luma(reference)) / (skin / luma(skin)[..., None])
    return brightness[..., None] * chroma ** CHROMA_ADAPTATION


def colour_spread(colours: torch.Tensor) -> float:
    """How colourful a face is: the 99th percentile of the CIELAB ``(a*, b*)`` distance of its
    pixels' colours ``(P, 3)`` (RGB in [0, 1]) from their median. A toned monochrome photo
    (sepia, cyanotype) has one hue at every brightness, so a small spread even where its tone
    is strong; a colour photo's lips, eyes and skin differ."""
    import cv2  # OpenCV: a dependency; only a renderer's set-up needs it

    rgb = colours.detach().to("cpu", torch.float32).clamp(0, 1).numpy()[None]
    ab = torch.from_numpy(cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)[0, :, 1:])
    distance = (ab - ab.median(0).values).norm(dim=-1)
    return float(torch.quantile(distance, 0.99)) if len(distance) else 0.0


def face_highlight(colours: torch.Tensor) -> float:
    """The brightness ``colours (P, 3)`` (a photo's face pixels, [0, 1]) reach at their
    brightest, leaving out specular glints: the 99th percentile of their luma."""
    if len(colours) == 0:
        return 1.0
    return float(torch.quantile(luma(colours.float()), 0.99).clamp(0.5, 1.0))


def highlight_shoulder(colour: torch.Tensor, highlight: float,
                       knee: float = SHOULDER_KNEE) -> torch.Tensor:
    """``colour (..., 3)``, each channel left as it is up to ``knee * highlight`` and
    compressed above it (a tanh, slope 1 at the knee) towards ``highlight``, as a camera's tone
    curve rolls off its highlights.

    A driver's teeth are brighter than its skin, and brought to a pale photo's skin brightness
    (s42, luma 0.85) they came out above 1: clipped, flat white patches without the teeth's
    shading, brighter than anything else in the face (s42's own teeth, in the shade of its
    lips, reach 0.72)."""
    start = knee * highlight
    room = max(highlight - start, 1e-6)
    rolled = start + room * torch.tanh((colour - start).clamp_min(0) / room)
    return torch.where(colour > start, rolled, colour.clamp_min(0))


def interior_saturation(spread: float) -> float:
    """How much of a driver's mouth interior's own colour (its pink tongue, red lips) a photo
    of colour spread ``spread`` (:func:`colour_spread`) shows, in [0, 1]: none in a
    monochrome photo, whose interior takes the photo's tone; all in a colour one."""
    low, high = MONOCHROME_SPREAD
    return min(max((spread - low) / (high - low), 0.0), 1.0)


def redness(colour: torch.Tensor) -> torch.Tensor:
    """``(..., 3) -> (...)`` how much redder than its green and blue a colour is, over its red:
    0 for a grey, about 0.3 for skin, 0.5 for lips."""
    red = colour[..., 0]
    return (red - (colour[..., 1] + colour[..., 2]) / 2) / red.clamp_min(1e-3)


def red_response(lip_ratio: float) -> float:
    """How much darker than colour video a photo shows red tissue, from its lips' brightness
    over its skin's (``lip_ratio``, Rec. 601 luma), in [0.5, 1]: 1 for a colour photo's lips
    (:data:`REFERENCE_LIP_RATIO`), less for old film blind to red (s12's lips, 0.35 of its
    skin, against video's 0.65)."""
    return min(max(lip_ratio / REFERENCE_LIP_RATIO, 0.5), 1.0)


def tone_interior(colour: torch.Tensor, tone: torch.Tensor, saturation: float,
                  red: float = 1.0) -> torch.Tensor:
    """``(M, 3)`` interior colours ``colour (M, 3)`` with only ``saturation`` of their own hue
    left, the rest the photo's ``tone (3,)`` (its colour at luma 1) at their brightness, its red
    tissue darkened by the photo's :func:`red_response` ``red``.

    Toned at the luma of its colours alone, a driver's pink tongue came out at 0.77 of a
    monochrome photo's skin brightness, twice as bright as the photo's own lips (s12, whose
    film darkened red): a pale blob that read as a lower lip (dlib put s12's lips together
    above it; mouth follow by d6 0.58 with the mesh's opening following at 0.90)."""
    if saturation >= 1.0:
        return colour
    low, high = RED_TISSUE
    tissue = ((redness(colour) - low) / (high - low)).clamp(0, 1)
    toned = (luma(colour) * (1 - (1 - red) * tissue * tissue * (3 - 2 * tissue)))[:, None] * tone
    return torch.lerp(toned, colour, saturation)


def median_colours(frames: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``(T, 3)`` the median colour of ``frames (T, 3, H, W)`` at each frame's points
    ``(T, L, 2)`` (pixels)."""
    h, w = frames.shape[-2:]
    grid = pixel_grid(points, h, w)[:, :, None, :].to(frames.dtype)
    colours = F.grid_sample(frames, grid, mode="bilinear", padding_mode="border",
                            align_corners=True)[..., 0]                     # (T, 3, L)
    return colours.median(-1).values


def outer_lip_vertices(model) -> torch.Tensor:
    """The model's vertices of the outer lip landmarks (the mapped ones)."""
    ids = model.landmark_indices[list(_OUTER_LIP)]
    return ids[ids >= 0]


def skin_vertices(model) -> torch.Tensor:
    """The model's vertices of the nose bridge landmarks (the mapped ones): where a face's
    skin brightness is read."""
    ids = model.landmark_indices[list(_NOSE_BRIDGE)]
    return ids[ids >= 0]


def mouth_opening(screen: torch.Tensor, cap: MouthCap, lips: torch.Tensor) -> torch.Tensor:
    """``(T,)`` how open each posed mouth is: the cap's projected area over the area inside
    the outer lip points (in landmark order, a polygon), from screen vertices ``(T, N, 3)``."""
    cap_area = signed_areas(screen[:, cap_corners(cap)]).abs().sum(1) / 2
    outline = screen[:, lips, :2]
    x, y = outline[..., 0], outline[..., 1]
    polygon = (x * y.roll(-1, 1) - x.roll(-1, 1) * y).sum(1).abs() / 2
    return cap_area / polygon.clamp_min(1e-6)


def sampled_box(points: torch.Tensor, size: tuple[int, int], pad: int = 2
                ) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)``: the pixels of an image of ``size = (H, W)`` that bilinear samples at
    ``points (T, P, 2)`` (all frames) read, padded by ``pad``, clipped to the image. A point off
    the image reads its border, which the box then reaches: sampling the box, its points shifted
    by ``(x0, y0)``, reads what sampling the image does."""
    h, w = size
    finite = points[torch.isfinite(points).all(-1)]
    if finite.numel() == 0:
        return 0, 0, w, h
    low = finite.amin(0).floor().long().tolist()
    high = finite.amax(0).ceil().long().tolist()
    x0, y0 = min(max(low[0] - pad, 0), w - 2), min(max(low[1] - pad, 0), h - 2)
    x1, y1 = max(min(high[0] + pad + 1, w), x0 + 2), max(min(high[1] + pad + 1, h), y0 + 2)
    return x0, y0, x1, y1


def capture_interior(frames: torch.Tensor, screen: torch.Tensor, cap: MouthCap,
                     layout: MouthLayout, lips: torch.Tensor, skin: torch.Tensor
                     ) -> torch.Tensor:
    """The driver's mouth interior, frame by frame.

    Args:
        frames: ``(T, 3, H, W)`` driving frames in [0, 1].
        screen: ``(T, N, 3)`` the capped mesh posed by each frame's fit (pixels, depth).
        cap: the cap of that mesh; ``layout`` its canonical layout.
        lips: the mesh's outer-lip vertices (:func:`outer_lip_vertices`).
        skin: its nose-bridge vertices (:func:`skin_vertices`).

    Returns:
        ``(T, 4, h, w)`` uint8 RGBA: colours normalised to the reference skin colour, alpha
        how far each frame's mouth is open (:data:`OPEN_RANGE`), less where a texel towards the
        corners shows the driver's lips (:func:`lip_texels`).
    """
    layout = layout.to(screen.device)
    corners = screen[:, cap_corners(cap), :2]                               # (T, Fc, 3, 2)
    points = (layout.bary[None, ..., None] * corners[:, layout.triangle]).sum(-2)  # (T,h,w,2)
    h, w = frames.shape[-2:]
    colours = F.grid_sample(frames, pixel_grid(points, h, w).to(frames.dtype), mode="bilinear",
                            padding_mode="border", align_corners=True)      # (T, 3, th, tw)
    gain = skin_gain(median_colours(frames, screen[:, skin, :2])).clamp(0.5, 2.0)  # (T, 3)
    opening = mouth_opening(screen, cap, lips)
    low, high = OPEN_RANGE
    alpha = ((opening - low) / (high - low)).clamp(0, 1)
    alpha = alpha * alpha * (3 - 2 * alpha)
    alpha = alpha[:, None, None, None] * (1 - lip_texels(frames, colours, screen, cap, layout,
                                                         lips, skin))
    rgba = torch.cat([colours * gain[:, :, None, None], alpha.to(colours.dtype)], 1)
    return rgba.mul(255).round().clamp(0, 255).byte()


def lip_texels(frames: torch.Tensor, colours: torch.Tensor, screen: torch.Tensor,
               cap: MouthCap, layout: MouthLayout, lips: torch.Tensor,
               skin: torch.Tensor | None = None) -> torch.Tensor:
    """``(T, 1, h, w)`` in [0, 1]: how much each captured texel towards the mouth's corners
    (:data:`LIP_GUARD`) shows the driver's lips (or skin) rather than its mouth's inside, judged
    by its colour (CIE L*a*b*): nearer the lips' (the median a fifth of the way in from the
    outer lip points), or the skin's (the median at ``skin``'s vertices), than the inside's (the
    median over the layout's middle half), in full from a third nearer. Where the fit's mouth
    corners reach past the driver's, the capture's very ends hold the skin beside its lips'
    corners: brought to a pale photo's brightness (s42 by d6's 991, 1.6 times), white wedges.

    Args:
        frames: ``(T, 3, H, W)`` driving frames in [0, 1].
        colours: ``(T, 3, h, w)`` their captured interiors.
        screen: ``(T, N, 3)`` the capped mesh posed by each frame's fit.
        cap: its cap; ``layout`` the canonical layout; ``lips`` its outer-lip vertices;
            ``skin`` its skin vertices (:func:`skin_vertices`; None: the lips alone).
    """
    w = layout.size[1]
    outline = screen[:, lips, :2]                                              # (T, L, 2)
    middle = screen[:, cap.loop, :2].mean(1, keepdim=True)                     # (T, 1, 2)
    lip = rgb_to_lab(median_colours(frames, outline + 0.2 * (middle - outline))[..., None, None])
    lab = rgb_to_lab(colours)                                                  # (T, 3, h, w)
    xs = torch.arange(w, dtype=colours.dtype, device=colours.device)
    across = ((xs - (w - 1) / 2) / ((w - 1) / 2)).abs()                        # (w,)
    inner = layout.inside.to(colours.device) & (across < 0.5)[None, :]
    inside = lab[..., inner].median(-1).values[..., None, None]                # (T, 3, 1, 1)
    to_lip = (lab - lip).square().sum(1, keepdim=True).sqrt()
    if skin is not None:
        face = rgb_to_lab(median_colours(frames, screen[:, skin, :2])[..., None, None])
        to_lip = torch.minimum(to_lip, (lab - face).square().sum(1, keepdim=True).sqrt())
    to_inside = (lab - inside).square().sum(1, keepdim=True).sqrt()
    nearer = (to_inside - to_lip) / (to_inside + to_lip).clamp_min(1e-6)       # -1 .. 1
    low, high = LIP_GUARD
    ends = ((across - low) / (high - low)).clamp(0, 1)
    share = (nearer / 0.33).clamp(0, 1)
    return share * share * (3 - 2 * share) * (ends * ends * (3 - 2 * ends))


class InteriorCapture:
    """Captures driving frames' mouth interiors for a model (its cap and layout built once).

    Raises:
        InputError: the model has no mouth hole (nothing to capture into).
    """

    def __init__(self, model: FaceModel) -> None:
        self.cap = add_mouth_cap(model, build_jaw(model))
        self.layout = mouth_layout(self.cap)
        self.lips = outer_lip_vertices(self.cap.model)
        self.skin = skin_vertices(self.cap.model)
        # Rigged once, not per batch (the lip rig takes ~40 ms to build).
        self.eyelids = eyelid_rig(self.cap.model)
        self.lip_rig = lip_rig(self.cap.model, self.cap.jaw)
        # Every point the capture samples lies in these vertices' hull: the cap's texels
        # between its corners, the lips' points between the outline and the loop's middle.
        self.sampled = torch.cat([cap_corners(self.cap).reshape(-1), self.lips, self.skin,
                                  self.cap.loop]).unique()

    def __call__(self, frames: np.ndarray | torch.Tensor, coeffs: Coefficients) -> torch.Tensor:
        """``(T, 4, h, w)`` uint8 on the CPU (:func:`capture_interior`) of ``frames``
        ``(T, H, W, 3)`` uint8 fitted by ``coeffs`` (``T`` frames)."""
        if self.lip_rig is None:
            coeffs = replace(coeffs, lips=torch.zeros_like(coeffs.lips),
                             pucker=torch.zeros_like(coeffs.pucker))
        # The brows do not reach the mouth: not rigged here.
        coeffs = replace(coeffs, brows=torch.zeros_like(coeffs.brows))
        screen = project_vertices(coeffs, face_vertices(self.cap.model, coeffs, jaw=self.cap.jaw,
                                                        eyelids=self.eyelids,
                                                        lips=self.lip_rig))
        screen = flatten_cap(screen, self.cap)
        # Only the box the capture samples from is converted to floats: the whole frame's
        # conversion was most of the capture's time (a tenth of a 512² retarget's).
        x0, y0, x1, y1 = sampled_box(screen[:, self.sampled, :2], frames.shape[1:3])
        tensor = frames_tensor(frames[:, y0:y1, x0:x1], screen.device).to(screen.dtype)
        shifted = screen - screen.new_tensor([x0, y0, 0])
        return capture_interior(tensor, shifted, self.cap, self.layout, self.lips,
                                self.skin).cpu()


def warm_tint(gain: torch.Tensor) -> torch.Tensor:
    """``(3,)`` the hue of ``gain`` (a colour gain, RGB) at luma 1, kept only where it warms:
    teeth take on a sepia portrait's or a warm light's hue, but a face less red than
    :data:`REFERENCE_SKIN` must not turn them green or blue (red >= green >= blue)."""
    tint = gain / luma(gain)
    g = torch.minimum(tint[1], tint[0])
    b = torch.minimum(tint[2], g)
    tint = torch.stack([tint[0], g, b])
    return tint / luma(tint)


def upper_teeth(row: torch.Tensor, col: torch.Tensor, frame: torch.Tensor,
                corners: torch.Tensor, skin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthesised upper teeth at the mouth's pixels, in output space: teeth have a fixed
    height (about a tenth of the mouth's width) below the visible upper edge of the mouth,
    whatever the opening, so a grin is all teeth and a wide-open mouth shows a band. "Below"
    is across the mouth (from corner to corner), not down the picture: a tilted head's teeth
    hang from its own upper lip.

    Args:
        row, col: ``(M,)`` integer pixel positions of the mouth's pixels.
        frame: ``(M,)`` their frame.
        corners: ``(T, 2, 2)`` each frame's mouth corners (x, y), pixels: its left, then its
            right one as the face sees it from the front (the picture's left for an upright
            face).
        skin: the photo's skin brightness (luma).

    Returns:
        ``(M,)`` how much of each pixel is tooth, and ``(M, 3)`` the teeth's colour there.
    """
    dtype = corners.dtype
    left, right = corners[:, 0], corners[:, 1]
    axis = right - left
    width_t = axis.norm(dim=-1).clamp_min(1.0)
    along = (axis / width_t[:, None])[frame]                            # (M, 2)
    offset = torch.stack([col, row], 1).to(dtype) - ((left + right) / 2)[frame]
    u = (offset * along).sum(1)                                          # along the mouth
    v = offset[:, 1] * along[:, 0] - offset[:, 0] * along[:, 1]          # down across it
    # The visible upper edge: the top mouth pixel of each one-pixel strip across the mouth,
    # averaged over the strips within ``_EDGE_STRIPS`` on either side. Strip by strip, a ragged
    # lip line (a moustache's, or the cap's pixel steps under a tilt) hung the teeth from
    # steps of a few pixels: a broken white zig-zag.
    strip = u.round().long()
    strip = strip - strip.min()
    strips = int(strip.max()) + 1
    key = frame * strips + strip
    frames = int(frame.max()) + 1
    top = torch.full((frames * strips,), float("inf"), dtype=dtype, device=row.device)
    top = top.scatter_reduce(0, key, v, "amin").view(frames, 1, strips)
    known = torch.isfinite(top).to(dtype)
    k = 2 * _EDGE_STRIPS + 1
    sums = F.avg_pool1d(torch.cat([torch.where(known > 0, top, torch.zeros_like(top)), known], 1),
                        k, stride=1, padding=_EDGE_STRIPS, count_include_pad=False)
    smooth = (sums[:, :1] / sums[:, 1:].clamp_min(1e-6)).view(-1)
    below = v - smooth[key]
    width = width_t[frame]
    across = (u / (width / 2)).clamp(-1, 1)
    corner = (1 - across.abs()).clamp_min(0)
    share = ((0.1 * width * corner.sqrt() - below) / 1.5).clamp(0, 1) * (corner / 0.2).clamp(0, 1)
    # Eight front teeth across the middle 60 %: darker gaps between them.
    gaps = 0.8 + 0.2 * torch.cos(across * 6.5 * math.pi).abs().pow(0.3)
    white = torch.tensor([0.92, 0.89, 0.83], dtype=dtype, device=row.device)
    brightness = min(max(skin, 0.1), 0.9)
    shade = gaps * (0.65 + 0.35 * corner.sqrt()) * (1 - 0.25 * below / (0.1 * width))
    colour = (white * (0.45 + 0.75 * brightness) * shade[:, None]).clamp(0, 1)
    return share, colour


def synthetic_interior(layout: MouthLayout, lip_colour: torch.Tensor,
                       skin: float = REFERENCE_LUMA, darkness: float = 0.8,
                       teeth_reach: float = 0.0) -> torch.Tensor:
    """A plausible mouth interior in ``layout``, shaded from the photo's lip colour ``(3,)``
    and skin brightness (luma): a tongue inside the lower lip, a dark cavity towards the back,
    and (``teeth_reach`` > 0) a row of upper teeth that far in from the upper lip, darker gaps
    between them; ``(4, h, w)`` float RGBA at the photo's brightness (alpha 1). A renderer
    whose upper lip hides the cap's rim draws the teeth with :func:`upper_teeth` instead."""
    h, w = layout.size
    dtype, device = lip_colour.dtype, lip_colour.device
    # How deep each texel is (the centre vertex's weight: 0 at the lips, 1 at the back), and
    # whether it lies under the upper lip or over the lower one.
    depth = layout.bary[..., 0].to(device, dtype).clamp(0, 1)
    ys = torch.arange(h, dtype=dtype, device=device)[:, None].expand(h, w)
    xs = torch.arange(w, dtype=dtype, device=device)[None, :].expand(h, w)
    centre = layout.corners[0, 0].to(device, dtype)
    across = ((xs - centre[0]) / (w / 2)).clamp(-1, 1)          # -1 .. 1, corner to corner
    upper = ((centre[1] - ys) / (0.08 * h)).clamp(0, 1)
    lower = ((ys - centre[1]) / (0.08 * h)).clamp(0, 1)
    brightness = min(max(skin, 0.1), 0.9)
    cavity = lip_colour * (1 - darkness * (0.45 + 0.55 * depth.sqrt()))[..., None]
    # Teeth: the upper half, from the lip ``teeth_reach`` in, fading at the corners.
    corner = (1 - across.abs()).clamp_min(0)
    teeth_share = (upper * ((teeth_reach - depth) / 0.08).clamp(0, 1)
                   * (corner / 0.25).clamp(0, 1))
    gaps = 0.8 + 0.2 * torch.cos(across * 4.5 * math.pi).abs().pow(0.3)
    white = torch.tensor([0.92, 0.89, 0.83], dtype=dtype, device=device)
    teeth = white * (0.45 + 0.75 * brightness) * (gaps * (0.7 + 0.3 * corner.sqrt()))[..., None]
    teeth = teeth * (1 - 0.3 * depth)[..., None]                  # in shadow further in
    # Tongue: the lower half, behind a thin strip of cavity at the lower lip.
    tongue_share = lower * ((depth - 0.12) / 0.1).clamp(0, 1) * ((0.75 - depth) / 0.15).clamp(0, 1)
    tongue = (lip_colour * torch.tensor([0.92, 0.62, 0.64], dtype=dtype, device=device)
              * (0.8 - 0.4 * depth)[..., None])
    colour = torch.lerp(cavity, tongue, tongue_share[..., None])
    colour = torch.lerp(colour, teeth.clamp(0, 1), teeth_share[..., None])
    alpha = torch.ones(h, w, 1, dtype=dtype, device=device)
    return torch.cat([colour, alpha], -1).permute(2, 0, 1).clamp(0, 1)
