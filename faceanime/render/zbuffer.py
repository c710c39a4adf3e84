"""The rasterizer's z-buffer pass on the CPU, compiled (numba): the same keys as the pure-torch
pass, bit for bit, several times faster.

The torch backend of :mod:`faceanime.render.rasterize` covers each triangle's pixel box with
square tiles and evaluates every (triangle, pixel) pair as broadcast arithmetic, then keeps the
largest depth key per pixel with a scatter. On the CPU that is many large temporaries for what
is a short scan per triangle (an SFM face at 512² covers ~40 pixels a triangle): compiled, the
same scan loops over each triangle's box and writes the z-buffer directly. The edge functions,
the inside test, the depth and the key are the same float operations in the same order as the
torch pass (``_edge_functions``, ``depth_keys``), with no fused multiply-add (numba's default,
without ``fastmath``), so the keys, and everything computed from them, are identical
(``tests/test_render_rasterize.py`` compares them on real meshes).

numba is optional: without it (or for tensors on a GPU) the torch pass runs.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import torch

AVAILABLE = importlib.util.find_spec("numba") is not None


def _kernel():
    """The compiled scan, built on first use (compiling takes about a second; numba caches it
    on disk for the next process)."""
    import numba

    @numba.njit(nogil=True, cache=True)
    def scan(table, depth_tab, x0, nx, y0, ny, origin, label, coords, width, keys):
        # ``table (15, K)``: rows a_u, a_v, du, dv of edges 0-2, then each edge's limit;
        # ``depth_tab (3, K)``; boxes ``x0, nx, y0, ny``, flat ``origin`` and ``label`` (K,);
        # ``coords``: pixel index -> its centre coordinate in the tables' float type.
        bits32 = np.empty(1, np.float32)
        as_int = bits32.view(np.int32)
        for k in range(x0.shape[0]):
            if nx[k] <= 0 or ny[k] <= 0:
                continue
            au0, au1, au2 = table[0, k], table[1, k], table[2, k]
            av0, av1, av2 = table[3, k], table[4, k], table[5, k]
            du0, du1, du2 = table[6, k], table[7, k], table[8, k]
            dv0, dv1, dv2 = table[9, k], table[10, k], table[11, k]
            lim0, lim1, lim2 = table[12, k], table[13, k], table[14, k]
            z0, z1, z2 = depth_tab[0, k], depth_tab[1, k], depth_tab[2, k]
            tag = label[k]
            for y in range(y0[k], y0[k] + ny[k]):
                pv = coords[y]
                row = origin[k] + y * width
                for x in range(x0[k], x0[k] + nx[k]):
                    pu = coords[x]
                    w0 = du0 * (pv - av0) - dv0 * (pu - au0)
                    if not w0 >= lim0:
                        continue
                    w1 = du1 * (pv - av1) - dv1 * (pu - au1)
                    if not w1 >= lim1:
                        continue
                    w2 = du2 * (pv - av2) - dv2 * (pu - au2)
                    if not w2 >= lim2:
                        continue
                    depth = (w0 * z0 + w1 * z1 + w2 * z2) / (w0 + w1 + w2)
                    bits32[0] = depth
                    bits = as_int[0]
                    bits = bits ^ ((bits >> 31) & 0x7FFFFFFF)
                    key = np.int64(bits) * np.int64(4294967296) + tag
                    if key > keys[row + x]:
                        keys[row + x] = key

    @numba.njit(nogil=True, cache=True)
    def resolve(keys, table, depth_tab, n_pix, faces, width, coords, face, bary, depth):
        # Pass 2 of the torch backend per pixel: the winner's label from its key's low bits
        # (``key_labels_``), then its edge functions at the centre, recomputed as there.
        for p in range(keys.shape[0]):
            label = ((keys[p] & 0xFFFFFFFF) ^ 0x80000000) - 0x80000000
            face[p] = label
            if label < 0:
                continue
            image = p // n_pix
            rest = p - image * n_pix
            row = rest // width
            k = image * faces + label
            pu, pv = coords[rest - row * width], coords[row]
            w0 = table[6, k] * (pv - table[3, k]) - table[9, k] * (pu - table[0, k])
            w1 = table[7, k] * (pv - table[4, k]) - table[10, k] * (pu - table[1, k])
            w2 = table[8, k] * (pv - table[5, k]) - table[11, k] * (pu - table[2, k])
            total = w0 + w1 + w2
            bary[p, 0] = w0 / total
            bary[p, 1] = w1 / total
            bary[p, 2] = w2 / total
            depth[p] = (w0 * depth_tab[0, k] + w1 * depth_tab[1, k] + w2 * depth_tab[2, k]) \
                / total

    return scan, resolve


def _compiled():
    # The compiled functions, once per process, kept on this function object (not a module
    # global that tests or threads would race to fill twice).
    if not hasattr(_compiled, "kernels"):
        _compiled.kernels = _kernel()
    return _compiled.kernels


def usable(vertices: torch.Tensor) -> bool:
    """Whether the compiled pass can serve these vertices: numba is installed and they are CPU
    float32 or float64."""
    return AVAILABLE and vertices.device.type == "cpu" and vertices.dtype in (torch.float32,
                                                                              torch.float64)


def scan_keys(table: torch.Tensor, depth_tab: torch.Tensor, x0: torch.Tensor, nx: torch.Tensor,
              y0: torch.Tensor, ny: torch.Tensor, origin: torch.Tensor, label: torch.Tensor,
              width: int, keys: torch.Tensor) -> None:
    """Fill the z-buffer ``keys (B * H * W,)`` int64 in place with the largest depth key of the
    triangles covering each pixel centre, as the torch pass does.

    Args:
        table: ``(15, K)`` the triangles' edge tables (``_triangle_setup``), CPU.
        depth_tab: ``(3, K)`` their corners' depths, same dtype.
        x0, nx, y0, ny: ``(K,)`` int64 pixel boxes (``nx = 0``: skipped).
        origin: ``(K,)`` int64 flat index of each triangle's image's first pixel.
        label: ``(K,)`` int64 face index within its image (the key's low bits).
        width: image width.
        keys: ``(B * H * W,)`` int64, filled with ``EMPTY`` or earlier keys.
    """
    side = int(max(int((x0 + nx).max()), int((y0 + ny).max()), 1)) if len(x0) else 1
    coords = torch.arange(side, dtype=table.dtype).numpy()
    _compiled()[0](table.contiguous().numpy(), depth_tab.contiguous().numpy(), x0.numpy(),
                   nx.numpy(), y0.numpy(), ny.numpy(), origin.numpy(), label.numpy(), coords,
                   width, keys.numpy())


def resolve_keys(keys: torch.Tensor, table: torch.Tensor, depth_tab: torch.Tensor,
                 faces: int, height: int, width: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The rasterizer's fragments from a filled z-buffer, as the torch pass 2 computes them.

    Args:
        keys: ``(B * H * W,)`` int64 from :func:`scan_keys` (consumed).
        table, depth_tab: as for :func:`scan_keys`, over ``B * faces`` triangles.
        faces: triangles per image.

    Returns:
        ``face (B * H * W,)`` int64 (-1: uncovered), ``bary (B * H * W, 3)`` (0 there) and
        ``depth (B * H * W,)`` (-inf there), in the tables' dtype.
    """
    n = keys.shape[0]
    dtype = table.dtype
    face = torch.empty(n, dtype=torch.long)
    bary = torch.zeros(n, 3, dtype=dtype)
    depth = torch.full((n,), -torch.inf, dtype=dtype)
    coords = torch.arange(max(height, width), dtype=dtype).numpy()
    _compiled()[1](keys.numpy(), table.contiguous().numpy(), depth_tab.contiguous().numpy(),
                   height * width, faces, width, coords, face.numpy(), bary.numpy(),
                   depth.numpy())
    return face, bary, depth
