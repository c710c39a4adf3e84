"""The Basel Face Model 2009 and Deep3DFaceRecon's cropped ``BFM_model_front.mat``.

Neither file may be redistributed (Basel licence): users put them in ``bfm/`` (see
``bfm/README.md``). Both are read into the layout of :mod:`faceanime.morphable.storage`.

**BFM 2009** (``01_MorphableModel.mat``): ``shapeMU (3N, 1)``, ``shapePC (3N, 199)``,
``shapeEV (199, 1)`` (standard deviations, as Basel's own sampling code uses them), ``tl (F, 3)``
1-based; N = 53490; micrometres, converted to mm. With it, optionally, the expression basis of Guo
et al. that Deep3DFaceRecon uses:

- ``Exp_Pca.bin``: int32 ``K``, float32 ``expMU (3n)``, float32 ``expPC`` as ``K`` rows of ``3n``
  (one component per row, xyz-interleaved); micrometres.
- ``std_exp.txt``: ``K`` standard deviations; the stored basis is ``expPC * std``.
- ``BFM_exp_idx.mat``: ``trimIndex (n, 1)``, the 1-based BFM vertices (n = 53215 of 53490) that
  the expression basis is defined on. The loaded model keeps only these vertices; triangles
  touching a dropped vertex are dropped.

``expMU`` is ignored, as Deep3DFaceRecon does. All three files must be present, or none (then the
model has no expression components and a warning says so). A landmark mapping is not part of the
BFM: put ``bfm_landmarks_68.txt`` beside the model (68 lines, each the 1-based index of the BFM 2009
vertex for that iBUG point, 0 where none; text after ``#`` ignored), or every landmark is
unmapped and the fitter cannot use the model.

**Deep3DFaceRecon** ``BFM_model_front.mat``: ``meanshape (1, 3N)``, ``idBase (3N, 80)``,
``exBase (3N, 64)``, ``tri (F, 3)`` and ``keypoints (1, 68)`` 1-based; N = 35709; decimetres,
converted to mm. Its bases are already multiplied by their standard deviations and the
eigenvalues are not stored, so the eigenvalues we record are the squared column norms of the
bases (mm²): the variance each component carries on these vertices.

BFM axes match ours (x to the subject's left, y up, the face towards +z); coordinates keep the
file's origin. Triangles are oriented so their normals point out of the face (flipped if the file
winds them the other way).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from faceanime.errors import ModelFileError
from faceanime.morphable.model import N_LANDMARKS, FaceModel
from faceanime.morphable.storage import model_from_arrays

BFM2009_FILE = "01_MorphableModel.mat"
BFM_FRONT_FILE = "BFM_model_front.mat"
EXP_PCA_FILE = "Exp_Pca.bin"
EXP_STD_FILE = "std_exp.txt"
EXP_INDEX_FILE = "BFM_exp_idx.mat"
LANDMARKS_FILE = "bfm_landmarks_68.txt"

MICROMETRE_TO_MM = 1e-3
DECIMETRE_TO_MM = 100.0


def bfm2009_files(path: str | os.PathLike) -> dict[str, Path | None]:
    """The files of a BFM 2009 model: ``model`` (the given file, or ``01_MorphableModel.mat`` in
    the given folder) and beside it ``expression`` (Exp_Pca.bin), ``expression_std``
    (std_exp.txt), ``expression_index`` (BFM_exp_idx.mat) and ``landmarks``
    (bfm_landmarks_68.txt), None where absent.

    Raises:
        ModelFileError: the model file does not exist.
    """
    path = Path(path)
    model = path / BFM2009_FILE if path.is_dir() else path
    if not model.is_file():
        raise ModelFileError(f"{model}: Basel Face Model file not found; see bfm/README.md for "
                             "how to obtain it")
    folder = model.parent

    def beside(name: str) -> Path | None:
        return folder / name if (folder / name).is_file() else None

    return {"model": model, "expression": beside(EXP_PCA_FILE),
            "expression_std": beside(EXP_STD_FILE), "expression_index": beside(EXP_INDEX_FILE),
            "landmarks": beside(LANDMARKS_FILE)}


def read_bfm2009(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read BFM 2009 (plus Guo et al.'s expression basis when beside it) into the storage layout,
    float32 in mm.

    Args:
        path: ``01_MorphableModel.mat`` or its folder.

    Raises:
        ModelFileError: a file is missing, truncated or has the wrong fields or sizes.
    """
    files = bfm2009_files(path)
    source = files["model"]
    mat = read_mat(source, ("shapeMU", "shapePC", "shapeEV", "tl"))
    mu = _float(mat, "shapeMU", source).reshape(-1)
    if mu.size == 0 or mu.size % 3:
        raise ModelFileError(f"{source}: shapeMU has {mu.size} values, not 3 per vertex")
    n_full = mu.size // 3
    pc = _float(mat, "shapePC", source)
    if pc.ndim != 2 or pc.shape[0] != mu.size:
        raise ModelFileError(f"{source}: shapePC must be ({mu.size}, K), got {pc.shape}")
    ev = _float(mat, "shapeEV", source).reshape(-1)
    if ev.size != pc.shape[1]:
        raise ModelFileError(f"{source}: shapeEV has {ev.size} values for {pc.shape[1]} "
                             "components of shapePC")
    if mat["tl"].ndim != 2 or mat["tl"].shape[1] != 3:
        raise ModelFileError(f"{source}: tl must be (F, 3), got {mat['tl'].shape}")
    tri = _indices(mat["tl"], "tl", source, n_full)

    mean = mu.reshape(n_full, 3) * MICROMETRE_TO_MM
    # shapeEV are standard deviations (µm): basis per std, variances in mm².
    std_mm = ev * MICROMETRE_TO_MM
    basis = (pc.T.reshape(-1, n_full, 3) * std_mm.astype(pc.dtype)[:, None, None]) \
        .astype(np.float32)
    landmarks = _read_landmarks(files["landmarks"], n_full)

    expr = _read_guo_expression(files, n_full)
    if expr is None:
        keep = np.arange(n_full)
        expression_basis = np.zeros((0, n_full, 3), np.float32)
        expression_ev = np.zeros(0, np.float32)
    else:
        keep, expression_basis, expression_ev = expr
    mean, basis, tri, landmarks = _subset(keep, mean, basis, tri, landmarks, files["landmarks"])
    if files["landmarks"] is None:
        warnings.warn(f"{source}: no {LANDMARKS_FILE} beside it; the model has no landmark "
                      "mapping and cannot be fitted to landmarks (see docs/models.md)",
                      stacklevel=2)
    return {
        "name": np.array("bfm"),
        "mean": mean.astype(np.float32),
        "shape_basis": basis,
        "shape_eigenvalues": (std_mm ** 2).astype(np.float32),
        "expression_basis": expression_basis,
        "expression_eigenvalues": expression_ev,
        "expression_names": np.array([f"exp_{i}" for i in range(len(expression_ev))], dtype=str),
        "triangles": orient_outward(mean, tri),
        "landmark_indices": landmarks,
        "contour_right": np.empty(0, np.int64),
        "contour_left": np.empty(0, np.int64),
    }


