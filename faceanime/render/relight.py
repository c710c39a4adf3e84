"""Relighting a face with low-order spherical harmonics: the photo's shading taken off, the
target's put on.

A face texture taken from a photo holds the photo's light: a studio key light from one side,
a lit forehead, a shadowed jaw. Pasted at another frame's pose under another light, that
shading travels with the face, and colour matching (one mean and spread for the whole face)
cannot move it: the swapped face stays lit from the photo's side, and where it meets the
frame's own skin the two shadings differ. Lambertian faces under distant light are close to a
nine-dimensional space (Basri & Jacobs 2003; Ramamoorthi & Hanrahan 2001): the irradiance at a
surface point is a quadratic polynomial of its normal. So, per colour channel,

    colour(v) ≈ albedo(v) * (Y(n_v) · L),

with ``Y`` the nine real spherical harmonics up to order 2 and ``L`` the light's nine
coefficients. ``L`` is fitted by robust least squares to the face's skin (albedo taken as one
colour, which the coefficients absorb; brows, eyes, lips, beards and hair over the face are
outliers the reweighting drops), once for the photo and once for the target video (its light
is fixed to the camera, the head turns under it). A swapped vertex then takes the gain
``(Y(n_target) · L_target) / (Y(n_photo) · L_photo)``: its photo shading divided out, the
target's at its new normal multiplied in (the "quotient image" of Shashua & Riklin-Raviv 2001,
with shading from the fitted 3D normals).

Normals are in the orthographic camera frame ``(u, -v, depth)`` (a similarity of camera
space, :func:`faceanime.render.texture.facing`), so the photo's and the target's light are in
the same frame.
"""

from __future__ import annotations

import torch

from faceanime.errors import InputError
from faceanime.render.rasterize import interpolate, rasterize


