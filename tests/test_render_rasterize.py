"""The rasterizer of faceanime.render: coverage against brute force, the tie rule on shared edges,
the z-test, barycentrics, agreement with an independent ray caster (trimesh) on the SFM face,
batching, point splatting, vertex visibility, backends and bad input."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch

from faceanime.errors import BackendUnavailableError, InputError
from faceanime.geometry.camera import project_orthographic
from faceanime.geometry.rotation import euler_to_matrix
from faceanime.render import (
    front_facing_vertices,
    interpolate,
    rasterize,
    splat_points,
    vertex_visibility,
    zbuffer,
)
from faceanime.render.rasterize import _rasterize_torch, signed_areas
from tests.helpers import assert_close

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))]


def has_pytorch3d() -> bool:
    try:
        import pytorch3d.renderer  # noqa: F401
    except ImportError:
        return False
    return True


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- helpers ---------------------------------------------------------------------------------


def brute_force_inside(tri: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres strictly inside a 2D triangle, and their distance (in barycentric units) to
    the nearest edge, by solving for barycentric coordinates in float64."""
    jj, ii = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    m = np.array([[tri[0, 0] - tri[2, 0], tri[1, 0] - tri[2, 0]],
                  [tri[0, 1] - tri[2, 1], tri[1, 1] - tri[2, 1]]])
    rhs = np.stack([jj - tri[2, 0], ii - tri[2, 1]], -1)
    l01 = rhs @ np.linalg.inv(m).T
    bary = np.concatenate([l01, 1 - l01.sum(-1, keepdims=True)], -1)
    return (bary > 0).all(-1), np.abs(bary).min(-1)


def face_pose(model, yaw_deg, size: int, extent: float = 200.0, batch_yaws=None):
    """Screen-space SFM mean-face vertices, orthographic, the mesh's projected bounding box
    ``extent`` pixels on its longer side and centred in a ``size``² image."""
    yaws = batch_yaws if batch_yaws is not None else [yaw_deg]
    b = len(yaws)
    rot = euler_to_matrix(torch.tensor(yaws, dtype=torch.float32).deg2rad(), torch.zeros(b),
                          torch.zeros(b))
    unit = project_orthographic(model.mean.expand(b, -1, -1), rot, torch.zeros(b, 3),
                                torch.ones(b))
    lo, hi = unit[..., :2].amin(1), unit[..., :2].amax(1)
    scale = extent / (hi - lo).amax(1)
    verts = unit * scale[:, None, None]
    shift = (size - 1) / 2 - (lo + hi) / 2 * scale[:, None]
    return torch.cat([verts[..., :2] + shift[:, None], verts[..., 2:]], -1)


class GridTree:
    """Stand-in for trimesh's rtree (absent here) for rays along the depth axis: triangles
    bucketed by the unit cells their (u, v) bounds touch; a query returns the triangles of the
    cell holding the ray. The intersection itself is trimesh's."""

    def __init__(self, tri: np.ndarray):
        lo, hi = tri.min(1), tri.max(1)
        self.bounds = np.concatenate([lo.min(0), hi.max(0)])
        self.cells: dict[tuple[int, int], list[int]] = {}
        for i, (a, b) in enumerate(zip(np.floor(lo[:, :2]).astype(int),
                                       np.floor(hi[:, :2]).astype(int), strict=True)):
            for x in range(a[0], b[0] + 1):
                for y in range(a[1], b[1] + 1):
                    self.cells.setdefault((x, y), []).append(i)

    def intersection(self, box):
        centre = (np.asarray(box[:2]) + np.asarray(box[3:5])) / 2
        return self.cells.get(tuple(np.floor(centre).astype(int)), [])


def ray_hits(verts: np.ndarray, triangles: np.ndarray, origins: np.ndarray, up: bool):
    """trimesh's pure-python ray/triangle intersection along +depth (``up``) or -depth."""
    pytest.importorskip("trimesh")
    from trimesh.ray.ray_triangle import ray_triangle_id

    tri = verts[triangles]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-300)
    direction = np.tile([0.0, 0.0, 1.0 if up else -1.0], (len(origins), 1))
    return ray_triangle_id(tri, origins, direction, triangles_normal=normal, tree=GridTree(tri))


