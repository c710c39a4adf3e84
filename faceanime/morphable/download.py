"""Download the Surrey Face Model (SFM) files from the eos project, verified by SHA-256.

``download_sfm()`` fetches the files the SFM loader reads (plus the eos licence) from the eos
GitHub repository at a pinned release (:data:`SFM_REF`) into the per-user cache folder
(``registry.cache_dir() / "sfm"``), where ``load_model("sfm")`` finds them. Each file is written
to a temporary name beside its target and renamed only once its SHA-256 matches the pinned value,
so an interrupted, truncated or altered download never lands under the real name; a file already
present with the right hash is not fetched again.

Only :mod:`urllib.request` is used (no new dependency), so ``base_url`` may be any URL scheme it
opens, including ``file://`` (what the tests use).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import urlopen

from tqdm import tqdm

from faceanime.errors import ModelFileError
from faceanime.io.digest import file_digest
from faceanime.morphable.registry import ENV_MODEL_DIR, cache_dir

SFM_REPOSITORY = "patrikhuber/eos"
# A release tag, not ``master``: the hashes below describe the files at this tag, and a moving
# branch could change a file under us (then every download would fail the hash check).
SFM_REF = "v1.5.0"
SFM_BASE_URL = f"https://raw.githubusercontent.com/{SFM_REPOSITORY}/{SFM_REF}"
SFM_BROWSE_URL = f"https://github.com/{SFM_REPOSITORY}/tree/{SFM_REF}/share"
TIMEOUT_S = 60.0  # per blocking network operation, not for the whole file
CHUNK_BYTES = 1 << 16
TEMP_SUFFIX = ".part"


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch: its ``remote`` path under the base URL, the local file ``name``, its
    ``size`` in bytes and the lowercase hex ``sha256`` of its content."""

    remote: str
    name: str
    size: int
    sha256: str


# Hashes of the eos files (identical to the copies this project's tests run on). The licence is
# the repository's LICENSE, saved under a name that says whose licence it is.
SFM_FILES: tuple[RemoteFile, ...] = (
    RemoteFile("share/sfm_shape_3448.bin", "sfm_shape_3448.bin", 2784392,
               "43750338ae533e7fb981e924b6f67ebde3d292f15ec4fc886ae5af14308ad980"),
    RemoteFile("share/expression_blendshapes_3448.bin", "expression_blendshapes_3448.bin", 248400,
               "a77c81712fc5e8b08a1be4cd2824d51514e5bde6578109ae5240dfb3489efd43"),
    RemoteFile("share/ibug_to_sfm.txt", "ibug_to_sfm.txt", 3166,
               "810810c457184526c7d54305ecbc5da764e2431b5e66025d921a7d424aebfac9"),
    RemoteFile("share/sfm_model_contours.json", "sfm_model_contours.json", 679,
               "c9e69bfa995ab19ac6b27abb07729eb0520a00bb192be12426ca6bce76f3fded"),
    RemoteFile("share/sfm_3448_edge_topology.json", "sfm_3448_edge_topology.json", 1861240,
               "5934e5ec34dd6779fda06d28a1f8d02ca9a238bff882e5ccd6da5af9fffe61d5"),
    RemoteFile("share/sfm_reference_symmetry.txt", "sfm_reference_symmetry.txt", 3447,
               "d26e02dbb2cf72bfa88bc6bf6f175bf261bae7aff00509cc0ff277675f2fff47"),
    RemoteFile("LICENSE", "LICENSE-eos.txt", 11358,
               "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"),
)


def download_sfm(target_dir: Path | None = None, base_url: str = SFM_BASE_URL,
                 progress: bool = True, source_dir: Path | None = None) -> Path:
    """Download the SFM files (:data:`SFM_FILES`) into ``target_dir`` and return that folder.

    Args:
        target_dir: folder to put the files in (created if needed); default
            ``cache_dir() / "sfm"``, which ``load_model("sfm")`` searches.
        base_url: URL of the eos repository root at a release; each file is fetched from
            ``base_url/<remote path>`` (e.g. ``.../share/sfm_shape_3448.bin``).
        progress: show a tqdm progress bar (bytes of the files to fetch) on stderr.
        source_dir: a local folder holding the files under their saved names (an eos
            ``share/`` copy, another machine's cache): copied from there instead of
            ``base_url``, verified against the same hashes.

    Returns:
        The folder holding all the files, each verified against its pinned SHA-256.

    Raises:
        ModelFileError: a file cannot be fetched (network, missing URL), its content does not
            match the pinned SHA-256 (the message names it and both hashes), or the folder
            cannot be written. A file that failed leaves nothing behind under its name or a
            temporary one; files verified before it stay, and folders this call created are
            removed again when they stayed empty.
    """
    target = Path(target_dir).expanduser() if target_dir is not None else cache_dir() / "sfm"
    created = _make_folders(target)
    try:
        base = base_url.rstrip("/")
        # Files already downloaded and intact are not touched (their mtime stays).
        todo = [item for item in SFM_FILES if not _is_intact(target / item.name, item.sha256)]
        with tqdm(total=sum(item.size for item in todo), unit="B", unit_scale=True,
                  unit_divisor=1024, desc="sfm", disable=not (progress and todo)) as bar:
            for item in todo:
                bar.set_postfix_str(item.name, refresh=False)
                url = ((Path(source_dir).expanduser() / item.name).resolve().as_uri()
                       if source_dir is not None else f"{base}/{item.remote}")
                _fetch_verified(item, url, target / item.name, bar)
    except BaseException:
        # A failed first download leaves no empty folder behind (a cache folder that exists
        # but holds nothing would only mislead); folders that were there before stay.
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty: files verified before the failure stay
        raise
    return target


