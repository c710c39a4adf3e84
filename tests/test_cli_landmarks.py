"""``faceanime landmarks``: outputs on real files, and bad inputs failing with one line, exit 1
and no output file left behind."""

from __future__ import annotations

import subprocess

import imageio_ffmpeg
import numpy as np
import pytest

from faceanime.cli import main
from faceanime.io import iter_video_frames, read_image, read_video_info, write_image
from faceanime.landmarks import read_pts


def _fails_cleanly(argv: list[str], capsys, folder, match: str) -> None:
    before = set(folder.iterdir())
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("faceanime: error: ") and match in err, err
    assert set(folder.iterdir()) == before, "an output (or a temporary file) was left behind"


def test_image_to_npz_pts_and_overlay(data_dir, tmp_path, capsys):
    image = data_dir / "faces" / "image_0010.png"
    out, overlay = tmp_path / "lm.npz", tmp_path / "lm.png"
    assert main(["landmarks", str(image), "-o", str(out), "--overlay", str(overlay)]) == 0
    assert "1 face" in capsys.readouterr().out
    with np.load(out) as data:
        assert data["landmarks"].shape == (1, 68, 2) and data["landmarks"].dtype == np.float32
        assert data["raw_landmarks"].shape == (1, 68, 2) and data["boxes"].shape == (1, 4)
        assert data["valid"].tolist() == [True]
        assert data["image_size"].tolist() == [1024, 1280] and float(data["fps"]) == 0.0
        assert str(data["backend"]) == "dlib" and str(data["source"]) == str(image)
        points = data["landmarks"][0]
    drawn = read_image(overlay)
    assert drawn.shape == (1024, 1280, 3)
    x, y = np.rint(points[30]).astype(int)  # nose tip: a green disc on the overlay
    assert tuple(drawn[y, x]) == (0, 255, 0)

    pts = tmp_path / "lm.pts"
    assert main(["landmarks", str(image), "-o", str(pts)]) == 0
    np.testing.assert_allclose(read_pts(pts), points, atol=1e-4)
    assert pts.read_text().startswith("version: 1\nn_points:  68\n{\n")


def test_pts_input_converts_ground_truth(data_dir, tmp_path):
    out = tmp_path / "gt.npz"
    assert main(["landmarks", str(data_dir / "faces" / "image_0010.png"), "--pts",
                 str(data_dir / "faces" / "image_0010.pts"), "-o", str(out)]) == 0
    with np.load(out) as data:
        np.testing.assert_allclose(data["landmarks"][0],
                                   read_pts(data_dir / "faces" / "image_0010.pts"))
        assert str(data["backend"]) == "pts"


@pytest.fixture(scope="module")
def short_clip(data_dir, tmp_path_factory):
    """The first second of d3 (30 frames, with its audio track)."""
    clip = tmp_path_factory.mktemp("clip") / "d3_1s.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i",
                    str(data_dir / "videos" / "d3.mp4"), "-t", "1", "-c:v", "libx264",
                    "-c:a", "aac", str(clip)], check=True)
    return clip


def test_video_to_npz_and_overlay_keeps_audio(short_clip, tmp_path, capsys):
    out, overlay = tmp_path / "v.npz", tmp_path / "v.mp4"
    assert main(["landmarks", str(short_clip), "-o", str(out), "--overlay", str(overlay),
                 "--no-progress", "--smooth", "1.5"]) == 0
    captured = capsys.readouterr()
    assert "30 frames, 30 with a face" in captured.out and captured.err == ""
    with np.load(out) as data:
        assert data["landmarks"].shape == (30, 68, 2) and data["valid"].all()
        assert float(data["fps"]) == 30.0 and data["image_size"].tolist() == [512, 512]
        assert not np.array_equal(data["landmarks"], data["raw_landmarks"])  # smoothed
    info = read_video_info(overlay)
    assert info.has_audio and info.size == (512, 512)
    assert sum(1 for _ in iter_video_frames(overlay)) == 30


