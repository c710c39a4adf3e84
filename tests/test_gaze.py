"""Gaze: the iris measured inside the eye's landmarks, transferred, and rendered by the warp."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from faceanime.coefficients import Coefficients
from faceanime.landmarks.gaze import (
    EYES,
    MAX_CHANGE,
    eye_frames,
    eye_openings,
    fill_gaze,
    from_eye,
    measure_frames,
    measure_gaze,
    narrowed,
    to_eye,
)
from faceanime.motion import MotionConfig, transfer_gaze, transfer_motion

# One eye's six landmarks in its own frame (eye widths): corners at u = ±0.5, the lids at
# v = ∓0.14 (an opening of about 0.28 eye widths, an ordinary open eye).
_HEXAGON = torch.tensor([[-0.5, 0.0], [-0.2, -0.14], [0.2, -0.14], [0.5, 0.0], [0.2, 0.14],
                         [-0.2, 0.14]])


def synthetic_eyes(irises: torch.Tensor, angle: float = 0.0, width: float = 60.0,
                   lashes: bool = True, opening: float = 1.0
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``(1, 3, 240, 320)`` skin image with two eyes (white almonds, a dark iris of 0.36 eye
    widths at ``irises (2, 2)`` in each eye's frame, lashes along the upper lids) and its
    ``(1, 68, 2)`` landmarks (only the eyes' twelve finite), the face turned by ``angle``
    degrees in the image plane."""
    h, w = 240, 320
    a = math.radians(angle)
    axes = torch.tensor([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    centres = torch.tensor([[160.0, 120.0]]) + torch.tensor([[-0.9, 0.0], [0.9, 0.0]]) \
        * width @ axes
    hexagon = _HEXAGON * torch.tensor([1.0, opening])
    landmarks = torch.full((1, 68, 2), float("nan"))
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32),
                            torch.arange(w, dtype=torch.float32), indexing="ij")
    pixels = torch.stack([xs, ys], -1)                                      # (h, w, 2)
    image = torch.tensor([0.80, 0.62, 0.52])[:, None, None].expand(3, h, w).clone()
    for e in range(2):
        landmarks[0, list(EYES[e])] = centres[e] + hexagon * width @ axes
        local = (pixels - centres[e]) @ axes.T / width                      # (h, w, 2)
        # The almond: inside both lids' parabolas through the corners.
        lid = 0.14 * opening * (1 - (2 * local[..., 0]) ** 2) / 0.84 * 1.05
        white = (local[..., 0].abs() < 0.5) & (local[..., 1].abs() < lid)
        image[:, white] = torch.tensor([0.92, 0.90, 0.88])[:, None]
        iris = ((local - irises[e]).norm(dim=-1) < 0.18) & white
        image[:, iris] = torch.tensor([0.25, 0.18, 0.12])[:, None]
        if lashes:
            line = white & (local[..., 1] < -lid + 0.025)
            image[:, line] = torch.tensor([0.08, 0.06, 0.05])[:, None]
    return image[None], landmarks


@pytest.mark.parametrize("angle", [0.0, 18.0])
@pytest.mark.parametrize("u", [-0.15, 0.0, 0.12])
def test_the_iris_centre_is_found_in_the_eyes_frame(u, angle):
    irises = torch.tensor([[u, 0.02], [u + 0.03, 0.0]])
    image, landmarks = synthetic_eyes(irises, angle)
    gaze = measure_gaze(image, landmarks)[0]
    # Horizontally within 0.02 eye widths (1.2 px here) despite the lash line; vertically the
    # lids clip the iris, and the lashes pull up, so within 0.04.
    assert (gaze[:, 0] - irises[:, 0]).abs().max() < 0.02, gaze
    assert (gaze[:, 1] - irises[:, 1]).abs().max() < 0.04, gaze


def test_a_closed_or_missing_eye_is_not_measured():
    image, landmarks = synthetic_eyes(torch.zeros(2, 2), opening=0.3)
    assert torch.isnan(measure_gaze(image, landmarks)).all()
    image, landmarks = synthetic_eyes(torch.zeros(2, 2))
    landmarks[0, 40] = float("nan")
    gaze = measure_gaze(image, landmarks)[0]
    assert torch.isnan(gaze[0]).all() and torch.isfinite(gaze[1]).all()


