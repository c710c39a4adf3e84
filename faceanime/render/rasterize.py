"""Triangle rasterization of screen-space meshes: which triangle covers each pixel, where inside it,
and at what depth.

Conventions (those of :mod:`faceanime.geometry.camera`): screen-space vertices are ``(B, N, 3)``
holding pixel ``u`` (x right), pixel ``v`` (y down) and depth with *larger = nearer*. Pixel
``(i, j)`` (row ``i``, column ``j``) has its centre at ``u = j, v = i``.

Coverage: a pixel is covered by a triangle when its centre lies inside it. A centre exactly on an
edge goes to one triangle only, by the *top-left rule* written for image coordinates: an edge
owns the centres on it when the triangle lies to its right (larger ``u``), or, for a horizontal
edge, below it (larger ``v``). Two triangles sharing an edge from opposite sides therefore cover
each centre on it exactly once, and a closed fan covers its shared vertex exactly once. Edge
functions of a shared edge are evaluated from the same, canonically ordered endpoints in both
triangles, so the test is exact in floating point too (no cracks, no double cover).

Winding: model triangles are counter-clockwise seen from the front with model y up. Projection
flips y, so in the ``(u, v)`` frame the signed area ``(u1-u0)(v2-v0) - (v1-v0)(u2-u0)`` of a
front-facing triangle is *negative* (clockwise in that frame taken as a math frame; on the displayed
image, where v grows downwards, it still looks counter-clockwise). ``cull_backfaces`` drops the
triangles with positive signed area. Checked on the SFM mean face (``docs/render.md``).

Depth test: the nearest (largest depth) triangle wins; depths are compared at float32
resolution, and equal depths go to the larger face index, so the result is deterministic on any
device. Barycentric weights are those of the pixel centre in the screen-space triangle, with no
perspective correction: our projections are affine in screen space (FaceAnime's scaled
orthographic camera exactly; for the perspective camera this is the usual screen-space
interpolation, close for a face far from the camera compared with its depth).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from faceanime.errors import BackendUnavailableError, InputError
from faceanime.render import zbuffer

BACKENDS = ("torch", "pytorch3d")

# Pixel cells of (triangle, pixel) candidates the torch backend evaluates at once (see
# box_blocks): bounds peak memory (~40 bytes a cell) whatever the triangle sizes, while keeping
# each step large enough to amortise the per-operation overhead.
CHUNK_PAIRS = 1 << 20

PYTORCH3D_HINT = ("pytorch3d is not installed: install it with "
                  "`pip install 'git+https://github.com/facebookresearch/pytorch3d.git'` "
                  "(see its INSTALL.md), or use backend='torch'")


@dataclass
class Fragments:
    """What covers each pixel.

    Attributes:
        face_index: ``(B, H, W)`` int64 index into the triangles, -1 for background.
        bary: ``(B, H, W, 3)`` barycentric weights of the pixel centre in that triangle (weights
            of its vertices in the order the triangle lists them), zeros at background.
        depth: ``(B, H, W)`` interpolated depth (larger = nearer), ``-inf`` at background.
    """

    face_index: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """``(B, H, W)`` bool: covered pixels."""
        return self.face_index >= 0


# --- input checks ----------------------------------------------------------------------------


def check_image_size(image_size) -> tuple[int, int]:
    """``(H, W)`` as two positive ints, or :class:`InputError`."""
    try:
        h, w = (int(s) for s in image_size)
    except (TypeError, ValueError):
        raise InputError(f"image_size must be (H, W), got {image_size!r}") from None
    if h <= 0 or w <= 0 or (h, w) != tuple(image_size):
        raise InputError(f"image_size must be two positive integers (H, W), got {image_size!r}")
    return h, w


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise InputError(f"unknown render backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    return backend


def check_points(points: torch.Tensor, name: str = "vertices") -> None:
    """``(B, N, 3)`` floating tensor, or :class:`InputError`."""
    if not isinstance(points, torch.Tensor) or points.ndim != 3 or points.shape[-1] != 3:
        shape = tuple(points.shape) if isinstance(points, torch.Tensor) else type(points).__name__
        raise InputError(f"{name} must be a (B, N, 3) tensor, got {shape}")
    if not points.is_floating_point():
        raise InputError(f"{name} must be floating point, got {points.dtype}")


def check_triangles(triangles: torch.Tensor, n_vertices: int,
                    device: torch.device) -> torch.Tensor:
    """``(F, 3)`` int64 indices in ``[0, N)`` on ``device``, or :class:`InputError`."""
    if not isinstance(triangles, torch.Tensor) or triangles.ndim != 2 or triangles.shape[1] != 3:
        shape = (tuple(triangles.shape) if isinstance(triangles, torch.Tensor)
                 else type(triangles).__name__)
        raise InputError(f"triangles must be an (F, 3) tensor, got {shape}")
    if triangles.is_floating_point() or triangles.dtype == torch.bool:
        raise InputError(f"triangles must hold integer indices, got {triangles.dtype}")
    triangles = triangles.to(device=device, dtype=torch.long)
    if triangles.numel() and (int(triangles.min()) < 0 or int(triangles.max()) >= n_vertices):
        raise InputError(f"triangle indices must lie in [0, {n_vertices}), got "
                         f"[{int(triangles.min())}, {int(triangles.max())}]")
    return triangles


def import_pytorch3d():
    """The ``pytorch3d`` package, imported on first use; :class:`BackendUnavailableError` if
    it cannot be imported."""
    try:
        importlib.import_module("pytorch3d.renderer")
        importlib.import_module("pytorch3d.structures")
        return importlib.import_module("pytorch3d")
    except ImportError as exc:
        raise BackendUnavailableError(f"{PYTORCH3D_HINT} ({exc})") from None


def to_pytorch3d_ndc(u: torch.Tensor, v: torch.Tensor, height: int,
                     width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel coordinates -> pytorch3d NDC. pytorch3d puts +X left and +Y up, gives the shorter
    image side the range [-1, 1] (the longer one proportionally more, pixels are square) and puts
    pixel centres at ``-r + (2 r k + r) / S`` along a side of ``S`` pixels and half-range ``r``,
    counting ``k`` from the right / bottom: so column ``j`` sits at ``(W - 1 - 2 j) / min(H, W)``
    and row ``i`` at ``(H - 1 - 2 i) / min(H, W)``."""
    short = float(min(height, width))
    return (width - 1 - 2 * u) / short, (height - 1 - 2 * v) / short


