"""The target frame bent to the swapped face's shape (faceanime.render.reshape): exact offsets
inside the face, a smooth continuation around it that fades out, synthetic ground truth."""

from __future__ import annotations

import pytest
import torch

from faceanime.render.rasterize import rasterize
from faceanime.render.reshape import bend_offsets, continue_offsets, surface_offsets


def square(x0: float, y0: float, x1: float, y1: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A square of two triangles: ``(1, 4, 3)`` screen vertices and ``(2, 3)`` triangles."""
    screen = torch.tensor([[[x0, y0, 1.0], [x1, y0, 1.0], [x1, y1, 1.0], [x0, y1, 1.0]]])
    return screen, torch.tensor([[0, 1, 2], [0, 2, 3]])


def test_surface_offsets_follow_the_same_surface_point():
    """Inside the swapped mesh each pixel's offset reaches the same surface point on the own
    mesh: a shifted mesh gives the shift, a scaled one an offset proportional to the pixel's
    position; nothing outside the mesh."""
    screen, triangles = square(10.0, 12.0, 50.0, 44.0)
    fragments = rasterize(screen, triangles, (60, 64))
    covered = fragments.face_index[0] >= 0
    shift = torch.tensor([3.5, -2.25])
    out = surface_offsets(fragments, screen[..., :2] + shift, triangles)
    assert out.shape == (1, 3, 60, 64)
    assert torch.equal(out[0, 2] > 0.5, covered)
    assert torch.allclose(out[0, :2][:, covered], shift[:, None].expand(2, int(covered.sum())),
                          atol=1e-4)
    assert float(out[0, :2][:, ~covered].abs().max()) == 0.0
    scaled = surface_offsets(fragments, screen[..., :2] * 1.2, triangles)
    ys, xs = torch.nonzero(covered, as_tuple=True)
    want = torch.stack([0.2 * xs.float(), 0.2 * ys.float()])
    assert torch.allclose(scaled[0, :2][:, covered], want, atol=1e-3)


def test_continued_offsets_fade_smoothly_and_vanish_at_the_border():
    """A square face moved by (6, 0): the offsets are exact deep inside, continue around the
    square without a step anywhere (its corners included: switched at the outline, the
    continuation there was half the face's and the bent frame stepped by 3 px), are gone a
    reach beyond it, and are 0 at the grown box's border."""
    screen, triangles = square(20.0, 20.0, 60.0, 60.0)
    fragments = rasterize(screen, triangles, (80, 80))
    offsets = surface_offsets(fragments, screen[..., :2] + torch.tensor([6.0, 0.0]), triangles)
    reach, pad = 16.0, 20
    field = continue_offsets(offsets, reach, pad)
    assert field.shape == (1, 2, 120, 120)
    dx = field[0, 0]
    # Deep inside (more than a reach in): the exact offset.
    assert torch.allclose(dx[pad + 36:pad + 45, pad + 36:pad + 45], torch.tensor(6.0), atol=1e-5)
    # Continuous: no neighbouring pixels differ by more than a sixth of the offset.
    steps = torch.cat([(dx[1:] - dx[:-1]).abs().flatten(),
                       (dx[:, 1:] - dx[:, :-1]).abs().flatten()])
    assert float(steps.max()) < 1.0, float(steps.max())
    # Right beside the outline it still moves with the face; a reach and a half away, hardly.
    assert float(dx[pad + 40, pad + 19]) > 0.5 * 6
    far = pad + 20 - round(1.5 * reach)
    assert abs(float(dx[pad + 40, far])) < 0.1 * 6
    border = torch.cat([field[..., 0, :], field[..., -1, :], field[..., :, 0], field[..., :, -1]],
                       -1)
    assert float(border.abs().max()) == 0.0
    # No motion in the face: no motion anywhere.
    still = surface_offsets(fragments, screen[..., :2], triangles)
    assert float(continue_offsets(still, reach, pad).abs().max()) == pytest.approx(0.0, abs=1e-5)


def test_the_bending_at_half_resolution_matches_the_full_one():
    """:func:`bend_offsets` samples every other pixel and interpolates back: on a mesh moved by
    a shift and a stretch (offsets linear in the pixel, as within a triangle) it agrees with the
    full-resolution offsets to a tenth of a pixel inside the face, and everywhere to well under
    a pixel."""
    screen, triangles = square(30.0, 24.0, 90.0, 80.0)
    fragments = rasterize(screen, triangles, (100, 120))
    own = screen[..., :2] * torch.tensor([1.1, 0.95]) + torch.tensor([-4.0, 3.0])
    reach = 12.0
    half, pad = bend_offsets(fragments, own, triangles, reach, step=2)
    full = continue_offsets(surface_offsets(fragments, own, triangles), reach, pad)
    assert half.shape == full.shape == (1, 2, 100 + 2 * pad, 120 + 2 * pad)
    inside = torch.zeros(100 + 2 * pad, 120 + 2 * pad, dtype=torch.bool)
    inside[pad + 40:pad + 65, pad + 45:pad + 75] = True
    assert float((half - full)[0][:, inside].abs().max()) < 0.1
    assert float((half - full).abs().max()) < 0.75


@pytest.mark.parametrize("reach", [-0.1, float("nan"), float("inf")])
def test_a_bending_reach_that_is_not_a_size_is_refused(reach):
    """A negative or non-finite reach is one clear error when the settings are made, not a
    crash in the middle of a video (a NaN reach failed at the first frame with a bare
    ValueError from math.ceil)."""
    from faceanime.errors import InputError
    from faceanime.render.swap import SwapRenderConfig

    with pytest.raises(InputError, match="reshape_reach"):
        SwapRenderConfig(reshape_reach=reach)