def test_not_an_image(tmp_path, capsys):
    fake = tmp_path / "notes.png"
    fake.write_text("this is a text file, not a PNG")
    _fails_cleanly(["landmarks", str(fake), "-o", str(tmp_path / "o.npz")], capsys, tmp_path,
                   "notes.png: not a readable image")


@pytest.mark.parametrize("kind", ["grey", "background"])
def test_image_without_a_face(data_dir, tmp_path, capsys, kind):
    if kind == "grey":
        image = np.full((240, 320, 3), 128, dtype=np.uint8)
    else:  # the top-left corner of a real frame: texture, no face
        frame = next(iter(iter_video_frames(data_dir / "videos" / "d3.mp4")))
        image = np.ascontiguousarray(frame[:100, :100])
    path = write_image(tmp_path / f"{kind}.png", image)
    _fails_cleanly(["landmarks", str(path), "-o", str(tmp_path / "o.npz"), "--overlay",
                    str(tmp_path / "o.png")], capsys, tmp_path, f"{kind}.png: no face found")


def test_face_index_out_of_range(data_dir, tmp_path, capsys):
    _fails_cleanly(["landmarks", str(data_dir / "faces" / "s42.jpg"), "-o",
                    str(tmp_path / "o.npz"), "--face-index", "3"], capsys, tmp_path,
                   "face index 3 requested but only 1 face found")


@pytest.mark.parametrize("content,match", [
    (b"", "file is empty"),
    (b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40, "not a readable video"),
])
def test_empty_and_corrupt_videos(tmp_path, capsys, content, match):
    video = tmp_path / "clip.mp4"
    video.write_bytes(content)
    _fails_cleanly(["landmarks", str(video), "-o", str(tmp_path / "o.npz"), "--no-progress"],
                   capsys, tmp_path, match)


def test_truncated_video(data_dir, tmp_path, capsys):
    # The first 2 kB of a real mp4: a valid header, no decodable frame.
    video = tmp_path / "cut.mp4"
    video.write_bytes((data_dir / "videos" / "d0.mp4").read_bytes()[:2048])
    _fails_cleanly(["landmarks", str(video), "-o", str(tmp_path / "o.npz"), "--no-progress"],
                   capsys, tmp_path, "cut.mp4")


def test_unwritable_outputs(data_dir, tmp_path, capsys):
    image = str(data_dir / "faces" / "s42.jpg")
    _fails_cleanly(["landmarks", image, "-o", str(tmp_path / "missing" / "o.npz")], capsys,
                   tmp_path, "does not exist")
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    _fails_cleanly(["landmarks", image, "-o", str(a_file / "o.npz")], capsys, tmp_path,
                   "does not exist")
    _fails_cleanly(["landmarks", image, "-o", str(tmp_path / "o.npz"), "--overlay",
                    str(tmp_path / "missing" / "o.png")], capsys, tmp_path, "does not exist")


@pytest.mark.parametrize("args,match", [
    (["-o", "OUT/o.txt"], "output must be .npz"),
    (["-o", "OUT/o.npz", "--overlay", "OUT/o.mp4"], "overlay of an image"),
    (["-o", "OUT/o.npz", "--pts", "OUT/none.pts"], "no such .pts file"),
])
def test_bad_arguments_for_an_image(data_dir, tmp_path, capsys, args, match):
    argv = ["landmarks", str(data_dir / "faces" / "s42.jpg")]
    argv += [a.replace("OUT", str(tmp_path)) for a in args]
    _fails_cleanly(argv, capsys, tmp_path, match)


def test_pts_output_for_a_video_is_refused(short_clip, tmp_path, capsys):
    _fails_cleanly(["landmarks", str(short_clip), "-o", str(tmp_path / "o.pts")], capsys,
                   tmp_path, "use .npz for a video")


def test_zero_parts_is_refused(short_clip, tmp_path, capsys):
    _fails_cleanly(["landmarks", str(short_clip), "-o", str(tmp_path / "o.npz"), "--parts", "0"],
                   capsys, tmp_path, "parts 0 (--parts, --track-parts): must be at least 1")
