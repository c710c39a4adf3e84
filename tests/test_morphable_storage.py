"""The project's own model file (.npz): exact round trips and clear errors on bad files."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import rewrite_npz

from faceanime.errors import InputError, MediaError, ModelFileError
from faceanime.morphable.model import FaceModel
from faceanime.morphable.storage import (
    FORMAT_TAG,
    FORMAT_VERSION,
    load_model_npz,
    model_to_arrays,
    save_model,
)


def tiny_model(dtype: torch.dtype = torch.float32, optional: bool = True) -> FaceModel:
    """A 4-vertex model with 2 shape and 2 expression components."""
    g = torch.Generator().manual_seed(0)
    lm = torch.full((68,), -1, dtype=torch.long)
    lm[30], lm[8] = 0, 3
    return FaceModel(
        name="tiny",
        mean=torch.tensor([[0.0, 0, 10], [10, 0, 0], [0, 10, 0], [-10, 0, 0]], dtype=dtype),
        shape_basis=torch.randn(2, 4, 3, generator=g, dtype=dtype),
        shape_eigenvalues=torch.tensor([4.0, 1.0], dtype=dtype),
        expression_basis=torch.randn(2, 4, 3, generator=g, dtype=dtype),
        expression_eigenvalues=torch.tensor([2.0, 0.5], dtype=dtype) if optional else None,
        expression_names=["jaw_open", "smile"],
        triangles=torch.tensor([[0, 1, 2], [0, 2, 3]]),
        texcoords=torch.rand(4, 2, generator=g, dtype=dtype) if optional else None,
        landmark_indices=lm,
        contour_right=torch.tensor([3]) if optional else torch.empty(0, dtype=torch.long),
        contour_left=torch.tensor([1]) if optional else torch.empty(0, dtype=torch.long),
        symmetry=torch.tensor([0, 3, 2, 1]) if optional else None,
    )


def assert_same_model(a: FaceModel, b: FaceModel) -> None:
    for f in fields(FaceModel):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, torch.Tensor):
            assert isinstance(y, torch.Tensor), f.name
            assert x.dtype == y.dtype and torch.equal(x, y), f.name
        else:
            assert x == y, f.name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("optional", [True, False])
def test_round_trip(tmp_path, dtype, optional):
    model = tiny_model(dtype, optional)
    path = save_model(model, tmp_path / "tiny.npz")
    assert path == tmp_path / "tiny.npz"
    assert_same_model(load_model_npz(path), model)


def test_round_trip_sfm(tmp_path, data_dir):
    from faceanime.morphable.eos import load_sfm

    model = load_sfm(data_dir / "sfm")
    assert_same_model(load_model_npz(save_model(model, tmp_path / "sfm.npz")), model)


def test_file_layout(tmp_path):
    save_model(tiny_model(optional=False), tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as data:
        assert str(data["format"]) == FORMAT_TAG and int(data["format_version"]) == FORMAT_VERSION
        assert "symmetry" not in data.files and "texcoords" not in data.files
        assert data["triangles"].dtype == np.int64 and data["mean"].shape == (4, 3)
        assert data["expression_names"].tolist() == ["jaw_open", "smile"]


def test_load_with_dtype_and_device(tmp_path):
    path = save_model(tiny_model(torch.float64), tmp_path / "m.npz")
    model = load_model_npz(path, device="cpu", dtype=torch.float32)
    assert model.dtype == torch.float32 and model.texcoords.dtype == torch.float32
    assert model.triangles.dtype == torch.int64


def _write(path: Path, **changes) -> Path:
    arrays = model_to_arrays(tiny_model())
    arrays.update(format=np.array(FORMAT_TAG), format_version=np.array(FORMAT_VERSION))
    rewrite_npz(path, arrays, **changes)
    return path


@pytest.mark.parametrize("changes, message", [
    ({"format": None}, "not a faceanime model file"),
    ({"format": np.array("something-else")}, "not a faceanime model file"),
    ({"format_version": np.array(FORMAT_VERSION + 1)}, "format version 2 is not supported"),
    ({"format_version": None}, "missing or malformed format_version"),
    ({"mean": None}, "missing model field"),
    ({"mean": np.zeros((4, 2))}, r"field 'mean' must be \(N, 3\)"),
    ({"mean": np.full((4, 3), np.nan)}, "holds NaN"),
    ({"shape_basis": np.zeros((2, 5, 3))}, r"shape_basis must be \(K, 4, 3\)"),
    ({"triangles": np.array([[0, 1, 9]])}, r"triangle indices must lie in \[0, 4\)"),
    ({"triangles": np.zeros((2, 3), np.float32)}, "must hold integer indices"),
    ({"landmark_indices": np.zeros(67, np.int64)}, r"must be \(68,\)"),
    ({"symmetry": np.array([0, 1, 2])}, "field 'symmetry' must be"),
    ({"contour_left": np.array([7])}, "outside"),
    ({"texcoords": np.zeros((3, 2))}, r"texcoords' must be \(4, 2\)"),
    ({"expression_eigenvalues": np.zeros(3)}, r"expression_eigenvalues' must be \(2,\)"),
    ({"expression_names": np.array(["a"])}, "one entry per expression component"),
    ({"name": np.array(3)}, "field 'name' must be a single string"),
])
def test_malformed(tmp_path, changes, message):
    path = _write(tmp_path / "bad.npz", **changes)
    with pytest.raises(ModelFileError, match=rf"bad\.npz: .*{message}"):
        load_model_npz(path)


def test_not_an_npz(tmp_path):
    path = tmp_path / "bad.npz"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ModelFileError, match=r"bad\.npz: not a readable \.npz file"):
        load_model_npz(path)
    with pytest.raises(ModelFileError, match=r"nothere\.npz: no such model file"):
        load_model_npz(tmp_path / "nothere.npz")


def test_pickled_arrays_are_refused(tmp_path):
    path = _write(tmp_path / "bad.npz", expression_names=np.array(["a", "b"], dtype=object))
    with pytest.raises(ModelFileError, match=r"bad\.npz: not a readable \.npz file"):
        load_model_npz(path)


def test_save_errors(tmp_path):
    with pytest.raises(InputError, match=r"model\.bin: a model file must end in \.npz"):
        save_model(tiny_model(), tmp_path / "model.bin")
    with pytest.raises(MediaError, match="does not exist"):
        save_model(tiny_model(), tmp_path / "missing" / "m.npz")
    assert not list(tmp_path.iterdir())  # nothing half-written
