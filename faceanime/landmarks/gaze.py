"""Where each eye looks: the iris's position inside the eye opening, from a frame and its 68
landmarks.

The Surrey Face Model has no eyeballs and dlib's landmarks no iris, yet a driver who glances
down or aside is a large part of what a viewer reads: transferred without gaze, a photo's lids
close over a stare (the lowered-eye frames carried most of the identity distance between the
warp's output and the true frame). The iris is the darkest round blob between the six eye
landmarks; its centre is measured in the eye's own frame, so it is independent of where the
head is and how large it is:

- ``u``: along the corner-to-corner axis (iBUG 37→40 and 43→46, image left to right), from the
  corners' midpoint, in eye widths (corner distance);
- ``v``: perpendicular to it, positive downwards in the image, in eye widths.

Measured values are NaN where an eye is too closed or too small to show its iris.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from faceanime.geometry.ramp import smoothstep

# iBUG indices of each eye's six points, from the image-left corner round the upper lid.
EYES = ((36, 37, 38, 39, 40, 41), (42, 43, 44, 45, 46, 47))
# The largest gaze change a render applies, (u, v) in eye widths: beyond it the photo has
# no iris to show (it would slide under a lid or into a corner).
MAX_CHANGE = (0.22, 0.1)
BLINK_FRAMES = 8
"""The longest a blink's eyes stay shut, in frames (at 25-30 frames/s; blinks last 0.1-0.3 s):
see :func:`shut_frames`."""


@dataclass(frozen=True)
class GazeConfig:
    """Settings of the iris measurement."""

    samples: int = 40
    """Samples across the eye width (the eye is resampled to its own frame at this rate)."""
    iris: float = 0.36
    """The iris's diameter in eye widths (adult irises: about 11-12 mm, eye widths 28-30 mm)."""
    min_opening: float = 0.1
    """Eyes whose opening (:func:`eye_openings`: the landmarks' hexagon's area over the eye
    width squared, about 0.2 for an open eye) is below this show too little iris to measure:
    NaN (a blink, a squint)."""
    min_width: float = 8.0
    """Eyes narrower than this many pixels are too small to measure: NaN."""


