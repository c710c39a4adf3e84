"""Face textures from a photo: dense in the model's UV space, and FaceAnime's sparse vertex prior.

Dense (the classic reenactment's texture): every texel of the model's UV layout is a point on
the face surface; its position in the source view (the fitted source coefficients) gives its
colour there when it is visible (depth test against the source's z-buffer, facing the camera).
Texels hidden in the source take the colour of their mirror point on the other half of the face
(the model's vertex symmetry) when that one is visible, and the rest, with the texels outside the
layout, are filled from their neighbours by push-pull, so bilinear lookups near the layout's
seams never meet black.

Sparse (FaceAnime §III-B): colours sampled at the source's visible vertices, an interval-sampled
subset of them (every ``stride``-th vertex), drawn as points at the positions the source
coefficients (``p_s``) and the target coefficients (``p_t``) give. The prior is sparse on
purpose: it tells the generator where each part of the face moves without over-constraining it
under large motion.

Texture images are ``(B, 3, S, S)``: texcoord ``(tu, tv)`` in [0, 1] sits at texel column
``tu (S - 1)``, row ``tv (S - 1)`` (image convention, ``tv`` down, as the SFM's texture
coordinates are laid out: its texture image is upright).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from faceanime.errors import InputError
from faceanime.render.points import splat_points
from faceanime.render.rasterize import Fragments, interpolate, interpolate_covered, rasterize
from faceanime.render.visibility import vertex_visibility


@dataclass
class TextureConfig:
    """How a dense texture is taken from a photo."""

    size: int = 1024
    """Texture side in texels (the UV layout fills about 80 % of the square)."""
    mirror: bool = True
    """Fill texels hidden in the source from their mirror point on the other half of the face."""
    min_facing: float = 0.2
    """Sample only surface facing the camera at least this much (cosine of the viewing angle):
    grazing surface is smeared in the photo and its mirror side gives a better colour."""
    mirror_match: bool = True
    """Shift the mirrored colours by the smoothed difference between the two halves where
    both are seen, so a hidden side filled from the other meets it without a seam."""
    depth_tolerance: float = 0.01
    """Depth-test margin, as a fraction of the face's depth range in the source view."""
    backend: str = "torch"
    """Rasterizer backend (``torch`` or ``pytorch3d``)."""


@dataclass
class Texture:
    """A face texture in UV space.

    Attributes:
        image: ``(B, 3, S, S)`` colours in [0, 1].
        origin: ``(B, 1, S, S)`` where each texel's colour came from: 1 seen in the source,
            0.5 taken from its mirror point, 0 filled from neighbours (or outside the layout).
    """

    image: torch.Tensor
    origin: torch.Tensor


def pixel_grid(points: torch.Tensor, height: int, width: int,
               inplace: bool = False) -> torch.Tensor:
    """Pixel coordinates ``(..., 2)`` (centre of the top-left pixel at 0) to ``grid_sample``'s
    normalised coordinates with ``align_corners=True``; ``inplace`` overwrites ``points``
    (``(..., 2)`` only: a full-frame grid's allocation is a measurable part of a render)."""
    scale = torch.tensor([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)],
                         dtype=points.dtype, device=points.device)
    if inplace:
        return points.mul_(scale).sub_(1.0)
    return points[..., :2] * scale - 1.0


