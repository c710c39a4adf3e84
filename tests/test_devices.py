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
