"""``faceanime retarget`` (classic renderer) end to end on the real photos and videos."""

from __future__ import annotations

import numpy as np
import pytest

from faceanime.coefficients import Coefficients
from faceanime.io import iter_video_frames, read_image, read_video_info, write_image
from tests.helpers import assert_one_line_error, run_cli


@pytest.fixture
def sfm_dir(data_dir, monkeypatch):
    monkeypatch.setenv("FACEANIME_MODEL_DIR", str(data_dir / "sfm"))
    return data_dir


def test_retarget_photo_by_video(sfm_dir, tmp_path, capsys):
    photo = sfm_dir / "faces" / "s12.jpg"
    out, coeffs = tmp_path / "out.mp4", tmp_path / "target.npz"
    status, _, err = run_cli(capsys, "retarget", "--source", str(photo), "--driving",
                             str(sfm_dir / "videos" / "d0.mp4"), "-o", str(out),
                             "--save-coeffs", str(coeffs), "--no-progress")
    assert status == 0, err
    assert "78 frames at 25 fps" in err
    info = read_video_info(out)
    image = read_image(photo)
    h, w = image.shape[:2]
    assert info.fps == 25 and info.size == (w + w % 2, h + h % 2) and not info.has_audio
    frames = list(iter_video_frames(out))
    assert len(frames) == 78
    # Relative motion: at the reference frame the photo is shown as it is.
    first = frames[0][:h, :w].astype(float)
    mse = ((first - image) ** 2).mean()
    assert 10 * np.log10(255**2 / mse) > 30
    # ...and later frames move.
    assert np.abs(frames[40][:h, :w].astype(float) - image).mean() > 1.0
    target = Coefficients.load(coeffs)
    assert target.n_frames == 78 and target.fps == 25


def test_retarget_keeps_the_drivers_audio(sfm_dir, tmp_path, capsys):
    video = sfm_dir / "videos" / "d18.mp4"
    out = tmp_path / "a.mp4"
    status, _, err = run_cli(capsys, "retarget", "--source", str(sfm_dir / "faces" / "s12.jpg"),
                             "--driving", str(video), "-o", str(out), "--no-progress")
    assert status == 0, err
    info = read_video_info(out)
    assert info.has_audio and abs(info.duration - read_video_info(video).duration) < 0.2


def test_retarget_by_coefficient_file(sfm_dir, tmp_path, capsys):
    """A driving .npz (a motion template) works like the video it was fitted from."""
    fitted = tmp_path / "d0.npz"
    assert run_cli(capsys, "fit", str(sfm_dir / "videos" / "d0.mp4"), "-o", str(fitted),
                   "--no-progress")[0] == 0
    Coefficients.load(fitted).frames(slice(0, 20)).save(fitted)
    out = tmp_path / "b.mp4"
    photo = sfm_dir / "faces" / "s12.jpg"
    status, _, err = run_cli(capsys, "retarget", "--source", str(photo), "--driving",
                             str(fitted), "-o", str(out), "--no-progress", "--side-by-side")
    assert status == 0, err
    info = read_video_info(out)
    h, w = read_image(photo).shape[:2]
    assert not info.has_audio and info.fps == 25
    assert info.size == (2 * w, h + h % 2)  # photo | result (no driver frames to show)
    assert sum(1 for _ in iter_video_frames(out)) == 20


def test_retarget_bad_inputs(sfm_dir, tmp_path, capsys):
    photo = str(sfm_dir / "faces" / "s12.jpg")
    video = str(sfm_dir / "videos" / "d0.mp4")
    blank = tmp_path / "blank.png"
    write_image(blank, np.full((200, 200, 3), 128, np.uint8))
    out = tmp_path / "out.mp4"
    cases = [
        (["--source", str(blank), "--driving", video], ("blank.png", "face")),
        (["--source", photo, "--driving", str(tmp_path / "notes.txt")], ("notes.txt", "video")),
        (["--source", photo, "--driving", video, "-o", str(tmp_path / "no" / "o.mp4")],
         ("does not exist",)),
    ]
    (tmp_path / "notes.txt").write_text("not a video")
    for argv, fragments in cases:
        if "-o" not in argv:
            argv = [*argv, "-o", str(out)]
        status, _, err = run_cli(capsys, "retarget", *argv, "--no-progress")
        assert_one_line_error(status, err, *fragments)
        assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
