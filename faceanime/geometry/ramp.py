"""The ramps the rigs, the warp and the animation's ease share."""

from __future__ import annotations

import torch


def smoothstep(x: torch.Tensor) -> torch.Tensor:
    """0 below 0, 1 above 1, the cubic ``3x² - 2x³`` between (zero slope at both ends);
    elementwise, any shape."""
    x = x.clamp(0.0, 1.0)
    return x * x * (3 - 2 * x)


def piecewise_linear(knots: torch.Tensor, values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Piecewise linear through ``(knots, values)`` (``(K,)`` each, knots increasing) at ``x``
    (any shape), 0 outside the knots."""
    k = torch.searchsorted(knots, x.contiguous()).clamp(1, len(knots) - 1)
    x0, x1 = knots[k - 1], knots[k]
    t = ((x - x0) / (x1 - x0).clamp_min(1e-9)).clamp(0, 1)
    out = torch.lerp(values[k - 1], values[k], t)
    return torch.where((x < knots[0]) | (x > knots[-1]), torch.zeros_like(out), out)
