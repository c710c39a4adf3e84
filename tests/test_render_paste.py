"""Paste-back: feathered masks, compositing, colour matching, aligned crops and their inverse."""

from __future__ import annotations

import math

import pytest
import torch

from faceanime.errors import InputError
from faceanime.render.paste import (
    close_holes,
    crop_affine,
    feather_mask,
    fill_from_neighbours,
    gaussian_blur,
    inside_distance,
    invert_affine,
    lab_to_rgb,
    match_colors,
    match_lab,
    paste_back,
    rgb_to_lab,
    warp_to_crop,
    warp_to_frame,
)
from tests.helpers import assert_close

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))]
TEMPLATE = torch.tensor([[0.375, 0.475], [0.625, 0.475], [0.5, 0.725]])


def rect_mask(h: int, w: int, top: int, bottom: int, left: int, right: int,
              device: str = "cpu") -> torch.Tensor:
    mask = torch.zeros(1, 1, h, w, device=device)
    mask[..., top:bottom, left:right] = 1.0
    return mask


def disc_mask(h: int, w: int, cy: float, cx: float, radius: float,
              device: str = "cpu") -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device),
                            indexing="ij")
    inside = (ys - cy) ** 2 + (xs - cx) ** 2 <= radius ** 2
    return inside.float()[None, None]


def eyes_mouth(points: torch.Tensor) -> torch.Tensor:
    """``(B, 68, 2)`` -> ``(B, 3, 2)``: left eye, right eye, mouth-corner midpoint."""
    return torch.stack([points[:, 36:42].mean(1), points[:, 42:48].mean(1),
                        (points[:, 48] + points[:, 54]) / 2], 1)


