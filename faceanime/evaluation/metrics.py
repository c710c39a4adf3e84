"""Frame-comparison metrics of the reenactment protocols: pure torch functions on batches.

Images are ``(B, 3, H, W)`` floats in ``[0, 1]``; every function returns one value per frame
``(B,)`` so that a protocol can stream a video in batches and average at the end (the report's
per-video value is the mean of the per-frame values).

- :func:`l1` — mean absolute error over pixels and channels;
- :func:`psnr` — ``10 log10(1 / MSE)`` dB; ``inf`` for identical frames (the report writes it as
  the string ``"inf"`` in JSON and ``∞`` in Markdown);
- :func:`ssim` — Wang et al. 2004: Gaussian window 11×11, σ = 1.5, ``K1 = 0.01``, ``K2 = 0.03``,
  dynamic range 1, computed **per RGB channel and averaged** over the valid (unpadded) window
  positions, as Wang's reference code and scikit-image (``channel_axis``, ``gaussian_weights``)
  do;
- :func:`akd` — mean Euclidean distance (pixels) between corresponding landmarks;
- :func:`id_share` — share of frames whose identity distance is below a threshold, frames
  without a face counting as failures.

What a viewer sees, from 68-point landmark tracks ``(T, 68, 2)`` (NaN rows: no face) and face
counts; each returns one value per video:

- :func:`double_face_rate` — % of output frames with more faces than the source photo;
- :func:`head_follow` — Pearson correlation of the face centre's displacement, x and y averaged;
- :func:`correlation` of :func:`eye_aspect_ratio` series (blink follow), of
  :func:`mouth_opening` series (mouth follow) and of :func:`mouth_width` series (mouth width
  follow: an "o" narrows the mouth, a smile widens it);
- :func:`closed_eye_ratio` — how far the output's eyes close when the driver's are most closed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03

# iBUG 68-point indices, 0-based: outer eye corners, and each eye's p1..p6 of Soukupová & Čech
# (p1, p4 the corners; p2, p3 the upper lid; p5, p6 the lower lid, p6 under p2).
OUTER_EYE_CORNERS = (36, 45)
EYES = ((36, 37, 38, 39, 40, 41), (42, 43, 44, 45, 46, 47))
MIN_HEAD_MOTION = 0.02
MIRROR_68 = (*range(16, -1, -1), *range(26, 16, -1), 27, 28, 29, 30, *range(35, 30, -1),
             45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40,
             *range(54, 47, -1), *range(59, 54, -1), *range(64, 59, -1), *range(67, 64, -1))
"""iBUG 68-point index (0-based) of each point's counterpart in the mirror image: the
points of a horizontally flipped face, read in this order, are the face's own."""
CLOSED_EYE_SHARE = 0.05


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.ndim != 4 or a.shape != b.shape:
        raise ValueError(f"expected two (B, C, H, W) batches of one shape, got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")


