"""`faceanime fit` end to end on the real photo and video, and its one-line errors."""

from __future__ import annotations

import numpy as np
import pytest

from faceanime.cli import main
from faceanime.io import read_image, read_video_info


@pytest.fixture()
def sfm_path(data_dir):
    return str(data_dir / "sfm" / "sfm_shape_3448.bin")


def run(argv, capsys):
    code = main(argv)
    return code, capsys.readouterr().err


def test_fit_photo_with_landmarks_file(tmp_path, data_dir, sfm_path, capsys):
    out, overlay = tmp_path / "fit.npz", tmp_path / "fit.png"
    code, err = run(["fit", str(data_dir / "faces" / "image_0010.png"), "-o", str(out),
                     "--landmarks", str(data_dir / "faces" / "image_0010.pts"),
                     "--model", sfm_path, "--overlay", str(overlay)], capsys)
    assert code == 0, err
    with np.load(out) as data:
        assert data["shape"].shape == (63,) and data["expression"].shape == (1, 6)
        assert data["rotation"].shape == (1, 3, 3) and data["translation"].shape == (1, 3)
        assert data["scale"].shape == (1,) and data["landmarks"].shape == (1, 68, 2)
        assert data["fitted_landmarks"].shape == (1, 68, 2)
        assert data["image_size"].tolist() == [1024, 1280] and str(data["model"]) == "sfm"
        err_px = np.linalg.norm(data["fitted_landmarks"] - data["landmarks"], axis=-1)
        nose = data["fitted_landmarks"][0, 30].round().astype(int)
        # Where the eyes look, measured from the pixels.
        assert data["gaze"].shape == (1, 2, 2) and np.isfinite(data["gaze"]).all()
    assert np.nanmean(err_px) < 8.0
    image, drawn = read_image(data_dir / "faces" / "image_0010.png"), read_image(overlay)
    assert drawn.shape == image.shape
    changed = np.abs(drawn.astype(int) - image.astype(int)).sum(-1) > 30
    # The wireframe covers the face (around the nose tip), not the background corner.
    assert changed[nose[1] - 40:nose[1] + 40, nose[0] - 40:nose[0] + 40].mean() > 0.2
    assert changed[:100, :100].mean() == 0


def test_fit_video_detects_tracks_and_overlays(tmp_path, data_dir, sfm_path, capsys):
    out, overlay = tmp_path / "d0.npz", tmp_path / "d0_fit.mp4"
    code, err = run(["fit", str(data_dir / "videos" / "d0.mp4"), "-o", str(out), "--model",
                     sfm_path, "--overlay", str(overlay), "--no-progress"], capsys)
    assert code == 0, err
    with np.load(out) as data:
        assert data["expression"].shape == (78, 6) and data["valid"].all()
        assert data["gaze"].shape == (78, 2, 2) and np.isfinite(data["gaze"]).all()
        assert float(data["fps"]) == 25.0
    info = read_video_info(overlay)
    assert info.size == (512, 512) and info.fps == pytest.approx(25.0)


@pytest.mark.parametrize("case", ["bad_overlay", "wrong_points", "not_npz", "no_dir",
                                  "unknown_model", "no_face"])
def test_fit_bad_input_one_line(tmp_path, data_dir, sfm_path, capsys, case):
    photo = str(data_dir / "faces" / "image_0010.png")
    out = str(tmp_path / "out.npz")
    argv = ["fit", photo, "-o", out, "--model", sfm_path,
            "--landmarks", str(data_dir / "faces" / "image_0010.pts")]
    if case == "bad_overlay":
        argv += ["--overlay", str(tmp_path / "x.mp4")]
    elif case == "wrong_points":
        pts = tmp_path / "five.pts"
        pts.write_text("version: 1\nn_points: 5\n{\n" + "1 2\n" * 5 + "}\n")
        argv[argv.index("--landmarks") + 1] = str(pts)
    elif case == "not_npz":
        argv[argv.index("-o") + 1] = str(tmp_path / "out.txt")
    elif case == "no_dir":
        argv[argv.index("-o") + 1] = str(tmp_path / "missing" / "out.npz")
    elif case == "unknown_model":
        argv[argv.index("--model") + 1] = "no-such-model"
    elif case == "no_face":
        grey = tmp_path / "grey.png"
        from faceanime.io import write_image

        write_image(grey, np.full((200, 200, 3), 128, np.uint8))
        argv = ["fit", str(grey), "-o", out, "--model", sfm_path]
    code, err = run(argv, capsys)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("faceanime: error:"), err
    assert list(tmp_path.glob("*.npz")) == [] and list(tmp_path.glob(".*")) == []
