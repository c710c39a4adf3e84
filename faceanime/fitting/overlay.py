"""Draw a fitted mesh over its image: the wireframe of the triangles that face the camera.

Vectorised: every visible edge is sampled at one-pixel steps in one tensor operation and the
samples are alpha-blended into the image, no loop over edges or pixels.
"""

from __future__ import annotations

import numpy as np
import torch


def draw_mesh(image: np.ndarray, projected: torch.Tensor, triangles: torch.Tensor,
              colour: tuple[int, int, int] = (60, 255, 120), alpha: float = 0.35) -> np.ndarray:
    """Overlay a wireframe.

    Args:
        image: ``(H, W, 3)`` uint8.
        projected: ``(N, 3)`` pixel ``u, v`` and depth (larger = nearer) of the vertices.
        triangles: ``(F, 3)`` counter-clockwise seen from the front.
        colour: RGB of the lines.
        alpha: line opacity.

    Returns:
        A new ``(H, W, 3)`` uint8 image.
    """
    h, w = image.shape[:2]
    p = projected.detach().cpu().double()
    tri = triangles.cpu()
    a, b, c = p[tri[:, 0], :2], p[tri[:, 1], :2], p[tri[:, 2], :2]
    # Image y points down, so a front-facing (counter-clockwise in model space) triangle is
    # clockwise on screen: negative signed area.
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    front = tri[area < 0]
    edges = torch.cat([front[:, [0, 1]], front[:, [1, 2]], front[:, [2, 0]]])
    edges = torch.unique(torch.sort(edges, 1).values, dim=0)
    start, end = p[edges[:, 0], :2], p[edges[:, 1], :2]
    steps = int(torch.ceil((end - start).norm(dim=-1).max()).clamp_min(1)) + 1 if len(edges) else 1
    t = torch.linspace(0, 1, steps, dtype=p.dtype)
    pts = start[:, None] + t[None, :, None] * (end - start)[:, None]
    pts = pts.reshape(-1, 2).round().long()
    inside = (pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)
    flat = torch.unique(pts[inside, 1] * w + pts[inside, 0]).numpy()
    out = image.copy().reshape(-1, 3)
    blend = (1 - alpha) * out[flat].astype(np.float32) + alpha * np.asarray(colour, np.float32)
    out[flat] = np.clip(blend + 0.5, 0, 255).astype(np.uint8)
    return out.reshape(image.shape)
