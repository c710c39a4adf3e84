"""Provenance: every generated video and image says it was synthesised by faceanime (version,
job, source hash); ``--watermark`` adds a visible mark."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from helpers import run_cli

from faceanime import __version__
from faceanime.io import iter_video_frames, read_image, read_metadata, write_image, write_video
from faceanime.jobs.common import provenance, watermark_frame


def test_metadata_round_trips_through_mp4_png_and_jpeg(tmp_path):
    source = tmp_path / "photo.png"
    write_image(source, np.full((40, 30, 3), 90, np.uint8))
    tags = provenance("animate", source)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert tags["faceanime_source_sha256"] == digest
    frames = [np.full((32, 48, 3), v, np.uint8) for v in (10, 200)]
    write_video(tmp_path / "v.mp4", frames, 25, metadata=tags)
    write_image(tmp_path / "i.png", frames[0], metadata=tags)
    write_image(tmp_path / "i.jpg", frames[0], metadata=tags)
    for name in ("v.mp4", "i.png", "i.jpg"):
        comment = read_metadata(tmp_path / name)["comment"]
        assert f"faceanime {__version__} (animate)" in comment and digest in comment, name
    video = read_metadata(tmp_path / "v.mp4")
    assert video["faceanime_job"] == "animate" and video["description"] == tags["description"]
    # Plain writes stay plain.
    write_video(tmp_path / "plain.mp4", frames, 25)
    assert "comment" not in read_metadata(tmp_path / "plain.mp4")


def test_watermark_marks_only_a_corner():
    frame = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    marked = watermark_frame(frame)
    changed = np.abs(marked.astype(int) - frame).sum(-1) > 0
    ys, xs = np.nonzero(changed)
    assert changed.mean() > 0.005  # visible
    assert ys.min() > 240 * 0.75 and xs.min() > 320 * 0.4  # bottom-right only
    # White text on a dark band: both extremes appear where the mark is.
    region = marked[changed]
    assert (region.min(-1) > 200).sum() > 20 and (region.max(-1) < 100).sum() > 20


@pytest.fixture
def sfm_dir(data_dir, monkeypatch):
    monkeypatch.setenv("FACEANIME_MODEL_DIR", str(data_dir / "sfm"))
    return data_dir


@pytest.mark.slow
def test_job_outputs_carry_provenance_and_watermark(sfm_dir, tmp_path, capsys):
    photo = sfm_dir / "faces" / "s12.jpg"
    common = ["animate", "--source", str(photo), "--target", str(sfm_dir / "faces" / "s42.jpg"),
              "--frames", "3", "--no-paste-back", "--size", "192", "--quiet"]
    for name, extra in (("plain.mp4", []), ("marked.png", ["--watermark"])):
        status, _, err = run_cli(capsys, *common, "-o", str(tmp_path / name), *extra)
        assert status == 0 and err == "", err  # --quiet: nothing on stderr
    digest = hashlib.sha256(photo.read_bytes()).hexdigest()
    for name in ("plain.mp4", "marked.png"):
        tags = read_metadata(tmp_path / name)
        assert tags["faceanime_job"] == "animate" and tags["faceanime_source_sha256"] == digest
        assert tags["faceanime_version"] == __version__
    plain = list(iter_video_frames(tmp_path / "plain.mp4"))
    assert len(plain) == 3
    marked = read_image(tmp_path / "marked.png")  # an image output is the last frame
    assert marked.shape == (192, 192, 3)
    diff = np.abs(plain[-1].astype(int) - marked).max(-1)
    assert diff[150:, 60:].max() > 100  # the mark, bottom right
    # Elsewhere the same frame, up to codec noise: closer to the last video frame than to the
    # first (the head moves between them).
    assert diff[:120].mean() < 4
    assert diff[:120].mean() < np.abs(plain[0].astype(int) - marked).max(-1)[:120].mean()
