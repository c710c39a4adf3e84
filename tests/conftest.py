"""Shared fixtures. Real data (../shared/data, or $FACEANIME_TEST_DATA) is reached through
``data_dir`` only; tests that need it skip with the reason where it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _data_root() -> Path:
    env = os.environ.get("FACEANIME_TEST_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared real-data folder (models, faces, videos)."""
    root = _data_root()
    if not (root / "sfm" / "sfm_shape_3448.bin").is_file():
        pytest.skip(f"real test data not found at {root}: set FACEANIME_TEST_DATA to the folder "
                    "holding sfm/, faces/ and videos/")
    return root


@pytest.fixture(scope="session")
def sfm_model(data_dir):
    """The Surrey Face Model from the shared data, loaded once."""
    from faceanime.morphable import load_model

    return load_model(data_dir / "sfm" / "sfm_shape_3448.bin")


@pytest.fixture(scope="session")
def s1_photo(data_dir, sfm_model):
    """faces/s1.jpg at half size (572², an (H, W, 3) uint8 array) and its fitted coefficients,
    fitted once per session."""
    import numpy as np
    from PIL import Image

    from faceanime.fitting import fit_image

    image = Image.open(data_dir / "faces" / "s1.jpg").convert("RGB")
    image = np.array(image.resize((image.width // 2, image.height // 2), Image.LANCZOS))
    return image, fit_image(image, sfm_model)


@pytest.fixture(scope="session")
def d3_track(data_dir):
    """dlib landmarks of videos/d3.mp4 (354 frames, talking), tracked once per session."""
    from faceanime.landmarks import TrackerConfig, track_video

    return track_video(data_dir / "videos" / "d3.mp4", TrackerConfig(progress=False))


@pytest.fixture(scope="session")
def d18_track(data_dir):
    """dlib landmarks of videos/d18.mp4 (216 frames: presses and pushes out its lips, shouts,
    blinks), tracked once per session."""
    from faceanime.landmarks import TrackerConfig, track_video

    return track_video(data_dir / "videos" / "d18.mp4", TrackerConfig(progress=False))


@pytest.fixture
def isolated_models(tmp_path, monkeypatch) -> Path:
    """Model lookup that sees only what a test puts there: an empty working directory, no
    $FACEANIME_MODEL_DIR, $FACEANIME_CACHE at an empty ``tmp_path / "cache"``, and without the
    checkout's bfm/ and the package's data/ folders (which may hold real models). Returns
    ``tmp_path``."""
    import faceanime
    from faceanime.morphable import registry

    monkeypatch.delenv(registry.ENV_MODEL_DIR, raising=False)
    monkeypatch.setenv(registry.ENV_CACHE, str(tmp_path / "cache"))
    package = Path(faceanime.__file__).resolve().parent
    fixed = {package.parent / "bfm", registry.bundled_dir()}
    real = registry.search_folders
    monkeypatch.setattr(registry, "search_folders", lambda: [f for f in real() if f not in fixed])
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return tmp_path


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a test module (``pytestmark = pytest.mark.usefixtures(...)``):
    many small tensor operations (solves, training steps, rasterizing) ran 3-40x slower on two
    threads when another process held the second core of the 2-core machine (docs/render.md,
    Speed), and are too small to gain from them on an idle one."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