def l1(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error per frame: ``(B, C, H, W)`` × 2 in [0, 1] -> ``(B,)``."""
    _check_pair(output, target)
    return (output - target).abs().flatten(1).mean(1)


def mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error per frame: ``(B, C, H, W)`` × 2 -> ``(B,)``."""
    _check_pair(output, target)
    return (output - target).square().flatten(1).mean(1)


def psnr(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB for a peak of 1: ``(B, C, H, W)`` × 2 -> ``(B,)``;
    ``inf`` where the frames are identical."""
    # torch's reductions sum pairwise, so a float32 MSE is exact enough (~1e-7 relative).
    err = mse(output, target).double()
    # log10(1/0) is inf in IEEE arithmetic: identical frames come out as +inf, not an error.
    return (10 * torch.log10(1.0 / err)).to(output.dtype)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA,
                    dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The normalised 1-D Gaussian ``(size,)`` of SSIM's separable window."""
    x = torch.arange(size, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _blur(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' Gaussian filtering of every channel of ``(N, K, H, W)``."""
    k, n = window.numel(), x.shape[1]
    x = F.conv2d(x, window.view(1, 1, k, 1).expand(n, 1, k, 1), groups=n)
    return F.conv2d(x, window.view(1, 1, 1, k).expand(n, 1, 1, k), groups=n)


def ssim_map(output: torch.Tensor, target: torch.Tensor, window: int = SSIM_WINDOW,
             sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """SSIM at every valid window position, per channel: ``(B, C, H, W)`` × 2 ->
    ``(B, C, H - window + 1, W - window + 1)``.

    Computed in float32 (float64 convolutions are ~50× slower on a CPU): in [0, 1] the rounding
    error of the local moments (~1e-7) is far below ``C2 = 9e-4``, so SSIM is within ~1e-5 of a
    float64 computation (tested), and identical inputs still give exactly 1 (both sides of the
    ratio are then computed by the same operations)."""
    _check_pair(output, target)
    b, c, h, w = output.shape
    if min(h, w) < window:
        raise ValueError(f"SSIM needs frames of at least {window}×{window}, got {w}×{h}")
    g = gaussian_window(window, sigma, torch.float32).to(output.device)
    x = output.float().reshape(b * c, 1, h, w)
    y = target.float().reshape(b * c, 1, h, w)
    mx, my, exx, eyy, exy = _blur(torch.cat([x, y, x * x, y * y, x * y], 1), g).unbind(1)
    mxy, mxx, myy = mx * my, mx * mx, my * my
    c1, c2 = SSIM_K1**2, SSIM_K2**2  # dynamic range 1
    num = (2 * mxy + c1) * (2 * (exy - mxy) + c2)
    den = (mxx + myy + c1) * ((exx - mxx) + (eyy - myy) + c2)
    value = num / den
    return value.reshape(b, c, value.shape[-2], value.shape[-1])


def ssim(output: torch.Tensor, target: torch.Tensor, window: int = SSIM_WINDOW,
         sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Mean SSIM per frame (per-channel SSIM averaged over channels and positions):
    ``(B, C, H, W)`` × 2 -> ``(B,)``."""
    # The mean over ~10⁶ positions is taken in float64 so that it adds no rounding of its own.
    return ssim_map(output, target, window, sigma).flatten(1).double().mean(1).to(output.dtype)


def akd(points: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Average keypoint distance per frame: ``(B, N, 2)`` × 2 pixels -> ``(B,)`` pixels.

    A frame where either side has no face (NaN points) gives NaN: the protocol counts and
    excludes such frames."""
    if points.shape != reference.shape or points.ndim != 3 or points.shape[-1] != 2:
        raise ValueError(f"expected two (B, N, 2) point sets of one shape, got "
                         f"{tuple(points.shape)} and {tuple(reference.shape)}")
    return (points - reference).norm(dim=-1).mean(-1)


def id_share(distance: torch.Tensor, threshold: float = 0.6) -> float:
    """Share of frames (0–1) whose identity distance ``(T,)`` is below ``threshold``; NaN
    distances (no face found in the output) count as failures. NaN for ``T = 0``."""
    if distance.numel() == 0:
        return float("nan")
    ok = torch.nan_to_num(distance, nan=float("inf")) < threshold
    return float(ok.double().mean())


def nanmean(values: torch.Tensor) -> float:
    """Mean of the finite-or-infinite values, NaN entries skipped; NaN when none is left (an
    ``inf`` among them makes the mean ``inf``, as PSNR of identical frames should)."""
    keep = values[~torch.isnan(values)]
    return float(keep.double().mean()) if keep.numel() else float("nan")


# --- landmark tracks: what a viewer sees ------------------------------------------------------


def _check_track(points: torch.Tensor) -> None:
    if not isinstance(points, torch.Tensor) or points.ndim != 3 or points.shape[1:] != (68, 2):
        shape = tuple(points.shape) if isinstance(points, torch.Tensor) else type(points).__name__
        raise ValueError(f"expected (T, 68, 2) landmarks, got {shape}")


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two series ``(T,)`` or ``(T, K)``: each column is centred over
    time, then the centred arrays are compared as one vector (so every expression coefficient
    and the jaw contribute by how much they move). Rows with NaN are dropped; NaN when either
    side does not move (a static output has no expression to correlate) or T < 3."""
    a, b = a.double().reshape(a.shape[0], -1), b.double().reshape(b.shape[0], -1)
    ok = torch.isfinite(a).all(1) & torch.isfinite(b).all(1)
    a, b = a[ok], b[ok]
    if a.shape[0] < 3:
        return float("nan")
    a, b = (a - a.mean(0)).flatten(), (b - b.mean(0)).flatten()
    denom = float(a.norm() * b.norm())
    if denom < 1e-12:
        return float("nan")
    return float((a @ b) / denom)


def interocular(points: torch.Tensor) -> torch.Tensor:
    """Distance between the outer eye corners (iBUG 37 and 46, 1-based): ``(T, 68, 2)`` ->
    ``(T,)`` pixels, NaN without a face."""
    _check_track(points)
    return (points[:, OUTER_EYE_CORNERS[0]] - points[:, OUTER_EYE_CORNERS[1]]).norm(dim=-1)


def mouth_opening(points: torch.Tensor) -> torch.Tensor:
    """Inner-lip opening over the outer-eye-corner distance: ``(T, 68, 2)`` -> ``(T,)`` (NaN
    without a face). iBUG 0-based 61–63 are the upper inner lip, 65–67 the lower."""
    _check_track(points)
    gap = (points[:, [67, 66, 65]] - points[:, [61, 62, 63]]).norm(dim=-1).mean(-1)
    return gap / interocular(points)


def mouth_width(points: torch.Tensor) -> torch.Tensor:
    """Mouth corners' distance (iBUG 49 and 55, 1-based) over the outer-eye-corner distance:
    ``(T, 68, 2)`` -> ``(T,)`` (NaN without a face)."""
    _check_track(points)
    return (points[:, 48] - points[:, 54]).norm(dim=-1) / interocular(points)


def brow_position(points: torch.Tensor) -> torch.Tensor:
    """Where the brows are: ``(T, 68, 2)`` -> ``(T, 2)``, their height above the eyes' corners
    (the mean y of iBUG 37, 40, 43 and 46, 1-based, less that of the brows, 18-27: image y
    points down, so a raised brow is higher) and the gap between their inner ends (22 and 23:
    a frown narrows it), both over the outer-eye-corner distance (NaN without a face). The
    eyes' corners, not their lids: a blink does not move the brows."""
    _check_track(points)
    height = points[:, [36, 39, 42, 45], 1].mean(1) - points[:, 17:27, 1].mean(1)
    gap = (points[:, 21] - points[:, 22]).norm(dim=-1)
    return torch.stack([height, gap], 1) / interocular(points)[:, None]


def eye_aspect_ratio(points: torch.Tensor) -> torch.Tensor:
    """Eye aspect ratio (Soukupová & Čech 2016), mean of both eyes: ``(T, 68, 2)`` -> ``(T,)``.

    Per eye ``(|p2 - p6| + |p3 - p5|) / (2 |p1 - p4|)``; about 0.3 for an open eye, near 0 for
    a closed one. NaN without a face."""
    _check_track(points)
    values = []
    for p1, p2, p3, p4, p5, p6 in EYES:
        lids = ((points[:, p2] - points[:, p6]).norm(dim=-1)
                + (points[:, p3] - points[:, p5]).norm(dim=-1))
        values.append(lids / (2 * (points[:, p1] - points[:, p4]).norm(dim=-1)))
    return (values[0] + values[1]) / 2


def head_displacement(points: torch.Tensor) -> torch.Tensor:
    """The face centre's displacement from its first frame, in inter-ocular units:
    ``(T, 68, 2)`` -> ``(T, 2)`` ``(dx, dy)``.

    The centre is the mean of the 68 points; the reference is the first frame with a face, the
    unit the median inter-ocular distance (:func:`interocular`) over the frames with a face.
    NaN rows where there is no face (everything NaN when no frame has one)."""
    _check_track(points)
    centre = points.double().mean(1)
    face = torch.isfinite(points).flatten(1).all(1)
    if not bool(face.any()):
        return torch.full_like(centre, float("nan"))
    first = int(face.nonzero()[0, 0])
    unit = interocular(points.double())[face].median()
    return (centre - centre[first]) / unit


def head_follow(points: torch.Tensor, driver: torch.Tensor,
                min_motion: float = MIN_HEAD_MOTION) -> float:
    """How well the output's head follows the driver's: ``(T, 68, 2)`` × 2 -> a correlation.

    The Pearson correlation (:func:`correlation`) of the two :func:`head_displacement` series,
    separately for x and y, averaged over the axes on which the driver moves: an axis where the
    driver's displacement has a (population) standard deviation below ``min_motion``
    inter-ocular units is left out. NaN when both are left out, and when the output does not
    move at all on a kept axis (a static output follows nothing). Frames without a face on
    either side are dropped."""
    out, drv = head_displacement(points), head_displacement(driver)
    moving = drv[torch.isfinite(drv).all(1)]
    values = [correlation(out[:, axis], drv[:, axis]) for axis in (0, 1)
              if moving.shape[0] > 1 and float(moving[:, axis].std(unbiased=False)) >= min_motion]
    return sum(values) / len(values) if values else float("nan")


def closed_eye_ratio(output_ear: torch.Tensor, driver_ear: torch.Tensor,
                     share: float = CLOSED_EYE_SHARE) -> float:
    """How far the output's eyes close when the driver's do: ``(T,)`` × 2 EAR -> a ratio.

    On the driver's most-closed ``share`` of the frames (lowest EAR; ``ceil(share · T)``, at
    least one; ties in frame order), the output's mean EAR divided by the output's median EAR
    over all frames. 1 for an output that never blinks, well below 1 for one that blinks with
    the driver. Frames where either side has no face (NaN) are dropped; NaN when none is left."""
    out, drv = output_ear.double().flatten(), driver_ear.double().flatten()
    if out.shape != drv.shape:
        raise ValueError(f"expected two EAR series of one length, got {tuple(output_ear.shape)} "
                         f"and {tuple(driver_ear.shape)}")
    ok = torch.isfinite(out) & torch.isfinite(drv)
    out, drv = out[ok], drv[ok]
    if out.numel() == 0:
        return float("nan")
    count = max(1, math.ceil(share * out.numel()))
    closed = torch.argsort(drv, stable=True)[:count]
    return float(out[closed].mean() / out.quantile(0.5))


def double_face_rate(faces: torch.Tensor, source_faces: int) -> float:
    """% of output frames in which more faces were found than in the source photo: ``(T,)``
    face counts -> a percentage; NaN for ``T = 0``."""
    if faces.numel() == 0:
        return float("nan")
    return 100 * float((faces.double() > source_faces).double().mean())
