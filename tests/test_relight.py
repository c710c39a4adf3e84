"""Relighting with spherical harmonics (issue 19: the swapped face lit as the target is):
exact ground truth on a sphere and on rendered faces."""

from __future__ import annotations

import pytest
import torch
import trimesh

from faceanime.errors import InputError
from faceanime.render.relight import (
    fit_light,
    relight_gain,
    sh_basis,
    shading,
    vertex_normals,
)


def sphere(subdivisions: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """A unit icosphere as screen vertices ``(1, N, 3)`` (u, v, depth: v down, depth to the
    camera) and triangles ``(F, 3)``, wound as the face model's are (front faces counter-
    clockwise in (u, -v))."""
    mesh = trimesh.creation.icosphere(subdivisions)
    v = torch.tensor(mesh.vertices, dtype=torch.float64)
    screen = torch.stack([v[:, 0], -v[:, 1], v[:, 2]], -1)[None]
    return screen, torch.tensor(mesh.faces, dtype=torch.long)


def test_vertex_normals_of_a_sphere_point_outwards():
    screen, triangles = sphere()
    normals = vertex_normals(screen, triangles)[0]
    radial = torch.stack([screen[0, :, 0], -screen[0, :, 1], screen[0, :, 2]], -1)
    cosine = (normals * radial).sum(-1) / radial.norm(dim=-1)
    assert float(cosine.min()) > 0.995


@pytest.mark.parametrize("order", [1, 2])
def test_a_light_is_recovered_through_dark_features(order):
    """Colours of one albedo under a known light, a fifth of them darkened (brows, a beard):
    the robust fit finds the light within 2 % of its shading on the clean samples; plain
    least squares (one round) is pulled well off."""
    generator = torch.Generator().manual_seed(0)
    screen, triangles = sphere(4)
    normals = vertex_normals(screen, triangles)[0]
    front = normals[:, 2] > 0.2
    normals = normals[front]
    light = torch.zeros(sh_basis(normals[:1], order).shape[-1], 3, dtype=torch.float64)
    light[0] = torch.tensor([0.55, 0.45, 0.4])
    light[1] = torch.tensor([0.25, 0.2, 0.18])       # from the right
    light[3] = torch.tensor([0.2, 0.15, 0.12])
    if order == 2:
        light[8] = torch.tensor([0.03, 0.02, 0.02])
    clean = shading(normals, light)
    dark = torch.rand(len(normals), generator=generator) < 0.2
    colours = torch.where(dark[:, None], clean * 0.35, clean)
    colours = colours + 0.005 * torch.randn(colours.shape, generator=generator,
                                            dtype=colours.dtype)
    weight = torch.ones(len(normals), dtype=torch.float64)
    fitted = fit_light(colours, normals, weight, order)
    error = (shading(normals, fitted) - clean).abs() / clean
    assert float(error[~dark].max()) < 0.02
    naive = fit_light(colours, normals, weight, order, rounds=0)
    assert float(((shading(normals, naive) - clean).abs() / clean)[~dark].max()) > 0.05


def test_the_gain_turns_one_lighting_into_the_other():
    """A surface shaded by light A, times the gain from A to B at the same normals, is the
    surface under B (up to the common level the gain leaves to colour matching)."""
    screen, triangles = sphere()
    normals = vertex_normals(screen, triangles)[0]
    front = normals[:, 2] > 0.3
    a = torch.tensor([[0.6], [-0.3], [0.1], [0.3]], dtype=torch.float64)
    b = torch.tensor([[0.6], [0.3], [0.1], [0.3]], dtype=torch.float64)
    gain = relight_gain(normals, normals[None], a, b, front.double(), limit=10)[0]
    relit = shading(normals, a) * gain
    truth = shading(normals, b)
    ratio = (relit / truth)[front]
    assert float(ratio.max() / ratio.min()) < 1 + 1e-9
    same = relight_gain(normals, normals[None], a, a, front.double())
    assert torch.allclose(same, torch.ones_like(same))


def test_gains_are_bounded_and_bad_inputs_refused():
    screen, triangles = sphere()
    normals = vertex_normals(screen, triangles)[0]
    a = torch.tensor([[0.5], [-0.45], [0.0], [0.1]], dtype=torch.float64)
    b = torch.tensor([[0.5], [0.45], [0.0], [0.1]], dtype=torch.float64)
    gain = relight_gain(normals, normals[None], a, b, limit=1.5)
    assert float(gain.max()) <= 1.5 + 1e-9 and float(gain.min()) >= 1 / 1.5 - 1e-9
    with pytest.raises(InputError):
        relight_gain(normals, normals[None], a, b, limit=0.5)
    with pytest.raises(InputError):
        fit_light(torch.rand(5, 3), normals[:5], torch.ones(5))      # too few samples
    with pytest.raises(InputError):
        fit_light(torch.rand(50, 3), normals[:50], torch.ones(50), order=3)
