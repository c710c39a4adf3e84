"""Content digests of files, for checking that a file is the one expected."""

from __future__ import annotations

import hashlib
import os


def file_digest(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's content, read in 1 MiB chunks.

    Raises:
        OSError: the file cannot be read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
