"""Evaluation metrics on constructed cases: known answers, SSIM against an independent
reference, and a known pixel shift of a real frame measured through dlib's landmarks."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from faceanime.evaluation import metrics as M
from faceanime.evaluation.protocol import (
    correlation,
    mouth_opening,
    rotation_angle_deg,
    select_frames,
)
from faceanime.evaluation.report import json_number


@pytest.fixture(scope="module")
def frames(data_dir) -> np.ndarray:
    """The first and the 40th frame of videos/d0.mp4, ``(2, 512, 512, 3)`` uint8."""
    from faceanime.io import iter_video_frames

    out = [f for i, f in zip(range(41), iter_video_frames(data_dir / "videos" / "d0.mp4"),
                             strict=False) if i in (0, 40)]
    return np.stack(out)


@pytest.fixture(scope="module")
def scorer(data_dir):
    from faceanime.evaluation.protocol import Scorer

    s = Scorer()
    yield s
    s.close()


def as_tensor(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255


def test_identical_frames(frames):
    x = as_tensor(frames)
    assert torch.equal(M.l1(x, x), torch.zeros(2))
    assert torch.isinf(M.psnr(x, x)).all() and (M.psnr(x, x) > 0).all()
    assert torch.equal(M.ssim(x, x), torch.ones(2))
    points = torch.rand(2, 68, 2) * 500
    assert torch.equal(M.akd(points, points), torch.zeros(2))


def test_known_values():
    x = torch.full((1, 3, 32, 32), 0.4)
    y = x + 0.1
    assert M.l1(y, x).item() == pytest.approx(0.1, abs=1e-6)
    assert M.psnr(y, x).item() == pytest.approx(20.0, abs=1e-4)  # MSE 0.01
    # Flat images: the structure term is c2 / c2 = 1, SSIM is the luminance term alone.
    c1 = M.SSIM_K1**2
    expected = (2 * 0.4 * 0.5 + c1) / (0.4**2 + 0.5**2 + c1)
    assert M.ssim(y, x).item() == pytest.approx(expected, abs=2e-5)  # float32 moments
    # One point off by (3, 4) of four: AKD = 5 / 4.
    a = torch.zeros(1, 4, 2)
    b = a.clone()
    b[0, 2] = torch.tensor([3.0, 4.0])
    assert M.akd(b, a).item() == pytest.approx(1.25)
    nan = a.clone()
    nan[0, 0, 0] = float("nan")
    assert math.isnan(M.akd(nan, a).item())


def _ssim_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al.'s SSIM written out window by window (float64, one channel), independent of
    the convolution code."""
    size, sigma = M.SSIM_WINDOW, M.SSIM_SIGMA
    r = np.arange(size) - (size - 1) / 2
    g = np.exp(-(r[:, None] ** 2 + r[None] ** 2) / (2 * sigma**2))
    g /= g.sum()
    c1, c2 = M.SSIM_K1**2, M.SSIM_K2**2
    values = []
    for i in range(x.shape[0] - size + 1):
        for j in range(x.shape[1] - size + 1):
            a, b = x[i:i + size, j:j + size], y[i:i + size, j:j + size]
            ma, mb = (g * a).sum(), (g * b).sum()
            va, vb = (g * (a - ma) ** 2).sum(), (g * (b - mb) ** 2).sum()
            cov = (g * (a - ma) * (b - mb)).sum()
            values.append((2 * ma * mb + c1) * (2 * cov + c2)
                          / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(values))


def test_ssim_matches_window_by_window_reference(frames):
    crop = as_tensor(frames[:, 200:230, 220:254])  # (2, 3, 30, 34): a face region
    got = M.ssim(crop[1:], crop[:1]).item()
    a, b = crop[1].double().numpy(), crop[0].double().numpy()
    want = np.mean([_ssim_reference(a[c], b[c]) for c in range(3)])  # per channel, averaged
    assert got == pytest.approx(want, abs=1e-5)
    assert 0.2 < got < 0.99  # a real difference, not a degenerate case


