"""From coefficients back to geometry: the posed 3D face of every frame and its projection.

Shared by the fitter's outputs, the overlays, the renderer and evaluation, so that one formula
turns a coefficient file into pixels everywhere.
"""

from __future__ import annotations

import torch

from faceanime.coefficients import Coefficients
from faceanime.errors import InputError
from faceanime.geometry.camera import project_orthographic, project_perspective
from faceanime.morphable.brows import Brows, apply_brows, build_brows
from faceanime.morphable.eyelid import Eyelids, apply_eyelids, build_eyelids
from faceanime.morphable.jaw import Jaw, apply_jaw, build_jaw
from faceanime.morphable.lips import Lips, apply_lips, build_lips
from faceanime.morphable.model import FaceModel


def face_vertices(model: FaceModel, coeffs: Coefficients, jaw: Jaw | None = None,
                  eyelids: Eyelids | None = None, lips: Lips | None = None,
                  brows: Brows | None = None, index: torch.Tensor | None = None
                  ) -> torch.Tensor:
    """Model-space vertices of every frame, eyelids and lips closed, lips puckered, brows
    raised and jaw opened as the coefficients say.

    Args:
        model: the model the coefficients were fitted with.
        coeffs: ``T`` frames.
        jaw: the model's jaw rig (built from the model when None).
        eyelids: the model's eyelid rig (built from the model when None and needed).
        lips: the model's lip rig (built from the model and ``jaw`` when None and needed).
        brows: the model's brow rig (built from the model when None and needed).
        index: ``(M,)`` vertex indices: only those vertices are made (a few landmarks of a
            long video cost a few of its full meshes' time); None: all of them.

    Returns:
        ``(T, N, 3)``, or ``(T, M, 3)`` with ``index``.
    """
    if coeffs.shape.shape[0] > model.n_shape or coeffs.expression.shape[1] > model.n_expression:
        raise InputError(f"coefficients ({coeffs.shape.shape[0]} shape, "
                         f"{coeffs.expression.shape[1]} expression) do not fit model "
                         f"{model.name} ({model.n_shape}, {model.n_expression})")
    t = coeffs.n_frames
    dtype, device = model.dtype, model.device
    shape = coeffs.shape.to(device, dtype)[None].expand(t, -1)
    expression = coeffs.expression.to(device, dtype)
    if index is None:
        verts = model.vertices(shape, expression)
        sub = slice(None)
    else:
        sub = index.to(device)
        ks, ke = shape.shape[1], expression.shape[1]
        verts = (model.mean[sub][None]
                 + torch.einsum("bk,knd->bnd", shape, model.shape_basis[:ks, sub])
                 + torch.einsum("bk,knd->bnd", expression, model.expression_basis[:ke, sub]))
    if coeffs.eyes is not None and bool((coeffs.eyes != 0).any()):
        eyelids = eyelids if eyelids is not None else build_eyelids(model)
        verts = apply_eyelids(verts, coeffs.eyes.to(device, dtype),
                              eyelids.offsets[:, sub].to(device, dtype),
                              eyelids.raised[:, sub].to(device, dtype))
    if lips is not None and lips.rest is not None:
        verts = verts + lips.rest[sub].to(device, dtype)
    for closure, part in ((coeffs.lips, "offsets"), (coeffs.pucker, "pucker")):
        if closure is not None and bool((closure != 0).any()):
            jaw = jaw if jaw is not None else build_jaw(model)
            lips = lips if lips is not None else build_lips(model, jaw)
            verts = apply_lips(verts, closure.to(device, dtype),
                               getattr(lips, part)[sub].to(device, dtype))
    if coeffs.brows is not None and bool((coeffs.brows != 0).any()):
        brows = brows if brows is not None else build_brows(model)
        verts = apply_brows(verts, coeffs.brows.to(device, dtype),
                            brows.offsets[:, sub].to(device, dtype))
    if bool((coeffs.jaw != 0).any()):
        jaw = jaw if jaw is not None else build_jaw(model)
        verts = apply_jaw(verts, coeffs.jaw.to(device, dtype), jaw.pivot.to(device, dtype),
                          jaw.weights[sub].to(device, dtype))
    return verts


def project_vertices(coeffs: Coefficients, vertices: torch.Tensor) -> torch.Tensor:
    """Project ``(T, N, 3)`` model-space vertices with each frame's pose.

    Returns:
        ``(T, N, 3)``: pixel ``u, v`` and depth (larger = nearer); see
        :mod:`faceanime.geometry.camera`.
    """
    c = coeffs.to(vertices.device, vertices.dtype)
    if c.camera == "orthographic":
        return project_orthographic(vertices, c.rotation, c.translation, c.scale)
    if c.image_size is None:
        raise InputError("perspective coefficients need image_size for the principal point")
    h, w = (float(v) for v in c.image_size)
    center = torch.tensor([(w - 1) / 2, (h - 1) / 2], dtype=vertices.dtype,
                          device=vertices.device).expand(c.n_frames, 2)
    return project_perspective(vertices, c.rotation, c.translation, c.scale, center)