def eye_frames(landmarks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each eye's frame in the image.

    Args:
        landmarks: ``(T, 68, 2)`` pixels.

    Returns:
        centre ``(T, 2, 2)`` (the corners' midpoint), axes ``(T, 2, 2, 2)`` (per eye, the unit
        ``u`` then ``v`` direction; ``v`` is ``u`` turned a quarter towards the image's down)
        and width ``(T, 2)`` (corner distance, pixels).
    """
    index = torch.tensor([[e[0], e[3]] for e in EYES], device=landmarks.device)
    corners = landmarks[:, index]                                            # (T, 2, 2, 2)
    centre = corners.mean(2)
    span = corners[:, :, 1] - corners[:, :, 0]
    width = span.norm(dim=-1)
    u = span / width.clamp_min(1e-9)[..., None]
    v = torch.stack([-u[..., 1], u[..., 0]], -1)
    return centre, torch.stack([u, v], 2), width


def to_eye(points: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
    """Image points ``(T, 2, P, 2)`` (per eye) in each eye's ``(u, v)`` frame, in eye widths."""
    centre, axes, width = eye_frames(landmarks)
    rel = points - centre[:, :, None]
    return torch.einsum("tepc,tekc->tepk", rel, axes) / width[:, :, None, None].clamp_min(1e-9)


def from_eye(local: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_eye`: ``(T, 2, P, 2)`` eye-frame points back to image pixels."""
    centre, axes, width = eye_frames(landmarks)
    return centre[:, :, None] + torch.einsum("tepk,tekc->tepc", local * width[:, :, None, None],
                                             axes)


def eye_samples(images: torch.Tensor, landmarks: torch.Tensor, samples: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each eye resampled to its own frame (u over [-0.6, 0.6], the corners at ±0.5; v over
    [-0.3, 0.3]).

    Args:
        images: ``(T, 3, H, W)`` RGB in [0, 1] (or ``(T, 1, H, W)`` grey).
        landmarks: ``(T, 68, 2)`` pixels (NaN where not detected; sampled at 0 there).
        samples: samples across the eye's width.

    Returns:
        ``lum (T, 2, V, U)`` luma, ``inside (T, 2, V, U)`` 1 inside the landmarks' hexagon,
        ``local (V, U, 2)`` the samples' (u, v), and the landmarks with NaN as 0.
    """
    t, channels, h, w = images.shape
    dtype, device = images.dtype, images.device
    landmarks = landmarks.to(device, dtype)
    n = samples
    us = torch.linspace(-0.6, 0.6, round(1.2 * n) + 1, dtype=dtype, device=device)
    vs = torch.linspace(-0.3, 0.3, round(0.6 * n) + 1, dtype=dtype, device=device)
    local = torch.stack(torch.meshgrid(us, vs, indexing="xy"), -1)            # (V, U, 2)
    grid_v, grid_u = local.shape[:2]
    filled = torch.nan_to_num(landmarks, nan=0.0)
    points = from_eye(local.reshape(1, 1, -1, 2).expand(t, 2, -1, -1), filled)  # (T, 2, VU, 2)
    norm = points / torch.tensor([w - 1, h - 1], dtype=dtype, device=device) * 2 - 1
    # Only the eyes' samples are converted to luma, not the whole frames.
    sampled = F.grid_sample(images, norm.reshape(t, 2 * grid_v, grid_u, 2), mode="bilinear",
                            padding_mode="border", align_corners=True)    # (T, C, 2V, U)
    if channels == 3:
        sampled = (sampled * torch.tensor([0.299, 0.587, 0.114], dtype=dtype,
                                          device=device)[:, None, None]).sum(1, keepdim=True)
    lum = sampled.reshape(t, 2, grid_v, grid_u)
    hexagon = to_eye(filled[:, list(EYES[0] + EYES[1])].reshape(t, 2, 6, 2), filled)
    depth = _convex_depth(local.reshape(1, 1, -1, 2), hexagon[:, :, None])   # (T, 2, VU)
    inside = (depth > 0).reshape(t, 2, grid_v, grid_u).to(dtype)
    return lum, inside, local, filled


def _extremes(lum: torch.Tensor, inside: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The darkest and brightest luma ``(T, 2)`` inside each eye's hexagon."""
    big = torch.finfo(lum.dtype).max
    flat, mask = lum.flatten(2), inside.flatten(2) > 0
    low = torch.where(mask, flat, torch.full_like(flat, big)).amin(2)
    high = torch.where(mask, flat, torch.full_like(flat, -big)).amax(2)
    return low, high


def measure_gaze(images: torch.Tensor, landmarks: torch.Tensor,
                 config: GazeConfig | None = None) -> torch.Tensor:
    """The iris centre of each eye in each frame.

    The eye is resampled to its own frame; inside the landmarks' hexagon each sample's darkness
    is how far it lies below the midpoint of the opening's dark and bright ends (iris and
    pupil against the white). Lashes are dark too, but thin and spread along the lid, so the
    iris is found as the column of the opening that holds most darkness over an iris's width
    (a box filter), and its centre as the darkness-weighted centroid of that band.

    Args:
        images: ``(T, 3, H, W)`` RGB in [0, 1] (or ``(T, 1, H, W)`` grey).
        landmarks: ``(T, 68, 2)`` pixels (NaN where not detected).
        config: settings.

    Returns:
        ``(T, 2, 2)`` per eye (iBUG's 37-42 eye first) the iris centre ``(u, v)`` in eye widths
        (module docstring), NaN where not measurable.
    """
    c = config or GazeConfig()
    t = images.shape[0]
    dtype, device = images.dtype, images.device
    landmarks = landmarks.to(device, dtype)
    n = c.samples
    lum, inside, local, filled = eye_samples(images, landmarks, n)
    grid_u = local.shape[1]
    count = inside.sum((2, 3)).clamp_min(1)
    low, high = _extremes(lum, inside)
    mean = (lum * inside).sum((2, 3)) / count
    threshold = ((low + torch.maximum(mean, (low + high) / 2)) / 2)[..., None, None]
    dark = ((threshold - lum) / (threshold - low[..., None, None]).clamp_min(1e-3)).clamp(0, 1)
    dark = dark * inside                                                      # (T, 2, V, U)

    # The iris's column: the most darkness over an iris's width.
    columns = dark.sum(2)                                                     # (T, 2, U)
    k = max(1, round(c.iris * n)) | 1
    box = F.avg_pool1d(columns.reshape(t * 2, 1, grid_u), k, stride=1, padding=k // 2,
                       count_include_pad=True).reshape(t, 2, grid_u)
    best = box.argmax(-1)                                                     # (T, 2)
    near = ((torch.arange(grid_u, device=device) - best[..., None]).abs()
            <= k // 2).to(dtype)                                              # (T, 2, U)
    weight = dark * near[:, :, None]
    total = weight.sum((2, 3))
    u = (weight * local[..., 0]).sum((2, 3)) / total.clamp_min(1e-9)
    v = (weight * local[..., 1]).sum((2, 3)) / total.clamp_min(1e-9)
    gaze = torch.stack([u, v], -1)                                            # (T, 2, 2)

    _, _, width = eye_frames(filled)
    ok = ((eye_openings(filled) >= c.min_opening) & (width >= c.min_width) & (total > 0)
          & torch.isfinite(landmarks[:, list(EYES[0] + EYES[1])]).all(-1)
          .reshape(t, 2, 6).all(-1))
    return torch.where(ok[..., None], gaze, torch.full_like(gaze, float("nan")))


def eye_contrast(images: torch.Tensor, landmarks: torch.Tensor,
                 config: GazeConfig | None = None) -> torch.Tensor:
    """How much eye shows: the brightest minus the darkest luma inside each eye's landmark
    hexagon, ``(T, 2)`` (images and landmarks as :func:`measure_gaze`'s; NaN where an eye's
    landmarks are missing or it is narrower than ``config.min_width``).

    An open eye holds the white and the iris (d18: 0.41-0.59, d6: 0.57-0.81); a shut one only
    lid and lashes, however far apart dlib leaves its lid points (d18's shut eyes, eye aspect
    ratio 0.12-0.18 where dlib's shut reading is about 0.1: 0.10-0.25; d6's: 0.13-0.23)."""
    c = config or GazeConfig()
    lum, inside, _, filled = eye_samples(images, landmarks, c.samples)
    low, high = _extremes(lum, inside)
    _, _, width = eye_frames(filled)
    t = images.shape[0]
    ok = ((width >= c.min_width) & (inside.sum((2, 3)) > 0)
          & torch.isfinite(landmarks[:, list(EYES[0] + EYES[1])]).all(-1)
          .reshape(t, 2, 6).all(-1).to(lum.device))
    return torch.where(ok, high - low, torch.full_like(high, float("nan")))


def shut_frames(contrast: torch.Tensor, share: float = 0.5,
                longest: int = BLINK_FRAMES) -> torch.Tensor:
    """``(T,)`` True where a track's eyes are shut in a blink, from their
    :func:`eye_contrast` ``(T, 2)`` (consecutive frames, or evenly spaced samples).

    Shut: the eyes' mean contrast is below ``share`` of its median over the track, in a run of
    at most ``longest`` rows: a blink lasts a few frames; longer runs are a lowered look or a
    squint held (d3 looks down for 20-50 frames at a time, its contrast as low as a shut eye's),
    which the landmarks follow. NaN rows are never shut."""
    mean = contrast.mean(-1)
    typical = mean.nanmedian()
    low = (mean < share * typical) & torch.isfinite(mean)
    if not bool(low.any()):
        return low
    # Run lengths: each row's run of consecutive low rows.
    t = low.shape[0]
    change = torch.ones(t, dtype=torch.bool, device=low.device)
    change[1:] = low[1:] != low[:-1]
    run = torch.cumsum(change.long(), 0)
    length = torch.bincount(run)[run]
    return low & (length <= longest)


def _eyes_box(frames: torch.Tensor, landmarks: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The box around the eyes of a batch of ``(T, H, W, 3)`` uint8 frames (grown by an eye's
    width) as floats ``(T, 3, h, w)``, and the landmarks shifted into it; None without eyes."""
    eyes = landmarks[:, list(EYES[0] + EYES[1])].reshape(-1, 2)
    eyes = eyes[torch.isfinite(eyes).all(-1)]
    if eyes.numel() == 0:
        return None
    h, w = frames.shape[1:3]
    low, high = eyes.amin(0), eyes.amax(0)
    pad = float((high - low)[0]) / 2 + 2
    x0, y0 = (max(int(v - pad), 0) for v in low.tolist())
    x1, y1 = min(int(high[0] + pad) + 1, w), min(int(high[1] + pad) + 1, h)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    # Converted in the frames' own (channels-last) order, then viewed channels-first: a
    # quarter of the time of converting the permuted view, the same values and strides.
    crop = frames[:, y0:y1, x0:x1].to(torch.float32, copy=True).div_(255).permute(0, 3, 1, 2)
    return crop, landmarks.float() - torch.tensor([x0, y0], dtype=torch.float32)


def contrast_frames(frames: torch.Tensor, landmarks: torch.Tensor,
                    config: GazeConfig | None = None) -> torch.Tensor:
    """:func:`eye_contrast` ``(T, 2)`` of ``(T, H, W, 3)`` uint8 frames, on the eyes' box alone
    (as :func:`measure_frames`)."""
    boxed = _eyes_box(frames, landmarks)
    if boxed is None:
        return torch.full((frames.shape[0], 2), float("nan"))
    return eye_contrast(*boxed, config)


def measure_frames(frames: torch.Tensor, landmarks: torch.Tensor,
                   config: GazeConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`measure_gaze` ``(T, 2, 2)`` and :func:`eye_contrast` ``(T, 2)`` of
    ``(T, H, W, 3)`` uint8 frames (as a video decodes them): only the box around the eyes of
    the whole batch (grown by an eye's width) is converted to floats, so a batch of 1080p
    frames costs a few MB, not 800."""
    t = frames.shape[0]
    boxed = _eyes_box(frames, landmarks)
    if boxed is None:
        return torch.full((t, 2, 2), float("nan")), torch.full((t, 2), float("nan"))
    crop, shifted = boxed
    return measure_gaze(crop, shifted, config), eye_contrast(crop, shifted, config)


def eye_openings(landmarks: torch.Tensor) -> torch.Tensor:
    """``(T, 2)`` each eye's opening: the area of its six landmarks' hexagon over its width
    squared (about 0.2 open, 0 shut; NaN where a point is missing) from ``(T, 68, 2)``."""
    hexagon = landmarks[:, list(EYES[0] + EYES[1])].reshape(-1, 2, 6, 2)
    x, y = hexagon[..., 0], hexagon[..., 1]
    area = 0.5 * (x * y.roll(-1, -1) - x.roll(-1, -1) * y).sum(-1).abs()
    _, _, width = eye_frames(landmarks)
    return area / width.clamp_min(1e-9) ** 2


def open_state(landmarks: torch.Tensor) -> torch.Tensor:
    """``(2,)`` each eye's opening when open, over a track ``(T, 68, 2)``: its 90th percentile
    (a driver who looks down most of the time, as d3 does, has a lowered median)."""
    return eye_openings(landmarks).nanquantile(0.9, dim=0)


def narrowed(landmarks: torch.Tensor, share: float = 0.6,
             opened: torch.Tensor | None = None) -> torch.Tensor:
    """``(T, 2)`` True where an eye of a track ``(T, 68, 2)`` is open less than ``share`` of
    its open state (``opened``, :func:`open_state`; of this track when None): lowered lids, a
    squint, a blink. What shows of the eye there is mostly lashes, and its "iris" wandered (d3
    looking down read as looking 0.24 eye widths aside): such frames are better filled from
    their neighbours."""
    opened = open_state(landmarks) if opened is None else opened
    return eye_openings(landmarks) < share * opened


def fill_gaze(gaze: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """A measured gaze track ``(T, 2, 2)`` with its NaN frames filled from the nearest measured
    ones (linearly between them, held at the ends; zeros where none is measured) and smoothed
    over time by a Gaussian of ``sigma`` frames (the measurement's jitter, about a sample, is
    larger than a glance's frame-to-frame change)."""
    t = gaze.shape[0]
    flat = gaze.reshape(t, -1).T                                              # (4, T)
    known = torch.isfinite(flat)
    frames = torch.arange(t, dtype=gaze.dtype, device=gaze.device)
    out = torch.zeros_like(flat)
    for i in range(flat.shape[0]):
        k = known[i]
        if bool(k.any()):
            x, y = frames[k], flat[i, k]
            right = torch.searchsorted(x, frames).clamp(1, max(len(x) - 1, 1))
            left = right - 1
            if len(x) == 1:
                out[i] = y[0]
                continue
            span = (x[right] - x[left]).clamp_min(1e-9)
            share = ((frames - x[left]) / span).clamp(0, 1)
            out[i] = torch.lerp(y[left], y[right], share)
    if sigma > 0 and t > 1:
        radius = min(int(3 * sigma), t - 1)
        kx = torch.arange(-radius, radius + 1, dtype=gaze.dtype, device=gaze.device)
        kernel = torch.exp(-0.5 * (kx / sigma) ** 2)
        kernel = kernel / kernel.sum()
        padded = F.pad(out[:, None], (radius, radius), mode="replicate")
        out = F.conv1d(padded, kernel.reshape(1, 1, -1))[:, 0]
    return out.T.reshape(gaze.shape)


def eye_slide(points: torch.Tensor, hexagon: torch.Tensor, iris: torch.Tensor,
              change: torch.Tensor) -> torch.Tensor:
    """How far to fetch an eye's content from, for its iris to move by ``change``.

    In the eye's frame (from its landmarks' hexagon) the iris (an iris's radius about its new
    centre) moves as one; the white between it and each corner stretches or shrinks linearly
    (to half at most: squeezed further, it showed as a bright sliver at the corner), so the
    corners stay. The whole opening slides along the lids (the hexagon grown by a fifth of the
    eye's height, as the white shows beyond it, fading over as much); a slide across them fades
    over at least its own length, so no lash line is drawn twice. ``change`` is capped at
    :data:`MAX_CHANGE`.

    Args:
        points: ``(..., 2)`` pixels near the eye (where the content now lies).
        hexagon: ``(..., 6, 2)`` the eye's six landmarks (iBUG order) at those points' eye.
        iris: ``(...,)`` where its iris is now, ``u`` in eye widths.
        change: ``(..., 2)`` the gaze change ``(u, v)`` in eye widths (NaN: none).

    Returns:
        ``(..., 2)`` the displacement ``d``: a point ``p`` shows what lay at ``p - d``.
    """
    corners = hexagon[..., 3, :] - hexagon[..., 0, :]
    width = corners.norm(dim=-1).clamp_min(1e-9)                              # (...,)
    along_axis = corners / width[..., None]
    across_axis = torch.stack([-along_axis[..., 1], along_axis[..., 0]], -1)
    centre = (hexagon[..., 0, :] + hexagon[..., 3, :]) / 2
    rel = points - centre
    u = (rel * along_axis).sum(-1) / width
    height = ((hexagon - centre[..., None, :]) * across_axis[..., None, :]).sum(-1)
    grow = (height.amax(-1) - height.amin(-1)) / 5 + 0.5                      # (...,) pixels
    limit = torch.tensor(MAX_CHANGE, dtype=points.dtype, device=points.device)
    change = torch.nan_to_num(change)
    change = torch.maximum(torch.minimum(change, limit), -limit)
    r = GazeConfig.iris / 2
    edge = 0.5 - r - 0.05
    now = iris.clamp(-edge, edge)
    then = now + torch.maximum(torch.minimum(change[..., 0], (0.5 - r - now) / 2),
                               -(now + 0.5 - r) / 2)
    # 1 over the iris, down to 0 at either corner.
    slide = torch.minimum((u + 0.5) / (then - r + 0.5), (0.5 - u) / (0.5 - then - r)).clamp(0, 1)
    along = width * (then - now)
    across = width * change[..., 1]
    depth = _convex_depth(points, hexagon) + grow
    inside = smoothstep(depth / grow)
    across = across * smoothstep(depth / (2 * grow + across.abs()))
    return slide[..., None] * ((along * inside)[..., None] * along_axis
                               + across[..., None] * across_axis)


def _convex_depth(points: torch.Tensor, polygon: torch.Tensor) -> torch.Tensor:
    """``(...,)`` signed distance of ``points (..., 2)`` into the convex ``polygon (..., K, 2)``
    (either winding): to the nearest edge's line, positive inside."""
    edge = polygon.roll(-1, -2) - polygon
    rel = points[..., None, :] - polygon
    cross = edge[..., 0] * rel[..., 1] - edge[..., 1] * rel[..., 0]
    x, y = polygon[..., 0], polygon[..., 1]
    area = (x * y.roll(-1, -1) - x.roll(-1, -1) * y).sum(-1)
    sign = torch.where(area >= 0, 1.0, -1.0).to(points.dtype)
    return (sign[..., None] * cross / edge.norm(dim=-1).clamp_min(1e-9)).amin(-1)