def test_eye_frames_round_trip():
    _, landmarks = synthetic_eyes(torch.zeros(2, 2), angle=25.0)
    _, _, width = eye_frames(landmarks)
    assert torch.allclose(width, torch.full((1, 2), 60.0), atol=1e-3)
    points = torch.rand(1, 2, 5, 2) * 100
    assert torch.allclose(from_eye(to_eye(points, landmarks), landmarks), points, atol=1e-3)
    # v points down the image when the eye is level.
    _, level = synthetic_eyes(torch.zeros(2, 2))
    assert torch.allclose(eye_frames(level)[1][0, 0, 1], torch.tensor([0.0, 1.0]))


def test_openings_are_the_hexagons_area_and_narrowed_is_against_the_open_state():
    _, landmarks = synthetic_eyes(torch.zeros(2, 2), angle=30.0)
    # The hexagon: two trapezoids of widths 1 and 0.4, 0.14 high each.
    assert torch.allclose(eye_openings(landmarks), torch.full((1, 2), 0.196), atol=1e-4)
    _, half = synthetic_eyes(torch.zeros(2, 2), opening=0.5)
    track = torch.cat([landmarks] * 8 + [half, landmarks])                   # (10, 68, 2)
    flags = narrowed(track)
    assert flags[8].all() and not flags[[0, 9]].any()
    # Against the open state, not the median: a track lowered most of the time still flags
    # its lowered frames.
    mostly = torch.cat([half] * 7 + [landmarks] * 3)
    assert narrowed(mostly)[:7].all() and not narrowed(mostly)[7:].any()


def test_gaps_are_filled_from_their_neighbours_and_the_ends_held():
    track = torch.full((6, 2, 2), float("nan"))
    track[1] = 0.1
    track[4] = 0.4
    filled = fill_gaze(track, sigma=0.0)
    assert torch.allclose(filled[:, 0, 0], torch.tensor([0.1, 0.1, 0.2, 0.3, 0.4, 0.4]))
    assert torch.equal(fill_gaze(torch.full((3, 2, 2), float("nan"))), torch.zeros(3, 2, 2))


def test_real_glances_of_d6_are_measured_left_and_right(data_dir):
    """d6's frame 1004 looks hard to the image's left, frame 360 to its right (seen in the
    frames), frame 0 at the camera: both eyes' change says so, by over a tenth of an eye."""
    from faceanime.io.media import iter_video_frames
    from faceanime.landmarks import detect_landmarks
    from faceanime.render.frames import frames_tensor

    wanted = (0, 360, 1004)
    frames = [f for i, f in enumerate(iter_video_frames(data_dir / "videos" / "d6.mp4"))
              if i in wanted]
    points = torch.from_numpy(np.stack([detect_landmarks(f).points for f in frames]))
    gaze = measure_gaze(frames_tensor(np.stack(frames)), points)
    assert torch.isfinite(gaze).all()
    # Measured on the eyes' box of the uint8 frames alone: the same (a sample's rounding).
    boxed, _ = measure_frames(torch.from_numpy(np.stack(frames)), points)
    assert (boxed - gaze).abs().max() < 0.03
    change = gaze[1:, :, 0] - gaze[:1, :, 0]                                   # (2, 2)
    assert (change[0] > 0.1).all(), change      # 360: right
    assert (change[1] < -0.1).all(), change     # 1004: left


def test_transfer_is_the_drivers_mean_change_or_its_own_gaze():
    source = torch.tensor([[[0.05, 0.0], [0.0, 0.01]]])
    driving = torch.tensor([[[0.0, 0.0], [0.0, 0.0]], [[0.1, 0.02], [0.2, 0.04]],
                            [[float("nan"), float("nan")], [-0.1, 0.0]]])
    relative = transfer_gaze(source, driving, 0)
    assert torch.allclose(relative[1], source[0] + torch.tensor([0.15, 0.03]))
    # An eye not measured: the other's change; the reference frame is the photo itself.
    assert torch.allclose(relative[2], source[0] + torch.tensor([-0.1, 0.0]))
    assert torch.allclose(relative[0], source[0])
    # Absolute motion moves the gaze by the same change: two faces' irises are not comparable.
    assert torch.equal(transfer_gaze(source, driving, 0, "absolute"), relative)
    assert transfer_gaze(source, driving, 0, "off") is None
    assert transfer_gaze(None, driving, 0) is None