def test_ssim_matches_scikit_image(frames):
    metrics = pytest.importorskip("skimage.metrics")
    a, b = frames[0].astype(np.float64) / 255, frames[1].astype(np.float64) / 255
    want = metrics.structural_similarity(a, b, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                         use_sample_covariance=False, data_range=1.0)
    got = M.ssim(as_tensor(frames[1:]), as_tensor(frames[:1])).item()
    assert got == pytest.approx(want, abs=1e-4)


def test_ssim_properties(frames):
    x = as_tensor(frames[:1])
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=gen)
    scores = [M.ssim((x + s * noise).clamp(0, 1), x).item() for s in (0.01, 0.05, 0.2)]
    assert 1 > scores[0] > scores[1] > scores[2] > 0  # more noise, less similar
    y = as_tensor(frames[1:])
    assert M.ssim(x, y).item() == pytest.approx(M.ssim(y, x).item(), abs=1e-7)  # symmetric
    # Reversed structure: strongly negative SSIM where the image has texture.
    assert (M.ssim_map(1 - x, x) < -0.5).any()
    with pytest.raises(ValueError):
        M.ssim(x[..., :8, :8], x[..., :8, :8])  # smaller than the window


@pytest.mark.parametrize("shift", [(7, 4), (-12, 9), (20, 0)])
def test_known_shift_gives_expected_akd(frames, scorer, shift):
    """A real frame moved by (dx, dy) pixels: dlib finds the same face moved by as much."""
    dx, dy = shift
    moved = np.roll(frames[0], (dy, dx), axis=(0, 1))
    points = scorer.landmarks(np.stack([frames[0], moved]))
    assert torch.isfinite(points).all()
    assert M.akd(points[1:], points[:1]).item() == pytest.approx(math.hypot(dx, dy), abs=1.0)
    # Undo the shift: what is left is the detector's own jitter, under a pixel on average.
    assert M.akd(points[1:] - torch.tensor([dx, dy]), points[:1]).item() < 1.5


def test_identity_share_counts_missing_faces_as_failures():
    d = torch.tensor([0.1, 0.59, 0.61, float("nan")])
    assert M.id_share(d, 0.6) == 0.5
    assert math.isnan(M.id_share(torch.tensor([]), 0.6))
    assert M.nanmean(torch.tensor([1.0, float("nan"), 3.0])) == 2.0
    assert M.nanmean(torch.tensor([1.0, float("inf")])) == math.inf
    assert math.isnan(M.nanmean(torch.tensor([float("nan")])))


def test_select_frames():
    assert select_frames(10, 1, exclude=0) == list(range(1, 10))
    assert select_frames(10, 3) == [0, 3, 6, 9]
    assert select_frames(10, 3, exclude=3) == [0, 6, 9]
    picked = select_frames(100, 1, frames=5, exclude=0)
    assert picked[0] == 1 and picked[-1] == 99 and len(picked) == 5
    assert picked == sorted(set(picked))
    from faceanime.errors import InputError

    with pytest.raises(InputError):
        select_frames(10, 0)


def test_pose_and_expression_helpers():
    from faceanime.geometry.rotation import so3_exp

    axis = torch.tensor([[0.3, -0.5, 0.8]])
    axis = axis / axis.norm()
    r = so3_exp(axis * math.radians(10))
    assert rotation_angle_deg(r, torch.eye(3)[None]).item() == pytest.approx(10, abs=1e-3)
    t = torch.linspace(0, 1, 20)
    assert correlation(t, 3 * t + 1) == pytest.approx(1.0)
    assert correlation(t, -t) == pytest.approx(-1.0)
    assert math.isnan(correlation(t, torch.ones(20)))  # a static output does not move
    two = torch.stack([t, t**2], 1)
    assert correlation(two, two * 2) == pytest.approx(1.0)
    points = torch.zeros(1, 68, 2)
    points[0, 36], points[0, 45] = torch.tensor([0.0, 0]), torch.tensor([100.0, 0])
    points[0, [65, 66, 67], 1] = 20.0  # lower inner lip 20 px under the upper
    assert mouth_opening(points).item() == pytest.approx(0.2)


def test_json_encoding_of_non_finite_numbers():
    assert json_number(math.inf) == "inf" and json_number(-math.inf) == "-inf"
    assert json_number(math.nan) is None and json_number(1.5) == 1.5
    json.dumps([json_number(v) for v in (math.inf, math.nan, 2.0)], allow_nan=False)
