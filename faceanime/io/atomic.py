"""Atomic output: write to a temporary file beside the target, rename only when complete, so an
interrupted or failed run never leaves a half-written file that a later run would trust."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from faceanime.errors import MediaError


def _umask() -> int:
    # The only portable way to read the umask is to set it and put it back.
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in ``target``'s folder with the same suffix; on success it is renamed
    to ``target``, on any exception it is removed and ``target`` is left untouched.

    Raises:
        MediaError: the folder does not exist or is not writable.
    """
    target = Path(target)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise MediaError(f"{target}: output folder {folder} does not exist; create it first")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".part{target.suffix}",
                                   dir=folder)
    except OSError as exc:
        raise MediaError(f"{target}: cannot write in {folder} ({exc.strerror}); "
                         "choose a writable output path") from exc
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes the file private (0600); give it the permissions a plain open() would.
        with contextlib.suppress(OSError):
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise
