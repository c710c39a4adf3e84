"""Fit the lips of every frame from the mouth's landmarks, after the main fit (identity,
expression, jaw, pose): the **closure** (how far the lips are apart beyond what the jaw and the
emotions explain) from the inner lips' gaps, then the **pucker** (how much narrower the mouth is
than the model's) from its widths (:mod:`faceanime.morphable.lips`).

Both are linear in the projected spans between landmark pairs: with ``s0`` a span of the fit
and ``J`` its projected change at closure (pucker) 1, the span is ``s0 + k J`` (exactly for the
orthographic camera). Per frame the least-squares value is ``Σ J·(s - s0) / Σ |J|²``; over a
video consecutive frames are tied as the eyelids' are
(:func:`~faceanime.fitting.linalg.smooth_fit`), then bounded to ``LIPS_RANGE``
(``PUCKER_RANGE``). Spans between landmarks, not the landmarks themselves, so a small error of
the fitted pose does not leak into them.

**Closure.** The jaw opens the mouth by turning the chin, and the fit weighs the chin's outline
with the lips: on d6, a talking face whose lips part more than its chin drops, the fitted
inner-lip gap was ``0.86 ×`` the tracked one ``+ 0.03`` inter-ocular distances (open when the
lips were shut, a fifth short at the widest "ah"), and the mouth hole the renderers fill lay
3-8 px outside the tracked inner lips. Fitted from the three inner-lip gaps (iBUG 62/68, 63/67,
64/66, 1-based), the gap is ``0.97 ×`` the tracked one and correlates 0.999 with it.

**Pucker.** Widths are spans across the mouth (the corners, iBUG 49/55 1-based; the outer lips,
50/54 and 60/56; their middles, 51/53 and 59/57; the inner lips, 62/64 and 68/66), fitted after
the closure. After the emotions, not with them: fitted as one more expression coefficient
inside the main solve, the pucker took over part of what the emotions explained elsewhere too
(d0's grin lost its fear blendshape, which lifts the upper lip, and a photo driven by it opened
its mouth a fifth less), for 10-15 % more of d6's "o". Left to the residual, it changes nothing
the emotions already fit.
"""

from __future__ import annotations

import torch

from faceanime.coefficients import Coefficients
from faceanime.fitting.eyelid import lid_vertices
from faceanime.fitting.linalg import smooth_fit
from faceanime.morphable.lips import LIPS_RANGE, PUCKER_RANGE, Lips, build_lips
from faceanime.morphable.model import FaceModel
from faceanime.reconstruction import project_vertices

GAPS = ((61, 67), (62, 66), (63, 65))
"""Landmark pairs (0-based iBUG) across the inner lips whose gaps the closure explains."""

SPANS = ((48, 54), (49, 53), (59, 55), (50, 52), (58, 56), (61, 63), (67, 65))
"""Landmark pairs (0-based iBUG) across the mouth whose widths the pucker explains."""

MOUTH = tuple(range(48, 68))
"""The mouth's landmarks (0-based iBUG), which the pucker moves."""


def fit_lip_closure(model: FaceModel, coeffs: Coefficients, temporal_weight: float = 0.1,
                    lips: Lips | None = None) -> torch.Tensor:
    """Lip closure of every frame of a fit: the one at which its inner lips are as far apart
    as the detected ones.

    Args:
        model: the model the coefficients were fitted with.
        coeffs: ``T`` fitted frames with their detected ``landmarks``; their ``lips`` are the
            closure the fit starts from (zeros from the main fit).
        temporal_weight: smoothness between consecutive frames, as in
            :class:`~faceanime.fitting.FitConfig` (0: each frame alone).
        lips: the model's lip rig (built when None).

    Returns:
        ``(T,)`` closures within ``LIPS_RANGE``; ``coeffs.lips`` when the coefficients hold no
        landmarks or the model maps none of the gaps.
    """
    lips = lips if lips is not None else build_lips(model)
    step = _fit_spans(model, coeffs, GAPS, lips.offsets, lips, temporal_weight)
    if step is None:
        return coeffs.lips.clone()
    return (coeffs.lips.to(step) + step).clamp(*LIPS_RANGE).float()


