"""``faceanime animate``: the non-learned path as a pure function, and s1 moving into s42's pose
end to end (poses measured by refitting the output frames)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import assert_close, run_cli
from test_predict import tiny_dynamics  # noqa: F401 - a session fixture shared with predict

from faceanime.coefficients import Coefficients
from faceanime.errors import InputError
from faceanime.geometry.rotation import euler_to_matrix, rotation_angle_between
from faceanime.io import iter_video_frames, read_video_info
from faceanime.jobs.animate import interpolate_coefficients, smoothstep


def _face(yaw: float, expression: float, tx: float, scale: float) -> Coefficients:
    rot = euler_to_matrix(torch.tensor([math.radians(yaw)]), torch.zeros(1), torch.zeros(1))
    return Coefficients(model="sfm", shape=torch.zeros(3), expression=torch.full((1, 6),
                        expression), jaw=torch.tensor([expression / 10]), rotation=rot,
                        translation=torch.tensor([[tx, 100.0, 0.0]]),
                        scale=torch.tensor([scale]), image_size=torch.tensor([200, 300]))


def test_interpolation_endpoints_ease_and_geodesic():
    a, b = _face(-20, 0.0, 50.0, 2.0), _face(30, 1.0, 150.0, 8.0)
    path = interpolate_coefficients(a, b, 11, placement="target")
    assert path.n_frames == 11 and path.image_size.tolist() == [200, 300]
    assert_close(path.rotation[0], a.rotation[0], atol=1e-6)
    assert_close(path.rotation[-1], b.rotation[0], atol=1e-5)
    assert_close(path.expression[[0, -1]], torch.cat([a.expression, b.expression]), atol=1e-6)
    # Slerp: the rotation stays on the geodesic, the angles to both ends add up to the whole.
    whole = rotation_angle_between(a.rotation[0], b.rotation[0])
    to_a = rotation_angle_between(a.rotation[0].expand(11, 3, 3), path.rotation)
    to_b = rotation_angle_between(b.rotation[0].expand(11, 3, 3), path.rotation)
    assert_close(to_a + to_b, whole.expand(11), atol=1e-4)
    # The ease: half-way at the middle frame, slow at both ends (smoothstep's zero slope).
    assert_close(to_a[5], whole / 2, atol=1e-4)
    assert float(to_a[1]) < 0.05 * float(whole) and float(to_b[-2]) < 0.05 * float(whole)
    assert torch.all(torch.diff(to_a) >= -1e-6)
    assert_close(path.expression[:, 0], smoothstep(torch.linspace(0, 1, 11)), atol=1e-6)
    # The scale moves geometrically (log-scale interpolation): the middle is the geometric mean.
    assert_close(path.scale[5], torch.tensor(4.0), atol=1e-4)
    assert_close(path.translation[5, 0], torch.tensor(100.0), atol=1e-4)
    kept = interpolate_coefficients(a, b, 5)  # placement "source": A's place in its photo
    assert torch.equal(kept.translation, a.translation.expand(5, 3))
    assert torch.equal(kept.scale, a.scale.expand(5))
    one = interpolate_coefficients(a, b, 1)
    assert_close(one.rotation[0], b.rotation[0], atol=1e-5)
    with pytest.raises(InputError, match="frames"):
        interpolate_coefficients(a, b, 0)
    other = _face(0, 0, 0, 1)
    other.model = "bfm"
    with pytest.raises(InputError, match="same model"):
        interpolate_coefficients(a, other, 3)


@pytest.fixture
def sfm_dir(data_dir, monkeypatch):
    monkeypatch.setenv("FACEANIME_MODEL_DIR", str(data_dir / "sfm"))
    return data_dir


@pytest.mark.slow
def test_s1_moves_into_s42s_pose(sfm_dir, sfm_model, tmp_path, capsys):
    """Issue 8: the first frame has s1's pose (within 3.5 degrees) and the last s42's (within
    4.5), measured by fitting the output frames again (s1 and s42 differ by 6.7 degrees;
    refitting a rendered frame alone differs by up to ~2 degrees, more where its mouth looks
    different from the photo's)."""
    from faceanime.fitting import fit_image

    out, saved = tmp_path / "a.mp4", tmp_path / "a.npz"
    s1, s42 = sfm_dir / "faces" / "s1.jpg", sfm_dir / "faces" / "s42.jpg"
    status, _, err = run_cli(capsys, "animate", "--source", str(s1), "--target", str(s42),
                             "--frames", "12", "-o", str(out), "--save-coeffs", str(saved),
                             "--no-progress")
    assert status == 0, err
    assert "12 frames at 25 fps" in err
    assert read_video_info(out).size == (1146, 1146)  # the photo's full size (odd 1145 padded)
    frames = list(iter_video_frames(out))
    assert len(frames) == 12
    fit = {name: fit_image(path, sfm_model) for name, path in (("s1", s1), ("s42", s42))}
    first, last = fit_image(frames[0], sfm_model), fit_image(frames[-1], sfm_model)

    def degrees(a: Coefficients, b: Coefficients) -> float:
        return math.degrees(float(rotation_angle_between(a.rotation[0], b.rotation[0])))

    # A rendered frame's refit moves with its mouth's look (s42's parted lips drawn with s1's
    # own mouth instead of a band of synthesised teeth: 2.9 -> 3.5 degrees), so the last frame
    # is also asked to be far nearer s42's pose than s1's (11.9 degrees from s1's).
    assert degrees(first, fit["s1"]) < 3.5 and degrees(last, fit["s42"]) < 4.5
    assert degrees(last, fit["s42"]) < degrees(last, fit["s1"]) - 5.0
    # ...and not merely because the two poses are alike.
    assert degrees(first, fit["s42"]) > 3.0 and degrees(last, fit["s1"]) > 3.0
    path = Coefficients.load(saved)
    assert degrees(path.frames(slice(0, 1)), fit["s1"]) < 1e-3
    assert degrees(path.frames(slice(11, 12)), fit["s42"]) < 1e-3
    np.testing.assert_allclose(path.expression[-1], fit["s42"].expression[0], atol=1e-5)


@pytest.mark.slow
def test_animate_with_a_dynamics_checkpoint(sfm_dir, tiny_dynamics, tmp_path, capsys):  # noqa: F811
    from faceanime.fitting import fit_image

    s12, s42 = sfm_dir / "faces" / "s12.jpg", sfm_dir / "faces" / "s42.jpg"
    out, saved = tmp_path / "d.mp4", tmp_path / "d.npz"
    status, _, err = run_cli(capsys, "animate", "--source", str(s12), "--target", str(s42),
                             "--frames", "16", "--dynamics", str(tiny_dynamics), "-o", str(out),
                             "--save-coeffs", str(saved), "--no-progress")
    assert status == 0, err
    assert "16 frames at 25 fps" in err
    path = Coefficients.load(saved)
    start, end = fit_image(s12, "sfm"), fit_image(s42, "sfm")
    assert path.n_frames == 16
    np.testing.assert_allclose(path.expression[0], start.expression[0], atol=1e-4)
    np.testing.assert_allclose(path.expression[-1], end.expression[0], atol=1e-3)
    assert float(rotation_angle_between(path.rotation[-1], end.rotation[0])) < math.radians(0.5)
    # placement "source": the head stays where it is in s12's photo.
    np.testing.assert_allclose(path.translation[-1, :2], start.translation[0, :2], atol=1e-3)


def test_package_level_function_returns_frames(sfm_dir):
    import faceanime
    from faceanime.jobs.animate import AnimateConfig
    from faceanime.jobs.common import OutputConfig

    config = AnimateConfig(output=OutputConfig(paste_back=False, size=96, progress=False))
    result = faceanime.animate(sfm_dir / "faces" / "s12.jpg", sfm_dir / "faces" / "s42.jpg",
                               frames=4, config=config)
    assert result.output is None and result.video.shape == (4, 96, 96, 3)
    assert result.video.dtype == np.uint8 and result.frames == 4
    # The face turns and changes expression: the last frame differs from the first.
    assert np.abs(result.video[-1].astype(int) - result.video[0]).mean() > 0.5
