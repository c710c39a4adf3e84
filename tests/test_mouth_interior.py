"""The mouth interior: the canonical cap layout, capture from driving frames, the synthesised
interior, and what the warp renderer shows with them on real photos and videos."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_close

from faceanime.coefficients import Coefficients
from faceanime.fitting import FitConfig, fit_landmarks
from faceanime.geometry import euler_to_matrix
from faceanime.io import iter_video_frames
from faceanime.jobs.common import OutputConfig, load_source
from faceanime.landmarks import create_detector
from faceanime.morphable.jaw import build_jaw
from faceanime.morphable.mouth import add_mouth_cap, flatten_cap
from faceanime.motion import MotionConfig, transfer_motion
from faceanime.reconstruction import face_vertices, project_vertices
from faceanime.render.frames import to_uint8
from faceanime.render.mouth_interior import (
    CHROMA_ADAPTATION,
    MONOCHROME_SPREAD,
    REFERENCE_LIP_RATIO,
    REFERENCE_LUMA,
    REFERENCE_SKIN,
    TEXTURE_SIZE,
    InteriorCapture,
    capture_interior,
    colour_spread,
    face_highlight,
    highlight_shoulder,
    interior_saturation,
    luma,
    mouth_layout,
    mouth_opening,
    mouth_uv,
    outer_lip_vertices,
    red_response,
    sample_texture,
    skin_vertices,
    synthetic_interior,
    upper_teeth,
    warm_tint,
)
from faceanime.render.warp import WarpConfig, WarpRenderer


@pytest.fixture(scope="module")
def cap(sfm_model):
    return add_mouth_cap(sfm_model, build_jaw(sfm_model))


@pytest.fixture(scope="module")
def layout(cap):
    return mouth_layout(cap)


# Every landmark alike, as the fits of the tests that name it were made when what they test
# was found (FitConfig.lower_face_weight, 0.5 by default since).
_FULL_WEIGHT = FitConfig(lower_face_weight=1.0)


def _frames_and_points(data_dir, video: str, want: tuple[int, ...]
                       ) -> tuple[np.ndarray, np.ndarray]:
    """The frames ``want`` of the shared video ``video`` (``(T, H, W, 3)`` uint8) and their
    dlib landmarks (``(T, 68, 2)`` float32)."""
    frames = np.stack([f for i, f in enumerate(itertools.islice(
        iter_video_frames(data_dir / "videos" / video), max(want) + 1)) if i in want])
    with create_detector("dlib") as detector:
        points = np.stack([detector.detect(f)[0].points for f in frames]).astype(np.float32)
    return frames, points


@pytest.fixture(scope="module")
def d0_grin(data_dir, sfm_model):
    """d0's frames 0 and 48 (48: a wide grin showing both rows of teeth), their landmarks and
    fit."""
    frames, points = _frames_and_points(data_dir, "d0.mp4", (0, 48))
    coeffs = fit_landmarks(sfm_model, points, frames.shape[1:3])
    return frames, points, coeffs


def test_layout_covers_the_cap_and_maps_corners_to_themselves(cap, layout):
    h, w = TEXTURE_SIZE
    assert layout.triangle.shape == (h, w) and layout.corners.shape == (len(cap.triangles), 3, 2)
    assert 0.5 < float(layout.inside.float().mean()) < 0.95
    # Every cap triangle owns texels, and each texel's own (triangle, weights) lands on it.
    assert set(layout.triangle[layout.inside].tolist()) == set(range(len(cap.triangles)))
    ys, xs = torch.nonzero(layout.inside, as_tuple=True)
    uv = mouth_uv(layout, layout.triangle[ys, xs], layout.bary[ys, xs])
    assert torch.allclose(uv, torch.stack([xs, ys], 1).float(), atol=1e-3)
    # The centre vertex (listed first) is deeper than the rim: the upper lip along the top.
    rim = layout.corners[:, 1:].reshape(-1, 2)
    assert float(rim[:, 1].min()) < 2.0 and float(rim[:, 1].max()) > h - 3.0


def test_sample_texture_is_bilinear():
    gen = torch.Generator().manual_seed(0)
    texture = torch.rand(2, 3, 5, 7, generator=gen)
    uv = torch.tensor([[0.0, 0.0], [6.0, 4.0], [2.5, 1.25], [3.0, 2.0]])
    frame = torch.tensor([0, 1, 1, 0])
    got = sample_texture(texture, frame, uv)
    grid = (uv / torch.tensor([6.0, 4.0]) * 2 - 1)
    want = torch.stack([torch.nn.functional.grid_sample(
        texture[f:f + 1], grid[k].view(1, 1, 1, 2), align_corners=True)[0, :, 0, 0]
        for k, f in enumerate(frame.tolist())])
    assert torch.allclose(got, want, atol=1e-6)


def test_capture_normalises_by_the_drivers_skin_colour(sfm_model, cap, layout, d0_grin):
    """Flat-coloured driving frames (mouth and skin alike) are captured at the reference skin's
    brightness whatever theirs, with their hue moved by CHROMA_ADAPTATION of the way to the
    reference's (in log space), wherever the cap lies."""
    frames, _, coeffs = d0_grin
    screen = project_vertices(coeffs, face_vertices(cap.model, coeffs, jaw=cap.jaw))
    lips, skin = outer_lip_vertices(cap.model), skin_vertices(cap.model)
    cast = torch.tensor([1.25, 0.95, 0.8])                      # a warmer hue
    reference = REFERENCE_SKIN / REFERENCE_LUMA                 # hue: colour over its luma
    hue = cast * reference / luma(cast * reference)
    for colour, want in ((0.5 * REFERENCE_SKIN, REFERENCE_SKIN),
                         (0.4 * hue, REFERENCE_LUMA * hue ** (1 - CHROMA_ADAPTATION)
                          * reference ** CHROMA_ADAPTATION)):
        flat = colour[None, :, None, None].expand(2, 3, *frames.shape[1:3]).clone()
        rgba = capture_interior(flat, screen, cap, layout, lips, skin)
        assert rgba.dtype == torch.uint8 and rgba.shape == (2, 4, *TEXTURE_SIZE)
        got = rgba[:, :3].float().mean((-1, -2)) / 255
        assert torch.allclose(got, want.expand(2, 3), atol=1 / 255)
    assert 0 < CHROMA_ADAPTATION < 1 and (cast - 1).abs().max() > 0.1


