"""load_model by name or path: search order, dispatch on file content, errors, caching."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import scipy.io
import torch
from test_morphable_bfm import write_bfm2009, write_bfm_front
from test_morphable_eos import tiny_folder
from test_morphable_storage import tiny_model

import faceanime
from faceanime.errors import InputError, ModelFileError
from faceanime.morphable import (
    KNOWN_MODELS,
    load_model,
    registry,
    resolve_model,
    save_model,
    search_folders,
)
from faceanime.morphable.download import download_sfm
from faceanime.morphable.registry import ENV_MODEL_DIR


@pytest.fixture
def isolated(isolated_models):
    return isolated_models


def test_search_order(isolated, monkeypatch):
    a, b = isolated / "a", isolated / "b"
    monkeypatch.setenv(ENV_MODEL_DIR, f"{a}{os.pathsep}{b}")
    folders = search_folders()  # the real function, not the fixture's filtered one
    assert folders[:3] == [a, b, isolated / "work" / "bfm"]
    package = Path(faceanime.__file__).resolve().parent
    # the download cache before the bundled SFM: a user's own copy wins over the package's
    assert folders[3:] == [package.parent / "bfm", isolated / "cache", package / "data"]


def test_sfm_by_name(data_dir, isolated, monkeypatch):
    for root in (data_dir, data_dir / "sfm"):  # the share/ folder itself, or its parent
        monkeypatch.setenv(ENV_MODEL_DIR, str(root))
        model = load_model("sfm")
        assert model.name == "sfm" and model.n_vertices == 3448
        assert resolve_model("SFM").path == data_dir / "sfm" / "sfm_shape_3448.bin"


def test_first_folder_wins(isolated, monkeypatch):
    tiny_folder(isolated / "a" / "sfm")
    shutil.copytree(isolated / "a", isolated / "b")
    monkeypatch.setenv(ENV_MODEL_DIR, f"{isolated / 'a'}{os.pathsep}{isolated / 'b'}")
    assert resolve_model("sfm").path == isolated / "a" / "sfm" / "sfm_shape_3448.bin"


def test_bfm_names_in_working_directory(isolated):
    write_bfm2009(isolated / "work" / "bfm")
    write_bfm_front(isolated / "work" / "bfm" / "BFM_model_front.mat")
    # a known name wins over the folder bfm/ of the same name...
    assert load_model("bfm").name == "bfm"
    assert load_model("bfm-front").name == "bfm-front"
    assert load_model("BFM_front").name == "bfm-front"
    # ...and the folder itself holds two models
    with pytest.raises(InputError, match="several models in this folder"):
        load_model("./bfm")


def test_npz_by_name(isolated, monkeypatch):
    monkeypatch.setenv(ENV_MODEL_DIR, str(isolated))
    save_model(tiny_model(), isolated / "tiny.npz")
    assert load_model("tiny").name == "tiny"


def test_unknown_name(isolated, monkeypatch):
    monkeypatch.setenv(ENV_MODEL_DIR, str(isolated / "models"))
    with pytest.raises(InputError) as info:
        load_model("flame")
    message = str(info.value)
    assert "unknown model 'flame'" in message
    for spec in KNOWN_MODELS:
        assert spec.name in message
    assert str(isolated / "models") in message and str(isolated / "work" / "bfm") in message


def test_known_name_not_found(isolated):
    with pytest.raises(ModelFileError, match=r"model 'bfm' not found: no 01_MorphableModel\.mat "
                                             rf"in .*{ENV_MODEL_DIR}"):
        load_model("bfm")


def test_paths(isolated, data_dir):
    sfm = data_dir / "sfm"
    assert load_model(sfm / "sfm_shape_3448.bin").n_vertices == 3448
    assert load_model(str(sfm)).n_vertices == 3448
    with pytest.raises(ModelFileError, match=r"missing\.bin: model file not found"):
        load_model(isolated / "missing.bin")
    with pytest.raises(ModelFileError, match=r"expression_blendshapes_3448\.bin: a blendshapes "
                                             "file, not a model"):
        load_model(sfm / "expression_blendshapes_3448.bin")
    with pytest.raises(ModelFileError, match=r"ibug_to_sfm\.txt: unknown model file type"):
        load_model(sfm / "ibug_to_sfm.txt")


def test_mat_dispatch_on_content(isolated):
    write_bfm_front(isolated / "renamed.mat")
    assert load_model(isolated / "renamed.mat").name == "bfm-front"
    write_bfm2009(isolated / "b", expression=False, landmarks=False)
    shutil.move(isolated / "b" / "01_MorphableModel.mat", isolated / "b" / "bfm09.mat")
    with pytest.warns(UserWarning):
        assert load_model(isolated / "b" / "bfm09.mat").name == "bfm"
    scipy.io.savemat(isolated / "other.mat", {"x": 1.0})
    with pytest.raises(ModelFileError, match=r"other\.mat: not a morphable model"):
        load_model(isolated / "other.mat")
    (isolated / "junk.mat").write_bytes(b"junk" * 50)
    with pytest.raises(ModelFileError, match=r"junk\.mat: not a readable MATLAB"):
        load_model(isolated / "junk.mat")


def test_empty_folder(isolated):
    with pytest.raises(ModelFileError, match="no model in this folder"):
        load_model(isolated / "work")


def test_dtype_device_and_fresh_tensors(data_dir):
    path = data_dir / "sfm"
    a = load_model(path, device="cpu", dtype=torch.float64)
    assert a.dtype == torch.float64 and a.device.type == "cpu"
    b = load_model(path)
    b.mean += 1  # a caller's change must not reach the cache
    c = load_model(path)
    assert torch.equal(c.mean, a.mean.float())


def test_cache_notices_a_changed_file(isolated):
    path = save_model(tiny_model(), isolated / "m.npz")
    assert load_model(path).name == "tiny"
    changed = tiny_model()
    changed.name = "changed"
    save_model(changed, path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert load_model(path).name == "changed"


def test_bundled_sfm_needs_no_download(isolated, data_dir, monkeypatch):
    # A fresh install whose package folder holds the SFM, as tools/install.sh and release wheels
    # put it there (never committed; made here from the test data, verified by SHA-256): no
    # $FACEANIME_MODEL_DIR, an empty cache, no bfm/ - the package's own copy is found.
    package = isolated / "package_data"
    download_sfm(package / "sfm", progress=False, source_dir=data_dir / "sfm")
    monkeypatch.setattr(registry, "bundled_dir", lambda: package)
    monkeypatch.setattr(registry, "search_folders", search_folders)  # unfiltered
    assert search_folders()[-1] == package  # searched last
    source = resolve_model("sfm")
    assert source.path == package / "sfm" / "sfm_shape_3448.bin"
    assert all(path is not None and path.is_file() for path in source.files.values())
    model = load_model("sfm")
    assert (model.n_vertices, model.n_shape, model.n_expression) == (3448, 63, 6)
    assert model.symmetry is not None and model.landmark_indices is not None
    # a user's own copy (here in the download cache) wins over the bundled one
    tiny_folder(isolated / "cache" / "sfm")
    assert resolve_model("sfm").path == isolated / "cache" / "sfm" / "sfm_shape_3448.bin"


def test_the_package_commits_no_model_file():
    # The model is put in at install time, never kept in the repository.
    folder = registry.bundled_dir() / "sfm"
    tracked = subprocess.run(["git", "ls-files", str(folder)], capture_output=True, text=True,
                             cwd=folder.parent).stdout.split()
    assert [Path(t).name for t in tracked] in ([], ["README.md"])