def read_bfm_front(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read Deep3DFaceRecon's ``BFM_model_front.mat`` into the storage layout, float32 in mm.

    Args:
        path: ``BFM_model_front.mat`` or its folder.

    Raises:
        ModelFileError: missing, truncated or with the wrong fields or sizes.
    """
    path = Path(path)
    source = path / BFM_FRONT_FILE if path.is_dir() else path
    if not source.is_file():
        raise ModelFileError(f"{source}: Deep3DFaceRecon model file not found; see bfm/README.md")
    mat = read_mat(source, ("meanshape", "idBase", "exBase", "tri", "keypoints"))
    mu = _float(mat, "meanshape", source).reshape(-1)
    if mu.size == 0 or mu.size % 3:
        raise ModelFileError(f"{source}: meanshape has {mu.size} values, not 3 per vertex")
    n = mu.size // 3
    bases = {}
    for key in ("idBase", "exBase"):
        b = _float(mat, key, source)
        if b.ndim != 2 or b.shape[0] != mu.size:
            raise ModelFileError(f"{source}: {key} must be ({mu.size}, K), got {b.shape}")
        bases[key] = b.T.reshape(-1, n, 3) * DECIMETRE_TO_MM
    if mat["tri"].ndim != 2 or mat["tri"].shape[1] != 3:
        raise ModelFileError(f"{source}: tri must be (F, 3), got {mat['tri'].shape}")
    tri = _indices(mat["tri"], "tri", source, n)
    keypoints = _indices(mat["keypoints"], "keypoints", source, n).reshape(-1)
    if keypoints.size != N_LANDMARKS:
        raise ModelFileError(f"{source}: keypoints must hold {N_LANDMARKS} vertex indices, got "
                             f"{keypoints.size}")
    mean = mu.reshape(n, 3) * DECIMETRE_TO_MM
    k_exp = bases["exBase"].shape[0]
    return {
        "name": np.array("bfm-front"),
        "mean": mean.astype(np.float32),
        "shape_basis": bases["idBase"].astype(np.float32),
        "shape_eigenvalues": _column_variance(bases["idBase"]),
        "expression_basis": bases["exBase"].astype(np.float32),
        "expression_eigenvalues": _column_variance(bases["exBase"]),
        "expression_names": np.array([f"exp_{i}" for i in range(k_exp)], dtype=str),
        "triangles": orient_outward(mean, tri),
        "landmark_indices": keypoints,
        "contour_right": np.empty(0, np.int64),
        "contour_left": np.empty(0, np.int64),
    }


def load_bfm2009(path: str | os.PathLike, device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32) -> FaceModel:
    """Load BFM 2009 as a :class:`FaceModel`; see :func:`read_bfm2009`."""
    return model_from_arrays(read_bfm2009(path), path, device=device, dtype=dtype)


def load_bfm_front(path: str | os.PathLike, device: torch.device | str | None = None,
                   dtype: torch.dtype = torch.float32) -> FaceModel:
    """Load Deep3DFaceRecon's ``BFM_model_front.mat`` as a :class:`FaceModel`; see
    :func:`read_bfm_front`."""
    return model_from_arrays(read_bfm_front(path), path, device=device, dtype=dtype)


def read_mat(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The variables ``names`` of a MATLAB file (v5/v7 through scipy, v7.3 through h5py).

    Raises:
        ModelFileError: unreadable, a v7.3 file without h5py installed, or a variable missing.
    """
    import scipy.io

    if not path.is_file():
        raise ModelFileError(f"{path}: file not found")
    try:
        data = scipy.io.loadmat(path, variable_names=list(names))
    except NotImplementedError:  # scipy's answer to a v7.3 (HDF5) file
        data = _read_mat_hdf5(path, names)
    except Exception as exc:
        # scipy raises whatever its parser hits on a damaged file (IndexError, OSError, ...).
        raise ModelFileError(f"{path}: not a readable MATLAB .mat file "
                             f"({type(exc).__name__}: {exc})") from exc
    missing = [n for n in names if n not in data]
    if missing:
        raise ModelFileError(f"{path}: missing variable(s) {', '.join(missing)} (expected "
                             f"{', '.join(names)})")
    return {n: np.asarray(data[n]) for n in names}


def orient_outward(mean: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """``triangles (F, 3)`` wound counter-clockwise seen from outside the face.

    The test is the signed volume the surface encloses with the vertex centroid: positive when
    normals point away from it, which holds for a face mask as for a whole head.
    """
    if not triangles.size:
        return triangles
    a, b, c = (mean[triangles[:, i]].astype(np.float64) for i in range(3))
    normals = np.cross(b - a, c - a)
    centre = mean.astype(np.float64).mean(axis=0)
    outward = np.einsum("fd,fd->", (a + b + c) / 3 - centre, normals)
    return triangles if outward >= 0 else np.ascontiguousarray(triangles[:, [0, 2, 1]])


def _read_guo_expression(files: dict[str, Path | None], n_full: int
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(keep (n,), basis (K, n, 3) mm, variances (K,) mm²)`` of the Exp_Pca expression basis, or
    None when none of its three files is present."""
    names = {"expression": EXP_PCA_FILE, "expression_std": EXP_STD_FILE,
             "expression_index": EXP_INDEX_FILE}
    present = [k for k in names if files[k] is not None]
    if not present:
        warnings.warn(f"{files['model']}: no {EXP_PCA_FILE} beside it; the model has no "
                      "expression components (see bfm/README.md)", stacklevel=3)
        return None
    if len(present) < len(names):
        missing = [names[k] for k in names if files[k] is None]
        raise ModelFileError(f"{files['model'].parent}: the expression basis needs "
                             f"{', '.join(names.values())}; missing {', '.join(missing)}")

    index_file = files["expression_index"]
    trim = read_mat(index_file, ("trimIndex",))["trimIndex"]
    keep = _indices(trim, "trimIndex", index_file, n_full).reshape(-1)
    if np.unique(keep).size != keep.size:
        raise ModelFileError(f"{index_file}: trimIndex repeats vertices")
    n = keep.size

    exp_file = files["expression"]
    try:
        raw = exp_file.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"{exp_file}: cannot read ({exc.strerror})") from exc
    if len(raw) < 4:
        raise ModelFileError(f"{exp_file}: truncated at byte {len(raw)} while reading the "
                             "component count (expected int32)")
    k = int(np.frombuffer(raw[:4], "<i4")[0])
    if k <= 0:
        raise ModelFileError(f"{exp_file}: malformed component count {k} at byte 0 (expected a "
                             "positive int32)")
    expected = 4 + 4 * 3 * n * (1 + k)
    if len(raw) != expected:
        what = "truncated" if 0 < len(raw) < expected else "wrong size"
        raise ModelFileError(f"{exp_file}: {what}: {len(raw)} bytes, expected {expected} for "
                             f"{k} components over {n} vertices (int32 count, float32 expMU "
                             f"({3 * n}), float32 expPC ({k}x{3 * n})); n is the length of "
                             f"trimIndex in {index_file.name}")
    pc = np.frombuffer(raw, "<f4", count=3 * n * k, offset=4 + 12 * n).reshape(k, n, 3)

    std_file = files["expression_std"]
    try:
        std = np.loadtxt(std_file, dtype=np.float64, ndmin=1).reshape(-1)
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{std_file}: expected {k} numbers, one standard deviation per "
                             f"expression component ({exc})") from exc
    if std.size != k:
        raise ModelFileError(f"{std_file}: {std.size} values for the {k} components of "
                             f"{exp_file.name}")
    std_mm = std * MICROMETRE_TO_MM
    basis = (pc * std_mm[:, None, None]).astype(np.float32)
    return keep, basis, (std_mm ** 2).astype(np.float32)


def _subset(keep: np.ndarray, mean: np.ndarray, basis: np.ndarray, tri: np.ndarray,
            landmarks: np.ndarray, landmark_file: Path | None):
    """Restrict the model to vertices ``keep`` (n,), renumbering triangles and landmarks."""
    n_full = mean.shape[0]
    if keep.size == n_full and (keep == np.arange(n_full)).all():
        return mean, basis, tri, landmarks
    new_index = np.full(n_full, -1, dtype=np.int64)
    new_index[keep] = np.arange(keep.size)
    tri_new = new_index[tri]
    tri_new = tri_new[(tri_new >= 0).all(axis=1)]
    mapped = landmarks >= 0
    lm_new = np.where(mapped, new_index[np.maximum(landmarks, 0)], -1)
    lost = np.flatnonzero(mapped & (lm_new < 0))
    if lost.size:
        raise ModelFileError(f"{landmark_file}: iBUG point(s) {', '.join(str(i + 1) for i in lost)}"
                             " map to vertices outside the expression basis (BFM_exp_idx.mat)")
    return mean[keep], np.ascontiguousarray(basis[:, keep]), tri_new, lm_new


def _read_landmarks(path: Path | None, n_full: int) -> np.ndarray:
    """``(68,)`` 0-based vertex per iBUG point from ``bfm_landmarks_68.txt``; -1 where unmapped."""
    if path is None:
        return np.full(N_LANDMARKS, -1, dtype=np.int64)
    lines = path.read_text(errors="replace").splitlines()
    entries = [e for e in (line.split("#", 1)[0].strip() for line in lines) if e]
    try:
        values = np.array([int(e) for e in entries], dtype=np.int64)
    except ValueError as exc:
        raise ModelFileError(f"{path}: every line must be one 1-based vertex index ({exc})") \
            from exc
    if values.size != N_LANDMARKS:
        raise ModelFileError(f"{path}: {values.size} entries, expected {N_LANDMARKS} (one per "
                             "iBUG point, 0 where none)")
    if values.max() > n_full:
        raise ModelFileError(f"{path}: vertex {values.max()} beyond the model's {n_full} "
                             "(indices are 1-based)")
    return np.where(values > 0, values - 1, -1)


def _float(mat: dict[str, np.ndarray], key: str, source: Path) -> np.ndarray:
    value = mat[key]
    if value.dtype.kind not in "fiu":
        raise ModelFileError(f"{source}: {key} must be numeric, got {value.dtype}")
    # Large bases stay float32 when stored so (BFM's shapePC is 160470 x 199).
    value = value if value.dtype == np.float32 else value.astype(np.float64)
    if not np.isfinite(value).all():
        raise ModelFileError(f"{source}: {key} holds NaN or infinite values")
    return value


def _indices(value: np.ndarray, key: str, source: Path, n: int) -> np.ndarray:
    """0-based int64 indices from a 1-based MATLAB array, checked against ``[1, n]``."""
    value = np.asarray(value)
    if value.dtype.kind not in "fiu" or (value.dtype.kind == "f" and
                                         (value != np.round(value)).any()):
        raise ModelFileError(f"{source}: {key} must hold integer (1-based) indices")
    value = value.astype(np.int64)
    if value.size and (value.min() < 1 or value.max() > n):
        raise ModelFileError(f"{source}: {key} has indices outside [1, {n}] (1-based; got "
                             f"[{value.min()}, {value.max()}])")
    return value - 1


def _column_variance(basis: np.ndarray) -> np.ndarray:
    """``(K,)`` squared norm of each ``(K, N, 3)`` component: its variance on these vertices."""
    return np.einsum("knd,knd->k", basis, basis).astype(np.float32)


def _read_mat_hdf5(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    try:
        import h5py
    except ImportError as exc:
        raise ModelFileError(f"{path}: a MATLAB v7.3 (HDF5) file; install h5py (pip install "
                             "h5py) or re-save it in MATLAB with save(..., '-v7')") from exc
    try:
        with h5py.File(path, "r") as f:
            # MATLAB writes column-major arrays, so h5py sees every array transposed.
            return {n: np.asarray(f[n]).T for n in names if n in f}
    except OSError as exc:
        raise ModelFileError(f"{path}: not a readable MATLAB v7.3 file ({exc})") from exc
