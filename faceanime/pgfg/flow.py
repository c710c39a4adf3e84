"""The dense face flow the generator starts from: the warp renderer's exact correspondence.

For every pixel of a target crop that the target face covers, the surface point there (the
same barycentric point of the same triangle) lies somewhere in the source crop under the
source's coefficients: the offset between the two is exact, as in the weight-free warp
(:mod:`faceanime.render.warp`). Surface the source does not show (behind the nose or a turned
cheek, by the source's depth buffer) is left unknown. The generator continues the known flow
beyond the face and corrects it (:func:`faceanime.pgfg.networks.flow_init`); the sparse prior's
offsets gave only every k-th vertex's motion, smoothed.
"""

from __future__ import annotations

import torch

from faceanime.render.rasterize import interpolate_covered, rasterize
from faceanime.render.warp import depth_slope


def face_flow(source_screen: torch.Tensor, target_screen: torch.Tensor,
              triangles: torch.Tensor, size: int, depth_tolerance: float = 0.01
              ) -> torch.Tensor:
    """Exact backward flow of target crops into source crops over the face.

    Args:
        source_screen, target_screen: ``(B, N, 3)`` every vertex in crop pixels (u, v, depth,
            larger nearer), e.g. :func:`~faceanime.pgfg.data.screen_vertices`.
        triangles: ``(F, 3)`` the mesh's triangles.
        size: crop side S.
        depth_tolerance: depth-test margin as a fraction of the source face's depth range
            (plus the local depth slope, as in the warp).

    Returns:
        ``(B, 3, S, S)``: channels 0-1 the offset (x, y) from each target pixel to where its
        surface point lies in the source, in ``grid_sample`` units (2 = the crop's side);
        channel 2 is 1 where that is known (covered and seen in the source), else 0 (and the
        offset 0).
    """
    b = target_screen.shape[0]
    dtype = torch.float32
    source_screen, target_screen = source_screen.to(dtype), target_screen.to(dtype)
    target = rasterize(target_screen, triangles, (size, size))
    pixel, values = interpolate_covered(target, source_screen, triangles)   # (P,), (P, 3)
    frame = pixel.div(size * size, rounding_mode="floor")
    flat = pixel % (size * size)
    row, col = flat.div(size, rounding_mode="floor"), flat % size
    zbuf = rasterize(source_screen, triangles, (size, size)).depth        # (B, S, S)
    depth = source_screen[..., 2]
    margin = depth_tolerance * (depth.amax(1) - depth.amin(1))             # (B,)
    tolerance = margin[:, None, None] + depth_slope(zbuf)
    j = values[:, 0].round().long()
    i = values[:, 1].round().long()
    inside = (j >= 0) & (j < size) & (i >= 0) & (i < size)
    i, j = i.clamp(0, size - 1), j.clamp(0, size - 1)
    seen = inside & (values[:, 2] >= zbuf[frame, i, j] - tolerance[frame, i, j])
    out = torch.zeros(b, 3, size, size, dtype=dtype, device=target_screen.device)
    scale = 2.0 / (size - 1)
    offset = torch.stack([values[:, 0] - col.to(dtype), values[:, 1] - row.to(dtype)], 1) * scale
    k = seen.nonzero()[:, 0]
    out[frame[k], 0, row[k], col[k]] = offset[k, 0]
    out[frame[k], 1, row[k], col[k]] = offset[k, 1]
    out[frame[k], 2, row[k], col[k]] = 1.0
    return out


def flip_flow(flow: torch.Tensor) -> torch.Tensor:
    """Mirror ``(B, 3, S, S)`` face flows left-right (the x offset changes sign)."""
    out = flow.flip(-1)
    return torch.cat([-out[:, :1], out[:, 1:]], 1)


__all__ = ["face_flow", "flip_flow"]
