"""Which pixels of a photo are the head and its hair: GrabCut (OpenCV) seeded by the fitted face.

The warp renderer moves the head as one and leaves the background still. An ellipse around the
face is a poor stand-in for a head: big or long hair reaches beyond it (and is stretched between
the moving head and the still background), while a busy background inside it is dragged along.
GrabCut (Rother et al. 2004) separates the two by colour models of foreground and background
with a graph cut. Seeds, from the fitted face (its projected vertices), on the photo reduced to
at most ``work_size`` pixels:

- sure head: the face itself (the hull of its vertices, slightly eroded);
- probably head: an ellipse around the face, raised for the hair;
- sure background: the top border, the side borders above the face's centre, and everything
  beyond a wider ellipse above the chin;
- probably background: the rest.

Below the chin the mask is not used as it is (the body is foreground too): the warp fades the
head motion out under the chin whatever the mask says.
"""

from __future__ import annotations

import numpy as np


def seeded_grabcut(image: np.ndarray, labels: np.ndarray, iterations: int) -> bool:
    """OpenCV's GrabCut on an ``(H, W, 3)`` uint8 RGB image from the seed ``labels`` (``(H, W)``
    uint8, ``cv2.GC_*``), which it refines in place; False where OpenCV refuses (e.g. a seed
    with no foreground or no background), the labels then as they were.

    GrabCut seeds its colour models by k-means on OpenCV's global random generator: seeded
    here, the same image gives the same mask in every run and every renderer."""
    import cv2  # OpenCV: a dependency; only a renderer's set-up needs it

    before = labels.copy()
    cv2.setRNGSeed(0)
    try:
        cv2.grabCut(np.ascontiguousarray(image[..., ::-1]), labels, None, np.zeros((1, 65)),
                    np.zeros((1, 65)), iterations, cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        labels[...] = before
        return False
    return True


def _ellipse(shape: tuple[int, int], centre: np.ndarray, axes: np.ndarray) -> np.ndarray:
    ys, xs = np.mgrid[:shape[0], :shape[1]]
    return ((xs - centre[0]) / axes[0]) ** 2 + ((ys - centre[1]) / axes[1]) ** 2 < 1


def seed_ellipse(face: np.ndarray, shape: tuple[int, int], scale: float = 1.0) -> np.ndarray:
    """``(H, W)`` bool: the "probably head" ellipse around face points ``(N, 2)`` (x, y),
    its axes multiplied by ``scale``."""
    low, high = face.min(0), face.max(0)
    size = np.maximum(high - low, 1.0)
    centre = (low + high) / 2 - np.array([0.0, 0.25 * size[1]])
    return _ellipse(shape, centre, scale * np.array([0.95, 1.15]) * size)


def head_mask(image: np.ndarray, face: np.ndarray, work_size: int = 256,
              iterations: int = 5) -> np.ndarray:
    """The head and hair of ``image``.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        face: ``(N, 2)`` the fitted face's projected points (x, y), pixels.
        work_size: the longer side GrabCut runs at.
        iterations: GrabCut iterations.

    Returns:
        ``(H, W)`` bool. Where GrabCut finds less than the face itself (a failure), the seed
        ellipse is returned instead.
    """
    import cv2  # OpenCV: a dependency; imported here, as only the warp's set-up needs it

    h, w = image.shape[:2]
    k = min(1.0, work_size / max(h, w))
    small = cv2.resize(image, (max(1, round(w * k)), max(1, round(h * k))),
                       interpolation=cv2.INTER_AREA)
    sh, sw = small.shape[:2]
    points = face * k
    low, high = points.min(0), points.max(0)
    size = np.maximum(high - low, 1.0)
    mask = np.full((sh, sw), cv2.GC_PR_BGD, np.uint8)
    mask[seed_ellipse(points, (sh, sw))] = cv2.GC_PR_FGD
    wide = seed_ellipse(points, (sh, sw), 1.6 / 0.95)
    ys = np.arange(sh)[:, None].repeat(sw, 1)
    mask[~wide & (ys < high[1])] = cv2.GC_BGD
    border = max(2, round(0.02 * max(sh, sw)))
    mask[:border] = cv2.GC_BGD
    above = ys[:, 0] < (low[1] + high[1]) / 2
    mask[above, :border] = cv2.GC_BGD
    mask[above, -border:] = cv2.GC_BGD
    hull = cv2.convexHull(points.astype(np.float32)).astype(np.int32)
    face_area = np.zeros((sh, sw), np.uint8)
    cv2.fillConvexPoly(face_area, hull, 1)
    erode = max(1, round(0.04 * float(size.mean())))
    sure = cv2.erode(face_area, np.ones((2 * erode + 1, 2 * erode + 1), np.uint8))
    mask[sure > 0] = cv2.GC_FGD
    if not seeded_grabcut(small, mask, iterations):
        return seed_ellipse(face, (h, w))
    head = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
    if head.sum() < face_area.sum():
        return seed_ellipse(face, (h, w))
    return cv2.resize(head.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