def apply_affine(affine: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    return points @ affine[:, :, :2].transpose(1, 2) + affine[:, None, :, 2]


@pytest.fixture(scope="module")
def photo(data_dir):
    """image_0010 as a ``(1, 3, H, W)`` float tensor and its ``(1, 68, 2)`` 0-based landmarks."""
    from faceanime.io.media import read_image
    from faceanime.landmarks import read_pts

    faces = data_dir / "faces"
    image = torch.from_numpy(read_image(faces / "image_0010.png")).permute(2, 0, 1)[None] / 255.0
    points = torch.from_numpy(read_pts(faces / "image_0010.pts"))[None]
    return image.float(), points.float()


def face_box(points: torch.Tensor) -> tuple[slice, slice]:
    low, high = points[0].min(0).values, points[0].max(0).values
    return (slice(int(low[1]), int(high[1]) + 1), slice(int(low[0]), int(high[0]) + 1))


# --- feather_mask -------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("width", [3.0, 6.5])
def test_feather_ramps_inside_the_border(device, width):
    mask = rect_mask(64, 96, 10, 54, 20, 80, device)
    alpha = feather_mask(mask, width)
    assert alpha.shape == mask.shape and alpha.device == mask.device
    assert bool((alpha[mask == 0] == 0).all()), "feathering leaked outside the mask"
    depth = math.ceil(width) + 1
    assert bool((alpha[..., 10 + depth:54 - depth, 20 + depth:80 - depth] == 1).all())
    row = alpha[0, 0, 32]
    left, right = row[20:50], row[50:80].flip(0)  # both read from the border inwards
    for ramp in (left, right):
        assert bool((ramp[1:] >= ramp[:-1]).all()), f"not monotone: {ramp}"
        assert 0 < float(ramp[0]) < 1
        soft = int(((ramp > 0) & (ramp < 1)).sum())
        assert abs(soft - width) <= 1, f"{soft} soft pixels for width {width}"


def test_feather_is_euclidean():
    """A disc's alpha depends on the distance to its rim only: the diagonal fades like the axes
    (a square or diamond distance would make the diagonal ramp 1.4x longer or shorter)."""
    mask = disc_mask(101, 101, 50, 50, 40)
    alpha = feather_mask(mask, 10.0)[0, 0]
    for depth in (3, 6, 9):
        r = 40 - depth
        on_axis = float(alpha[50, 50 + r])
        diagonal = float(alpha[50 + round(r / math.sqrt(2)), 50 + round(r / math.sqrt(2))])
        assert abs(on_axis - diagonal) < 0.1, (depth, on_axis, diagonal)


@pytest.mark.parametrize("radius", [1, 6, 14])
def test_inside_distance_is_the_exact_euclidean_distance_up_to_its_radius(radius):
    """Against scipy's exact distance transform, on blobs clear of the image edge (scipy knows
    no continuation beyond the array). Radius 14 needs more than 8 bits for the squared
    distances: the wider integer path."""
    from scipy.ndimage import distance_transform_edt

    g = torch.Generator().manual_seed(radius)
    noise = torch.rand(3, 1, 40, 50, generator=g) > 0.75
    blobs = torch.nn.functional.max_pool2d(noise.float(), 7, stride=1, padding=3) > 0.5
    inside = torch.zeros(3, 1, 90, 100, dtype=torch.bool)
    inside[..., 25:65, 25:75] = blobs
    got = inside_distance(inside, radius)
    truth = torch.from_numpy(distance_transform_edt(inside.numpy())).float()
    assert torch.allclose(got, truth.clamp_max(radius + 1), atol=1e-5)


def test_feather_width_zero_and_edges():
    soft = torch.rand(2, 1, 30, 40, generator=torch.Generator().manual_seed(0))
    assert torch.equal(feather_mask(soft, 0.0), soft)
    # Never more than the coverage, so nothing the renderer left undrawn shows.
    assert bool((feather_mask(soft, 4.0) <= soft).all())
    faint = 0.7 * rect_mask(30, 30, 5, 25, 5, 25)
    assert_close(feather_mask(faint, 3.0)[..., 15, 15], torch.tensor([[0.7]]))
    # A face cut by the frame's edge is not faded at the edge: nothing lies beyond it.
    touching = rect_mask(40, 40, 0, 25, 0, 40)
    alpha = feather_mask(touching, 5.0)[0, 0]
    assert bool((alpha[0:10, 10:30] == 1).all()) and float(alpha[24, 20]) < 0.2


def test_closing_fills_pinholes_without_growing():
    mask = rect_mask(60, 60, 10, 50, 10, 50)
    holes = mask.clone()
    holes[..., 20, 20] = 0
    holes[..., 30, 31:33] = 0
    assert float(feather_mask(holes, 4.0)[0, 0, 30, 31]) == 0
    closed = close_holes(holes, 1)
    assert torch.equal(closed, mask)
    alpha = feather_mask(holes, 4.0, close=1)
    assert torch.equal(alpha, feather_mask(mask, 4.0))
    assert float(alpha[0, 0, 20, 20]) == 1 and float(alpha[0, 0, 30, 31]) == 1


def _pooled_closing(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """The closing by max-pooling, as ``close_holes`` computes it for any mask."""
    k = 2 * radius + 1
    dilated = torch.nn.functional.max_pool2d(mask, k, stride=1, padding=radius)
    return -torch.nn.functional.max_pool2d(-dilated, k, stride=1, padding=radius)


@pytest.mark.parametrize("radius", [1, 2, 3])
@pytest.mark.parametrize("seed", range(4))
def test_closing_a_binary_mask_equals_the_pooled_closing(seed, radius):
    """Binary masks take a faster path (logical or/and over shifted slices): the same pixels
    as max-pooling, holes and mask at the image's edges included; soft masks and bool masks
    too."""
    g = torch.Generator().manual_seed(seed)
    h, w = (int(v) for v in torch.randint(3, 90, (2,), generator=g))
    mask = (torch.rand(3, 1, h, w, generator=g) > 0.25).float()
    mask[..., 0, :] = 0
    mask[..., :, -1] = 1
    expected = _pooled_closing(mask, radius)
    closed = close_holes(mask, radius)
    assert closed.dtype == mask.dtype and torch.equal(closed, expected)
    assert torch.equal(close_holes(mask.double(), radius), expected.double())
    as_bool = close_holes(mask > 0.5, radius)
    assert as_bool.dtype == torch.bool and torch.equal(as_bool, expected > 0.5)
    soft = mask * torch.rand(3, 1, h, w, generator=g)
    assert torch.equal(close_holes(soft, radius), _pooled_closing(soft, radius))


@pytest.mark.parametrize("seed", range(6))
def test_filling_closed_pinholes_averages_the_covered_pixels_around_them(seed):
    """Each pixel closing added takes the mean of the covered pixels in its (2r+1)² window
    (computed here over the whole image, as the function did before it averaged only the
    added pixels' box); every other pixel is unchanged. Holes at the image's edge included."""
    g = torch.Generator().manual_seed(seed)
    h, w = (int(v) for v in torch.randint(8, 120, (2,), generator=g))
    image = torch.rand(2, 3, h, w, generator=g)
    mask = (torch.rand(2, 1, h, w, generator=g) > 0.08).float()
    mask[..., 0, 0] = 0
    closed = close_holes(mask, 2)
    added = (closed >= 0.5) & (mask < 0.5)
    assert bool(added.any())
    weight = (mask >= 0.5).float()
    average = (torch.nn.functional.avg_pool2d(image * weight, 5, stride=1, padding=2)
               / torch.nn.functional.avg_pool2d(weight, 5, stride=1, padding=2).clamp_min(1e-8))
    out = fill_from_neighbours(image, mask, closed, 2)
    assert torch.equal(out, torch.where(added, average, image))
    assert fill_from_neighbours(image, torch.ones_like(mask), torch.ones_like(mask), 2) is image


@pytest.mark.parametrize("border", ["replicate", "zero"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape, sigma", [((8, 3, 61, 47), 1.0), ((3, 1, 40, 90), 2.5),
                                          ((1, 2, 33, 33), 0.4)])
def test_blur_is_the_separable_gaussian(shape, sigma, dtype, border):
    """The blur (one depthwise convolution over every image and channel, channels-last for
    float32 on the CPU) equals the plain per-image separable convolution written out here, and
    keeps a constant image constant with the replicated border."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(7)
    image = torch.rand(*shape, generator=g, dtype=dtype)
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = shape[1]
    padded = F.pad(image, (radius,) * 4, mode="replicate" if border == "replicate" else "constant")
    expected = F.conv2d(F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c),
                        kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    out = gaussian_blur(image, sigma, border=border)
    assert out.shape == image.shape and out.dtype == dtype and out.is_contiguous()
    assert_close(out, expected, atol=1e-6 if dtype == torch.float32 else 1e-12, rtol=0)
    if border == "replicate":
        flat = torch.full(shape, 0.3, dtype=dtype)
        assert_close(gaussian_blur(flat, sigma), flat, atol=1e-6, rtol=0)
    with pytest.raises(InputError, match="border"):
        gaussian_blur(image, sigma, border="reflect")


# --- paste_back ---------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_paste_back_composite(device):
    g = torch.Generator().manual_seed(1)
    rendered = torch.rand(2, 3, 80, 90, generator=g).to(device)
    background = torch.rand(2, 3, 80, 90, generator=g).to(device)
    mask = disc_mask(80, 90, 40, 45, 30, device).expand(2, -1, -1, -1)
    out = paste_back(rendered, mask, background, feather=6.0, color_match=False)
    assert out.shape == rendered.shape and out.device == rendered.device
    outside = (mask == 0).expand_as(out)
    assert torch.equal(out[outside], background[outside])
    deep = (feather_mask(mask, 6.0) == 1).expand_as(out)
    assert int(deep.sum()) > 1000
    assert torch.equal(out[deep], rendered[deep])
    low, high = torch.minimum(rendered, background), torch.maximum(rendered, background)
    assert bool(((out >= low - 1e-6) & (out <= high + 1e-6)).all())
    # One frame as the background of the whole batch.
    single = paste_back(rendered, mask, background[0], feather=6.0, color_match=False)
    assert torch.equal(single[0], out[0])


@pytest.mark.parametrize("device", DEVICES)
def test_paste_back_color_matched(device):
    g = torch.Generator().manual_seed(2)
    background = torch.rand(1, 3, 50, 60, generator=g).to(device)
    rendered = (0.5 * torch.rand(1, 3, 50, 60, generator=g)).to(device)
    mask = rect_mask(50, 60, 10, 40, 10, 50, device)
    out = paste_back(rendered, mask, background, feather=4.0)
    matched = match_colors(rendered, background, mask)
    outside = (mask == 0).expand_as(out)
    assert torch.equal(out[outside], background[outside])
    deep = (feather_mask(mask, 4.0) == 1).expand_as(out)
    assert_close(out[deep], matched[deep])
    assert not torch.allclose(out[deep], rendered[deep], atol=0.05)


def test_paste_back_fills_closed_pinholes_from_neighbours():
    rendered = torch.full((1, 3, 40, 40), 0.8)
    mask = rect_mask(40, 40, 5, 35, 5, 35)
    rendered[..., 20, 20] = 0.0  # the renderer drew nothing there
    mask[..., 20, 20] = 0.0
    background = torch.zeros(1, 3, 40, 40)
    holey = paste_back(rendered, mask, background, feather=3.0, color_match=False)
    assert float(holey[0, 0, 20, 20]) == 0
    closed = paste_back(rendered, mask, background, feather=3.0, color_match=False, close=1)
    assert_close(closed[0, :, 20, 20], torch.full((3,), 0.8))


# --- colour -------------------------------------------------------------------------------------

def test_lab_reference_values():
    rgb = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0],
                        [0.0, 0.0, 1.0], [0.5, 0.5, 0.5]], dtype=torch.float64)
    expected = torch.tensor([[100.0, 0.0, 0.0], [0.0, 0.0, 0.0], [53.24, 80.09, 67.20],
                             [87.73, -86.18, 83.18], [32.30, 79.19, -107.86],
                             [53.39, 0.0, 0.0]], dtype=torch.float64)
    lab = rgb_to_lab(rgb.T[None, :, :, None])[0, :, :, 0].T
    assert_close(lab, expected, atol=0.02, rtol=0)
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    assert_close(lab_to_rgb(rgb_to_lab(x)), x, atol=1e-9, rtol=0)


def masked_stats(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    values = x[0][:, mask[0, 0] > 0]
    return values.mean(1), values.std(1, unbiased=False)


@pytest.mark.parametrize("device", DEVICES)
def test_match_colors_on_real_face(photo, device):
    """A darker, greenish render of the face gets the photo's colour statistics back."""
    image, points = photo
    rows, cols = face_box(points)
    reference = image[..., rows, cols].to(device)
    tint = torch.tensor([0.75, 0.9, 0.7], device=device)[None, :, None, None]
    rendered = (reference * tint + torch.tensor([0.0, 0.05, 0.0], device=device)[
        None, :, None, None]).clamp(0, 1)
    h, w = reference.shape[-2:]
    mask = disc_mask(h, w, h / 2, w / 2, min(h, w) * 0.45, device)

    out = match_colors(rendered, reference, mask)
    assert out.shape == rendered.shape and out.device == rendered.device
    assert bool(((out >= 0) & (out <= 1)).all())
    outside = (mask == 0).expand_as(out)
    assert torch.equal(out[outside], rendered[outside])
    got_mean, got_std = masked_stats(rgb_to_lab(out), mask)
    ref_mean, ref_std = masked_stats(rgb_to_lab(reference), mask)
    before, _ = masked_stats(rgb_to_lab(rendered), mask)
    assert float((before - ref_mean).abs().max()) > 5  # the tint was visible
    assert_close(got_mean, ref_mean, atol=0.5, rtol=0)
    assert_close(got_std, ref_std, atol=0, rtol=0.05)
    rgb_mean, _ = masked_stats(out, mask)
    assert_close(rgb_mean, masked_stats(reference, mask)[0], atol=0.02, rtol=0)

    plain = match_colors(rendered, reference, mask, mode="rgb_mean_std")
    got_mean, got_std = masked_stats(plain, mask)
    ref_mean, ref_std = masked_stats(reference, mask)
    assert_close(got_mean, ref_mean, atol=0.01, rtol=0)
    assert_close(got_std, ref_std, atol=0.01, rtol=0)


def test_a_channel_bounded_at_gain_one_keeps_its_spread(photo):
    """Per-channel bounds (the swap keeps the photo's lightness contrast): with L* bounded at
    1, the render's L* spread stays its own while its mean and the colour's statistics are
    the reference's; a single bound of 1 keeps every spread; both in match_lab too."""
    reference, rendered, mask = tinted_face(photo)
    # Flatter than the reference: a low-contrast render whose spread a full match would grow.
    rendered = (0.5 + 0.6 * (rendered - 0.5)).clamp(0, 1)
    _, own_std = masked_stats(rgb_to_lab(rendered), mask)
    ref_mean, ref_std = masked_stats(rgb_to_lab(reference), mask)
    assert float(ref_std[0] / own_std[0]) > 1.3  # a full match would change the L* spread
    for out in (match_colors(rendered, reference, mask, max_gain=(1.0, 4.0, 4.0)),
                match_lab(rgb_to_lab(rendered), reference, mask, max_gain=(1.0, 4.0, 4.0))):
        got_mean, got_std = masked_stats(rgb_to_lab(out), mask)
        assert_close(got_mean, ref_mean, atol=0.5, rtol=0)
        assert_close(got_std[0], own_std[0], atol=0, rtol=0.05)
        assert_close(got_std[1:], ref_std[1:], atol=0, rtol=0.05)
    _, kept = masked_stats(rgb_to_lab(match_colors(rendered, reference, mask, max_gain=1.0)),
                           mask)
    assert_close(kept, own_std, atol=0, rtol=0.05)


def tinted_face(photo) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The photo's face box, a greenish darker render of it and a disc mask over the face."""
    image, points = photo
    rows, cols = face_box(points)
    reference = image[..., rows, cols]
    rendered = (reference * torch.tensor([0.75, 0.9, 0.7])[None, :, None, None]).clamp(0, 1)
    h, w = reference.shape[-2:]
    return reference, rendered, disc_mask(h, w, h / 2, w / 2, min(h, w) * 0.45)


def test_match_colors_from_every_other_pixel_matches_the_face_alike(photo):
    """Statistics from every other pixel in each direction (the swap's ``stride=2``: a quarter
    of the reference converted) give the real face the same colours within a fraction of a
    level; the default stride is the full computation; a bad stride is one clear error."""
    reference, rendered, mask = tinted_face(photo)
    full = match_colors(rendered, reference, mask)
    assert torch.equal(full, match_colors(rendered, reference, mask, stride=1))
    half = match_colors(rendered, reference, mask, stride=2)
    assert float((half - full).abs().mean()) < 0.5 / 255
    assert float((half - full).abs().max()) < 3 / 255
    outside = (mask == 0).expand_as(half)
    assert torch.equal(half[outside], rendered[outside])
    with pytest.raises(InputError, match="stride"):
        match_colors(rendered, reference, mask, stride=0)


def test_match_lab_is_match_colors_for_a_render_already_in_lab(photo):
    """The swap draws its face from a texture kept in L*a*b* and converts back once: the
    result equals matching the sRGB render (to float rounding), and outside the mask it is
    the render itself."""
    reference, rendered, mask = tinted_face(photo)
    want = match_colors(rendered, reference, mask, max_gain=1.5, stride=2)
    got = match_lab(rgb_to_lab(rendered), reference, mask, max_gain=1.5, stride=2)
    assert float((got - want).abs().max()) < 1e-4
    assert float((got - rendered).abs().max()) > 0.05           # it did change the face
    empty = match_lab(rgb_to_lab(rendered), reference, torch.zeros_like(mask))
    assert float((empty - rendered).abs().max()) < 1e-4


def test_match_colors_none_and_empty_mask():
    g = torch.Generator().manual_seed(4)
    rendered, reference = torch.rand(2, 3, 20, 20, generator=g), torch.rand(2, 3, 20, 20,
                                                                            generator=g)
    mask = rect_mask(20, 20, 5, 15, 5, 15).repeat(2, 1, 1, 1)
    assert match_colors(rendered, reference, mask, mode="none") is rendered
    mask[1] = 0  # no face in the second frame
    out = match_colors(rendered, reference, mask)
    assert torch.equal(out[1], rendered[1]) and not torch.equal(out[0], rendered[0])
    with pytest.raises(InputError, match="mean_std"):
        match_colors(rendered, reference, mask, mode="histogram")


# --- aligned crops ------------------------------------------------------------------------------

def test_crop_affine_centres_real_face(photo):
    _, points = photo
    size = 256
    affine = crop_affine(points, size)
    assert affine.shape == (1, 2, 3)
    linear = affine[0, :, :2]
    assert_close(linear[0, 0], linear[1, 1])
    assert_close(linear[0, 1], -linear[1, 0])
    placed = apply_affine(affine, eyes_mouth(points))[0]
    expected = TEMPLATE * size - 0.5
    assert float((placed - expected).norm(dim=-1).max()) < 0.02 * size, placed / size
    # Eyes level and either side of the centre line, mouth below them on it.
    assert abs(float(placed[0, 1] - placed[1, 1])) < 0.01 * size
    assert abs(float((placed[0, 0] + placed[1, 0]) / 2 - placed[2, 0])) < 0.01 * size
    # Zooming out keeps the centre and halves the distances from it.
    wide = apply_affine(crop_affine(points, size, scale=2.0), eyes_mouth(points))[0]
    centre = (size - 1) / 2
    assert_close(wide - centre, (placed - centre) / 2, atol=1e-3, rtol=0)


def test_crop_affine_follows_the_face(photo):
    """Rotating, scaling and moving the face moves its crop with it: the crop sees the same."""
    _, points = photo
    angle = math.radians(25.0)
    rot = 0.7 * torch.tensor([[math.cos(angle), -math.sin(angle)],
                              [math.sin(angle), math.cos(angle)]])
    moved = points @ rot.T + torch.tensor([40.0, -15.0])
    here = apply_affine(crop_affine(points, 224), points)
    there = apply_affine(crop_affine(moved, 224), moved)
    assert_close(there, here, atol=1e-3, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_warp_round_trip_real_photo(photo, device):
    image, points = photo
    image, points = image.to(device), points.to(device)
    affine = crop_affine(points, 512)
    crop = warp_to_crop(image, affine, 512)
    assert crop.shape == (1, 3, 512, 512) and crop.device == image.device
    back, coverage = warp_to_frame(crop, affine, tuple(image.shape[-2:]))
    assert back.shape == image.shape and coverage.shape == (1, 1, *image.shape[-2:])
    rows, cols = face_box(points)
    assert bool((coverage[..., rows, cols] == 1).all())
    assert float(coverage[0, 0, 0, 0]) == 0 and float(coverage[0, 0, -1, -1]) == 0
    mse = float(((back - image)[..., rows, cols] ** 2).mean())
    psnr = 10 * math.log10(1.0 / mse)
    assert psnr >= 35, f"round trip PSNR {psnr:.1f} dB"


@pytest.mark.parametrize("device", DEVICES)
def test_warp_pixel_centre_convention(device):
    """Frame pixel (x, y) takes crop pixel A @ (x, y, 1) with integer pixel centres."""
    crop = torch.rand(1, 2, 12, 16, generator=torch.Generator().manual_seed(5)).to(device)
    shift = torch.tensor([[[1.0, 0.0, -10.0], [0.0, 1.0, -20.0]]], device=device)
    frame, coverage = warp_to_frame(crop, shift, (40, 30))
    assert_close(frame[..., 20:32, 10:26], crop)
    assert bool((coverage[..., 20:32, 10:26] == 1).all())
    assert float(coverage[..., 19, 15]) == 0 and float(coverage[..., 32, 15]) == 0
    assert float(coverage[..., 25, 9]) == 0 and float(coverage[..., 25, 26]) == 0
    # Half-covered edge pixels keep the crop's colour: the coverage carries the blend.
    flat = torch.full((1, 3, 12, 16), 0.6, device=device)
    offset = torch.tensor([[[1.0, 0.0, -10.5], [0.0, 1.0, -20.0]]], device=device)
    frame, coverage = warp_to_frame(flat, offset, (40, 30))
    assert_close(coverage[0, 0, 25, 10:12], torch.tensor([0.5, 1.0], device=device))
    assert_close(frame[0, :, 25, 10], torch.full((3,), 0.6, device=device))
    # Halving: frame pixel (x, y) <- crop (2x, 2y), no antialiasing to blur the check.
    half = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]]], device=device)
    small, _ = warp_to_frame(crop, half, (6, 8), antialias=False)
    assert_close(small, crop[..., ::2, ::2])
    # Cropping is the inverse.
    frame_image = torch.rand(1, 3, 30, 40, generator=torch.Generator().manual_seed(6)).to(device)
    cut = warp_to_crop(frame_image, shift, 8)
    assert_close(cut, frame_image[..., 20:28, 10:18])
    assert_close(invert_affine(invert_affine(half)), half)


