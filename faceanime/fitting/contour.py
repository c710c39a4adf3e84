"""Jaw-contour correspondences.

The iBUG jaw points (1–8 and 10–17) mark the face's outline, which slides over the skin as the head
turns, so they have no fixed vertex. As eos does, each is matched to the model's contour candidates
of its side, and a side is used only while it faces the camera (its jaw line is then the visible
outline, not an occluding silhouette); near-frontal faces use both sides. Unlike eos, which takes
the nearest candidate *vertex*, the point is matched to the nearest point on the *polyline* through
the projected candidates: a virtual vertex between two neighbours. The candidates are ~1 cm apart,
and snapping to them would leave up to half that as error on every jaw point.
"""

from __future__ import annotations

import torch

RIGHT_JAW = list(range(0, 8))  # 0-based iBUG 1–8, the subject's right
LEFT_JAW = list(range(9, 17))  # 0-based iBUG 10–17


def nearest_on_polyline(points: torch.Tensor, polyline: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Closest point on a polyline, per batch.

    Args:
        points: ``(B, P, 2)`` query points.
        polyline: ``(B, C, 2)`` vertices of an open polyline (``C >= 2``).

    Returns:
        segment index ``(B, P)`` in ``[0, C-2]`` and position along it ``(B, P)`` in [0, 1].
    """
    a, b = polyline[:, None, :-1], polyline[:, None, 1:]  # (B, 1, C-1, 2)
    ab = b - a
    q = points[:, :, None]  # (B, P, 1, 2)
    t = (((q - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-12)).clamp(0, 1)
    dist = (a + t[..., None] * ab - q).norm(dim=-1)  # (B, P, C-1)
    seg = dist.argmin(-1)
    return seg, torch.gather(t, -1, seg[..., None])[..., 0]


def contour_correspondences(projected: torch.Tensor, targets: torch.Tensor,
                            candidates: tuple[torch.Tensor, torch.Tensor], yaw: torch.Tensor,
                            both_sides_below: float
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Match each jaw landmark to a point between two neighbouring contour candidates.

    Args:
        projected: ``(B, V, 2)`` projections of the vertex subset the candidates index into.
        targets: ``(B, 68, 2)`` detected landmarks (pixels).
        candidates: right and left candidate index tensors ``(Cr,)``, ``(Cl,)`` into ``V``, ordered
            along the jaw.
        yaw: ``(B,)`` radians; positive turns the face towards its left, showing its right side.
        both_sides_below: below this ``|yaw|`` (radians) both sides are used.

    Returns:
        For iBUG 1–8 then 10–17, each ``(B, 16)``: first vertex, second vertex (indices into
        ``V``), the weight of the second, and the bool mask of points to use.
    """
    first, second, weight, use = [], [], [], []
    for cand, jaw, visible in ((candidates[0], RIGHT_JAW, yaw > -both_sides_below),
                               (candidates[1], LEFT_JAW, yaw < both_sides_below)):
        seg, t = nearest_on_polyline(torch.nan_to_num(targets[:, jaw]), projected[:, cand])
        first.append(cand[seg])
        second.append(cand[seg + 1])
        weight.append(t)
        use.append(visible[:, None].expand(-1, len(jaw)))
    return torch.cat(first, 1), torch.cat(second, 1), torch.cat(weight, 1), torch.cat(use, 1)
