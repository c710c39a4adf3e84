"""Fit how far each brow is raised in every frame, from the brows' landmarks.

After the main fit (identity, expression, jaw, pose), the raise ``k`` of each brow
(:mod:`faceanime.morphable.brows`) is the one whose projected brow landmarks (iBUG 18-22 and
23-27, 1-based) best match the detected ones. With ``p0`` a point of the fit at raise 0 and
``J`` its projected motion at raise 1, the point is ``p0 + k J``: linear in ``k`` (exactly for
the orthographic camera). Per frame and brow the least-squares raise is
``Σ J·(p - p0) / Σ |J|²`` over its five points; over a video consecutive frames are tied as the
eyelids' are (:func:`~faceanime.fitting.linalg.smooth_fit`), then bounded to ``BROWS_RANGE``.

After the emotions, as the pucker is (:mod:`faceanime.fitting.pucker`): it takes the part of
the brows' motion the emotions leave, and changes nothing they already fit. A constant part of
that residual (dlib's points on the brows' upper edge, the model's along their middle) is in
every frame's raise, the photo's too; relative transfer takes the driver's changes only.
"""

from __future__ import annotations

import torch

from faceanime.coefficients import Coefficients
from faceanime.fitting.eyelid import lid_vertices
from faceanime.fitting.linalg import smooth_fit
from faceanime.morphable.brows import BROWS, BROWS_RANGE, Brows, build_brows
from faceanime.morphable.model import FaceModel
from faceanime.reconstruction import project_vertices


def _brow_points(model: FaceModel) -> list[list[int]]:
    """Each brow's mapped landmarks (0-based iBUG ids)."""
    ids = model.landmark_indices
    return [[i for i in brow if int(ids[i]) >= 0] for brow in BROWS]


def fit_brows(model: FaceModel, coeffs: Coefficients, temporal_weight: float = 0.1,
              brows: Brows | None = None) -> torch.Tensor:
    """Raise of each brow in every frame of a fit.

    Args:
        model: the model the coefficients were fitted with.
        coeffs: ``T`` fitted frames (brows at 0) with their detected ``landmarks``.
        temporal_weight: smoothness between consecutive frames, as in
            :class:`~faceanime.fitting.FitConfig` (0: each frame alone).
        brows: the model's brow rig (built when None).

    Returns:
        ``(T, 2)`` raises within ``BROWS_RANGE``; zeros when the coefficients hold no landmarks.
    """
    t = coeffs.n_frames
    device = coeffs.expression.device
    if coeffs.landmarks is None:
        return torch.zeros(t, 2, device=device)
    brows = brows if brows is not None else build_brows(model)
    ids = model.landmark_indices
    dtype = torch.float64
    c = coeffs.to(dtype=dtype)
    points = c.landmarks.to(dtype)
    precision = torch.zeros(t, 2, dtype=dtype, device=device)
    rhs = torch.zeros(t, 2, dtype=dtype, device=device)
    for e, brow in enumerate(_brow_points(model)):
        if not brow:
            continue
        index = ids[brow]
        rest = project_vertices(c, lid_vertices(model, c, index))[..., :2]      # (T, n, 2)
        raised = brows.offsets[e, index].to(device, dtype)[None]
        motion = project_vertices(c, lid_vertices(model, c, index, raised))[..., :2] - rest
        observed = points[:, brow]
        seen = torch.isfinite(observed).all(-1)                                 # (T, n)
        diff = torch.nan_to_num(observed - rest)
        precision[:, e] = torch.where(seen, (motion * motion).sum(-1), 0.0).sum(1)
        rhs[:, e] = torch.where(seen, (motion * diff).sum(-1), 0.0).sum(1)
    known = precision > 0
    raises = smooth_fit(precision, rhs, known, temporal_weight)
    return torch.where(known.any(0, keepdim=True), raises, 0.0).clamp(*BROWS_RANGE).float()


def brow_landmarks(model: FaceModel, coeffs: Coefficients, brows: Brows | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The mapped brow landmarks' 0-based iBUG ids ``(M,)`` and their projections ``(T, M, 2)``
    at the coefficients' raises (the fit's reported landmarks then match what a renderer
    draws)."""
    ids = model.landmark_indices
    mapped = [i for brow in _brow_points(model) for i in brow]
    which = torch.tensor([e for e, brow in enumerate(_brow_points(model)) for _ in brow],
                         dtype=torch.long)
    brows = brows if brows is not None else build_brows(model)
    index = ids[mapped]
    dtype = coeffs.expression.dtype
    offsets = (coeffs.brows.to(dtype)[:, which, None]
               * brows.offsets[which, index].to(coeffs.expression.device, dtype)[None])
    verts = lid_vertices(model, coeffs, index, offsets)
    return torch.tensor(mapped, dtype=torch.long), project_vertices(coeffs, verts)[..., :2]
