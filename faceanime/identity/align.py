"""dlib's aligned face chip in torch: differentiable with respect to the image (and landmarks).

dlib computes its face descriptor on a 150×150 chip cut out of the image by
``get_face_chip_details(shape, 150, 0.25)`` and ``extract_image_chips``
(``dlib/image_transforms/interpolation.h``). This module repeats those steps, in the same order
and with the same rounding, so its chips equal dlib's pixel for pixel (bar a rare ±1 where
float32 and double round differently) and the torch descriptor equals dlib's:

1. **Similarity to a template.** 33 of the 68 points (nose, eyes, upper lip and mouth corners; not
   the jaw, brows or lower lip) are matched to dlib's ``mean_face_shape`` scaled into the chip
   with ``padding`` on each side; a least-squares similarity (Umeyama) gives the angle, the scale
   (image pixels per chip pixel) and the image point under the chip's centre.
2. **The chip rectangle.** dlib turns that into a rotated rectangle ``150·scale`` wide centred
   there (its corners ``150·scale - 1`` apart, dlib's rectangles counting both end pixels) and
   maps the chip's corner *pixels* (0 and 149) onto its corners: a chip pixel spans
   ``(150·scale - 1) / 149`` image pixels, not quite ``scale``.
3. **An image pyramid against aliasing.** While the rectangle would still cover more than
   150² pixels after halving, dlib halves the image with ``pyramid_down<2>`` (a 5×5 binomial
   filter, stride 2, 8-bit results) instead of sampling the full image: one chip pixel often
   covers 2–3 image pixels, and sampling those directly would alias. The pyramid is built on a
   crop around the face (dlib's ``bounding_box``), whose position decides the sampling grid, and
   dlib maps the rectangle down with ``p / 2 - (1.25, 0.75)`` (its ``point_down``), which is not
   quite the filter's centre (``p / 2 - 1``): both are kept, since matching dlib is the point.
4. **Bilinear sampling** in the chosen level, black where any of the four neighbours is outside
   it, then truncation to 8 bits.

With ``quantize`` (the default) the 8-bit steps (the input, each pyramid level and the chip) are
rounded as dlib rounds them, with a straight-through gradient (the rounding is skipped on the
way back), so gradients are those of the continuous pipeline.

dlib's ``extract_image_chips`` with several faces of one image crops their union for the pyramid;
this module (like dlib's single-face calls) crops each face on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from faceanime.errors import InputError
from faceanime.identity.network import CHIP_SIZE

# dlib's mean_face_shape: average positions of iBUG points 17..67 in a unit square.
_MEAN_FACE_X = (
    0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124,
    0.904991, 0.98004, 0.490127, 0.490127, 0.490127, 0.490127, 0.36688, 0.426036,
    0.490127, 0.554217, 0.613373, 0.121737, 0.187122, 0.265825, 0.334606, 0.260918,
    0.182743, 0.645647, 0.714428, 0.793132, 0.858516, 0.79751, 0.719335, 0.254149,
    0.340985, 0.428858, 0.490127, 0.551395, 0.639268, 0.726104, 0.642159, 0.556721,
    0.490127, 0.423532, 0.338094, 0.290379, 0.428096, 0.490127, 0.552157, 0.689874,
    0.553364, 0.490127, 0.42689,
)
_MEAN_FACE_Y = (
    0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891,
    0.0187482, 0.038915, 0.106454, 0.203352, 0.307009, 0.409805, 0.515625, 0.587326,
    0.609345, 0.628106, 0.609345, 0.587326, 0.216423, 0.178758, 0.179852, 0.231733,
    0.245099, 0.244077, 0.231733, 0.179852, 0.178758, 0.216423, 0.244077, 0.245099,
    0.780233, 0.745405, 0.727388, 0.742578, 0.727388, 0.745405, 0.780233, 0.864805,
    0.902192, 0.909281, 0.902192, 0.864805, 0.784792, 0.778746, 0.785343, 0.778746,
    0.784792, 0.824182, 0.831803, 0.824182,
)
# The points dlib matches (0-based iBUG indices): brows (17–26) and the lower lip (55–59, 65–67)
# move with expression, the jaw contour with pose, so they are left out.
TEMPLATE_POINTS = tuple(i for i in range(27, 68) if not (55 <= i <= 59 or 65 <= i <= 67))
DEFAULT_PADDING = 0.25
# pyramid_down<2>::point_down is p / 2 - this offset (x, y).
_POINT_DOWN_OFFSET = (1.25, 0.75)
_BINOMIAL = (1.0, 4.0, 6.0, 4.0, 1.0)


@dataclass(frozen=True)
class ChipConfig:
    """How face chips are cut (each field's comment is its CLI help)."""

    padding: float = DEFAULT_PADDING  # margin around dlib's mean face, as a fraction of its size
    quantize: bool = True  # round to 8 bits where dlib does (straight-through gradients)


@dataclass(frozen=True)
class ChipGeometry:
    """Where a chip lies in its image (dlib's ``chip_details``), float64.

    Attributes:
        center: ``(B, 2)`` image point ``(x, y)`` under the chip's centre.
        scale: ``(B,)`` image pixels per chip unit (the rectangle is ``size · scale`` wide).
        angle: ``(B,)`` rotation of the chip in the image, radians (positive: clockwise on screen,
            since y points down).
        size: the chip's side in pixels.
    """

    center: torch.Tensor
    scale: torch.Tensor
    angle: torch.Tensor
    size: int

    def chip_to_image(self) -> torch.Tensor:
        """``(B, 2, 3)`` affine maps from chip pixels ``(x, y, 1)`` to image pixels, as dlib
        samples the full-resolution image (the pyramid levels shift this by a fraction of a
        pixel)."""
        # dlib's rectangle spans size·scale - 1 between its corners, where the corner pixels go.
        step = (self.scale * self.size - 1) / (self.size - 1)
        cos, sin = torch.cos(self.angle) * step, torch.sin(self.angle) * step
        half = (self.size - 1) / 2
        tx = self.center[:, 0] - half * (cos - sin)
        ty = self.center[:, 1] - half * (sin + cos)
        return torch.stack([torch.stack([cos, -sin, tx], -1), torch.stack([sin, cos, ty], -1)], 1)


def template_points(size: int = CHIP_SIZE, padding: float = DEFAULT_PADDING,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """``(33, 2)`` float64 chip coordinates of the template points :data:`TEMPLATE_POINTS`."""
    index = [i - 17 for i in TEMPLATE_POINTS]
    xy = torch.tensor([[_MEAN_FACE_X[i], _MEAN_FACE_Y[i]] for i in index], dtype=torch.float64,
                      device=device)
    return (padding + xy) / (2 * padding + 1) * size


def chip_geometry(landmarks: torch.Tensor, size: int = CHIP_SIZE,
                  padding: float = DEFAULT_PADDING) -> ChipGeometry:
    """dlib's ``get_face_chip_details`` for 68-point landmarks, batched.

    Args:
        landmarks: ``(B, 68, 2)`` iBUG points, 0-based pixel ``(x, y)``.
        size: chip side in pixels.
        padding: margin around the template, as a fraction of its size.

    Returns:
        The chips' :class:`ChipGeometry` (float64, differentiable in ``landmarks``).
    """
    if landmarks.ndim != 3 or landmarks.shape[1:] != (68, 2):
        raise InputError(f"expected (B, 68, 2) landmarks, got {tuple(landmarks.shape)}")
    src = template_points(size, padding, landmarks.device)
    dst = landmarks[:, list(TEMPLATE_POINTS)].to(torch.float64)
    # Least-squares similarity as one complex factor k (rotation·scale) with dst ≈ k·src + t:
    # Umeyama's solution whenever no reflection is involved, which a face never needs.
    a = torch.complex(*(src - src.mean(0)).unbind(-1))
    mean_dst = dst.mean(1)
    b = torch.complex(*(dst - mean_dst[:, None]).unbind(-1))
    k = (a.conj() * b).sum(-1) / (a.abs() ** 2).sum()
    middle = torch.complex(*(torch.full((2,), size / 2, dtype=torch.float64,
                                        device=landmarks.device) - src.mean(0)).unbind(-1))
    centre = torch.view_as_real(k * middle) + mean_dst
    return ChipGeometry(center=centre, scale=k.abs(), angle=torch.angle(k), size=size)


def _floor_ste(x: torch.Tensor) -> torch.Tensor:
    """``floor`` on the way forward, identity on the way back."""
    return x + (torch.floor(x) - x).detach()


def pyramid_down(image: torch.Tensor, quantize: bool = True) -> torch.Tensor:
    """dlib's ``pyramid_down<2>``: 5×5 binomial filter, every other row and column.

    Args:
        image: ``(C, H, W)`` values on the 0–255 scale.
        quantize: truncate to integers as dlib's 8-bit output does.

    Returns:
        ``(C, (H - 3) // 2, (W - 3) // 2)``; output pixel ``(i, j)`` is centred on input pixel
        ``(2i + 2, 2j + 2)``.
    """
    taps = torch.tensor(_BINOMIAL, dtype=image.dtype, device=image.device)
    kernel = (taps[:, None] * taps[None, :] / 256.0).expand(image.shape[0], 1, 5, 5)
    down = F.conv2d(image[None], kernel, stride=2, groups=image.shape[0])[0]
    # conv2d gives floor((H - 5) / 2) + 1 = (H - 3) // 2 rows: dlib's size.
    return _floor_ste(down) if quantize else down


def _sample_bilinear(image: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """dlib's ``interpolate_bilinear`` of ``(C, H, W)`` at float64 points ``x, y`` (any shape
    ``S``): ``(C, *S)`` in float64, 0 where a neighbour of the point lies outside the image."""
    c, h, w = image.shape
    x0, y0 = torch.floor(x), torch.floor(y)
    inside = (x0 >= 0) & (y0 >= 0) & (x0 + 1 < w) & (y0 + 1 < h)
    fx, fy = x - x0, y - y0
    xi = x0.clamp(0, w - 2).long()
    yi = y0.clamp(0, h - 2).long()
    flat = image.reshape(c, h * w).to(torch.float64)

    def at(dy: int, dx: int) -> torch.Tensor:
        return flat[:, ((yi + dy) * w + xi + dx).reshape(-1)].reshape(c, *x.shape)

    value = ((1 - fy) * ((1 - fx) * at(0, 0) + fx * at(0, 1))
             + fy * ((1 - fx) * at(1, 0) + fx * at(1, 1)))
    return value * inside


def _rect_down(rect: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    ox, oy = _POINT_DOWN_OFFSET
    left, top, right, bottom = rect
    return (left / 2 - ox, top / 2 - oy, right / 2 - ox, bottom / 2 - oy)


def _area(rect: tuple[float, float, float, float]) -> float:
    left, top, right, bottom = rect  # dlib's drectangle spans right - left + 1
    return max(right - left + 1, 0.0) * max(bottom - top + 1, 0.0)


def _rotate(cx: float, cy: float, x: float, y: float, cos: float, sin: float
            ) -> tuple[float, float]:
    return cx + cos * (x - cx) - sin * (y - cy), cy + sin * (x - cx) + cos * (y - cy)


def _extract_one(image: torch.Tensor, center: torch.Tensor, scale: torch.Tensor,
                 angle: torch.Tensor, size: int, quantize: bool) -> torch.Tensor:
    """One chip, ``(3, size, size)`` on the 0–255 scale, from a ``(3, H, W)`` image in [0, 1]."""
    _, height, width = image.shape
    # The discrete decisions (pyramid depth, crop) follow dlib's double arithmetic on plain
    # floats; only the sampling positions stay in the autograd graph.
    cx, cy, s, a = float(center[0]), float(center[1]), float(scale), float(angle)
    half = (size * s - 1) / 2  # dlib's centered_drect: a drectangle spans right - left + 1
    rect = (cx - half, cy - half, cx + half, cy + half)
    chip_area = size * size
    depth, grow, down = 0, 2.0, _rect_down(rect)
    while _area(down) > chip_area:
        down = _rect_down(down)
        depth += 1
        grow = grow * 2 + 2  # border for the filter at each level
    cos, sin = math.cos(a), math.sin(a)
    corners = [_rotate(cx, cy, px, py, cos, sin)
               for px in (rect[0], rect[2]) for py in (rect[1], rect[3])]
    xs, ys = [p[0] for p in corners], [p[1] for p in corners]
    box = (max(min(xs) - grow, 0.0), max(min(ys) - grow, 0.0),
           min(max(xs) + grow, width - 1.0), min(max(ys) + grow, height - 1.0))
    left, top, right, bottom = (math.floor(v + 0.5) for v in box)  # drectangle -> rectangle
    if right < left or bottom < top:  # the face lies outside the image: dlib gives black
        return image.new_zeros(3, size, size)
    # Only the crop is scaled and rounded: whole-image ops would cost more than the chip, and
    # so would their gradients.
    level = image[:, top:bottom + 1, left:right + 1] * 255.0
    if quantize:  # dlib sees 8-bit pixels; images made from 8 bits are k / 255 up to float error
        level = level + (torch.round(level) - level).detach()
    # The rectangle in crop coordinates, moved down the pyramid alongside the image.
    offset = torch.stack([center[0] - left, center[1] - top])
    step = (scale * size - 1) / (size - 1)  # corner pixels onto the rectangle's corners
    for _ in range(depth):
        if min(level.shape[1:]) <= 8:  # dlib's pyramid_down returns an empty image: black chip
            return image.new_zeros(3, size, size)
        level = pyramid_down(level, quantize)
        offset = offset / 2 - offset.new_tensor(_POINT_DOWN_OFFSET)
        step = step / 2
    if min(level.shape[1:]) < 2:
        return image.new_zeros(3, size, size)
    # Chip pixel (i, j) -> centre + R(angle)·((j, i) - (size - 1) / 2)·step, in level pixels.
    grid = torch.arange(size, dtype=torch.float64, device=image.device) - (size - 1) / 2
    u, v = grid[None, :], grid[:, None]
    cos_t, sin_t = torch.cos(angle) * step, torch.sin(angle) * step
    x = offset[0] + cos_t * u - sin_t * v
    y = offset[1] + sin_t * u + cos_t * v
    chip = _sample_bilinear(level, x, y).clamp(0, 255)
    chip = _floor_ste(chip) if quantize else chip  # dlib casts to 8 bits (truncating)
    return chip.to(image.dtype)


def extract_chips(images: torch.Tensor, landmarks: torch.Tensor,
                  config: ChipConfig | None = None, size: int = CHIP_SIZE) -> torch.Tensor:
    """Aligned face chips as dlib cuts them for its face descriptor.

    Args:
        images: ``(B, 3, H, W)`` RGB in ``[0, 1]`` (float).
        landmarks: ``(B, 68, 2)`` iBUG points, 0-based pixel ``(x, y)`` (centre of the top-left
            pixel at ``(0, 0)``, dlib's convention).
        config: padding and rounding (:class:`ChipConfig`).
        size: chip side in pixels (150 for the descriptor).

    Returns:
        ``(B, 3, size, size)`` chips in ``[0, 1]``, on the images' device and dtype,
        differentiable with respect to ``images`` (and, through the sampling positions,
        ``landmarks``). Parts of the chip outside the image are black, as in dlib.

    Raises:
        InputError: wrong shapes or an integer image.
    """
    config = config or ChipConfig()
    if images.ndim != 4 or images.shape[1] != 3:
        raise InputError(f"expected (B, 3, H, W) images, got {tuple(images.shape)}")
    if landmarks.shape[0] != images.shape[0]:
        raise InputError(f"{images.shape[0]} images but {landmarks.shape[0]} landmark sets")
    if not images.is_floating_point():
        raise InputError(f"expected float images in [0, 1], got {images.dtype}")
    geometry = chip_geometry(landmarks.to(images.device), size, config.padding)
    # unbind, not indexing: one backward node for the batch instead of a full-size zero
    # gradient per face.
    chips = [_extract_one(image, center, scale, angle, size, config.quantize)
             for image, center, scale, angle in zip(images.unbind(0), geometry.center.unbind(0),
                                                    geometry.scale.unbind(0),
                                                    geometry.angle.unbind(0), strict=True)]
    return torch.stack(chips) / 255.0


__all__ = [
    "DEFAULT_PADDING",
    "TEMPLATE_POINTS",
    "ChipConfig",
    "ChipGeometry",
    "chip_geometry",
    "extract_chips",
    "pyramid_down",
    "template_points",
]