def _coeffs(t: int, gaze: torch.Tensor | None) -> Coefficients:
    return Coefficients(model="m", shape=torch.zeros(3), expression=torch.zeros(t, 2),
                        jaw=torch.zeros(t), rotation=torch.eye(3).expand(t, 3, 3).clone(),
                        translation=torch.zeros(t, 3), scale=torch.ones(t), gaze=gaze)


def test_transfer_motion_carries_gaze_with_the_lids_and_the_files_keep_it(tmp_path):
    source = _coeffs(1, torch.zeros(1, 2, 2))
    driving = _coeffs(3, torch.linspace(0, 0.2, 3)[:, None, None].expand(3, 2, 2).clone())
    target = transfer_motion(source, driving)
    assert torch.allclose(target.gaze[:, 0, 0], torch.tensor([0.0, 0.1, 0.2]))
    assert transfer_motion(source, driving, MotionConfig(gaze=False)).gaze is None
    assert transfer_motion(source, driving, MotionConfig(eyes="off")).gaze is None
    path = target.save(tmp_path / "c.npz")
    assert torch.equal(Coefficients.load(path).gaze, target.gaze)
    # Files written before gaze read as not measured.
    assert Coefficients.load(replace(target, gaze=None).save(tmp_path / "d.npz")).gaze is None
    with pytest.raises(Exception, match="gaze must be"):
        _coeffs(2, torch.zeros(2, 2))


@pytest.fixture(scope="module")
def s42_eyes(data_dir, sfm_model):
    """faces/s42.jpg (wide open eyes), its fit with its measured gaze, and its warp."""
    from faceanime.jobs.common import OutputConfig, load_source
    from faceanime.render.warp import WarpRenderer

    image, source = load_source(data_dir / "faces" / "s42.jpg", sfm_model,
                                OutputConfig(size=512, progress=False))
    return image, source, WarpRenderer(sfm_model, image, source)


def test_the_photo_gets_its_gaze_measured(s42_eyes):
    _, source, _ = s42_eyes
    assert source.gaze is not None and torch.isfinite(source.gaze).all()
    assert (source.gaze[..., 0].abs() < 0.15).all()      # s42 looks at the camera


@pytest.mark.parametrize("change", [(0.1, 0.0), (-0.1, 0.0), (0.0, 0.06)])
def test_the_warp_moves_the_iris_by_the_asked_change_and_nothing_else(s42_eyes, change):
    from faceanime.render.frames import frames_tensor

    image, source, renderer = s42_eyes
    still = source.frames([0])
    moved = replace(still, gaze=still.gaze + torch.tensor(change))
    plain = renderer.render(replace(still, gaze=None))
    out = renderer.render(moved)
    # Zero motion with no gaze change is the photo.
    assert (plain - frames_tensor(image[None])).abs().mean() < 0.5 / 255
    assert torch.equal(renderer.render(still), plain)
    # The iris, measured again in the output, moved by the change (the photo's own
    # measurement error cancels: same landmarks, same method).
    measured = measure_gaze(out, source.landmarks) - measure_gaze(plain, source.landmarks)
    target = torch.tensor(change).expand(2, 2)
    assert (measured[0, :, 0] - target[:, 0]).abs().max() < 0.03, measured
    # Across the lids the visible iris is clipped by them and the slide fades: at least a
    # third of the change shows, the right way.
    assert (measured[0, :, 1] * target[:, 1] >= target[:, 1] ** 2 / 3).all(), measured
    assert (measured[0, :, 1] - target[:, 1]).abs().max() < 0.04, measured
    # Outside the eyes' openings (grown by their height), nothing changed.
    eyes = source.landmarks[0, 36:48]
    low, high = eyes.amin(0) - 12, eyes.amax(0) + 12
    ys, xs = torch.meshgrid(torch.arange(image.shape[0]), torch.arange(image.shape[1]),
                            indexing="ij")
    box = (xs >= low[0]) & (xs <= high[0]) & (ys >= low[1]) & (ys <= high[1])
    assert torch.equal(out[0][:, ~box], plain[0][:, ~box])
    # The corners stay (the white beside them stretches from nothing there).
    for corner in source.landmarks[0, [36, 39, 42, 45]]:
        x, y = corner.round().long().tolist()
        assert (out[0, :, y, x] - plain[0, :, y, x]).abs().max() < 0.03


