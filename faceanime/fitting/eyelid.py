"""Fit the eyelid closure of every frame from the six landmarks of each eye.

After the main fit (identity, expression, jaw, pose), each eye's closure ``c`` (1 shut, 0 the
model's opening, negative wider: ``CLOSURE_RANGE``)
(:mod:`faceanime.morphable.eyelid`) is the one whose projected lid gaps best match the detected
ones. The closure moves only the upper lid, so with ``d0`` the model's projected gap (upper-lid
landmark minus the lower-lid landmark below it) at closure 0 and ``J`` the projected motion of the
upper-lid landmark at full closure, the gap is ``d0 + c J``: linear in ``c``. Gaps, not positions,
are matched, so a small error of the fitted pose does not leak into the lids.

Per frame the least-squares closure is ``ĉ = Σ J·(d - d0) / Σ |J|²`` over the eye's two landmark
pairs; over a video the closures of consecutive frames are tied by the fitter's temporal weight
(relative to the frames' own precision ``Σ |J|²``), solved exactly as one tridiagonal system,
then bounded to ``CLOSURE_RANGE``. Frames without landmarks take their neighbours' values.

Detected landmarks never quite meet on a shut eye: dlib's upper and lower lid points stay about
a tenth of the eye's width apart (eye aspect ratio 0.098 on d6's deepest blink, 0.11 on d3's
shut eyes, against 0.38 and 0.24 open). Fitted as they are, blinks would render three quarters
shut or less. ``floor`` reads such a gap as shut.
"""

from __future__ import annotations

import torch

from faceanime.coefficients import Coefficients
from faceanime.fitting.linalg import smooth_fit
from faceanime.morphable.eyelid import CLOSURE_RANGE, EYES, Eyelids, build_eyelids
from faceanime.morphable.jaw import apply_jaw, build_jaw
from faceanime.morphable.model import FaceModel
from faceanime.reconstruction import project_vertices

# At most this share of the model's opening is read as shut (a model with slit eyes).
MAX_FLOOR_SHARE = 0.5
# Closures the landmarks follow faithfully; above, they saturate towards their shut reading.
LANDMARK_KNEE = 0.35


def read_as_shut(closure: torch.Tensor, floor: torch.Tensor, knee: float = LANDMARK_KNEE
                 ) -> torch.Tensor:
    """Closures of landmarks that saturate near shut: ``(T, 2)`` closures and the share of the
    model's opening ``floor (T, 2)`` the landmarks still show on a shut eye -> ``(T, 2)``.

    Up to ``knee`` a closure is taken as fitted (squints, a lowered gaze: the landmarks follow
    the lids there); from the knee on it rises linearly to 1 where the fitted closure reaches
    ``1 - floor`` (the landmarks' shut reading), continuing beyond (clamped by the caller)."""
    span = (1 - floor - knee).clamp_min(0.05)
    return closure + floor * (closure - knee).clamp_min(0) / span


def lid_vertices(model: FaceModel, coeffs: Coefficients, index: torch.Tensor,
                 offsets: torch.Tensor | None = None) -> torch.Tensor:
    """Model-space positions ``(T, len(index), 3)`` of a few vertices at the coefficients'
    identity, expression and jaw (eyelids open, lips as modelled): the full mesh is not
    needed. ``offsets`` (``(T or 1, len(index), 3)``, e.g. a lip rig's) are added before the
    jaw turns."""
    dtype = coeffs.expression.dtype
    ks, ke = coeffs.shape.shape[0], coeffs.expression.shape[1]
    mean = model.mean[index].to(dtype)
    verts = mean + torch.einsum("k,knd->nd", coeffs.shape,
                                model.shape_basis[:ks, index].to(dtype))
    verts = verts + torch.einsum("bk,knd->bnd", coeffs.expression,
                                 model.expression_basis[:ke, index].to(dtype))
    if offsets is not None:
        verts = verts + offsets.to(dtype)
    if bool((coeffs.jaw != 0).any()):
        jaw = build_jaw(model)
        verts = apply_jaw(verts, coeffs.jaw, jaw.pivot.to(dtype), jaw.weights[index].to(dtype))
    return verts


