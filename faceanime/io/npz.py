"""``.npz`` files, the format of every array output (landmarks, coefficients, models): written
atomically, read without pickles, and every failure a typed error naming the file."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np

from faceanime.errors import FaceAnimeError, InputError
from faceanime.io.atomic import atomic_path


def save_npz(target: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """Save arrays to ``target`` (.npz, uncompressed) atomically; returns the path."""
    target = Path(target)
    with atomic_path(target) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    return target


def load_npz(path: str | os.PathLike, what: str,
             error: type[FaceAnimeError] = InputError) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file, read with ``allow_pickle=False`` (never untrusted pickles).

    Args:
        path: the file.
        what: what the file should be, for messages ("coefficient file", ...).
        error: the error type to raise.

    Raises:
        ``error``: the file is missing or is not a readable ``.npz``.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such {what}")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise error(f"{path}: not a readable .npz file ({exc}); expected a {what}") from exc


def read_npz_bytes(data: bytes, name: str, what: str,
                   error: type[FaceAnimeError] = InputError) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` held in memory (a member of a data shard), read with
    ``allow_pickle=False``.

    Args:
        data: the file's bytes.
        name: where they came from, for messages (``shard-000003.tar:d3.coefficients.npz``).
        what: what the file should be.
        error: the error type to raise.

    Raises:
        ``error``: the bytes are not a readable ``.npz``.
    """
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            return {key: arrays[key] for key in arrays.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise error(f"{name}: not a readable .npz file ({exc}); expected a {what}") from exc
