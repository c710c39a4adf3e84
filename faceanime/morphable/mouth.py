"""Close a model's mouth hole with a recessed cap, so an opened jaw shows a mouth interior.

Face models such as SFM leave the mouth open as a hole in the mesh. When the jaw opens, a
renderer would show whatever lies behind it (in a paste-back, the source photo's closed lips).
The cap is a fan of triangles from the hole's boundary to one new vertex set back inside the
mouth; the renderer colours it like a mouth interior, darkening towards the back.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from faceanime.errors import InputError
from faceanime.morphable.jaw import Jaw
from faceanime.morphable.model import FaceModel

# iBUG inner-lip points (1-based): the mouth hole is the boundary loop nearest to them.
_INNER_LIP = (61, 62, 63, 64, 65, 66, 67, 68)


@dataclass
class MouthCap:
    """A model with its mouth hole closed.

    Attributes:
        model: the model with one vertex appended (the cap's centre) and the cap's triangles
            appended after the original ones; coefficients of the original model apply as they
            are.
        jaw: the jaw rig extended to the new vertex.
        loop: ``(M,)`` the hole's boundary vertices, in order.
        centre: index of the new vertex.
        triangles: ``(M,)`` indices of the cap's triangles in ``model.triangles``.
    """

    model: FaceModel
    jaw: Jaw
    loop: torch.Tensor
    centre: int
    triangles: torch.Tensor


def boundary_loops(triangles: np.ndarray) -> list[list[int]]:
    """The mesh's boundary loops, each an ordered list of vertices following the direction of
    the boundary edges as their triangles list them."""
    directed = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]])
    key = np.sort(directed, 1)
    _, inverse, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    boundary = directed[counts[inverse.ravel()] == 1]
    successor = dict(zip(boundary[:, 0].tolist(), boundary[:, 1].tolist(), strict=True))
    loops, seen = [], set()
    for start in successor:
        if start in seen:
            continue
        loop, v = [], start
        while v not in seen:
            seen.add(v)
            loop.append(v)
            v = successor[v]
        loops.append(loop)
    return loops


def add_mouth_cap(model: FaceModel, jaw: Jaw, depth: float = 0.25) -> MouthCap:
    """Close the mouth hole of ``model``.

    Args:
        model: a model with the inner-lip landmarks mapped and a hole at the mouth.
        jaw: its jaw rig (from :func:`~faceanime.morphable.jaw.build_jaw`), extended so the cap
            opens with the lips.
        depth: how far behind the lips the cap's centre sits, as a fraction of the mouth width.

    Returns:
        :class:`MouthCap`.

    Raises:
        InputError: the inner lips are not mapped, or no boundary loop surrounds them.
    """
    lips = model.landmark_indices[[i - 1 for i in _INNER_LIP]]
    lips = lips[lips >= 0]
    if len(lips) < 3:
        raise InputError(f"model {model.name}: the inner-lip landmarks are not mapped; "
                         "the mouth cap needs them to find the mouth")
    tri = model.triangles.cpu().numpy()
    mean = model.mean.detach().cpu().double().numpy()
    lip_centre = mean[lips.cpu().numpy()].mean(0)
    loops = boundary_loops(tri)
    width = float(np.ptp(mean[lips.cpu().numpy(), 0])) or 1.0
    near = [lp for lp in loops if np.linalg.norm(mean[lp].mean(0) - lip_centre) < width]
    if not near:
        raise InputError(f"model {model.name}: no hole in the mesh around the mouth; it needs "
                         "no cap")
    loop = min(near, key=lambda lp: np.linalg.norm(mean[lp].mean(0) - lip_centre))
    loop_t = torch.tensor(loop, dtype=torch.long, device=model.mean.device)
    n = model.n_vertices
    # Boundary edges run a -> b in their triangles; the cap uses each edge the other way round,
    # which keeps the surface consistently oriented (front-facing like the rest of the face).
    nxt = torch.roll(loop_t, -1)
    cap = torch.stack([torch.full_like(loop_t, n), nxt, loop_t], 1)

    mouth_width = float(np.ptp(mean[loop, 0]))
    centre = model.mean[loop_t].mean(0)
    centre = centre - torch.tensor([0.0, 0.0, depth * mouth_width], dtype=centre.dtype,
                                   device=centre.device)

    def append(rows: torch.Tensor, new: torch.Tensor, dim: int) -> torch.Tensor:
        return torch.cat([rows, new.unsqueeze(dim)], dim)

    texcoords = (append(model.texcoords, model.texcoords[loop_t].mean(0), 0)
                 if model.texcoords is not None else None)
    symmetry = (append(model.symmetry, torch.tensor(n, device=model.symmetry.device), 0)
                if model.symmetry is not None else None)
    capped = replace(
        model,
        mean=append(model.mean, centre, 0),
        shape_basis=append(model.shape_basis, model.shape_basis[:, loop_t].mean(1), 1),
        expression_basis=append(model.expression_basis,
                                model.expression_basis[:, loop_t].mean(1), 1),
        triangles=torch.cat([model.triangles, cap.to(model.triangles.device)]),
        texcoords=texcoords, symmetry=symmetry)
    weights = torch.cat([jaw.weights, jaw.weights[loop_t.to(jaw.weights.device)].mean()[None]])
    f = model.triangles.shape[0]
    return MouthCap(model=capped, jaw=Jaw(pivot=jaw.pivot, weights=weights), loop=loop_t,
                    centre=n, triangles=torch.arange(f, f + len(loop), device=loop_t.device))


def flatten_cap(screen: torch.Tensor, cap: MouthCap) -> torch.Tensor:
    """``(..., N, 3)`` screen vertices of ``cap``'s model (pixels, depth) with the cap's centre
    moved, in the image, to the centroid of its loop; its depth is kept.

    The centre sits behind the lips, so projected it moves against them as the head pitches:
    s1 by d6's frame 792 put it a quarter of the opening's height below the upper lip, the
    driver 44 %. A fan from it then maps one face's interior onto another's unevenly (the
    driver's upper teeth into a sliver under the photo's lip, its lower lip over the rest),
    and a barely open mouth pitched far enough folds its fan over the lips. A fan from the
    loop's centroid maps opening onto opening whatever the pose; the kept depth still puts
    the cap behind the lips."""
    flat = screen.clone()
    flat[..., cap.centre, :2] = screen[..., cap.loop, :2].mean(-2)
    return flat

