"""The ``warp2d`` baseline: the source photo warped piecewise-affinely onto target landmarks.

This is the *sparse 2-D landmark* method FaceAnime argues against: it knows nothing of the head
in 3-D, only where 68 points should go, so it stretches the photo between them. It cannot open a
closed mouth (there are no teeth or mouth interior to show, and when the source's lips touch, the
coinciding inner-lip points are one vertex), it cannot turn the head (the far cheek is squeezed,
never occluded) and everything between the face and the image border is sheared along with it.
It is in the evaluation as a reference point: a viewer's metric that cannot tell it from a 3-D
method is not measuring what FaceAnime claims.

The warp:

1. **Mesh.** The source's ``N`` landmarks plus :data:`BORDER_POINTS` fixed points (the image's
   corners and edge midpoints, half a pixel outside it, so every pixel centre lies inside) are
   triangulated once (Delaunay, :func:`triangulate`). No other fixed points: the background
   between the face and the border moves with the face, linearly fading to the border.
2. **Targets** (:func:`transfer_landmarks`): the driver's motion brought into the source,
   ``target_t = src + S(drv_t) - S(drv_ref)`` where ``S`` is the least-squares similarity mapping
   the driver's reference landmarks onto the source's. The translation of ``S`` cancels, so
   ``target_t = src + k (drv_t - drv_ref)`` with ``k`` its scale·rotation.
3. **Backward mapping** (:func:`warp_image`): the same triangles at the target positions are
   rasterised (:func:`faceanime.render.rasterize.rasterize`, all at one depth, no culling), each
   output pixel's barycentric weights in its target triangle give its source position, and the
   photo is sampled there bilinearly (``grid_sample``). A triangle that flips (a fold-over) is
   still rasterised; where triangles overlap, the rasteriser's tie rule (larger triangle index)
   picks one, and a pixel no triangle covers keeps its own position (an identity mapping).

Pixel coordinates are 0-based with pixel centres at integers, as everywhere in faceanime.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from faceanime.errors import InputError
from faceanime.render.rasterize import interpolate, rasterize

BORDER_POINTS = 8


def border_points(size: tuple[int, int], dtype: torch.dtype = torch.float32,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """The fixed points of the mesh: corners and edge midpoints of an image of ``size = (H, W)``
    half a pixel outside its outermost pixel centres, ``(8, 2)`` ``(x, y)``."""
    h, w = size
    xs = (-0.5, (w - 1) / 2, w - 0.5)
    ys = (-0.5, (h - 1) / 2, h - 0.5)
    points = [(x, y) for y in ys for x in xs if (x, y) != (xs[1], ys[1])]
    return torch.tensor(points, dtype=dtype, device=device)


def _check_points(points: torch.Tensor, name: str, batched: bool) -> None:
    ndim = 3 if batched else 2
    if not isinstance(points, torch.Tensor) or points.ndim != ndim or points.shape[-1] != 2:
        shape = tuple(points.shape) if isinstance(points, torch.Tensor) else type(points).__name__
        want = "(B, N, 2)" if batched else "(N, 2)"
        raise InputError(f"{name} must be a {want} tensor of pixel points, got {shape}")


def triangulate(points: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Delaunay triangles of ``points`` plus the border points of an ``(H, W)`` image.

    Args:
        points: ``(N, 2)`` finite pixel ``(x, y)``, the source's landmarks.
        size: ``(H, W)``.

    Returns:
        ``(F, 3)`` int64 vertex indices on ``points``' device: ``0 .. N-1`` the landmarks,
        ``N .. N+7`` the border points of :func:`border_points`. A landmark that coincides with
        another is left out of every triangle (it then follows its twin).
    """
    from scipy.spatial import Delaunay

    _check_points(points, "points", batched=False)
    if not bool(torch.isfinite(points).all()):
        raise InputError("cannot triangulate landmarks holding NaN or infinite values")
    every = torch.cat([points.detach().double().cpu(), border_points(size, torch.float64)])
    simplices = Delaunay(every.numpy()).simplices
    return torch.from_numpy(np.ascontiguousarray(simplices, dtype=np.int64)).to(points.device)


