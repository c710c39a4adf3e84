"""Fit how far each brow's inner and outer half is raised, and how far its inner half is drawn
in, in every frame, from the brows' landmarks.

After the main fit (identity, expression, jaw, pose), the raises ``k`` of the brows' parts
(:mod:`faceanime.morphable.brows`) are those whose projected brow landmarks (iBUG 18-22 and
23-27, 1-based) best match the detected ones. With ``p0`` a point of the fit at raise 0 and
``J_j`` its projected motion at raise 1 of part ``j``, the point is ``p0 + Σ_j k_j J_j``:
linear in the raises (exactly for the orthographic camera). Per frame that is a 6 × 6 least
squares (three per brow: its halves share its middle points); over a video consecutive frames
are tied as the eyelids' are, one block-tridiagonal solve
(:func:`~faceanime.fitting.linalg.solve_block_tridiagonal`), then bounded
(:func:`~faceanime.morphable.brows.bound_brows`).

After the emotions, as the pucker is (:mod:`faceanime.fitting.lips`): it takes the part of
the brows' motion the emotions leave, and changes nothing they already fit. A constant part of
that residual (dlib's points on the brows' upper edge, the model's along their middle) is in
every frame's raise, the photo's too; relative transfer takes the driver's changes only.
"""

from __future__ import annotations

import torch

from faceanime.coefficients import Coefficients
from faceanime.fitting.eyelid import lid_vertices
from faceanime.fitting.linalg import solve_block_tridiagonal
from faceanime.morphable.brows import BROWS, PARTS, Brows, bound_brows, build_brows
from faceanime.morphable.model import FaceModel
from faceanime.reconstruction import project_vertices


def _brow_points(model: FaceModel) -> list[list[int]]:
    """Each brow's mapped landmarks (0-based iBUG ids)."""
    ids = model.landmark_indices
    return [[i for i in brow if int(ids[i]) >= 0] for brow in BROWS]


def fit_brows(model: FaceModel, coeffs: Coefficients, temporal_weight: float = 0.1,
              brows: Brows | None = None) -> torch.Tensor:
    """Raises of the brows' parts (and how far each is drawn in) in every frame of a fit.

    Args:
        model: the model the coefficients were fitted with.
        coeffs: ``T`` fitted frames (brows at 0) with their detected ``landmarks``.
        temporal_weight: smoothness between consecutive frames, as in
            :class:`~faceanime.fitting.FitConfig` (0: each frame alone), relative to the mean
            precision of one frame's points.
        brows: the model's brow rig (built when None).

    Returns:
        ``(T, 6)`` amounts (:data:`~faceanime.morphable.brows.PARTS`) within their bounds;
        zeros when the coefficients hold no landmarks.
    """
    t, k = coeffs.n_frames, len(PARTS)
    device = coeffs.expression.device
    if coeffs.landmarks is None:
        return torch.zeros(t, k, device=device)
    brows = brows if brows is not None else build_brows(model)
    ids = model.landmark_indices
    dtype = torch.float64
    c = coeffs.to(dtype=dtype)
    points = c.landmarks.to(dtype)
    normal = torch.zeros(t, k, k, dtype=dtype, device=device)
    rhs = torch.zeros(t, k, 1, dtype=dtype, device=device)
    groups = _brow_points(model)
    mapped = [i for brow in groups for i in brow]
    if not mapped:
        return torch.zeros(t, k, device=device)
    # The jaw's skin weights are 0 wherever the rig moves the brows: the raises are added to
    # the posed points, which are found once.
    verts = lid_vertices(model, c, ids[mapped])                                 # (T, M, 3)
    start = 0
    for e, brow in enumerate(groups):
        if not brow:
            continue
        index, at = ids[brow], slice(start, start + len(brow))
        start += len(brow)
        rest = project_vertices(c, verts[:, at])[..., :2]                        # (T, n, 2)
        # The brow's two raises and the part drawing it in.
        parts = torch.tensor([2 * e, 2 * e + 1, 2 * len(groups) + e], device=device)
        motion = torch.stack([project_vertices(
            c, verts[:, at] + brows.offsets[j, index].to(device, dtype))[..., :2] - rest
            for j in parts.tolist()], -1)                                       # (T, n, 2, 3)
        seen = torch.isfinite(points[:, brow]).all(-1)                          # (T, n)
        motion = motion * seen[..., None, None]
        diff = torch.nan_to_num(points[:, brow] - rest)
        block = torch.einsum("tnci,tncj->tij", motion, motion)
        normal[:, parts[:, None], parts[None, :]] = block
        rhs[:, parts, 0] = torch.einsum("tnci,tnc->ti", motion, diff)
    scale = torch.diagonal(normal, dim1=1, dim2=2)                              # (T, k)
    known = scale > 0
    if not bool(known.any()):
        return torch.zeros(t, k, device=device)
    eye = torch.eye(k, dtype=dtype, device=device)
    # A part no frame sees (an unmapped brow) stays at 0; a frame that sees none takes its
    # neighbours' (tied) or 0 (alone).
    weight = temporal_weight * float(scale[known].mean()) if t > 1 else 0.0
    neighbours = torch.zeros(t, dtype=dtype, device=device)
    neighbours[1:] += 1
    neighbours[:-1] += 1
    diag = normal + (weight * neighbours + 1e-9 * float(scale[known].mean()))[:, None, None] \
        * eye
    lower = (-weight * eye).expand(t, k, k)
    raises = solve_block_tridiagonal(diag, lower, rhs)[..., 0]
    return bound_brows(torch.where(known.any(0, keepdim=True), raises, 0.0)).float()


def brow_landmarks(model: FaceModel, coeffs: Coefficients, brows: Brows | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The mapped brow landmarks' 0-based iBUG ids ``(M,)`` and their projections ``(T, M, 2)``
    at the coefficients' raises (the fit's reported landmarks then match what a renderer
    draws)."""
    ids = model.landmark_indices
    mapped = [i for brow in _brow_points(model) for i in brow]
    brows = brows if brows is not None else build_brows(model)
    index = ids[mapped]
    dtype = coeffs.expression.dtype
    offsets = torch.einsum("tj,jnd->tnd", coeffs.brows.to(dtype),
                           brows.offsets[:, index].to(coeffs.expression.device, dtype))
    verts = lid_vertices(model, coeffs, index, offsets)
    return torch.tensor(mapped, dtype=torch.long), project_vertices(coeffs, verts)[..., :2]
