"""Bad inputs to the jobs: each a one-line error naming the file, exit status 1 and no
output file (nor temporary) left behind; and one bad photo among several is skipped."""

from __future__ import annotations

import os

import numpy as np
import pytest
from helpers import assert_one_line_error, run_cli
from test_predict import tiny_dynamics  # noqa: F401 - a session fixture shared with predict

from faceanime.io import read_metadata, write_image


@pytest.fixture
def bad(data_dir, tmp_path, monkeypatch):
    """Real inputs and broken ones in ``tmp_path / "in"``; outputs go to ``tmp_path / "out"``."""
    monkeypatch.setenv("FACEANIME_MODEL_DIR", str(data_dir / "sfm"))
    folder = tmp_path / "in"
    folder.mkdir()
    (tmp_path / "out").mkdir()
    write_image(folder / "blank.png", np.full((200, 200, 3), 128, np.uint8))
    (folder / "notes.txt").write_text("not an image, not a video")
    (folder / "broken.mp4").write_bytes(os.urandom(4096))  # no decodable frame
    np.savez(folder / "other.npz", weights=np.zeros(3))  # an npz, but not coefficients
    return {"photo": str(data_dir / "faces" / "s12.jpg"),
            "target": str(data_dir / "faces" / "s42.jpg"),
            "video": str(data_dir / "videos" / "d0.mp4"),
            **{p.stem: str(p) for p in folder.iterdir()}}


# Each case: the command line (with {name} filled from the fixture, OUT the output) and the
# fragments the one error line must hold.
CASES = {
    "retarget": [
        ("--source {blank} --driving {video}", ("blank.png", "face")),
        ("--source {notes} --driving {video}", ("notes.txt", "image")),
        ("--source {photo} --driving {broken}", ("broken.mp4", "video")),
        ("--source {photo} --driving {notes}", ("notes.txt", "video", ".npz")),
        ("--source {photo} --driving {other}", ("other.npz", "missing")),
        ("--source {photo} --driving {video} --smooth -1", ("smooth",)),
        ("--source {photo} --driving {video} --lower-face-weight 0", ("lower_face_weight",)),
        ("--source {photo} --driving {video} --track-parts 0", ("--track-parts",)),
    ],
    "predict": [
        ("--source {blank} --dynamics {ckpt} --frames 5", ("blank.png", "face")),
        ("--source {notes} --dynamics {ckpt} --frames 5", ("notes.txt", "image")),
        ("--source {photo} --dynamics {ckpt} --frames 5 --observe {broken}",
         ("broken.mp4", "video")),
        ("--source {photo} --dynamics {notes} --frames 5", ("notes.txt",)),
        ("--source {photo} --dynamics {ckpt} --frames 0", ("--frames", ">= 1")),
    ],
    "animate": [
        ("--source {blank} --target {target} --frames 5", ("blank.png", "face")),
        ("--source {notes} --target {target} --frames 5", ("notes.txt", "image")),
        ("--source {photo} --target {broken} --frames 5", ("broken.mp4", "image")),
        ("--source {photo} --target {other} --frames 5", ("other.npz", "missing")),
        ("--source {photo} --target {target} --frames 0", ("--frames", ">= 1")),
        ("--source {photo} --target {target} --frames 1 --dynamics {ckpt}", ("2 frames",)),
    ],
    "swap": [
        ("--source {blank} --target {video}", ("blank.png", "face")),
        ("--source {notes} --target {video}", ("notes.txt", "image")),
        ("--source {photo} --target {broken}", ("broken.mp4", "video")),
        ("--source {photo} --target {target}", ("s42.jpg", "must be a video")),
        ("--source {photo} --target {video} --feather -1", ("feather",)),
    ],
}
OUTPUTS = [  # output paths that must be refused before any work, for every job
    ("out/o.avi", (".mp4",)),
    ("missing/o.mp4", ("missing", "does not exist")),
    ("in/notes.txt/o.mp4", ("notes.txt", "is not a folder")),
]
BASE = {"retarget": "--source {photo} --driving {video}",
        "predict": "--source {photo} --dynamics {ckpt} --frames 5",
        "animate": "--source {photo} --target {target} --frames 5",
        "swap": "--source {photo} --target {video}"}


def _argv(template: str, files: dict) -> list[str]:
    return [part.format(**files) for part in template.split()]


@pytest.mark.parametrize("job", sorted(CASES))
def test_bad_inputs_are_one_line_errors(job, bad, tiny_dynamics, tmp_path, capsys):  # noqa: F811
    files = {**bad, "ckpt": str(tiny_dynamics)}
    out = tmp_path / "out" / "o.mp4"
    cases = [(t, f, "out/o.mp4") for t, f in CASES[job]]
    cases += [(BASE[job], f, path) for path, f in OUTPUTS]
    for template, fragments, output in cases:
        argv = [job, *_argv(template, files), "-o", str(tmp_path / output), "--no-progress"]
        status, _, err = run_cli(capsys, *argv)
        assert_one_line_error(status, err, *fragments)
        assert not out.exists()
        assert not list((tmp_path / "out").iterdir()), "a temporary was left behind"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_unwritable_output_folder(bad, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    status, _, err = run_cli(capsys, "animate", *_argv(BASE["animate"], bad), "-o",
                             str(locked / "o.mp4"))
    assert_one_line_error(status, err, "not writable")


def test_one_bad_photo_among_several_is_skipped(bad, tmp_path, capsys):
    folder = tmp_path / "many"
    folder.mkdir()
    for name in ("photo", "blank"):
        src = bad[name]
        (folder / os.path.basename(src)).write_bytes(open(src, "rb").read())
    (folder / "readme.txt").write_text("a folder's other files are not sources")
    out = tmp_path / "out"
    status, _, err = run_cli(capsys, "animate", "--source", str(folder), bad["notes"],
                             "--target",
                             bad["target"], "--frames", "3", "--no-paste-back", "--size", "96",
                             "-o", str(out), "--no-progress")
    assert status == 1
    lines = err.strip().splitlines()
    assert sum(line.startswith("faceanime: skipped: ") for line in lines) == 2, err
    assert any("blank.png" in line and "face" in line for line in lines)
    assert lines[-1].startswith("faceanime: error: 2 of 3 sources failed"), err
    assert sorted(p.name for p in out.iterdir()) == ["s12.mp4"]
    assert read_metadata(out / "s12.mp4")["faceanime_job"] == "animate"
    # Several sources need a folder to write into.
    status, _, err = run_cli(capsys, "animate", "--source", bad["photo"], bad["target"],
                             "--target", bad["target"], "-o", str(out / "x.mp4"))
    assert_one_line_error(status, err, "must be an existing folder")
