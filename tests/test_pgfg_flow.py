"""The dense face flow the generator starts from (faceanime.pgfg.flow), on exact ground truth:
the model's mean face moved by a known in-plane similarity (the flow must invert it exactly),
and turned away so that the photo hides part of what the target shows."""

from __future__ import annotations

import math

import torch

from faceanime.geometry.rotation import euler_to_matrix
from faceanime.pgfg.flow import face_flow, flip_flow

SIZE = 128


def _frontal(model, yaw: float = 0.0) -> torch.Tensor:
    """``(1, N, 3)`` the mean face turned by ``yaw``, scaled and centred into the crop."""
    rotation = euler_to_matrix(torch.tensor(yaw), torch.tensor(0.0), torch.tensor(0.0))
    points = model.mean @ rotation.T
    points = points * torch.tensor([1.0, -1.0, 1.0])  # image y points down
    low, high = points[:, :2].amin(0), points[:, :2].amax(0)
    scale = 0.8 * SIZE / float((high - low).max())
    centre = (low + high) / 2
    uv = (points[:, :2] - centre) * scale + SIZE / 2
    return torch.cat([uv, points[:, 2:] * scale], 1)[None]


def test_an_in_plane_motion_is_inverted_exactly(sfm_model):
    source = _frontal(sfm_model)
    angle, scale, shift = math.radians(10), 1.1, torch.tensor([5.0, -3.0])
    c, s = math.cos(angle), math.sin(angle)
    rot = torch.tensor([[c, -s], [s, c]])
    centre = torch.full((2,), SIZE / 2)
    target = source.clone()
    target[..., :2] = (source[..., :2] - centre) @ rot.T * scale + centre + shift
    target[..., 2] = source[..., 2] * scale
    flow = face_flow(source, target, sfm_model.triangles, SIZE)
    known = flow[0, 2] > 0
    covered = int(known.sum())
    assert covered > 0.3 * SIZE * SIZE
    # Where each known target pixel's surface point lies in the source: the inverse motion.
    ys, xs = known.nonzero(as_tuple=True)
    pixel = torch.stack([xs, ys], 1).float()
    truth = ((pixel - centre - shift) / scale) @ rot + centre
    fetched = pixel + flow[0, :2, ys, xs].T * (SIZE - 1) / 2
    assert float((fetched - truth).norm(dim=1).max()) < 1e-2


def test_surface_the_photo_hides_is_left_unknown(sfm_model):
    """The source turned 45°, the target frontal: the far cheek and the side of the nose the
    source does not show are not fetched (they would copy the nose or the hair instead)."""
    from faceanime.render.rasterize import rasterize

    source, target = _frontal(sfm_model, math.radians(45)), _frontal(sfm_model)
    flow = face_flow(source, target, sfm_model.triangles, SIZE)
    covered = int((rasterize(target, sfm_model.triangles, (SIZE, SIZE)).face_index >= 0).sum())
    known = int((flow[0, 2] > 0).sum())
    assert 0.4 * covered < known < 0.9 * covered
    # Unturned, nothing is hidden (apart from a few pixels at the outline).
    same = face_flow(target, target, sfm_model.triangles, SIZE)
    assert int((same[0, 2] > 0).sum()) > 0.99 * covered
    assert float(same[:, :2].abs().max()) < 1e-4


def test_a_mirrored_flow_points_the_other_way(sfm_model):
    source = _frontal(sfm_model)
    target = source.clone()
    target[..., 0] += 4.0
    flow = face_flow(source, target, sfm_model.triangles, SIZE)
    mirrored = flip_flow(flow)
    assert torch.equal(mirrored[:, 2], flow[:, 2].flip(-1))
    assert torch.equal(mirrored[:, 0], -flow[:, 0].flip(-1))
