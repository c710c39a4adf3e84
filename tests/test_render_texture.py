"""Texture mapping: push-pull filling, the UV texture round trip, FaceAnime's sparse priors and
the mouth cap."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from faceanime.coefficients import Coefficients
from faceanime.errors import InputError
from faceanime.fitting import fit_image, fit_landmarks
from faceanime.geometry.rotation import euler_to_matrix
from faceanime.morphable.jaw import build_jaw
from faceanime.morphable.mouth import add_mouth_cap, boundary_loops
from faceanime.reconstruction import face_vertices, project_vertices
from faceanime.render import rasterize
from faceanime.render.texture import (
    SparseConfig,
    TextureConfig,
    extract_texture,
    push_pull,
    render_texture,
    sample_image,
    sparse_priors,
    sparse_vertices,
)


@pytest.fixture(scope="module")
def s1(data_dir, sfm_model):
    """faces/s1.jpg at half size, as a (1, 3, H, W) tensor, with its fitted coefficients."""
    image = Image.open(data_dir / "faces" / "s1.jpg").convert("RGB")
    image = np.array(image.resize((image.width // 2, image.height // 2), Image.LANCZOS))
    coeffs = fit_image(image, sfm_model)
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255, coeffs


def _screen(model, coeffs: Coefficients) -> torch.Tensor:
    return project_vertices(coeffs, face_vertices(model, coeffs))


def _pose(yaw: float, shape: torch.Tensor, size: int, scale: float) -> Coefficients:
    return Coefficients(
        model="sfm", shape=shape, expression=torch.zeros(1, 6), jaw=torch.zeros(1),
        rotation=euler_to_matrix(torch.tensor([math.radians(yaw)]),
                                 torch.tensor([math.radians(5.0)]), torch.zeros(1)),
        translation=torch.tensor([[size / 2, size / 2 + 10, 0.0]]), scale=torch.tensor([scale]),
        image_size=torch.tensor([size, size]))


def test_push_pull_keeps_known_pixels_and_fills_smoothly():
    y, x = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    ramp = torch.stack([x / 63, y / 63, 0.5 + 0 * x])[None]
    weight = torch.ones(1, 1, 64, 64)
    weight[..., 20:40, 24:44] = 0  # a hole
    weight[..., 56:, :] = 0  # and a missing band at the border
    filled = push_pull(ramp * weight, weight)
    known = weight.bool().expand_as(ramp)
    assert torch.equal(filled[known], ramp[known])
    # A hole in a linear image is filled near its border values, and everything stays inside
    # the known range (fills are weighted means).
    hole = filled[..., 20:40, 24:44]
    assert float((hole - ramp[..., 20:40, 24:44]).abs().mean()) < 0.1
    assert float(filled.min()) >= 0 and float(filled.max()) <= 1
    # The band continues the last known rows, roughly.
    assert float((filled[0, 1, 56:] - 55 / 63).abs().max()) < 0.2
    const = push_pull(torch.full((1, 3, 64, 64), 0.3) * weight, weight)
    assert torch.allclose(const, torch.full_like(const, 0.3), atol=1e-6)


def test_texture_round_trip(sfm_model, s1):
    """Render a face with a known texture (s1's), fit it from its landmarks, take the texture
    back from the render: PSNR >= 29.5 dB where both were seen (>= 30 before the upper-lid
    landmarks were left to the eyelid closure: four fewer points register the face). The face
    has the model's mean identity: identity components that move no landmark cannot be
    recovered from landmarks, and they shift the texture by as much as they move the surface.
    Landmarks carry 0.2 px of noise: on this sharp texture every 0.1 px of misregistration costs
    about a decibel (measured in docs/render.md)."""
    image, coeffs = s1
    config = TextureConfig(size=512)
    m = sfm_model
    known = extract_texture(image, _screen(m, coeffs), m.triangles, m.texcoords, m.symmetry,
                            config)
    assert float((known.origin == 1).float().mean()) > 0.5
    g = torch.Generator().manual_seed(0)
    mapped = m.landmark_indices >= 0
    for yaw in (0.0, 20.0):
        truth = _pose(yaw, torch.zeros(m.n_shape), 640, 2.6)
        truth.expression = torch.tensor([[0.0, 0.0, 0.0, 0.4, 0.0, 0.2]])
        screen = _screen(m, truth)
        face, mask, _ = render_texture(known.image, screen, m.triangles, m.texcoords, (640, 640))
        render = face * mask + 0.5 * (1 - mask)
        points = torch.full((1, 68, 2), float("nan"))
        points[0, mapped] = (screen[0, m.landmark_indices[mapped], :2]
                             + 0.2 * torch.randn(int(mapped.sum()), 2, generator=g))
        fitted = fit_landmarks(m, points, (640, 640))
        for coeffs_used, floor in ((truth, 33.0), (fitted, 29.5)):
            back = extract_texture(render, _screen(m, coeffs_used), m.triangles, m.texcoords,
                                   m.symmetry, config)
            both = (back.origin[0, 0] == 1) & (known.origin[0, 0] == 1)
            mse = ((back.image[0] - known.image[0]) ** 2)[:, both].mean()
            assert float(both.float().mean()) > 0.45
            assert float(-10 * torch.log10(mse)) >= floor, (yaw, floor)


def test_shared_texture_lookup_at_covered_pixels_equals_the_full_image_lookup(sfm_model, s1):
    """A shared (1, 3, S, S) texture is looked up at the covered pixels only; a per-frame
    texture batch takes the full-image route (interpolate everywhere, sample everywhere, mask).
    Both must give the same image to the bit, in either memory format."""
    image, coeffs = s1
    m = sfm_model
    known = extract_texture(image, _screen(m, coeffs), m.triangles, m.texcoords, m.symmetry,
                            TextureConfig(size=256))
    frames = [_pose(yaw, torch.zeros(m.n_shape), 200, 0.8) for yaw in (-30.0, 0.0, 25.0)]
    screen = torch.cat([_screen(m, c) for c in frames])
    shared, mask, _ = render_texture(known.image, screen, m.triangles, m.texcoords, (200, 200))
    batch = known.image.expand(3, -1, -1, -1).contiguous()
    full, _, _ = render_texture(batch, screen, m.triangles, m.texcoords, (200, 200))
    last = known.image.contiguous(memory_format=torch.channels_last)
    channels_last, _, _ = render_texture(last, screen, m.triangles, m.texcoords, (200, 200))
    assert 0.2 < float(mask.mean()) < 0.9
    assert torch.equal(shared, full) and torch.equal(channels_last, full)
    assert float(full[mask.expand_as(full) > 0].std()) > 0.02  # a real texture, not a flat one
    # Colours and a mask looked up at once (the swap's face and region): the same channels.
    ramp = torch.linspace(0, 1, 256)[None, None, :, None].expand(1, 1, 256, 256)
    both, _, _ = render_texture(torch.cat([known.image, ramp], 1), screen, m.triangles,
                                m.texcoords, (200, 200))
    alone, _, _ = render_texture(ramp.expand(1, 3, -1, -1).contiguous(), screen, m.triangles,
                                 m.texcoords, (200, 200))
    assert both.shape == (3, 4, 200, 200)
    assert torch.equal(both[:, :3], shared) and torch.equal(both[:, 3:], alone[:, :1])


def _turned(m, image: torch.Tensor, coeffs: Coefficients) -> tuple[torch.Tensor, torch.Tensor]:
    """The photo's face rendered turned 55° (its far side hidden), and the projected mesh."""
    turned = _pose(55.0, coeffs.shape, image.shape[-1], float(coeffs.scale[0]))
    screen = _screen(m, turned)
    render, _, _ = render_texture(
        extract_texture(image, _screen(m, coeffs), m.triangles, m.texcoords, m.symmetry,
                        TextureConfig(size=256)).image, screen, m.triangles, m.texcoords,
        image.shape[-2:])
    return render, screen


def test_texture_mirror_fills_the_hidden_side(sfm_model, s1):
    m = sfm_model
    render, screen = _turned(m, *s1)
    with_mirror = extract_texture(render, screen, m.triangles, m.texcoords, m.symmetry,
                                  TextureConfig(size=256))
    without = extract_texture(render, screen, m.triangles, m.texcoords, None,
                              TextureConfig(size=256, mirror=False))
    mirrored = with_mirror.origin == 0.5
    assert float(mirrored.float().mean()) > 0.1  # a large part of the far side
    assert bool((without.origin[mirrored] == 0).all())


def test_mirrored_half_meets_the_seen_one_without_a_seam(sfm_model, s1):
    """s1's face rendered turned 55° (its far side hidden) and lit unevenly: the image's left
    half (the near side, ending at the nose) at full brightness, the right half at 60 %. The far
    cheek's texels, mirrored from the bright side, used to meet the dark seen ones at a step; with
    ``mirror_match`` the step across the border between seen and mirrored texels shrinks to
    under half (measured: 0.124 -> 0.052 mean luma step)."""
    m = sfm_model
    render, screen = _turned(m, *s1)
    nose = int(screen[0, m.landmark_indices[30], 0])
    render[..., nose:] *= 0.6

    def step(match: bool) -> float:
        tex = extract_texture(render, screen, m.triangles, m.texcoords, m.symmetry,
                              TextureConfig(size=256, mirror_match=match))
        luma = (tex.image[0] * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(0)
        seen, mirrored = tex.origin[0, 0] == 1, tex.origin[0, 0] == 0.5
        # Texel pairs side by side across the border, in rows and in columns.
        steps = []
        for a, b, la, lb in ((seen[:, :-1], mirrored[:, 1:], luma[:, :-1], luma[:, 1:]),
                             (mirrored[:, :-1], seen[:, 1:], luma[:, :-1], luma[:, 1:]),
                             (seen[:-1], mirrored[1:], luma[:-1], luma[1:]),
                             (mirrored[:-1], seen[1:], luma[:-1], luma[1:])):
            pair = a & b
            steps.append((la[pair] - lb[pair]).abs())
        return float(torch.cat(steps).mean())

    before, after = step(False), step(True)
    assert after < 0.5 * before, (before, after)


def test_sparse_priors_on_a_real_photo(sfm_model, s1):
    image, coeffs = s1
    m = sfm_model
    screen = _screen(m, coeffs)
    priors = sparse_priors(image, screen, screen, m.triangles, config=SparseConfig(stride=4))
    assert torch.equal(priors.vertices, sparse_vertices(m.n_vertices, 4))
    drawn = priors.source_mask[0, 0] > 0
    n_visible = int(priors.visible.sum())
    assert 0.3 * m.n_vertices / 4 < n_visible <= m.n_vertices / 4 + 1
    assert n_visible <= int(drawn.sum()) <= 5 * n_visible  # radius-1 discs, some overlapping
    # p_s shows the photo's own colour where a point lands.
    diff = (priors.source[0] - image[0]).abs()[:, drawn]
    assert float(diff.median()) < 0.03
    # A target moved by whole pixels draws the same prior moved by as much.
    moved = screen + torch.tensor([7.0, -5.0, 0.0])
    shifted = sparse_priors(image, screen, moved, m.triangles, config=SparseConfig(stride=4))
    assert torch.equal(shifted.target[..., :-5, 7:], priors.source[..., 5:, :-7])
    # Stride 1 draws more points than stride 8.
    dense = sparse_priors(image, screen, screen, m.triangles, config=SparseConfig(stride=1))
    sparse = sparse_priors(image, screen, screen, m.triangles, config=SparseConfig(stride=8))
    assert dense.source_mask.sum() > 3 * sparse.source_mask.sum()


def test_sparse_priors_skip_hidden_vertices(sfm_model, s1):
    image, coeffs = s1
    m = sfm_model
    turned = _pose(60.0, coeffs.shape, image.shape[-1], float(coeffs.scale[0]))
    screen = _screen(m, turned)
    priors = sparse_priors(image, screen, screen, m.triangles, config=SparseConfig(stride=1))
    # Vertices on the far cheek (positive yaw turns the model's +x side away) are not drawn.
    far = m.mean[:, 0] > 40
    assert float(priors.visible[0, far].float().mean()) < 0.2
    assert float(priors.visible[0, m.mean[:, 0] < -40].float().mean()) > 0.8


def test_bad_prior_inputs(sfm_model):
    screen = torch.zeros(2, sfm_model.n_vertices, 3)
    with pytest.raises(InputError, match="stride"):
        sparse_vertices(10, 0)
    with pytest.raises(InputError, match="do not match"):
        sparse_priors(torch.zeros(3, 3, 8, 8), screen, screen, sfm_model.triangles)
    with pytest.raises(InputError, match="extract_texture"):
        extract_texture(torch.zeros(3, 8, 8), screen, sfm_model.triangles,
                        sfm_model.texcoords)


def test_sample_image_hits_pixel_centres():
    image = torch.arange(12.0).view(1, 1, 3, 4)
    points = torch.tensor([[[0.0, 0.0], [3.0, 2.0], [1.5, 1.0]]])
    assert torch.allclose(sample_image(image, points)[0, :, 0], torch.tensor([0.0, 11.0, 5.5]))


def test_mouth_cap_closes_the_hole_and_opens_with_the_jaw(sfm_model):
    m = sfm_model
    cap = add_mouth_cap(m, build_jaw(m))
    loops = boundary_loops(m.triangles.numpy())
    assert any(sorted(lp) == sorted(cap.loop.tolist()) for lp in loops)
    inner = m.landmark_indices[[62, 66]]  # iBUG 63, 67 lie on the hole's rim
    assert set(inner.tolist()) <= set(cap.loop.tolist())
    assert len(boundary_loops(cap.model.triangles.numpy())) == len(loops) - 1
    assert cap.model.n_vertices == m.n_vertices + 1
    assert 0.2 < float(cap.jaw.weights[cap.centre]) < 0.8

    def covered_between_lips(model, jaw_angle: float) -> tuple[float, float]:
        coeffs = _pose(0.0, torch.zeros(m.n_shape), 256, 1.6)
        coeffs.jaw = torch.tensor([jaw_angle])
        screen = project_vertices(coeffs, face_vertices(model, coeffs, jaw=cap.jaw
                                                        if model is cap.model else None))
        upper, lower = screen[0, inner[0], :2], screen[0, inner[1], :2]
        frag = rasterize(screen, model.triangles, (256, 256))
        col = int(upper[0].round())
        rows = range(int(upper[1].ceil()) + 1, int(lower[1].floor()))
        hit = [int(frag.face_index[0, r, col]) for r in rows]
        return float(lower[1] - upper[1]), float(np.mean([h >= 0 for h in hit]) if hit else 1)

    gap, _ = covered_between_lips(cap.model, 0.0)
    open_gap, covered = covered_between_lips(cap.model, math.radians(20))
    assert open_gap > gap + 10  # pixels: the jaw opened the mouth
    assert covered == 1.0  # and the cap fills it
    _, uncovered = covered_between_lips(m, math.radians(20))
    assert uncovered < 0.5  # without the cap the open mouth is a hole