def test_a_change_beyond_what_the_photo_can_show_is_capped(s42_eyes):
    _, source, renderer = s42_eyes
    still = source.frames([0])
    capped = renderer.render(replace(still, gaze=still.gaze + torch.tensor([MAX_CHANGE[0],
                                                                            0.0])))
    beyond = renderer.render(replace(still, gaze=still.gaze + torch.tensor([0.6, 0.0])))
    assert torch.equal(capped, beyond)


def test_the_drivers_frames_give_mouth_and_gaze_in_one_pass(data_dir, sfm_model):
    """capture_driver over d0 (78 frames): an interior and a gaze per frame; frames the video
    lacks (a coefficient track two frames longer) get no interior and the last gaze held."""
    from faceanime.capture import capture_driver
    from faceanime.fitting import fit_video
    from faceanime.landmarks import TrackerConfig, track_video
    from faceanime.render.mouth_interior import InteriorCapture

    video = data_dir / "videos" / "d0.mp4"
    coeffs = fit_video(video, sfm_model, track_video(video, TrackerConfig(progress=False)))
    longer = coeffs.frames(list(range(coeffs.n_frames)) + [coeffs.n_frames - 1] * 2)
    out = capture_driver(video, longer, InteriorCapture(sfm_model), batch_size=16)
    assert out.mouth.shape[0] == 80 and out.gaze.shape == (80, 2, 2)
    assert torch.isfinite(out.gaze).all()
    assert out.mouth[:78, 3].any()
    assert not out.mouth[78:].any()
    assert torch.allclose(out.gaze[78:], out.gaze[77:78].expand(2, 2, 2), atol=0.02)
    # Without an interior capture and gaze off: nothing is decoded or set.
    plain = coeffs.frames(slice(0, 5))
    assert capture_driver(video, plain, None, gaze=False).gaze is None


def test_the_swapped_eyes_look_where_the_targets_do(data_dir, sfm_model, d3_track):
    """s42 swapped onto d3's frame 328 (d3 looks a quarter of an eye to the right there): the
    swapped irises, measured in the output at the target's landmarks, lie nearer the target's
    than without gaze."""
    from faceanime.fitting import fit_image, fit_video
    from faceanime.io import iter_video_frames, read_image
    from faceanime.jobs.swap import reference_frames
    from faceanime.render.frames import frames_tensor
    from faceanime.render.swap import SwapRenderConfig, SwapRenderer

    video = data_dir / "videos" / "d3.mp4"
    target = fit_video(video, sfm_model, d3_track)
    image = read_image(data_dir / "faces" / "s42.jpg")
    source = fit_image(image, sfm_model)
    source.gaze = measure_gaze(frames_tensor(image[None]), source.landmarks)
    reference, picks = reference_frames(video, target, 4)
    frame = next(f for i, f in enumerate(iter_video_frames(video)) if i == 328)
    pixels, at = frames_tensor([frame]), target.frames([328])
    truth = measure_gaze(pixels, at.landmarks)[0, :, 0]
    outputs = {}
    for gaze in (False, True):
        renderer = SwapRenderer(sfm_model, image, source, reference, target.frames(picks),
                                SwapRenderConfig(gaze=gaze))
        outputs[gaze] = renderer.render_frames(pixels, at)[0]
    before = measure_gaze(outputs[False], at.landmarks)[0, :, 0]
    after = measure_gaze(outputs[True], at.landmarks)[0, :, 0]
    assert ((after - truth).abs() < (before - truth).abs() - 0.05).all(), (truth, before, after)
    # Away from the eyes nothing changed.
    eyes = at.landmarks[0, 36:48]
    low, high = eyes.amin(0) - 20, eyes.amax(0) + 20
    outside = outputs[True].clone()
    outside[..., int(low[1]):int(high[1]), int(low[0]):int(high[0])] = 0
    inside = outputs[False].clone()
    inside[..., int(low[1]):int(high[1]), int(low[0]):int(high[0])] = 0
    assert torch.equal(outside, inside)