def test_warp_to_crop_antialiases_minification():
    """Shrinking a one-pixel checkerboard threefold gives flat grey, not a false pattern."""
    ys, xs = torch.meshgrid(torch.arange(96), torch.arange(96), indexing="ij")
    board = ((ys + xs) % 2).float()[None, None].expand(1, 3, -1, -1)
    third = torch.tensor([[[1 / 3, 0.0, 0.0], [0.0, 1 / 3, 0.0]]])
    smooth = warp_to_crop(board, third, 32)
    aliased = warp_to_crop(board, third, 32, antialias=False)
    inner = (..., slice(4, -4), slice(4, -4))
    assert float(aliased[inner].std()) > 0.3
    assert float(smooth[inner].std()) < 0.05
    assert abs(float(smooth[inner].mean()) - 0.5) < 0.02


# --- validation ---------------------------------------------------------------------------------

def test_invalid_inputs_raise_input_error():
    image = torch.rand(1, 3, 20, 30)
    mask = torch.ones(1, 1, 20, 30)
    with pytest.raises(InputError, match=r"mask of shape \(1, 1, 20, 31\)"):
        paste_back(image, torch.ones(1, 1, 20, 31), image)
    with pytest.raises(InputError, match="background"):
        paste_back(image, mask, torch.rand(3, 21, 30))
    with pytest.raises(InputError, match="batch"):
        paste_back(image, mask.expand(2, -1, -1, -1), image)
    with pytest.raises(InputError, match="3 channel"):
        paste_back(image[:, :1], mask, image)
    with pytest.raises(InputError, match=r"\(B, C, H, W\)"):
        feather_mask(mask[0], 3.0)
    with pytest.raises(InputError, match="float"):
        paste_back((image * 255).to(torch.uint8), mask, image)
    with pytest.raises(InputError, match="feather width"):
        feather_mask(mask, -1.0)
    with pytest.raises(InputError, match="reference"):
        match_colors(image, image[..., :10], mask)
    with pytest.raises(InputError, match=r"\(1, 2, 3\)"):
        warp_to_frame(image, torch.eye(3)[None], (40, 40))
    with pytest.raises(InputError, match="frame_size"):
        warp_to_frame(image, torch.eye(3)[None, :2], (40,))
    with pytest.raises(InputError, match="singular"):
        warp_to_crop(image, torch.zeros(1, 2, 3), 16)
    with pytest.raises(InputError, match=r"\(B, 68, 2\)"):
        crop_affine(torch.rand(1, 5, 2), 64)
    nan = torch.rand(1, 68, 2) * 100
    nan[0, 40] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        crop_affine(nan, 64)
    with pytest.raises(InputError, match="crop_size"):
        crop_affine(torch.rand(1, 68, 2) * 100, 1)
