"""The Surrey Face Model and other models in the eos library's file formats, read with numpy only.

Files (eos ``share/`` folder; the companions are found beside the shape model):

- ``sfm_shape_3448.bin`` — an eos ``MorphableModel`` as a cereal binary archive (little-endian, no
  padding): uint32 class version, then the shape PCA model (mean, orthonormal basis, eigenvalues,
  triangle list), the colour PCA model (empty for the SFM), from version 2 an optional expression
  model (PCA model or blendshapes), from version 3 optional landmark definitions, then the texture
  coordinates and, from version 4, the texture triangles. Versions 1–4 are read.
- ``expression_blendshapes_3448.bin`` — the 6 SFM expression blendshapes (optional: without it the
  model has no expression components and a warning says so).
- ``ibug_to_sfm.txt`` — TOML, iBUG 68-point id (1-based) → vertex index (required, unless the model
  file itself holds iBUG-numbered landmark definitions).
- ``sfm_model_contours.json`` — candidate jaw-contour vertices per side (required).
- ``sfm_reference_symmetry.txt`` — mirror vertex of each vertex of the 845-vertex reference mesh,
  1-based (optional). The remaining vertices of the 3448-vertex model are paired by a minimum-cost
  matching of the x-mirrored mean shape.

The SFM is in millimetres with the axes of :mod:`faceanime.morphable.model` (x to the subject's
left, y up, the face looking along +z), so no conversion is applied. Texture coordinates are kept as
eos stores them: (u, v) in [0, 1] with v = 0 at the *top* of the texture image.
"""

from __future__ import annotations

import json
import os
import re
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from faceanime.errors import ModelFileError
from faceanime.morphable.model import N_LANDMARKS, FaceModel
from faceanime.morphable.storage import model_from_arrays

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

SUPPORTED_VERSIONS = (1, 2, 3, 4)
DEFAULT_SHAPE_FILE = "sfm_shape_3448.bin"
# Beyond this many unmatched vertices the exact mirror matching would need too much memory.
MAX_MATCHED_SYMMETRY = 8000
_FORMAT_NAMES = {"I": "uint32", "i": "int32", "Q": "uint64", "B": "bool"}


@dataclass(frozen=True)
class PcaModel:
    """An eos PCA model as stored: ``mean (3N,)``, ``orthonormal_basis (3N, K)``, ``eigenvalues
    (K,)``, ``triangles (F, 3)`` int64; coordinates xyz-interleaved."""

    mean: np.ndarray
    orthonormal_basis: np.ndarray
    eigenvalues: np.ndarray
    triangles: np.ndarray

    def rescaled_basis(self) -> np.ndarray:
        """``(3N, K)`` basis per standard deviation, as eos's ``get_rescaled_pca_basis``."""
        return self.orthonormal_basis * np.sqrt(self.eigenvalues)[None, :]


@dataclass(frozen=True)
class Blendshapes:
    """Expression blendshapes: ``names`` and ``deltas (K, 3N)`` offsets per unit weight."""

    names: list[str]
    deltas: np.ndarray


@dataclass(frozen=True)
class EosModel:
    """The content of an eos ``MorphableModel`` file, as stored (numpy, no unit conversion).

    Attributes:
        version: cereal class version (1–4).
        shape: the shape PCA model.
        color: the colour PCA model (empty arrays for shape-only models such as the SFM).
        expression: a PCA expression model, blendshapes, or None (always None in version 1).
        landmark_definitions: landmark name → vertex index, or None (version 3 on).
        texcoords: ``(T, 2)`` float64 (u, v), v = 0 at the image top; ``T`` = 0 or ``N``
            (or any count when ``texture_triangles`` is given).
        texture_triangles: ``(F, 3)`` int64 indices into ``texcoords`` (version 4), or empty.
    """

    version: int
    shape: PcaModel
    color: PcaModel
    expression: PcaModel | Blendshapes | None
    landmark_definitions: dict[str, int] | None
    texcoords: np.ndarray
    texture_triangles: np.ndarray = field(default_factory=lambda: np.empty((0, 3), np.int64))


