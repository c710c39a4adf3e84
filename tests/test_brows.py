"""The brow rig: each brow's inner and outer half raised or lowered, its inner half drawn in
(rigged, fitted, transferred and drawn)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from faceanime.coefficients import Coefficients
from faceanime.fitting.brows import fit_brows
from faceanime.morphable.brows import (
    BROW_UNIT,
    BROWS_IN_RANGE,
    BROWS_RANGE,
    apply_brows,
    bound_brows,
    build_brows,
)
from tests.helpers import assert_close, posed_mean_face, projected_landmarks


@pytest.fixture(scope="module")
def brows(sfm_model):
    return build_brows(sfm_model)


def _brow_heights(points: torch.Tensor) -> torch.Tensor:
    """``(T, 68, 2)`` -> ``(T, 2)`` each brow's height above its eye's corners (image y points
    down), over the outer eye corners' distance: the corners do not move with the lids."""
    iod = (points[:, 36] - points[:, 45]).norm(dim=-1)
    left = points[:, [36, 39], 1].mean(1) - points[:, 17:22, 1].mean(1)
    right = points[:, [42, 45], 1].mean(1) - points[:, 22:27, 1].mean(1)
    return torch.stack([left, right], 1) / iod[:, None]


def test_a_raised_brow_moves_up_alone(sfm_model, brows):
    """Both halves of the first brow at raise 1: its landmarks (iBUG 18-22, 1-based) move up by
    BROW_UNIT inter-ocular distances, nothing else; the other brow, the eyes (corners and lids),
    the nose, the mouth and the forehead's top stay. Its inner half alone: the inner end (22)
    moves in full, the outer end (18) not at all, the middle (20) half way."""
    ids = sfm_model.landmark_indices
    mean = sfm_model.mean
    iod = float((mean[ids[36]] - mean[ids[45]]).norm())
    move = apply_brows(mean[None], torch.tensor([[1.0, 1.0, 0.0, 0.0]]), brows.offsets)[0] - mean
    assert float(move[:, [0, 2]].abs().max()) == 0.0
    assert_close(move[ids[17:22], 1], torch.full((5,), BROW_UNIT * iod), atol=1e-4)
    assert float(move[ids[22:27]].abs().max()) < 1e-3 * iod
    for still in (36, 37, 38, 39, 41, 27, 30, 33, 48, 57, 8):
        assert float(move[ids[still]].norm()) < 1e-3 * iod, still
    top = mean[:, 1] > float(mean[ids[19], 1]) + 0.45 * iod
    assert float(move[top].abs().max()) == 0.0
    lowered = apply_brows(mean[None], torch.tensor([[0.0, 0.0, -1.0, -1.0]]),
                          brows.offsets)[0] - mean
    assert_close(lowered[ids[22:27], 1], torch.full((5,), -BROW_UNIT * iod), atol=1e-4)
    inner = apply_brows(mean[None], torch.tensor([[1.0, 0.0, 0.0, 0.0]]), brows.offsets)[0] - mean
    assert float(inner[ids[21], 1]) == pytest.approx(BROW_UNIT * iod, rel=1e-4)
    assert abs(float(inner[ids[17], 1])) < 1e-4 * iod
    assert 0.3 < float(inner[ids[19], 1]) / (BROW_UNIT * iod) < 0.7


