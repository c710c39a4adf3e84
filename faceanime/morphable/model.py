"""The morphable face model every stage shares: mean shape, identity and expression bases,
topology, texture coordinates and the 68-point iBUG landmark mapping.

Conventions (the same for every loader, so the fitter need not know where a model came from):

- Units are millimetres; the face looks along +z; x points to the subject's left, y up.
- Bases are stored as ``(K, N, 3)`` offsets per unit coefficient. The identity basis is rescaled
  by the square root of its PCA eigenvalues, so identity coefficients are in standard deviations
  (a Tikhonov prior is then ``||alpha||^2``). PCA expression bases are rescaled the same way;
  blendshape bases (SFM) are plain per-unit deltas with ``expression_eigenvalues`` of None.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch

N_LANDMARKS = 68


@dataclass
class FaceModel:
    """A linear 3D morphable face model.

    Attributes:
        name: short name (``"sfm"``, ``"bfm"``, ...), stored in coefficient files.
        mean: ``(N, 3)`` mean shape.
        shape_basis: ``(Ks, N, 3)`` identity basis, per standard deviation.
        shape_eigenvalues: ``(Ks,)`` PCA variances of the identity basis (before rescaling).
        expression_basis: ``(Ke, N, 3)`` expression basis (``Ke`` may be 0).
        expression_eigenvalues: ``(Ke,)`` PCA variances, or None for blendshapes.
        expression_names: one name per expression component (blendshape names, or ``exp_i``).
        triangles: ``(F, 3)`` int64 vertex indices, counter-clockwise seen from the front.
        texcoords: ``(N, 2)`` (u, v) in [0, 1], or None.
        landmark_indices: ``(68,)`` int64 vertex index for each iBUG point, -1 where the point has
            no fixed vertex (SFM's jaw contour, a few undefined points).
        contour_right: ``(Cr,)`` int64 candidate vertices for iBUG jaw points 1–8 (the subject's
            right side), or empty.
        contour_left: ``(Cl,)`` int64 candidate vertices for iBUG jaw points 10–17, or empty.
        symmetry: ``(N,)`` int64 index of each vertex's mirror counterpart, or None.
    """

    name: str
    mean: torch.Tensor
    shape_basis: torch.Tensor
    shape_eigenvalues: torch.Tensor
    expression_basis: torch.Tensor
    expression_eigenvalues: torch.Tensor | None
    expression_names: list[str]
    triangles: torch.Tensor
    texcoords: torch.Tensor | None
    landmark_indices: torch.Tensor
    contour_right: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))
    contour_left: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))
    symmetry: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n = self.mean.shape[0]
        if self.mean.shape != (n, 3):
            raise ValueError(f"mean must be (N, 3), got {tuple(self.mean.shape)}")
        for name in ("shape_basis", "expression_basis"):
            basis = getattr(self, name)
            if basis.ndim != 3 or basis.shape[1:] != (n, 3):
                raise ValueError(f"{name} must be (K, {n}, 3), got {tuple(basis.shape)}")
        if self.shape_eigenvalues.shape != (self.n_shape,):
            raise ValueError("shape_eigenvalues must have one entry per shape component")
        if len(self.expression_names) != self.n_expression:
            raise ValueError("expression_names must have one entry per expression component")
        if self.landmark_indices.shape != (N_LANDMARKS,):
            raise ValueError(f"landmark_indices must be ({N_LANDMARKS},)")
        if self.triangles.ndim != 2 or self.triangles.shape[1] != 3:
            raise ValueError("triangles must be (F, 3)")

    # --- sizes -------------------------------------------------------------------------------
    @property
    def n_vertices(self) -> int:
        return self.mean.shape[0]

    @property
    def n_shape(self) -> int:
        return self.shape_basis.shape[0]

    @property
    def n_expression(self) -> int:
        return self.expression_basis.shape[0]

    @property
    def n_triangles(self) -> int:
        return self.triangles.shape[0]

    @property
    def device(self) -> torch.device:
        return self.mean.device

    @property
    def dtype(self) -> torch.dtype:
        return self.mean.dtype

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> FaceModel:
        """A copy on ``device``; floating tensors cast to ``dtype`` (index tensors keep int64)."""
        changes = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                cast = dtype if (dtype is not None and value.is_floating_point()) else None
                changes[f.name] = value.to(device=device, dtype=cast)
        return replace(self, **changes)

    # --- geometry ----------------------------------------------------------------------------
    def vertices(self, shape: torch.Tensor | None = None,
                 expression: torch.Tensor | None = None) -> torch.Tensor:
        """Vertices of a batch of faces.

        Args:
            shape: ``(B, Ks')`` identity coefficients with ``Ks' <= Ks`` (the leading components),
                or None for the mean identity.
            expression: ``(B, Ke')`` expression coefficients with ``Ke' <= Ke``, or None.

        Returns:
            ``(B, N, 3)`` vertices (``B`` = 1 when both are None).
        """
        batch = 1
        for c in (shape, expression):
            if c is not None:
                if c.ndim != 2:
                    raise ValueError(f"coefficients must be (B, K), got {tuple(c.shape)}")
                batch = max(batch, c.shape[0])
        out = self.mean.expand(batch, -1, -1)
        if shape is not None and shape.shape[1] > 0:
            basis = self.shape_basis[: shape.shape[1]]
            out = out + torch.einsum("bk,knd->bnd", shape.to(basis.dtype), basis)
        if expression is not None and expression.shape[1] > 0:
            basis = self.expression_basis[: expression.shape[1]]
            out = out + torch.einsum("bk,knd->bnd", expression.to(basis.dtype), basis)
        return out.contiguous() if out.data_ptr() != self.mean.data_ptr() else out.clone()

    def landmark_mask(self) -> torch.Tensor:
        """``(68,)`` bool: which iBUG points map to a fixed vertex."""
        return self.landmark_indices >= 0
