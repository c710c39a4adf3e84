"""iBUG ``.pts`` landmark files (the 300-W annotation format).

A ``.pts`` file stores 1-based (Matlab-style) pixel coordinates::

    version: 1
    n_points:  68
    {
    611.284152 272.773913
    ...
    }

:func:`read_pts` and :func:`write_pts` convert to and from this toolkit's 0-based coordinates
(pixel centre at integer positions), so ``read_pts(write_pts(p)) == p``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from faceanime.errors import InputError
from faceanime.io import atomic_path


def read_pts(path: str | os.PathLike) -> np.ndarray:
    """Read a ``.pts`` file.

    Returns:
        ``(N, 2)`` float32 points, 0-based.

    Raises:
        InputError: missing file, or not a well-formed ``.pts`` file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such .pts file")
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read as a text .pts file ({exc})") from exc
    header, sep, rest = text.partition("{")
    body, sep2, _ = rest.partition("}")
    if not sep or not sep2:
        raise InputError(f"{path}: not an iBUG .pts file (expected points between '{{' and '}}')")
    n_points = None
    for line in header.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "n_points":
            try:
                n_points = int(value)
            except ValueError:
                raise InputError(f"{path}: bad n_points line {line.strip()!r}") from None
    try:
        values = np.array(body.split(), dtype=np.float64)
    except ValueError:
        raise InputError(f"{path}: non-numeric coordinates in the point list") from None
    if values.size % 2:
        raise InputError(f"{path}: odd number of coordinates ({values.size})")
    points = values.reshape(-1, 2)
    if n_points is not None and len(points) != n_points:
        raise InputError(f"{path}: header says n_points {n_points} but {len(points)} are listed")
    if not np.isfinite(points).all():
        raise InputError(f"{path}: coordinates must be finite numbers")
    return (points - 1.0).astype(np.float32)


def write_pts(path: str | os.PathLike, points: np.ndarray) -> Path:
    """Write ``(N, 2)`` 0-based points as a 1-based ``.pts`` file, atomically.

    Raises:
        InputError: wrong shape or non-finite points (a ``.pts`` file cannot mark missing ones).
        MediaError: the folder is missing or not writable.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise InputError(f"{path}: points must be (N, 2), got {points.shape}")
    if not np.isfinite(points).all():
        raise InputError(f"{path}: cannot write NaN or infinite points to a .pts file")
    lines = [f"{x:.6f} {y:.6f}" for x, y in points + 1.0]
    text = f"version: 1\nn_points:  {len(points)}\n{{\n" + "\n".join(lines) + "\n}\n"
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
