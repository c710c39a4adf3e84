"""Z-tested point splatting: draw a sparse set of screen-space vertices (the sparse texture prior)
as small discs.

A point at ``(u, v)`` covers the pixels whose centres lie *strictly* within ``radius`` pixels of
it: ``(j - u)^2 + (i - v)^2 < radius^2`` for pixel ``(i, j)`` (the rule of pytorch3d's point
rasterizer, so both backends agree). With the default ``radius = 0.5`` a point covers at most one
pixel, the one whose centre is nearest, and only when it falls inside that pixel's inscribed
disc (78.5 % of the pixel's area): points near a pixel corner draw nothing. A radius above
``sqrt(2) / 2`` (0.75, say) makes every point inside the image cover at least one pixel; a point
on a pixel centre covers that pixel alone up to radius 1 (its 4-neighbours lie at exactly 1), its
3 x 3 neighbourhood at radius 1.5. Where discs overlap the nearest point (largest depth) wins,
depths compared at float32 resolution, equal depths going to the larger point index.
"""

from __future__ import annotations

import math

import torch

from faceanime.errors import InputError
from faceanime.render.rasterize import (
    CHUNK_PAIRS,
    EMPTY,
    box_blocks,
    check_backend,
    check_image_size,
    check_points,
    depth_keys,
    import_pytorch3d,
    key_labels_,
    pixel_range,
    pytorch3d_depth_offset,
    to_pytorch3d_ndc,
)


def _splat_torch(points: torch.Tensor, draw: torch.Tensor, height: int, width: int,
                 radius: float, chunk: int = CHUNK_PAIRS) -> tuple[torch.Tensor, torch.Tensor]:
    """Winning point per pixel: ``(B * H * W,)`` int64 flat point index (``b * N + n``, -1 for
    none) and ``(B * H * W,)`` depth (``-inf`` for none)."""
    b, n, _ = points.shape
    flat = points.reshape(b * n, 3)
    u, v, z = flat.unbind(1)
    x0, nx = pixel_range(u - radius, u + radius, width)
    y0, ny = pixel_range(v - radius, v + radius, height)
    nx = torch.where(draw.reshape(-1) & torch.isfinite(flat).all(1), nx, torch.zeros_like(nx))
    n_pix = height * width
    origin = torch.arange(b, device=points.device).repeat_interleave(n) * n_pix
    key_buf = torch.full((b * n_pix,), EMPTY, dtype=torch.long, device=points.device)
    label_tab = torch.arange(n, device=points.device).repeat(b)
    r2 = radius * radius
    for block in box_blocks(x0, y0, nx, ny, origin, width, points.dtype, chunk):
        du = block.pu - u[block.item]
        dv = block.pv - v[block.item]
        tile, pixel = block.locate((du * du + dv * dv < r2).view(-1).nonzero()[:, 0])
        item = block.item.index_select(0, tile)
        key_buf.scatter_reduce_(0, pixel, depth_keys(z.index_select(0, item),
                                                     label_tab.index_select(0, item)), "amax")
    index = key_labels_(key_buf).view(b, n_pix)
    # Point index within its cloud -> over the batch (b * N + n), -1 kept where empty.
    index = torch.where(index >= 0, index + torch.arange(b, device=points.device)[:, None] * n,
                        index).view(-1)
    depth = torch.full((b * n_pix,), -torch.inf, dtype=points.dtype, device=points.device)
    drawn = (index >= 0).nonzero()[:, 0]
    depth[drawn] = z.index_select(0, index.index_select(0, drawn))
    return index, depth


def _splat_pytorch3d(points: torch.Tensor, draw: torch.Tensor, height: int, width: int,
                     radius: float) -> tuple[torch.Tensor, torch.Tensor]:
    import_pytorch3d()
    from pytorch3d.renderer.points import rasterize_points
    from pytorch3d.structures import Pointclouds

    n = points.shape[1]
    offset = pytorch3d_depth_offset(points[..., 2])
    x, y = to_pytorch3d_ndc(points[..., 0], points[..., 1], height, width)
    ndc = torch.stack([x, y, offset - points[..., 2]], -1)
    # pytorch3d skips points behind the camera (z < 0): that is how undrawn points are dropped.
    skip = ~(draw & torch.isfinite(points).all(-1))
    ndc = torch.where(skip[..., None], ndc.new_tensor([0.0, 0.0, -1.0]), ndc)
    idx, zbuf, _ = rasterize_points(
        Pointclouds(points=ndc.float()), image_size=(height, width),
        radius=2.0 * radius / min(height, width), points_per_pixel=1, max_points_per_bin=n)
    # Packed indices of equal-sized clouds are already b * N + n.
    item = idx[..., 0].long().reshape(-1)
    depth = (offset[..., None].to(zbuf.dtype) - zbuf[..., 0]).reshape(-1)
    depth = torch.where(item >= 0, depth, torch.full_like(depth, -torch.inf))
    return item, depth.to(points.dtype)


def splat_points(points: torch.Tensor, values: torch.Tensor, image_size: tuple[int, int],
                 radius: float = 0.5, backend: str = "torch", mask: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw points as z-tested discs (coverage rule in the module docstring).

    Args:
        points: ``(B, N, 3)`` pixel ``u, v`` and depth (larger = nearer).
        values: ``(B, N, C)`` or ``(N, C)`` what each point draws (e.g. its colour).
        image_size: ``(H, W)``.
        radius: disc radius in pixels (> 0).
        backend: ``"torch"`` or ``"pytorch3d"`` (its point rasterizer).
        mask: ``(B, N)`` or ``(N,)`` bool, which points to draw (all when None). Points with
            non-finite coordinates are never drawn.

    Returns:
        ``image (B, C, H, W)`` the winning point's value (zeros where none), ``mask (B, 1, H, W)``
        float, 1 where a point was drawn, and ``depth (B, H, W)``, the winning point's depth
        (``-inf`` where none).
    """
    height, width = check_image_size(image_size)
    check_backend(backend)
    check_points(points, "points")
    b, n, _ = points.shape
    if not isinstance(values, torch.Tensor) or values.ndim not in (2, 3) \
            or values.shape[-2] != n or (values.ndim == 3 and values.shape[0] != b):
        shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
        raise InputError(f"values must be ({b}, {n}, C) or ({n}, C), got {shape}")
    try:
        radius = float(radius)
    except (TypeError, ValueError):
        radius = math.nan
    if not (math.isfinite(radius) and radius > 0):
        raise InputError(f"radius must be a positive number of pixels, got {radius!r}")
    if mask is None:
        draw = torch.ones(b, n, dtype=torch.bool, device=points.device)
    else:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool \
                or mask.shape not in ((b, n), (n,)):
            raise InputError(f"mask must be a ({b}, {n}) or ({n},) bool tensor")
        draw = mask.to(points.device).expand(b, n)
    values = values.to(points.device).expand(b, n, values.shape[-1])
    if not values.is_floating_point():
        values = values.float()

    if backend == "pytorch3d":
        item, depth = _splat_pytorch3d(points, draw, height, width, radius)
    else:
        item, depth = _splat_torch(points, draw, height, width, radius)
    covered = item >= 0
    c = values.shape[-1]
    image = torch.zeros(b * height * width, c, dtype=values.dtype, device=points.device)
    hit = covered.nonzero()[:, 0]
    image[hit] = values.reshape(b * n, c).index_select(0, item.index_select(0, hit))
    image = image.view(b, height, width, c).permute(0, 3, 1, 2)
    drawn = covered.view(b, 1, height, width).to(values.dtype)
    return image, drawn, depth.view(b, height, width)
