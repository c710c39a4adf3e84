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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


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