class _Reader:
    """Bounds-checked little-endian reads from a byte buffer; every failure is a ModelFileError
    naming the file, the byte offset and what was being read."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data = data
        self.path = path
        self.pos = 0

    def fail(self, message: str) -> ModelFileError:
        return ModelFileError(f"{self.path}: {message}")

    def take(self, size: int, what: str, expected: str) -> memoryview:
        left = len(self.data) - self.pos
        if size > left:
            raise self.fail(f"truncated at byte {self.pos} while reading {what} (expected "
                            f"{expected}: {size} bytes, {left} left)")
        view = memoryview(self.data)[self.pos:self.pos + size]
        self.pos += size
        return view

    def scalar(self, fmt: str, what: str) -> int:
        size = struct.calcsize("<" + fmt)
        return struct.unpack("<" + fmt, self.take(size, what, _FORMAT_NAMES.get(fmt, fmt)))[0]

    def array(self, dtype: str, count: int, what: str, expected: str) -> np.ndarray:
        dt = np.dtype(dtype)
        if count < 0:
            raise self.fail(f"malformed {what} at byte {self.pos}: negative size {count}")
        return np.frombuffer(self.take(count * dt.itemsize, what, expected), dtype=dt).copy()

    def matrix(self, what: str) -> np.ndarray:
        """An Eigen float matrix: int32 rows, int32 cols, column-major float32 data."""
        start = self.pos
        rows = self.scalar("i", f"the row count of {what}")
        cols = self.scalar("i", f"the column count of {what}")
        if rows < 0 or cols < 0:
            raise self.fail(f"malformed header of {what} at byte {start}: {rows}x{cols}")
        flat = self.array("<f4", rows * cols, what, f"{rows}x{cols} float32")
        return flat.reshape(cols, rows).T

    def size(self, what: str) -> int:
        return self.scalar("Q", f"the element count of {what}")

    def string(self, what: str) -> str:
        length = self.size(what)
        raw = bytes(self.take(length, what, f"{length} characters"))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.fail(f"{what} is not valid UTF-8 text (byte {self.pos - length})") from exc

    def flag(self, what: str) -> bool:
        value = self.scalar("B", what)
        if value > 1:
            raise self.fail(f"{what} at byte {self.pos - 1} is {value}, not a bool (0 or 1)")
        return bool(value)

    def int_triples(self, what: str) -> np.ndarray:
        count = self.size(what)
        return self.array("<i4", 3 * count, what, f"{count}x3 int32").reshape(-1, 3) \
            .astype(np.int64)

    def pca_model(self, what: str) -> PcaModel:
        mean = self.matrix(f"the {what} mean")
        basis = self.matrix(f"the {what} basis")
        eigenvalues = self.matrix(f"the {what} eigenvalues")
        triangles = self.int_triples(f"the {what} triangle list")
        if mean.size and mean.shape[1] != 1:
            raise self.fail(f"the {what} mean must be a column vector, got {mean.shape}")
        mean = mean.reshape(-1)
        if mean.size % 3:
            raise self.fail(f"the {what} mean has {mean.size} rows, not a multiple of 3 (xyz)")
        if basis.size and basis.shape[0] != mean.size:
            raise self.fail(f"the {what} basis has {basis.shape[0]} rows but the mean has "
                            f"{mean.size}")
        if eigenvalues.size and eigenvalues.shape[1] != 1:
            raise self.fail(f"the {what} eigenvalues must be a column vector")
        eigenvalues = eigenvalues.reshape(-1)
        if eigenvalues.size != basis.shape[1]:
            raise self.fail(f"the {what} has {basis.shape[1]} basis vectors but "
                            f"{eigenvalues.size} eigenvalues")
        if (eigenvalues < 0).any():
            raise self.fail(f"the {what} has negative eigenvalues")
        return PcaModel(mean, basis, eigenvalues, triangles)

    def blendshapes(self, what: str) -> Blendshapes:
        count = self.size(f"the {what}")
        names, deltas = [], []
        for i in range(count):  # a handful of blendshapes: the data inside is read vectorised
            names.append(self.string(f"the name of {what} {i}"))
            delta = self.matrix(f"{what} {i} ({names[-1]!r})")
            if delta.shape[1] != 1 or delta.shape[0] % 3:
                raise self.fail(f"{what} {i} ({names[-1]!r}) must be a 3N x 1 vector, "
                                f"got {delta.shape[0]}x{delta.shape[1]}")
            if deltas and delta.shape[0] != deltas[0].size:
                raise self.fail(f"{what} {i} has {delta.shape[0]} rows, the first one "
                                f"{deltas[0].size}")
            deltas.append(delta.reshape(-1))
        width = deltas[0].size if deltas else 0
        return Blendshapes(names, np.stack(deltas) if deltas else np.zeros((0, width), np.float32))

    def end(self, what: str) -> None:
        left = len(self.data) - self.pos
        if left:
            raise self.fail(f"{left} unexpected bytes after {what} at byte {self.pos}; "
                            "the file is not what its header says")


def read_eos_model(path: str | os.PathLike) -> EosModel:
    """Parse an eos ``MorphableModel`` cereal binary file (class versions 1–4).

    Raises:
        ModelFileError: missing, truncated, of an unknown class version, or inconsistent.
    """
    path = Path(path)
    r = _Reader(_read_bytes(path, "eos model"), path)
    version = r.scalar("I", "the class version")
    if version not in SUPPORTED_VERSIONS:
        raise r.fail(f"unsupported eos model class version {version} at byte 0 (this reader "
                     "handles 1 to 4; version 0 is eos's old cv::Mat format); is it an eos "
                     "MorphableModel file such as sfm_shape_3448.bin?")
    shape = r.pca_model("shape model")
    color = r.pca_model("colour model")
    expression: PcaModel | Blendshapes | None = None
    landmarks: dict[str, int] | None = None
    if version >= 2 and not r.flag("the expression-model presence flag"):
        index = r.scalar("i", "the expression-model type")
        if index == 0:
            expression = r.pca_model("expression model")
        elif index == 1:
            expression = r.blendshapes("expression blendshape")
        else:
            raise r.fail(f"malformed expression model at byte {r.pos - 4}: type {index} "
                         "(expected 0 = PCA model or 1 = blendshapes)")
    if version >= 3 and not r.flag("the landmark-definitions presence flag"):
        count = r.size("the landmark definitions")
        landmarks = {}
        for i in range(count):  # a few dozen named landmarks
            key = r.string(f"the name of landmark definition {i}")
            landmarks[key] = r.scalar("i", f"the vertex of landmark definition {key!r}")
    tex_count = r.size("the texture coordinates")
    texcoords = r.array("<f8", 2 * tex_count, "the texture coordinates",
                        f"{tex_count}x2 float64").reshape(-1, 2)
    texture_triangles = (r.int_triples("the texture triangles") if version >= 4
                         else np.empty((0, 3), np.int64))
    r.end(f"the texture {'triangles' if version >= 4 else 'coordinates'}")
    return EosModel(version, shape, color, expression, landmarks, texcoords, texture_triangles)


def read_blendshapes(path: str | os.PathLike) -> Blendshapes:
    """Parse an eos blendshapes file (uint64 count, then per blendshape a name and a 3N x 1
    float32 matrix).

    Raises:
        ModelFileError: missing, truncated or malformed.
    """
    path = Path(path)
    r = _Reader(_read_bytes(path, "blendshapes"), path)
    shapes = r.blendshapes("blendshape")
    r.end("the last blendshape")
    return shapes


def read_ibug_mapping(path: str | os.PathLike, n_vertices: int) -> np.ndarray:
    """``(68,)`` int64 vertex index per iBUG point from a TOML ``[landmark_mappings]`` table of
    1-based iBUG id → 0-based vertex index; -1 where the file gives no vertex.

    Raises:
        ModelFileError: missing, not TOML, no such table, ids outside 1–68 or vertices outside
            ``[0, n_vertices)``.
    """
    path = Path(path)
    text = _read_bytes(path, "landmark mapping").decode("utf-8", errors="replace")
    try:
        table = tomllib.loads(text).get("landmark_mappings")
    except tomllib.TOMLDecodeError as exc:
        raise ModelFileError(f"{path}: not valid TOML ({exc})") from exc
    if not isinstance(table, dict):
        raise ModelFileError(f"{path}: no [landmark_mappings] table of iBUG id → vertex index")
    return _landmarks_from_mapping(table, n_vertices, str(path))


def read_contours(path: str | os.PathLike, n_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """``(right, left)`` int64 candidate contour vertices from eos's ``model_contours`` json
    (``{"model_contour": {"right_contour": [...], "left_contour": [...]}}``, 0-based).

    Raises:
        ModelFileError: missing, not JSON, wrong layout or vertices out of range.
    """
    path = Path(path)
    try:
        doc = json.loads(_read_bytes(path, "contour"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path}: not valid JSON ({exc})") from exc
    contour = doc.get("model_contour") if isinstance(doc, dict) else None
    if not isinstance(contour, dict):
        raise ModelFileError(f"{path}: expected an object 'model_contour' with 'right_contour' "
                             "and 'left_contour' vertex lists")
    sides = []
    for key in ("right_contour", "left_contour"):
        values = contour.get(key)
        if not isinstance(values, list) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise ModelFileError(f"{path}: 'model_contour.{key}' must be a list of vertex indices")
        side = np.asarray(values, dtype=np.int64)
        if side.size and (side.min() < 0 or side.max() >= n_vertices):
            raise ModelFileError(f"{path}: '{key}' has vertices outside [0, {n_vertices})")
        sides.append(side)
    return sides[0], sides[1]


def read_symmetry(path: str | os.PathLike, mean: np.ndarray) -> np.ndarray | None:
    """``(N,)`` int64 mirror vertex of each vertex.

    The file lists, one per line (text after ``#`` ignored), the 1-based mirror of each of the
    first ``M <= N`` vertices. Vertices beyond ``M`` (the SFM's higher-resolution vertices, the
    file covering only its 845-vertex reference) are paired among themselves by a minimum-cost
    matching of the x-mirrored ``mean (N, 3)``, which gives a permutation; None (with a warning)
    when there are too many of them to match exactly.

    Raises:
        ModelFileError: missing, non-integer lines, or indices outside ``[1, M]``.
    """
    path = Path(path)
    lines = _read_bytes(path, "symmetry").decode("utf-8", errors="replace").splitlines()
    entries = [line.split("#", 1)[0].strip() for line in lines]
    entries = [e for e in entries if e]
    try:
        listed = np.array([int(e) for e in entries], dtype=np.int64) - 1
    except ValueError as exc:
        raise ModelFileError(f"{path}: every line must be one 1-based vertex index ({exc})") \
            from exc
    m, n = listed.size, mean.shape[0]
    if m > n:
        raise ModelFileError(f"{path}: lists {m} vertices but the model has {n}")
    if m and (listed.min() < 0 or listed.max() >= m):
        raise ModelFileError(f"{path}: indices must lie in [1, {m}] (1-based)")
    if m == n:
        return listed
    if n - m > MAX_MATCHED_SYMMETRY:
        warnings.warn(f"{path}: covers {m} of {n} vertices, too few to complete; the model "
                      "gets no symmetry", stacklevel=3)
        return None
    return np.concatenate([listed, mirror_matching(mean[m:].astype(np.float64)) + m])


def mirror_matching(points: np.ndarray, neighbours: int = 8) -> np.ndarray:
    """``(K, 3) -> (K,)`` int64: a permutation pairing each point with its mirror image across
    the ``x = 0`` plane, by a minimum-cost matching of the x-mirrored points to the points.

    The cost of pairing ``a`` with ``b`` is symmetrised (``|Ma - b| + |Mb - a|``, ``M`` the
    mirror), so the matching of ``a`` to ``b`` also pairs ``b`` with ``a``. Only each point's
    ``neighbours`` nearest candidates enter the (sparse) problem: on the SFM it gives the same
    permutation as the dense assignment in a tenth of the time, without importing
    ``scipy.optimize`` (which alone costs more than the matching); a cloud where the sparse
    problem has no perfect matching falls back to the dense one.
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import min_weight_full_bipartite_matching
    from scipy.spatial import cKDTree

    k = len(points)
    mirrored = points * np.array([-1.0, 1.0, 1.0])
    if k > neighbours:
        distance, candidate = cKDTree(points).query(mirrored, neighbours)
        rows = np.repeat(np.arange(k), neighbours)
        cols, distance = candidate.ravel(), distance.ravel()
        # |Mb - a| = |Ma - b|: an edge costs the same found from either end (twice the distance
        # for the symmetrised cost); an edge found from both ends is kept once. The offset keeps
        # exact mirror pairs (distance 0) in the sparse graph.
        edges = np.stack([np.concatenate([rows, cols]), np.concatenate([cols, rows])])
        edges, first = np.unique(edges, axis=1, return_index=True)
        graph = csr_matrix((np.concatenate([distance, distance])[first] * 2 + 1e-9,
                            (edges[0], edges[1])), shape=(k, k))
        try:
            return min_weight_full_bipartite_matching(graph)[1].astype(np.int64)
        except ValueError:  # no perfect matching among the nearest candidates
            pass
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    cost = cdist(mirrored, points)
    return linear_sum_assignment(cost + cost.T)[1].astype(np.int64)


def sfm_files(path: str | os.PathLike) -> dict[str, Path | None]:
    """The files of an eos-format model: ``shape`` (the given file, or the shape model in the
    given folder), and beside it ``blendshapes``, ``landmarks``, ``contours`` and ``symmetry``
    (None where absent).

    Companion names for a shape file ``<family>_shape_<res>.bin``:
    ``expression_blendshapes_<res>.bin``, ``ibug_to_<family>.txt``,
    ``<family>_model_contours.json`` (or ``model_contours.json``),
    ``<family>_reference_symmetry.txt`` (or ``reference_symmetry.txt``); for other names,
    ``ibug_to_<stem>.txt`` or a folder's only ``ibug_to_*.txt``.

    Raises:
        ModelFileError: the path does not exist, or a folder holds no (or several) shape models.
    """
    path = Path(path)
    if path.is_dir():
        shape = find_shape_file(path)
        if shape is None:
            raise ModelFileError(f"{path}: no eos shape model (*_shape_*.bin) in this folder")
    elif path.is_file():
        shape = path
    else:
        raise ModelFileError(f"{path}: eos model file not found")
    folder = shape.parent
    match = re.fullmatch(r"(.+?)_shape(?:_(\d+))?", shape.stem)
    family, res = (match.group(1), match.group(2)) if match else (shape.stem, None)

    def first(*names: str) -> Path | None:
        return next((folder / n for n in names if n and (folder / n).is_file()), None)

    def only(pattern: str) -> Path | None:
        found = sorted(folder.glob(pattern))
        return found[0] if len(found) == 1 else None

    return {
        "shape": shape,
        "blendshapes": first(f"expression_blendshapes_{res}.bin" if res else "",
                             "expression_blendshapes.bin"),
        "landmarks": first(f"ibug_to_{family}.txt", f"ibug_to_{shape.stem}.txt")
        or only("ibug_to_*.txt"),
        "contours": first(f"{family}_model_contours.json", "model_contours.json")
        or only("*model_contours*.json"),
        "symmetry": first(f"{family}_reference_symmetry.txt", "reference_symmetry.txt"),
    }


def find_shape_file(folder: Path) -> Path | None:
    """The eos shape model in ``folder``: ``sfm_shape_3448.bin`` if present, else the only
    ``*_shape_*.bin``; None if there is none.

    Raises:
        ModelFileError: several candidates and none is the default.
    """
    if (folder / DEFAULT_SHAPE_FILE).is_file():
        return folder / DEFAULT_SHAPE_FILE
    found = sorted(p for p in folder.glob("*_shape*.bin") if p.is_file())
    if len(found) > 1:
        raise ModelFileError(f"{folder}: several eos shape models "
                             f"({', '.join(p.name for p in found)}); name the file")
    return found[0] if found else None


def model_name(shape_file: Path) -> str:
    """The short name a model file gets: ``sfm`` for the SFM at its public resolution, else the
    file's stem."""
    return "sfm" if shape_file.name == DEFAULT_SHAPE_FILE else shape_file.stem


def read_sfm(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read an eos-format model and its companions into the layout of
    :mod:`faceanime.morphable.storage` (float32 geometry in mm, float64 texture coordinates).

    Args:
        path: the shape model (``sfm_shape_3448.bin``) or its folder.

    Raises:
        ModelFileError: any file missing (except blendshapes and symmetry), truncated or malformed.
    """
    files = sfm_files(path)
    shape_file = files["shape"]
    model = read_eos_model(shape_file)
    pca = model.shape
    n = pca.mean.size // 3
    if n == 0:
        raise ModelFileError(f"{shape_file}: the shape model has no vertices")
    tri = pca.triangles
    if tri.size and (tri.min() < 0 or tri.max() >= n):
        raise ModelFileError(f"{shape_file}: triangle indices outside [0, {n})")

    arrays: dict[str, np.ndarray] = {
        "name": np.array(model_name(shape_file)),
        "mean": pca.mean.reshape(n, 3),
        "shape_basis": _components(pca.rescaled_basis(), n),
        "shape_eigenvalues": pca.eigenvalues,
        "triangles": tri,
    }
    arrays.update(_expression_arrays(model, files["blendshapes"], n, shape_file))
    if "mean_offset" in arrays:
        arrays["mean"] = arrays["mean"] + arrays.pop("mean_offset")
    if model.texcoords.shape[0] == n and not model.texture_triangles.size:
        arrays["texcoords"] = model.texcoords
    elif model.texcoords.size:
        warnings.warn(f"{shape_file}: texture coordinates are not one per vertex (separate "
                      "texture triangles); the model is loaded without them", stacklevel=2)

    if files["landmarks"] is not None:
        arrays["landmark_indices"] = read_ibug_mapping(files["landmarks"], n)
    elif model.landmark_definitions and all(k.isdigit() for k in model.landmark_definitions):
        arrays["landmark_indices"] = _landmarks_from_mapping(model.landmark_definitions, n,
                                                             str(shape_file))
    else:
        raise ModelFileError(f"{shape_file}: no iBUG landmark mapping beside it (expected "
                             f"ibug_to_sfm.txt in {shape_file.parent}; get it from the eos "
                             "project's share/ folder)")
    if files["contours"] is None:
        raise ModelFileError(f"{shape_file}: no contour file beside it (expected "
                             f"sfm_model_contours.json in {shape_file.parent}; get it from the "
                             "eos project's share/ folder)")
    arrays["contour_right"], arrays["contour_left"] = read_contours(files["contours"], n)
    if files["symmetry"] is not None:
        symmetry = read_symmetry(files["symmetry"], arrays["mean"])
        if symmetry is not None:
            arrays["symmetry"] = symmetry
    else:
        warnings.warn(f"{shape_file}: no sfm_reference_symmetry.txt beside it; the model has "
                      "no vertex symmetry", stacklevel=2)
    return arrays


def load_sfm(path: str | os.PathLike, device: torch.device | str | None = None,
             dtype: torch.dtype = torch.float32) -> FaceModel:
    """Load an eos-format model (the SFM) as a :class:`FaceModel`; see :func:`read_sfm`."""
    return model_from_arrays(read_sfm(path), path, device=device, dtype=dtype)


def _expression_arrays(model: EosModel, blendshapes_file: Path | None, n: int,
                       shape_file: Path) -> dict[str, np.ndarray]:
    """Expression fields: the model's own expression model, else the blendshapes file, else none
    (with a warning)."""
    expr = model.expression
    if isinstance(expr, PcaModel):
        if expr.mean.size != 3 * n:
            raise ModelFileError(f"{shape_file}: the expression model has {expr.mean.size // 3} "
                                 f"vertices, the shape model {n}")
        # eos adds the expression model's mean to every sample: fold it into our mean.
        k = expr.eigenvalues.size
        return {"mean_offset": expr.mean.reshape(n, 3),
                "expression_basis": _components(expr.rescaled_basis(), n),
                "expression_eigenvalues": expr.eigenvalues,
                "expression_names": np.array([f"exp_{i}" for i in range(k)], dtype=str)}
    source = shape_file
    if expr is None and blendshapes_file is not None:
        expr, source = read_blendshapes(blendshapes_file), blendshapes_file
    if expr is None:
        warnings.warn(f"{shape_file}: no expression_blendshapes file beside it; the model has no "
                      "expression components", stacklevel=3)
        return {"expression_basis": np.zeros((0, n, 3), np.float32),
                "expression_names": np.array([], dtype=str)}
    if expr.deltas.shape[0] and expr.deltas.shape[1] != 3 * n:
        raise ModelFileError(f"{source}: blendshapes have {expr.deltas.shape[1] // 3} vertices, "
                             f"the shape model {n}")
    return {"expression_basis": expr.deltas.reshape(-1, n, 3),
            "expression_names": np.array(expr.names, dtype=str).reshape(-1)}


def _components(basis: np.ndarray, n: int) -> np.ndarray:
    """``(3N, K)`` xyz-interleaved columns → ``(K, N, 3)``."""
    return np.ascontiguousarray(basis.T.reshape(-1, n, 3))


def _landmarks_from_mapping(table: dict, n_vertices: int, source: str) -> np.ndarray:
    out = np.full(N_LANDMARKS, -1, dtype=np.int64)
    for key, value in table.items():
        try:
            ibug = int(key)
        except ValueError as exc:
            raise ModelFileError(f"{source}: landmark id {key!r} is not an iBUG number") from exc
        if not 1 <= ibug <= N_LANDMARKS:
            raise ModelFileError(f"{source}: iBUG id {ibug} outside 1–{N_LANDMARKS}")
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < n_vertices:
            raise ModelFileError(f"{source}: iBUG point {ibug} maps to {value!r}, not a vertex "
                                 f"index in [0, {n_vertices})")
        out[ibug - 1] = value
    return out


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise ModelFileError(f"{path}: {what} file not found") from exc
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read the {what} file ({exc.strerror})") from exc