def raycast_depth(verts: np.ndarray, triangles: np.ndarray, size: int) -> np.ndarray:
    """Nearest-hit depth per pixel centre (-inf where no hit), one ray per pixel."""
    jj, ii = np.meshgrid(np.arange(size), np.arange(size))
    lo, hi = verts[:, :2].min(0) - 1, verts[:, :2].max(0) + 1
    near = (jj >= lo[0]) & (jj <= hi[0]) & (ii >= lo[1]) & (ii <= hi[1])
    origins = np.stack([jj[near], ii[near], np.full(near.sum(), verts[:, 2].max() + 10.0)], 1)
    _, ray, location = ray_hits(verts, triangles, origins.astype(np.float64), up=False)
    depth = np.full(len(origins), -np.inf)
    np.maximum.at(depth, ray, location[:, 2])
    out = np.full((size, size), -np.inf)
    out[near] = depth
    return out


def raycast_visible(verts: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """A vertex is visible when a ray from it toward the camera hits no triangle but its own."""
    tri_hit, ray, location = ray_hits(verts, triangles, verts, up=True)
    own = (triangles[tri_hit] == ray[:, None]).any(1)
    ahead = location[:, 2] > verts[ray, 2] + 1e-9 * np.ptp(verts[:, 2])
    hidden = np.zeros(len(verts), bool)
    hidden[ray[~own & ahead]] = True
    return ~hidden


def coverage_count(verts: torch.Tensor, triangles: torch.Tensor, size: int) -> torch.Tensor:
    """``(H, W)`` how many triangles cover each pixel, each rasterized on its own; checks that
    float64 vertices give the same."""
    counts = [sum(rasterize(v[None], tri[None], (size, size)).mask[0].long() for tri in triangles)
              for v in (verts, verts.double())]
    assert torch.equal(counts[0], counts[1])
    return counts[0]


# --- coverage --------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_single_triangle_covers_exactly_the_centres_inside(device):
    gen = np.random.default_rng(0)
    height, width = 24, 32
    for _ in range(40):
        # Many triangles reach past the image on some side.
        tri = gen.uniform([-12, -12], [width + 12, height + 12], size=(3, 2))
        verts = torch.tensor(np.concatenate([tri, gen.uniform(-1, 1, (3, 1))], 1),
                             dtype=torch.float32, device=device)
        got = rasterize(verts[None], torch.tensor([[0, 1, 2]]), (height, width)).face_index[0]
        inside, margin = brute_force_inside(tri, height, width)
        clear = margin > 1e-5        # centres on an edge follow the tie rule, tested below
        assert clear.mean() > 0.99
        np.testing.assert_array_equal((got >= 0).cpu().numpy()[clear], inside[clear])


def test_both_windings_and_degenerate_triangles():
    tri = torch.tensor([[[2.3, 1.2, 0.0], [9.6, 3.1, 0.0], [4.2, 8.7, 0.0]]])
    ccw = rasterize(tri, torch.tensor([[0, 1, 2]]), (12, 12)).mask
    cw = rasterize(tri, torch.tensor([[0, 2, 1]]), (12, 12)).mask
    assert ccw.sum() > 10 and torch.equal(ccw, cw)
    line = torch.tensor([[[1.0, 1.0, 0.0], [5.0, 5.0, 0.0], [9.0, 9.0, 0.0]]])
    assert not rasterize(line, torch.tensor([[0, 1, 2]]), (12, 12)).mask.any()
    nan = tri.clone()
    nan[0, 1, 0] = float("nan")
    assert not rasterize(nan, torch.tensor([[0, 1, 2]]), (12, 12)).mask.any()


def test_shared_diagonal_covers_every_pixel_of_a_quad_once():
    # Corners and the diagonal (1, 1)-(9, 9) run through pixel centres.
    verts = torch.tensor([[1.0, 1, 0], [9, 1, 0], [9, 9, 0], [1, 9, 0]])
    for tris in ([[0, 1, 2], [0, 2, 3]], [[0, 2, 1], [0, 3, 2]], [[1, 2, 0], [3, 0, 2]]):
        count = coverage_count(verts, torch.tensor(tris), 12)
        # Top-left rule: the left column and top row are in, the right and bottom out.
        expect = torch.zeros(12, 12, dtype=torch.long)
        expect[1:9, 1:9] = 1
        assert torch.equal(count, expect), tris


def test_fan_and_grid_meshes_cover_each_centre_once():
    # Six triangles around a vertex on a pixel centre, with spokes through pixel centres.
    centre = [6.0, 6.0, 0.0]
    ring = [[10, 6], [8, 10], [4, 10], [2, 6], [4, 2], [8, 2]]
    verts = torch.tensor([centre] + [[x, y, 0.0] for x, y in ring])
    fan = torch.tensor([[0, 1 + k, 1 + (k + 1) % 6] for k in range(6)])
    count = coverage_count(verts, fan, 13)
    assert count.max() == 1 and count[6, 6] == 1
    whole = rasterize(verts[None], fan, (13, 13)).mask[0]
    assert torch.equal(whole, count == 1)
    # A sheared grid with vertices on pixel centres, split along alternating diagonals.
    n = 5
    ys, xs = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    grid = torch.stack([2.0 + 3 * xs + ys, 2.0 + 3 * ys, torch.zeros(n, n)], -1).reshape(-1, 3)
    quads = [(i * n + j, i * n + j + 1, (i + 1) * n + j + 1, (i + 1) * n + j)
             for i in range(n - 1) for j in range(n - 1)]
    tris = [t for k, (a, b, c, d) in enumerate(quads)
            for t in (((a, b, c), (a, c, d)) if k % 2 else ((a, b, d), (b, c, d)))]
    count = coverage_count(grid, torch.tensor(tris), 24)
    assert count.max() == 1
    assert count.sum() == 12 * 12     # the grid's area, in pixel centres (half-open)


# Edges (float32 endpoints) and a pixel centre within rounding of them: evaluated from one end
# the edge function there is exactly 0, from the other end it is not. Found by search.
NEAR_MISSES = [
    ((21.5435848236084, 63.090553283691406), (61.057621002197266, 9.711499214172363), (49, 26)),
    ((1.8747360706329346, 5.9544758796691895), (44.1528205871582, 47.9757080078125), (15, 19)),
    ((12.653358459472656, 39.85956573486328), (28.6439208984375, 62.30780792236328), (27, 60)),
    ((39.70145034790039, 57.44854736328125), (1.8735504150390625, 3.010662317276001), (38, 55)),
]


@pytest.mark.parametrize(("a", "b", "centre"), NEAR_MISSES)
def test_shared_edge_is_watertight_in_floating_point(a, b, centre):
    a, b = torch.tensor(a), torch.tensor(b)
    normal = torch.stack([b[1] - a[1], a[0] - b[0]])
    middle = (a + b) / 2
    verts = torch.stack([a, b, middle + normal, middle - normal])
    verts = torch.cat([verts, torch.zeros(4, 1)], 1)
    for tris in ([[0, 1, 2], [1, 0, 3]], [[1, 0, 2], [0, 1, 3]]):
        count = coverage_count(verts, torch.tensor(tris), 64)
        assert count.max() == 1 and count[centre[1], centre[0]] == 1


def test_huge_triangle_and_small_chunks():
    verts = torch.tensor([[[-5000.0, -5000.0, 1.0], [9000.0, -100.0, 2.0], [-100.0, 9000.0, 3.0]]])
    fragments = rasterize(verts, torch.tensor([[0, 1, 2]]), (40, 50))
    assert fragments.mask.all()
    # Many small blocks give the same image as one.
    gen = torch.Generator().manual_seed(1)
    verts = torch.rand(2, 30, 3, generator=gen) * torch.tensor([50.0, 40.0, 5.0])
    tris = torch.randint(0, 30, (20, 3), generator=gen)
    full = rasterize(verts, tris, (40, 50))
    tiny = _rasterize_torch(verts, tris, 40, 50, False, chunk=1000)
    assert torch.equal(full.face_index, tiny.face_index)
    assert_close(tiny.bary, full.bary)
    assert_close(tiny.depth, full.depth)


# --- depth test, barycentrics, batching ------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_nearer_triangle_wins_in_either_order(device):
    far = [[2.0, 2.0, 1.0], [18.0, 3.0, 1.0], [6.0, 17.0, 1.0]]
    near = [[4.0, 5.0, 5.0], [16.0, 6.0, 5.0], [10.0, 16.0, 5.0]]
    verts = torch.tensor([far + near], device=device)
    a = rasterize(verts, torch.tensor([[0, 1, 2], [3, 4, 5]]), (20, 20))
    b = rasterize(verts, torch.tensor([[3, 4, 5], [0, 1, 2]]), (20, 20))
    only_near = rasterize(verts, torch.tensor([[3, 4, 5]]), (20, 20)).mask[0]
    only_far = rasterize(verts, torch.tensor([[0, 1, 2]]), (20, 20)).mask[0]
    both = only_near & only_far
    assert both.sum() > 30
    assert (a.face_index[0][both] == 1).all() and (b.face_index[0][both] == 0).all()
    assert_close(a.depth[0][both], torch.full((int(both.sum()),), 5.0, device=device))
    assert torch.equal(a.depth, b.depth)
    # Equal depths: the larger face index wins, whatever the order of arrival.
    flat = verts.clone()
    flat[..., 2] = 1.0
    tie = rasterize(flat, torch.tensor([[0, 1, 2], [3, 4, 5]]), (20, 20))
    assert (tie.face_index[0][both] == 1).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_barycentrics_reproduce_linear_attributes(device, dtype):
    gen = torch.Generator().manual_seed(2)
    verts = (torch.rand(2, 30, 3, generator=gen) * torch.tensor([64.0, 48.0, 10.0])).to(dtype)
    verts = verts.to(device)
    tris = torch.randint(0, 30, (25, 3), generator=gen)
    fragments = rasterize(verts, tris, (48, 64))
    covered = fragments.mask
    assert covered.sum() > 500
    assert_close(fragments.bary.sum(-1)[covered], torch.ones_like(fragments.depth[covered]))
    assert (fragments.bary[covered] >= 0).all()
    # a*u + b*v + c, per image (B, N, 1), and one shared by the batch (N, 2).
    linear = 0.7 * verts[..., :1] - 1.3 * verts[..., 1:2] + 5.0
    image = interpolate(fragments, linear, tris)
    ii, jj = torch.meshgrid(torch.arange(48, device=device), torch.arange(64, device=device),
                            indexing="ij")
    expect = (0.7 * jj - 1.3 * ii + 5.0).to(dtype).expand(2, -1, -1)
    assert_close(image[:, 0][covered], expect[covered], atol=1e-5 * 64, rtol=1e-5)
    assert (image[:, 0][~covered] == 0).all()
    shared = torch.stack([verts[0, :, 0], verts[0, :, 1]], 1)
    uv = interpolate(fragments, shared, tris)
    assert_close(uv[0, 0][covered[0]], jj[covered[0]].to(dtype), atol=1e-4, rtol=1e-5)
    # Depth is the interpolated vertex depth.
    depth = interpolate(fragments, verts[..., 2:], tris)[:, 0]
    assert_close(fragments.depth[covered], depth[covered], atol=1e-4, rtol=1e-5)
    assert torch.isneginf(fragments.depth[~covered]).all()


def test_batch_equals_each_image_alone(sfm_model):
    verts = face_pose(sfm_model, 0, 128, extent=100, batch_yaws=[-35.0, 0.0, 50.0])
    verts[2, :, :2] += 7.3    # and a different position
    together = rasterize(verts, sfm_model.triangles, (128, 128))
    for i in range(3):
        alone = rasterize(verts[i:i + 1], sfm_model.triangles, (128, 128))
        assert torch.equal(together.face_index[i], alone.face_index[0])
        assert torch.equal(together.bary[i], alone.bary[0])
        assert torch.equal(together.depth[i], alone.depth[0])


# --- against an independent renderer ---------------------------------------------------------


@pytest.mark.parametrize("yaw", [0.0, 30.0])
def test_sfm_depth_matches_ray_casting(sfm_model, yaw):
    size = 256
    verts = face_pose(sfm_model, yaw, size)
    fragments = rasterize(verts, sfm_model.triangles, (size, size))
    ref = raycast_depth(verts[0].double().numpy(), sfm_model.triangles.numpy(), size)
    got = fragments.depth[0].numpy()
    mine, theirs = np.isfinite(got), np.isfinite(ref)
    assert mine.sum() > 15000
    assert (mine == theirs).mean() >= 0.995
    both = mine & theirs
    depth_range = np.ptp(got[mine])
    assert (np.abs(got[both] - ref[both]) <= 0.005 * depth_range).mean() >= 0.995


def test_sfm_winding_front_faces_have_negative_area(sfm_model):
    verts = face_pose(sfm_model, 0.0, 256)
    area = signed_areas(verts[:, sfm_model.triangles])[0]
    assert (area < 0).float().mean() > 0.95
    fragments = rasterize(verts, sfm_model.triangles, (256, 256))
    seen = fragments.face_index[fragments.mask]
    assert (area[seen] < 0).all()
    culled = rasterize(verts, sfm_model.triangles, (256, 256), cull_backfaces=True)
    assert torch.equal(culled.face_index, fragments.face_index)
    # Seen from behind (yaw 180) every front face is culled away.
    back = face_pose(sfm_model, 180.0, 256)
    assert rasterize(back, sfm_model.triangles, (256, 256)).mask.sum() > 10000
    assert rasterize(back, sfm_model.triangles, (256, 256), cull_backfaces=True).mask.sum() < 500


# --- points ----------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_splat_points_z_test_radius_and_mask(device):
    points = torch.tensor([[[5.0, 5.0, 1.0], [5.2, 4.9, 3.0], [12.0, 3.0, 0.0],
                            [2.6, 10.6, 0.0], [14.0, 12.0, 2.0]]], device=device)
    values = torch.arange(5.0, device=device)[:, None] * torch.tensor([1.0, 10.0], device=device)
    image, mask, depth = splat_points(points, values, (16, 16))
    # Two points on pixel (5, 5): the nearer (depth 3) wins.
    assert image[0, :, 5, 5].tolist() == [1.0, 10.0] and depth[0, 5, 5] == 3.0
    # Radius 0.5 draws the nearest pixel only, and nothing for a point near a pixel corner.
    assert mask[0, 0].sum() == 3 and mask[0, 0, 3, 12] == 1 and mask[0, 0, 12, 14] == 1
    assert mask[0, 0, 10:12, 2:4].sum() == 0
    empty = mask[0, 0] == 0
    assert torch.isneginf(depth[0][empty]).all() and (image[0][:, empty] == 0).all()
    # Radius 1.5: centres strictly within 1.5 pixels (3x3 minus nothing: corners at 1.41).
    _, wide, _ = splat_points(points[:, 2:3], values[2:3], (16, 16), radius=1.5)
    expect = torch.zeros(16, 16, device=device)
    expect[2:5, 11:14] = 1
    assert torch.equal(wide[0, 0], expect)
    _, exact, _ = splat_points(points[:, 2:3], values[2:3], (16, 16), radius=1.0)
    assert exact[0, 0].sum() == 1     # neighbours at distance exactly 1 are out
    # The mask argument leaves points out: without the near point the far one shows.
    keep = torch.tensor([True, False, True, True, True], device=device)
    image, mask, depth = splat_points(points, values, (16, 16), mask=keep)
    assert image[0, 0, 5, 5] == 0.0 and depth[0, 5, 5] == 1.0 and mask[0, 0, 5, 5] == 1
    # Batched, with per-image values.
    both = splat_points(points.expand(2, -1, -1), values.expand(2, -1, -1) * torch.tensor(
        [1.0, 2.0], device=device)[:, None, None], (16, 16))
    assert both[0][1, 0, 5, 5] == 2.0 and both[0].shape == (2, 2, 16, 16)


def test_splat_points_on_sfm_face_is_nearest_surface(sfm_model):
    verts = face_pose(sfm_model, 40.0, 128, extent=110)
    colours = torch.arange(verts.shape[1], dtype=torch.float32)[None, :, None]
    image, mask, depth = splat_points(verts, colours, (128, 128), radius=0.8)
    hit = mask[0, 0] > 0
    assert hit.sum() > 1000
    drawn = image[0, 0][hit].long()
    # Each drawn pixel shows the nearest point within 0.8 px of its centre.
    ii, jj = hit.nonzero().unbind(1)
    close = ((verts[0, None, :, 0] - jj[:, None].float()) ** 2
             + (verts[0, None, :, 1] - ii[:, None].float()) ** 2) < 0.64
    nearest = torch.where(close, verts[0, None, :, 2], -torch.inf).amax(1)
    assert_close(depth[0][hit], nearest)
    assert_close(verts[0, drawn, 2], nearest)


# --- visibility ------------------------------------------------------------------------------


def test_vertex_visibility_matches_ray_casting_at_yaw_60(sfm_model):
    size = 256
    verts = face_pose(sfm_model, 60.0, size)
    visible = vertex_visibility(verts, sfm_model.triangles, (size, size))[0].numpy()
    ref = raycast_visible(verts[0].double().numpy(), sfm_model.triangles.numpy())
    assert (visible == ref).mean() >= 0.97
    # The face turns to its left (+yaw), so its right cheek (model x < 0) faces the camera.
    x = sfm_model.mean[:, 0].numpy()
    cheek = np.abs(sfm_model.mean[:, 1].numpy() + 20) < 25
    far, near = cheek & (x > 45), cheek & (x < -45)
    assert far.sum() > 30 and near.sum() > 30
    assert visible[far].mean() < 0.05 and visible[near].mean() > 0.95
    # Normals alone would miss occlusion: the depth test hides front-facing vertices too.
    facing = front_facing_vertices(verts, sfm_model.triangles)[0].numpy()
    assert (facing & ~visible).sum() > 20
    both = vertex_visibility(verts, sfm_model.triangles, (size, size), front_facing=True)[0]
    assert torch.equal(both, torch.from_numpy(visible & facing))


def test_vertex_visibility_image_bounds_and_tolerance():
    # A far square behind a near one: its centre vertex is hidden, its corners outside the near
    # square are not; a vertex outside the image is never visible.
    verts = torch.tensor([[[2.0, 2, 0], [18, 2, 0], [18, 18, 0], [2, 18, 0], [10, 10, 0],
                           [6.0, 6, 5], [14, 6, 5], [14, 14, 5], [6, 14, 5], [30, 10, 5]]])
    tris = torch.tensor([[0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4], [5, 6, 7], [5, 7, 8]])
    visible = vertex_visibility(verts, tris, (20, 20))[0]
    assert visible.tolist() == [True] * 4 + [False] + [True] * 4 + [False]
    assert vertex_visibility(verts, tris, (20, 20), tolerance=6.0)[0, 4]


# --- backends, devices, input checks ---------------------------------------------------------


def test_bad_inputs_raise_input_error():
    verts = torch.zeros(1, 4, 3)
    tris = torch.tensor([[0, 1, 2]])
    with pytest.raises(InputError, match=r"\(B, N, 3\)"):
        rasterize(torch.zeros(4, 3), tris, (8, 8))
    with pytest.raises(InputError, match="triangles"):
        rasterize(verts, torch.tensor([0, 1, 2]), (8, 8))
    with pytest.raises(InputError, match=r"\[0, 4\)"):
        rasterize(verts, torch.tensor([[0, 1, 4]]), (8, 8))
    with pytest.raises(InputError, match="integer"):
        rasterize(verts, tris.float(), (8, 8))
    with pytest.raises(InputError, match="image_size"):
        rasterize(verts, tris, (8, 0))
    with pytest.raises(InputError, match="image_size"):
        rasterize(verts, tris, 8)
    with pytest.raises(InputError, match="unknown render backend 'opengl'"):
        rasterize(verts, tris, (8, 8), backend="opengl")
    fragments = rasterize(verts, tris, (8, 8))
    with pytest.raises(InputError, match="batch"):
        interpolate(fragments, torch.zeros(2, 4, 3), tris)
    with pytest.raises(InputError, match="values"):
        splat_points(verts, torch.zeros(1, 5, 3), (8, 8))
    with pytest.raises(InputError, match="radius"):
        splat_points(verts, torch.zeros(4, 3), (8, 8), radius=0)
    with pytest.raises(InputError, match="mask"):
        splat_points(verts, torch.zeros(4, 3), (8, 8), mask=torch.ones(4))
    with pytest.raises(InputError, match="tolerance"):
        vertex_visibility(verts, tris, (8, 8), tolerance=-1.0)
    with pytest.raises(InputError, match="unknown render backend"):
        splat_points(verts, torch.zeros(4, 3), (8, 8), backend="nope")


def test_pytorch3d_backend_missing_raises(monkeypatch):
    # A None entry in sys.modules makes any import of the name fail, installed or not.
    for name in ("pytorch3d", "pytorch3d.renderer", "pytorch3d.structures"):
        monkeypatch.setitem(sys.modules, name, None)
    verts, tris = torch.zeros(1, 3, 3), torch.tensor([[0, 1, 2]])
    with pytest.raises(BackendUnavailableError, match="pip install") as info:
        rasterize(verts, tris, (8, 8), backend="pytorch3d")
    assert "\n" not in str(info.value)
    with pytest.raises(BackendUnavailableError, match="backend='torch'"):
        splat_points(verts, torch.zeros(3, 1), (8, 8), backend="pytorch3d")
    with pytest.raises(BackendUnavailableError):
        vertex_visibility(verts, tris, (8, 8), backend="pytorch3d")


@pytest.mark.skipif(not has_pytorch3d(), reason="pytorch3d not installed")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", [(256, 256), (200, 288)])
def test_pytorch3d_backend_equals_torch_backend(sfm_model, device, size):
    verts = face_pose(sfm_model, 0.0, min(size), extent=0.8 * min(size),
                      batch_yaws=[0.0, 35.0]).to(device)
    verts[..., 0] += (size[1] - size[0]) / 2 + 3.3     # off-centre in the wide image
    tris = sfm_model.triangles.to(device)
    for cull in (False, True):
        ours = rasterize(verts, tris, size, cull_backfaces=cull)
        theirs = rasterize(verts, tris, size, backend="pytorch3d", cull_backfaces=cull)
        same = ours.face_index == theirs.face_index
        assert same.float().mean() >= 0.999
        hit = same & ours.mask
        assert_close(theirs.bary[hit], ours.bary[hit], atol=1e-3, rtol=0)
        assert_close(theirs.depth[hit], ours.depth[hit], atol=1e-3 * 200, rtol=1e-4)
    colours = torch.rand(2, verts.shape[1], 3, device=device)
    for radius in (0.5, 1.5):
        a = splat_points(verts, colours, size, radius=radius)
        b = splat_points(verts, colours, size, radius=radius, backend="pytorch3d")
        assert (a[1] == b[1]).float().mean() >= 0.999
        drawn = (a[1] > 0) & (b[1] > 0)
        assert (a[0] == b[0]).all(1, keepdim=True)[drawn].float().mean() >= 0.999
    visible = vertex_visibility(verts, tris, size)
    assert (vertex_visibility(verts, tris, size, backend="pytorch3d") == visible).float().mean() \
        >= 0.995


@pytest.mark.parametrize("device", DEVICES)
def test_outputs_follow_the_input_device_and_dtype(device):
    verts = torch.tensor([[[1.0, 1.0, 0.0], [9.0, 2.0, 1.0], [3.0, 8.0, 2.0]]],
                         dtype=torch.float64, device=device)
    tris = torch.tensor([[0, 1, 2]])        # on the CPU whatever the vertices' device
    fragments = rasterize(verts, tris, (10, 12))
    assert fragments.face_index.device.type == device and fragments.face_index.dtype == torch.long
    assert fragments.bary.dtype == torch.float64 and fragments.depth.shape == (1, 10, 12)
    assert interpolate(fragments, torch.ones(3, 2), tris).shape == (1, 2, 10, 12)
    image, mask, _ = splat_points(verts, torch.ones(3, 4), (10, 12))
    assert image.device.type == device and mask.shape == (1, 1, 10, 12)
    assert vertex_visibility(verts, tris, (10, 12)).all()
    assert math.isclose(float(fragments.depth[0, 3, 3]),
                        float((fragments.bary[0, 3, 3] * verts[0, :, 2]).sum()))


# --- the compiled z-buffer pass (faceanime.render.zbuffer) --------------------------------------

needs_numba = pytest.mark.skipif(not zbuffer.AVAILABLE, reason="numba not installed")


def assert_same_fragments(a, b) -> None:
    assert torch.equal(a.face_index, b.face_index)
    assert torch.equal(a.bary, b.bary)  # bit for bit: the same float operations
    assert torch.equal(a.depth, b.depth)


@needs_numba
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", [(256, 256), (200, 288)])
def test_compiled_pass_equals_the_torch_pass_on_the_sfm_face(sfm_model, dtype, size):
    verts = face_pose(sfm_model, 0.0, max(size), batch_yaws=[-60.0, -30.0, 0.0, 30.0, 75.0])
    verts = verts.to(dtype)
    for cull in (False, True):
        pure = _rasterize_torch(verts, sfm_model.triangles, *size, cull, compiled=False)
        fast = _rasterize_torch(verts, sfm_model.triangles, *size, cull, compiled=True)
        assert_same_fragments(pure, fast)
        assert int(fast.mask.sum()) > 5 * 2000  # the faces are there


@needs_numba
def test_compiled_pass_equals_the_torch_pass_on_ties_edges_and_bad_triangles():
    gen = torch.Generator().manual_seed(3)
    # Vertices on half-pixel steps and few depth levels: centres on edges and equal depths.
    verts = torch.cat([torch.randint(0, 81, (3, 60, 2), generator=gen) / 2,
                       torch.randint(0, 3, (3, 60, 1), generator=gen).float()], -1)
    verts[1, 5] = torch.nan  # a triangle with a NaN corner is skipped
    tris = torch.randint(0, 60, (150, 3), generator=gen)
    tris[:4, 2] = tris[:4, 1]  # degenerate
    for cull in (False, True):
        assert_same_fragments(_rasterize_torch(verts, tris, 37, 45, cull, compiled=False),
                              _rasterize_torch(verts, tris, 37, 45, cull, compiled=True))
    for a, b, _ in NEAR_MISSES:
        a, b = torch.tensor(a), torch.tensor(b)
        normal = torch.stack([b[1] - a[1], a[0] - b[0]])
        quad = torch.stack([a, b, (a + b) / 2 + normal, (a + b) / 2 - normal])
        quad = torch.cat([quad, torch.zeros(4, 1)], 1)[None]
        tris = torch.tensor([[0, 1, 2], [1, 0, 3]])
        assert_same_fragments(_rasterize_torch(quad, tris, 64, 64, False, compiled=False),
                              _rasterize_torch(quad, tris, 64, 64, False, compiled=True))


def test_without_numba_the_torch_pass_serves(sfm_model, monkeypatch):
    verts = face_pose(sfm_model, 20.0, 128)
    with_it = rasterize(verts, sfm_model.triangles, (128, 128))
    monkeypatch.setattr(zbuffer, "AVAILABLE", False)
    assert not zbuffer.usable(verts)
    assert_same_fragments(with_it, rasterize(verts, sfm_model.triangles, (128, 128)))
    monkeypatch.undo()
    assert zbuffer.usable(verts) == zbuffer.AVAILABLE
    assert not zbuffer.usable(verts.to(torch.float16))
