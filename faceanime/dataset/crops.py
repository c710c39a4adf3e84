"""Aligned face crops of a whole video: one similarity per frame, steady over time.

:func:`~faceanime.render.paste.crop_affine` places each frame's eyes and mouth at the FFHQ
positions. Taken frame by frame, the crop would shake with the landmarks' residual noise (a
fraction of a pixel per frame, but the whole face moves with it), so :func:`smooth_affines`
averages the transform over a short Gaussian time window. It averages *parameters* (where the
crop's centre lies in the frame, log scale, angle), not matrix entries: the translation of a
matrix depends on its rotation and scale, and averaging it directly would move the centre when the
head turns. The window is centred (the whole video is known), so smoothing adds no lag.

Affines follow :mod:`faceanime.render.paste`: ``(T, 2, 3)`` maps frame pixels to crop pixels.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from faceanime.errors import InputError
from faceanime.io import iter_video_frames
from faceanime.render.paste import crop_affine, warp_to_crop

# Eye centres and mouth corners: the points crop_affine reads.
_CROP_POINTS = [*range(36, 48), 48, 54]


def similarity_parameters(affine: torch.Tensor, crop_size: int) -> torch.Tensor:
    """Split similarity affines into steady-to-average parameters.

    Args:
        affine: ``(T, 2, 3)`` similarities ``[[a, -b, tx], [b, a, ty]]``, frame -> crop pixels.
        crop_size: side of the crop in pixels.

    Returns:
        ``(T, 4)``: the frame point shown at the crop's centre ``(x, y)``, ``log`` of the scale
        (crop pixels per frame pixel) and the angle in radians, unwrapped over time.
    """
    linear, shift = affine[:, :, :2], affine[:, :, 2]
    centre = torch.full_like(shift, (crop_size - 1) / 2)
    frame_point = torch.linalg.solve(linear, centre - shift)
    a, b = linear[:, 0, 0], linear[:, 1, 0]
    angle = torch.atan2(b, a)
    # Unwrap: a head rolling past ±180° must not average to 0 across the jump.
    step = torch.diff(angle, prepend=angle[:1])
    step = step - 2 * math.pi * torch.round(step / (2 * math.pi))
    angle = angle[:1] + torch.cumsum(step, 0)
    return torch.stack([frame_point[:, 0], frame_point[:, 1], torch.log(torch.hypot(a, b)),
                        angle], 1)


def similarity_from_parameters(params: torch.Tensor, crop_size: int) -> torch.Tensor:
    """Inverse of :func:`similarity_parameters`: ``(T, 4)`` -> ``(T, 2, 3)`` affines."""
    scale, angle = params[:, 2].exp(), params[:, 3]
    a, b = scale * torch.cos(angle), scale * torch.sin(angle)
    linear = torch.stack([torch.stack([a, -b], -1), torch.stack([b, a], -1)], 1)
    centre = torch.full_like(params[:, :2], (crop_size - 1) / 2)
    shift = centre - (linear @ params[:, :2, None]).squeeze(-1)
    return torch.cat([linear, shift[:, :, None]], 2)


def _fill_invalid(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``(T, D)`` values with invalid frames linearly interpolated from the nearest valid ones
    (copied from the first or last valid frame at the ends)."""
    if bool(valid.all()):
        return values
    t = values.shape[0]
    idx = torch.arange(t, device=values.device)
    known = idx[valid]
    if len(known) == 1:
        return values[known].expand(t, -1).clone()
    right = torch.searchsorted(known, idx).clamp(1, len(known) - 1)
    prev, nxt = known[right - 1], known[right]
    weight = ((idx - prev).to(values.dtype) / (nxt - prev).to(values.dtype)).clamp(0, 1)
    return values[prev] + weight[:, None] * (values[nxt] - values[prev])


