"""`faceanime prepare` on the real short video (d0, 78 frames): the dataset layout, aligned and
steady crops, skip reasons, resuming, interruption safety and one-line errors."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import assert_one_line_error, run_cli

from faceanime.cli import main
from faceanime.coefficients import Coefficients
from faceanime.dataset import (
    NO_FACE,
    TOO_SHORT,
    UNREADABLE,
    PrepareConfig,
    VideoInput,
    crop_track,
    find_videos,
    load_manifest,
    prepare_dataset,
    select_shard,
)
from faceanime.dataset import prepare as prepare_module
from faceanime.dataset.crops import similarity_parameters
from faceanime.io import iter_video_frames, read_video_info, write_video
from faceanime.landmarks import create_detector, detect_landmarks

CROP = 64
# FFHQ layout at crop scale 1, fractions of the crop side: left eye, right eye, mouth centre.
FFHQ = np.array([(0.375, 0.475), (0.625, 0.475), (0.5, 0.725)])


def eyes_mouth(points: np.ndarray) -> np.ndarray:
    """``(..., 68, 2)`` -> ``(..., 3, 2)`` eye centres and mouth-corner midpoint."""
    return np.stack([points[..., 36:42, :].mean(-2), points[..., 42:48, :].mean(-2),
                     (points[..., 48, :] + points[..., 54, :]) / 2], -2)


def jitter(affine: torch.Tensor) -> float:
    """Mean frame-to-frame acceleration of the crop window, in crop pixels (centre, scale and
    angle each expressed as a motion at the crop's scale)."""
    p = similarity_parameters(affine.double(), CROP)
    accel = (p[2:] - 2 * p[1:-1] + p[:-2]).abs()
    scale = p[:, 2].exp().mean()
    return float((accel[:, :2].norm(dim=1) * scale + (accel[:, 2] + accel[:, 3]) * CROP / 2).mean())


def mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def inputs(data_dir, tmp_path_factory) -> Path:
    """A folder with d0 (linked, not copied), a corrupt .mp4 and a faceless noise video."""
    folder = tmp_path_factory.mktemp("inputs")
    (folder / "d0.mp4").symlink_to(data_dir / "videos" / "d0.mp4")
    (folder / "broken.mp4").write_bytes(np.random.default_rng(0).bytes(20_000))
    noise = np.random.default_rng(1).integers(0, 256, (30, 96, 96, 3), dtype=np.uint8)
    write_video(folder / "blank.mp4", iter(noise), fps=25.0)
    return folder


@pytest.fixture(scope="module")
def sfm_path(data_dir) -> str:
    return str(data_dir / "sfm" / "sfm_shape_3448.bin")


@pytest.fixture(scope="module")
def prepared(inputs, sfm_path, tmp_path_factory) -> tuple[int, str, Path, float]:
    """``faceanime prepare`` on the input folder: (status, stdout, dataset dir, seconds)."""
    root = tmp_path_factory.mktemp("prepared") / "dataset"
    out = io.StringIO()
    start = time.monotonic()
    with contextlib.redirect_stdout(out):
        status = main(["prepare", str(inputs), "-o", str(root), "--model", sfm_path,
                       "--crop-size", str(CROP), "--no-progress"])
    return status, out.getvalue(), root, time.monotonic() - start


def config(sfm_path: str, **changes) -> PrepareConfig:
    return PrepareConfig(model=sfm_path, crop_size=CROP, progress=False, **changes)


def test_prepare_layout_and_skip_report(prepared):
    status, out, root, _ = prepared
    assert status == 0, out
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["version"] == 1 and manifest["model"] == "sfm"
    assert manifest["crop_size"] == CROP
    videos = manifest["videos"]
    assert set(videos) == {"d0", "broken", "blank"}
    d0 = videos["d0"]
    assert (d0["status"], d0["reason"], d0["frames"], d0["fps"]) == ("ok", None, 78, 25.0)
    assert videos["broken"]["status"] == "skipped"
    assert videos["broken"]["reason"].startswith(UNREADABLE + ": ")
    assert videos["blank"]["status"] == "skipped"
    assert videos["blank"]["reason"].startswith(NO_FACE + ": ")
    # The report: a summary line and the table of skipped videos with their reasons.
    assert out.startswith("1 of 3 videos ok (1 prepared), 2 skipped"), out
    rows = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert set(rows) == {"broken", "blank"}
    assert f"{NO_FACE}: " in rows["blank"] and f"{UNREADABLE}: " in rows["broken"]

    coeffs = Coefficients.load(root / "coefficients" / "d0.npz")
    assert coeffs.n_frames == 78 and bool(coeffs.valid.all()) and coeffs.fps == 25.0
    assert coeffs.expression.shape == (78, 6) and coeffs.landmarks.shape == (78, 68, 2)
    # Skipped videos leave no files behind.
    names = sorted(p.name for p in root.rglob("*") if p.is_file())
    assert names == [".lock", "d0.mp4", "d0.npz", "d0.npz", "manifest.json"]


def test_crops_put_eyes_at_ffhq_positions_and_hold_steady(prepared):
    _, _, root, _ = prepared
    info = read_video_info(root / "crops" / "d0.mp4")
    assert info.size == (CROP, CROP) and info.fps == pytest.approx(25.0)
    crops = list(iter_video_frames(root / "crops" / "d0.mp4"))
    assert len(crops) == 78
    with np.load(root / "crops" / "d0.npz") as data:
        affine, valid = data["affine"], data["valid"]
        assert int(data["crop_size"]) == CROP
    assert affine.shape == (78, 2, 3) and valid.shape == (78,) and valid.all()

    # The stored affine maps each frame's landmarks to the FFHQ layout (within the smoothing).
    points = Coefficients.load(root / "coefficients" / "d0.npz").landmarks.numpy()
    in_crop = np.einsum("tij,tkj->tki", affine[:, :, :2], points) + affine[:, None, :, 2]
    placed = (eyes_mouth(in_crop) + 0.5) / CROP
    assert np.abs(placed - FFHQ).max() < 0.03

    # And the pixels agree: landmarks detected in the crops themselves land there too, and on
    # the points the affine predicts for that very frame (right frames, right warp direction).
    with create_detector("dlib") as detector:
        found_all = {i: detect_landmarks(crops[i], detector).points for i in (0, 39, 77)}
    for i, found in found_all.items():
        assert np.abs((eyes_mouth(found) + 0.5) / CROP - FFHQ).max() < 0.04, i
        assert np.abs(eyes_mouth(found) - eyes_mouth(in_crop[i])).max() < 2.5, i

    # Steady: far less shake than cropping every frame on its own.
    single = crop_track(torch.from_numpy(points), torch.ones(78, dtype=torch.bool), CROP,
                        sigma=0.0)[0]
    steady = jitter(torch.from_numpy(affine))
    assert steady < 0.1 and steady < 0.4 * jitter(single), (steady, jitter(single))


def test_resume_keeps_finished_and_redoes_missing_crops(prepared, inputs, sfm_path, tmp_path):
    _, _, source, first = prepared
    root = tmp_path / "dataset"
    shutil.copytree(source, root)
    before = mtimes(root)

    start = time.monotonic()
    report = prepare_dataset([inputs], root, config(sfm_path))
    assert time.monotonic() - start < first / 3
    assert report.actions == {"blank": "skipped before", "broken": "skipped before",
                              "d0": "done before"}
    assert report.ok == ["d0"] and mtimes(root) == before

    (root / "crops" / "d0.mp4").unlink()
    report = prepare_dataset([inputs], root, config(sfm_path))
    assert report.actions["d0"] == "cropped" and report.ok == ["d0"]
    after = mtimes(root)
    changed = {name for name in after if after[name] != before.get(name)}
    # Only d0's crops were redone; its coefficients (and the skipped videos) were left alone.
    assert changed <= {"crops/d0.mp4", "crops/d0.npz", "manifest.json"}, changed
    assert "crops/d0.mp4" in changed
    assert len(list(iter_video_frames(root / "crops" / "d0.mp4"))) == 78


def test_interrupted_run_leaves_nothing_trusted(inputs, sfm_path, tmp_path, monkeypatch):
    root = tmp_path / "dataset"
    video = inputs / "d0.mp4"
    real = prepare_module.iter_crops

    def interrupted(*args, **kwargs):
        for i, crop in enumerate(real(*args, **kwargs)):
            if i == 20:
                raise KeyboardInterrupt
            yield crop

    monkeypatch.setattr(prepare_module, "iter_crops", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset([video], root, config(sfm_path))
    monkeypatch.undo()
    # The half-written crops were removed, and the manifest does not call d0 done.
    assert "d0" not in load_manifest(root).videos
    assert not (root / "crops" / "d0.mp4").exists()
    assert not [p for p in root.rglob(".*.part.*")]

    # What a killed run (no chance to clean up) would leave: temporary files, and a damaged
    # file under a final name. Neither may be trusted.
    leftovers = [root / "crops" / ".d0.k1ll3d.part.mp4", root / ".manifest.x7.part.json",
                 root / "coefficients" / ".d0.abc.part.npz"]
    for path in leftovers:
        path.write_bytes(b"half a file")
    (root / "crops" / "d0.mp4").write_bytes(b"not a video")
    report = prepare_dataset([video], root, config(sfm_path))
    assert report.actions == {"d0": "prepared"}
    assert not any(p.exists() for p in leftovers)
    assert len(list(iter_video_frames(root / "crops" / "d0.mp4"))) == 78
    assert load_manifest(root).videos["d0"].ok


def test_too_short_is_skipped_then_retried_with_lower_minimum(inputs, sfm_path, tmp_path,
                                                               capsys):
    root = tmp_path / "dataset"
    argv = ["prepare", str(inputs / "d0.mp4"), "-o", str(root), "--model", sfm_path,
            "--no-crops", "--no-progress"]
    status, out, err = run_cli(capsys, *argv, "--min-frames", "100")
    assert_one_line_error(status, err, "none of the 1 videos", str(root))
    assert "d0" in out and f"{TOO_SHORT}: 78 of 78 frames" in out
    entry = load_manifest(root).videos["d0"]
    assert not entry.ok and entry.valid_frames == 78 and entry.frames == 78
    assert not (root / "coefficients" / "d0.npz").exists()

    # The same settings keep it skipped without tracking again; a lower minimum retries it.
    report = prepare_dataset([inputs / "d0.mp4"], root,
                             config(sfm_path, min_frames=100, crops=False))
    assert report.actions == {"d0": "skipped before"}
    status, out, err = run_cli(capsys, *argv, "--min-frames", "50")
    assert status == 0, err
    assert load_manifest(root).videos["d0"].ok
    assert Coefficients.load(root / "coefficients" / "d0.npz").n_frames == 78
    assert not (root / "crops").exists()


def test_merge_dataset_folders(prepared, sfm_path, tmp_path, capsys):
    _, _, shard, _ = prepared
    root = tmp_path / "merged"
    # A dataset folder as an input contributes its videos with their files.
    report = prepare_dataset([shard], root, config(sfm_path))
    assert report.actions == {"blank": "merged", "broken": "merged", "d0": "merged"}
    assert report.ok == ["d0"] and sorted(report.skipped) == ["blank", "broken"]
    assert load_manifest(root) == load_manifest(shard)
    for rel in ("coefficients/d0.npz", "crops/d0.mp4", "crops/d0.npz"):
        assert (root / rel).read_bytes() == (shard / rel).read_bytes(), rel
    before = mtimes(root)
    report = prepare_dataset([shard], root, config(sfm_path))
    assert report.actions["d0"] == "done before" and mtimes(root) == before

    # Another shard whose d0 is a different video: refused before anything is written.
    other = tmp_path / "other"
    shutil.copytree(shard, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["videos"]["d0"]["source"] = str(tmp_path / "elsewhere" / "d0.mp4")
    (other / "manifest.json").write_text(json.dumps(manifest))
    status, _, err = run_cli(capsys, "prepare", str(shard), str(other), "-o",
                             str(tmp_path / "both"), "--model", sfm_path, "--no-progress")
    assert_one_line_error(status, err, "'d0'")
    # Crops of another size cannot be merged into this dataset.
    status, _, err = run_cli(capsys, "prepare", str(shard), "-o", str(tmp_path / "big"),
                             "--model", sfm_path, "--no-progress", "--crop-size", "128")
    assert_one_line_error(status, err, "crops of size 64")


def test_find_videos_names_subfolders_and_skips_the_dataset(tmp_path):
    for rel in ("a/id1/v1/00001.mp4", "a/id1/v2/00001.MOV", "a/notes.txt", "a/.hidden.mp4",
                "a/id1/.cache/x.mp4", "a/data/crops/00001.mp4"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    found = find_videos([tmp_path / "a", tmp_path / "a/id1/v1/00001.mp4"],
                        exclude=tmp_path / "a" / "data")
    assert [v.stem for v in found] == ["id1__v1__00001", "id1__v2__00001"]
    assert all(v.path.is_absolute() for v in found)


def test_shards_are_disjoint_and_cover_every_video():
    videos = [VideoInput(f"id{i}__clip", Path(f"/v/{i}.mp4")) for i in range(200)]
    shards = [select_shard(videos, i, 8) for i in range(8)]
    assert sorted(v.stem for shard in shards for v in shard) == sorted(v.stem for v in videos)
    assert min(len(shard) for shard in shards) > 10  # spread, not all in one
    # A video keeps its shard when the corpus grows.
    assert select_shard(videos[:50], 3, 8) == [v for v in shards[3] if v in videos[:50]]


@pytest.mark.parametrize("case", ["no_videos", "missing_input", "output_under_file",
                                  "output_is_file", "same_name", "odd_crop", "locked"])
def test_prepare_errors_are_one_line(case, tmp_path, capsys):
    video = tmp_path / "in" / "v.mp4"
    video.parent.mkdir()
    video.write_bytes(b"x")
    out = tmp_path / "dataset"
    argv = ["prepare", str(video), "-o", str(out), "--no-progress"]
    expect = []
    if case == "no_videos":
        empty = tmp_path / "empty"
        empty.mkdir()
        argv[1], expect = str(empty), ["no input videos"]
    elif case == "missing_input":
        argv[1], expect = str(tmp_path / "nope.mp4"), ["nope.mp4", "no such file"]
    elif case == "output_under_file":
        (tmp_path / "file").write_text("x")
        argv[3], expect = str(tmp_path / "file" / "dataset"), ["cannot create"]
    elif case == "output_is_file":
        (tmp_path / "file").write_text("x")
        argv[3], expect = str(tmp_path / "file"), ["cannot create"]
    elif case == "same_name":
        other = tmp_path / "other" / "v.mp4"
        other.parent.mkdir()
        other.write_bytes(b"y")
        argv.insert(2, str(other.parent))
        expect = ["'v'", "common parent folder"]
    elif case == "odd_crop":
        argv += ["--crop-size", "63"]
        expect = ["crop size 63", "even"]
    elif case == "locked":
        import fcntl

        out.mkdir()
        handle = open(out / ".lock", "a")
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        expect = ["another 'faceanime prepare'"]
    status, _, err = run_cli(capsys, *argv)
    assert_one_line_error(status, err, *expect)
