"""The project's own model file (``.npz``) and the numpy layout every loader produces.

A :class:`~faceanime.morphable.model.FaceModel` is written as one uncompressed ``.npz`` whose keys
are the model's field names, plus two keys that identify the format:

=========================  ===========================  ==========================================
key                        array                        notes
=========================  ===========================  ==========================================
``format``                 0-d str                      always ``"faceanime-morphable-model"``
``format_version``         0-d int64                    :data:`FORMAT_VERSION` (newer is refused)
``name``                   0-d str                      the model's short name
``mean``                   ``(N, 3)`` float             millimetres
``shape_basis``            ``(Ks, N, 3)`` float         per standard deviation
``shape_eigenvalues``      ``(Ks,)`` float              mm²
``expression_basis``       ``(Ke, N, 3)`` float         ``Ke`` may be 0
``expression_eigenvalues`` ``(Ke,)`` float              absent for blendshapes
``expression_names``       ``(Ke,)`` str
``triangles``              ``(F, 3)`` int64
``texcoords``              ``(N, 2)`` float             absent when the model has none
``landmark_indices``       ``(68,)`` int64              -1 where unmapped
``contour_right``          ``(Cr,)`` int64
``contour_left``           ``(Cl,)`` int64
``symmetry``               ``(N,)`` int64               absent when the model has none
=========================  ===========================  ==========================================

The eos and BFM readers return exactly this dictionary (without the two format keys), so one
function, :func:`model_from_arrays`, validates every model whatever file it came from.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from faceanime.errors import InputError, ModelFileError
from faceanime.io.npz import load_npz, save_npz
from faceanime.morphable.model import N_LANDMARKS, FaceModel

FORMAT_TAG = "faceanime-morphable-model"
FORMAT_VERSION = 1

FLOAT_FIELDS = ("mean", "shape_basis", "shape_eigenvalues", "expression_basis")
INDEX_FIELDS = ("triangles", "landmark_indices", "contour_right", "contour_left")
OPTIONAL_FLOAT_FIELDS = ("expression_eigenvalues", "texcoords")
OPTIONAL_INDEX_FIELDS = ("symmetry",)
REQUIRED_KEYS = ("name", "expression_names", *FLOAT_FIELDS, *INDEX_FIELDS)


def model_to_arrays(model: FaceModel) -> dict[str, np.ndarray]:
    """The model as plain numpy arrays in the layout of the module docstring (CPU copies; float
    arrays keep the model's dtype, index arrays are int64; optional fields that are None are
    left out)."""
    arrays: dict[str, np.ndarray] = {
        "name": np.array(model.name),
        # ``str`` dtype (not object) so the file loads without pickle.
        "expression_names": np.array(list(model.expression_names), dtype=str).reshape(-1),
    }
    for key in (*FLOAT_FIELDS, *OPTIONAL_FLOAT_FIELDS):
        value = getattr(model, key)
        if value is not None:
            arrays[key] = value.detach().cpu().numpy().copy()
    for key in (*INDEX_FIELDS, *OPTIONAL_INDEX_FIELDS):
        value = getattr(model, key)
        if value is not None:
            arrays[key] = value.detach().cpu().numpy().astype(np.int64)
    return arrays


def model_from_arrays(arrays: Mapping[str, np.ndarray], source: str | os.PathLike,
                      device: torch.device | str | None = None,
                      dtype: torch.dtype | None = torch.float32) -> FaceModel:
    """Build and validate a :class:`FaceModel` from the numpy layout of this module.

    Args:
        arrays: field name → array (extra keys are ignored; optional fields may be absent).
        source: the file the arrays came from, named in every error message.
        device: where the tensors go (CPU when None).
        dtype: floating dtype of the model; None keeps each stored array's own float dtype.

    Raises:
        ModelFileError: a field is missing, has the wrong shape or dtype, or an index is out of
            range.
    """
    missing = [k for k in REQUIRED_KEYS if k not in arrays]
    if missing:
        raise ModelFileError(f"{source}: missing model field(s) {', '.join(missing)}")

    def fail(message: str) -> ModelFileError:
        return ModelFileError(f"{source}: {message}")

    name = np.asarray(arrays["name"])
    if name.ndim != 0 or name.dtype.kind != "U":
        raise fail("field 'name' must be a single string")
    names = np.asarray(arrays["expression_names"])
    if names.ndim != 1 or (names.size and names.dtype.kind != "U"):
        raise fail("field 'expression_names' must be a 1-D array of strings")

    floats: dict[str, np.ndarray] = {}
    for key in (*FLOAT_FIELDS, *OPTIONAL_FLOAT_FIELDS):
        if key in arrays:
            value = np.asarray(arrays[key])
            if value.dtype.kind != "f":
                raise fail(f"field '{key}' must be floating point, got {value.dtype}")
            if not np.isfinite(value).all():
                raise fail(f"field '{key}' holds NaN or infinite values")
            floats[key] = value
    ints: dict[str, np.ndarray] = {}
    for key in (*INDEX_FIELDS, *OPTIONAL_INDEX_FIELDS):
        if key in arrays:
            value = np.asarray(arrays[key])
            if value.dtype.kind not in "iu":
                raise fail(f"field '{key}' must hold integer indices, got {value.dtype}")
            ints[key] = value.astype(np.int64)

    if floats["mean"].ndim != 2 or floats["mean"].shape[1] != 3:
        raise fail(f"field 'mean' must be (N, 3), got {floats['mean'].shape}")
    n = floats["mean"].shape[0]
    _check_indices(ints, n, fail)
    if "texcoords" in floats and floats["texcoords"].shape != (n, 2):
        raise fail(f"field 'texcoords' must be ({n}, 2), got {floats['texcoords'].shape}")
    n_exp = floats["expression_basis"].shape[0] if floats["expression_basis"].ndim else 0
    if "expression_eigenvalues" in floats and floats["expression_eigenvalues"].shape != (n_exp,):
        raise fail(f"field 'expression_eigenvalues' must be ({n_exp},), "
                   f"got {floats['expression_eigenvalues'].shape}")

    tensors = {k: _tensor(v, device, dtype) for k, v in floats.items()}
    tensors.update({k: _tensor(v, device, None) for k, v in ints.items()})
    try:
        return FaceModel(
            name=str(name),
            expression_names=[str(s) for s in names.tolist()],
            expression_eigenvalues=tensors.pop("expression_eigenvalues", None),
            texcoords=tensors.pop("texcoords", None),
            symmetry=tensors.pop("symmetry", None),
            **tensors,
        )
    except ValueError as exc:
        raise fail(str(exc)) from exc


def save_model(model: FaceModel, path: str | os.PathLike) -> Path:
    """Write ``model`` to ``path`` (.npz) atomically; returns the path.

    Raises:
        InputError: ``path`` does not end in ``.npz``.
        MediaError: the output folder does not exist or is not writable.
    """
    path = Path(path)
    if path.suffix.lower() != ".npz":
        raise InputError(f"{path}: a model file must end in .npz")
    arrays = model_to_arrays(model)
    arrays["format"] = np.array(FORMAT_TAG)
    arrays["format_version"] = np.array(FORMAT_VERSION, dtype=np.int64)
    return save_npz(path, **arrays)


def read_model_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of a model ``.npz`` (format keys checked and removed).

    Raises:
        ModelFileError: missing, not an npz, not a faceanime model, or of a newer format version.
    """
    path = Path(path)
    arrays = load_npz(path, "model file", ModelFileError)
    tag = arrays.pop("format", None)
    version = arrays.pop("format_version", None)
    if tag is None or str(tag) != FORMAT_TAG:
        raise ModelFileError(f"{path}: not a faceanime model file (no format key "
                             f"'{FORMAT_TAG}'); write one with faceanime.morphable.save_model")
    try:
        version = int(version)
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: missing or malformed format_version") from exc
    if not 1 <= version <= FORMAT_VERSION:
        raise ModelFileError(f"{path}: model format version {version} is not supported "
                             f"(this faceanime reads versions 1 to {FORMAT_VERSION}); upgrade")
    return arrays


