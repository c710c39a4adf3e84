"""Cameras mapping model-space points to pixels.

Pixel coordinates: x right, y down, origin at the top-left pixel's centre (so the pixel ``(i, j)``
covers ``[j - 0.5, j + 0.5] x [i - 0.5, i + 0.5]``). The model's y axis points up, so both cameras
flip y. Depth is returned in the camera's viewing direction with *larger = nearer*, the order the
renderer's z-test uses.

- Scaled orthographic (FaceAnime's camera, the default): ``u = s (R X)_x + t_x``,
  ``v = t_y - s (R X)_y``, depth ``s (R X)_z``.
- Perspective, pinhole at the origin looking down -z: ``Xc = R X + t`` with ``Xc_z < 0``,
  ``u = c_x + f Xc_x / (-Xc_z)``, ``v = c_y - f Xc_y / (-Xc_z)``, depth ``Xc_z``.
"""

from __future__ import annotations

import torch


def project_orthographic(points: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor,
                         scale: torch.Tensor) -> torch.Tensor:
    """Scaled orthographic projection.

    Args:
        points: ``(B, N, 3)`` model-space points.
        rotation: ``(B, 3, 3)``.
        translation: ``(B, 2)`` or ``(B, 3)`` pixels (only x, y are used).
        scale: ``(B,)`` pixels per model unit.

    Returns:
        ``(B, N, 3)``: pixel ``u, v`` and depth (larger = nearer).
    """
    rotated = points @ rotation.transpose(-1, -2) * scale[:, None, None]
    u = rotated[..., 0] + translation[:, None, 0]
    v = translation[:, None, 1] - rotated[..., 1]
    return torch.stack([u, v, rotated[..., 2]], -1)


def project_perspective(points: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor,
                        focal: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    """Pinhole projection.

    Args:
        points: ``(B, N, 3)`` model-space points.
        rotation: ``(B, 3, 3)``.
        translation: ``(B, 3)`` model units; ``t_z < 0`` puts the face in front of the camera.
        focal: ``(B,)`` focal length in pixels.
        center: ``(B, 2)`` principal point in pixels.

    Returns:
        ``(B, N, 3)``: pixel ``u, v`` and camera-space z (negative; larger = nearer).
    """
    cam = points @ rotation.transpose(-1, -2) + translation[:, None, :]
    inv_depth = 1.0 / (-cam[..., 2]).clamp_min(1e-6)
    u = center[:, None, 0] + focal[:, None] * cam[..., 0] * inv_depth
    v = center[:, None, 1] - focal[:, None] * cam[..., 1] * inv_depth
    return torch.stack([u, v, cam[..., 2]], -1)
