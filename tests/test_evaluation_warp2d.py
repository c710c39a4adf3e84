"""The ``warp2d`` baseline's piecewise-affine warp on a real photo with its annotated landmarks
(faces/image_0010.png + .pts): the identity gives the photo back, a translation of the face
moves its pixels by as much while the border stays, fold-overs do not crash, and the targets
carry the driver's motion through the similarity to the source."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from faceanime.errors import InputError
from faceanime.evaluation.warp2d import (
    BORDER_POINTS,
    border_points,
    transfer_landmarks,
    triangulate,
    warp_image,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module")
def photo(data_dir) -> tuple[torch.Tensor, torch.Tensor]:
    """A 640×512 copy of image_0010.png ``(1, 3, 512, 640)`` in [0, 1] and its 68 annotated
    points ``(68, 2)`` scaled with it (half size: a fast test, a face of ~190 px)."""
    from PIL import Image

    from faceanime.io import read_image
    from faceanime.landmarks import read_pts

    image = read_image(data_dir / "faces" / "image_0010.png")
    small = np.asarray(Image.fromarray(image).resize((640, 512), Image.BILINEAR))
    points = torch.from_numpy(read_pts(data_dir / "faces" / "image_0010.pts")) / 2
    x = torch.from_numpy(small.copy()).permute(2, 0, 1)[None].float() / 255
    return x, points


@pytest.mark.parametrize("device", DEVICES)
def test_identical_points_give_the_photo_back(photo, device):
    x, points = photo
    x, points = x.to(device), points.to(device)
    out = warp_image(x, points, points[None])
    assert out.shape == x.shape and out.device == x.device and out.dtype == x.dtype
    diff = (out - x).abs()
    assert diff.mean().item() < 0.5 / 255
    assert diff.max().item() < 0.02  # sample positions off by float rounding only


def test_translation_moves_face_pixels_and_keeps_the_border(photo):
    x, points = photo
    out = warp_image(x, points, (points + torch.tensor([5.0, 3.0]))[None])
    # A patch around the nose (iBUG 31, 1-based): inside the landmarks' hull, where every
    # triangle is made of face points only, all translated, so the warp is that translation.
    cx, cy = (int(v) for v in points[30].round())
    before = x[0, :, cy - 12:cy + 12, cx - 12:cx + 12]
    after = out[0, :, cy - 12 + 3:cy + 12 + 3, cx - 12 + 5:cx + 12 + 5]
    assert (after - before).abs().max().item() < 1e-3
    assert (out[0, :, cy - 12:cy + 12, cx - 12:cx + 12] - before).abs().mean().item() > 0.01
    # The border points are fixed: the corner pixels, half a pixel from them, barely move (their
    # triangles reach a face point some 100 px away), unlike the face.
    for r, c in ((0, 0), (0, -1), (-1, 0), (-1, -1)):
        assert torch.allclose(out[0, :, r, c], x[0, :, r, c], atol=1e-3)


def test_batch_dtype_and_fold_overs(photo):
    """One photo to a batch of targets, in float64; targets so scrambled that triangles flip
    and overlap: the warp still fills every pixel with values sampled from the photo."""
    x, points = photo
    gen = torch.Generator().manual_seed(0)
    wild = points + 60 * torch.randn((3, 68, 2), generator=gen)
    triangles = triangulate(points, x.shape[-2:])
    assert triangles.shape[1] == 3 and int(triangles.max()) == 68 + BORDER_POINTS - 1
    out = warp_image(x.double(), points, wild, triangles)
    assert out.shape == (3, 3, 512, 640) and out.dtype == torch.float64
    assert torch.isfinite(out).all()
    # Bilinear sampling never leaves the range of the photo's values.
    assert out.min() >= x.min() - 1e-6 and out.max() <= x.max() + 1e-6
    assert not torch.allclose(out[0], out[1])


def test_bad_inputs(photo):
    x, points = photo
    with pytest.raises(InputError):
        warp_image(x, points, points[None, :60])  # point counts differ
    with pytest.raises(InputError):
        warp_image(x.expand(2, -1, -1, -1), points, points.expand(3, -1, -1))
    nan = points.clone()
    nan[5] = float("nan")
    with pytest.raises(InputError):
        warp_image(x, points, nan[None])
    with pytest.raises(InputError):
        triangulate(nan, (512, 640))


def test_border_points_lie_outside_the_pixel_centres():
    b = border_points((4, 6))
    assert b.shape == (BORDER_POINTS, 2)
    assert b[:, 0].min() == -0.5 and b[:, 0].max() == 5.5
    assert b[:, 1].min() == -0.5 and b[:, 1].max() == 3.5


def test_transfer_brings_driver_motion_into_the_source():
    """The driver is the source turned by 90°, twice as large and elsewhere: a displacement of
    (10, 0) px in the driver is (0, -5) px in the source (S undoes the turn and the scale)."""
    gen = torch.Generator().manual_seed(1)
    src = 100 + 50 * torch.rand((68, 2), generator=gen, dtype=torch.float64)
    turn = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)  # (x, y) -> (-y, x)
    reference = 2 * src @ turn.T + torch.tensor([300.0, -20.0], dtype=torch.float64)
    driver = torch.stack([reference, reference + torch.tensor([10.0, 0.0], dtype=torch.float64),
                          torch.full_like(reference, float("nan"))])
    target = transfer_landmarks(src, driver, reference)
    assert target.shape == (3, 68, 2) and target.dtype == src.dtype
    assert torch.allclose(target[0], src, atol=1e-9)  # the reference frame: no motion
    assert torch.allclose(target[1], src + torch.tensor([0.0, -5.0], dtype=torch.float64),
                          atol=1e-9)
    assert torch.equal(target[2], src)  # no face in the driver: the source unchanged
    with pytest.raises(InputError):
        transfer_landmarks(src, driver, torch.full_like(src, math.nan))