def test_a_brow_drawn_in_moves_towards_the_other(sfm_model, brows):
    """Each brow's third part at 1: its inner end (iBUG 22, 23, 1-based) moves BROW_UNIT
    inter-ocular distances sideways towards the face's middle, its outer end not at all, its
    middle half way; nothing moves up or down or in depth; the eyes, the nose and the mouth
    stay; the two brows' motions mirror each other, so drawn in alike the brows' inner gap
    narrows by twice the unit."""
    ids = sfm_model.landmark_indices
    mean = sfm_model.mean
    iod = float((mean[ids[36]] - mean[ids[45]]).norm())
    middle = float(mean[ids[[21, 22]], 0].mean())
    for part, (inner, outer, centre) in ((4, (21, 17, 19)), (5, (22, 26, 24))):
        amounts = torch.zeros(1, 6)
        amounts[0, part] = 1.0
        move = apply_brows(mean[None], amounts, brows.offsets)[0] - mean
        assert float(move[:, 1:].abs().max()) == 0.0
        towards = 1.0 if float(mean[ids[inner], 0]) < middle else -1.0
        assert float(move[ids[inner], 0]) * towards == pytest.approx(BROW_UNIT * iod, rel=1e-4)
        assert abs(float(move[ids[outer], 0])) < 1e-4 * iod
        assert 0.3 < float(move[ids[centre], 0]) * towards / (BROW_UNIT * iod) < 0.7
        for still in (36, 39, 42, 45, 37, 44, 27, 30, 33, 48, 57, 8):
            assert float(move[ids[still]].norm()) < 1e-3 * iod, still
    both = apply_brows(mean[None], torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0, 1.0]]),
                       brows.offsets)[0]
    gap = float((both[ids[21]] - both[ids[22]]).norm() - (mean[ids[21]] - mean[ids[22]]).norm())
    assert gap == pytest.approx(-2 * BROW_UNIT * iod, rel=1e-3)


def test_known_raises_are_fitted_back(sfm_model):
    """Ground truth: the mean face turned and tilted, drawn with known raises (each brow its
    own, up and down); from its projected landmarks each frame's raises come back exactly (the
    points are linear in them), tied between frames or not; out of range they are bounded;
    the fit without the rig (``brows=False``) leaves them at 0, and the fit's reported brow
    landmarks are what a renderer draws."""
    from faceanime.fitting import fit_landmarks
    from faceanime.fitting.fitter import FitConfig

    truth = torch.tensor([[-1.0, 0.5, 0.3, 0.3, 0.5, 0.2], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                          [0.8, 0.8, -0.4, 1.0, -0.5, 1.0], [2.0, -1.0, 1.0, 1.5, 1.2, 0.0]])
    coeffs = posed_mean_face(sfm_model, 4)
    coeffs.landmarks = projected_landmarks(sfm_model, replace(coeffs, brows=truth))
    assert_close(fit_brows(sfm_model, coeffs, temporal_weight=0.0), truth, atol=1e-3)
    still = torch.tensor([[1.2, 0.4, -0.6, 0.0, 0.7, 0.7]])
    steady = replace(coeffs, landmarks=projected_landmarks(sfm_model, replace(
        coeffs, brows=still.expand(4, 6).clone())))
    assert_close(fit_brows(sfm_model, steady, temporal_weight=5.0), still.expand(4, 6),
                 atol=1e-3)
    high = replace(coeffs, landmarks=projected_landmarks(sfm_model, replace(
        coeffs, brows=torch.full((4, 6), 6.0))))
    bounded = fit_brows(sfm_model, high)
    assert bounded[:, :4].max() == BROWS_RANGE[1] and bounded[:, 4:].max() == BROWS_IN_RANGE[1]
    assert torch.equal(fit_brows(sfm_model, replace(coeffs, landmarks=None)), torch.zeros(4, 6))
    fitted = fit_landmarks(sfm_model, coeffs.landmarks, (512, 512))
    assert_close(fitted.fitted_landmarks[:, 17:27],
                 projected_landmarks(sfm_model, fitted)[:, 17:27], atol=0.05)
    plain = fit_landmarks(sfm_model, coeffs.landmarks, (512, 512), FitConfig(brows=False))
    assert float(plain.brows.abs().max()) == 0.0


def test_d3s_brows_are_followed(sfm_model, d3_track):
    """d3 (354 frames, talking, frowning and raising her brows): the six emotions left a
    vertical error at the brows' landmarks of 0.016 inter-ocular distances (root mean square);
    with the brow rig it is 0.0065 (0.009 with one raise per brow, the halves moving
    together). The fitted brows' height above the eye corners then follows dlib's with a
    correlation of 0.95 (0.84 without)."""
    from faceanime.fitting import fit_landmarks
    from faceanime.fitting.fitter import FitConfig

    points = torch.from_numpy(d3_track.points)

    def errors(config: FitConfig) -> tuple[float, float]:
        coeffs = fit_landmarks(sfm_model, points, (512, 512), config, fps=30)
        detected, fitted = coeffs.landmarks, coeffs.fitted_landmarks
        iod = (detected[:, 36] - detected[:, 45]).norm(dim=-1)[:, None]
        vertical = (detected[:, 17:27, 1] - fitted[:, 17:27, 1]) / iod
        a, b = _brow_heights(detected).mean(1), _brow_heights(fitted).mean(1)
        corr = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
        return float(vertical.square().mean().sqrt()), corr

    rms, corr = errors(FitConfig())
    rms_before, corr_before = errors(FitConfig(brows=False))
    assert rms < 0.5 * rms_before
    assert corr > 0.93 and corr > corr_before + 0.05


