"""The fitter on each device (CPU, and CUDA where there is one): landmarks as a detector
returns them (a CPU array) with the model on the device, the result on the fit's device and
equal to the CPU fit. On CUDA the video fit once failed in the eyelid solve (CPU tensors made
inside it); tools/device_check.py runs the same comparison, and the renderers', on a GPU host."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from faceanime.fitting import FitConfig, fit_landmarks
from faceanime.morphable import load_model

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))]


@pytest.mark.parametrize("device", DEVICES)
def test_fit_on_device_from_cpu_landmarks(device, data_dir, sfm_model, d3_track):
    landmarks = np.asarray(d3_track.points[:40])
    model = load_model(data_dir / "sfm" / "sfm_shape_3448.bin", device=device)
    on_device = fit_landmarks(model, landmarks, d3_track.image_size, FitConfig(device=device))
    on_cpu = fit_landmarks(sfm_model, landmarks, d3_track.image_size, FitConfig(device="cpu"))
    for name in ("shape", "expression", "rotation", "eyes", "fitted_landmarks", "landmarks"):
        assert getattr(on_device, name).device.type == device, name
    got = on_device.to("cpu")
    assert torch.allclose(got.fitted_landmarks, on_cpu.fitted_landmarks, atol=0.01,
                          equal_nan=True)
    assert torch.allclose(got.eyes, on_cpu.eyes, atol=1e-3)
    assert float(on_cpu.eyes.max()) > 0  # the lids were fitted, not left at zero
