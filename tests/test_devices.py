"""--device auto|cpu|cuda|cuda:N: resolved and checked before any work, said in the summary."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import run_cli

from faceanime.devices import resolve_device
from faceanime.errors import InputError

HAS_CUDA = torch.cuda.is_available()


def test_auto_is_cuda_where_there_is_one():
    assert resolve_device("auto") == torch.device("cuda" if HAS_CUDA else "cpu")
    assert resolve_device(None) == torch.device("cpu") == resolve_device("CPU")


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA: asking for it is not an error")
def test_cuda_where_there_is_none_is_one_clear_error(tmp_path, capsys):
    with pytest.raises(InputError, match=r"--device cuda: CUDA is not available here .*; use "
                                         r"--device cpu or auto"):
        resolve_device("cuda")
    with pytest.raises(SystemExit) as exit_info:
        run_cli(capsys, "demo", "--device", "cuda", "-o", str(tmp_path / "x.mp4"))
    assert exit_info.value.code == 2
    assert "CUDA is not available here" in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_cuda_index_beyond_the_devices():
    with pytest.raises(InputError, match="CUDA device"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


@pytest.mark.parametrize("name", ["gpu", "mps:0x", "tpu"])
def test_unknown_devices(name):
    with pytest.raises(InputError, match=f"--device {name}: "):
        resolve_device(name)


def test_summary_says_where_it_ran(tmp_path, capsys):
    status, _, err = run_cli(capsys, "demo", "--template", "nod", "--device", "auto",
                             "-o", str(tmp_path / "x.mp4"), "--no-progress")
    assert status == 0, err
    where = "cuda" if HAS_CUDA else "cpu"
    assert f"frames/s on {where})" in err.splitlines()[0]


# --- the same work on every device this machine has -----------------------------------------

DEVICES = [pytest.param("cpu"),
           pytest.param("cuda", marks=pytest.mark.skipif(not HAS_CUDA,
                                                        reason="no CUDA device here"))]


@pytest.mark.parametrize("device", DEVICES)
def test_fitter_on_a_photo_and_a_video(device, data_dir, sfm_model):
    from faceanime.fitting import FitConfig, fit_image, fit_landmarks
    from faceanime.landmarks import read_pts

    photo = data_dir / "faces" / "image_0010.png"
    truth = read_pts(data_dir / "faces" / "image_0010.pts")
    config = FitConfig(device=device)
    fit = fit_image(photo, sfm_model.to(device), landmarks=truth, config=config)
    assert fit.expression.device.type == device  # on the fit's device, as documented
    reference = fit_image(photo, sfm_model, landmarks=truth)
    torch.testing.assert_close(fit.fitted_landmarks.cpu(), reference.fitted_landmarks,
                               atol=0.05, rtol=0, equal_nan=True)  # pixels; NaN: no vertex
    frames = torch.from_numpy(truth)[None].repeat(6, 1, 1) + torch.linspace(0, 5, 6)[:, None,
                                                                                    None]
    # (no temporal term: the head moves exactly a pixel a frame, nothing smooths it)
    video = fit_landmarks(sfm_model.to(device), frames, (1024, 1280),
                          FitConfig(device=device, temporal_weight=0.0), fps=25.0)
    assert video.n_frames == 6 and video.expression.device.type == device
    shift = video.translation[:, 0].cpu()
    assert torch.allclose(shift - shift[0], torch.linspace(0, 5, 6), atol=0.05)


@pytest.mark.parametrize("device", DEVICES)
def test_a_job_end_to_end(device, tmp_path):
    from faceanime.coefficients import Coefficients
    from faceanime.fitting import FitConfig
    from faceanime.jobs.common import OutputConfig
    from faceanime.jobs.retarget import RetargetConfig, retarget
    from faceanime.samples import motion_template, sample_portrait

    short = Coefficients.load(motion_template("nod").path).frames(slice(0, 6))
    short.save(tmp_path / "nod6.npz")

    def run(where: str):
        config = RetargetConfig(output=OutputConfig(device=where, progress=False),
                                fit=FitConfig(device=where))
        return retarget(sample_portrait(), tmp_path / "nod6.npz", None, config)

    result = run(device)
    assert result.video.shape == (6, 384, 384, 3) and result.device == device
    if device != "cpu":  # the same pixels as on the CPU, within 1/255 nearly everywhere
        difference = np.abs(result.video.astype(int) - run("cpu").video.astype(int))
        assert (difference <= 1).mean() > 0.999


@pytest.mark.parametrize("device", DEVICES)
def test_dynamics_roll_out(device):
    from faceanime.dynamics import Dynamics, innovations
    from faceanime.samples import DEFAULT_DYNAMICS

    start = torch.zeros(2, 1, Dynamics.load(DEFAULT_DYNAMICS).dim)
    start[:, 0, 6 + 7] = 0.5  # a log scale; the rest of the face at rest
    noise = innovations(0, 2, 30, start.shape[-1])
    out = Dynamics.load(DEFAULT_DYNAMICS, device).rollout(start, 30, noise=noise)
    assert out.device.type == device and torch.isfinite(out).all()
    cpu = Dynamics.load(DEFAULT_DYNAMICS).rollout(start, 30, noise=noise)
    torch.testing.assert_close(out.cpu(), cpu, atol=1e-4, rtol=1e-4)


# --- auto by default, resolved once before any work (issue 18) ------------------------------


def test_the_jobs_and_the_evaluation_default_to_auto_resolved_before_any_work():
    from faceanime.evaluation.protocol import EvalConfig
    from faceanime.evaluation.swap import SwapEvalConfig
    from faceanime.jobs.common import on_device
    from faceanime.jobs.predict import PredictConfig
    from faceanime.jobs.retarget import RetargetConfig

    here = "cuda" if HAS_CUDA else "cpu"
    for config in (RetargetConfig(), PredictConfig()):
        assert config.output.device == "auto"
        resolved = on_device(config)
        assert resolved.output.device == here and config.output.device == "auto"  # a copy
        assert type(resolved) is type(config)
    assert EvalConfig().device == "auto" == SwapEvalConfig().device


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA: asking for it is not an error")
def test_cuda_asked_of_the_python_api_fails_before_anything_is_read(tmp_path):
    import faceanime
    from faceanime.evaluation.protocol import EvalConfig, evaluate_self
    from faceanime.jobs.common import OutputConfig
    from faceanime.jobs.retarget import RetargetConfig

    config = RetargetConfig(output=OutputConfig(device="cuda", progress=False))
    # The photo does not exist either: the device is checked first, and nothing is written.
    with pytest.raises(InputError, match="--device cuda: CUDA is not available here"):
        faceanime.retarget(tmp_path / "missing.jpg", "nod", tmp_path / "x.mp4", config)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="CUDA is not available here"):
        evaluate_self([tmp_path / "missing.mp4"], EvalConfig(device="cuda"))


def test_the_driving_video_is_tracked_on_every_usable_core_by_default():
    import os

    from faceanime.jobs.common import JobInputs, driver_tracker
    from faceanime.parallel import MAX_TRACK_PARTS, usable_cores

    assert usable_cores() == len(os.sched_getaffinity(0))
    assert driver_tracker(JobInputs()).parts == min(MAX_TRACK_PARTS, usable_cores())
    assert driver_tracker(JobInputs(track_parts=1)).parts == 1
    with pytest.raises(InputError, match="parts 0"):  # 0 is refused, not read as "default"
        driver_tracker(JobInputs(track_parts=0))


# --- the encoder: NVENC for CUDA jobs where it runs, x264 otherwise --------------------------


def test_the_encoder_is_nvenc_only_for_a_cuda_job_where_it_is_offered_and_runs():
    from faceanime.io.media import pick_encoder

    both = {"libx264", "h264_nvenc"}
    assert pick_encoder("cuda", both, nvenc_runs=True) == "h264_nvenc"
    assert pick_encoder("cuda:1", both, nvenc_runs=True) == "h264_nvenc"
    assert pick_encoder("cpu", both, nvenc_runs=True) == "libx264"
    assert pick_encoder(None, both, nvenc_runs=True) == "libx264"
    assert pick_encoder("cuda", both, nvenc_runs=False) == "libx264"  # listed, no driver
    assert pick_encoder("cuda", {"libx264"}, nvenc_runs=True) == "libx264"


def test_this_ffmpeg_lists_its_encoders_and_cpu_jobs_use_x264():
    from faceanime.io.media import ffmpeg_encoders, video_encoder

    offered = ffmpeg_encoders()
    assert {"libx264", "mpeg4"} <= offered and "h264" not in offered  # names, not codecs
    assert video_encoder("cpu") == "libx264" == video_encoder(None)


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA (NVENC may run here)")
def test_nvenc_listed_without_an_nvidia_driver_is_not_used():
    from faceanime.io.media import ffmpeg_encoders, nvenc_runs, video_encoder

    if "h264_nvenc" not in ffmpeg_encoders():
        pytest.skip("this ffmpeg build does not list h264_nvenc")
    assert not nvenc_runs()  # the test encode fails: no driver
    assert video_encoder("cuda") == "libx264"


@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device here")
def test_a_cuda_job_writes_a_video_players_open(tmp_path):
    from faceanime.io import iter_video_frames, read_video_info, write_video
    from faceanime.io.media import video_encoder

    frames = np.random.default_rng(0).integers(0, 255, (12, 64, 96, 3), dtype=np.uint8)
    path = tmp_path / "x.mp4"
    write_video(path, iter(frames), fps=25, encoder=video_encoder("cuda"))
    assert read_video_info(path).n_frames == 12
    assert len(list(iter_video_frames(path))) == 12


# --- more stages on every device --------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_evaluation_metrics(device, data_dir):
    from faceanime.evaluation import metrics
    from faceanime.io import iter_video_frames
    from faceanime.render.frames import frames_tensor

    frames = [f for _, f in zip(range(9), iter_video_frames(data_dir / "videos" / "d3.mp4"),
                                strict=False)]
    a, b = frames_tensor(np.stack(frames[:4])), frames_tensor(np.stack(frames[5:9]))
    for name in ("l1", "psnr", "ssim"):
        here = getattr(metrics, name)(a.to(device), b.to(device))
        assert here.device.type == device and here.shape == (4,)
        torch.testing.assert_close(here.cpu(), getattr(metrics, name)(a, b), atol=1e-4,
                                   rtol=1e-5)
    assert bool((metrics.ssim(a, b) < 1).all()) and bool((metrics.l1(a, b) > 0).all())


@pytest.mark.parametrize("device", DEVICES)
def test_a_swap_end_to_end(device, tmp_path, data_dir):
    import faceanime
    from faceanime.io import iter_video_frames, write_video
    from faceanime.jobs.common import OutputConfig
    from faceanime.jobs.swap import SwapConfig

    frames = [f for _, f in zip(range(6), iter_video_frames(data_dir / "videos" / "d3.mp4"),
                                strict=False)]
    clip = tmp_path / "clip.mp4"
    write_video(clip, iter(frames), fps=30)

    def run(where: str):
        config = SwapConfig(output=OutputConfig(device=where, progress=False), track_parts=1)
        return faceanime.swap(data_dir / "faces" / "s12.jpg", clip, None, config)

    result = run(device)
    assert result.video.shape == (6, 512, 512, 3) and result.device == device
    if device != "cpu":
        difference = np.abs(result.video.astype(int) - run("cpu").video.astype(int))
        assert (difference <= 1).mean() > 0.999


def test_renderers_batch_by_device_unless_told():
    from faceanime.parallel import default_batch
    from faceanime.render.classic import ClassicConfig
    from faceanime.render.warp import WarpConfig

    assert WarpConfig().batch_size == 0 == ClassicConfig().batch_size
    assert default_batch("cpu", 512 * 512) == 8 == default_batch(None, 4096 * 4096)
    assert default_batch("cuda", 512 * 512) == 32 == default_batch("cuda:1", 1024 * 1024)
    assert default_batch("cuda", 2048 * 2048) == 8  # big frames: as many as on the CPU
    for config in (WarpConfig, ClassicConfig):
        with pytest.raises(InputError, match="batch_size must be a whole number ≥ 0"):
            config(batch_size=-1)


def test_a_render_in_device_sized_batches_equals_one_in_small_batches(sfm_model):
    """0 (by device) and an explicit batch give the same frames, in order."""
    from faceanime.coefficients import Coefficients
    from faceanime.fitting import fit_image
    from faceanime.io import read_image
    from faceanime.motion import transfer_motion
    from faceanime.render.warp import WarpConfig, WarpRenderer
    from faceanime.samples import motion_template, sample_portrait

    image = read_image(sample_portrait())
    source = fit_image(image, sfm_model)
    nod = Coefficients.load(motion_template("nod").path).frames(slice(0, 11))
    target = transfer_motion(source, nod)
    by_device = list(WarpRenderer(sfm_model, image, source, WarpConfig()).iter_frames(target))
    in_threes = list(WarpRenderer(sfm_model, image, source, WarpConfig(batch_size=3))
                     .iter_frames(target))
    assert len(by_device) == 11 == len(in_threes)
    for a, b in zip(by_device, in_threes, strict=True):
        # float rounding of other batch shapes flips a depth test at a few edge pixels
        assert (np.abs(a.astype(int) - b.astype(int)) <= 1).mean() > 0.999
    assert np.abs(by_device[10].astype(int) - by_device[0].astype(int)).mean() > 0.5  # it moves


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA: the check would run")
def test_the_gpu_check_says_it_has_no_gpu_to_check(tmp_path):
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "tools" / "gpu_check.sh"
    done = subprocess.run(["bash", str(script), str(tmp_path / "out")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    assert "torch sees no CUDA device here" in done.stderr
    assert not any((tmp_path / "out").glob("*.log"))  # nothing was run


@pytest.mark.parametrize("device", DEVICES)
def test_generator_inference(device):
    """The generator on ``device`` generates what it does on the CPU (fp32; the bf16 autocast
    the trainer may use is not the inference path)."""
    from dataclasses import replace

    from faceanime.pgfg import Generator, tiny_configs

    tiny, _ = tiny_configs()
    torch.manual_seed(0)
    net = Generator(replace(tiny, size=128, levels=3, flow_init="sparse")).eval()
    g = torch.Generator().manual_seed(0)
    source, p_s, p_t = (torch.rand(2, c, 128, 128, generator=g) for c in (3, 6, 6))
    p_s[:, 4:], p_t[:, 4:] = 0.1 * p_s[:, 4:] - 0.05, 0.1 * p_t[:, 4:] - 0.05
    with torch.no_grad():
        cpu = net.generate(source, p_s, p_t)
        here = net.to(device).generate(source.to(device), p_s.to(device), p_t.to(device))
    assert here.device.type == device and here.shape == (2, 3, 128, 128)
    assert float(here.min()) >= 0 and float(here.max()) <= 1
    assert float((here.cpu() - cpu).abs().max()) <= (1e-6 if device == "cpu" else 2e-3)
    assert float((cpu - source).abs().mean()) > 1e-3  # it does something to the source


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA: asking for it is not an error")
@pytest.mark.parametrize("what", ["dynamics", "generator"])
def test_the_trainers_refuse_a_missing_gpu_before_reading_data(what, tmp_path, capsys):
    from helpers import assert_one_line_error

    status, _, err = run_cli(capsys, "train", what, "--data", str(tmp_path / "none"), "-o",
                             str(tmp_path / "out"), "--device", "cuda", "--no-progress")
    assert_one_line_error(status, err, "--device cuda: CUDA is not available here")
    assert not (tmp_path / "out").exists()


def test_frames_tensor_leaves_its_input_alone_and_matches_a_plain_conversion():
    """frames_tensor scales a copy (a float array passed in is not divided in place) and gives
    what converting the channels-first view gives, bit for bit."""
    from faceanime.render.frames import frames_tensor

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 17, 23, 3), dtype=np.uint8)
    want = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    assert torch.equal(frames_tensor(frames), want)
    floats = frames.astype(np.float32)
    kept = floats.copy()
    frames_tensor(floats)
    assert np.array_equal(floats, kept)
    # A uint8 tensor (a crop of decoded frames) converts the same as its array.
    assert torch.equal(frames_tensor(torch.from_numpy(frames)), want)
