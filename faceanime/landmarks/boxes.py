"""Face boxes and coordinate mapping between image resolutions.

Coordinates are pixel coordinates ``(x, y)``, 0-based, with the **centre** of the top-left pixel
at ``(0, 0)`` (so the image spans ``[-0.5, W - 0.5]``). Boxes are ``(x0, y0, x1, y1)`` in the same
coordinates. Resampling an image by ``s`` therefore maps ``x`` to ``(x + 0.5) * s - 0.5``, which
keeps points on the same image content whatever the resolution they were found at.
"""

from __future__ import annotations

import numpy as np


def points_box(points: np.ndarray) -> np.ndarray:
    """Tight box around landmarks.

    Args:
        points: ``(..., K, 2)`` points (NaN rows propagate to NaN boxes).

    Returns:
        ``(..., 4)`` float32 boxes ``x0, y0, x1, y1``.
    """
    points = np.asarray(points, dtype=np.float32)
    return np.concatenate([points.min(axis=-2), points.max(axis=-2)], axis=-1)


def box_size(box: np.ndarray) -> np.ndarray:
    """Geometric-mean side ``sqrt(w * h)`` of ``(..., 4)`` boxes: a scale that is stable under
    aspect changes (an opening mouth stretches a landmark box vertically only)."""
    box = np.asarray(box, dtype=np.float64)
    wh = np.clip(box[..., 2:] - box[..., :2], 0.0, None)
    return np.sqrt(wh[..., 0] * wh[..., 1])


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of ``(..., 4)`` boxes (broadcasting); 0 where either is empty."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    lo = np.maximum(a[..., :2], b[..., :2])
    hi = np.minimum(a[..., 2:], b[..., 2:])
    inter = np.clip(hi - lo, 0.0, None).prod(axis=-1)
    area_a = np.clip(a[..., 2:] - a[..., :2], 0.0, None).prod(axis=-1)
    area_b = np.clip(b[..., 2:] - b[..., :2], 0.0, None).prod(axis=-1)
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def rescale_points(points: np.ndarray, scale_xy: tuple[float, float]) -> np.ndarray:
    """Map ``(..., 2)`` points found on an image resampled by ``scale_xy = (sx, sy)`` (new size /
    old size per axis) back to the original image (pixel-centre convention, see module doc)."""
    s = np.asarray(scale_xy, dtype=np.float64)
    return ((np.asarray(points, dtype=np.float64) + 0.5) / s - 0.5).astype(np.float32)


def rescale_boxes(boxes: np.ndarray, scale_xy: tuple[float, float]) -> np.ndarray:
    """:func:`rescale_points` for ``(..., 4)`` boxes."""
    boxes = np.asarray(boxes, dtype=np.float64)
    corners = rescale_points(boxes.reshape(*boxes.shape[:-1], 2, 2), scale_xy)
    return corners.reshape(boxes.shape).astype(np.float32)
