"""The fitter's analytic Jacobians against finite differences (float64), for both cameras, with
the jaw open and the sliding jaw-outline points in play."""

from __future__ import annotations

import math

import pytest
import torch

from faceanime.fitting import FitConfig
from faceanime.fitting import fitter as F
from faceanime.geometry.camera import project_orthographic
from faceanime.geometry.rotation import euler_to_matrix
from faceanime.morphable.jaw import apply_jaw, build_jaw


@pytest.mark.parametrize("camera", ["orthographic", "perspective"])
def test_jacobians_match_finite_differences(sfm_model, camera):
    m = sfm_model
    g = torch.Generator().manual_seed(3)
    t = 3
    yaw = torch.tensor([-25.0, 5.0, 30.0]).deg2rad()
    rotation = euler_to_matrix(yaw, torch.full((t,), 0.1), torch.full((t,), -0.05)).double()
    shape = 0.5 * torch.randn(m.n_shape, generator=g, dtype=torch.float64)
    expr = 0.3 * torch.rand(t, m.n_expression, generator=g, dtype=torch.float64)
    jaw = torch.tensor([0.05, 0.2, 0.3], dtype=torch.float64)
    verts = m.to("cpu", torch.float64).vertices(shape.expand(t, -1), expr)
    rig = build_jaw(m)
    verts = apply_jaw(verts, jaw, rig.pivot.double(), rig.weights.double())
    screen = project_orthographic(verts, rotation, torch.tensor([[320.0, 240.0, 0]]).expand(t, 3)
                                  .double(), torch.full((t,), 2.0, dtype=torch.float64))
    points = torch.full((t, 68, 2), float("nan"), dtype=torch.float64)
    mapped = m.landmark_indices >= 0
    points[:, mapped] = screen[:, m.landmark_indices[mapped], :2]
    # Jaw-outline points off any vertex: somewhere along the face's side.
    points[:, :17] = screen[:, m.contour_right[:17].clamp_max(m.n_vertices - 1), :2] + 3.0

    config = FitConfig(camera=camera, double=True, nonnegative_blendshapes=False)
    p = F._prepare(m, points, config, torch.float64, torch.device("cpu"))
    p.center = torch.tensor([319.5, 239.5], dtype=torch.float64)
    ev = F._Evaluator(p, camera)
    # A state away from the truth, so every term of the Jacobian is exercised.
    ortho = camera == "orthographic"
    trans = (torch.tensor([[321.0, 238.0, 0.0]]) if ortho
             else torch.tensor([[2.0, -3.0, -800.0]])).double().expand(t, 3).clone()
    state = F._State(shape=shape * 0.8, rotation=rotation, trans=trans,
                     log_scale=torch.full((t,), math.log(2.05), dtype=torch.float64),
                     expression=expr + 0.05, jaw=jaw + 0.02, focal=1600.0)
    corr = F._correspondences(ev, state, config, True)
    assert corr.sliding is not None and bool(corr.use[:, corr.sliding].any())
    r0, jl, km = ev.residual(state, corr, jacobian=True)
    ke, ks = m.n_expression, m.n_shape
    d = jl.shape[-1]
    eps = 1e-6
    jaw_max = math.radians(35)

    def moved(dl: torch.Tensor, ds: torch.Tensor) -> torch.Tensor:
        trial = F._apply(state, dl, ds, ortho, ke, False, jaw_max)
        return ev.residual(trial, corr, jacobian=False)[0]

    for j in range(d):
        dl = torch.zeros(t, d, dtype=torch.float64)
        dl[:, j] = eps
        numeric = (moved(dl, torch.zeros(ks, dtype=torch.float64))
                   - moved(-dl, torch.zeros(ks, dtype=torch.float64))) / (2 * eps)
        torch.testing.assert_close(jl[..., j], numeric, atol=1e-6, rtol=1e-5,
                                   msg=f"local parameter {j}")

    # The identity: its blocks of the normal equations from the dense finite-difference Jacobian.
    dense = torch.stack([(moved(torch.zeros(t, d, dtype=torch.float64), e * eps)
                          - moved(torch.zeros(t, d, dtype=torch.float64), -e * eps)) / (2 * eps)
                         for e in torch.eye(ks, dtype=torch.float64)], -1)  # (T, L, 2, Ks)
    b, c, gs = ev.shape_blocks(r0, jl, km, corr)
    flat_s, flat_l = dense.flatten(1, 2), jl.flatten(1, 2)
    torch.testing.assert_close(c, torch.einsum("tnk,tnm->km", flat_s, flat_s), atol=1e-6,
                               rtol=1e-5)
    torch.testing.assert_close(b, flat_l.transpose(1, 2) @ flat_s, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(gs, torch.einsum("tnk,tn->k", flat_s, r0.flatten(1)), atol=1e-6,
                               rtol=1e-5)