def _make_folders(target: Path) -> list[Path]:
    """Create ``target`` and its missing parents; returns the folders it created, outermost
    first."""
    missing = [p for p in (target, *target.parents) if not p.exists()][::-1]
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        for folder in reversed(missing):
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise ModelFileError(f"cannot create the model folder {target} ({_one_line(exc)}); "
                             "choose another folder (--to DIR)") from exc
    return missing


def _fetch_verified(item: RemoteFile, url: str, dest: Path, bar: tqdm) -> None:
    """Fetch ``url`` into a temporary file beside ``dest``; rename it to ``dest`` only if its
    SHA-256 is ``item.sha256``, else remove it and raise."""
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    try:
        digest = _fetch(url, tmp, item, bar)
        if digest != item.sha256:
            raise ModelFileError(
                f"{item.name}: SHA-256 mismatch for {url}: expected {item.sha256}, got {digest}; "
                "the file was not saved (a corrupted transfer or a changed upstream file)")
        os.replace(tmp, dest)
    finally:
        # On success the rename has consumed tmp; on any failure (including Ctrl-C) remove it so
        # no partial file is left in the model folder.
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _fetch(url: str, tmp: Path, item: RemoteFile, bar: tqdm) -> str:
    """Stream ``url`` into the new file ``tmp``, counting bytes on ``bar``; returns the hex
    SHA-256 of what was read."""
    hasher = hashlib.sha256()
    try:
        # os.open with O_EXCL instead of tempfile.mkstemp: mkstemp creates mode 0600, which the
        # rename would carry over to a model file other users of a shared cache could not read.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:
        raise _write_error(item, tmp.parent, exc) from exc
    with os.fdopen(fd, "wb") as fh:
        try:
            response = urlopen(url, timeout=TIMEOUT_S)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            # OSError includes URLError (HTTP errors, unreachable hosts, missing file:// paths);
            # ValueError is a malformed URL.
            raise _network_error(item, url, exc) from exc
        with response:
            while True:
                try:
                    chunk = response.read(CHUNK_BYTES)
                except (OSError, http.client.HTTPException) as exc:
                    raise _network_error(item, url, exc) from exc
                if not chunk:
                    break
                hasher.update(chunk)
                try:
                    fh.write(chunk)
                except OSError as exc:
                    raise _write_error(item, tmp.parent, exc) from exc
                bar.update(len(chunk))
        try:
            fh.flush()
            # On disk before the rename: a crash must not leave an empty file under the real name.
            os.fsync(fh.fileno())
        except OSError as exc:
            raise _write_error(item, tmp.parent, exc) from exc
    return hasher.hexdigest()


def _network_error(item: RemoteFile, url: str, exc: BaseException) -> ModelFileError:
    return ModelFileError(
        f"cannot download {item.name} from {url} ({_one_line(exc)}); to get the SFM by hand, "
        f"save the files listed in docs/models.md from {SFM_BROWSE_URL} into one folder and set "
        f"{ENV_MODEL_DIR} to that folder")


def _write_error(item: RemoteFile, folder: Path, exc: OSError) -> ModelFileError:
    return ModelFileError(f"cannot write {item.name} in {folder} ({_one_line(exc)}); "
                          "choose another folder (--to DIR)")


def _is_intact(path: Path, sha256: str) -> bool:
    """Whether ``path`` is a readable file whose content has the hex SHA-256 ``sha256``."""
    try:
        return file_digest(path) == sha256
    except OSError:  # absent, a folder, unreadable: fetch it again (the rename replaces it)
        return False


def _one_line(exc: BaseException) -> str:
    """``exc`` as one line (the CLI prints errors as a single line), without urllib's
    ``<urlopen error ...>`` wrapping."""
    if isinstance(exc, URLError) and not isinstance(exc, HTTPError):
        exc_text = str(exc.reason)
    else:
        exc_text = str(exc)
    return " ".join(exc_text.split()) or type(exc).__name__
