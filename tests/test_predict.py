"""``faceanime predict`` end to end on real photos, with a tiny dynamics checkpoint trained here on
the real d0.mp4 (fitted), so that the job runs exactly as a user's would."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import run_cli

from faceanime.coefficients import Coefficients
from faceanime.io import iter_video_frames, read_image, read_metadata, read_video_info


@pytest.fixture(scope="session")
def tiny_dynamics(data_dir, sfm_model, tmp_path_factory):
    """A small 3DDP checkpoint trained on d0.mp4's fitted coefficients (two overlapping halves:
    one to train on, one to validate). ~10 s: 3 s fitting, 5 s training."""
    from faceanime.dynamics import DynamicsConfig, LossConfig, TrainConfig, train
    from faceanime.fitting import fit_video
    from faceanime.landmarks import TrackerConfig

    root = tmp_path_factory.mktemp("tiny_dynamics")
    (root / "coefficients").mkdir()
    d0 = fit_video(data_dir / "videos" / "d0.mp4", sfm_model, tracker=TrackerConfig(progress=False))
    d0.frames(slice(0, 44)).save(root / "coefficients" / "a.npz")
    d0.frames(slice(34, None)).save(root / "coefficients" / "b.npz")
    (root / "manifest.json").write_text(json.dumps(
        {"version": 1, "model": "sfm", "videos": {"a": {"status": "ok"}, "b": {"status": "ok"}}}))
    result = train(root, root / "run",
                   TrainConfig(steps=30, batch=8, window=16, observe=4, val_videos=("b",),
                               checkpoint_every=30, val_every=30, progress=False),
                   DynamicsConfig(hidden=8), LossConfig(), face_model=sfm_model)
    return result.checkpoint


@pytest.fixture
def sfm_dir(data_dir, monkeypatch):
    monkeypatch.setenv("FACEANIME_MODEL_DIR", str(data_dir / "sfm"))
    return data_dir


def _predict(capsys, photo, ckpt, out, *extra):
    return run_cli(capsys, "predict", "--source", str(photo), "--dynamics", str(ckpt), "-o",
                   str(out), "--no-progress", *extra)


@pytest.mark.slow
def test_predict_from_a_photo(sfm_dir, tiny_dynamics, tmp_path, capsys):
    photo = sfm_dir / "faces" / "s12.jpg"
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        out = tmp_path / f"{name}.mp4"
        status, _, err = _predict(capsys, photo, tiny_dynamics, out, "--frames", "30", "--seed",
                                  str(seed), "--save-coeffs", str(tmp_path / f"{name}.npz"))
        assert status == 0, err
        assert "30 frames at 25 fps" in err  # a photo's future runs at the training videos' rate
        runs[name] = Coefficients.load(tmp_path / f"{name}.npz").to_tensor()
    # A seed fixes the future; another seed gives another one.
    assert torch.equal(runs["a"], runs["b"])
    assert float((runs["a"] - runs["c"]).abs().max()) > 1e-3
    info = read_video_info(tmp_path / "a.mp4")
    image = read_image(photo)
    h, w = image.shape[:2]
    assert info.fps == 25 and info.size == (w + w % 2, h + h % 2)
    frames = np.stack(list(iter_video_frames(tmp_path / "a.mp4")))[:, :h, :w].astype(float)
    assert len(frames) == 30
    # The head moves (consecutive frames differ somewhere); the far background (the top
    # corners) and the shoulders (the bottom rows) do not.
    assert np.abs(np.diff(frames, axis=0)).max() > 40
    for part in (np.s_[:, :30, :30], np.s_[:, :30, -30:], np.s_[:, -30:]):
        assert np.abs(frames[part] - image[part[1:]]).mean() < 2.0
    assert read_metadata(tmp_path / "a.mp4")["faceanime_job"] == "predict"


@pytest.mark.slow
def test_predict_after_observing_a_video_and_in_python(sfm_dir, tiny_dynamics, tmp_path, capsys):
    from faceanime.jobs.common import OutputConfig
    from faceanime.jobs.predict import PredictConfig, predict

    photo = sfm_dir / "faces" / "s12.jpg"
    out = tmp_path / "o.mp4"
    status, _, err = _predict(capsys, photo, tiny_dynamics, out, "--frames", "10",
                              "--observe", str(sfm_dir / "videos" / "d0.mp4"),
                              "--observe-frames", "4", "--include-observed")
    assert status == 0, err
    assert "14 frames at 25 fps" in err  # 4 observed + 10 predicted, at the video's rate
    result = predict(photo, dynamics=tiny_dynamics, frames=5, seed=3,
                     config=PredictConfig(temperature=0.0,
                                          output=OutputConfig(paste_back=False, size=128,
                                                              progress=False)))
    assert result.output is None and result.video.shape == (5, 128, 128, 3)
    assert result.coefficients.n_frames == 5