def pytorch3d_depth_offset(depth: torch.Tensor) -> torch.Tensor:
    """``(B, N) -> (B, 1)`` ``c`` such that ``z = c - depth`` is >= 1 for every finite depth:
    pytorch3d wants smaller z = nearer and skips anything at z <= 0."""
    finite = torch.where(torch.isfinite(depth), depth, torch.full_like(depth, -torch.inf))
    top = finite.amax(dim=1, keepdim=True)
    return torch.where(torch.isfinite(top), top, torch.zeros_like(top)) + 1


# --- shared machinery of the torch backend ---------------------------------------------------

# Tile sides tried by box_blocks (powers of two, so that grid indices split with shifts).
TILE_SIDES = (2, 4, 8, 16, 32)
# The per-tile work (a table gather, row and column terms), counted in pixel cells when
# box_blocks picks the tile side; a rough CPU figure, only the order of magnitude matters.
TILE_COST = 32

# Z-buffer key of an empty pixel: below every real key (see depth_keys), and its low 32 bits
# read as label -1.
EMPTY = torch.iinfo(torch.int64).min + 0xFFFFFFFF


@dataclass
class BoxBlock:
    """Square ``S x S`` pixel tiles evaluated densely on an ``(S, S, T)`` grid.

    The tile index is the last, contiguous dimension: per-tile quantities are plain ``(T,)``
    vectors, and the grid's arithmetic broadcasts them along long contiguous rows (with the
    tile first, every operation would run over rows of only ``S`` elements, several times
    slower on CPU).

    Attributes:
        item: ``(T,)`` int64 item (triangle or point) of each tile.
        base: ``(T,)`` int64 flat pixel (over the batch) of each tile's first row and column.
        pu: ``(1, S, T)`` pixel-centre ``u`` of each column, NaN past the tile's part of the box.
        pv: ``(S, 1, T)`` pixel-centre ``v`` of each row, NaN likewise.
        width: image width, the stride of a row.
    """

    item: torch.Tensor
    base: torch.Tensor
    pu: torch.Tensor
    pv: torch.Tensor
    width: int

    def locate(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat indices into the ``(S, S, T)`` grid -> ``(tile, pixel)``: the tile (row of
        ``item``) and the flat pixel over the batch."""
        side, tiles = self.pu.shape[1], self.pu.shape[2]
        shift = side.bit_length() - 1
        cell = flat.div(tiles, rounding_mode="floor")
        tile = flat - cell * tiles
        row, col = cell >> shift, cell & (side - 1)
        return tile, self.base.index_select(0, tile) + row * self.width + col


def box_blocks(x0: torch.Tensor, y0: torch.Tensor, nx: torch.Tensor, ny: torch.Tensor,
               origin: torch.Tensor, width: int, dtype: torch.dtype,
               chunk: int = CHUNK_PAIRS) -> Iterator[BoxBlock]:
    """Cover per-item pixel boxes with square tiles for dense, vectorised evaluation.

    Item ``k`` covers columns ``x0[k] .. x0[k] + nx[k] - 1`` and rows ``y0[k] .. y0[k] + ny[k] -
    1`` (nothing where ``nx`` or ``ny`` is 0) of the image starting at flat pixel ``origin[k]``.
    Boxes are cut into ``S x S`` tiles, ``S`` from :data:`TILE_SIDES` chosen to minimise the
    tiles' total area for these boxes (small triangles get small tiles, big ones big tiles), and
    tiles come in blocks of at most ~``chunk`` pixels, so memory stays bounded whatever the
    triangle sizes. Per-pixel work is then broadcast arithmetic with no per-pixel gathers, in a
    few large tensor operations even for one small image.

    Args:
        x0, y0, nx, ny, origin: ``(K,)`` int64.
        width: image width.
        dtype: floating dtype of the pixel-centre coordinates.

    Yields:
        :class:`BoxBlock`.
    """
    device = x0.device
    keep = ((nx > 0) & (ny > 0)).nonzero()[:, 0]
    if len(keep) == 0:
        return
    item, x0, y0, nx, ny = keep, x0[keep], y0[keep], nx[keep], ny[keep]
    cost = torch.stack([((nx + s - 1) // s * ((ny + s - 1) // s)).sum() * (s * s + TILE_COST)
                        for s in TILE_SIDES]).tolist()
    side = TILE_SIDES[min(range(len(cost)), key=cost.__getitem__)]
    tiles_x, tiles_y = (nx + side - 1) // side, (ny + side - 1) // side
    count = tiles_x * tiles_y
    box = torch.repeat_interleave(torch.arange(len(item), device=device), count)
    local = torch.arange(len(box), device=device) - (count.cumsum(0) - count)[box]
    ty = local.div(tiles_x[box], rounding_mode="floor")
    tx = local - ty * tiles_x[box]
    item, x0, y0 = item[box], x0[box] + tx * side, y0[box] + ty * side
    nx, ny = nx[box] - tx * side, ny[box] - ty * side
    base = origin[item] + y0 * width + x0
    steps = torch.arange(side, device=device)
    per_block = max(1, chunk // (side * side))
    for lo in range(0, len(item), per_block):
        m = slice(lo, lo + per_block)
        pu = torch.where(steps[:, None] < nx[m], (x0[m] + steps[:, None]).to(dtype), torch.nan)
        pv = torch.where(steps[:, None] < ny[m], (y0[m] + steps[:, None]).to(dtype), torch.nan)
        yield BoxBlock(item[m], base[m], pu[None], pv[:, None], width)


def pixel_range(low: torch.Tensor, high: torch.Tensor, size: int) -> tuple[torch.Tensor,
                                                                          torch.Tensor]:
    """Integer pixel centres ``k`` with ``low <= k <= high`` inside ``[0, size)``: ``(first,
    count)``, int64, count 0 where none (or where a bound is NaN)."""
    first = low.ceil().clamp(0, size)
    last = high.floor().clamp(-1, size - 1)
    count = (last - first + 1).clamp_min(0)
    count = torch.where(torch.isnan(count), torch.zeros_like(count), count)
    first = torch.where(torch.isnan(first), torch.zeros_like(first), first)
    return first.long(), count.long()


def depth_keys(depth: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """``(M,), (M,) -> (M,)`` int64 z-buffer keys ordered by depth (as float32), then by label.

    The float32 bit pattern, with the magnitude bits of negative numbers flipped, orders like the
    float; it fills the high 32 bits and the label (``0 <= label < 2^31``, the face or point
    index within its image) the low ones, so one ``amax`` picks the nearest fragment and, among
    equal depths, the larger label, in any order of arrival.
    """
    bits = depth.to(torch.float32).contiguous().view(torch.int32)
    bits = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    return bits.long() * (1 << 32) + label


def key_labels_(key_buf: torch.Tensor) -> torch.Tensor:
    """Label of each z-buffer key, -1 where empty, computed in place (the keys are lost)."""
    # Keep the low 32 bits and sign-extend them, without a new buffer of the image's size.
    return key_buf.bitwise_and_(0xFFFFFFFF).bitwise_xor_(1 << 31).sub_(1 << 31)


# --- triangles -------------------------------------------------------------------------------


def signed_areas(face_verts: torch.Tensor) -> torch.Tensor:
    """``(..., 3, >=2) -> (...)`` twice the signed area ``(u1-u0)(v2-v0) - (v1-v0)(u2-u0)`` in
    pixel coordinates: negative for front faces (see the module docstring)."""
    e1 = face_verts[..., 1, :2] - face_verts[..., 0, :2]
    e2 = face_verts[..., 2, :2] - face_verts[..., 0, :2]
    return e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]


def _triangle_setup(corners: torch.Tensor, cull_backfaces: bool
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-triangle edge tables for the torch backend.

    Edge ``k`` is the one opposite vertex ``k`` (its edge function, normalised, is vertex ``k``'s
    weight): ``E_k(p) = du_k (p_v - a_v,k) - dv_k (p_u - a_u,k)``, positive inside. Each edge is
    stored from its lexicographically smaller endpoint ``a`` (in ``(u, v)``), with the sign that
    makes it positive inside folded into ``du, dv`` (multiplying by -1 is exact): a shared edge
    is then evaluated identically by both triangles up to an exact sign flip.

    Args:
        corners: ``(3, 3, K)`` vertex ``c``'s ``u, v, depth`` of each triangle at ``[c, :]``
            (one contiguous vector per quantity: these few operations on ``K`` triangles then
            cost little next to the pixels).

    Returns:
        ``valid (K,)`` bool and ``table (15, K)``: rows ``a_u, a_v, du, dv`` of edges 0, 1, 2
        (``a_u`` of edge ``k`` in row ``k``, ``a_v`` in row ``3 + k``, ...), then ``limit``
        of each edge: a centre is inside when ``E_k >= limit_k`` for all ``k``; ``limit`` is 0
        on edges that own their centres (top-left rule) and the smallest normal float
        elsewhere, i.e. ``E_k > 0`` (edge functions of pixel centres are 0 or far larger).
    """
    (u0, v0, _), (u1, v1, _), (u2, v2, _) = corners
    area2 = (u1 - u0) * (v2 - v0) - (v1 - v0) * (u2 - u0)
    valid = torch.isfinite(corners).all(0).all(0) & (area2 != 0)
    if cull_backfaces:
        valid &= area2 < 0
    orient = area2.sign()
    rows: list[list[torch.Tensor]] = [[], [], [], [], []]
    for (pu, pv), (qu, qv) in (((u1, v1), (u2, v2)), ((u2, v2), (u0, v0)), ((u0, v0), (u1, v1))):
        swap = (qu < pu) | ((qu == pu) & (qv < pv))
        au, av = torch.where(swap, qu, pu), torch.where(swap, qv, pv)
        sign = torch.where(swap, -orient, orient)
        du = (torch.where(swap, pu, qu) - au) * sign
        dv = (torch.where(swap, pv, qv) - av) * sign
        # The interior lies along the edge function's gradient (-dv, du).
        owned = (dv < 0) | ((dv == 0) & (du > 0))
        # (A scalar pair would be float32, where float64's smallest normal flushes to 0.)
        limit = torch.where(owned, torch.zeros_like(du), torch.finfo(du.dtype).tiny)
        for row, value in zip(rows, (au, av, du, dv, limit), strict=True):
            row.append(value)
    return valid, torch.stack([value for row in rows for value in row])


def _edge_functions(tab: torch.Tensor, pu: torch.Tensor,
                    pv: torch.Tensor) -> list[torch.Tensor]:
    """The three edge functions of :func:`_triangle_setup`'s tables at pixel centres, by one
    fixed sequence of operations: the rasterizing loop (on broadcast tiles) and the final pass
    (on gathered pixels) get bit-identical values.

    Args:
        tab: ``(>=12, ...)`` rows ``(a_u, a_v, du, dv)`` x 3 edges (each quantity's three
            edges together), each row broadcastable against ``pu, pv``.
        pu, pv: pixel-centre coordinates.
    """
    return [tab[6 + k] * (pv - tab[3 + k]) - tab[9 + k] * (pu - tab[k]) for k in range(3)]


def _rasterize_torch(vertices: torch.Tensor, triangles: torch.Tensor, height: int, width: int,
                     cull_backfaces: bool, chunk: int = CHUNK_PAIRS,
                     compiled: bool = True) -> Fragments:
    """The torch backend; ``compiled``: the z-buffer pass by :mod:`faceanime.render.zbuffer`
    on CPU tensors when numba is installed (the same keys, faster), else in torch."""
    b, f = vertices.shape[0], triangles.shape[0]
    dtype, device = vertices.dtype, vertices.device
    n_pix = height * width
    # (3 corners, 3 coordinates, B * F triangles), each quantity a contiguous vector.
    corners = vertices.permute(2, 0, 1).index_select(2, triangles.T.reshape(-1))
    corners = corners.view(3, b, 3, f).permute(2, 0, 1, 3).reshape(3, 3, b * f)
    valid, table_t = _triangle_setup(corners, cull_backfaces)
    us, vs = corners[:, 0], corners[:, 1]
    x0, nx = pixel_range(us.amin(0), us.amax(0), width)
    y0, ny = pixel_range(vs.amin(0), vs.amax(0), height)
    nx = torch.where(valid, nx, torch.zeros_like(nx))
    origin = torch.arange(b, device=device).repeat_interleave(f) * n_pix
    depth_tab = corners[:, 2]                                     # (3, B * F)
    label_tab = torch.arange(f, device=device).repeat(b)

    # Pass 1: z-buffer of (depth, face) keys over every covered (triangle, pixel) pair.
    key_buf = torch.full((b * n_pix,), EMPTY, dtype=torch.long, device=device)
    if compiled and zbuffer.usable(vertices):
        # The same keys and fragments, scanned per triangle and resolved per pixel by compiled
        # code (faceanime.render.zbuffer).
        zbuffer.scan_keys(table_t, depth_tab, x0, nx, y0, ny, origin, label_tab, width,
                          key_buf)
        face, bary, depth = zbuffer.resolve_keys(key_buf, table_t, depth_tab, f, height, width)
        return Fragments(face.view(b, height, width), bary.view(b, height, width, 3),
                         depth.view(b, height, width))
    for block in box_blocks(x0, y0, nx, ny, origin, width, dtype, chunk):
        tab = table_t.index_select(1, block.item)                    # (15, T)
        fns = _edge_functions(tab, block.pu, block.pv)               # 3 x (S, S, T)
        inside = fns[0] >= tab[12]
        inside &= fns[1] >= tab[13]
        inside &= fns[2] >= tab[14]
        flat = inside.view(-1).nonzero()[:, 0]
        tile, pixel = block.locate(flat)
        item = block.item.index_select(0, tile)
        w0, w1, w2 = (g.reshape(-1).index_select(0, flat) for g in fns)
        z0, z1, z2 = depth_tab.index_select(1, item)
        depth = (w0 * z0 + w1 * z1 + w2 * z2) / (w0 + w1 + w2)
        key_buf.scatter_reduce_(0, pixel, depth_keys(depth, label_tab.index_select(0, item)),
                                "amax")

    # Pass 2: barycentrics and depth of the winners only, recomputed the same way.
    face = key_labels_(key_buf)
    pixel = (face >= 0).nonzero()[:, 0]
    image = pixel.div(n_pix, rounding_mode="floor")
    rest = pixel - image * n_pix
    row = rest.div(width, rounding_mode="floor")
    item = image * f + face.index_select(0, pixel)
    # Gathered from a transposed table, so that each quantity is a contiguous vector.
    tab = torch.cat([table_t[:12], depth_tab]).index_select(1, item)   # (15, P)
    w0, w1, w2 = _edge_functions(tab, (rest - row * width).to(dtype), row.to(dtype))
    total = w0 + w1 + w2
    bary = torch.zeros(b * n_pix, 3, dtype=dtype, device=device)
    # Each weight divided as a contiguous vector: the same values as dividing the (P, 3)
    # stack by (P, 1), without a broadcast over rows of 3 (several times slower on CPU).
    bary.index_copy_(0, pixel, torch.stack([w0 / total, w1 / total, w2 / total], 1))
    depth = torch.full((b * n_pix,), -torch.inf, dtype=dtype, device=device)
    depth.index_copy_(0, pixel, (w0 * tab[12] + w1 * tab[13] + w2 * tab[14]) / total)
    return Fragments(face.view(b, height, width), bary.view(b, height, width, 3),
                     depth.view(b, height, width))


def _rasterize_pytorch3d(vertices: torch.Tensor, triangles: torch.Tensor, height: int,
                         width: int, cull_backfaces: bool) -> Fragments:
    import_pytorch3d()
    from pytorch3d.renderer.mesh import rasterize_meshes
    from pytorch3d.structures import Meshes

    b, f = vertices.shape[0], triangles.shape[0]
    if f == 0:
        return _rasterize_torch(vertices, triangles, height, width, cull_backfaces)
    offset = pytorch3d_depth_offset(vertices[..., 2])
    face_verts = vertices[:, triangles]                           # (B, F, 3, 3)
    x, y = to_pytorch3d_ndc(face_verts[..., 0], face_verts[..., 1], height, width)
    ndc = torch.stack([x, y, offset[..., None] - face_verts[..., 2]], -1)
    # Unshared vertices (3 per face) let us drop a triangle on our side, by collapsing it to a
    # point, which pytorch3d skips as zero-area: culling then follows our winding convention,
    # and non-finite triangles never reach pytorch3d.
    area2 = signed_areas(face_verts)
    keep = torch.isfinite(face_verts).flatten(2).all(2) & (area2 != 0)
    if cull_backfaces:
        keep &= area2 < 0
    collapsed = torch.tensor([0.0, 0.0, -1.0], dtype=ndc.dtype, device=ndc.device)
    ndc = torch.where(keep[..., None, None], ndc, collapsed)
    faces = torch.arange(3 * f, device=vertices.device).view(f, 3)
    meshes = Meshes(verts=ndc.reshape(b, 3 * f, 3).float(), faces=faces.repeat(b, 1, 1))
    # max_faces_per_bin = F: the coarse (binned) pass can never overflow.
    pix_to_face, zbuf, bary, _ = rasterize_meshes(
        meshes, image_size=(height, width), blur_radius=0.0, faces_per_pixel=1,
        max_faces_per_bin=f, perspective_correct=False, cull_backfaces=False)
    packed = pix_to_face[..., 0]
    covered = packed >= 0
    first = torch.arange(b, device=vertices.device).view(b, 1, 1) * f
    face = torch.where(covered, packed - first, torch.full_like(packed, -1))
    depth = torch.where(covered, offset[..., None].to(zbuf.dtype) - zbuf[..., 0],
                        torch.full_like(zbuf[..., 0], -torch.inf))
    bary = torch.where(covered[..., None], bary[..., 0, :], torch.zeros_like(bary[..., 0, :]))
    return Fragments(face, bary.to(vertices.dtype), depth.to(vertices.dtype))


def rasterize(vertices: torch.Tensor, triangles: torch.Tensor, image_size: tuple[int, int],
              backend: str = "torch", cull_backfaces: bool = False) -> Fragments:
    """Rasterize a batch of screen-space meshes sharing one triangle list.

    Coverage (pixel centres, top-left rule on edges), winding and the depth test are defined in
    the module docstring. Triangles with zero screen area or non-finite vertices are skipped.
    Results are not meant to be differentiated.

    Args:
        vertices: ``(B, N, 3)`` pixel ``u, v`` and depth (larger = nearer), e.g. from
            :func:`faceanime.reconstruction.project_vertices`.
        triangles: ``(F, 3)`` vertex indices.
        image_size: ``(H, W)``.
        backend: ``"torch"`` (pure PyTorch, any device) or ``"pytorch3d"`` (its C++/CUDA
            rasterizer; centres exactly on an edge are left uncovered there).
        cull_backfaces: skip triangles whose signed area is positive (facing away).

    Returns:
        :class:`Fragments` of ``B`` images of ``H x W`` on the vertices' device.
    """
    height, width = check_image_size(image_size)
    check_backend(backend)
    check_points(vertices)
    triangles = check_triangles(triangles, vertices.shape[1], vertices.device)
    if backend == "pytorch3d":
        return _rasterize_pytorch3d(vertices, triangles, height, width, cull_backfaces)
    return _rasterize_torch(vertices, triangles, height, width, cull_backfaces)


def interpolate_covered(fragments: Fragments, attributes: torch.Tensor,
                        triangles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-vertex attributes interpolated at the covered pixels only.

    Args:
        fragments: from :func:`rasterize`, ``B`` images of ``H x W``.
        attributes: ``(N, C)`` shared by the batch, or ``(B, N, C)``.
        triangles: ``(F, 3)`` the triangles that were rasterized.

    Returns:
        ``pixel (P,)`` flat indices of the covered pixels over ``(B, H, W)`` and their values
        ``(P, C)`` in the attributes' dtype (floating).
    """
    face = fragments.face_index
    b, h, w = face.shape
    if not isinstance(attributes, torch.Tensor) or attributes.ndim not in (2, 3):
        raise InputError("attributes must be an (N, C) or (B, N, C) tensor")
    if attributes.ndim == 3 and attributes.shape[0] != b:
        raise InputError(f"attributes have batch {attributes.shape[0]}, fragments {b}")
    n = attributes.shape[-2]
    triangles = check_triangles(triangles, n, face.device)
    attributes = attributes.to(face.device)
    if not attributes.is_floating_point():
        attributes = attributes.float()
    c = attributes.shape[-1]
    flat_face = face.reshape(-1)
    pixel = (flat_face >= 0).nonzero()[:, 0]
    corner = triangles.index_select(0, flat_face.index_select(0, pixel))   # (P, 3)
    if attributes.ndim == 3:
        corner = corner + pixel.div(h * w, rounding_mode="floor")[:, None] * n
    values = attributes.reshape(-1, c).index_select(0, corner.reshape(-1)).view(-1, 3, c)
    weights = fragments.bary.reshape(-1, 3).index_select(0, pixel).to(attributes.dtype)
    return pixel, (weights[:, 0:1] * values[:, 0] + weights[:, 1:2] * values[:, 1]
                   + weights[:, 2:3] * values[:, 2])


def interpolate(fragments: Fragments, attributes: torch.Tensor,
                triangles: torch.Tensor) -> torch.Tensor:
    """Interpolate per-vertex attributes at every covered pixel.

    Args:
        fragments: from :func:`rasterize`, ``B`` images of ``H x W``.
        attributes: ``(N, C)`` shared by the batch, or ``(B, N, C)``.
        triangles: ``(F, 3)`` the triangles that were rasterized.

    Returns:
        ``(B, C, H, W)`` in the attributes' dtype, zeros at background.
    """
    pixel, values = interpolate_covered(fragments, attributes, triangles)
    b, h, w = fragments.face_index.shape
    out = torch.zeros(b * h * w, values.shape[1], dtype=values.dtype, device=values.device)
    out[pixel] = values
    return out.view(b, h, w, -1).permute(0, 3, 1, 2)