def fit_pucker(model: FaceModel, coeffs: Coefficients, temporal_weight: float = 0.1,
               lips: Lips | None = None) -> torch.Tensor:
    """Pucker of every frame of a fit, at its lip closure.

    Args:
        model: the model the coefficients were fitted with.
        coeffs: ``T`` fitted frames with their detected ``landmarks``.
        temporal_weight: smoothness between consecutive frames, as in
            :class:`~faceanime.fitting.FitConfig` (0: each frame alone).
        lips: the model's lip rig (built when None).

    Returns:
        ``(T,)`` puckers within ``PUCKER_RANGE``; zeros when the coefficients hold no
        landmarks or the model maps none of the spans.
    """
    lips = lips if lips is not None else build_lips(model)
    pucker = _fit_spans(model, coeffs, SPANS, lips.pucker, lips, temporal_weight)
    if pucker is None:
        return torch.zeros(coeffs.n_frames, device=coeffs.expression.device)
    return pucker.clamp(*PUCKER_RANGE).float()


def _fit_spans(model: FaceModel, coeffs: Coefficients, pairs: tuple[tuple[int, int], ...],
               unit: torch.Tensor, lips: Lips, temporal_weight: float) -> torch.Tensor | None:
    """``(T,)`` float64 least-squares amount of the ``(N, 3)`` vertex motion ``unit`` (added to
    the frames' closure) that makes the projected spans between the landmark ``pairs`` match
    the detected ones, tied between frames; None without landmarks or mapped pairs."""
    ids = model.landmark_indices
    spans = [(a, b) for a, b in pairs if int(ids[a]) >= 0 and int(ids[b]) >= 0]
    if coeffs.landmarks is None or not spans:
        return None
    device = coeffs.expression.device
    dtype = torch.float64
    n = len(spans)
    index = ids[[a for a, _ in spans] + [b for _, b in spans]]
    c = coeffs.to(dtype=dtype)
    closure = c.lips[:, None, None] * lips.offsets[index].to(device, dtype)[None]
    rest = project_vertices(c, lid_vertices(model, c, index, closure))[..., :2]
    shifted = closure + unit[index].to(device, dtype)[None]
    moved = project_vertices(c, lid_vertices(model, c, index, shifted))[..., :2]
    span0 = rest[:, :n] - rest[:, n:]                                         # (T, n, 2)
    motion = moved[:, :n] - moved[:, n:] - span0
    points = c.landmarks.to(dtype)
    observed = points[:, [a for a, _ in spans]] - points[:, [b for _, b in spans]]
    seen = torch.isfinite(observed).all(-1)                                   # (T, n)
    diff = torch.nan_to_num(observed - span0)
    precision = torch.where(seen, (motion * motion).sum(-1), 0.0).sum(1, keepdim=True)
    rhs = torch.where(seen, (motion * diff).sum(-1), 0.0).sum(1, keepdim=True)
    known = seen.any(1, keepdim=True) & (precision > 0)
    return smooth_fit(precision, rhs, known, temporal_weight)[:, 0]


def mouth_landmarks(model: FaceModel, coeffs: Coefficients, lips: Lips | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The mapped mouth landmarks' 0-based iBUG ids ``(M,)`` and their projections ``(T, M, 2)``
    at the coefficients' lip closure and pucker (the fit's reported landmarks then match what
    a renderer draws)."""
    ids = model.landmark_indices
    mapped = torch.tensor([i for i in MOUTH if int(ids[i]) >= 0], dtype=torch.long)
    lips = lips if lips is not None else build_lips(model)
    index = ids[mapped]
    dtype = coeffs.expression.dtype
    offsets = (coeffs.lips[:, None, None] * lips.offsets[index].to(dtype)[None]
               + coeffs.pucker[:, None, None] * lips.pucker[index].to(dtype)[None])
    verts = lid_vertices(model, coeffs, index, offsets)
    return mapped, project_vertices(coeffs, verts)[..., :2]
