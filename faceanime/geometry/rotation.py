"""Rotations as 3×3 matrices, updated through axis-angle (so(3)) increments so that no
parametrisation singularity (gimbal lock) is ever met: the fitter optimises a small rotation
vector ``w`` around the current matrix, ``R <- exp([w]x) R``, and re-anchors every step.

Euler angles appear only for reporting and for making test poses: ``yaw`` turns the face towards
its left (about +y), ``pitch`` tilts it down (about +x), ``roll`` about +z; ``R = Rz(roll) @
Ry(yaw) @ Rx(pitch)``.
"""

from __future__ import annotations

import torch


def _skew(w: torch.Tensor) -> torch.Tensor:
    """``(..., 3) -> (..., 3, 3)`` cross-product matrices."""
    zero = torch.zeros_like(w[..., 0])
    x, y, z = w.unbind(-1)
    return torch.stack([
        torch.stack([zero, -z, y], -1),
        torch.stack([z, zero, -x], -1),
        torch.stack([-y, x, zero], -1),
    ], -2)


def so3_exp(w: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula. ``(..., 3)`` rotation vectors (radians) -> ``(..., 3, 3)`` matrices.

    Uses Taylor expansions below 1e-4 rad so that gradients stay finite at zero.
    """
    theta2 = (w * w).sum(-1, keepdim=True)[..., None]
    theta = theta2.clamp_min(1e-24).sqrt()
    small = theta2 < 1e-8
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / theta2.clamp_min(1e-24))
    k = _skew(w)
    eye = torch.eye(3, dtype=w.dtype, device=w.device).expand_as(k)
    return eye + a * k + b * (k @ k)


def so3_log(r: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`so3_exp`: ``(..., 3, 3)`` rotation matrices -> ``(..., 3)`` vectors with
    angle in [0, pi]. Near pi the axis is taken from the symmetric part, where the usual
    antisymmetric formula loses all precision."""
    cos = ((r.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1)
    theta = torch.acos(cos)
    vee = torch.stack([r[..., 2, 1] - r[..., 1, 2],
                       r[..., 0, 2] - r[..., 2, 0],
                       r[..., 1, 0] - r[..., 0, 1]], -1)
    sin = torch.sin(theta)
    factor = torch.where(theta < 1e-4, 0.5 + theta**2 / 12, theta / (2 * sin.clamp_min(1e-12)))
    w = vee * factor[..., None]
    # Near pi: R + I = 2 a a^T (1 - cos) ... take the largest column of (R + I) / 2 as the axis.
    near_pi = theta > torch.pi - 1e-3
    if near_pi.any():
        sym = (r + torch.eye(3, dtype=r.dtype, device=r.device)) / 2
        col = sym.diagonal(dim1=-2, dim2=-1).argmax(-1)
        axis = torch.gather(sym, -1, col[..., None, None].expand(*col.shape, 3, 1))[..., 0]
        axis = axis / axis.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        # Fix the sign with the (small but exact in sign) antisymmetric part.
        sign = torch.where((axis * vee).sum(-1, keepdim=True) < 0, -1.0, 1.0).to(r.dtype)
        w = torch.where(near_pi[..., None], axis * sign * theta[..., None], w)
    return w


def euler_to_matrix(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """``(...)`` angles in radians -> ``(..., 3, 3)``, ``R = Rz(roll) Ry(yaw) Rx(pitch)``."""
    ex = torch.zeros(*torch.broadcast_shapes(yaw.shape, pitch.shape, roll.shape), 3,
                     dtype=yaw.dtype, device=yaw.device)
    rx = so3_exp(ex + torch.stack([pitch, 0 * pitch, 0 * pitch], -1))
    ry = so3_exp(ex + torch.stack([0 * yaw, yaw, 0 * yaw], -1))
    rz = so3_exp(ex + torch.stack([0 * roll, 0 * roll, roll], -1))
    return rz @ ry @ rx


def matrix_to_euler(r: torch.Tensor) -> torch.Tensor:
    """``(..., 3, 3)`` -> ``(..., 3)`` angles ``(yaw, pitch, roll)`` in radians, the inverse of
    :func:`euler_to_matrix` for ``|yaw| < pi/2``."""
    yaw = torch.asin((-r[..., 2, 0]).clamp(-1, 1))
    pitch = torch.atan2(r[..., 2, 1], r[..., 2, 2])
    roll = torch.atan2(r[..., 1, 0], r[..., 0, 0])
    return torch.stack([yaw, pitch, roll], -1)


def rotation_angle_between(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(..., 3, 3), (..., 3, 3) -> (...)`` geodesic angle (radians) between rotations."""
    cos = (((a.transpose(-1, -2) @ b).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1)
    return torch.acos(cos)
