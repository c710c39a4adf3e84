"""An articulated jaw for any morphable model with a 68-point landmark mapping.

Emotion blendshapes (SFM has six) cannot open the mouth, yet talking faces do little else. As in
FLAME, the lower face is skinned to a jaw bone that rotates about a horizontal hinge: each vertex
moves by ``w * (rotate(v - pivot) + pivot - v)`` (two-bone linear blend skinning) with a smooth
weight ``w`` in [0, 1].

The weights are *harmonic* on the mesh graph: 1 on the lower lip and chin, 0 on the upper lip and
everything above the nose base, and the solution of Laplace's equation in between. Because the
model's lips are separate surfaces (no edge joins the upper and lower inner lip), the field can
jump across the mouth slit yet stay smooth over the cheeks, with ~0.5 at the mouth corners. The
hinge sits on the midline at the height of the nose base, 0.8 inter-ocular distances behind the
mouth corners: roughly where the temporomandibular joints are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from faceanime.errors import InputError
from faceanime.morphable.model import FaceModel

# 1-based iBUG ids used to place the jaw.
_LOWER_LIP = (56, 57, 58, 59, 60, 66, 67, 68)
_UPPER_LIP = (50, 51, 52, 53, 54, 62, 63, 64)
_CHIN, _NOSE_BASE, _EYE_OUTER_R, _EYE_OUTER_L = 9, 34, 37, 46
_MOUTH_CORNERS = (49, 55)


@dataclass
class Jaw:
    """Jaw rig of a model.

    Attributes:
        pivot: ``(3,)`` a point on the hinge (model units); the hinge axis is the model's x axis.
        weights: ``(N,)`` skinning weight of every vertex in [0, 1].
    """

    pivot: torch.Tensor
    weights: torch.Tensor

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> Jaw:
        return Jaw(self.pivot.to(device, dtype), self.weights.to(device, dtype))


def rotation_x(angle: torch.Tensor) -> torch.Tensor:
    """``(B,) -> (B, 3, 3)`` rotations about +x (positive opens the mouth: chin down and back)."""
    c, s = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(angle), torch.zeros_like(angle)
    return torch.stack([torch.stack([one, zero, zero], -1),
                        torch.stack([zero, c, -s], -1),
                        torch.stack([zero, s, c], -1)], -2)


def apply_jaw(vertices: torch.Tensor, angle: torch.Tensor, pivot: torch.Tensor,
              weights: torch.Tensor) -> torch.Tensor:
    """Open the jaw.

    Args:
        vertices: ``(B, N, 3)`` (any subset of the model's vertices, with matching ``weights``).
        angle: ``(B,)`` radians.
        pivot: ``(3,)``.
        weights: ``(N,)`` or ``(B, N)``.

    Returns:
        ``(B, N, 3)``.
    """
    rel = vertices - pivot
    moved = rel @ rotation_x(angle).transpose(-1, -2)
    w = weights if weights.ndim == 2 else weights[None]
    return vertices + w[..., None] * (moved - rel)


def _landmark_vertex(model: FaceModel, ibug: int) -> int:
    idx = int(model.landmark_indices[ibug - 1])
    if idx < 0:
        raise InputError(f"model {model.name}: iBUG point {ibug} has no vertex; "
                         "the jaw rig needs the lips, chin, nose base and eye corners mapped")
    return idx


def build_jaw(model: FaceModel) -> Jaw:
    """Place the hinge and solve the harmonic skinning weights of ``model`` (its mean shape)."""
    mean = model.mean.detach().cpu().double().numpy()
    n = mean.shape[0]

    def verts(ids: tuple[int, ...]) -> np.ndarray:
        return np.array([_landmark_vertex(model, i) for i in ids])

    lower, upper = verts(_LOWER_LIP), verts(_UPPER_LIP)
    chin, nose = _landmark_vertex(model, _CHIN), _landmark_vertex(model, _NOSE_BASE)
    iod = abs(mean[_landmark_vertex(model, _EYE_OUTER_L), 0]
              - mean[_landmark_vertex(model, _EYE_OUTER_R), 0])
    mouth_z = mean[verts(_MOUTH_CORNERS), 2].mean()
    pivot = np.array([0.0, mean[nose, 1], mouth_z - 0.8 * iod])

    # Dirichlet constraints: 1 on the lower lip and the chin below them, 0 on the upper lip and
    # everything above the nose base.
    y = mean[:, 1]
    lip_y = mean[lower, 1].max()
    fixed_one = np.zeros(n, bool)
    fixed_one[lower] = True
    fixed_one |= y < mean[chin, 1] + 0.5 * (lip_y - mean[chin, 1])
    fixed_zero = y > mean[nose, 1]
    fixed_zero[upper] = True
    fixed_one &= ~fixed_zero

    tri = model.triangles.cpu().numpy()
    edges = np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]])
    adj = sp.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n)).tocsr()
    adj = ((adj + adj.T) > 0).astype(float)
    lap = sp.diags(np.asarray(adj.sum(1)).ravel()) - adj

    fixed = fixed_one | fixed_zero
    free = ~fixed
    w = fixed_one.astype(float)
    if free.any():
        # A tiny diagonal term keeps components with no constraint (if any) solvable, at w = 0.
        a = lap[free][:, free] + 1e-9 * sp.eye(int(free.sum()))
        b = -lap[free][:, fixed] @ w[fixed]
        w[free] = spla.spsolve(a.tocsc(), b)
    w = np.clip(w, 0.0, 1.0)
    return Jaw(pivot=torch.tensor(pivot, dtype=model.dtype, device=model.device),
               weights=torch.tensor(w, dtype=model.dtype, device=model.device))
