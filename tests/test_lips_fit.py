"""The lips fitted per frame: the closure (how far apart the inner lips are) and the pucker (a
mouth that narrows into an "o"), rigged, fitted, transferred and drawn."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from faceanime.coefficients import Coefficients
from faceanime.fitting.lips import fit_lip_closure, fit_pucker
from faceanime.morphable.lips import (
    LIPS_RANGE,
    PUCKER_RANGE,
    PUCKER_UNIT,
    apply_lips,
    build_lips,
)
from tests.helpers import assert_close, posed_mean_face, projected_landmarks

# d6's pursed "o" (looked at: frames 771-781, the mouth half its width), its first frame's wide
# mouth the reference.
PURSED = (772, 774, 776)


@pytest.fixture(scope="module")
def lips(sfm_model):
    return build_lips(sfm_model)


def test_pucker_draws_the_corners_together_and_leaves_the_rest(sfm_model, lips):
    """At pucker 1 each mouth corner (iBUG 49, 55, 1-based) moves towards the middle by half
    PUCKER_UNIT inter-ocular distances; the lips' widths shrink in proportion (a uniform
    narrowing, as dlib reads a real "o": every span across the mouth 20-27 % narrower); the
    lips' middle comes forward; the eyes, nose and chin and everything away from the mouth
    stay."""
    ids = sfm_model.landmark_indices
    mean = sfm_model.mean
    iod = float((mean[ids[36]] - mean[ids[45]]).norm())
    move = apply_lips(mean[None], torch.ones(1), lips.pucker)[0] - mean
    assert float(move[:, 1].abs().max()) == 0.0
    assert_close(move[ids[48], 0], torch.tensor(PUCKER_UNIT * iod / 2), atol=1e-3)
    assert_close(move[ids[54], 0], torch.tensor(-PUCKER_UNIT * iod / 2), atol=1e-3)
    width = float(mean[ids[54], 0] - mean[ids[48], 0])
    for a, b in ((49, 53), (59, 55), (61, 63)):
        span = float(mean[ids[b], 0] - mean[ids[a], 0])
        shrink = float(move[ids[a], 0] - move[ids[b], 0])
        assert shrink == pytest.approx(PUCKER_UNIT * iod * span / width, rel=0.02)
    assert float(move[ids[51], 2]) > 0.005 * iod and float(move[ids[57], 2]) > 0.005 * iod
    for still in (36, 45, 30, 33, 8):
        assert float(move[ids[still]].norm()) < 1e-3 * iod
    middle = mean[ids[[48, 54]]].mean(0)
    far = (((mean[:, 0] - middle[0]).abs() > width / 2 + 0.21 * iod)
           | ((mean[:, 1] - middle[1]).abs() > 0.35 * iod))
    assert float(move[far].abs().max()) == 0.0


def test_a_known_pucker_is_fitted_back(sfm_model):
    """Ground truth: the mean face turned 20° and tilted 10°, its jaw opening, drawn at known
    puckers (wider and narrower); from its projected landmarks each frame's pucker comes back
    exactly (the spans are linear in it), tied between frames or not; out of range it is
    bounded; the fit without the pucker (``pucker=False``) leaves it at 0."""
    from faceanime.fitting import fit_landmarks
    from faceanime.fitting.fitter import FitConfig

    truth = torch.tensor([-1.0, 0.0, 0.8, 2.0])
    coeffs = posed_mean_face(sfm_model, 4, jaw=torch.linspace(0.0, 0.2, 4))
    coeffs.landmarks = projected_landmarks(sfm_model, replace(coeffs, pucker=truth))
    assert_close(fit_pucker(sfm_model, coeffs, temporal_weight=0.0), truth, atol=1e-3)
    steady = replace(coeffs, landmarks=projected_landmarks(sfm_model, replace(
        coeffs, pucker=torch.full((4,), 1.2))))
    assert_close(fit_pucker(sfm_model, steady, temporal_weight=5.0), torch.full((4,), 1.2),
                 atol=1e-3)
    wide = replace(coeffs, landmarks=projected_landmarks(sfm_model, replace(
        coeffs, pucker=torch.full((4,), -5.0))))
    assert float(fit_pucker(sfm_model, wide).min()) == PUCKER_RANGE[0]
    assert torch.equal(fit_pucker(sfm_model, replace(coeffs, landmarks=None)), torch.zeros(4))
    plain = fit_landmarks(sfm_model, coeffs.landmarks, (512, 512), FitConfig(pucker=False))
    assert float(plain.pucker.abs().max()) == 0.0


@pytest.fixture(scope="module")
def d6_pursed(data_dir):
    """dlib landmarks of videos/d6.mp4's every 16th frame (frame 0: a wide mouth) and frames
    772-776 (the pursed "o"): enough of the video for its identity (the pursed frames alone
    would fit a narrow-mouthed person)."""
    from faceanime.io import iter_video_frames
    from faceanime.landmarks import create_detector

    wanted = sorted({*range(0, 1008, 16), *PURSED})
    points = []
    with create_detector("dlib") as detector:
        for i, frame in enumerate(iter_video_frames(data_dir / "videos" / "d6.mp4")):
            if i in wanted:
                points.append(detector.detect(frame)[0].points)
            if i >= wanted[-1]:
                break
    return wanted, np.stack(points).astype(np.float32)


def _opening(points: torch.Tensor) -> torch.Tensor:
    """Inner lips' gap (iBUG 62/68, 63/67, 64/66, 1-based) over the outer eye corners':
    ``(T, 68, 2)`` -> ``(T,)``."""
    gap = (points[:, [61, 62, 63]] - points[:, [67, 66, 65]]).norm(dim=-1).mean(-1)
    return gap / (points[:, 36] - points[:, 45]).norm(dim=-1)


def test_a_known_lip_closure_is_fitted_back(sfm_model):
    """Ground truth: the mean face turned 20° and tilted 10°, its jaw opening, its lips drawn
    at known closures (parted further, as modelled, closed); from its projected landmarks each
    frame's closure comes back exactly (the gaps are linear in it), added to the closure the
    coefficients start from; out of range it is bounded; the full fit reproduces every
    frame's inner-lip gap within 0.01 inter-ocular distances, and without the closure
    (``lip_closure=False``, the jaw and the emotions alone) it misses by over 0.03."""
    from faceanime.fitting import fit_landmarks
    from faceanime.fitting.fitter import FitConfig

    truth = torch.tensor([-0.8, 0.0, 0.7, 2.0])
    coeffs = posed_mean_face(sfm_model, 4, jaw=torch.linspace(0.05, 0.25, 4))
    coeffs.landmarks = projected_landmarks(sfm_model, replace(coeffs, lips=truth))
    assert_close(fit_lip_closure(sfm_model, coeffs, temporal_weight=0.0), truth, atol=1e-3)
    started = replace(coeffs, lips=torch.full((4,), 0.5))
    assert_close(fit_lip_closure(sfm_model, started, temporal_weight=0.0), truth, atol=1e-3)
    apart = replace(coeffs, landmarks=projected_landmarks(sfm_model, replace(
        coeffs, lips=torch.full((4,), -3.0), jaw=torch.full((4,), 0.3))))
    assert float(fit_lip_closure(sfm_model, apart).min()) == LIPS_RANGE[0]
    assert torch.equal(fit_lip_closure(sfm_model, replace(started, landmarks=None)),
                       started.lips)
    config = FitConfig(temporal_weight=0.0, lip_closure_temporal_weight=0.0)

    def gap_error(fit: Coefficients) -> float:
        fitted = _opening(projected_landmarks(sfm_model, fit))
        return float((fitted - _opening(coeffs.landmarks)).abs().max())

    # The emotions take a little of each shape (gaps 0.03-0.13 inter-ocular distances).
    assert gap_error(fit_landmarks(sfm_model, coeffs.landmarks, (512, 512), config)) < 0.01
    plain = fit_landmarks(sfm_model, coeffs.landmarks, (512, 512),
                          replace(config, lip_closure=False))
    assert float(plain.lips.abs().max()) == 0.0
    assert gap_error(plain) > 0.03


def test_d6s_lips_part_as_far_as_the_detected_ones(sfm_model, d6_pursed):
    """On d6 (every 16th frame: shut lips, an "o", the widest "ah"), the fitted inner lips part
    as far as dlib's: their gap follows the detected one with a slope within 5 % of 1 and
    within 0.01 inter-ocular distances on average (the lips' gap is 0-0.35). The jaw and the
    emotions alone, which also answer to the chin's outline, fitted ``0.87 ×`` the detected
    gap, 0.019 off on average: parted when the lips were shut, short at the widest."""
    from faceanime.fitting import fit_landmarks
    from faceanime.fitting.fitter import FitConfig

    _, points = d6_pursed
    config = FitConfig(temporal_weight=0.0, eyelid_temporal_weight=0.0,
                       pucker_temporal_weight=0.0, lip_closure_temporal_weight=0.0)
    detected = _opening(torch.from_numpy(points))

    def slope_and_error(cfg: FitConfig) -> tuple[float, float]:
        coeffs = fit_landmarks(sfm_model, torch.from_numpy(points), (480, 480), cfg)
        fitted = _opening(projected_landmarks(sfm_model, coeffs))
        slope = np.polyfit(detected.numpy(), fitted.numpy(), 1)[0]
        return float(slope), float((fitted - detected).abs().mean())

    assert float(detected.max()) > 0.3 and float(detected.min()) < 0.03
    slope, error = slope_and_error(config)
    assert abs(slope - 1) < 0.05 and error < 0.01
    slope, error = slope_and_error(replace(config, lip_closure=False))
    assert slope < 0.9 and error > 0.015


def _width(points: torch.Tensor) -> torch.Tensor:
    """Mouth corners' distance over the outer eye corners': ``(T, 68, 2)`` -> ``(T,)``."""
    return (points[:, 48] - points[:, 54]).norm(dim=-1) / (points[:, 36] - points[:, 45]).norm(
        dim=-1)


def test_d6s_pursed_mouth_is_fitted_narrow(sfm_model, d6_pursed):
    """d6's "o" (frames 772-776) is 0.15 inter-ocular distances narrower than its frame 0 by
    dlib. The six emotions alone fitted it 0.01 narrower (sadness and anger pull the corners
    out while they shape the lips); with the pucker the fitted mouth narrows by more than half
    of dlib's change, the pucker rising by more than 0.7, and the reported landmarks are the
    drawn mesh's."""
    from faceanime.fitting import fit_landmarks
    from faceanime.fitting.fitter import FitConfig

    frames, points = d6_pursed
    config = FitConfig(temporal_weight=0.0, eyelid_temporal_weight=0.0,
                       pucker_temporal_weight=0.0)  # frames far apart: no ties
    coeffs = fit_landmarks(sfm_model, torch.from_numpy(points), (480, 480), config)
    index = [frames.index(f) for f in PURSED]
    assert float(coeffs.pucker[index].min() - coeffs.pucker[0]) > 0.7
    detected = _width(coeffs.landmarks)
    change = float((detected[index] - detected[0]).mean())
    assert change < -0.15
    fitted = _width(projected_landmarks(sfm_model, coeffs))
    assert float((fitted[index] - fitted[0]).mean()) < 0.5 * change
    mouth = [i for i in range(48, 68) if int(sfm_model.landmark_indices[i]) >= 0]
    # The reported fit is what a renderer draws.
    assert_close(coeffs.fitted_landmarks[:, mouth],
                 projected_landmarks(sfm_model, coeffs)[:, mouth], atol=0.05)
    plain = fit_landmarks(sfm_model, torch.from_numpy(points), (480, 480),
                          replace(config, pucker=False))
    without = _width(projected_landmarks(sfm_model, plain))
    assert float((without[index] - without[0]).mean()) > 0.1 * change


def test_the_photo_takes_the_drivers_change_of_pucker(sfm_model, s1_photo):
    """Relative transfer adds the driver's change from its reference frame to the photo's own
    pucker (bounded); absolute takes the driver's; with the mouth off the photo's stays."""
    from faceanime.motion import MotionConfig, transfer_motion

    _, source = s1_photo
    source = replace(source, pucker=torch.tensor([-0.4]))
    driving = posed_mean_face(sfm_model, 4, jaw=torch.linspace(0.0, 0.2, 4))
    driving.shape = source.shape.clone()
    driving.image_size = source.image_size
    driving.pucker = torch.tensor([0.3, 1.3, 0.3, 5.0])
    relative = transfer_motion(source, driving, model=sfm_model).pucker
    assert_close(relative, torch.tensor([-0.4, 0.6, -0.4, PUCKER_RANGE[1]]))
    absolute = transfer_motion(source, driving, MotionConfig(mode="absolute")).pucker
    assert_close(absolute, torch.tensor([0.3, 1.3, 0.3, PUCKER_RANGE[1]]))
    kept = transfer_motion(source, driving, MotionConfig(mouth="off")).pucker
    assert_close(kept, torch.full((4,), -0.4))


def test_a_puckered_target_draws_a_narrower_mouth(sfm_model, s1_photo):
    """s1 rendered by the warp at its own pucker and 1.5 more (d6's "o" is about 1), nothing
    else changed: dlib reads the rendered mouth more than 0.1 inter-ocular distances narrower
    (the rig's corners move 0.15; 0.117 read). With the motion fading from the model's corner
    vertices on, the photo's own corners, a little further out, moved less: 0.085 read."""
    from faceanime.landmarks import create_detector
    from faceanime.render.frames import to_uint8
    from faceanime.render.warp import WarpRenderer

    image, source = s1_photo
    renderer = WarpRenderer(sfm_model, image, source)
    target = source.frames([0, 0])
    target.pucker = torch.tensor([0.0, 1.5]) + source.pucker[0]
    frames = to_uint8(renderer.render(target))
    with create_detector("dlib") as detector:
        points = torch.from_numpy(np.stack([detector.detect(f)[0].points for f in frames]))
    width = _width(points.double())
    assert float(width[0] - width[1]) > 0.1


def test_pucker_round_trips_through_a_coefficient_file(sfm_model, tmp_path):
    """Saved and read back; a file written before the pucker reads as zeros; the dynamics'
    vector view keeps it (the last frame's held when the length changes)."""
    coeffs = posed_mean_face(sfm_model, 3, jaw=torch.linspace(0.0, 0.2, 3))
    coeffs.pucker = torch.tensor([0.0, 0.5, -0.2])
    path = coeffs.save(tmp_path / "c.npz")
    assert torch.equal(Coefficients.load(path).pucker, coeffs.pucker)
    arrays = dict(np.load(path))
    del arrays["pucker"]
    assert torch.equal(Coefficients.from_arrays(arrays, "old.npz").pucker, torch.zeros(3))
    assert torch.equal(coeffs.with_tensor(coeffs.to_tensor()).pucker, coeffs.pucker)
    assert torch.equal(coeffs.with_tensor(coeffs.to_tensor()[:2]).pucker,
                       torch.full((2,), -0.2))
    with pytest.raises(Exception, match="pucker must be"):
        replace(coeffs, pucker=torch.zeros(3, 1))
