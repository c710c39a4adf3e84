"""Fit a morphable model to 68-point landmarks: one identity per sequence, per-frame expression,
jaw and pose, by batched Levenberg–Marquardt.

Objective (residuals in units of the sequence's face size ``d``, so that the weights do not depend
on the image resolution)::

    E = sum_f sum_l m_fl ||(pi_f(X_l(alpha, beta_f, theta_f)) - y_fl) / d||^2
        + w_shape T ||alpha||^2 + w_expr sum_f ||beta_f||^2 + w_jaw sum_f theta_f^2
        + w_time sum_f (x_f - x_(f-1))^T H (x_f - x_(f-1))

``alpha`` is in standard deviations (the bases are eigenvalue-scaled), so the shape term is the
eigenvalue-scaled Tikhonov prior, counted once per frame with a face (``T``); ``H`` is the mean
per-frame Gauss-Newton matrix, so the temporal weight is dimensionless (docs/fitting.md).

The normal equations have block-arrow structure (per-frame blocks coupled through the shared
identity, and with the temporal term to their neighbours), solved exactly by a Schur complement:
a batched (or block-tridiagonal, by cyclic reduction) ``D x D`` solve over the frames and one
``Ks x Ks`` solve for the identity — no loop over frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from faceanime.coefficients import Coefficients
from faceanime.errors import FaceNotFoundError, InputError
from faceanime.fitting.brows import brow_landmarks, fit_brows
from faceanime.fitting.contour import LEFT_JAW, RIGHT_JAW, contour_correspondences
from faceanime.fitting.eyelid import fit_eyelids
from faceanime.fitting.init import init_orthographic_pose
from faceanime.fitting.linalg import solve_block_tridiagonal
from faceanime.fitting.lips import fit_lip_closure, fit_pucker, mouth_landmarks
from faceanime.geometry.rotation import matrix_to_euler, so3_exp, so3_log
from faceanime.morphable.brows import brow_rig
from faceanime.morphable.eyelid import eyelid_rig
from faceanime.morphable.jaw import build_jaw, rotation_x
from faceanime.morphable.lips import lip_rig
from faceanime.morphable.model import N_LANDMARKS, FaceModel

_JAW_IDS = torch.tensor(RIGHT_JAW + LEFT_JAW)
_JAW_MIN = -0.02  # radians: a closed mouth may sit slightly tighter than the model's mean
# 0-based indices of the chin's (iBUG 5-13) and the mouth's (49-68) landmarks.
_LOWER_FACE = torch.tensor(list(range(4, 13)) + list(range(48, 68)))


@dataclass
class FitConfig:
    """Fitter settings. Weights are relative to a landmark residual measured in face sizes
    (the landmarks' bounding-box diagonal), so they hold at any resolution."""

    camera: Literal["orthographic", "perspective"] = "orthographic"
    """Camera model: scaled orthographic (FaceAnime's) or perspective."""
    focal: float | None = None
    """Perspective focal length in pixels; None estimates it by a search over a range."""
    n_shape: int | None = None
    """Identity components to fit (the leading ones); None fits all."""
    shape_weight: float = 2e-5
    """Tikhonov weight on the identity coefficients (standard deviations), per frame with a face:
    a video is regularised like a photo. Larger: closer to the mean face, less over-fitting of
    landmark noise."""
    expression_weight: float = 2e-5
    """Tikhonov weight on the expression coefficients."""
    jaw_weight: float = 1e-5
    """Tikhonov weight on the jaw angle (radians)."""
    lower_face_weight: float = 0.5
    """Weight of the chin's and the mouth's landmarks (iBUG 5-13 and 49-68) against the others'
    (1: every landmark alike). Lips pressed together or pushed out are a shape no part of the
    joint fit makes (the lip rigs are fitted after it): at full weight the least-squares pose
    moves the whole head to shrink their residual (d18: 3-4 px down while its nose and eye
    corners rose by one), and the warp moves the hair and shoulders with it. At 0.5 the head
    follows its skull (self-reenactment SSIM 0.8415 → 0.8471, cross pose error 3.57° →
    2.55°). The fit then opens a mouth more by its expressions, which relative transfer
    scales to the photo's room; ``MotionConfig.follow_gap`` keeps the lips parting as far as
    the driver's (docs/fitting.md)."""
    temporal_weight: float = 0.3
    """Smoothness of expression, jaw and pose between consecutive frames (videos only), relative
    to how precisely one frame's landmarks determine each of them: 1 trusts a neighbour's value
    as much as the frame's own landmarks; 0 fits every frame independently."""
    iterations: int = 12
    """Most Levenberg–Marquardt iterations."""
    tolerance: float = 2e-3
    """Stop once an iteration lowers the cost by less than this fraction, i.e. the RMS landmark
    residual by less than 0.1 % (typically after 4 iterations on a video; the pose is then within
    0.05 degrees (median) of the fully converged fit)."""
    contour: bool = True
    """Match the jaw-outline landmarks to the model's contour candidates."""
    contour_both_sides_deg: float = 15.0
    """Below this |yaw| both jaw sides are used; above it only the side facing the camera."""
    jaw: bool = True
    """Fit the articulated jaw (mouth opening)."""
    eyelids: bool = True
    """Fit each eye's lid closure (:mod:`faceanime.fitting.eyelid`), so blinks transfer."""
    eyelid_temporal_weight: float = 0.1
    """Smoothness of the lid closures between frames (as ``temporal_weight``; lower, since a
    blink lasts only a few frames)."""
    eyelid_floor: float = 0.1
    """The eye aspect ratio (lid gap over eye width) detected landmarks still show on a shut
    eye, read as shut (:func:`~faceanime.fitting.eyelid.fit_eyelids`): dlib's, measured on the
    shut eyes of d3 and d6; 0 for exact landmarks."""
    lip_closure: bool = True
    """Fit each frame's lip closure (:mod:`faceanime.fitting.lips`) after the expression and the
    jaw, so the fitted inner lips part as far as the detected ones (the jaw also answers to the
    chin's outline, and the emotions cannot part the lips without moving the chin)."""
    lip_closure_temporal_weight: float = 0.1
    """Smoothness of the lip closure between frames (as ``eyelid_temporal_weight``)."""
    pucker: bool = True
    """Fit each frame's pucker (how much narrower the mouth is than the model's,
    :mod:`faceanime.fitting.lips`) after the expression, so rounded lips ("o", "oo") transfer:
    the six emotions fit a narrowed mouth as wide as ever."""
    pucker_temporal_weight: float = 0.1
    """Smoothness of the pucker between frames (as ``eyelid_temporal_weight``: a vowel lasts a
    few frames)."""
    brows: bool = True
    """Fit how far each brow's inner and outer half is raised (:mod:`faceanime.fitting.brows`)
    after the expression: the six emotions explain about half of a talking face's brow
    motion."""
    brows_temporal_weight: float = 0.1
    """Smoothness of the brows' raise between frames (as ``eyelid_temporal_weight``)."""
    max_jaw_deg: float = 35.0
    """Largest jaw opening angle."""
    nonnegative_blendshapes: bool = True
    """Keep blendshape weights >= 0 (for blendshape models such as SFM; PCA bases are signed)."""
    device: str | None = None
    """Device to fit on (None: the model's)."""
    double: bool = False
    """Solve in float64. float32 gives the same fits (to 1e-3 px on d3.mp4) at twice the speed."""


@dataclass
class _Problem:
    """The fixed data of one fit, on the fitter's device and dtype."""

    mean: torch.Tensor  # (V, 3) over the vertex subset U
    shape_basis: torch.Tensor  # (V, 3, Ks)
    expr_basis: torch.Tensor  # (V, 3, Ke)
    expr_fixed: torch.Tensor  # (68, 3, Ke) rows of the landmarks' fixed vertices (any where none)
    jaw_weights: torch.Tensor  # (V,)
    pivot: torch.Tensor  # (3,)
    fixed_index: torch.Tensor  # (68,) index into U, -1 where no fixed vertex
    contour: tuple[torch.Tensor, torch.Tensor]  # candidate indices into U
    targets: torch.Tensor  # (T, 68, 2) pixels
    filled_targets: torch.Tensor  # the same, 0 where NaN (masked out of every residual)
    point_mask: torch.Tensor  # (T, 68) detected
    point_weight: torch.Tensor  # (68,) each landmark's weight in the residual
    face_size: float
    center: torch.Tensor  # (2,) principal point
    nonneg: bool


@dataclass
class _Corr:
    """Per-frame correspondences of the 68 landmarks: virtual vertices between ``first`` and
    ``second`` (indices into U) at ``weight``, and the mask of points used. All ``(T, 68)``."""

    first: torch.Tensor
    second: torch.Tensor
    weight: torch.Tensor
    use: torch.Tensor
    sliding: torch.Tensor | None = None  # columns whose vertices change between frames
    # (T, len(sliding), 2) unit normals of the contour where the sliding points matched: their
    # residual is measured along it only (point-to-line), so the match may slide along the
    # outline without cost, which makes re-matching converge in a few iterations, not dozens.
    normal: torch.Tensor | None = None


def _to_normal(x: torch.Tensor, corr: _Corr) -> torch.Tensor:
    """Replace the sliding points' 2D residual rows ``x[:, cols, :2]`` (``(T, L, 2)`` or
    ``(T, L, 2, K)``) by their component along the contour normal (and a zero row)."""
    cols = corr.sliding
    n = corr.normal if x.ndim == 3 else corr.normal[..., None]
    along = (x[:, cols] * n).sum(2, keepdim=True)
    x = x.clone()
    x[:, cols] = torch.cat([along, torch.zeros_like(along)], 2)
    return x


def _small_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for stacks of tiny matrices (``(..., 2, 3) @ (..., 3, K)``), as a broadcast
    product and sum: on CPU, batched matrix products of thousands of 2 x 3 matrices cost several
    times more."""
    return (a[..., :, :, None] * b[..., None, :, :]).sum(-2)


def _lerp_rows(attr: torch.Tensor, first: torch.Tensor, second: torch.Tensor,
               weight: torch.Tensor, batched: bool = False,
               sliding: torch.Tensor | None = None) -> torch.Tensor:
    """Rows of ``attr`` ``(V, ...)`` (or ``(T, V, ...)`` with ``batched``) at virtual vertices
    ``(1 - weight) * attr[first] + weight * attr[second]``; indices and weight ``(T, L)``.
    With ``sliding``, only those columns are interpolated (the others have weight 0)."""
    t_idx = torch.arange(first.shape[0], device=attr.device)[:, None]

    def rows(index: torch.Tensor) -> torch.Tensor:
        return attr[t_idx, index] if batched else attr[index]

    cols = sliding if sliding is not None else slice(None)
    out = rows(first)
    w = weight[:, cols]
    w = w.view(*w.shape, *([1] * (attr.ndim - 1 - batched)))
    part = out[:, cols]
    out[:, cols] = part + w * (rows(second[:, cols]) - part)
    return out


@dataclass
class _State:
    shape: torch.Tensor  # (Ks,)
    rotation: torch.Tensor  # (T, 3, 3)
    trans: torch.Tensor  # (T, 3)
    log_scale: torch.Tensor  # (T,) log(pixels per unit) | unused for perspective
    expression: torch.Tensor  # (T, Ke)
    jaw: torch.Tensor  # (T,)
    focal: float


def _vertex_subset(model: FaceModel) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                              torch.Tensor]:
    """The vertices the fit touches: mapped landmarks and contour candidates, remapped."""
    mapped = model.landmark_indices[model.landmark_indices >= 0]
    subset = torch.unique(torch.cat([mapped, model.contour_right, model.contour_left]))
    lookup = torch.full((model.n_vertices,), -1, dtype=torch.long)
    lookup[subset] = torch.arange(len(subset))
    li = model.landmark_indices
    fixed = torch.where(li >= 0, lookup[li.clamp_min(0)], -1)
    return subset, fixed, lookup[model.contour_right], lookup[model.contour_left]


def _landmarks_face_size(targets: torch.Tensor, mask: torch.Tensor) -> float:
    lo = torch.where(mask[..., None], targets, torch.inf).amin(1)
    hi = torch.where(mask[..., None], targets, -torch.inf).amax(1)
    diag = (hi - lo).norm(dim=-1)
    diag = diag[torch.isfinite(diag)]
    return float(diag.mean())


class _Evaluator:
    """Residuals and analytic Jacobians of the landmark term for a given correspondence."""

    def __init__(self, p: _Problem, camera: str) -> None:
        self.p = p
        self.camera = camera

    def articulate(self, s: _State, x: torch.Tensor, w: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """Open the jaw of points ``x`` (T, L, 3) with weights ``w`` (T, L, 1); also returns
        ``d x / d theta`` ``(T, L, 3)``. A point moves by ``x + w (Rx(theta) - I)(x - pivot)``,
        so its derivative by the point is ``I + w (Rx - I)``."""
        rx = rotation_x(s.jaw)  # (T, 3, 3)
        rel = x - self.p.pivot
        moved = rel @ rx.transpose(-1, -2)
        # d(Rx)/d(theta) applied to rel.
        c, sn = torch.cos(s.jaw)[:, None], torch.sin(s.jaw)[:, None]
        drel = torch.stack([torch.zeros_like(rel[..., 0]),
                            -sn * rel[..., 1] - c * rel[..., 2],
                            c * rel[..., 1] - sn * rel[..., 2]], -1)
        return x + w * (moved - rel), w * drel

    def vertices(self, s: _State) -> torch.Tensor:
        """Unarticulated positions ``(T, V, 3)`` of the whole vertex subset U."""
        p = self.p
        return (p.mean + torch.einsum("vdk,k->vd", p.shape_basis, s.shape)
                + torch.einsum("vdk,tk->tvd", p.expr_basis, s.expression))

    def points(self, s: _State, corr: _Corr, pieces: bool = False) -> dict[str, torch.Tensor]:
        """Model points ``(T, L, 3)`` at the correspondences (with ``pieces``, also what their
        Jacobians need). A point is a virtual vertex ``(1 - a) v_i + a v_j``."""
        p = self.p

        x = _lerp_rows(self.vertices(s), corr.first, corr.second, corr.weight, batched=True,
                       sliding=corr.sliding)
        w = _lerp_rows(p.jaw_weights, corr.first, corr.second, corr.weight,
                       sliding=corr.sliding)[..., None]
        xj, dtheta = self.articulate(s, x, w)
        out = {"x": xj}
        if pieces:
            out.update(w=w, dtheta=dtheta)
            if corr.sliding is not None:
                cols = corr.sliding
                out["eb_sliding"] = _lerp_rows(p.expr_basis, corr.first[:, cols],
                                               corr.second[:, cols], corr.weight[:, cols])
        return out

    def shape_blocks(self, r: torch.Tensor, jl: torch.Tensor, km: torch.Tensor, corr: _Corr
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The identity's blocks of the normal equations without forming its dense Jacobian.

        The shape Jacobian of landmark ``l`` in frame ``t`` is ``km[t, l] @ S_l`` with ``S_l``
        the ``(3, Ks)`` basis rows of its vertex. For the fixed landmarks ``S_l`` is the same in
        every frame, so ``sum_t J^T J = sum_l S_l^T (sum_t km^T km) S_l`` costs ``O(L Ks^2)``
        instead of ``O(T L Ks^2)``; only the sliding jaw points are formed per frame.

        Args:
            r: ``(T, L, 2)`` residuals; jl: ``(T, L, 2, D)`` local Jacobian;
            km: ``(T, L, 2, 3)`` d residual / d model point (masked and scaled).

        Returns:
            ``B (T, D, Ks)`` = J_local^T J_shape, ``C (Ks, Ks)`` = sum J_shape^T J_shape and
            ``g (Ks,)`` = sum J_shape^T r.
        """
        p = self.p
        fixed_rows = p.shape_basis[p.fixed_index.clamp_min(0)]  # (L, 3, Ks)
        km_fixed = km
        if corr.sliding is not None:
            km_fixed = km.clone()
            km_fixed[:, corr.sliding] = 0
        t, n, _, d = jl.shape
        q = torch.einsum("tlai,tlaj->lij", km_fixed, km_fixed)
        c = torch.einsum("lik,lim->km", fixed_rows, q @ fixed_rows)
        g = torch.einsum("lik,li->k", fixed_rows, torch.einsum("tlai,tla->li", km_fixed, r))
        # sum over the residual's two rows as broadcast products: batched 2 x 3 matrix
        # products are several times slower on CPU.
        # Built directly in its (T, D, L, 3) layout: permuting the product afterwards costs more
        # than the product.
        jt = jl.permute(0, 3, 1, 2)  # (T, D, L, 2)
        m = (jt[..., 0, None] * km_fixed[:, None, :, 0]
             + jt[..., 1, None] * km_fixed[:, None, :, 1])
        m = m.reshape(t * d, n * 3)
        b = (m @ fixed_rows.reshape(n * 3, -1)).view(t, d, -1)
        if corr.sliding is not None:
            # The sliding points' residuals are point-to-line: one row (along the contour
            # normal), the other is zero, so only that row's Jacobian is formed.
            cols = corr.sliding
            ks = fixed_rows.shape[-1]
            flat_basis = p.shape_basis.flatten(1)  # (V, 3 Ks)
            rows = torch.lerp(flat_basis[corr.first[:, cols]], flat_basis[corr.second[:, cols]],
                              corr.weight[:, cols, None]).view(t, -1, 3, ks)
            js = (km[:, cols, 0, :, None] * rows).sum(2)  # (T, S, Ks)
            flat = js.flatten(0, 1)
            c = c + flat.T @ flat
            g = g + flat.T @ r[:, cols, 0].flatten()
            b = b + jl[:, cols, 0].transpose(1, 2) @ js
        return b, c, g

    def project(self, s: _State, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels ``(T, L, 2)`` and d pixel / d rotated point: ``(T, 1, 2, 3)`` orthographic
        (shared by a frame's points), ``(T, L, 2, 3)`` perspective."""
        pr = x @ s.rotation.transpose(-1, -2)
        if self.camera == "orthographic":
            scale = s.log_scale.exp()[:, None]
            uv = torch.stack([scale * pr[..., 0] + s.trans[:, None, 0],
                              s.trans[:, None, 1] - scale * pr[..., 1]], -1)
            pi = torch.zeros(pr.shape[0], 1, 2, 3, dtype=x.dtype, device=x.device)
            pi[..., 0, 0] = scale
            pi[..., 1, 1] = -scale
            return uv, pi
        pc = pr + s.trans[:, None]
        z = (-pc[..., 2]).clamp_min(1e-6)
        f = s.focal
        uv = torch.stack([self.p.center[0] + f * pc[..., 0] / z,
                          self.p.center[1] - f * pc[..., 1] / z], -1)
        pi = torch.zeros(*pr.shape[:2], 2, 3, dtype=x.dtype, device=x.device)
        pi[..., 0, 0] = f / z
        pi[..., 0, 2] = f * pc[..., 0] / z**2
        pi[..., 1, 1] = -f / z
        pi[..., 1, 2] = -f * pc[..., 1] / z**2
        return uv, pi

    def residual(self, s: _State, corr: _Corr, jacobian: bool
                 ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Residual ``(T, 2L)``; with ``jacobian``, local ``(T, 2L, D)`` and shape ``(T, 2L, Ks)``
        Jacobians. Local parameters: rotation increment (3), translation (2 ortho | 3 persp),
        log scale (ortho only), expression (Ke), jaw (1)."""
        p = self.p
        parts = self.points(s, corr, pieces=jacobian)
        uv, pi = self.project(s, parts["x"])
        mk = (corr.use * p.point_weight).to(uv.dtype)[..., None]
        err = uv - p.filled_targets
        if corr.normal is not None:
            err = _to_normal(err, corr)
        r = err * mk / p.face_size
        if not jacobian:
            return r, None, None
        t, n = corr.first.shape
        # d pixel / d model point: (T, 1, 2, 3) for the orthographic camera (the same for every
        # point of a frame), (T, L, 2, 3) for the perspective one.
        k = _small_matmul(pi, s.rotation[:, None])
        pr = parts["x"] @ s.rotation.transpose(-1, -2)
        # Left rotation increment: d(exp(w) P)/dw = -[P]x, so row a of pi @ (-[P]x) is P x pi_a.
        j_rot = torch.linalg.cross(pr[..., None, :].expand(-1, -1, 2, -1),
                                   pi.expand(-1, pr.shape[1], -1, -1), dim=-1)  # (T, L, 2, 3)
        eye = torch.eye(3, dtype=k.dtype, device=k.device)
        kr = _small_matmul(k, (rotation_x(s.jaw) - eye)[:, None])  # per frame when orthographic
        km = k + parts["w"][..., None] * kr  # (T, L, 2, 3): d pixel / d unarticulated point
        # The fixed landmarks share their basis rows across frames: one product per landmark
        # over all frames; the sliding ones use their own rows.
        j_expr = torch.einsum("tlai,lie->tlae", km, p.expr_fixed)
        if corr.sliding is not None:
            j_expr[:, corr.sliding] = _small_matmul(km[:, corr.sliding], parts["eb_sliding"])
        j_jaw = _small_matmul(k, parts["dtheta"][..., None])  # (T, L, 2, 1)
        if self.camera == "orthographic":
            eye2 = torch.eye(2, dtype=uv.dtype, device=uv.device).expand(t, n, 2, 2)
            centred = (uv - s.trans[:, None, :2])[..., None]  # d uv / d log s
            j_cam = torch.cat([eye2, centred], -1)
        else:
            j_cam = pi  # d uv / d translation (3)
        j_local = torch.cat([j_rot, j_cam, j_expr, j_jaw], -1)
        if corr.normal is not None:
            j_local, km = _to_normal(j_local, corr), _to_normal(km, corr)
        weight = mk[..., None] / p.face_size  # (T, L, 1, 1)
        return r, j_local * weight, km * weight


def _prepare(model: FaceModel, landmarks: torch.Tensor, config: FitConfig,
             dtype: torch.dtype, device: torch.device) -> _Problem:
    subset, fixed, cand_r, cand_l = _vertex_subset(model.to("cpu"))
    m = model.to(device, dtype)
    subset = subset.to(device)
    ks = model.n_shape if config.n_shape is None else min(config.n_shape, model.n_shape)
    jaw = build_jaw(model).to(device, dtype) if config.jaw else None
    targets = landmarks.to(device, dtype)
    mask = torch.isfinite(targets).all(-1)
    size = _landmarks_face_size(targets, mask)
    return _Problem(
        mean=m.mean[subset],
        shape_basis=m.shape_basis[:ks, subset].permute(1, 2, 0).contiguous(),
        expr_basis=m.expression_basis[:, subset].permute(1, 2, 0).contiguous(),
        expr_fixed=m.expression_basis[:, subset[fixed.clamp_min(0).to(device)]]
        .permute(1, 2, 0).contiguous(),
        jaw_weights=(jaw.weights[subset] if jaw is not None
                     else torch.zeros(len(subset), dtype=dtype, device=device)),
        pivot=(jaw.pivot if jaw is not None else torch.zeros(3, dtype=dtype, device=device)),
        fixed_index=fixed.to(device), contour=(cand_r.to(device), cand_l.to(device)),
        targets=targets, filled_targets=torch.nan_to_num(targets), point_mask=mask,
        point_weight=landmark_weights(config.lower_face_weight, dtype, device),
        face_size=size,
        center=torch.zeros(2, dtype=dtype, device=device),
        nonneg=config.nonnegative_blendshapes and model.expression_eigenvalues is None,
    )


def landmark_weights(lower_face: float, dtype: torch.dtype = torch.float32,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """``(68,)`` each iBUG landmark's weight in the fit: ``lower_face`` for the chin's (iBUG
    5-13) and the mouth's (49-68), 1 for the others."""
    weight = torch.ones(68, dtype=dtype, device=device)
    weight[_LOWER_FACE.to(device)] = lower_face
    return weight


def _correspondences(ev: _Evaluator, s: _State, config: FitConfig, has_contour: bool) -> _Corr:
    """The 68 landmarks' correspondences at the current state (contour points re-matched)."""
    p = ev.p
    t = p.targets.shape[0]
    index = p.fixed_index.clamp_min(0).expand(t, -1).clone()
    second = index.clone()
    weight = torch.zeros(index.shape, dtype=p.mean.dtype, device=index.device)
    use = p.point_mask & (p.fixed_index >= 0)
    if config.contour and has_contour:
        xj, _ = ev.articulate(s, ev.vertices(s), p.jaw_weights[None, :, None])
        uv, _ = ev.project(s, xj)
        yaw = matrix_to_euler(s.rotation)[:, 0]
        first, sec, wt, side = contour_correspondences(
            uv, p.targets, p.contour, yaw, math.radians(config.contour_both_sides_deg))
        jaw_ids = _JAW_IDS.to(index.device)
        index[:, jaw_ids], second[:, jaw_ids], weight[:, jaw_ids] = first, sec, wt.to(weight.dtype)
        use[:, jaw_ids] = p.point_mask[:, jaw_ids] & side
        t_idx = torch.arange(t, device=index.device)[:, None]
        tangent = uv[t_idx, sec] - uv[t_idx, first]
        tangent = tangent / tangent.norm(dim=-1, keepdim=True).clamp_min(1e-9)
        normal = torch.stack([-tangent[..., 1], tangent[..., 0]], -1)
        return _Corr(index, second, weight, use, sliding=jaw_ids, normal=normal)
    return _Corr(index, second, weight, use)


def _temporal(s: _State, valid_pairs: torch.Tensor, metric_chol: torch.Tensor,
              camera: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Differences to the previous frame ``(T-1, D)`` in the local parameter space (rotation as
    the relative rotation vector), times ``metric_chol`` (so their squared norm is measured in
    the metric it factors); and per-frame neighbour counts ``(T,)``."""
    rot = so3_log(s.rotation[1:] @ s.rotation[:-1].transpose(-1, -2))
    trans = s.trans[:, :2] if camera == "orthographic" else s.trans
    cam = [trans]
    if camera == "orthographic":
        cam.append(s.log_scale[:, None])
    x = torch.cat([*cam, s.expression, s.jaw[:, None]], -1)
    diff = torch.cat([rot, x[1:] - x[:-1]], -1) @ metric_chol
    diff = diff * valid_pairs[:, None]
    t = s.rotation.shape[0]
    count = torch.zeros(t, dtype=diff.dtype, device=diff.device)
    count[1:] += valid_pairs
    count[:-1] += valid_pairs
    return diff, count


def _cost(r: torch.Tensor, s: _State, config: FitConfig, tdiff: torch.Tensor | None,
          shape_prior: float) -> torch.Tensor:
    c = (r**2).sum() + shape_prior * (s.shape**2).sum()
    c = c + config.expression_weight * (s.expression**2).sum()
    c = c + config.jaw_weight * (s.jaw**2).sum()
    if tdiff is not None:
        c = c + config.temporal_weight * (tdiff**2).sum()
    return c


def _interpolate_invalid(s: _State, valid: torch.Tensor) -> None:
    """Fill frames with no landmarks from their valid neighbours (linear; rotations by slerp),
    in place. Frames before the first or after the last valid one copy it."""
    t = valid.shape[0]
    if bool(valid.all()):
        return
    idx = torch.arange(t, device=valid.device)
    vidx = idx[valid]
    pos = torch.searchsorted(vidx, idx).clamp(1, len(vidx) - 1) if len(vidx) > 1 else None
    if pos is None:
        prev = nxt = vidx.expand(t)
        a = torch.zeros(t, dtype=s.trans.dtype, device=valid.device)
    else:
        prev, nxt = vidx[pos - 1], vidx[pos]
        a = ((idx - prev).to(s.trans.dtype) / (nxt - prev).to(s.trans.dtype)).clamp(0, 1)
    fill = ~valid
    for name in ("trans", "log_scale", "expression", "jaw"):
        v = getattr(s, name)
        shape = (-1,) + (1,) * (v.ndim - 1)
        interp = v[prev] + a.view(shape) * (v[nxt] - v[prev])
        v[fill] = interp[fill]
    rel = so3_log(s.rotation[prev].transpose(-1, -2) @ s.rotation[nxt])
    slerp = s.rotation[prev] @ so3_exp(a[:, None] * rel)
    s.rotation[fill] = slerp[fill]


def _solve(p: _Problem, config: FitConfig, s: _State,
           valid: torch.Tensor, has_contour: bool) -> tuple[_State, _Corr]:
    """Levenberg–Marquardt on all frames at once; returns the state and final correspondences."""
    ev = _Evaluator(p, config.camera)
    t = p.targets.shape[0]
    ks = p.shape_basis.shape[-1]
    ke = p.expr_basis.shape[-1]
    ortho = config.camera == "orthographic"
    dtype, device = p.mean.dtype, p.mean.device
    n_cam = 3  # (tx, ty, log s) orthographic, (tx, ty, tz) perspective
    d = 3 + n_cam + ke + 1
    # Frame-to-frame changes are measured in the metric of one frame's data: the mean per-frame
    # Gauss-Newton matrix (fixed at the first iteration). One dimensionless weight then balances
    # smoothness against the landmarks alike for rotations, translations and weakly observed
    # combinations (pitch against expression).
    metric = torch.eye(d, dtype=dtype, device=device)
    metric_chol = metric
    # The data term grows with the number of frames while the identity prior would not: scale it
    # so a video is regularised like a photo (landmark errors are not independent across frames:
    # the detector's bias for a face repeats in every frame).
    shape_prior = config.shape_weight * max(int(valid.sum()), 1)
    valid_pairs = (valid[1:] & valid[:-1]).to(dtype)
    use_time = config.temporal_weight > 0 and t > 1

    prior_diag = torch.zeros(d, dtype=dtype, device=device)
    prior_diag[3 + n_cam:3 + n_cam + ke] = config.expression_weight
    prior_diag[-1] = config.jaw_weight
    lam = 1e-3
    jaw_max = math.radians(config.max_jaw_deg) if config.jaw else 0.0
    lower = torch.full((d,), -torch.inf, dtype=dtype, device=device)
    upper = torch.full((d,), torch.inf, dtype=dtype, device=device)
    if p.nonneg:
        lower[3 + n_cam:3 + n_cam + ke] = 0.0
    lower[-1], upper[-1] = (_JAW_MIN, jaw_max) if config.jaw else (0.0, 0.0)
    for it in range(config.iterations):
        corr = _correspondences(ev, s, config, has_contour)
        r, jl4, km = ev.residual(s, corr, jacobian=True)
        b, c, gs = ev.shape_blocks(r, jl4, km, corr)
        r, jl = r.flatten(1), jl4.flatten(1, 2)
        if use_time and it == 0:
            metric = (jl.transpose(1, 2) @ jl)[valid].mean(0) + torch.diag(prior_diag)
            metric = metric + 1e-9 * metric.diagonal().mean() * torch.eye(d, dtype=dtype,
                                                                           device=device)
            metric_chol = torch.linalg.cholesky(metric)
        tdiff = count = None
        if use_time:
            tdiff, count = _temporal(s, valid_pairs, metric_chol, config.camera)
        cost = _cost(r, s, config, tdiff, shape_prior)

        local = torch.cat([torch.zeros(t, 3, dtype=dtype, device=device),
                           s.trans[:, :2] if ortho else s.trans] +
                          ([s.log_scale[:, None]] if ortho else []) +
                          [s.expression, s.jaw[:, None]], -1)
        a = jl.transpose(1, 2) @ jl + torch.diag_embed(prior_diag.expand(t, d))
        g = (jl.transpose(1, 2) @ r[..., None])[..., 0] + prior_diag * local
        lower_t = None
        if use_time:
            w = config.temporal_weight
            a = a + w * count[:, None, None] * metric
            step = tdiff @ metric_chol.T  # (x_f - x_f-1) @ metric
            grad_t = torch.zeros(t, d, dtype=dtype, device=device)
            grad_t[1:] += step
            grad_t[:-1] -= step
            g = g + w * grad_t
            lower_t = torch.zeros(t, d, d, dtype=dtype, device=device)
            lower_t[1:] = -w * valid_pairs[:, None, None] * metric
        c = c + shape_prior * torch.eye(ks, dtype=dtype, device=device)
        gs = gs + shape_prior * s.shape

        # Bounds (blendshape weights >= 0, jaw range) by an active set: a variable at its bound
        # whose gradient pushes it out is held there for this step, so the Gauss-Newton direction
        # of the others stays a descent direction (clamping alone can stall the iteration).
        active = ((local <= lower + 1e-9) & (g > 0)) | ((local >= upper - 1e-9) & (g < 0))
        system = _Normal(a, lower_t, b, c, g, gs)

        accepted = False
        for _ in range(6):  # LM damping search
            dl, ds = _bounded_step(system, lam, active, local, lower, upper)
            # Backtrack along the step before damping more: a bound met part-way bends the
            # projected step, and a shorter one usually still descends.
            for step in (1.0, 0.5, 0.2):
                trial = _apply(s, step * dl, step * ds, ortho, ke, p.nonneg, jaw_max)
                r_new, _, _ = ev.residual(trial, corr, jacobian=False)
                td_new = (_temporal(trial, valid_pairs, metric_chol, config.camera)[0]
                          if use_time else None)
                new_cost = _cost(r_new, trial, config, td_new, shape_prior)
                if new_cost <= cost:
                    accepted = True
                    break
            if accepted:
                s = trial
                lam = max(lam / 3, 1e-7)
                break
            lam *= 4
        if not accepted:
            break  # no step lowers the cost: converged as far as this precision allows
        if (cost - new_cost) < config.tolerance * cost:
            break
    return s, _correspondences(ev, s, config, has_contour)


@dataclass
class _Normal:
    """Gauss-Newton normal equations of one iteration, block-arrow with block-tridiagonal frames:
    ``[[A, B], [B^T, C]] [dl; ds] = -[g; gs]`` where ``A`` has diagonal blocks ``diag (T, D, D)``
    and, with the temporal term, sub-diagonal blocks ``lower (T, D, D)``; ``B (T, D, Ks)`` couples
    each frame to the identity."""

    diag: torch.Tensor
    lower: torch.Tensor | None
    b: torch.Tensor
    c: torch.Tensor
    g: torch.Tensor
    gs: torch.Tensor

    def frames_times(self, z: torch.Tensor) -> torch.Tensor:
        """``A z`` for ``z (T, D)``."""
        out = (self.diag @ z[..., None])[..., 0]
        if self.lower is not None:
            out[1:] += (self.lower[1:] @ z[:-1, :, None])[..., 0]
            out[:-1] += (self.lower[1:].transpose(1, 2) @ z[1:, :, None])[..., 0]
        return out


def _newton_step(n: _Normal, lam: float, active: torch.Tensor, fixed: torch.Tensor,
                 identity: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Damped step with the ``active`` variables ``(T, D)`` held at steps ``fixed`` ``(T, D)``
    (zero: stay; else move onto a bound): the others solve the reduced system exactly, by a
    Schur complement on the identity (frames by a batched or block-tridiagonal solve). With
    ``identity`` ``(Ks,)`` given, the identity's step is held at it and only the frames solve."""
    dtype = n.diag.dtype
    free = (~active).to(dtype)
    # Moving held variables shifts the free ones' gradient by the coupling.
    g = n.g + n.frames_times(fixed)
    if identity is not None:
        g = g + (n.b @ identity[:, None])[..., 0]
    a = n.diag + lam * torch.diag_embed(n.diag.diagonal(dim1=-2, dim2=-1) + 1e-9)
    a = a * free[:, :, None] * free[:, None, :] + torch.diag_embed(active.to(dtype))
    b = n.b * free[..., None]
    rhs_local = ((g * free)[..., None] if identity is not None
                 else torch.cat([b, (g * free)[..., None]], -1))
    if n.lower is not None:
        low = n.lower * free[:, :, None]
        low[1:] = low[1:] * free[:-1, None, :]
        sol = solve_block_tridiagonal(a, low, rhs_local)
    else:
        sol = torch.linalg.solve(a, rhs_local)
    if identity is not None:
        return torch.where(active, fixed, -sol[..., 0]), identity
    a_inv_b, a_inv_g = sol[..., :-1], sol[..., -1]
    gs = n.gs + n.b.flatten(0, 1).T @ fixed.flatten()
    c = n.c + lam * torch.diag(n.c.diagonal() + 1e-9)
    # Sums over frames as single matrix products (batched ones are slower on CPU).
    b_flat = b.flatten(0, 1)
    schur = c - b_flat.T @ a_inv_b.flatten(0, 1)
    rhs = -gs + b_flat.T @ a_inv_g.flatten()
    ds = torch.linalg.solve(schur, rhs)
    dl = -a_inv_g - (a_inv_b @ ds[:, None])[..., 0]
    return torch.where(active, fixed, dl), ds


def _bounded_step(n: _Normal, lam: float, active: torch.Tensor, local: torch.Tensor,
                  lower: torch.Tensor, upper: torch.Tensor, passes: int = 3
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Damped Gauss-Newton step that respects the bounds ``lower <= local + dl <= upper``.

    Variables the step would carry past a bound are moved onto it and held, and the others are
    solved again with them fixed, a few times. Clamping the unconstrained step instead would
    leave the free variables' step blind to the clamp, which (with frames coupled in time) makes
    the active set creep by a few variables per iteration and the fit take dozens of them. The
    re-solves keep the identity's step of the first solve: it is shared by all frames and barely
    moves when a few frames' variables meet a bound, and holding it makes a re-solve several
    times cheaper."""
    fixed = torch.zeros_like(local)
    dl, ds = _newton_step(n, lam, active, fixed)
    for _ in range(passes - 1):
        new = local + dl
        out = ~active & ((new < lower) | (new > upper))
        if not bool(out.any()):
            break
        fixed = torch.where(out, new.clamp(lower, upper) - local, fixed)
        active = active | out
        dl, ds = _newton_step(n, lam, active, fixed, identity=ds)
    return dl, ds


def _apply(s: _State, dl: torch.Tensor, ds: torch.Tensor, ortho: bool, ke: int, nonneg: bool,
           jaw_max: float) -> _State:
    rotation = so3_exp(dl[:, :3]) @ s.rotation
    if ortho:
        trans = s.trans.clone()
        trans[:, :2] = trans[:, :2] + dl[:, 3:5]
        log_scale = s.log_scale + dl[:, 5]
    else:
        trans = s.trans + dl[:, 3:6]
        log_scale = s.log_scale
    expression = s.expression + dl[:, 6:6 + ke]
    if nonneg:
        expression = expression.clamp_min(0)
    jaw = (s.jaw + dl[:, 6 + ke]).clamp(_JAW_MIN, jaw_max) if jaw_max > 0 else s.jaw
    shape = s.shape + ds
    return _State(shape=shape, rotation=rotation, trans=trans, log_scale=log_scale,
                  expression=expression, jaw=jaw, focal=s.focal)


def fit_landmarks(model: FaceModel, landmarks: torch.Tensor,
                  image_size: tuple[int, int] | torch.Tensor,
                  config: FitConfig | None = None, fps: float = 0.0) -> Coefficients:
    """Fit ``model`` to the 68-point landmarks of one person over ``T`` frames.

    Args:
        model: the morphable model (needs a landmark mapping).
        landmarks: ``(T, 68, 2)`` pixels; NaN marks points (or whole frames) not detected.
        image_size: ``(height, width)`` of the frames.
        config: settings; defaults to :class:`FitConfig`.
        fps: frame rate, stored in the result.

    Returns:
        :class:`~faceanime.coefficients.Coefficients` on the fit's device (``config.device``,
        else the model's), with ``landmarks`` and ``fitted_landmarks``; frames with no usable
        landmarks have ``valid`` False and coefficients interpolated from their neighbours.

    Raises:
        InputError: wrong shape, or no landmark of the model is mapped.
        FaceNotFoundError: no frame has enough landmarks.
    """
    config = config or FitConfig()
    landmarks = torch.as_tensor(landmarks)
    if landmarks.ndim == 2:
        landmarks = landmarks[None]
    if landmarks.ndim != 3 or landmarks.shape[1:] != (N_LANDMARKS, 2):
        raise InputError(f"landmarks must be (T, {N_LANDMARKS}, 2), got {tuple(landmarks.shape)}")
    if config.camera not in ("orthographic", "perspective"):
        raise InputError(f"unknown camera {config.camera!r}; use orthographic or perspective")
    if not 0 <= config.eyelid_floor < 0.5:
        raise InputError(f"eyelid_floor must be from 0 to below 0.5, got {config.eyelid_floor!r}")
    if not (isinstance(config.lower_face_weight, (int, float))
            and 0 < config.lower_face_weight <= 1):
        raise InputError(f"lower_face_weight must be above 0 and at most 1, got "
                         f"{config.lower_face_weight!r}")
    device = torch.device(config.device) if config.device else model.device
    dtype = torch.float64 if config.double else torch.float32
    # Landmarks come from a detector on the CPU; the fit and its result live on ``device``.
    landmarks = landmarks.to(device)
    height, width = (int(v) for v in torch.as_tensor(image_size).tolist())

    eyelids = eyelid_rig(model) if config.eyelids else None  # None: eye landmarks not mapped
    solved = landmarks
    if eyelids is not None:
        # The upper lids are the closures' to explain: left in, a blink would be fitted by
        # the identity and the expression (narrower eyes), and no closure would remain.
        solved = landmarks.clone()
        solved[:, eyelids.upper.reshape(-1)] = float("nan")
    p = _prepare(model, solved, config, dtype, device)
    p.center = torch.tensor([(width - 1) / 2, (height - 1) / 2], dtype=dtype, device=device)
    usable = p.point_mask & (p.fixed_index >= 0)
    valid = usable.sum(1) >= 6
    if not bool(valid.any()):
        raise FaceNotFoundError("no frame has enough landmarks to fit (need 6 or more)")
    has_contour = len(p.contour[0]) > 0 and len(p.contour[1]) > 0

    t = landmarks.shape[0]
    ks, ke = p.shape_basis.shape[-1], p.expr_basis.shape[-1]
    fixed = p.fixed_index.clamp_min(0)
    rotation, trans, scale = init_orthographic_pose(
        p.mean[fixed].expand(t, -1, -1), p.targets, usable)
    zeros = torch.zeros(t, dtype=dtype, device=device)
    state = _State(shape=torch.zeros(ks, dtype=dtype, device=device), rotation=rotation,
                   trans=trans, log_scale=scale.clamp_min(1e-6).log(),
                   expression=torch.zeros(t, ke, dtype=dtype, device=device), jaw=zeros.clone(),
                   focal=0.0)
    _interpolate_invalid(state, valid)

    if config.camera == "orthographic":
        state, corr = _solve(p, config, state, valid, has_contour)
    else:
        state, corr = _fit_perspective(p, config, state, valid, has_contour, width, height)
    _interpolate_invalid(state, valid)

    ev = _Evaluator(p, config.camera)
    uv, _ = ev.project(state, ev.points(state, corr)["x"])
    has_vertex = p.fixed_index >= 0
    if config.contour and has_contour:
        has_vertex = has_vertex.clone()
        has_vertex[_JAW_IDS.to(device)] = True
    fitted = torch.where(has_vertex[None, :, None], uv, torch.nan)

    if config.camera == "orthographic":
        scale_out, trans_out = state.log_scale.exp(), state.trans.clone()
        trans_out[:, 2] = 0
    else:
        scale_out = torch.full((t,), state.focal, dtype=dtype, device=device)
        trans_out = state.trans
    coeffs = Coefficients(
        model=model.name, shape=state.shape.float(), expression=state.expression.float(),
        jaw=state.jaw.float(), rotation=state.rotation.float(), translation=trans_out.float(),
        scale=scale_out.float(), camera=config.camera,
        image_size=torch.tensor([height, width]), landmarks=landmarks.float(),
        fitted_landmarks=fitted.float(), valid=valid, fps=fps)
    # None: the mouth is not mapped
    lips = lip_rig(model) if config.pucker or config.lip_closure else None
    brows = brow_rig(model) if config.brows else None
    if eyelids is not None or lips is not None or brows is not None:
        on_model = coeffs.to(model.device)
        if eyelids is not None:
            on_model.eyes = fit_eyelids(model, on_model, config.eyelid_temporal_weight,
                                        eyelids, config.eyelid_floor)
            _close_fitted_lids(on_model, eyelids, model)
        if lips is not None:
            if config.lip_closure:
                on_model.lips = fit_lip_closure(model, on_model,
                                                config.lip_closure_temporal_weight, lips)
            if config.pucker:
                on_model.pucker = fit_pucker(model, on_model, config.pucker_temporal_weight,
                                             lips)
            mouth, points = mouth_landmarks(model, on_model, lips)
            on_model.fitted_landmarks[:, mouth] = points.to(on_model.fitted_landmarks.dtype)
        if brows is not None:
            on_model.brows = fit_brows(model, on_model, config.brows_temporal_weight, brows)
            ids, points = brow_landmarks(model, on_model, brows)
            on_model.fitted_landmarks[:, ids] = points.to(on_model.fitted_landmarks.dtype)
        coeffs = on_model.to(device)
    return coeffs


def _close_fitted_lids(coeffs: Coefficients, eyelids, model: FaceModel) -> None:
    """Move the fitted upper-lid landmarks by their eyes' closures (the reported fit matches
    what a renderer draws)."""
    from faceanime.fitting.eyelid import lid_vertices
    from faceanime.reconstruction import project_vertices

    ids = model.landmark_indices
    upper = eyelids.upper.reshape(-1)
    verts = lid_vertices(model, coeffs, ids[upper])
    shift = torch.stack([eyelids.offsets[e, ids[eyelids.upper[e]]] for e in range(2)])
    closed = verts + coeffs.eyes.repeat_interleave(2, 1)[..., None] * shift.reshape(4, 3)
    coeffs.fitted_landmarks[:, upper] = project_vertices(coeffs, closed)[..., :2].to(
        coeffs.fitted_landmarks.dtype)


def _fit_perspective(p: _Problem, config: FitConfig, ortho: _State,
                     valid: torch.Tensor, has_contour: bool, width: int,
                     height: int) -> tuple[_State, _Corr]:
    """Perspective fit from the orthographic initialisation; with no focal length given, a
    search over focal lengths (0.5 to 8 image diagonals) keeps the lowest cost."""
    diag = math.hypot(width, height)
    focals = [config.focal] if config.focal else [diag * f for f in
                                                  (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0)]
    best = None
    ev = _Evaluator(p, "perspective")
    for f in focals:
        scale = ortho.log_scale.exp()
        tz = -f / scale
        tx = (ortho.trans[:, 0] - p.center[0]) / scale
        ty = (p.center[1] - ortho.trans[:, 1]) / scale
        s0 = _State(shape=ortho.shape.clone(), rotation=ortho.rotation.clone(),
                    trans=torch.stack([tx, ty, tz], -1), log_scale=ortho.log_scale.clone(),
                    expression=ortho.expression.clone(), jaw=ortho.jaw.clone(), focal=f)
        s, corr = _solve(p, config, s0, valid, has_contour)
        r, _, _ = ev.residual(s, corr, jacobian=False)
        cost = float(_cost(r, s, config, None, config.shape_weight * max(int(valid.sum()), 1)))
        if best is None or cost < best[0]:
            best = (cost, s, corr)
    assert best is not None
    return best[1], best[2]