def transfer_landmarks(source: torch.Tensor, driver: torch.Tensor,
                       reference: torch.Tensor) -> torch.Tensor:
    """Targets of the warp: the driver's displacement from its reference, aligned to the source.

    ``target_t = source + S(driver_t) - S(reference)`` with ``S`` the least-squares similarity
    (rotation, uniform scale, translation; Umeyama without reflection) that maps ``reference``
    onto ``source``.

    Args:
        source: ``(N, 2)`` the source photo's landmarks.
        driver: ``(T, N, 2)`` the driver's landmarks per frame; a row holding NaN (no face in
            that frame) gives ``source`` unchanged (no motion).
        reference: ``(N, 2)`` the driver's landmarks in its reference frame, finite.

    Returns:
        ``(T, N, 2)`` in ``source``'s dtype and device.
    """
    _check_points(source, "source", batched=False)
    _check_points(reference, "reference", batched=False)
    _check_points(driver, "driver", batched=True)
    if reference.shape != source.shape or driver.shape[1:] != source.shape:
        raise InputError(f"landmark sets differ: source {tuple(source.shape)}, reference "
                         f"{tuple(reference.shape)}, driver {tuple(driver.shape)}")
    if not (bool(torch.isfinite(source).all()) and bool(torch.isfinite(reference).all())):
        raise InputError("the source and the driver's reference landmarks must be finite")
    src = source.double()
    ref = reference.to(src.device, torch.float64)
    drv = driver.to(src.device, torch.float64)
    a = torch.complex(*(ref - ref.mean(0)).unbind(-1))
    b = torch.complex(*(src - src.mean(0)).unbind(-1))
    norm = float((a.abs() ** 2).sum())
    if norm < 1e-12:
        raise InputError("the driver's reference landmarks are degenerate (all at one point)")
    k = (a.conj() * b).sum() / norm                      # scale·rotation of S
    shift = torch.complex(*(drv - ref).unbind(-1)) * k   # S(drv_t) - S(ref), (T, N)
    target = src + torch.view_as_real(shift)
    moving = torch.isfinite(target).flatten(1).all(1)
    target = torch.where(moving[:, None, None], target, src.expand_as(target))
    return target.to(source.dtype)


def warp_image(image: torch.Tensor, source: torch.Tensor, target: torch.Tensor,
               triangles: torch.Tensor | None = None) -> torch.Tensor:
    """Piecewise-affine warp of one photo so that its ``source`` points land on ``target``.

    Args:
        image: ``(1, C, H, W)`` or ``(B, C, H, W)`` floating point (any range).
        source: ``(N, 2)`` pixel ``(x, y)`` of the photo's landmarks, finite.
        target: ``(B, N, 2)`` where they should go in each output, finite (see
            :func:`transfer_landmarks` for frames without a face).
        triangles: ``(F, 3)`` over the ``N`` points and the 8 border points, from
            :func:`triangulate`; computed from ``source`` when None.

    Returns:
        ``(B, C, H, W)`` in ``image``'s dtype and device. Identical ``source`` and ``target`` give
        ``image`` back (up to float rounding of the sample positions, ~1e-4 px).
    """
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or not image.is_floating_point():
        raise InputError("image must be a floating-point (B, C, H, W) tensor")
    _check_points(source, "source", batched=False)
    _check_points(target, "target", batched=True)
    b, n = target.shape[:2]
    _, _, h, w = image.shape
    if source.shape[0] != n:
        raise InputError(f"source has {source.shape[0]} points, target {n}")
    if image.shape[0] not in (1, b):
        raise InputError(f"image batch {image.shape[0]} for {b} targets: give 1 or {b} images")
    if min(h, w) < 2:
        raise InputError(f"image of {w}×{h} pixels is too small to warp")
    if not bool(torch.isfinite(target).all()):
        raise InputError("target points hold NaN or infinite values")
    device = image.device
    source = source.to(device, torch.float32)
    target = target.to(device, torch.float32)
    if triangles is None:
        triangles = triangulate(source, (h, w))
    border = border_points((h, w), torch.float32, device)
    src = torch.cat([source, border])                                        # (N + 8, 2)
    dst = torch.cat([target, border.expand(b, -1, -1)], 1)                   # (B, N + 8, 2)
    # One depth for all: overlaps from fold-overs go to the larger triangle index.
    vertices = torch.cat([dst, torch.zeros_like(dst[..., :1])], -1)
    fragments = rasterize(vertices, triangles, (h, w), cull_backfaces=False)
    position = interpolate(fragments, src, triangles)                        # (B, 2, H, W)
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                            torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
    identity = torch.stack([xs, ys])                                         # (2, H, W)
    position = torch.where(fragments.mask[:, None], position, identity)
    # align_corners=True: -1 and 1 are the centres of the outermost pixels.
    scale = torch.tensor([2.0 / (w - 1), 2.0 / (h - 1)], device=device).view(1, 2, 1, 1)
    grid = (position * scale - 1).permute(0, 2, 3, 1)                        # (B, H, W, 2)
    photo = image.expand(b, -1, -1, -1)
    return F.grid_sample(photo, grid.to(image.dtype), mode="bilinear", padding_mode="border",
                         align_corners=True)
