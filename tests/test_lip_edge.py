"""The photo's lips found by colour beyond the fitted inner lip (faceanime.render.lip_edge): a
synthetic edge found to the pixel, and d19's "O" closed without its teeth under the lips' line
or the dark inside above it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from faceanime.render.lip_edge import EDGE_TOLERANCE, lip_edge_depth, skin_edge_depth
from faceanime.render.paste import rgb_to_lab
from tests.helpers import photo_lab, shut_mouth

TEETH = (0.85, 0.82, 0.78)
CAVITY = (0.25, 0.12, 0.10)
LIP = (0.80, 0.45, 0.45)
SKIN = (0.80, 0.62, 0.52)


def _lab(rgb) -> torch.Tensor:
    return rgb_to_lab(torch.tensor(rgb).reshape(1, 3, 1, 1))[0, :, 0, 0]


@pytest.mark.parametrize("down", [(0.0, 1.0), (0.6, 0.8)])
def test_the_lip_edge_is_found_below_teeth_and_cavity(down):
    """Columns of cavity, then teeth, then lip from a known distance along ``down``: the depth
    is that distance to within a pixel; a rim already on the lip reads 0, and so does one with
    no lip within reach."""
    h = w = 120
    direction = torch.tensor(down)
    ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    along = xs * direction[0] + ys * direction[1]            # distance along ``down``
    image = torch.empty(3, h, w)
    for value, start in ((CAVITY, -1e9), (TEETH, 50.0), (LIP, 62.0)):
        mask = along >= start
        image[:, mask] = torch.tensor(value)[:, None]
    rim = torch.stack([d * direction + torch.tensor([20.0 + 10 * k, 0.0])
                       for k, d in enumerate((40.0, 55.0, 63.0, 70.0))])
    rim[:, 1] = rim[:, 1].clamp(min=0)
    starts = (rim * direction).sum(1)
    got = lip_edge_depth(image, rim, direction, _lab(LIP), reach=40)
    want = (62.0 - starts).clamp(min=0)
    assert torch.allclose(got, want, atol=1.01), (got, want)
    short = lip_edge_depth(image, rim[:1], direction, _lab(LIP), reach=10)
    assert float(short[0]) == 0.0                            # 22 px away, 10 looked at
    assert float((_lab(TEETH) - _lab(LIP)).norm()) > 2 * EDGE_TOLERANCE


@pytest.mark.parametrize("down", [(0.0, 1.0), (0.6, 0.8)])
def test_the_skin_below_the_lip_is_found_past_its_shadow(down):
    """Columns of lip, then a shadow (dark, its chroma the skin's, in L*a*b* nearer the lip
    than the skin), then skin, from known distances along ``down``: the depth is where the
    shadow starts, to within a pixel (the chroma decides, not the lightness); a point on the
    skin reads 0, and so does one with no skin within reach."""
    h = w = 120
    direction = torch.tensor(down)
    ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    along = xs * direction[0] + ys * direction[1]
    image = torch.empty(3, h, w)
    shadow = (0.42, 0.30, 0.27)
    for value, start in ((LIP, -1e9), (shadow, 60.0), (SKIN, 66.0)):
        image[:, along >= start] = torch.tensor(value)[:, None]
    points = torch.stack([d * direction + torch.tensor([20.0 + 10 * k, 0.0])
                          for k, d in enumerate((40.0, 52.0, 70.0))])
    points[:, 1] = points[:, 1].clamp(min=0)
    starts = (points * direction).sum(1)
    got = skin_edge_depth(image, points, direction, _lab(LIP), _lab(SKIN), reach=30)
    want = (60.0 - starts).clamp(min=0)
    assert torch.allclose(got, want, atol=1.01), (got, want)
    away = int(60.0 - starts[0])
    short = skin_edge_depth(image, points[:1], direction, _lab(LIP), _lab(SKIN),
                            reach=away - 2)
    assert float(short[0]) == 0.0
    # With the lightness counted, the shadow would be nearer the lip than the skin.
    assert (_lab(shadow) - _lab(LIP)).norm() < (_lab(shadow) - _lab(SKIN)).norm()


def _beside_the_line(renderer, target, lip, above: bool = False) -> float:
    """Mean CIE76 distance from the lip's colour ``lip`` of the output's pixels just under the
    closed lips' line (``above``: just above it), over the middle half of the mouth (where the
    crescent, or the dark band, was)."""
    frame = renderer.render(target)[0]
    screen = renderer._screen(target)[0]
    ids = renderer.mesh.landmark_indices
    corners = screen[ids[[48, 54]], :2]
    # The line's other lip's inner points: the upper ones to look under, the lower above.
    line = screen[ids[[65, 66, 67] if above else [61, 62, 63]], :2].mean(0)
    width = float((corners[1] - corners[0]).norm())
    xs = torch.linspace(float(line[0]) - width / 4, float(line[0]) + width / 4, 9)
    offsets = torch.linspace(0.03, 0.08, 4) if above else torch.linspace(0.04, 0.10, 4)
    ys = float(line[1]) + (-1 if above else 1) * offsets * width
    lab = rgb_to_lab(frame[None])[0]
    patch = lab[:, ys.round().long()[:, None], xs.round().long()[None, :]].reshape(3, -1)
    return float((patch - lip[:, None]).norm(dim=0).mean())


@pytest.fixture(scope="module")
def d19(sfm_model, data_dir):
    """d19.jpg (its mouth open round, an "O") and its fit."""
    from faceanime.fitting import fit_image
    from faceanime.io import read_image

    image = read_image(data_dir / "faces" / "d19.jpg")
    return image, fit_image(image, sfm_model)


def _lip_colour(image, points, inner, outer) -> torch.Tensor:
    """The photo's lip colour (CIE L*a*b*, the median) between its ``inner`` and ``outer``
    lip points (0-based iBUG) of ``points (68, 2)``."""
    return photo_lab(image, 0.4 * points[list(inner)] + 0.6 * points[list(outer)])


def test_a_closed_o_mouth_shows_lip_not_teeth_under_its_line(sfm_model, d19, monkeypatch):
    """d19 closed by the rig (jaw shut, the middle's closure met): under the lips' line the
    output is the lower lip's colour; without the edge it showed the photo's teeth and the
    cavity's floor there (a dark crescent: ΔE 13.9 from the lip's colour against 3.1)."""
    from faceanime.render.warp import WarpRenderer

    image, source = d19
    renderer = WarpRenderer(sfm_model, image, source)
    assert renderer.lip_edge is not None
    target = shut_mouth(renderer, source)
    lip = _lip_colour(image, source.landmarks[0], (65, 66, 67), (56, 57, 58))
    with_edge = _beside_the_line(renderer, target, lip)
    # The edge moves the photo's own mesh (a shut target's not at all): a renderer built
    # without it.
    monkeypatch.setattr("faceanime.render.frames.photo_lip_edge", lambda *args: None)
    plain = WarpRenderer(sfm_model, image, source)
    assert plain.lip_edge is None
    without = _beside_the_line(plain, target, lip)
    assert with_edge < 8, (with_edge, without)
    assert without > 3 * with_edge


def test_the_edge_moves_the_photos_lips_apart_and_nothing_else(sfm_model, d19):
    """d19's lip edge: at the photo's own coefficients the lower rim's middle moves down by
    0.03–0.08 inter-ocular distances (the 9–14 px of teeth; 0.039) and, its mouth open wide,
    the upper rim's up by 0.01-0.05 (the 4-8 px of dark inside under the lip; 0.026); the
    lower lip's outer middle down to the skin by 0.03–0.08 (11 px; 0.052); nothing moves
    sideways or in depth, nothing beyond the lips (chin, nose tip, the upper lip's outer
    middle), and a shut frame gets none of it."""
    from faceanime.render.warp import WarpRenderer

    image, source = d19
    renderer = WarpRenderer(sfm_model, image, source)
    edge = renderer.lip_edge
    offsets = edge.offsets
    mesh = renderer.mesh
    ids = mesh.landmark_indices
    iod = float((mesh.mean[ids[36]] - mesh.mean[ids[45]]).norm())
    weights = renderer.jaw.weights
    assert float(offsets[:, [0, 2]].abs().max()) == 0
    assert float(offsets[weights >= 0.5, 1].max()) <= 0 <= float(offsets[weights < 0.5, 1].min())
    assert 0.03 < -float(offsets[ids[66], 1]) / iod < 0.08
    assert 0.01 < float(offsets[ids[62], 1]) / iod < 0.05
    assert 0.03 < -float(offsets[ids[57], 1]) / iod < 0.08
    # A fifth of a pixel at the photo's size at most (the upper lip's outer middle moves
    # 0.0013 inter-ocular distances).
    for beyond in (8, 33, 51):           # chin, nose tip, upper lip
        assert float(offsets[ids[beyond]].abs().max()) < 2e-3 * iod
    posed = renderer._posed(source)
    assert edge.gap > 0
    shut = posed.clone()
    shut[:, edge.bottom, 1] = shut[:, edge.top, 1]
    assert torch.equal(edge.apply(shut)[:, edge.bottom], shut[:, edge.bottom])


def _lower_lip_height(renderer, target, lip, skin) -> float:
    """Pixels from the closed lips' line down to where the output's chroma turns nearer the
    skin's ``skin`` than the lip's ``lip`` (L*a*b*, two in a row), the median over the middle
    third of the mouth, over the target mesh's own lower lip height there (inner lip middle to
    outer lip middle, iBUG 67 to 58)."""
    frame = renderer.render(target)[0]
    screen = renderer._screen(target)[0]
    ids = renderer.mesh.landmark_indices
    top, bottom, outer = screen[ids[[62, 66, 57]], :2]
    corners = screen[ids[[48, 54]], :2]
    width = float((corners[1] - corners[0]).norm())
    ab = rgb_to_lab(frame[None])[0, 1:]
    line = float((top[1] + bottom[1]) / 2)
    runs = []
    for x in torch.linspace(float(outer[0]) - width / 6, float(outer[0]) + width / 6, 7):
        column = ab[:, int(line) + 2:, round(float(x))]                           # (2, K)
        nearer = ((column - skin[1:, None]).norm(dim=0)
                  < (column - lip[1:, None]).norm(dim=0))
        run = nearer[:-1] & nearer[1:]
        runs.append(float(run.to(torch.uint8).argmax()) + 2)
    return float(np.median(runs)) / float(outer[1] - bottom[1])


def test_a_closed_o_mouth_keeps_its_lower_lip_its_own_height(sfm_model, d19):
    """d19 shut: the output's lower lip is about as tall as the shut mesh's lower lip (0.93);
    it was nearly twice that (1.77, a tall pink tongue under the lips' line), dlib's outer
    lower-lip points lying in the lip's middle and the chin's mesh fetching its lower half."""
    from faceanime.render.warp import WarpRenderer

    image, source = d19
    points = source.landmarks[0]
    lip = _lip_colour(image, points, (65, 66, 67), (56, 57, 58))
    skin = photo_lab(image, 0.55 * points[[56, 57, 58]] + 0.45 * points[[7, 8, 9]])
    renderer = WarpRenderer(sfm_model, image, source)
    height = _lower_lip_height(renderer, shut_mouth(renderer, source), lip, skin)
    assert 0.7 < height < 1.35, height


def test_a_closed_o_mouth_shows_its_upper_lip_above_the_line(sfm_model, data_dir, d19,
                                                            monkeypatch):
    """d19 shut: above the lips' line the output is the upper lip's colour (ΔE 3.7); without
    the upper lip's edge it was a dark band, the inside dlib's upper inner-lip points leave
    under the lip (5.8; 3.1 against 8.9 when fitted with every landmark alike, before the
    chin's and mouth's landmarks were weighted half). Parted lips (s42, 0.07 inter-ocular
    distances apart) keep their upper lip where the fit put it: their teeth's edge is no
    lip's."""
    from faceanime.fitting import fit_image
    from faceanime.io import read_image
    from faceanime.render.warp import WarpRenderer

    image, source = d19
    lip = _lip_colour(image, source.landmarks[0], (61, 62, 63), (50, 51, 52))
    renderer = WarpRenderer(sfm_model, image, source)
    with_edge = _beside_the_line(renderer, shut_mouth(renderer, source), lip, above=True)
    monkeypatch.setattr("faceanime.render.lip_edge.UPPER_EDGE_GAP", 10.0)
    lower_only = WarpRenderer(sfm_model, image, source)
    without = _beside_the_line(lower_only, shut_mouth(lower_only, source), lip, above=True)
    assert with_edge < 5, (with_edge, without)
    assert without > 1.5 * with_edge
    monkeypatch.undo()

    image = read_image(data_dir / "faces" / "s42.jpg")
    parted = WarpRenderer(sfm_model, image, fit_image(image, sfm_model))
    assert parted.lip_edge is not None
    upper = parted.jaw.weights < 0.5
    assert float(parted.lip_edge.offsets[upper].abs().max()) == 0

