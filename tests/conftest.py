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