def load_model_npz(path: str | os.PathLike, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> FaceModel:
    """Load a model written by :func:`save_model`.

    ``dtype`` None keeps the stored float dtypes, so ``save_model`` then ``load_model_npz`` gives
    back an identical model.

    Raises:
        ModelFileError: see :func:`read_model_npz` and :func:`model_from_arrays`.
    """
    return model_from_arrays(read_model_npz(path), path, device=device, dtype=dtype)


def _check_indices(ints: Mapping[str, np.ndarray], n: int, fail) -> None:
    """Shape and range checks of the index fields (shapes of float fields are FaceModel's job)."""
    tri = ints["triangles"]
    if tri.ndim != 2 or tri.shape[1] != 3:
        raise fail(f"field 'triangles' must be (F, 3), got {tri.shape}")
    if tri.size and (tri.min() < 0 or tri.max() >= n):
        raise fail(f"triangle indices must lie in [0, {n}), got [{tri.min()}, {tri.max()}]")
    lm = ints["landmark_indices"]
    if lm.shape != (N_LANDMARKS,):
        raise fail(f"field 'landmark_indices' must be ({N_LANDMARKS},), got {lm.shape}")
    if lm.min() < -1 or lm.max() >= n:
        raise fail(f"landmark indices must lie in [-1, {n})")
    for key in ("contour_right", "contour_left", "symmetry"):
        if key not in ints:
            continue
        value = ints[key]
        expected = (n,) if key == "symmetry" else None
        if value.ndim != 1 or (expected is not None and value.shape != expected):
            raise fail(f"field '{key}' must be {expected or '1-D'}, got {value.shape}")
        if value.size and (value.min() < 0 or value.max() >= n):
            raise fail(f"field '{key}' has vertex indices outside [0, {n})")


def _tensor(array: np.ndarray, device: torch.device | str | None,
            dtype: torch.dtype | None) -> torch.Tensor:
    # np.array copies: cached arrays are read-only and must never alias a caller's tensor.
    return torch.from_numpy(np.array(array)).to(device=device, dtype=dtype)
