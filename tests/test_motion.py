"""Motion transfer between coefficient sequences."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from faceanime.coefficients import Coefficients
from faceanime.errors import InputError
from faceanime.geometry.rotation import euler_to_matrix, rotation_angle_between
from faceanime.morphable.lips import LIPS_RANGE
from faceanime.motion import JAW_RANGE, MotionConfig, transfer_motion
from tests.helpers import assert_close


def _coeffs(t: int, seed: int, model: str = "sfm", camera: str = "orthographic") -> Coefficients:
    g = torch.Generator().manual_seed(seed)
    angles = torch.deg2rad(torch.rand(t, 3, generator=g) * 40 - 20)
    return Coefficients(
        model=model, shape=torch.randn(63, generator=g),
        expression=torch.rand(t, 6, generator=g) * 0.5, jaw=torch.rand(t, generator=g) * 0.3,
        rotation=euler_to_matrix(angles[:, 0], angles[:, 1], angles[:, 2]),
        translation=torch.cat([torch.rand(t, 2, generator=g) * 100 + 200, torch.zeros(t, 1)], 1),
        scale=torch.rand(t, generator=g) + 1.5, camera=camera,
        image_size=torch.tensor([512, 512]), fps=25.0)


def test_relative_reference_frame_gives_the_source():
    source, driving = _coeffs(1, 0), _coeffs(30, 1)
    # close_mouth would close a source mouth open wider than the reference's (tested below).
    out = transfer_motion(source, driving, MotionConfig(reference_frame=4, close_mouth=False))
    assert out.n_frames == 30 and out.fps == 25.0
    assert_close(out.rotation[4], source.rotation[0], atol=1e-6)
    assert_close(out.translation[4], source.translation[0], atol=1e-4)
    assert_close(out.scale[4], source.scale[0], atol=1e-6)
    assert_close(out.expression[4], source.expression[0], atol=1e-6)
    assert_close(out.jaw[4], source.jaw[0], atol=1e-6)
    assert_close(out.shape, source.shape, atol=0)


def test_relative_applies_the_drivers_changes():
    source, driving = _coeffs(1, 2), _coeffs(20, 3)
    out = transfer_motion(source, driving)
    # The head turns by the driver's turn since its reference frame...
    turned = rotation_angle_between(out.rotation, source.rotation.expand(20, -1, -1))
    driver = rotation_angle_between(driving.rotation, driving.rotation[:1].expand(20, -1, -1))
    assert_close(turned, driver, atol=1e-3)  # acos near 0 in float32
    # ...and the expression and scale change as the driver's do (expression: same direction,
    # scaled to the room each face has; test_relative_expression_* below)...
    delta = driving.expression - driving.expression[0]
    moved = delta.abs() > 1e-3
    assert torch.equal(torch.sign(out.expression - source.expression)[moved],
                       torch.sign(delta)[moved])
    assert_close(out.scale / source.scale, driving.scale / driving.scale[0], atol=1e-6)
    shift = (driving.translation - driving.translation[0]) * source.scale / driving.scale[0]
    assert_close(out.translation - source.translation, shift, atol=1e-4)


def test_absolute_copies_expression_and_rotation_keeps_placement():
    source, driving = _coeffs(1, 4), _coeffs(10, 5)
    out = transfer_motion(source, driving, MotionConfig(mode="absolute"))
    assert_close(out.expression, driving.expression, atol=0)
    assert_close(out.rotation, driving.rotation, atol=0)
    assert_close(out.translation, source.translation.expand(10, -1), atol=0)
    assert_close(out.scale, source.scale.expand(10), atol=0)


def test_pose_or_expression_only():
    source, driving = _coeffs(1, 6), _coeffs(8, 7)
    still = transfer_motion(source, driving, MotionConfig(pose=False))
    assert_close(still.rotation, source.rotation.expand(8, -1, -1), atol=0)
    assert not torch.allclose(still.expression, source.expression.expand(8, -1))
    mute = transfer_motion(source, driving, MotionConfig(expression=False))
    assert_close(mute.expression, source.expression.expand(8, -1), atol=0)
    assert float(mute.jaw.max()) <= math.radians(35) + 1e-6


@pytest.mark.parametrize("change", [{"model": "bfm"}, {"camera": "perspective"}])
def test_mismatched_fits_are_refused(change):
    source = _coeffs(1, 8)
    driving = _coeffs(5, 9, **change)
    with pytest.raises(InputError, match="same"):
        transfer_motion(source, driving)


def test_reference_out_of_range():
    with pytest.raises(InputError, match="reference frame 9"):
        transfer_motion(_coeffs(1, 0), _coeffs(5, 1), MotionConfig(reference_frame=9))


def _one_coefficient(source: float, driver: list[float]) -> tuple[Coefficients, Coefficients]:
    src, drv = _coeffs(1, 6), _coeffs(len(driver), 7)
    src.expression = torch.zeros(1, 6)
    src.expression[0, 3] = source
    drv.expression = torch.zeros(len(driver), 6)
    drv.expression[:, 3] = torch.tensor(driver)
    return src, drv


def test_relative_expression_stays_within_what_a_face_can_show():
    # A photo already smiling fully (happiness 1) driven by a smile from neutral: the old sum
    # gave 2, twice the model's full smile - a grotesque dark crescent of a mouth.
    src, drv = _one_coefficient(1.0, [0.0, 0.5, 1.0])
    out = transfer_motion(src, drv).expression[:, 3]
    assert out.max() <= 1.0 + 1e-6
    # Half a smile reaches the full one when the driver's does, and relaxes fully with it.
    src, drv = _one_coefficient(0.5, [0.0, 0.5, 1.0])
    assert_close(transfer_motion(src, drv).expression[:, 3], torch.tensor([0.5, 0.75, 1.0]),
                 atol=1e-6)
    src, drv = _one_coefficient(0.5, [1.0, 0.5, 0.0])
    assert_close(transfer_motion(src, drv).expression[:, 3], torch.tensor([0.5, 0.25, 0.0]),
                 atol=1e-6)


def test_relative_expression_of_the_same_face_is_the_drivers():
    # The photo as the driver's reference (self-reenactment): the driver's own weights, exactly.
    src, drv = _one_coefficient(0.3, [0.3, 0.9, 0.0, 1.1, 0.3])
    assert_close(transfer_motion(src, drv).expression[:, 3], drv.expression[:, 3], atol=1e-6)


def test_relative_expression_of_a_signed_basis_is_not_clamped():
    # A PCA expression basis (BFM): coefficients of either sign, added as they are.
    src, drv = _coeffs(1, 8), _coeffs(10, 9)
    src.expression = src.expression - 1.0
    drv.expression = drv.expression * 4 - 2.0
    out = transfer_motion(src, drv)
    expected = src.expression + drv.expression - drv.expression[0]
    assert_close(out.expression, expected, atol=1e-6)


def test_best_reference_is_the_driving_frame_that_matches_the_source():
    """A source equal to one driving frame picks that frame, and relative motion from it gives
    the source back there; an unknown reference is one clear error."""
    from faceanime.motion import best_reference

    driving = _coeffs(40, 3)
    for k in (0, 17, 39):
        source = driving.frames([k])
        assert best_reference(source, driving) == k
        out = transfer_motion(source, driving, MotionConfig(reference_frame="best"))
        assert_close(out.jaw[k], source.jaw[0], atol=1e-6)
        assert_close(out.expression[k], source.expression[0], atol=1e-6)
        assert_close(out.rotation[k], source.rotation[0], atol=1e-6)
    for bad in ("worst", True, 1.5):
        with pytest.raises(InputError, match="best"):
            MotionConfig(reference_frame=bad)
    assert MotionConfig(reference_frame=torch.tensor(3).numpy()[()]).reference_frame == 3


def test_an_open_mouthed_photo_closes_its_mouth_from_the_best_reference(sfm_model, data_dir,
                                                                        d3_track):
    """d19.jpg has its mouth open (jaw 8°); d3's first frame is closed. Relative to frame 0 the
    photo can only open further (the driver's change from a closed mouth is an opening), so
    its mouth never closes when the driver's does; from the best reference (a d3 frame with the
    mouth as open as the photo's) it closes with the driver, and opens with it."""
    import numpy as np
    from PIL import Image

    from faceanime.fitting import fit_image, fit_landmarks
    from faceanime.motion import best_reference

    photo = fit_image(np.array(Image.open(data_dir / "faces" / "d19.jpg").convert("RGB")),
                      sfm_model)
    driving = fit_landmarks(sfm_model, torch.from_numpy(d3_track.points), (512, 512), fps=30)
    first = transfer_motion(photo, driving, MotionConfig(close_mouth=False))
    best = transfer_motion(photo, driving, MotionConfig(reference_frame="best"))
    own = float(photo.jaw[0])
    assert own > math.radians(5)
    assert float(first.jaw.min()) > own - math.radians(3)
    assert float(best.jaw.min()) < own - math.radians(6)
    k = best_reference(photo, driving)
    # d3 never opens as wide as the yawn (its widest lip gap 0.23 inter-ocular distances, the
    # photo's 0.32): the best frame is one of its widest.
    assert abs(float(driving.jaw[k]) - own) < math.radians(3)
    # The mouth follows the driver's: the jaw's correlation over the clip is kept.
    assert float(torch.corrcoef(torch.stack([best.jaw, driving.jaw]))[0, 1]) > 0.99


def _jaws(source: float, driver: list[float]) -> tuple[Coefficients, Coefficients]:
    """A source and a driver that differ only in their jaw angles (degrees)."""
    source_c, driving = _coeffs(1, 6), _coeffs(len(driver), 7)
    source_c.jaw = torch.deg2rad(torch.tensor([source]))
    driving.jaw = torch.deg2rad(torch.tensor(driver))
    return source_c, driving


def test_close_mouth_closes_an_open_photo_to_the_drivers_reference():
    """A photo open 10° wider than the driver's reference frame: by default its mouth is closed
    to that opening first, so it shuts when the driver's does and opens as far; without
    close_mouth the driver's openings are added to the photo's (it never closes)."""
    source, driving = _jaws(12.0, [2.0, 9.0, 2.0, 0.0, 16.0])
    shut = torch.rad2deg(transfer_motion(source, driving).jaw)
    assert_close(shut, torch.tensor([2.0, 9.0, 2.0, 0.0, 16.0]), atol=1e-4)
    kept = torch.rad2deg(transfer_motion(source, driving, MotionConfig(close_mouth=False)).jaw)
    assert_close(kept, torch.tensor([12.0, 19.0, 12.0, 10.0, 26.0]), atol=1e-4)
    # Lips a little apart (within the margin) stay as they are; the absolute mode and an
    # explicit --mouth absolute are untouched.
    source, driving = _jaws(4.5, [2.0, 9.0])
    assert_close(torch.rad2deg(transfer_motion(source, driving).jaw),
                 torch.tensor([4.5, 11.5]), atol=1e-4)
    source, driving = _jaws(12.0, [2.0, 9.0])
    for config in (MotionConfig(mode="absolute"), MotionConfig(mouth="absolute")):
        assert_close(torch.rad2deg(transfer_motion(source, driving, config).jaw),
                     torch.tensor([2.0, 9.0]), atol=1e-4)
    # A photo more closed than the reference keeps its own rest state.
    source, driving = _jaws(0.0, [2.0, 9.0])
    assert_close(torch.rad2deg(transfer_motion(source, driving).jaw),
                 torch.tensor([0.0, 7.0]), atol=1e-4)


def test_an_open_mouthed_photo_closes_with_the_driver_by_default(sfm_model, data_dir, d3_track):
    """d19.jpg (mouth open, jaw 8°) driven by d3 from its closed first frame: by default the
    output's jaw is the driver's (closed where d3's is), not the photo's opening plus d3's."""
    import numpy as np
    from PIL import Image

    from faceanime.fitting import fit_image, fit_landmarks

    photo = fit_image(np.array(Image.open(data_dir / "faces" / "d19.jpg").convert("RGB")),
                      sfm_model)
    driving = fit_landmarks(sfm_model, torch.from_numpy(d3_track.points), (512, 512), fps=30)
    out = transfer_motion(photo, driving)
    own = float(photo.jaw[0])
    assert own > float(driving.jaw[0]) + math.radians(5)
    closed = driving.jaw < driving.jaw[0] + math.radians(0.5)
    assert int(closed.sum()) > 50
    assert float(out.jaw[closed].max()) < own - math.radians(6)
    assert_close(out.jaw, driving.jaw.clamp(*JAW_RANGE), atol=1e-5)


def test_close_mouth_also_closes_what_an_expression_holds_open(sfm_model, data_dir, d3_track):
    """d19.jpg's mouth is open by its jaw (8°) and by SFM's surprise blendshape (0.47): with
    the jaw closed to d3's first frame its lips were still 0.17 inter-ocular distances apart
    against d3's 0.05, so the output's mouth never shut. Given the model, close_mouth closes the
    rest (the chin by the jaw, what is left by the lips): at the reference the gap is the
    driver's, and from there it opens and closes with the driver's. Photos with their lips
    nearly together (s1, s42) keep theirs."""
    import numpy as np
    from PIL import Image

    from faceanime.fitting import fit_image, fit_landmarks
    from faceanime.motion import CLOSE_LIPS_MARGIN, lip_gap

    def photo(name: str) -> Coefficients:
        return fit_image(np.array(Image.open(data_dir / "faces" / f"{name}.jpg").convert("RGB")),
                         sfm_model)

    driving = fit_landmarks(sfm_model, torch.from_numpy(d3_track.points), (512, 512), fps=30)
    reference = float(lip_gap(sfm_model, driving.frames([0]))[0])
    d19 = photo("d19")
    # No model: no rest closure, the photo's own lips moved by the driver's change.
    jaw_only = transfer_motion(d19, driving)
    moved = (d19.lips + driving.lips - driving.lips[0]).clamp(*LIPS_RANGE)
    assert_close(jaw_only.lips, moved)
    assert float(lip_gap(sfm_model, jaw_only.frames([0]))[0]) > reference + 0.1
    out = transfer_motion(d19, driving, model=sfm_model)
    assert abs(float(lip_gap(sfm_model, out.frames([0]))[0]) - reference) < 0.005
    # From the photo's closed mouth its lips part and close as d3's do.
    gaps = lip_gap(sfm_model, out)
    assert float(torch.corrcoef(torch.stack([gaps, lip_gap(sfm_model, driving)]))[0, 1]) > 0.99
    # Without follow_gap the jaw takes the driver's change as it is.
    plain = transfer_motion(d19, driving, MotionConfig(follow_gap=False), sfm_model)
    assert_close(plain.jaw - plain.jaw[0], driving.jaw - driving.jaw[0], atol=1e-5)
    # Off without close_mouth, and in the absolute mode (the driver's lips).
    assert_close(transfer_motion(d19, driving, MotionConfig(close_mouth=False), sfm_model).lips,
                 moved)
    assert_close(transfer_motion(d19, driving, MotionConfig(mode="absolute"), sfm_model).lips,
                 driving.lips.clamp(*LIPS_RANGE))
    for name in ("s1", "s42"):
        face = photo(name)
        assert float(lip_gap(sfm_model, face)[0]) < reference + CLOSE_LIPS_MARGIN
        plain = MotionConfig(follow_gap=False)
        closed = transfer_motion(face, driving, plain, model=sfm_model)
        assert_close(closed.lips, transfer_motion(face, driving).lips)
        assert_close(closed.jaw, transfer_motion(face, driving).jaw)


def test_a_yawn_closed_to_the_driver_lifts_its_chin(sfm_model, data_dir, d3_track):
    """d19.jpg yawns: its fit holds the mouth open by 8° of jaw and by SFM's surprise, which
    drops the chin too. Closed to d3's shut first frame by the lips alone, the chin stayed down
    under the shut mouth (0.08 inter-ocular distances higher than the photo's, where the face
    without its expression holds it 0.2 higher): a face a sixth too long from nose to chin,
    looked at. The jaw now lifts the chin (and the lower lip with it) to where the
    expressionless face holds it, and the driver's closing below its first frame still
    closes it further."""
    import numpy as np
    from PIL import Image

    from faceanime.fitting import fit_image, fit_landmarks
    from faceanime.motion import CLOSE_CHIN_LIMIT, chin_height, lip_gap

    d19 = fit_image(np.array(Image.open(data_dir / "faces" / "d19.jpg").convert("RGB")),
                    sfm_model)
    driving = fit_landmarks(sfm_model, torch.from_numpy(d3_track.points), (512, 512), fps=30)
    out = transfer_motion(d19, driving, model=sfm_model)
    first = out.frames([0])
    plain = replace(d19, jaw=driving.jaw[:1],
                    expression=torch.zeros_like(d19.expression))
    lifted = float(chin_height(sfm_model, first)[0] - chin_height(sfm_model, d19)[0])
    assert lifted > 0.15
    # Up to where the lips meet at d3's gap: 0.027 short of the expressionless chin for the
    # yawn's fit (its disgust lifts the upper lip).
    assert abs(float(chin_height(sfm_model, first)[0] - chin_height(sfm_model, plain)[0])) < 0.03
    assert float(out.jaw[0]) > float(driving.jaw[0]) - CLOSE_CHIN_LIMIT - 1e-6
    # The driver's lips closing below their gap in its first frame close the photo's further
    # (the jaw's range below the lifted chin is kept).
    gaps, own = lip_gap(sfm_model, driving), lip_gap(sfm_model, out)
    below = gaps < gaps[0] - 0.003
    assert int(below.sum()) > 100
    assert bool((own[below] < own[0] + 1e-4).all())
    assert float(out.jaw[below].min()) < float(out.jaw[0]) - math.radians(0.5)
    assert abs(float(lip_gap(sfm_model, first)[0] - lip_gap(sfm_model, driving.frames([0]))[0])
               ) < 0.005


def test_a_few_vertices_are_made_as_the_whole_mesh_makes_them(sfm_model, d3_track):
    """``face_vertices(index=...)`` makes only the vertices asked for (lip_gap over d6's 1008
    frames took 0.38 s with whole meshes, 8 ms with its eight vertices), each exactly as the
    whole mesh has it: every rig (lids, the lips' rest, closure and pucker, brows, jaw)
    applied to those alone."""
    from faceanime.fitting import fit_landmarks
    from faceanime.morphable.lips import lip_rig
    from faceanime.reconstruction import face_vertices

    driving = fit_landmarks(sfm_model, torch.from_numpy(d3_track.points), (512, 512), fps=30)
    for part in (driving.eyes, driving.lips, driving.pucker, driving.brows, driving.jaw):
        assert bool((part != 0).any())
    lips = lip_rig(sfm_model)
    index = torch.cat([sfm_model.landmark_indices[sfm_model.landmark_mask()],
                       torch.arange(0, sfm_model.n_vertices, 97)])
    whole = face_vertices(sfm_model, driving, lips=lips)
    assert torch.equal(face_vertices(sfm_model, driving, lips=lips, index=index), whole[:, index])
    assert torch.equal(face_vertices(sfm_model, driving, index=index),
                       face_vertices(sfm_model, driving)[:, index])


@pytest.mark.parametrize("name", ["d19", "s1", "s42"])
def test_the_lips_part_as_far_as_the_drivers(sfm_model, data_dir, d3_track, name):
    """Relative transfer moves the driver's jaw and lips by its change but scales each
    blendshape's rise to the photo's room, so a photo's lips need not part as far as the
    driver's: d19's surprise (0.51 in the photo) takes about half of each rise of d3's, and
    where d3's fit opens its mouth by surprise d19's opened less (on the frames d3 opens its
    lips by more than 0.03 inter-ocular distances, the median 0.88 of the driver's opening,
    and a tenth of them closing as d3 opened); s1 1.12, s42 1.04, s12 1.24 (by d6, fitted at
    full weight, s1 0.86 with a tenth of the frames under 0.53). follow_gap turns each frame's
    jaw until the lips part from their rest by the driver's change (the inner lips' gap over
    the outer eye corners' distance): the output opens as far on most of those frames, and
    never less."""
    import numpy as np
    from PIL import Image

    from faceanime.fitting import fit_image, fit_landmarks
    from faceanime.motion import lip_gap

    image = np.array(Image.open(data_dir / "faces" / f"{name}.jpg").convert("RGB"))
    photo = fit_image(image, sfm_model)
    driving = fit_landmarks(sfm_model, torch.from_numpy(d3_track.points), (512, 512), fps=30)
    change = lip_gap(sfm_model, driving) - lip_gap(sfm_model, driving.frames([0]))
    opens = change > 0.03
    assert int(opens.sum()) > 40

    def ratio(config: MotionConfig) -> torch.Tensor:
        out = transfer_motion(photo, driving, config, sfm_model)
        return ((lip_gap(sfm_model, out) - lip_gap(sfm_model, out.frames([0])))[opens]
                / change[opens])

    def within(r: torch.Tensor) -> float:
        return float(((r - 1).abs() < 0.01).float().mean())

    followed, plain = ratio(MotionConfig()), ratio(MotionConfig(follow_gap=False))
    assert abs(float(followed.median()) - 1) < 0.005
    assert within(followed) > 0.6
    assert within(plain) < 0.1
    # Where the jaw cannot close further (an expression of the photo's opens the mouth more
    # than the driver's change asks), the lips stay wider; never narrower.
    assert float(followed.min()) > 0.99
