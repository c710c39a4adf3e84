"""Optional backends: mediapipe (accuracy where installed) and face-alignment (offline errors,
the wiring with stand-in weights). Each test skips where its package is absent; the index table
of mediapipe is checked everywhere."""

from __future__ import annotations

from itertools import islice

import numpy as np
import pytest

from faceanime.errors import BackendUnavailableError, ModelFileError
from faceanime.io import iter_video_frames
from faceanime.landmarks import (
    TrackerConfig,
    create_detector,
    detect_faces,
    detect_landmarks,
    nme,
    read_pts,
    track_video,
)
from faceanime.landmarks.mediapipe_backend import MESH_TO_IBUG68, mesh_to_ibug68


def test_mediapipe_index_table_is_well_formed():
    assert len(MESH_TO_IBUG68) == 68
    flat = [v for entry in MESH_TO_IBUG68 for v in entry]
    assert all(0 <= v < 468 for v in flat) and all(1 <= len(e) <= 2 for e in MESH_TO_IBUG68)
    mesh = np.arange(468 * 2, dtype=np.float32).reshape(468, 2)
    out = mesh_to_ibug68(mesh)
    assert out.shape == (68, 2)
    np.testing.assert_allclose(out[0], mesh[127])  # single vertex
    np.testing.assert_allclose(out[27], (mesh[168] + mesh[6]) / 2)  # a pair is averaged


@pytest.fixture(scope="module")
def mediapipe_detector():
    pytest.importorskip("mediapipe")
    with create_detector("mediapipe") as det:
        yield det


def test_mediapipe_nme_on_300w_photo(data_dir, mediapipe_detector):
    face = detect_landmarks(data_dir / "faces" / "image_0010.png", mediapipe_detector)
    error = nme(face.points, read_pts(data_dir / "faces" / "image_0010.pts"))
    assert error <= 0.05, f"mediapipe NME {error:.4f}"  # measured 4.3 %


@pytest.mark.parametrize("name", ["s1.jpg", "s12.jpg", "s42.jpg", "d19.jpg"])
def test_mediapipe_portraits(data_dir, mediapipe_detector, name):
    assert len(detect_faces(data_dir / "faces" / name, mediapipe_detector)) == 1


def test_mediapipe_tracks_every_frame_and_notices_a_lost_face(data_dir, mediapipe_detector):
    track = track_video(data_dir / "videos" / "d0.mp4", TrackerConfig(progress=False),
                        detector=mediapipe_detector)
    assert track.valid.all() and track.backend == "mediapipe"
    frames = list(islice(iter_video_frames(data_dir / "videos" / "d0.mp4"), 4))
    frames += [np.full_like(frames[0], 128)] * 3
    partial = track_video(frames, TrackerConfig(progress=False), detector=mediapipe_detector)
    assert partial.valid.tolist() == [True] * 4 + [False] * 3


@pytest.fixture
def offline_torch_hub(monkeypatch, tmp_path):
    """An empty torch hub cache and a network that refuses every download."""
    face_alignment = pytest.importorskip("face_alignment")
    import urllib.error

    import torch.hub

    def refuse(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known (test: offline)")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(face_alignment.utils, "download_url_to_file", refuse, raising=False)
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_fan_offline_says_where_to_put_the_weights(offline_torch_hub):
    with pytest.raises(ModelFileError) as info:
        create_detector("fan")
    message = str(info.value)
    assert "s3fd-619a316812.pth" in message and "2DFAN4-11f355bf06.pth.tar" in message
    assert str(offline_torch_hub) in message and "\n" not in message


def test_fan_cuda_without_gpu(offline_torch_hub):
    import torch

    from faceanime.landmarks import DetectorConfig

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(BackendUnavailableError, match="CUDA"):
        create_detector("fan", DetectorConfig(device="cuda"))


@pytest.mark.slow
def test_fan_wiring_with_stand_in_weights(offline_torch_hub):
    """Random weights saved under the real file names: construction works offline and the
    interface returns the documented shapes (the numbers themselves mean nothing)."""
    import torch
    from face_alignment.detection.sfd.net_s3fd import s3fd
    from face_alignment.models import FAN

    from faceanime.landmarks.fan_backend import weight_urls

    offline_torch_hub.mkdir(parents=True)
    urls = weight_urls()
    torch.save(FAN(4).state_dict(), offline_torch_hub / urls["2DFAN-4"].rsplit("/", 1)[-1])
    torch.save(s3fd().state_dict(), offline_torch_hub / urls["s3fd"].rsplit("/", 1)[-1])
    image = np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    with create_detector("fan") as det:
        points = det.landmarks_in_box(image, np.array([20, 20, 100, 100], np.float32))
        boxes, scores = det.detect_boxes(image)
    assert points.shape == (68, 2) and points.dtype == np.float32
    assert boxes.shape[1:] == (4,) and scores.shape == boxes.shape[:1]