def test_d3s_frown_draws_the_brows_together(sfm_model, d3_track):
    """d3 frowns (the brows' inner ends 0.16-0.27 inter-ocular distances apart in dlib's
    points): with raises alone the fitted inner gap followed dlib's with a correlation of 0.71
    and half its spread (standard deviation 0.012 against 0.026); the brows drawn in follow it
    at 0.98, with 0.84 of its spread."""
    from faceanime.fitting import fit_landmarks

    points = torch.from_numpy(d3_track.points).double()
    coeffs = fit_landmarks(sfm_model, points.float(), (512, 512), fps=30)
    fitted = coeffs.fitted_landmarks.double()

    def inner_gap(p: torch.Tensor) -> torch.Tensor:
        return (p[:, 21] - p[:, 22]).norm(dim=-1) / (p[:, 36] - p[:, 45]).norm(dim=-1)

    real, fit = inner_gap(points), inner_gap(fitted)
    assert float(torch.corrcoef(torch.stack([real, fit]))[0, 1]) > 0.93
    assert float(fit.std() / real.std()) > 0.7


def test_the_photo_takes_the_drivers_change_of_brows(sfm_model, s1_photo):
    """Relative transfer adds the driver's change from its reference frame to the photo's own
    raises (bounded); absolute takes the driver's; without the expression the photo's stay."""
    from faceanime.motion import MotionConfig, transfer_motion

    _, source = s1_photo
    source = replace(source, brows=torch.tensor([[0.2, 0.0, -0.3, 0.1, 0.4, -0.2]]))
    driving = posed_mean_face(sfm_model, 3)
    driving.shape = source.shape.clone()
    driving.image_size = source.image_size
    driving.brows = torch.tensor([[0.1, 0.1, 0.1, 0.1, 0.0, 0.0], [1.1, 0.6, -0.4, 0.1, 0.5, 0.3],
                                  [0.1, 0.1, 9.0, 0.1, 0.0, -9.0]])
    relative = transfer_motion(source, driving, model=sfm_model).brows
    assert_close(relative, torch.tensor([[0.2, 0.0, -0.3, 0.1, 0.4, -0.2],
                                         [1.2, 0.5, -0.8, 0.1, 0.9, 0.1],
                                         [0.2, 0.0, BROWS_RANGE[1], 0.1, 0.4, BROWS_IN_RANGE[0]]]))
    absolute = transfer_motion(source, driving, MotionConfig(mode="absolute")).brows
    assert_close(absolute, bound_brows(driving.brows))
    assert float(absolute[2, 5]) == BROWS_IN_RANGE[0] and float(absolute[2, 2]) == BROWS_RANGE[1]
    kept = transfer_motion(source, driving, MotionConfig(expression=False)).brows
    assert_close(kept, source.brows.expand(3, 6))


def test_a_raised_brow_is_drawn_raised(sfm_model, data_dir):
    """s42 (512²) rendered by the warp at its own raises and with both brows 2.5 higher (a
    clearly raised brow), then 1.5 lower (a frown), nothing else changed: dlib reads the
    rendered brows higher above the eyes, then lower, by more than half the rig's motion each
    (measured: 0.091 and 0.072 inter-ocular distances for the rig's 0.125 and 0.075; s1's
    brows, under her fringe, read 0.066 and nothing)."""
    from faceanime.jobs.common import OutputConfig, load_source
    from faceanime.landmarks import create_detector
    from faceanime.render.frames import to_uint8
    from faceanime.render.warp import WarpRenderer

    image, source = load_source(data_dir / "faces" / "s42.jpg", sfm_model,
                                OutputConfig(size=512))
    renderer = WarpRenderer(sfm_model, image, source)
    target = source.frames([0, 0, 0])
    target.brows = source.brows[0] + torch.tensor([[0.0], [2.5], [-1.5]])
    frames = to_uint8(renderer.render(target))
    with create_detector("dlib") as detector:
        points = torch.from_numpy(np.stack([detector.detect(f)[0].points for f in frames]))
    heights = _brow_heights(points.double()).mean(1)
    assert float(heights[1] - heights[0]) > 0.5 * 2.5 * BROW_UNIT
    assert float(heights[0] - heights[2]) > 0.5 * 1.5 * BROW_UNIT


