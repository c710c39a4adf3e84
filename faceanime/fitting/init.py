"""Closed-form initial pose: an affine camera fitted by least squares to the mean face's landmark
vertices, then projected to the nearest scaled rotation. Good to a few degrees at any yaw the
landmarks can be detected at, which is all Gauss–Newton needs."""

from __future__ import annotations

import torch


def init_orthographic_pose(model_points: torch.Tensor, image_points: torch.Tensor,
                           weights: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scaled-orthographic pose from 2D–3D correspondences, per frame.

    Args:
        model_points: ``(B, L, 3)`` 3D points (the mean face's landmark vertices).
        image_points: ``(B, L, 2)`` pixels (NaN allowed where ``weights`` is 0).
        weights: ``(B, L)`` 0/1 (or soft) weights; at least 4 non-coplanar points per frame.

    Returns:
        rotation ``(B, 3, 3)``, translation ``(B, 3)`` (z = 0), scale ``(B,)``.
    """
    dtype = model_points.dtype
    w = weights.to(dtype)
    y = torch.nan_to_num(image_points) * w[..., None]
    # Image v points down, the model's y up: fit [u, -v] so the affine rows are s*r1, s*r2.
    y = torch.stack([y[..., 0], -y[..., 1]], -1)
    x = torch.cat([model_points, torch.ones_like(model_points[..., :1])], -1) * w[..., None]
    reg = 1e-9 * torch.eye(4, dtype=dtype, device=x.device)
    sol = torch.linalg.solve(x.transpose(1, 2) @ x + reg, x.transpose(1, 2) @ y)  # (B, 4, 2)
    a = sol[:, :3].transpose(1, 2)  # (B, 2, 3) = s * [r1; r2]
    # Nearest matrix with orthonormal rows (times a scale): polar decomposition through the SVD.
    u, sv, vh = torch.linalg.svd(a, full_matrices=False)
    rows = u @ vh
    scale = sv.mean(-1)
    r3 = torch.linalg.cross(rows[:, 0], rows[:, 1])
    rotation = torch.cat([rows, r3[:, None]], 1)
    translation = torch.stack([sol[:, 3, 0], -sol[:, 3, 1], torch.zeros_like(scale)], -1)
    return rotation, translation, scale