def sample_image(image: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear colours of ``image (B, C, H, W)`` at pixel positions ``points (B, P, >=2)``;
    returns ``(B, P, C)`` (edge colours outside the image)."""
    h, w = image.shape[-2:]
    grid = pixel_grid(points, h, w)[:, :, None, :].to(image.dtype)
    out = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out[..., 0].transpose(1, 2)


def texel_positions(texcoords: torch.Tensor, size: int) -> torch.Tensor:
    """``(N, 2)`` texcoords to ``(N, 2)`` texel pixel positions (column, row)."""
    return texcoords * (size - 1)


def uv_fragments(triangles: torch.Tensor, texcoords: torch.Tensor, size: int,
                 backend: str = "torch") -> Fragments:
    """Which triangle (and where in it) each texel of the UV layout lies: ``(1, S, S)``."""
    pos = texel_positions(texcoords, size)
    flat = torch.cat([pos, torch.zeros_like(pos[:, :1])], -1)[None]
    return rasterize(flat, triangles, (size, size), backend=backend)


def push_pull(image: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Fill where ``weight (B, 1, H, W)`` is 0 from the weighted neighbourhood, coarse to fine.

    The image is averaged down a pyramid with its weights, then every level's empty pixels take
    the (bilinearly upsampled) colour of the next coarser level: holes get smooth fills that
    match their borders, in ``log2(max(H, W))`` vectorised steps.
    """
    levels = [(image * weight, weight)]
    while max(levels[-1][1].shape[-2:]) > 1:
        num, den = levels[-1]
        levels.append((F.avg_pool2d(num, 2, ceil_mode=True), F.avg_pool2d(den, 2, ceil_mode=True)))
    num, den = levels[-1]
    filled = num / den.clamp_min(1e-12)
    for num, den in reversed(levels[:-1]):
        up = F.interpolate(filled, size=num.shape[-2:], mode="bilinear", align_corners=False)
        # den is each pixel's weighted share in [0, 1]: its own mean (num / den) for that share,
        # the coarse fill for the rest.
        filled = num + (1 - den) * up
    return filled


def _surface_points(fragments: Fragments, screen: torch.Tensor,
                    triangles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Screen positions ``(B, P, 3)`` of the covered texels' surface points and their flat
    texel indices ``(P,)`` (fragments of one layout shared by the batch)."""
    face = fragments.face_index[0].reshape(-1)
    texel = (face >= 0).nonzero()[:, 0]
    tri = triangles[face[texel]]                                       # (P, 3)
    bary = fragments.bary[0].reshape(-1, 3)[texel]                    # (P, 3)
    corners = screen[:, tri]                                          # (B, P, 3, 3)
    return (bary[None, :, :, None] * corners).sum(2), texel


def _seen(points: torch.Tensor, zbuf: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    """``(B, P)`` bool: points ``(B, P, 3)`` lie inside the image and not behind ``zbuf``."""
    b, h, w = zbuf.shape
    u, v, depth = points.unbind(-1)
    j, i = u.round().long(), v.round().long()
    inside = (j >= 0) & (j < w) & (i >= 0) & (i < h)
    flat = (i.clamp(0, h - 1) * w + j.clamp(0, w - 1))
    nearest = zbuf.reshape(b, -1).gather(1, flat)
    return inside & (depth >= nearest - margin)


def facing(screen: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
    """``(B, F)`` cosine between each triangle's normal and the view direction, from screen
    vertices (``(u, -v, depth)`` is a similarity of camera space for the orthographic camera)."""
    corners = screen[:, triangles]
    p = torch.stack([corners[..., 0], -corners[..., 1], corners[..., 2]], -1)
    n = torch.linalg.cross(p[:, :, 1] - p[:, :, 0], p[:, :, 2] - p[:, :, 0], dim=-1)
    return n[..., 2] / n.norm(dim=-1).clamp_min(1e-12)


def _mirror_correction(colour: torch.Tensor, mirror: torch.Tensor, both: torch.Tensor,
                       layout: Fragments, size: int) -> torch.Tensor:
    """``(B, P, 3)`` what to add to the mirrored colours so the two halves of the face meet
    without a step: the photo lights its two sides differently, and a hidden cheek filled from
    the lit one showed a seam down the nose. The difference own minus mirrored, known where a
    texel and its mirror point are both seen, smoothed over cells of a 32nd of the texture's
    side and filled everywhere (:func:`push_pull`)."""
    b = colour.shape[0]
    cell = max(4, size // 32)
    face = layout.face_index[0].reshape(-1)
    texel = (face >= 0).nonzero()[:, 0]
    weight = both.to(colour.dtype)                                          # (B, P)
    diff = torch.zeros(b, 3, size * size, dtype=colour.dtype, device=colour.device)
    known = torch.zeros(b, 1, size * size, dtype=colour.dtype, device=colour.device)
    diff[:, :, texel] = ((colour - mirror) * weight[..., None]).transpose(1, 2)
    known[:, :, texel] = weight[:, None]
    num = F.avg_pool2d(diff.view(b, 3, size, size), cell, ceil_mode=True)
    den = F.avg_pool2d(known.view(b, 1, size, size), cell, ceil_mode=True)
    coarse = push_pull(num / den.clamp_min(1e-9), (den > 1e-3).to(num.dtype))
    field = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return field.view(b, 3, -1)[:, :, texel].transpose(1, 2)


def extract_texture(image: torch.Tensor, screen: torch.Tensor, triangles: torch.Tensor,
                    texcoords: torch.Tensor, symmetry: torch.Tensor | None = None,
                    config: TextureConfig | None = None) -> Texture:
    """Take a face texture from photos.

    Args:
        image: ``(B, 3, H, W)`` source images in [0, 1].
        screen: ``(B, N, 3)`` the model's vertices projected into them (pixels, depth larger =
            nearer), from :func:`faceanime.reconstruction.project_vertices`.
        triangles: ``(F, 3)``.
        texcoords: ``(N, 2)`` in [0, 1].
        symmetry: ``(N,)`` mirror vertex of each vertex, or None (no mirror fill).
        config: settings.

    Returns:
        :class:`Texture` of side ``config.size``.
    """
    config = config or TextureConfig()
    if image.ndim != 4 or image.shape[1] != 3 or screen.ndim != 3 \
            or screen.shape[0] != image.shape[0]:
        raise InputError(f"extract_texture needs images (B, 3, H, W) and screen vertices "
                         f"(B, N, 3), got {tuple(image.shape)} and {tuple(screen.shape)}")
    b, _, h, w = image.shape
    s = config.size
    dtype, device = image.dtype, image.device
    screen = screen.to(device, dtype)
    triangles, texcoords = triangles.to(device), texcoords.to(device, dtype)
    layout = uv_fragments(triangles, texcoords, s, config.backend)
    zbuf = rasterize(screen, triangles, (h, w), backend=config.backend).depth
    depth = screen[..., 2]
    margin = config.depth_tolerance * (depth.amax(1) - depth.amin(1))[:, None]
    face = layout.face_index[0].reshape(-1)

    def colour_of(tris: torch.Tensor, winding: float) -> tuple[torch.Tensor, torch.Tensor]:
        points, texel = _surface_points(layout, screen, tris)
        cosine = winding * facing(screen, tris)                       # (B, F)
        ok = _seen(points, zbuf, margin) & (cosine[:, face[texel]] >= config.min_facing)
        return sample_image(image, points), ok

    colour, ok = colour_of(triangles, 1.0)
    origin = ok.to(dtype)
    if config.mirror and symmetry is not None:
        # Mirroring reverses a triangle's winding: its facing is the negated one.
        mirror_colour, mirror_ok = colour_of(symmetry.to(device)[triangles], -1.0)
        use = ~ok & mirror_ok
        if config.mirror_match and bool(use.any()):
            mirror_colour = mirror_colour + _mirror_correction(
                colour, mirror_colour, ok & mirror_ok, layout, s)
        colour = torch.where(use[..., None], mirror_colour, colour)
        origin = torch.where(use, torch.full_like(origin, 0.5), origin)
    texel = (face >= 0).nonzero()[:, 0]
    known = (origin > 0).to(dtype)
    flat = torch.zeros(b, 3, s * s, dtype=dtype, device=device)
    weight = torch.zeros(b, 1, s * s, dtype=dtype, device=device)
    flat[:, :, texel] = (colour * known[..., None]).transpose(1, 2)
    weight[:, :, texel] = known[:, None]
    org = torch.zeros(b, 1, s * s, dtype=dtype, device=device)
    org[:, :, texel] = origin[:, None]
    filled = push_pull(flat.view(b, 3, s, s), weight.view(b, 1, s, s))
    return Texture(image=filled.clamp(0, 1), origin=org.view(b, 1, s, s))


def render_texture(texture: torch.Tensor, screen: torch.Tensor, triangles: torch.Tensor,
                   texcoords: torch.Tensor, image_size: tuple[int, int],
                   backend: str = "torch", fragments: Fragments | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, Fragments]:
    """Render a textured face.

    Args:
        texture: ``(B, C, S, S)`` or ``(1, C, S, S)`` shared by the batch (in
            ``torch.channels_last`` memory format it is looked up faster, with the same result):
            colours, or colours and masks looked up at once.
        screen: ``(B, N, 3)`` projected vertices.
        triangles: ``(F, 3)``; texcoords: ``(N, 2)``.
        image_size: ``(H, W)``.
        backend: rasterizer backend.
        fragments: the rasterized ``screen`` if already at hand.

    Returns:
        ``image (B, C, H, W)`` (zeros off the face), ``mask (B, 1, H, W)`` and the fragments.
    """
    h, w = image_size
    triangles = triangles.to(screen.device)
    if fragments is None:
        fragments = rasterize(screen, triangles, (h, w), backend=backend)
    s = texture.shape[-1]
    pos = texel_positions(texcoords.to(screen.device, screen.dtype), s)
    mask = fragments.mask[:, None].to(texture.dtype)
    if texture.shape[0] == 1:
        return _sample_covered(texture, fragments, pos, triangles), mask, fragments
    uv = interpolate(fragments, pos, triangles)                         # (B, 2, H, W)
    grid = pixel_grid(uv.permute(0, 2, 3, 1), s, s).to(texture.dtype)
    image = F.grid_sample(texture, grid, mode="bilinear", padding_mode="border",
                          align_corners=True)
    return image * mask, mask, fragments


def _sample_covered(texture: torch.Tensor, fragments: Fragments, pos: torch.Tensor,
                    triangles: torch.Tensor) -> torch.Tensor:
    """:func:`render_texture`'s image for one shared ``(1, C, S, S)`` texture, looked up at the
    covered pixels only: ``(B, C, H, W)``, zeros elsewhere.

    The same values as interpolating the texel positions over the whole image and sampling
    there (the same arithmetic per pixel), without the background's share of the work or
    the full-size intermediate images."""
    b, h, w = fragments.face_index.shape
    pixel, uv = interpolate_covered(fragments, pos, triangles)          # (P,), (P, 2)
    s = texture.shape[-1]
    grid = pixel_grid(uv, s, s).to(texture.dtype)[None, None]           # (1, 1, P, 2)
    colour = F.grid_sample(texture, grid, mode="bilinear", padding_mode="border",
                           align_corners=True)[0, :, 0]                 # (C, P)
    # Flat index of channel 0 of each covered pixel in the (B, C, H, W) image.
    channels = texture.shape[1]
    n_pix = h * w
    image_of = pixel.div(n_pix, rounding_mode="floor")
    at = pixel + image_of * ((channels - 1) * n_pix)
    image = torch.zeros(b * channels * n_pix, dtype=texture.dtype, device=texture.device)
    for c in range(channels):
        image.index_copy_(0, at + c * n_pix, colour[c])
    return image.view(b, channels, h, w)


@dataclass
class SparseConfig:
    """FaceAnime's sparse texture prior."""

    stride: int = 4
    """Keep every ``stride``-th vertex (1 = all vertices: a dense point prior)."""
    radius: float = 1.0
    """Point radius in pixels (0.5: one pixel per point; see :func:`splat_points`)."""
    depth_tolerance: float | None = None
    """Visibility margin in depth units (None: 1 % of the face's depth range)."""
    backend: str = "torch"
    """Rasterizer backend."""


@dataclass
class SparsePriors:
    """Sparse prior images of one source at source and target coefficients.

    Attributes:
        source: ``(B, 3, H, W)`` p_s, the sampled colours at the source's own vertex positions.
        target: ``(B, 3, H, W)`` p_t, the same colours at the target's vertex positions.
        source_mask, target_mask: ``(B, 1, H, W)`` where a point was drawn.
        vertices: ``(M,)`` the interval-sampled vertex subset.
        visible: ``(B, M)`` which of them the source shows (only those are drawn).
        colors: ``(B, M, 3)`` their sampled colours.
    """

    source: torch.Tensor
    target: torch.Tensor
    source_mask: torch.Tensor
    target_mask: torch.Tensor
    vertices: torch.Tensor
    visible: torch.Tensor
    colors: torch.Tensor


def sparse_vertices(n_vertices: int, stride: int, device: torch.device | str = "cpu"
                    ) -> torch.Tensor:
    """The interval-sampled vertex subset: every ``stride``-th vertex index."""
    if stride < 1:
        raise InputError(f"the sparse prior's stride must be >= 1, got {stride}")
    return torch.arange(0, n_vertices, stride, device=device)


def sparse_priors(source_image: torch.Tensor, source_screen: torch.Tensor,
                  target_screen: torch.Tensor, triangles: torch.Tensor,
                  image_size: tuple[int, int] | None = None,
                  config: SparseConfig | None = None) -> SparsePriors:
    """FaceAnime's sparse texture priors ``p_s`` and ``p_t`` in one call.

    Args:
        source_image: ``(B, 3, H, W)`` or ``(1, 3, H, W)`` shared by the batch, in [0, 1].
        source_screen: ``(B, N, 3)`` or ``(1, N, 3)``: the model's vertices projected with the
            source coefficients into the source image.
        target_screen: ``(B, N, 3)`` the vertices at the target coefficients, in the prior's
            frame.
        triangles: ``(F, 3)`` for the visibility test.
        image_size: ``(H, W)`` of the priors (default: the source image's).
        config: settings.

    Returns:
        :class:`SparsePriors`.
    """
    config = config or SparseConfig()
    b = target_screen.shape[0]
    if source_screen.shape[0] not in (1, b) or source_image.shape[0] not in (1, b) \
            or source_screen.shape[1:] != target_screen.shape[1:]:
        raise InputError(f"sparse_priors: source image {tuple(source_image.shape)}, source "
                         f"vertices {tuple(source_screen.shape)} and target vertices "
                         f"{tuple(target_screen.shape)} do not match")
    h, w = source_image.shape[-2:]
    size = image_size or (h, w)
    n = source_screen.shape[1]
    keep = sparse_vertices(n, config.stride, source_screen.device)
    visible = vertex_visibility(source_screen, triangles, (h, w), config.depth_tolerance,
                                backend=config.backend)[:, keep]
    colors = sample_image(source_image.to(source_screen.dtype), source_screen[:, keep])
    visible = visible.expand(b, -1)
    colors = colors.expand(b, -1, -1)
    ps, ms, _ = splat_points(source_screen[:, keep].expand(b, -1, -1), colors, size,
                             config.radius, config.backend, mask=visible)
    pt, mt, _ = splat_points(target_screen[:, keep], colors, size, config.radius,
                             config.backend, mask=visible)
    return SparsePriors(source=ps, target=pt, source_mask=ms, target_mask=mt, vertices=keep,
                        visible=visible, colors=colors)
