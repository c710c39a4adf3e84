"""``faceanime evaluate`` on the shared videos, subsampled: the report comes out complete and
reproducible, the warp and warp2d renders beat the static baseline on AKD on every video,
what a viewer sees (double faces, head, blink and mouth follow) is reported for every method,
external results are scored (a copy of the input scores as identical) and a corrupt, a
wrong-length and a missing results video are reported per video while the rest of the report
still comes out."""

from __future__ import annotations

import json
import math
import shutil
import statistics

import numpy as np
import pytest

from faceanime.cli import main

VIDEOS = ("d0", "d3", "d6", "d18")
FRAMES = 4  # scored frames per video: enough for the properties, fast on two cores
BASELINES = ("static", "warp", "warp2d")
VIEWER = ("double_face", "head_follow", "blink_follow", "closed_eye", "mouth_corr",
          "width_corr", "brow_corr")


@pytest.fixture(scope="session")
def results_dir(tmp_path_factory, data_dir):
    """A --results folder: d3 an exact copy of the input, d0 corrupt, d18 too short, d6
    missing."""
    from faceanime.io import iter_video_frames, write_video

    folder = tmp_path_factory.mktemp("other_tool")
    videos = data_dir / "videos"
    shutil.copyfile(videos / "d3.mp4", folder / "d3.mp4")
    (folder / "d0.mp4").write_bytes((videos / "d0.mp4").read_bytes()[:3000])
    short = [f for _, f in zip(range(10), iter_video_frames(videos / "d18.mp4"), strict=False)]
    write_video(folder / "d18.mp4", short, fps=30)
    return folder


@pytest.fixture(scope="session")
def self_report(tmp_path_factory, data_dir, results_dir):
    """The CLI's self-reenactment report of the four videos (exit status, JSON, folder)."""
    out = tmp_path_factory.mktemp("eval") / "report"
    paths = [str(data_dir / "videos" / f"{v}.mp4") for v in VIDEOS]
    code = main(["evaluate", "self", *paths, "--frames", str(FRAMES), "--results",
                 str(results_dir), "--model", str(data_dir / "sfm" / "sfm_shape_3448.bin"),
                 "-o", str(out), "--no-progress"])
    report = json.loads((out / "report.json").read_text())
    return code, report, out


def _video(report, name):
    return next(v for v in report["videos"] if v["name"] == name)


@pytest.mark.slow
def test_report_files_and_structure(self_report):
    code, report, out = self_report
    assert code == 0
    assert (out / "report.md").is_file()
    for v in VIDEOS:
        png = out / "plots" / f"{v}.png"
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["faceanime_version"] and report["machine"]["cores"] >= 1
    for v in VIDEOS:
        entry = _video(report, v)
        assert entry["error"] is None
        assert entry["frames_evaluated"] == FRAMES and 0 not in entry["frame_indices"]
        for method in BASELINES:
            m = entry["methods"][method]
            assert m["error"] is None
            assert all(len(vals) == FRAMES for vals in m["per_frame"].values())
            s = m["summary"]
            assert 0 < s["l1"] < 0.2 and 15 < s["psnr"] < 60 and 0.3 < s["ssim"] < 1
            assert s["id"] == 100.0  # the same person, whichever baseline
    md = (out / "report.md").read_text()
    assert "## Mean over videos" in md and all(f"## {v}" in md for v in VIDEOS)
    assert md.count("| method | double face % ↓ | head follow ↑ | blink follow ↑ | "
                    "closed-eye ratio ↓ | mouth follow ↑ |") == 1 + len(VIDEOS)
    # Each viewer table ends with the driver's own frames read mirrored, as a reference.
    assert md.count("| *driver, read mirrored* | – |") == 1 + len(VIDEOS)
    assert report["methods"][:3] == list(BASELINES)  # warp2d is a default baseline


