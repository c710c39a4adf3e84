"""Posed 3D vertices of feature vectors, on a subset of the mesh: the geometry the vertex loss and
the evaluation metrics compare.

A feature vector (:mod:`faceanime.dynamics.features`) poses the face relative to its reference
frame, in model units: orthographic camera ``P = exp(f_scale) R(f_rot) V + f_trans`` (the
projection divided by the reference's scale, so ``P``'s x, y are the image position in mm of the
reference face), perspective ``P = R(f_rot) V + f_trans`` (camera space). ``V`` is the person's
neutral face with expression and jaw applied, as :func:`faceanime.reconstruction.face_vertices`
builds it. Distances between posed faces are therefore in mm and mix expression and head motion
the way a viewer sees them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from faceanime.errors import InputError
from faceanime.geometry.rotation import so3_exp
from faceanime.morphable.jaw import Jaw, apply_jaw, build_jaw
from faceanime.morphable.model import FaceModel


@dataclass
class VertexSubset:
    """A few hundred vertices of a model, enough to measure motion in mm.

    Attributes:
        index: ``(V,)`` vertex indices into the model.
        mean: ``(V, 3)`` mean shape.
        shape_basis: ``(Ks, V, 3)``.
        expression_basis: ``(Ke, V, 3)``.
        jaw_weights: ``(V,)`` jaw skinning weights (0 for a model without a jaw rig).
        jaw_pivot: ``(3,)``.
        camera: ``"orthographic"`` or ``"perspective"``.
    """

    index: torch.Tensor
    mean: torch.Tensor
    shape_basis: torch.Tensor
    expression_basis: torch.Tensor
    jaw_weights: torch.Tensor
    jaw_pivot: torch.Tensor
    camera: str = "orthographic"

    @classmethod
    def from_model(cls, model: FaceModel, count: int = 256, camera: str = "orthographic",
                   jaw: Jaw | None = None) -> VertexSubset:
        """The landmark vertices (the mouth, eyes and brows move most) and vertices evenly spread
        over the index range, ``count`` in all (at most the model's vertex count)."""
        n = model.n_vertices
        count = min(count, n)
        landmarks = model.landmark_indices[model.landmark_indices >= 0].unique()[:count]
        spread = torch.linspace(0, n - 1, count).round().long()
        taken = torch.zeros(n, dtype=torch.bool)
        taken[landmarks] = True
        extra = spread[~taken[spread]][: count - len(landmarks)]
        index = torch.cat([landmarks, extra]).sort().values
        if jaw is None:
            try:
                jaw = build_jaw(model)
            except InputError:
                # No landmark mapping to place a jaw: the jaw angle then moves nothing.
                jaw = Jaw(torch.zeros(3, dtype=model.dtype), torch.zeros(n, dtype=model.dtype))
        dev = model.device
        return cls(index=index.to(dev), mean=model.mean[index.to(dev)],
                   shape_basis=model.shape_basis[:, index.to(dev)],
                   expression_basis=model.expression_basis[:, index.to(dev)],
                   jaw_weights=jaw.weights.to(dev, model.dtype)[index.to(dev)],
                   jaw_pivot=jaw.pivot.to(dev, model.dtype), camera=camera)

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> VertexSubset:
        def cast(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, dtype if t.is_floating_point() else None)

        return VertexSubset(cast(self.index), cast(self.mean), cast(self.shape_basis),
                            cast(self.expression_basis), cast(self.jaw_weights),
                            cast(self.jaw_pivot), self.camera)

    def neutral(self, shape: torch.Tensor) -> torch.Tensor:
        """Identity vertices without expression: ``(B, Ks')`` -> ``(B, V, 3)``."""
        basis = self.shape_basis[: shape.shape[-1]]
        return self.mean + torch.einsum("bk,kvd->bvd", shape.to(basis), basis)

    def posed(self, feat: torch.Tensor, neutral: torch.Tensor) -> torch.Tensor:
        """Posed vertices of features.

        Args:
            feat: ``(B, T, D)`` features (``D = Ke + 8``).
            neutral: ``(B, V, 3)`` identity vertices (:meth:`neutral`).

        Returns:
            ``(B, T, V, 3)`` model units (mm).
        """
        b, t, d = feat.shape
        ke = d - 8
        basis = self.expression_basis[:ke].to(feat)
        verts = neutral.to(feat)[:, None] + torch.einsum("btk,kvd->btvd", feat[..., :ke], basis)
        verts = apply_jaw(verts.reshape(b * t, -1, 3), feat[..., ke].reshape(b * t),
                          self.jaw_pivot.to(feat), self.jaw_weights.to(feat)).reshape(b, t, -1, 3)
        rot = so3_exp(feat[..., ke + 1:ke + 4])
        verts = verts @ rot.transpose(-1, -2)
        if self.camera == "orthographic":
            verts = verts * feat[..., ke + 7, None, None].exp()
        return verts + feat[..., None, ke + 4:ke + 7]


def vertex_metric(vertices: VertexSubset, feat: torch.Tensor,
                  shape: torch.Tensor | None = None) -> torch.Tensor:
    """The mean squared vertex displacement of small feature changes around ``feat``.

    Args:
        vertices: the subset.
        feat: ``(D,)`` features to linearise at (e.g. the training mean, at the reference pose).
        shape: ``(Ks,)`` identity (default: the mean face).

    Returns:
        ``(D, D)`` ``J^T J / V`` with ``J`` the ``(3V, D)`` Jacobian of the posed vertices: a
        change ``u`` moves the vertices by ``sqrt(u^T M u)`` mm RMS, to first order.
    """
    feat = feat.detach().double()
    neutral = vertices.to(dtype=torch.float64).neutral(
        torch.zeros(1, 0, dtype=torch.float64) if shape is None else shape.double()[None])
    subset = vertices.to(dtype=torch.float64)

    def posed(f: torch.Tensor) -> torch.Tensor:
        return subset.posed(f[None, None], neutral).reshape(-1)

    jac = torch.autograd.functional.jacobian(posed, feat)
    return (jac.T @ jac / (jac.shape[0] / 3)).float()