def vertex_normals(screen: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
    """Unit vertex normals (area-weighted mean of their triangles') of screen vertices.

    Args:
        screen: ``(B, N, 3)`` pixel ``u, v`` and depth (larger = nearer), orthographic.
        triangles: ``(F, 3)`` vertex indices.

    Returns:
        ``(B, N, 3)`` in the frame ``(u, -v, depth)``: ``z > 0`` faces the camera. A vertex
        on no triangle gets ``(0, 0, 1)``.
    """
    p = torch.stack([screen[..., 0], -screen[..., 1], screen[..., 2]], -1)
    corners = p[:, triangles]                                                # (B, F, 3, 3)
    n = torch.linalg.cross(corners[:, :, 1] - corners[:, :, 0],
                           corners[:, :, 2] - corners[:, :, 0], dim=-1)         # (B, F, 3)
    total = torch.zeros_like(p)
    for k in range(3):
        total.index_add_(1, triangles[:, k], n)
    length = total.norm(dim=-1, keepdim=True)
    up = torch.zeros_like(total)
    up[..., 2] = 1
    return torch.where(length > 1e-12, total / length.clamp_min(1e-12), up)


def sh_basis(normals: torch.Tensor, order: int = 2) -> torch.Tensor:
    """``(..., 3)`` unit normals -> ``(..., K)`` real spherical harmonics up to ``order`` (1:
    ``K = 4``, 2: ``K = 9``), without their constant factors, which the fitted light absorbs."""
    x, y, z = normals.unbind(-1)
    terms = [torch.ones_like(x), x, y, z]
    if order >= 2:
        terms += [x * y, x * z, y * z, x * x - y * y, 3 * z * z - 1]
    return torch.stack(terms, -1)


def shading(normals: torch.Tensor, light: torch.Tensor) -> torch.Tensor:
    """``(..., 3)`` normals under ``light (K, C)`` (:func:`fit_light`) -> ``(..., C)``
    irradiance per channel."""
    order = 1 if light.shape[0] == 4 else 2
    return sh_basis(normals, order) @ light.to(normals)


def fit_light(colours: torch.Tensor, normals: torch.Tensor, weight: torch.Tensor,
              order: int = 2, rounds: int = 6, ridge: float = 1e-3) -> torch.Tensor:
    """The light ``(K, C)`` that best explains skin colours as one albedo under it.

    Iteratively reweighted least squares per channel (Tukey's biweight on the residual, its
    scale from the median absolute residual): features darker or redder than skin (brows,
    lashes, lips, a beard, hair across the face) stop pulling the fit after a round or two.

    Args:
        colours: ``(P, C)`` observed colours (or a luminance, ``C = 1``) in [0, 1].
        normals: ``(P, 3)`` their unit normals.
        weight: ``(P,)`` ≥ 0 prior weights (0: not skin, not seen).
        order: 1 (ambient and one direction, ``K = 4``) or 2 (``K = 9``).
        rounds: reweighting rounds.
        ridge: Tikhonov weight on the eight non-constant coefficients (relative to the
            system's scale): a face covers a cap of the sphere, not all of it, and the
            unconstrained quadratic terms can swing wildly behind it.

    Returns:
        ``(K, C)`` the light, in the colours' units (the albedo folded in).

    Raises:
        InputError: shapes that do not match, an order other than 1 or 2, fewer weighted
            samples than coefficients.
    """
    if colours.ndim != 2 or normals.shape != (colours.shape[0], 3) \
            or weight.shape != colours.shape[:1]:
        raise InputError("fit_light: colours must be (P, C), normals (P, 3), weight (P,)")
    if order not in (1, 2):
        raise InputError(f"fit_light: order must be 1 or 2, got {order!r}")
    a = sh_basis(normals.double(), order)                                  # (P, K)
    k, channels = a.shape[1], colours.shape[1]
    if int((weight > 0).sum()) < k:
        raise InputError(f"fit_light: fewer than {k} weighted samples; no light can be fitted")
    b = colours.double()
    w = weight.double()[:, None].expand(-1, channels).clone()              # (P, C)
    penalty = torch.full((k,), ridge, dtype=torch.float64)
    penalty[0] = 0
    light = torch.zeros(k, channels, dtype=torch.float64)
    for _ in range(rounds + 1):
        for c in range(channels):
            aw = a * w[:, c:c + 1]
            gram = aw.T @ a
            scale = gram.diagonal().mean().clamp_min(1e-12)
            light[:, c] = torch.linalg.solve(gram + torch.diag(penalty * scale), aw.T @ b[:, c])
        residual = b - a @ light
        spread = 1.4826 * (residual.abs() * (weight[:, None] > 0)).median(0).values
        u = residual / (4.685 * spread.clamp_min(1e-4))
        w = weight.double()[:, None] * ((1 - u ** 2).clamp_min(0) ** 2)
    return light.to(colours.dtype)


def relight_gain(photo_normals: torch.Tensor, target_normals: torch.Tensor,
                 photo_light: torch.Tensor, target_light: torch.Tensor,
                 weight: torch.Tensor | None = None, limit: float = 2.0) -> torch.Tensor:
    """Per vertex and channel, what takes its photo shading off and puts the target's on.

    Args:
        photo_normals: ``(N, 3)`` the vertices' normals in the photo.
        target_normals: ``(T, N, 3)`` the same vertices' normals in each target frame.
        photo_light, target_light: ``(K, C)`` from :func:`fit_light` (``C = 1``: one gain for
            every colour channel).
        weight: ``(N,)`` the vertices whose gains average 1 per frame and channel (None:
            all). The level and tint are colour matching's: the gain moves only the shading
            across the face.
        limit: gains are kept within ``[1 / limit, limit]`` (a normal the fit never saw, or
            a shading near zero, must not blow a texel up).

    Returns:
        ``(T, N, C)`` positive gains.
    """
    if not limit >= 1:
        raise InputError(f"relight_gain: limit must be ≥ 1, got {limit!r}")
    before = shading(photo_normals, photo_light)                             # (N, C)
    after = shading(target_normals, target_light)                            # (T, N, C)
    floor = 0.05 * before.mean(0).abs().clamp_min(1e-6)
    ratio = after.clamp_min(0) / before.clamp_min(0).maximum(floor)
    ratio = ratio.clamp(1 / limit, limit)
    w = torch.ones_like(ratio[0, :, 0]) if weight is None else weight.to(ratio)
    mean = (ratio * w[None, :, None]).sum(1, keepdim=True) / w.sum().clamp_min(1e-12)
    return (ratio / mean.clamp_min(1e-6)).clamp(1 / limit, limit)


def render_lit(screen: torch.Tensor, triangles: torch.Tensor, albedo: torch.Tensor,
               light: torch.Tensor, size: tuple[int, int], background: float = 0.45
               ) -> torch.Tensor:
    """A mesh of one albedo rendered under a light: images whose lighting is known exactly.

    Args:
        screen: ``(B, N, 3)`` screen vertices (pixels and depth).
        triangles: ``(F, 3)``.
        albedo: ``(C,)`` the surface's colour.
        light: ``(K, 1)`` or ``(K, C)`` (:func:`fit_light`'s layout).
        size: ``(H, W)`` of the images.
        background: the grey level where the mesh does not cover.

    Returns:
        ``(B, C, H, W)`` in [0, 1].
    """
    colour = albedo.to(screen) * shading(vertex_normals(screen, triangles), light)
    fragments = rasterize(screen, triangles, size)
    image = interpolate(fragments, colour, triangles)
    covered = (fragments.face_index >= 0)[:, None]
    return torch.where(covered, image, torch.full_like(image, background)).clamp(0, 1)


def lit_fit(model, coeffs, albedo: torch.Tensor, light: torch.Tensor, size: tuple[int, int],
            background: float = 0.45) -> tuple[torch.Tensor, torch.Tensor]:
    """The fitted faces of ``T`` frames of ``coeffs`` (a :class:`~faceanime.coefficients.
    Coefficients` of ``model``, a :class:`~faceanime.morphable.model.FaceModel`), posed with
    the jaw, eyelid and lip rigs as the renderers pose them, rendered with one ``albedo``
    under ``light`` (:func:`render_lit`): a photo or a video whose lighting is known exactly.

    Returns:
        ``(T, C, H, W)`` images and ``(T, N, 3)`` the screen vertices.
    """
    from faceanime.morphable.eyelid import eyelid_rig
    from faceanime.morphable.jaw import build_jaw
    from faceanime.morphable.lips import lip_rig
    from faceanime.reconstruction import face_vertices, project_vertices

    jaw = build_jaw(model)
    verts = face_vertices(model, coeffs, jaw=jaw, eyelids=eyelid_rig(model),
                          lips=lip_rig(model, jaw))
    screen = project_vertices(coeffs, verts).float()
    return render_lit(screen, model.triangles.long(), albedo, light, size, background), screen
