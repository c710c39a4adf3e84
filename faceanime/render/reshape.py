"""The target frame bent to the swapped face's shape.

A swap draws the photo's face (its shape) where the target's face was (its shape): the two
outlines differ by 10-25 pixels at the jaw and cheeks in a 512² frame (95th percentile of the
shared pairs' vertex shifts). Pasted as it is, the swapped face either stops short of the
target's jaw (a second chin line, the target's cheek beside the photo's) or is drawn over the
target's hair and background; and what the swap keeps of the target inside the face (its mouth
interior, occluders, shut lids) sits where the target's face had it, not where the swapped face
has it. Shape-aware swaps (HifiFace, Wang et al. 2021) learn to deform the target; the 3D fit
gives the deformation exactly:

- **Inside the face** each output pixel shows a surface point of the swapped mesh (barycentric
  weights in one of its triangles); the same point of the target's own mesh, at the same
  expression and pose, is where that point is in the target frame. The frame is fetched there.
- **Around it** the offsets are continued smoothly (a normalised Gaussian of the face's
  offsets) and faded out over ``reach`` pixels beyond the outline, so the neck, hair and
  background next to the face follow the new jaw and cheeks, and nothing farther moves.

Tensors are over a box of the frame, in its pixels (centre of the top-left pixel at 0).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from faceanime.render.paste import gaussian_blur
from faceanime.render.rasterize import Fragments, interpolate


def surface_offsets(fragments: Fragments, own: torch.Tensor, triangles: torch.Tensor,
                    step: int = 1) -> torch.Tensor:
    """Where each covered pixel's surface point lies in the target frame, as an offset.

    Args:
        fragments: the swapped mesh rasterized over the box, ``T`` images of ``h x w``; with
            ``step`` > 1, those of every ``step``-th pixel of the box in each direction (sample
            ``(i, j)`` at its pixel ``(step j, step i)``).
        own: ``(T, N, 2)`` the target's own mesh (same vertices) in the box's pixels.
        triangles: ``(F, 3)`` the rasterized triangles.

    Returns:
        ``(T, 3, h, w)``: the offset ``(dx, dy)`` in the box's pixels from the sample to its
        point on the target's own mesh, and 1 where covered (0 and zero offsets elsewhere).
    """
    h, w = fragments.face_index.shape[1:]
    position = interpolate(fragments, own, triangles)                        # (T, 2, h, w)
    covered = (fragments.face_index >= 0)[:, None].to(position.dtype)
    ys = torch.arange(h, dtype=position.dtype, device=position.device)[:, None].expand(h, w)
    xs = torch.arange(w, dtype=position.dtype, device=position.device)[None, :].expand(h, w)
    ys, xs = ys * step, xs * step
    offset = (position - torch.stack([xs, ys])[None]) * covered
    return torch.cat([offset, covered], 1)


def continue_offsets(offsets: torch.Tensor, reach: float, pad: int, coarse: int = 4
                     ) -> torch.Tensor:
    """Offsets known inside the face continued around it and faded out.

    Args:
        offsets: ``(T, 3, h, w)`` from :func:`surface_offsets`.
        reach: pixels beyond the face over which the offsets fade to nothing (a Gaussian of
            half this continues them).
        pad: pixels the box is grown by on every side (at least ``reach``, so the offsets are
            gone before its border).
        coarse: the continuation is computed at ``1 / coarse`` of the resolution (it is smooth)
            and interpolated back; inside the face the exact offsets are kept.

    Returns:
        ``(T, 2, h + 2 pad, w + 2 pad)`` offsets over the grown box, 0 at its border.
    """
    h, w = offsets.shape[-2:]
    grown = F.pad(offsets, (pad, pad, pad, pad))
    small = F.avg_pool2d(grown, coarse, ceil_mode=True)
    blurred = gaussian_blur(small, max(reach / 2 / coarse, 0.5), border="zero")
    blurred = F.interpolate(blurred, scale_factor=coarse, mode="bilinear",
                            align_corners=False)[..., :h + 2 * pad, :w + 2 * pad]
    density = blurred[:, 2:]
    continued = blurred[:, :2] / density.clamp_min(1e-6)
    # A blurred indicator is 1/2 at a straight outline and falls off outside it: full strength
    # there, nothing a reach away.
    fade = (2 * density).clamp(0.0, 1.0)
    # Inside, the exact offsets take over from the continued ones gradually, from nothing at
    # the outline (where the indicator is 1/2 or less) to all where it is 3/4 (two thirds of a
    # sigma in): switched at the outline, the two differed at the forehead's corners and the
    # hair line stepped there.
    exact = ((2 * density - 1) * 2).clamp(0.0, 1.0) * grown[:, 2:]
    out = torch.lerp(continued * fade, grown[:, :2], exact)
    # Nothing moves at the grown box's border (the frame beyond it is not resampled).
    hh, ww = out.shape[-2:]
    ys = torch.arange(hh, dtype=out.dtype, device=out.device)
    xs = torch.arange(ww, dtype=out.dtype, device=out.device)
    edge_y = torch.minimum(ys, hh - 1 - ys)[:, None]
    edge_x = torch.minimum(xs, ww - 1 - xs)[None, :]
    window = (torch.minimum(edge_y, edge_x) / max(pad / 4, 1.0)).clamp(0.0, 1.0)
    return out * window


def bend_offsets(fragments: Fragments, own: torch.Tensor, triangles: torch.Tensor,
                 reach: float, step: int = 2) -> tuple[torch.Tensor, int]:
    """The offsets of the whole bending over a box: :func:`surface_offsets` and
    :func:`continue_offsets` on every ``step``-th pixel (the field is smooth, linear within a
    triangle: at half resolution it costs a quarter, and the exact offsets inside come back
    from their samples by bilinear interpolation to well under a pixel), then brought to every
    pixel.

    Args:
        fragments: the swapped mesh rasterized over the box, ``T`` images of ``h x w``.
        own: ``(T, N, 2)`` the target's own mesh in the box's pixels.
        triangles: ``(F, 3)`` the rasterized triangles.
        reach: pixels beyond the face over which the offsets fade out.
        step: the sampling step.

    Returns:
        ``(T, 2, h + 2 pad, w + 2 pad)`` offsets over the box grown by ``pad`` (a multiple of
        ``step``, at least ``reach``), 0 at its border; and ``pad``.
    """
    h, w = fragments.face_index.shape[1:]
    sub = Fragments(fragments.face_index[:, ::step, ::step],
                    fragments.bary[:, ::step, ::step], fragments.depth[:, ::step, ::step])
    pad_sub = math.ceil(reach / step)
    field = continue_offsets(surface_offsets(sub, own, triangles, step), reach / step, pad_sub,
                             coarse=max(1, 4 // step))
    hs, ws = field.shape[-2:]
    # Sample k lies on pixel step k of the grown box: corners aligned.
    field = F.interpolate(field, size=(step * (hs - 1) + 1, step * (ws - 1) + 1),
                          mode="bilinear", align_corners=True)
    pad = step * pad_sub
    need_h, need_w = h + 2 * pad, w + 2 * pad
    field = F.pad(field, (0, max(need_w - field.shape[-1], 0), 0,
                          max(need_h - field.shape[-2], 0)))
    return field[..., :need_h, :need_w], pad