def eyelid_gaps(points: torch.Tensor, eyelids: Eyelids) -> torch.Tensor:
    """``(T, 68, 2)`` landmarks -> ``(T, 2, 2, 2)`` gap vectors (upper minus lower lid) per eye
    and landmark pair."""
    return points[:, eyelids.upper] - points[:, eyelids.lower]


def fit_eyelids(model: FaceModel, coeffs: Coefficients, temporal_weight: float = 0.3,
                eyelids: Eyelids | None = None, floor: float = 0.0) -> torch.Tensor:
    """Eyelid closures of every frame of a fit.

    Args:
        model: the model the coefficients were fitted with.
        coeffs: ``T`` fitted frames with their detected ``landmarks``.
        temporal_weight: smoothness between consecutive frames, as in
            :class:`~faceanime.fitting.FitConfig` (0: each frame alone).
        eyelids: the model's rig (built when None).
        floor: the eye aspect ratio (lid gap over eye width) the landmarks still show on a
            shut eye (0 for exact landmarks): with ``W`` the eye's projected width, a closure
            that leaves ``floor · W`` of gap reads as shut (:func:`read_as_shut`).

    Returns:
        ``(T, 2)`` closures within ``CLOSURE_RANGE``; zeros when the coefficients hold no landmarks.
    """
    t = coeffs.n_frames
    if coeffs.landmarks is None:
        return torch.zeros(t, 2, device=coeffs.expression.device)
    eyelids = eyelids if eyelids is not None else build_eyelids(model)
    dtype = torch.float64
    rig = eyelids.to(dtype=dtype)
    ids = model.landmark_indices
    # Only the eight lid vertices are needed: upper lids (eye, pair), then lower lids.
    lids = torch.cat([ids[rig.upper.reshape(-1)], ids[rig.lower.reshape(-1)],
                      ids[torch.tensor([c for eye in EYES for c in eye["corners"]])]])
    c = coeffs.to(dtype=dtype)
    verts = lid_vertices(model, c, lids)                                     # (T, 8, 3)
    at_rest = project_vertices(c, verts)[..., :2]
    upper, lower = at_rest[:, :4].view(t, 2, 2, 2), at_rest[:, 4:8].view(t, 2, 2, 2)
    corners = at_rest[:, 8:].view(t, 2, 2, 2)
    width = (corners[:, :, 0] - corners[:, :, 1]).norm(dim=-1)               # (T, 2)
    gap0 = upper - lower                                                     # (T, 2, 2, 2)
    # The projected motion of each upper-lid landmark at full closure of its eye (exact for the
    # orthographic camera, the secant for the perspective one).
    shift = torch.stack([rig.offsets[e, ids[rig.upper[e]]] for e in range(2)]).reshape(4, 3)
    closed = verts.clone()
    closed[:, :4] += shift
    motion = (project_vertices(c, closed)[:, :4, :2] - at_rest[:, :4]).view(t, 2, 2, 2)
    observed = eyelid_gaps(coeffs.landmarks.to(dtype), rig)
    known = torch.isfinite(observed).all(-1).all(-1)                         # (T, 2)
    diff = torch.nan_to_num(observed - gap0)
    precision = torch.where(known, (motion * motion).sum((-1, -2)), 0.0)     # (T, 2)
    rhs = torch.where(known, (motion * diff).sum((-1, -2)), 0.0)
    closure = smooth_fit(precision, rhs, known, temporal_weight)
    if floor > 0:
        opening = gap0.norm(dim=-1).mean(-1)                                 # (T, 2)
        read_shut = (floor * width / opening.clamp_min(1e-9)).clamp(max=MAX_FLOOR_SHARE)
        closure = read_as_shut(closure, read_shut)
    return closure.clamp(*CLOSURE_RANGE).float()