def test_brows_drawn_in_are_drawn_closer(sfm_model, data_dir):
    """d19 (720², dark brows) rendered by the warp at its own brows and with both brows drawn
    in by 1.5 (a frown: 0.075 inter-ocular distances each), nothing else changed: dlib reads
    the rendered brows' inner ends closer by more than 0.4 of the rig's motion (measured: 0.085
    for the rig's 0.15; s12 0.076, s42 0.082: dlib's brow points follow a frown about half
    way, as they do a raise)."""
    from faceanime.jobs.common import OutputConfig, load_source
    from faceanime.landmarks import create_detector
    from faceanime.render.frames import to_uint8
    from faceanime.render.warp import WarpRenderer

    image, source = load_source(data_dir / "faces" / "d19.jpg", sfm_model,
                                OutputConfig(size=512))
    renderer = WarpRenderer(sfm_model, image, source)
    target = source.frames([0, 0])
    target.brows = target.brows.clone()
    target.brows[1, 4:] += 1.5
    frames = to_uint8(renderer.render(target))
    with create_detector("dlib") as detector:
        points = torch.from_numpy(np.stack([detector.detect(f)[0].points for f in frames]))
    points = points.double()
    gap = (points[:, 21] - points[:, 22]).norm(dim=-1) / (points[:, 36] - points[:, 45]).norm(
        dim=-1)
    assert float(gap[0] - gap[1]) > 0.4 * 2 * 1.5 * BROW_UNIT


def test_brows_round_trip_through_a_coefficient_file(sfm_model, tmp_path):
    """Saved and read back; a file written before the brow rig reads as zeros, one written with
    one raise per brow gives both halves that raise, one with raises alone is not drawn in;
    the dynamics' vector view keeps them (the last frame's held when the length changes)."""
    coeffs = posed_mean_face(sfm_model, 3)
    coeffs.brows = torch.tensor([[0.0, 0.1, 0.0, 0.1, 0.3, 0.2], [0.5, -0.2, 0.4, 0.0, 0.0, -0.1],
                                 [-0.2, 0.3, 0.1, 0.2, 1.0, 0.5]])
    path = coeffs.save(tmp_path / "c.npz")
    assert torch.equal(Coefficients.load(path).brows, coeffs.brows)
    arrays = dict(np.load(path))
    del arrays["brows"]
    assert torch.equal(Coefficients.from_arrays(arrays, "old.npz").brows, torch.zeros(3, 6))
    # One raise per brow (files of the rig's first form): both halves take it.
    arrays["brows"] = np.array([[0.5, -0.2], [0.0, 1.0], [0.3, 0.3]], dtype=np.float32)
    assert torch.equal(Coefficients.from_arrays(arrays, "two.npz").brows, torch.tensor(
        [[0.5, 0.5, -0.2, -0.2, 0, 0], [0.0, 0.0, 1.0, 1.0, 0, 0], [0.3, 0.3, 0.3, 0.3, 0, 0]]))
    # Raises alone (files written before the brows were drawn in).
    arrays["brows"] = coeffs.brows[:, :4].numpy()
    assert torch.equal(Coefficients.from_arrays(arrays, "four.npz").brows,
                       torch.cat([coeffs.brows[:, :4], torch.zeros(3, 2)], 1))
    assert torch.equal(coeffs.with_tensor(coeffs.to_tensor()).brows, coeffs.brows)
    assert torch.equal(coeffs.with_tensor(coeffs.to_tensor()[:2]).brows,
                       coeffs.brows[-1:].expand(2, 6))
    with pytest.raises(Exception, match="brows must be"):
        replace(coeffs, brows=torch.zeros(3))