@pytest.mark.slow
def test_viewer_metrics_for_every_method(self_report, results_dir):
    """Every method of every video reports what a viewer sees: finite where defined; undefined
    (null) exactly where the definitions say: a static output follows nothing, and head follow
    needs a driver that moves by 0.02 inter-ocular units on some axis."""
    _, report, _ = self_report
    for v in VIDEOS:
        entry = _video(report, v)
        assert entry["source_faces"] == 1
        ref = entry["reference"]["per_frame"]
        moves = max(statistics.pstdev(ref["head_dx"]), statistics.pstdev(ref["head_dy"])) >= 0.02
        for name, m in entry["methods"].items():
            if m["error"] is not None:
                continue
            s = m["summary"]
            assert set(VIEWER) <= set(s), (v, name)
            assert len(m["per_frame"]["faces"]) == FRAMES and len(m["per_frame"]["ear"]) == FRAMES
            assert s["double_face"] == 0.0, (v, name)  # one face in, one face out
            assert math.isfinite(s["closed_eye"]) and 0 < s["closed_eye"] < 1.5, (v, name)
            if name == "static":
                assert s["closed_eye"] == 1.0
                assert s["head_follow"] is s["blink_follow"] is s["mouth_corr"] is None
                continue
            assert s["mouth_corr"] > 0.9 and s["blink_follow"] is not None, (v, name)
            if moves:
                assert s["head_follow"] > 0.9, (v, name)
            else:
                assert s["head_follow"] is None, (v, name)
        warp, static = entry["methods"]["warp2d"]["summary"], entry["methods"]["static"]["summary"]
        assert warp["akd"] < static["akd"], v  # warped onto the real frames' landmarks
        assert warp["blink_follow"] > 0.9, v
    assert not all(_video(report, v)["methods"]["warp2d"]["summary"]["head_follow"] is None
                   for v in VIDEOS)
    # A copy of the input follows the input exactly, blinks included.
    copy = _video(report, "d3")
    s = copy["methods"][f"results:{results_dir}"]["summary"]
    assert s["head_follow"] == pytest.approx(1.0) and s["blink_follow"] == pytest.approx(1.0)
    assert s["mouth_corr"] == pytest.approx(1.0)
    assert s["closed_eye"] == pytest.approx(copy["reference"]["summary"]["closed_eye"])
    assert copy["reference"]["summary"]["closed_eye"] < 0.9  # d3's eyes do close
    mean = report["mean"]
    assert all(k in mean[m] for k in VIEWER for m in BASELINES)
    # The driver read again, mirrored: a second reading of the same frames, which follows the
    # first closely but not exactly (dlib's errors drawn afresh).
    for v in VIDEOS:
        retest = _video(report, v)["reference"]["summary"]["retest"]
        assert set(VIEWER) <= set(retest) and retest["double_face"] is None
        assert retest["mouth_corr"] > 0.8, v
    assert set(VIEWER) <= set(report["retest_mean"])
    # The job's own tracking of the driver, scored the same way: it drives every renderer.
    for v in VIDEOS:
        tracked = _video(report, v)["reference"]["summary"]["tracked"]
        assert set(VIEWER) <= set(tracked) and tracked["double_face"] is None
        assert tracked["mouth_corr"] > 0.8, v
    assert set(VIEWER) <= set(report["tracked_mean"])


@pytest.mark.slow
def test_warp_beats_static_on_akd_on_every_video(self_report):
    _, report, _ = self_report
    for v in VIDEOS:
        methods = _video(report, v)["methods"]
        static, warp = methods["static"]["summary"], methods["warp"]["summary"]
        assert warp["akd"] < static["akd"], v
    mean = report["mean"]
    assert mean["warp"]["akd"] < mean["static"]["akd"]
    assert mean["warp"]["videos"] == len(VIDEOS)


@pytest.mark.slow
def test_identical_results_video_scores_as_identical(self_report, results_dir):
    _, report, out = self_report
    s = _video(report, "d3")["methods"][f"results:{results_dir}"]
    assert s["error"] is None
    summary = s["summary"]
    assert summary["l1"] == 0 and summary["psnr"] == "inf" and summary["ssim"] == 1
    assert summary["akd"] == 0 and summary["aed"] == 0
    assert all(p == "inf" for p in s["per_frame"]["psnr"])
    assert "∞" in (out / "report.md").read_text()


@pytest.mark.slow
def test_bad_results_videos_are_reported_per_video(self_report, results_dir):
    code, report, out = self_report
    key = f"results:{results_dir}"
    assert code == 0  # the report came out
    corrupt = _video(report, "d0")["methods"][key]["error"]
    short = _video(report, "d18")["methods"][key]["error"]
    missing = _video(report, "d6")["methods"][key]["error"]
    assert "d0.mp4" in corrupt and "readable" in corrupt
    assert "10 frames" in short and "216" in short
    assert "missing" in missing
    for v in ("d0", "d6", "d18"):  # the baselines of those videos are still scored
        assert _video(report, v)["methods"]["warp"]["error"] is None
    assert report["mean"][key]["videos"] == 1
    md = (out / "report.md").read_text()
    assert md.count("**failed**") == 3


