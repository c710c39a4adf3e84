"""``faceanime predict`` with no flags: the 3DDP checkpoint that ships in the package, on real
photos, moving like real talking heads (measured against d18, held out of its training)."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import run_cli

from faceanime.coefficients import Coefficients
from faceanime.dataset.prepare import training_fit
from faceanime.dynamics import Dynamics, VertexSubset, to_features
from faceanime.fitting import fit_video
from faceanime.jobs.common import OutputConfig
from faceanime.jobs.predict import PredictConfig, predict
from faceanime.samples import DEFAULT_DYNAMICS


@pytest.fixture(scope="module")
def d18(data_dir, sfm_model):
    """d18 fitted as the shipped checkpoint's training data were (``training_fit``)."""
    return fit_video(data_dir / "videos" / "d18.mp4", sfm_model, config=training_fit())


def vertex_motion(raw: torch.Tensor, shape: torch.Tensor, vertices: VertexSubset
                  ) -> tuple[float, float]:
    """Mean per-frame speed and spread (standard deviation over time) of 256 model vertices,
    mm, of ``(B, T, D)`` raw coefficient sequences of the identity ``(B, Ks)``."""
    posed = vertices.posed(to_features(raw, raw[:, 0], "orthographic"), vertices.neutral(shape))
    return (float((posed[:, 1:] - posed[:, :-1]).norm(dim=-1).mean()),
            float(posed.std(1).norm(dim=-1).mean()))


def test_the_shipped_checkpoint_says_what_built_it():
    info = json.loads(DEFAULT_DYNAMICS.with_suffix(".json").read_text())
    assert info["videos"] == {"train": ["d0", "d3", "d6"], "val": ["d18"]}
    assert info["train"]["seed"] == 0 and "tools/train_default_dynamics.py" in info["dataset"]
    assert DEFAULT_DYNAMICS.stat().st_size < 100_000


def test_predict_with_no_flags(data_dir, tmp_path, capsys):
    status, _, err = run_cli(capsys, "predict", "--source", str(data_dir / "faces" / "s12.jpg"),
                             "-o", str(tmp_path / "s12.mp4"), "--size", "256", "--no-progress",
                             "--save-coeffs", str(tmp_path / "s12.npz"))
    assert status == 0, err
    assert Coefficients.load(tmp_path / "s12.npz").n_frames == 120


@pytest.mark.slow
def test_default_motion_moves_like_real_talking_heads(data_dir, sfm_model, d18):
    vertices = VertexSubset.from_model(sfm_model, 256)
    raw = d18.to_tensor()
    windows = torch.stack([raw[s:s + 120] for s in range(0, raw.shape[0] - 119, 10)])
    real_speed, real_spread = vertex_motion(windows, d18.shape.expand(len(windows), -1),
                                            vertices)
    reach = Dynamics.load(DEFAULT_DYNAMICS).normalizer.reach
    speeds, spreads = [], []
    config = PredictConfig(output=OutputConfig(size=256, progress=False))
    for photo in ("s1", "s12", "s42"):
        for seed in range(4):
            coeffs = predict(data_dir / "faces" / f"{photo}.jpg", None, frames=120, seed=seed,
                             config=config).coefficients
            path = coeffs.to_tensor()[None]
            speed, spread = vertex_motion(path, coeffs.shape[None], vertices)
            speeds.append(speed)
            spreads.append(spread)
            # the head never goes further from where it started than real heads did in 120
            # frames (pose features: rotation, translation, scale)
            feats = to_features(path, path[:, 0], "orthographic")[0]
            change = (feats - feats[:1]).abs().max(0).values
            assert (change <= reach + 1e-4).all(), (photo, seed)
    speed_ratio = sum(speeds) / len(speeds) / real_speed
    spread_ratio = sum(spreads) / len(spreads) / real_spread
    assert 0.7 <= speed_ratio <= 1.4, speed_ratio
    assert 0.7 <= spread_ratio <= 1.4, spread_ratio
