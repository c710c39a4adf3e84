"""Batched linear algebra the fitter's normal equations need."""

from __future__ import annotations

import torch


def solve_block_tridiagonal(diag: torch.Tensor, lower: torch.Tensor,
                            rhs: torch.Tensor) -> torch.Tensor:
    """Solve a symmetric block-tridiagonal system by cyclic reduction.

    The system couples each frame only to its neighbours (the temporal term of a video fit)::

        lower[t] x[t-1] + diag[t] x[t] + lower[t+1]^T x[t+1] = rhs[t]

    Cyclic reduction eliminates the odd-numbered frames in one batched step, leaving a system of
    the same form on the even ones, half as long; ``ceil(log2 T)`` levels solve it with about
    ``2 T`` block operations and no loop over frames (a block-Thomas sweep would take ``T``
    sequential steps). For the symmetric positive definite systems the fitter builds, every
    reduced system is a Schur complement and stays positive definite, so no pivoting is needed.

    Args:
        diag: ``(T, D, D)`` diagonal blocks.
        lower: ``(T, D, D)`` sub-diagonal blocks; ``lower[0]`` is ignored.
        rhs: ``(T, D, K)`` right-hand sides.

    Returns:
        ``(T, D, K)`` solution.
    """
    low = lower.clone()
    low[0] = 0
    up = torch.zeros_like(low)
    up[:-1] = low[1:].transpose(-1, -2)
    return _reduce(diag, low, up, rhs)


def _reduce(a: torch.Tensor, low: torch.Tensor, up: torch.Tensor,
            r: torch.Tensor) -> torch.Tensor:
    t, d, _ = a.shape
    if t <= 2:
        return _dense(a, low, up, r)
    n_even, n_odd = (t + 1) // 2, t // 2
    # Inverting the small blocks once and multiplying is several times faster on CPU than a
    # batched solve with the same right-hand sides.
    x = torch.linalg.inv(a[1::2]) @ torch.cat([low[1::2], up[1::2], r[1::2]], -1)
    zero = torch.zeros_like(x[:1])
    # Even frame 2k has odd neighbours k-1 (before) and k (after), where they exist; the
    # zero-padded ones meet a zero coupling block.
    before = torch.cat([zero, x], 0)[:n_even]
    after = torch.cat([x, zero], 0)[:n_even]
    le, ue = low[0::2], up[0::2]
    lb, ua = le @ before, ue @ after
    even = _reduce(a[0::2] - lb[..., d:2 * d] - ua[..., :d], -lb[..., :d], -ua[..., d:2 * d],
                   r[0::2] - lb[..., 2 * d:] - ua[..., 2 * d:])
    # Odd frame 2k+1: its neighbours are even frames k and k+1.
    nxt = torch.cat([even, torch.zeros_like(even[:1])], 0)[1:n_odd + 1]
    odd = x[..., 2 * d:] - x[..., :d] @ even[:n_odd] - x[..., d:2 * d] @ nxt
    out = torch.empty(t, d, r.shape[-1], dtype=r.dtype, device=r.device)
    out[0::2], out[1::2] = even, odd
    return out


def _dense(a: torch.Tensor, low: torch.Tensor, up: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """One or two frames: solve the assembled system directly."""
    t, d, _ = a.shape
    if t == 1:
        return torch.linalg.solve(a, r)
    full = torch.cat([torch.cat([a[0], up[0]], 1), torch.cat([low[1], a[1]], 1)], 0)
    return torch.linalg.solve(full, r.reshape(2 * d, -1)).view(2, d, -1)


def smooth_fit(precision: torch.Tensor, rhs: torch.Tensor, known: torch.Tensor,
               temporal_weight: float) -> torch.Tensor:
    """Per-frame scalars fitted by least squares and tied between consecutive frames (the
    eyelids' closures, the lips' pucker).

    Minimises ``sum_f p_f (c_f - rhs_f / p_f)^2 + w sum_f (c_f - c_(f-1))^2`` for each column,
    with ``w`` the temporal weight times the mean precision of the known frames (relative to
    how precisely one frame's landmarks determine the value), exactly, as one tridiagonal
    system per column.

    Args:
        precision: ``(T, K)`` each frame's precision ``p_f`` (0 where nothing was observed).
        rhs: ``(T, K)`` each frame's ``p_f`` times its own least-squares value.
        known: ``(T, K)`` bool, where the frame was observed.
        temporal_weight: 0 (or one frame): every frame alone.

    Returns:
        ``(T, K)``.
    """
    t, k = precision.shape
    if t == 1 or temporal_weight <= 0:
        return rhs / precision.clamp_min(1e-12)
    w = temporal_weight * precision[known].mean() if bool(known.any()) else 1.0
    dtype, device = precision.dtype, precision.device
    neighbours = torch.zeros(t, k, dtype=dtype, device=device)
    neighbours[1:] += 1
    neighbours[:-1] += 1
    diag = precision + w * neighbours + 1e-9
    lower = torch.full((t, k), -float(w), dtype=dtype, device=device)
    return torch.stack([
        solve_block_tridiagonal(diag[:, e, None, None], lower[:, e, None, None],
                                rhs[:, e, None, None])[:, 0, 0] for e in range(k)], 1)
