"""``download_sfm`` and ``faceanime model download``: verified downloads from a ``file://`` mirror
of the eos repository, skipping intact files, nothing left behind on failure, one-line errors."""

from __future__ import annotations

import functools
import hashlib
import shutil
from pathlib import Path

import pytest
from helpers import assert_one_line_error, run_cli

from faceanime.cli import model as cli_model
from faceanime.errors import ModelFileError
from faceanime.morphable import load_model, registry, resolve_model
from faceanime.morphable.download import SFM_BROWSE_URL, SFM_FILES, download_sfm
from faceanime.morphable.registry import ENV_MODEL_DIR

UNREACHABLE = "file:///nonexistent/dir"
NAMES = [f.name for f in SFM_FILES]


@pytest.fixture
def mirror(tmp_path, data_dir) -> Path:
    """A folder laid out like the eos repository at the pinned release (``share/`` and
    ``LICENSE``), holding copies of the shared SFM files; pass ``mirror.as_uri()`` as base_url."""
    root = tmp_path / "eos"
    for item in SFM_FILES:
        source = data_dir / "sfm" / item.name  # the licence is stored as LICENSE-eos.txt there
        (root / item.remote).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, root / item.remote)
    return root


@pytest.fixture
def cache(isolated_models) -> Path:
    """Isolated model lookup (conftest); ``load_model("sfm")`` finds only what a test downloads
    into this cache folder."""
    return isolated_models / "cache"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listing(folder: Path) -> list[str]:
    """Every entry of ``folder``, hidden temporaries included."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def run(capsys, *argv: str) -> tuple[int, str, str]:
    return run_cli(capsys, *argv)


def test_pinned_hashes_are_those_of_the_eos_files(data_dir):
    for item in SFM_FILES:
        path = data_dir / "sfm" / item.name
        assert (path.stat().st_size, sha256(path)) == (item.size, item.sha256), item.name


def test_download_then_load_by_name(mirror, cache):
    folder = download_sfm(base_url=mirror.as_uri(), progress=False)
    assert folder == cache / "sfm"
    assert listing(folder) == sorted(NAMES)  # no temporary left behind
    for item in SFM_FILES:
        assert sha256(folder / item.name) == item.sha256
    assert resolve_model("sfm").path == folder / "sfm_shape_3448.bin"
    model = load_model("sfm")
    assert model.n_vertices == 3448 and model.n_expression == 6 and model.symmetry is not None


def test_cache_is_searched_last_but_the_bundled_model(cache, monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_MODEL_DIR, str(tmp_path / "mine"))
    folders = registry.search_folders()
    # (the fixture hides the bundled folder, which comes after the cache: test_morphable_registry)
    assert folders[0] == tmp_path / "mine" and folders[-1] == cache


def test_second_run_skips_intact_files(mirror, tmp_path):
    target = tmp_path / "sfm"
    download_sfm(target, base_url=mirror.as_uri(), progress=False)
    stamps = {name: (target / name).stat().st_mtime_ns for name in NAMES}
    download_sfm(target, base_url=mirror.as_uri(), progress=False)
    # Nothing is fetched at all: an unreachable source does not matter when every file is intact.
    download_sfm(target, base_url=UNREACHABLE, progress=False)
    assert {name: (target / name).stat().st_mtime_ns for name in NAMES} == stamps
    assert listing(target) == sorted(NAMES)


def test_damaged_local_file_is_fetched_again(mirror, tmp_path):
    target = tmp_path / "sfm"
    download_sfm(target, base_url=mirror.as_uri(), progress=False)
    stamps = {name: (target / name).stat().st_mtime_ns for name in NAMES}
    (target / "ibug_to_sfm.txt").write_text("edited")
    download_sfm(target, base_url=mirror.as_uri(), progress=False)
    assert sha256(target / "ibug_to_sfm.txt") == SFM_FILES[2].sha256
    for name in NAMES:
        if name != "ibug_to_sfm.txt":
            assert (target / name).stat().st_mtime_ns == stamps[name], name


@pytest.mark.parametrize("position", [0, 3])  # the first file, and one after others landed
@pytest.mark.parametrize("damage", ["corrupt", "truncated"])
def test_bad_source_file_never_lands(mirror, tmp_path, position, damage):
    item = SFM_FILES[position]
    source = mirror / item.remote
    data = source.read_bytes()
    if damage == "corrupt":
        data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
    else:
        data = data[: len(data) // 2]  # what an interrupted transfer would leave
    source.write_bytes(data)
    target = tmp_path / "sfm"
    with pytest.raises(ModelFileError) as info:
        download_sfm(target, base_url=mirror.as_uri(), progress=False)
    message = str(info.value)
    assert message.startswith(f"{item.name}: SHA-256 mismatch")
    assert item.sha256 in message and hashlib.sha256(data).hexdigest() in message
    assert "\n" not in message
    # Only the files verified before the bad one are there: no bad file, no temporary.
    assert listing(target) == sorted(NAMES[:position])


def test_unreachable_source(tmp_path):
    target = tmp_path / "cache" / "faceanime" / "sfm"
    with pytest.raises(ModelFileError) as info:
        download_sfm(target, base_url=UNREACHABLE, progress=False)
    message = str(info.value)
    assert f"cannot download sfm_shape_3448.bin from {UNREACHABLE}/share/" in message
    assert SFM_BROWSE_URL in message and ENV_MODEL_DIR in message and "\n" not in message
    # the folders this download created are gone again, not left empty
    assert not (tmp_path / "cache").exists()
    existing = tmp_path / "mine"
    existing.mkdir()
    with pytest.raises(ModelFileError):
        download_sfm(existing, base_url=UNREACHABLE, progress=False)
    assert existing.is_dir() and listing(existing) == []  # a folder that was there stays


def test_cli_download_to_folder(capsys, mirror, cache, tmp_path, monkeypatch):
    monkeypatch.setattr(cli_model, "download_sfm",
                        functools.partial(download_sfm, base_url=mirror.as_uri()))
    target = tmp_path / "models"
    status, out, err = run(capsys, "model", "download", "sfm", "--to", str(target),
                           "--no-progress")
    assert status == 0 and err == ""  # --no-progress: no bars on stderr
    assert listing(target) == sorted(NAMES)
    assert str(target) in out and "SHA-256 verified" in out
    assert f"set {ENV_MODEL_DIR}={target}" in out  # --to a folder '--model sfm' does not search


def test_cli_download_to_cache(capsys, mirror, cache, monkeypatch):
    monkeypatch.setattr(cli_model, "download_sfm",
                        functools.partial(download_sfm, base_url=mirror.as_uri()))
    status, out, _ = run(capsys, "model", "download", "SFM", "--no-progress")
    assert status == 0 and listing(cache / "sfm") == sorted(NAMES)
    assert ENV_MODEL_DIR not in out  # the cache is searched: nothing to set
    status, out, _ = run(capsys, "model", "info", "sfm")
    assert status == 0 and "vertices     3448" in out


def test_cli_unreachable_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(cli_model, "download_sfm",
                        functools.partial(download_sfm, base_url=UNREACHABLE))
    status, _, err = run(capsys, "model", "download", "sfm", "--to", str(tmp_path / "sfm"),
                         "--no-progress")
    assert_one_line_error(status, err, "cannot download sfm_shape_3448.bin", UNREACHABLE,
                          ENV_MODEL_DIR, SFM_BROWSE_URL)
    assert not (tmp_path / "sfm").exists()


@pytest.mark.parametrize("name", ["bfm", "bfm-front", "BFM_front"])
def test_cli_basel_models_are_not_downloadable(capsys, tmp_path, name):
    status, _, err = run(capsys, "model", "download", name, "--to", str(tmp_path / "x"))
    assert_one_line_error(status, err, "cannot be downloaded", "licence", "bfm/README.md")
    assert not (tmp_path / "x").exists()


def test_cli_unknown_model(capsys, tmp_path):
    status, _, err = run(capsys, "model", "download", "flame", "--to", str(tmp_path / "x"))
    assert_one_line_error(status, err, "unknown model 'flame'", "only sfm can be downloaded")


def test_not_found_suggests_the_download(cache):
    with pytest.raises(ModelFileError, match=r"model 'sfm' not found: .*run 'faceanime model "
                                             r"download sfm', or set FACEANIME_MODEL_DIR"):
        load_model("sfm")
    with pytest.raises(ModelFileError) as info:
        load_model("bfm")
    assert "download" not in str(info.value)  # the Basel licence: no download to suggest


def test_cli_from_a_local_folder_into_the_package(capsys, data_dir, tmp_path, monkeypatch):
    # What tools/install.sh runs: the files copied from a local folder, checked against the
    # same pinned hashes, into the package's own model folder (here a stand-in).
    package = tmp_path / "package_data"
    monkeypatch.setattr(cli_model, "bundled_dir", lambda: package)
    status, _, err = run(capsys, "model", "download", "sfm", "--bundle", "--from",
                           str(data_dir / "sfm"), "--no-progress")
    assert status == 0, err
    assert listing(package / "sfm") == sorted(NAMES)
    for item in SFM_FILES:
        assert sha256(package / "sfm" / item.name) == item.sha256
    # a local copy that is not the published model is refused, file by file, nothing kept
    bad = tmp_path / "bad"
    shutil.copytree(data_dir / "sfm", bad)
    (bad / "sfm_shape_3448.bin").chmod(0o644)
    with open(bad / "sfm_shape_3448.bin", "r+b") as fh:
        fh.seek(1000)
        fh.write(b"\x00\x01\x02")
    status, _, err = run(capsys, "model", "download", "sfm", "--to", str(tmp_path / "x"),
                         "--from", str(bad), "--no-progress")
    assert_one_line_error(status, err, "sfm_shape_3448.bin", "SHA-256 mismatch")
    assert not (tmp_path / "x" / "sfm_shape_3448.bin").exists()
