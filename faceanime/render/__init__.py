"""Rendering of screen-space meshes and point sets: pure functions on batched tensors.

- :mod:`~faceanime.render.rasterize` — :func:`rasterize` triangles into :class:`Fragments`
  (face index, barycentrics, depth per pixel) and :func:`interpolate` vertex attributes;
- :mod:`~faceanime.render.points` — :func:`splat_points`, z-tested splatting of sparse vertices;
- :mod:`~faceanime.render.visibility` — :func:`vertex_visibility`, a depth test of each vertex.

Every function takes ``backend="torch"`` (pure PyTorch, CPU or CUDA) or ``"pytorch3d"`` (optional,
imported on use). Conventions, rules and speed: ``docs/render.md``.
"""

from faceanime.render.points import splat_points
from faceanime.render.rasterize import BACKENDS, Fragments, interpolate, rasterize
from faceanime.render.visibility import front_facing_vertices, vertex_visibility

__all__ = [
    "BACKENDS",
    "Fragments",
    "front_facing_vertices",
    "interpolate",
    "rasterize",
    "splat_points",
    "vertex_visibility",
]