@pytest.mark.slow
def test_numbers_are_reproducible(self_report, data_dir):
    """The same input gives the same numbers: the API run again on one video matches the
    CLI's report exactly (through the JSON round trip)."""
    from faceanime.evaluation import EvalConfig, evaluate_self
    from faceanime.evaluation.report import build_report

    _, report, _ = self_report
    config = EvalConfig(frames=FRAMES, progress=False,
                        model=str(data_dir / "sfm" / "sfm_shape_3448.bin"))
    again = build_report("self", evaluate_self([data_dir / "videos" / "d0.mp4"], config), config)
    before = _video(report, "d0")["methods"]
    after = json.loads(json.dumps(again))["videos"][0]["methods"]
    for method in BASELINES:
        assert after[method]["per_frame"] == before[method]["per_frame"], method
        assert after[method]["summary"] == before[method]["summary"], method


@pytest.mark.slow
def test_cross_reenactment(tmp_path, data_dir):
    """A photo driven by a video: the static photo keeps its identity perfectly but follows no
    motion; the warp and warp2d renders follow the driver's head, eyes and mouth."""
    out = tmp_path / "cross"
    other = tmp_path / "other"
    other.mkdir()
    (other / "s1_d3.mp4").write_bytes(b"\x00" * 5000)  # another tool's output, corrupt
    code = main(["evaluate", "cross", str(data_dir / "faces" / "s1.jpg"), "--driving",
                 str(data_dir / "videos" / "d3.mp4"), "--frames", "8", "--model",
                 str(data_dir / "sfm" / "sfm_shape_3448.bin"), "--results", str(other),
                 "-o", str(out), "--no-progress", "--no-plots"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    pair = report["videos"][0]
    assert pair["name"] == "s1_d3" and pair["error"] is None
    static = pair["methods"]["static"]["summary"]
    ours = pair["methods"]["warp"]["summary"]
    assert static["id"] == 100.0 and static["id_dist"] < 1e-5  # the photo itself
    assert static["mouth_corr"] is None  # a photo does not move: no correlation
    assert ours["pose_err"] < static["pose_err"]
    assert ours["mouth_corr"] > 0.5
    assert ours["id"] >= 50
    warp = pair["methods"]["warp2d"]["summary"]
    assert pair["source_faces"] == 1
    for s in (ours, warp):
        assert s["double_face"] == 0.0
        assert s["head_follow"] > 0.9 and s["mouth_corr"] > 0.5
    # warp2d moves the eyelid landmarks themselves; the 3D warp has no eyelid rig yet.
    assert warp["closed_eye"] < 1 and warp["blink_follow"] > 0.5
    assert static["head_follow"] is None and static["closed_eye"] == 1.0
    assert len(pair["reference"]["per_frame"]["ear"]) == 8
    assert "s1_d3.mp4" in pair["methods"][f"results:{other}"]["error"]
    assert not (out / "plots").exists()


def test_cli_errors(tmp_path, data_dir, capsys):
    video = str(data_dir / "videos" / "d0.mp4")
    assert main(["evaluate", "self", str(tmp_path / "nope.mp4"), "-o",
                 str(tmp_path / "r")]) == 1
    assert "nope.mp4: no such file" in capsys.readouterr().err
    assert main(["evaluate", "self", video, "--stride", "0", "-o", str(tmp_path / "r")]) == 1
    assert "--stride 0" in capsys.readouterr().err
    assert main(["evaluate", "self", video, "--results", str(tmp_path / "none"), "-o",
                 str(tmp_path / "r")]) == 1
    assert "no such folder" in capsys.readouterr().err
    assert main(["evaluate", "self", video, "-o", str(tmp_path / "a" / "b")]) == 1
    assert "does not exist" in capsys.readouterr().err
    ckpt = tmp_path / "g.safetensors"
    ckpt.write_bytes(b"not a checkpoint")
    assert main(["evaluate", "self", video, "--generator", str(ckpt), "--frames", "2", "-o",
                 str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "g.safetensors" in err or "faceanime.pgfg" in err  # bad file, or no generator here
    assert not (tmp_path / "r").exists()  # nothing written on a failed start
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "self", video])  # -o is required
    assert exc.value.code == 2


@pytest.mark.slow
def test_video_without_usable_source_is_reported(tmp_path, data_dir):
    """A source frame without a face fails that video only; when every video fails the report
    still comes out and the exit status says so."""
    from faceanime.io import write_video

    blank = tmp_path / "blank.mp4"
    write_video(blank, [np.full((128, 128, 3), 90, np.uint8)] * 6, fps=25)
    out = tmp_path / "r"
    code = main(["evaluate", "self", str(blank), "--model",
                 str(data_dir / "sfm" / "sfm_shape_3448.bin"), "-o", str(out), "--no-progress"])
    assert code == 1
    report = json.loads((out / "report.json").read_text())
    assert "no face in source frame 0" in report["videos"][0]["error"]
    assert report["mean"]["warp"]["videos"] == 0


@pytest.mark.slow
def test_generator_method_is_scored(tmp_path, data_dir):
    """--generator runs the learned renderer beside the baselines (an untrained, seeded network:
    this checks the wiring, not the quality)."""
    pytest.importorskip("faceanime.pgfg")
    import torch

    from faceanime.pgfg.checkpoint import save_checkpoint
    from faceanime.pgfg.config import GeneratorConfig, LossConfig, TrainConfig
    from faceanime.pgfg.networks import Generator

    torch.manual_seed(0)
    weights = save_checkpoint(tmp_path / "ckpt", "final", Generator(GeneratorConfig()), None,
                              None, LossConfig(), TrainConfig(), {"step": 0})
    out = tmp_path / "r"
    code = main(["evaluate", "self", str(data_dir / "videos" / "d0.mp4"), "--frames", "2",
                 "--generator", str(weights), "--methods", "static", "--model",
                 str(data_dir / "sfm" / "sfm_shape_3448.bin"), "-o", str(out), "--no-progress",
                 "--no-plots"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["methods"] == ["static", "generator"]
    generator = report["videos"][0]["methods"]["generator"]
    assert generator["error"] is None, generator["error"]
    assert len(generator["per_frame"]["l1"]) == 2 and 0 < generator["summary"]["l1"] < 0.5


@pytest.mark.slow
def test_results_padded_to_even_sizes_are_scored(tmp_path, data_dir):
    """An H.264 writer (ours, ffmpeg's) pads an odd-sized photo by one row or column: such a
    result is scored on the photo's own pixels, not refused. Here the result is s12.jpg
    (375 wide) written as a still video by faceanime's writer, as retarget writes its output."""
    from faceanime.io import write_video
    from faceanime.io.media import read_image

    photo = data_dir / "faces" / "s12.jpg"
    driver = data_dir / "videos" / "d0.mp4"
    image = read_image(photo)
    assert image.shape[1] % 2 == 1
    other = tmp_path / "other"
    other.mkdir()
    write_video(other / "s12_d0.mp4", [image] * 78, fps=25)
    out = tmp_path / "cross"
    code = main(["evaluate", "cross", str(photo), "--driving", str(driver), "--frames", "4",
                 "--methods", "static", "--model", str(data_dir / "sfm" / "sfm_shape_3448.bin"),
                 "--results", str(other), "-o", str(out), "--no-progress", "--no-plots"])
    assert code == 0
    pair = json.loads((out / "report.json").read_text())["videos"][0]
    result = pair["methods"][f"results:{other}"]
    assert result["error"] is None
    # The still photo, through the codec: the same person, in the same place.
    assert result["summary"]["id"] == 100.0 and result["summary"]["id_dist"] < 0.1
    assert result["summary"]["double_face"] == 0.0
    # Two columns more is another size: refused, with the file named.
    write_video(other / "s12_d0.mp4", [np.pad(image, ((0, 0), (0, 2), (0, 0)))] * 78, fps=25)
    assert main(["evaluate", "cross", str(photo), "--driving", str(driver), "--frames", "4",
                 "--methods", "static", "--model", str(data_dir / "sfm" / "sfm_shape_3448.bin"),
                 "--results", str(other), "-o", str(out), "--no-progress", "--no-plots"]) == 0
    pair = json.loads((out / "report.json").read_text())["videos"][0]
    error = pair["methods"][f"results:{other}"]["error"]
    assert "s12_d0.mp4: frames are 378×500" in error and "photo's size" in error


@pytest.mark.slow
def test_cross_scores_what_retarget_makes(tmp_path, data_dir):
    """The protocol's `warp` is the retarget job: s12 driven by d6 (a fast talker, where a
    renderer driven by the scored frames' own detections followed the reference better than
    the job can). The coefficients the protocol renders are the job's own, exactly, and the
    job's mp4 scored beside the protocol's frames reads the same eyes and mouth (up to the
    codec)."""
    import torch

    from faceanime import retarget
    from faceanime.coefficients import Coefficients
    from faceanime.evaluation.protocol import EvalConfig, Scorer, measure_driving
    from faceanime.fitting import FitConfig
    from faceanime.fitting.fitter import fit_landmarks
    from faceanime.io import read_image
    from faceanime.landmarks.gaze import measure_gaze
    from faceanime.morphable import load_model
    from faceanime.motion import transfer_motion
    from faceanime.render.frames import frames_tensor

    photo = data_dir / "faces" / "s12.jpg"
    driver = data_dir / "videos" / "d6.mp4"
    made = tmp_path / "made"
    made.mkdir()
    retarget(photo, driver, made / "s12_d6.mp4", save_coefficients=tmp_path / "job.npz")
    job = Coefficients.load(tmp_path / "job.npz")

    # The protocol's own steps: the driver measured and captured, the photo fitted, the
    # motion transferred.
    model = load_model(str(data_dir / "sfm" / "sfm_shape_3448.bin"))
    config = EvalConfig(frames=24, methods=("warp",), progress=False, device="cpu")
    scorer = Scorer()
    try:
        drv = measure_driving(driver, model, scorer, config)
        image = read_image(photo)
        points, _ = scorer.detect(image[None])
    finally:
        scorer.close()
    source = fit_landmarks(model, points, image.shape[:2], FitConfig(device="cpu"))
    source.gaze = measure_gaze(frames_tensor(image[None]), points).to(source.expression)
    ours = transfer_motion(source, drv.captured, config.motion, model)
    for key in ("shape", "expression", "jaw", "rotation", "translation", "eyes", "gaze"):
        assert torch.equal(getattr(ours, key), getattr(job, key)), key

    out = tmp_path / "cross"
    assert main(["evaluate", "cross", str(photo), "--driving", str(driver), "--frames", "24",
                 "--methods", "warp", "--model", str(data_dir / "sfm" / "sfm_shape_3448.bin"),
                 "--results", str(made), "-o", str(out), "--no-progress", "--no-plots"]) == 0
    pair = json.loads((out / "report.json").read_text())["videos"][0]
    ours = pair["methods"]["warp"]["per_frame"]
    job = pair["methods"][f"results:{made}"]["per_frame"]
    # Median per-frame gaps from the codec alone: 0.011-0.017 (eye aspect ratio) and 0.009
    # (mouth opening, inter-ocular units); driven by the detections, 0.020 and 0.024.
    for key, most in (("ear", 0.02), ("mouth", 0.015)):
        a, b = np.array(ours[key], float), np.array(job[key], float)
        gap = np.nanmedian(np.abs(a - b))
        assert gap < most, f"{key}: the protocol's warp and the job's file differ by {gap:.3f}"


def test_cross_driver_without_a_face_fails_each_of_its_pairs(tmp_path, data_dir):
    """A driving video without a face: each photo's pair carries one line naming it, the other
    video's pairs go on (videos are evaluated one after the other), and the report's order
    stays photo by photo."""
    from faceanime.evaluation import EvalConfig, evaluate_cross
    from faceanime.io import write_video

    blank = tmp_path / "blank.mp4"
    write_video(blank, [np.full((128, 128, 3), 90, np.uint8)] * 6, fps=25)
    photos = [data_dir / "faces" / "s12.jpg", data_dir / "faces" / "d19.jpg"]
    results = evaluate_cross(photos, [blank, data_dir / "videos" / "d0.mp4"],
                             EvalConfig(methods=("warp",), frames=2, progress=False))
    assert [r.name for r in results] == ["s12_blank", "s12_d0", "d19_blank", "d19_d0"]
    for r in results:
        if r.name.endswith("blank"):
            assert r.error and "blank.mp4" in r.error
        else:
            assert r.error is None and r.methods["warp"].error is None


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_a_report_names_code_that_no_commit_holds(tmp_path):
    """A report measured on a checkout with uncommitted changes named the bare commit, as if
    its numbers were that commit's; now ``+changes`` follows it (untracked files aside)."""
    import subprocess
    from pathlib import Path

    from faceanime.evaluation.report import _git_commit

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(tmp_path), *args], check=True,
                              capture_output=True, text=True).stdout.strip()

    assert _git_commit(tmp_path) is None                      # not a checkout
    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "a")
    head = git("rev-parse", "--short", "HEAD")
    (tmp_path / "notes.txt").write_text("untracked\n")
    assert _git_commit(Path(tmp_path)) == head
    (tmp_path / "a.py").write_text("x = 2\n")
    assert _git_commit(tmp_path) == head + "+changes"