def test_opening_follows_the_lips(sfm_model, cap, data_dir):
    from faceanime.fitting import fit_video
    from faceanime.landmarks import TrackerConfig, track_video

    video = data_dir / "videos" / "d6.mp4"
    coeffs = fit_video(video, sfm_model, track_video(video, TrackerConfig(progress=False)))
    screen = project_vertices(coeffs, face_vertices(cap.model, coeffs, jaw=cap.jaw))
    opening = mouth_opening(screen, cap, outer_lip_vertices(cap.model))
    gap = (coeffs.landmarks[:, 66] - coeffs.landmarks[:, 62]).norm(dim=-1)
    ok = torch.isfinite(gap)
    assert np.corrcoef(opening[ok].numpy(), gap[ok].numpy())[0, 1] > 0.85


def test_synthetic_interior_has_teeth_above_and_a_darker_cavity(layout):
    lip = torch.tensor([0.7, 0.4, 0.4])
    rgba = synthetic_interior(layout, lip, skin=0.6, teeth_reach=0.55)
    assert rgba.shape == (4, *TEXTURE_SIZE) and bool((rgba[3] == 1).all())
    brightness = luma(rgba[:3].permute(1, 2, 0))
    inside = layout.inside
    h = TEXTURE_SIZE[0]
    top, bottom = brightness[: h // 3][inside[: h // 3]], brightness[h // 3:][inside[h // 3:]]
    deep = layout.bary[..., 0] > 0.8
    # Teeth: brighter than the lips under the upper lip; the back of the mouth: darker.
    assert float(top.quantile(0.9)) > float(luma(lip)) + 0.2
    assert float(brightness[deep & inside].mean()) < 0.5 * float(luma(lip))
    assert float(bottom.max()) < float(top.max())  # no lower row of teeth


def test_upper_teeth_hang_a_fixed_height_below_the_visible_lip():
    # Two frames of a rectangular mouth 100 px wide: 30 px open, and 6 px open (a grin).
    rows, cols, frames = [], [], []
    for f, (top, bottom) in enumerate([(10, 40), (20, 26)]):
        r, c = torch.meshgrid(torch.arange(top, bottom), torch.arange(0, 100), indexing="ij")
        rows.append(r.reshape(-1))
        cols.append(c.reshape(-1))
        frames.append(torch.full((r.numel(),), f))
    row, col, frame = torch.cat(rows), torch.cat(cols), torch.cat(frames)
    corners = torch.tensor([[[0.0, 25.0], [99.0, 25.0]], [[0.0, 23.0], [99.0, 23.0]]])
    share, colour = upper_teeth(row, col, frame, corners, skin=0.6)
    middle = (col - 50).abs() < 10
    # Wide open: teeth in the top ~10 px only; the grin: teeth all the way down.
    assert float(share[middle & (frame == 0) & (row < 17)].min()) == 1.0
    assert float(share[middle & (frame == 0) & (row > 25)].max()) == 0.0
    assert float(share[middle & (frame == 1)].min()) == 1.0
    # Towards the corners the teeth shrink away; gaps make the row uneven, not flat.
    assert float(share[((col == 0) | (col == 99)) & (frame == 0)].max()) == 0.0
    top_row = (frame == 0) & (row == 10) & (col > 20) & (col < 80)
    assert float(luma(colour[top_row]).std()) > 0.01
    assert float(luma(colour[top_row]).mean()) > 0.6


def test_upper_teeth_hang_from_a_smoothed_lip_line():
    """A ragged upper edge (every other strip 3 px lower, as a moustache or the cap's pixel
    steps leave it): the teeth's lower edge runs smooth along the mouth, not in 3 px steps
    (strip by strip it did: a broken white zig-zag)."""
    rows, cols = [], []
    for c in range(100):
        top = 10 + 3 * (c % 2)
        r = torch.arange(top, 40)
        rows.append(r)
        cols.append(torch.full_like(r, c))
    row, col = torch.cat(rows), torch.cat(cols)
    # Corners on whole pixels: one strip per column.
    corners = torch.tensor([[[0.0, 25.0], [100.0, 25.0]]])
    share, _ = upper_teeth(row, col, torch.zeros_like(row), corners, skin=0.6)
    # Per column in the middle, how far down the teeth reach (share above a half).
    reach = torch.stack([row[(col == c) & (share > 0.5)].max() for c in range(30, 70)]).float()
    assert float(reach.diff().abs().max()) <= 1.0, reach
    assert float(share[(col == 50) & (row < 17)].min()) == 1.0


@pytest.mark.parametrize("degrees", [30.0, -50.0])
def test_upper_teeth_follow_a_tilted_mouth(degrees):
    # The 30 px open mouth of the test above on a head tilted in the picture: the teeth hang
    # below the upper lip along the mouth, not down the picture's columns (which drew a white
    # streak across a tilted mouth).
    a = math.radians(degrees)
    along, down = torch.tensor([math.cos(a), math.sin(a)]), torch.tensor([-math.sin(a),
                                                                          math.cos(a)])
    centre = torch.tensor([200.0, 200.0])
    ys, xs = torch.meshgrid(torch.arange(100, 300), torch.arange(100, 300), indexing="ij")
    p = torch.stack([xs.reshape(-1), ys.reshape(-1)], 1).float() - centre
    u, v = p @ along, p @ down  # mouth coordinates: along it, and down from its axis
    inside = (u.abs() < 50) & (v >= -15) & (v < 15)
    row, col = ys.reshape(-1)[inside], xs.reshape(-1)[inside]
    u, v = u[inside], v[inside]
    corners = torch.stack([centre - 50 * along, centre + 50 * along])[None]
    share, _ = upper_teeth(row, col, torch.zeros_like(row), corners, skin=0.6)
    middle = u.abs() < 10
    assert float(share[middle & (v < -9)].min()) == 1.0  # the top 6 px: teeth
    assert float(share[middle & (v > 0)].max()) == 0.0  # the lower half: none


def test_teeth_take_on_a_warm_hue_never_a_cool_one():
    sepia = torch.tensor([1.5, 1.0, 0.6])  # a face far warmer than the reference: sepia teeth
    tint = warm_tint(sepia)
    assert_close(luma(tint), torch.tensor(1.0), atol=1e-6)
    assert_close(tint / tint[0], sepia / sepia[0], atol=1e-6)
    cool = torch.tensor([1.33, 1.39, 1.38])  # the sample portrait's: it tinted teeth green
    assert_close(warm_tint(cool), torch.ones(3), atol=1e-6)
    assert (warm_tint(torch.tensor([1.0, 0.9, 1.2])).diff() <= 0).all()  # never bluer


def test_coefficients_carry_the_mouth(tmp_path, d0_grin, sfm_model):
    frames, _, coeffs = d0_grin
    coeffs.mouth = InteriorCapture(sfm_model)(frames, coeffs)
    path = coeffs.save(tmp_path / "d.npz")
    loaded = Coefficients.load(path)
    assert torch.equal(loaded.mouth, coeffs.mouth)
    assert torch.equal(loaded.frames([1]).mouth, coeffs.mouth[1:])
    assert torch.equal(loaded.with_tensor(loaded.to_tensor()).mouth, coeffs.mouth)
    with pytest.raises(Exception, match="mouth must be"):
        Coefficients.load(path).__class__(**{**vars(loaded), "mouth": coeffs.mouth[:1]})
    source = coeffs.frames([0])
    source.mouth = None
    assert torch.equal(transfer_motion(source, loaded).mouth, loaded.mouth)
    assert transfer_motion(source, loaded, MotionConfig(mouth="off")).mouth is None


def _teeth_share(image: np.ndarray, points: np.ndarray) -> tuple[float, float]:
    """Share of bright, unsaturated pixels (teeth) inside the inner-lip polygon (iBUG 61-68)
    of an ``(H, W, 3)`` uint8 image, in its upper and lower halves."""
    from PIL import Image, ImageDraw

    inner = points[60:68]
    h, w = image.shape[:2]
    ys, _ = np.mgrid[:h, :w]
    polygon = Image.new("1", (w, h))
    ImageDraw.Draw(polygon).polygon([tuple(p) for p in inner.tolist()], fill=1)
    inside = np.array(polygon)
    rgb = image.astype(np.float32) / 255
    bright = (rgb.mean(-1) > 0.55) & (rgb.max(-1) - rgb.min(-1) < 0.3)
    middle = inner[:, 1].mean()
    upper, lower = inside & (ys < middle), inside & (ys >= middle)
    return float(bright[upper].mean()), float(bright[lower].mean())


def test_a_grin_shows_the_drivers_teeth(sfm_model, data_dir, d0_grin):
    """s1 (lips closed) driven to d0's grin: the output's mouth shows teeth in both rows, as
    the driver's does (the synthesised interior has an upper row only; the old dark cap had
    none)."""
    frames, points, coeffs = d0_grin
    image, source = load_source(data_dir / "faces" / "s1.jpg", sfm_model, OutputConfig(size=512))
    coeffs.mouth = InteriorCapture(sfm_model)(frames, coeffs)
    target = transfer_motion(source, coeffs)
    driver_upper, driver_lower = _teeth_share(frames[1], points[1])
    assert driver_upper > 0.2 and driver_lower > 0.2  # the driver does show both rows

    with create_detector("dlib") as detector:
        def shares(config: WarpConfig) -> tuple[float, float]:
            out = to_uint8(WarpRenderer(sfm_model, image, source, config).render(
                target.frames([1])))[0]
            return _teeth_share(out, detector.detect(out)[0].points)

        upper, lower = shares(WarpConfig())
        assert upper > 0.5 * driver_upper and lower > 0.5 * driver_lower
        # The synthesised interior: teeth above only.
        synthetic_upper, synthetic_lower = shares(WarpConfig(driver_interior=False))
        assert synthetic_upper > 0.1 and synthetic_lower < 0.5 * lower


def test_a_raised_chin_keeps_the_drivers_upper_teeth(sfm_model, data_dir, d0_grin):
    """d0's grin on s1 with the head tipped back 20°: the driver's upper teeth still fill the
    upper half of the output's mouth as they do unpitched. The cap's centre sits behind the
    lips; projected, it rode up against them, and the fan from it squeezed the upper teeth into
    a sliver under the lip (share 0.11 against 0.50 unpitched) until the fan was centred on
    the lips in the image (:func:`~faceanime.morphable.mouth.flatten_cap`)."""
    frames, _, coeffs = d0_grin
    image, source = load_source(data_dir / "faces" / "s1.jpg", sfm_model, OutputConfig(size=512))
    coeffs = replace(coeffs, mouth=InteriorCapture(sfm_model)(frames, coeffs))
    target = transfer_motion(source, coeffs).frames([1])
    renderer = WarpRenderer(sfm_model, image, source)
    zero = torch.zeros(1)
    tipped = euler_to_matrix(zero, torch.tensor([math.radians(-20.0)]), zero)
    with create_detector("dlib") as detector:
        def upper_teeth_share(coeffs: Coefficients) -> float:
            out = to_uint8(renderer.render(coeffs))[0]
            return _teeth_share(out, detector.detect(out)[0].points)[0]

        level = upper_teeth_share(target)
        raised = upper_teeth_share(replace(target, rotation=tipped.to(target.rotation)
                                           @ target.rotation))
    assert level > 0.3
    assert raised > 0.7 * level


def test_the_highlight_shoulder_keeps_order_and_stays_under_the_highlight():
    colour = torch.linspace(0.0, 1.5, 301)[:, None].expand(-1, 3)   # gains reach 2: teeth 1.5
    rolled = highlight_shoulder(colour, 0.9)
    below = colour[:, 0] <= 0.8 * 0.9
    assert torch.equal(rolled[below], colour[below])               # shadows and midtones kept
    assert float(rolled.max()) < 0.9                                # under the highlight
    assert bool((rolled[1:, 0] > rolled[:-1, 0]).all())             # shading kept: no flat top
    # Continuous and smooth at the knee (slope 1 on both sides).
    at = torch.tensor([0.72 - 1e-3, 0.72, 0.72 + 1e-3])[:, None].expand(-1, 3)
    slope = highlight_shoulder(at, 0.9)[:, 0].diff() / 1e-3
    assert_close(slope, torch.ones(2), atol=1e-2, rtol=0)
    assert face_highlight(torch.full((10, 3), 2.0)) == 1.0 and face_highlight(
        torch.zeros(0, 3)) == 1.0


def test_a_pale_photos_teeth_keep_their_shading(sfm_model, data_dir, d0_grin):
    """s42 (pale skin, luma 0.85) driven to d0's grin: the driver's teeth, brought to her skin's
    brightness, came out above 1 and were clipped: 14 % of the pixels inside the output's inner
    lips had a channel at 254-255, flat white patches (the driver: none). Now they roll off
    below her face's brightest skin and keep the teeth's shading."""
    from PIL import Image, ImageDraw

    frames, _, coeffs = d0_grin
    coeffs = replace(coeffs, mouth=InteriorCapture(sfm_model)(frames, coeffs))
    image, source = load_source(data_dir / "faces" / "s42.jpg", sfm_model,
                                OutputConfig(size=512))
    renderer = WarpRenderer(sfm_model, image, source)
    out = to_uint8(renderer.render(transfer_motion(source, coeffs).frames([1])))[0]
    with create_detector("dlib") as detector:
        inner = detector.detect(out)[0].points[60:68]
    polygon = Image.new("1", out.shape[1::-1])
    ImageDraw.Draw(polygon).polygon([tuple(p) for p in inner.tolist()], fill=1)
    mouth = out[np.array(polygon)].astype(np.float32)
    assert len(mouth) > 500
    assert float((mouth >= 254).any(-1).mean()) < 0.005
    # Still teeth: a bright, shaded band, as the driver's (luma spread 38).
    assert float(mouth.max()) > 0.85 * 255 * renderer.highlight
    assert float(mouth.mean(-1).std()) > 30


@pytest.fixture(scope="module")
def d19_by_d3_o(data_dir, sfm_model):
    """d19 (a wide yawn) and its coefficients driven to d3's narrow "O" (frame 310)."""
    frames, points = _frames_and_points(data_dir, "d3.mp4", (0, 310))
    coeffs = fit_landmarks(sfm_model, points, frames.shape[1:3])
    coeffs.mouth = InteriorCapture(sfm_model)(frames, coeffs)
    image, source = load_source(data_dir / "faces" / "d19.jpg", sfm_model,
                                OutputConfig(size=512))
    return image, source, transfer_motion(source, coeffs).frames([1])


def test_a_yawn_narrowed_to_an_o_fetches_no_line_down_the_mouth(sfm_model, d19_by_d3_o):
    """d19's yawn driven to d3's "O" (its cap 1.15 times the photo's): taller than the
    photo's rows down the middle, the mouth showed the rows' continuation, the darkest line
    between d19's lips, fetched by 18-20 output rows in a column: a dark band of vertical
    stripes (the interior only fades in from 1 to 1.5 times the photo's cap). What it does
    not cover yet is now the cap's fan over the photo's own mouth: down the mouth's middle
    every row fetches a different row of the photo, and the fan joins the rows smoothly."""
    image, source, target = d19_by_d3_o
    renderer = WarpRenderer(sfm_model, image, source)
    (x0, y0, _, _), positions, _ = renderer.flow(target)
    screen = renderer._screen(target)[0]
    top, bottom = screen[renderer.mesh.landmark_indices[[62, 66]], :2]   # inner lips' middles
    assert float(bottom[1] - top[1]) > 50                                # a tall "O"
    for dx in (-10, 0, 10):
        x = round(float(top[0] + bottom[0]) / 2) + dx - x0
        fetched = positions[0, 1, int(top[1]) + 1 - y0:int(bottom[1]) - y0, x]
        flat = (fetched.diff().abs() < 0.05).int().tolist()
        longest = max(len(run) for run in "".join(map(str, flat)).split("0"))
        assert longest <= 2, (dx, longest)
        # Where the rows meet the fan, their fetches are joined, not a jump back up the photo
        # (5.4-5.8 px unsmoothed: a jagged dark line across the mouth).
        assert float(fetched.diff().abs().max()) < 2.5, dx


def test_flattened_cap_centres_the_fan_and_keeps_its_depth(cap):
    screen = torch.randn(2, cap.model.n_vertices, 3)
    flat = flatten_cap(screen, cap)
    assert_close(flat[:, cap.centre, :2], screen[:, cap.loop, :2].mean(1))
    assert_close(flat[:, cap.centre, 2], screen[:, cap.centre, 2])
    others = torch.arange(cap.model.n_vertices) != cap.centre
    assert torch.equal(flat[:, others], screen[:, others])


def test_an_open_mouthed_photo_keeps_its_mouth_on_frame_0(sfm_model, data_dir):
    """d19 shows its open mouth: at zero motion its own mouth is warped, not replaced."""
    image, source = load_source(data_dir / "faces" / "d19.jpg", sfm_model,
                                OutputConfig(size=512))
    out = to_uint8(WarpRenderer(sfm_model, image, source).render(source))[0]
    lips = source.landmarks[0, 48:60].numpy()
    (x0, y0), (x1, y1) = lips.min(0).astype(int) - 4, lips.max(0).astype(int) + 5
    diff = np.abs(out[y0:y1, x0:x1].astype(int) - image[y0:y1, x0:x1].astype(int))
    assert diff.mean() <= 2.0


def test_the_interior_fades_in_at_the_mouths_outline(sfm_model, data_dir):
    """s1 (lips closed) opened wide: the interior's share is 1 deep in the mouth and fractional
    on the cap's outermost pixels (the cap is rasterized without antialiasing; a hard edge
    showed as a jagged white rim of teeth against the lips); with ``mouth_feather=0`` the edge
    is hard, as it was."""
    image, source = load_source(data_dir / "faces" / "s1.jpg", sfm_model, OutputConfig(size=512))
    target = source.frames([0])
    target.jaw = torch.full_like(target.jaw, math.radians(20))

    def shares(config: WarpConfig) -> torch.Tensor:
        _, _, interior = WarpRenderer(sfm_model, image, source, config).flow(target)
        mouth = interior[0, 0]
        inside = mouth > 0
        # The outline: mouth pixels with a non-mouth pixel among their 4 neighbours.
        padded = F.pad(inside[None, None].float(), (1, 1, 1, 1))[0, 0]
        neighbours = (padded[:-2, 1:-1] * padded[2:, 1:-1] * padded[1:-1, :-2]
                      * padded[1:-1, 2:])
        return mouth[inside & (neighbours == 0)], mouth[inside & (neighbours > 0)]

    edge, deep = shares(WarpConfig())
    assert len(edge) > 50 and float(deep.max()) == 1.0
    assert float(edge.mean()) < 0.6
    hard_edge, _ = shares(WarpConfig(mouth_feather=0))
    assert float(hard_edge.min()) == 1.0


def test_the_interior_meets_the_photos_own_mouth_without_steps(sfm_model, data_dir):
    """s1 (lips closed, 1024²) half opened by surprise: inside the mouth, the part of the
    photo's thin cap that it hides (behind the lips) takes the interior and the rest its own
    mouth stretched. Per pixel, that border came out in steps of a few pixels (the photo's
    visibility, nearest-pixel, magnified 3-4 times): neighbouring pixels well inside the mouth
    jumped from the photo to the interior (0.6 and more without ``mouth_blend``). The cap's
    fan centred on the lips in the image (:func:`~faceanime.morphable.mouth.flatten_cap`)
    leaves none of the photo's slit hidden, so there is no such border left even unsmoothed."""
    image, source = load_source(data_dir / "faces" / "s1.jpg", sfm_model,
                                OutputConfig(size=1024))
    target = source.frames([0])
    target.expression = target.expression.clone()
    target.expression[:, 5] += 0.5  # surprise: SFM's blendshape that parts the lips

    def largest_step(config: WarpConfig) -> float:
        _, _, interior = WarpRenderer(sfm_model, image, source, config).flow(target)
        mouth = interior[0, 0]
        # Pixels at least 3 px inside the interior's region: its outline is faded on purpose.
        deep = -F.max_pool2d(-(mouth > 0).float()[None, None], 7, 1, 3)[0, 0] > 0
        dy = (mouth[1:] - mouth[:-1]).abs()[deep[1:] & deep[:-1]]
        dx = (mouth[:, 1:] - mouth[:, :-1]).abs()[deep[:, 1:] & deep[:, :-1]]
        assert len(dx) > 500
        return float(torch.cat([dx, dy]).max())

    assert largest_step(WarpConfig()) < 0.35
    assert largest_step(WarpConfig(mouth_blend=0)) < 0.35


def test_a_mouth_opening_a_hair_keeps_the_photos_lips(sfm_model, data_dir):
    """s1 (lips apart by a hair) opened by 10 % of its cap's area: what its lips hide of the
    cap used to take the interior in full (a white band of synthesised teeth where d3's mouth
    was shut); it now fades in from the photo's opening to 1.5 times it, so the interior's
    share stays small."""
    image, source = load_source(data_dir / "faces" / "s1.jpg", sfm_model, OutputConfig(size=512))
    target = source.frames([0])
    target.expression = target.expression.clone()
    target.expression[:, 5] += 0.06  # surprise: the cap 1.11 times the photo's
    _, _, interior = WarpRenderer(sfm_model, image, source,
                                  WarpConfig(mouth_blend=0)).flow(target)
    assert int((interior > 0).sum()) > 20
    assert float(interior.max()) < 0.3


@pytest.mark.parametrize("photo", ["s12", "s1"])
def test_a_monochrome_photo_shows_the_drivers_mouth_in_its_own_tone(sfm_model, data_dir,
                                                                     d0_grin, photo):
    """d0's grin (pink lips and gums) on s12 (black and white, tinted by hand): the driver's
    mouth is shown in the photo's tone, its colours spreading no further from the face's than
    the photo's own do (it was a vivid pink mouth in a one-tone face: 35 % of the skin's hue
    was not enough). The
    colour photo s1 keeps the driver's colours (the rule does not just desaturate)."""
    frames, _, coeffs = d0_grin
    image, source = load_source(data_dir / "faces" / f"{photo}.jpg", sfm_model,
                                OutputConfig(size=512))
    coeffs.mouth = InteriorCapture(sfm_model)(frames, coeffs)
    target = transfer_motion(source, coeffs).frames([1])
    renderer = WarpRenderer(sfm_model, image, source)
    (x0, y0, x1, y1), _, interior = renderer.flow(target)
    out = to_uint8(renderer.render(target))[0, y0:y1, x0:x1]
    mouth = interior[0, 0].numpy() > 0.9
    assert mouth.sum() > 100

    zx0, zy0, zx1, zy1 = renderer.zbox
    face = renderer.image[:, zy0:zy1, zx0:zx1][:, torch.isfinite(renderer.zbuf)].T
    photo_spread = colour_spread(face)
    shown_colours = torch.from_numpy(out[mouth]).float() / 255
    shown = _ab_distance(torch.cat([face, shown_colours]), len(face))
    if photo == "s12":
        assert photo_spread < MONOCHROME_SPREAD[0]
        assert shown < photo_spread
    else:
        # The driver's pink, adapted to s1's skin only in part, stays further from the face's
        # colour than a monochrome photo's shades ever are (measured 12.0; s12's 6.4, 19.3
        # before).
        assert interior_saturation(photo_spread) == 1.0
        assert shown > MONOCHROME_SPREAD[0]


def test_a_monochrome_photo_darkens_red_tissue_as_its_film_did(sfm_model, data_dir, d0_grin):
    """d0's grin on s12, whose film darkened red (its lips 0.35 of its skin's brightness,
    colour video's 0.65): the gums and lips in the driver's mouth, toned at their luma alone,
    came out twice as bright as s12's own lips (the darker quarter of the mouth's pixels 2.04
    times their luma), a pale blob; they now sit near its lips as in a colour photo (s1 1.13,
    s42 1.01), and the teeth stay as bright as its skin."""
    frames, _, coeffs = d0_grin
    coeffs = replace(coeffs, mouth=InteriorCapture(sfm_model)(frames, coeffs))
    image, source = load_source(data_dir / "faces" / "s12.jpg", sfm_model,
                                OutputConfig(size=512))
    renderer = WarpRenderer(sfm_model, image, source)
    assert red_response(float(luma(renderer.lip_colour)) / renderer.skin) < 0.7
    target = transfer_motion(source, coeffs).frames([1])
    (x0, y0, x1, y1), _, interior = renderer.flow(target)
    out = to_uint8(renderer.render(target))[0, y0:y1, x0:x1]
    shown = luma(torch.from_numpy(out[interior[0, 0].numpy() > 0.9]).float() / 255)
    assert len(shown) > 300
    lips = float(luma(renderer.lip_colour))
    assert float(torch.quantile(shown, 0.25)) < 1.5 * lips
    assert float(torch.quantile(shown, 0.9)) > 0.9 * renderer.skin
    # Colour photos show red as video does.
    assert red_response(REFERENCE_LIP_RATIO) == 1.0 and red_response(0.9) == 1.0


def _ab_distance(colours: torch.Tensor, split: int) -> float:
    """The 90th percentile CIELAB ``(a*, b*)`` distance of ``colours[split:]`` (RGB in [0, 1])
    from the median of ``colours[:split]``."""
    import cv2

    ab = torch.from_numpy(cv2.cvtColor(colours.numpy()[None].astype(np.float32),
                                       cv2.COLOR_RGB2Lab)[0, :, 1:])
    centre = ab[:split].median(0).values
    return float(torch.quantile((ab[split:] - centre).norm(dim=-1), 0.9))


def test_the_drivers_own_lips_at_the_mouths_corners_are_left_out(sfm_model, data_dir, d0_grin):
    """The fit's mouth corners reach past where a driver's lips meet, so the capture's ends
    held the driver's own lips: pasted into another face's mouth, pale wedges inside its lips
    (s1 by d18's frame 92, an "O" with pale lips; docs/img/mouth_corners.png). Texels towards
    the corners that look like the driver's lips now let the synthesised interior through (a
    darker corner); the middle of the mouth, and a grin's ends, keep the driver's."""
    frames, points = _frames_and_points(data_dir, "d18.mp4", (0, 92))
    capture = InteriorCapture(sfm_model)
    # Fitted as when this was found, every landmark alike: with the chin's and mouth's at half
    # weight (the default since) the fitted corners of this "O" reach less far past d18's.
    o_mouth = capture(frames, fit_landmarks(sfm_model, points, frames.shape[1:3],
                                            config=_FULL_WEIGHT))[1, 3]
    grin_frames, _, grin_coeffs = d0_grin
    grin = capture(grin_frames, grin_coeffs)[1, 3]
    h, w = TEXTURE_SIZE
    across = ((torch.arange(w) - (w - 1) / 2) / ((w - 1) / 2)).abs()[None].expand(h, w)
    inside = capture.layout.inside
    ends, middle = inside & (across > 0.85), inside & (across < 0.5)
    for alpha in (o_mouth, grin):
        assert float(alpha[middle].float().mean()) == 255.0      # both mouths wide open
    assert float(o_mouth[ends].float().mean()) < 0.3 * 255
    # 0.92 of it while the fan's centre sat behind the lips; centred on them in the image, the
    # last texels sample the corners themselves, where the grin's lips meet (0.65).
    assert float(grin[ends].float().mean()) > 0.6 * 255


def test_the_skin_beside_the_drivers_mouth_corners_is_left_out(sfm_model, data_dir):
    """Where the fit's mouth corners reach past the driver's, the capture's very ends held the
    skin beside the driver's lips' corners, not its lips: d6's wide-open frames 494, 504 and
    991 kept two thirds and more of those texels, and on a pale photo (s42, its interior
    brought up 1.6 times) they were white wedges at the mouth's corners (looked at). Texels
    there that look like the driver's skin now let the synthesised interior through; the
    middle stays the driver's."""
    want = (494, 504, 991)
    frames, points = _frames_and_points(data_dir, "d6.mp4", want)
    capture = InteriorCapture(sfm_model)
    # Each frame fitted on its own (far apart in the video: no temporal tie between them).
    alpha = torch.cat([capture(frame[None], fit_landmarks(sfm_model, p[None], frames.shape[1:3]))
                       for frame, p in zip(frames, points, strict=True)])[:, 3].float()
    h, w = TEXTURE_SIZE
    across = ((torch.arange(w) - (w - 1) / 2) / ((w - 1) / 2)).abs()[None].expand(h, w)
    inside = capture.layout.inside
    ends, middle = inside & (across > 0.9), inside & (across < 0.5)
    for frame in alpha:
        assert float(frame[middle].mean()) == 255.0
        assert float(frame[ends].mean()) < 0.5 * 255


def test_the_lips_shade_the_mouths_inside_where_they_meet(sfm_model, data_dir):
    """s42 (1024², lips apart by a hair) opened to d18's wide mouth (frame 136, its interior
    captured): the driver's own lit lip edges and cheek walls at the rim of its opening ended in
    a pale band along the outline, brighter than the mouth's inside (1.17 times, measured on the
    pixels 1-3 px in against those 10 px in or more): a cut-out's edge. The lips' shadow makes
    the rim darker than the inside (0.91 times); ``mouth_shadow=0`` restores the pale rim."""
    from faceanime.render.paste import inside_distance

    frames, points = _frames_and_points(data_dir, "d18.mp4", (0, 136))
    # Fitted as when this was found, every landmark alike: at the default's half weight on the
    # chin's and mouth's the pale rim is milder here (0.96 times the inside without the shadow
    # and the photo's own rows), the shadow's effect the same.
    driving = fit_landmarks(sfm_model, points, frames.shape[1:3], config=_FULL_WEIGHT)
    driving.mouth = InteriorCapture(sfm_model)(frames, driving)
    image, source = load_source(data_dir / "faces" / "s42.jpg", sfm_model,
                                OutputConfig(size=1024), fit=_FULL_WEIGHT)
    target = transfer_motion(source, driving, model=sfm_model).frames([1])

    def rim_over_inside(config: WarpConfig) -> float:
        renderer = WarpRenderer(sfm_model, image, source, config)
        (x0, y0, x1, y1), _, interior = renderer.flow(target)
        out = renderer.render(target)[:, :, y0:y1, x0:x1]
        brightness = luma(out[0].permute(1, 2, 0))
        depth = inside_distance(interior > 0.5, 12)[0, 0]
        rim, inside = brightness[(depth >= 1) & (depth <= 3)], brightness[depth >= 10]
        assert len(rim) > 300 and len(inside) > 1000
        return float(rim.mean() / inside.mean())

    shaded = rim_over_inside(WarpConfig())
    assert shaded < 0.97
    # The shadow darkens the rim; without it and without the photo's own rows carried with
    # the lips (``rigid_teeth``: s42's parted lips put their own darker line at the rim), the
    # driver's pale rim comes back.
    assert shaded < rim_over_inside(WarpConfig(mouth_shadow=0.0)) - 0.1
    assert rim_over_inside(WarpConfig(mouth_shadow=0.0, rigid_teeth=False)) > 1.05


def test_the_mouths_outline_is_no_paler_than_the_lips_beside_it(sfm_model, data_dir):
    """s42 (pale skin, red lips, lips apart by a hair) with its jaw opened: where the
    synthesised interior fades in at the outline, the rest of the pixel took the photo's median
    lip colour, read on the outer lip line (lip and pale skin): a pale ring round the mouth,
    115 in luma against 99 for the lips just outside it. It now takes the colour of those
    lips."""
    from scipy import ndimage

    image, source = load_source(data_dir / "faces" / "s42.jpg", sfm_model, OutputConfig(size=512))
    target = source.frames([0, 0])
    target.jaw = target.jaw + torch.tensor([0.15, 0.25])
    renderer = WarpRenderer(sfm_model, image, source)
    (x0, y0, x1, y1), _, interior = renderer.flow(target)
    out = renderer.render(target)[:, :, y0:y1, x0:x1]
    for k in range(2):
        brightness = luma(out[k].permute(1, 2, 0)).numpy()
        mouth = interior[k, 0].numpy() > 0
        outline = mouth & ~ndimage.binary_erosion(mouth)
        beside = ndimage.binary_dilation(mouth) & ~mouth
        assert outline.sum() > 100
        assert brightness[outline].mean() < brightness[beside].mean() + 2 / 255


def test_capture_takes_decoded_frames_as_they_come(sfm_model, d0_grin, recwarn):
    """Frames straight from the decoder are read-only numpy views: captured without torch's
    warning about non-writable arrays, and the same as a writable copy."""
    frames, _, coeffs = d0_grin
    readonly = frames.copy()
    readonly.flags.writeable = False
    capture = InteriorCapture(sfm_model)
    got = capture(readonly, coeffs)
    assert not [w for w in recwarn if "not writable" in str(w.message)]
    assert torch.equal(got, capture(frames.copy(), coeffs))


@pytest.mark.parametrize("cut", [None, "left", "right"])
def test_capture_reads_the_mouths_box_as_it_would_the_whole_frame(sfm_model, d0_grin, cut):
    """The capture converts only the box its samples read: the same interiors as capturing
    from the whole frames, also where the frame ends inside the mouth (its border read)."""
    from faceanime.render.frames import frames_tensor

    frames, _, coeffs = d0_grin
    middle = int(coeffs.landmarks[:, 48:68, 0].mean())
    if cut == "left":       # the frame starts in the mouth's middle
        frames = frames[:, :, middle:]
        coeffs = replace(coeffs, translation=coeffs.translation
                         - torch.tensor([middle, 0.0, 0.0], dtype=coeffs.translation.dtype))
    elif cut == "right":    # ... or ends there
        frames = frames[:, :, :middle]
    capture = InteriorCapture(sfm_model)
    got = capture(frames, coeffs)
    posed = replace(coeffs, brows=torch.zeros_like(coeffs.brows))
    screen = project_vertices(posed, face_vertices(capture.cap.model, posed, jaw=capture.cap.jaw,
                                                   eyelids=capture.eyelids,
                                                   lips=capture.lip_rig))
    screen = flatten_cap(screen, capture.cap)
    whole = capture_interior(frames_tensor(frames), screen, capture.cap, capture.layout,
                             capture.lips, capture.skin)
    x = screen[:, capture.sampled, 0]
    assert bool(x.min() < 0 or x.max() > frames.shape[2]) == (cut is not None)
    assert (got.int() - whole.int()).abs().max() <= 1
    assert (got[:, 3] > 0).any()


def test_sampled_box_is_clipped_to_the_image_and_never_empty():
    from faceanime.render.mouth_interior import sampled_box

    points = torch.tensor([[[10.2, 20.7], [30.5, 25.1]]])
    assert sampled_box(points, (100, 200)) == (8, 18, 34, 29)
    assert sampled_box(points - 500, (100, 200)) == (0, 0, 2, 2)
    assert sampled_box(points + 500, (100, 200)) == (198, 98, 200, 100)
    assert sampled_box(torch.full((1, 2, 2), float("nan")), (100, 200)) == (0, 0, 200, 100)