def _gaussian_smooth(values: torch.Tensor, sigma: float) -> torch.Tensor:
    """Centred Gaussian average over time of ``(T, D)`` values.

    The ends are padded by point reflection (``2 x_0 - x_k``), which continues a linear trend:
    a face drifting steadily at the first or last frame is not pulled back towards the middle.
    """
    t = values.shape[0]
    radius = min(math.ceil(3 * sigma), t - 1)
    if sigma <= 0 or radius < 1:
        return values
    offsets = torch.arange(-radius, radius + 1, dtype=values.dtype, device=values.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    head = 2 * values[:1] - values[1:radius + 1].flip(0)
    tail = 2 * values[-1:] - values[-radius - 1:-1].flip(0)
    padded = torch.cat([head, values, tail], 0).T[:, None]  # (D, 1, T + 2 radius)
    return F.conv1d(padded, kernel.view(1, 1, -1))[:, 0].T


def smooth_affines(affine: torch.Tensor, valid: torch.Tensor, crop_size: int,
                   sigma: float) -> torch.Tensor:
    """Steady crop transforms: invalid frames interpolated, then a Gaussian time average.

    Args:
        affine: ``(T, 2, 3)`` per-frame similarities (values in invalid frames are ignored).
        valid: ``(T,)`` bool, at least one True.
        crop_size: side of the crop in pixels.
        sigma: standard deviation of the time window in frames; 0 only fills invalid frames.

    Returns:
        ``(T, 2, 3)`` similarities, finite in every frame.
    """
    if not bool(valid.any()):
        raise InputError("no valid frame to place a crop in")
    params = torch.zeros(affine.shape[0], 4, dtype=affine.dtype, device=affine.device)
    # Unwrap the angle over valid frames only: an invalid frame holds no angle to step through.
    params[valid] = similarity_parameters(affine[valid], crop_size)
    params = _gaussian_smooth(_fill_invalid(params, valid), sigma)
    return similarity_from_parameters(params, crop_size)


def crop_track(landmarks: torch.Tensor, valid: torch.Tensor, crop_size: int, scale: float = 1.0,
               sigma: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The crop transform of every frame of a video from its landmarks.

    Args:
        landmarks: ``(T, 68, 2)`` iBUG points in frame pixels, NaN where no face was found.
        valid: ``(T,)`` bool, frames with a face.
        crop_size: side of the crop in pixels.
        scale: crop extent relative to the FFHQ layout (see
            :func:`~faceanime.render.paste.crop_affine`).
        sigma: time smoothing, see :func:`smooth_affines`.

    Returns:
        ``(T, 2, 3)`` frame -> crop affines (float64) and the ``(T,)`` bool frames whose own
        landmarks placed the crop (the others are interpolated).
    """
    points = landmarks.to(torch.float64)
    usable = valid.bool() & torch.isfinite(points[:, _CROP_POINTS]).all(-1).all(-1)
    if not bool(usable.any()):
        raise InputError("no frame has both eyes and the mouth corners to place a crop")
    affine = torch.zeros(points.shape[0], 2, 3, dtype=torch.float64, device=points.device)
    affine[usable] = crop_affine(points[usable], crop_size, scale)
    return smooth_affines(affine, usable, crop_size, sigma), usable


def iter_crops(video: str | os.PathLike, affine: torch.Tensor, crop_size: int,
               batch: int = 16, device: torch.device | str = "cpu") -> Iterator[np.ndarray]:
    """Decode ``video`` and yield its aligned crops, ``batch`` frames at a time in memory.

    Args:
        video: the video file.
        affine: ``(T, 2, 3)`` frame -> crop affines, one per frame of the video.
        crop_size: side of the crops.
        batch: frames warped together.
        device: where to warp.

    Yields:
        ``(crop_size, crop_size, 3)`` uint8 RGB crops, exactly ``T`` of them.

    Raises:
        MediaError: the video cannot be decoded.
        InputError: the video holds a different number of frames than ``affine``.
    """
    total = affine.shape[0]
    affine = affine.to(device=device, dtype=torch.float32)
    frames: list[np.ndarray] = []
    done = 0

    def flush() -> Iterator[np.ndarray]:
        pixels = torch.from_numpy(np.stack(frames)).to(device)
        pixels = pixels.permute(0, 3, 1, 2).to(torch.float32) / 255.0
        crops = warp_to_crop(pixels, affine[done:done + len(frames)], crop_size)
        crops = (crops * 255.0).round().clamp(0, 255).to(torch.uint8)
        yield from crops.permute(0, 2, 3, 1).cpu().numpy()

    for frame in iter_video_frames(video):
        if done + len(frames) >= total:
            raise InputError(f"{video}: more than the {total} frames it had when tracked")
        frames.append(frame)
        if len(frames) == batch:
            yield from flush()
            done += len(frames)
            frames = []
    if frames:
        yield from flush()
        done += len(frames)
    if done != total:
        raise InputError(f"{video}: decoded {done} frames, {total} when tracked")
