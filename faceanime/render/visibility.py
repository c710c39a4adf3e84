"""Which mesh vertices the camera sees: a depth test of each vertex against the rasterized
z-buffer (what sparse texture mapping samples colours at).

A vertex is visible when it projects inside the image (``-0.5 <= u < W - 0.5``, same for ``v``)
and nothing is in front of it. "In front" is read off the z-buffer at the vertex's nearest pixel:
the triangle covering that pixel centre (none: the vertex is visible) is evaluated at the vertex
position itself, as the depth of its point nearest to the vertex (barycentric weights of the
vertex clamped to the triangle, so that a steep triangle is never extrapolated past its own depth
range) lowered by the triangle's depth gradient times that point's distance to the vertex (up to
~0.7 pixel): the most the triangle's own surface could recede by over that offset. The vertex is
hidden when this exceeds its depth by more than ``tolerance``.

Compared with reading the depth at the pixel centre, this removes the depth slope over the offset
between the pixel centre and the vertex, which on the steep triangles along a turned face's
silhouette exceeds any sensible tolerance; the vertex's own triangles give its depth exactly.
Occluders that matter (the nose over the far cheek, the far cheek behind the silhouette) are tens
of pixels in front and are not affected.

Default tolerance: 1 % of the frame's depth range (farthest to nearest vertex), ~1 pixel for a
face 200 pixels wide; it absorbs other triangles of the same surface covering the pixel. Measured
against exact ray casting from every vertex toward the camera (trimesh), on the SFM mean face
200 pixels wide: 98 % agreement at 30 and 60 degrees of yaw (99 % at 400 pixels wide); the rest
are vertices within a pixel of an occluding contour.
"""

from __future__ import annotations

import torch

from faceanime.errors import InputError
from faceanime.render.rasterize import (
    check_backend,
    check_image_size,
    check_points,
    check_triangles,
    rasterize,
    signed_areas,
)

DEFAULT_RELATIVE_TOLERANCE = 0.01


def front_facing_vertices(vertices: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
    """``(B, N, 3), (F, 3) -> (B, N)`` bool: the area-weighted normal of the vertex's triangles
    faces the camera (front faces have negative signed screen area; see
    :mod:`faceanime.render.rasterize`). Vertices of no triangle are False."""
    area2 = signed_areas(vertices[:, triangles])                     # (B, F)
    score = torch.zeros(vertices.shape[:2], dtype=vertices.dtype, device=vertices.device)
    score.index_add_(1, triangles.reshape(-1), (-area2).repeat_interleave(3, dim=1))
    return score > 0


def vertex_visibility(vertices: torch.Tensor, triangles: torch.Tensor,
                      image_size: tuple[int, int], tolerance: float | None = None,
                      backend: str = "torch", front_facing: bool = False) -> torch.Tensor:
    """Depth-tested visibility of every vertex (method in the module docstring).

    Args:
        vertices: ``(B, N, 3)`` pixel ``u, v`` and depth (larger = nearer).
        triangles: ``(F, 3)`` vertex indices.
        image_size: ``(H, W)``.
        tolerance: depth margin in depth units, or None for 1 % of each frame's depth range.
        backend: rasterizer backend (see :func:`~faceanime.render.rasterize.rasterize`).
        front_facing: also require the vertex normal to face the camera
            (:func:`front_facing_vertices`), which drops silhouette vertices seen edge-on.

    Returns:
        ``(B, N)`` bool.
    """
    height, width = check_image_size(image_size)
    check_backend(backend)
    check_points(vertices)
    triangles = check_triangles(triangles, vertices.shape[1], vertices.device)
    if tolerance is not None and not tolerance >= 0:
        raise InputError(f"tolerance must be >= 0, got {tolerance!r}")
    b, n, _ = vertices.shape
    fragments = rasterize(vertices, triangles, (height, width), backend=backend)

    finite = torch.isfinite(vertices).all(-1)
    safe = torch.where(finite[..., None], vertices, torch.zeros_like(vertices))
    u, v, depth = safe.unbind(-1)
    inside = finite & (u >= -0.5) & (u < width - 0.5) & (v >= -0.5) & (v < height - 0.5)

    # Nearest pixel centre (clamped, for vertices in the image's outer half-pixel).
    col = u.round().clamp(0, width - 1).long()
    row = v.round().clamp(0, height - 1).long()
    face = fragments.face_index.reshape(b, -1).gather(1, row * width + col)   # (B, N)
    covered = face >= 0

    # With no triangles nothing is covered; a dummy row keeps the gathers in range.
    lookup = triangles if len(triangles) else triangles.new_zeros(1, 3)
    corner = lookup[face.clamp_min(0)].reshape(b, -1)                # (B, N * 3)
    tri = safe.gather(1, corner[..., None].expand(-1, -1, 3)).view(b, n, 3, 3)
    p = safe[:, :, None, :2]
    start, end = tri[..., [1, 2, 0], :2], tri[..., [2, 0, 1], :2]
    d, q = end - start, p - start
    weight = (d[..., 0] * q[..., 1] - d[..., 1] * q[..., 0]) / signed_areas(tri)[..., None]
    weight = weight.clamp_min(0)
    weight = weight / weight.sum(-1, keepdim=True).clamp_min(torch.finfo(weight.dtype).tiny)
    near = (weight[..., None] * tri).sum(-2)                         # (B, N, 3)
    e1, e2 = tri[..., 1, :] - tri[..., 0, :], tri[..., 2, :] - tri[..., 0, :]
    det = e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]
    grad_u = (e1[..., 2] * e2[..., 1] - e2[..., 2] * e1[..., 1]) / det
    grad_v = (e2[..., 2] * e1[..., 0] - e1[..., 2] * e2[..., 0]) / det
    offset = (near[..., :2] - p[..., 0, :]).norm(dim=-1)
    surface = near[..., 2] - torch.hypot(grad_u, grad_v) * offset
    surface = torch.where(covered, surface, torch.full_like(surface, -torch.inf))

    if tolerance is None:
        low = torch.where(finite, depth, torch.full_like(depth, torch.inf)).amin(1, keepdim=True)
        high = torch.where(finite, depth, torch.full_like(depth, -torch.inf)).amax(1, keepdim=True)
        margin = DEFAULT_RELATIVE_TOLERANCE * (high - low).nan_to_num(0.0, 0.0, 0.0)
    else:
        margin = torch.full((b, 1), float(tolerance), dtype=depth.dtype, device=depth.device)
    visible = inside & (depth >= surface - margin)
    if front_facing:
        visible &= front_facing_vertices(safe, triangles)
    return visible
