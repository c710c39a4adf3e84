"""Find and load a morphable model by name or path: ``load_model("sfm")``,
``load_model("bfm/01_MorphableModel.mat")``, ``load_model("my_model.npz")``.

A name is looked up in these folders, in order (:func:`search_folders`):

1. each folder of ``$FACEANIME_MODEL_DIR`` (several separated by ``os.pathsep``);
2. ``bfm/`` in the current directory;
3. ``bfm/`` in the source checkout this package runs from (if any);
4. the per-user download cache, ``$FACEANIME_CACHE`` or else ``~/.cache/faceanime``
   (:func:`cache_dir`), where ``faceanime model download sfm`` puts the SFM (in ``sfm/``);
5. the package's own ``faceanime/data/`` folder (:func:`bundled_dir`), where ``tools/install.sh``
   (``faceanime model download sfm --bundle``) puts the Surrey Face Model (Apache-2.0; never
   committed), so ``load_model("sfm")`` works after the install with nothing to set.

In each folder the model's file is looked for directly and in the subfolder named after its family
(``sfm/`` or ``bfm/``), so ``FACEANIME_MODEL_DIR`` may point at the eos ``share/`` folder itself or
at a folder holding ``sfm/`` and ``bfm/``. Any other name ``X`` is looked for as ``X.npz`` (a model
saved with :func:`~faceanime.morphable.storage.save_model`).

Parsed files are cached in memory, keyed by path, size and modification time of every file read,
so a changed file is read again; each call still returns new tensors.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from faceanime.errors import InputError, ModelFileError
from faceanime.morphable import bfm, eos, storage
from faceanime.morphable.model import FaceModel

ENV_MODEL_DIR = "FACEANIME_MODEL_DIR"
ENV_CACHE = "FACEANIME_CACHE"
MODEL_SUFFIXES = (".bin", ".mat", ".npz")


@dataclass(frozen=True)
class ModelSpec:
    """A model known by name: its loader ``kind``, main ``filename`` and family ``subfolder``;
    ``downloadable`` when ``faceanime model download NAME`` can fetch it (its licence allows
    redistribution)."""

    name: str
    kind: str
    filename: str
    subfolder: str
    description: str
    downloadable: bool = False


KNOWN_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("sfm", "eos", eos.DEFAULT_SHAPE_FILE, "sfm",
              "Surrey Face Model: 3448 vertices, 63 shape components, 6 expression blendshapes",
              downloadable=True),
    ModelSpec("bfm", "bfm2009", bfm.BFM2009_FILE, "bfm",
              "Basel Face Model 2009 with Guo et al.'s 79-component expression basis"),
    ModelSpec("bfm-front", "bfm-front", bfm.BFM_FRONT_FILE, "bfm",
              "Deep3DFaceRecon's cropped BFM 2009: 35709 vertices, 80 shape, 64 expression"),
)


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: its loader ``kind`` (``eos``, ``bfm2009``, ``bfm-front`` or
    ``npz``), main file ``path`` and every file the loader reads (``files``; None where an
    optional companion is absent)."""

    kind: str
    path: Path
    files: dict[str, Path | None]


def cache_dir() -> Path:
    """The per-user cache folder of downloaded models: ``$FACEANIME_CACHE`` if set, else
    ``~/.cache/faceanime`` (it may not exist yet)."""
    env = os.environ.get(ENV_CACHE, "")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "faceanime"


def bundled_dir() -> Path:
    """The package's own model folder, ``faceanime/data`` (the installed SFM is in ``sfm/``)."""
    return Path(__file__).resolve().parents[1] / "data"


def search_folders() -> list[Path]:
    """The folders a model name is looked up in, in order (see the module docstring)."""
    env = os.environ.get(ENV_MODEL_DIR, "")
    folders = [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    package = Path(__file__).resolve().parents[1]
    # Whatever the user put somewhere (a named folder, a checkout's bfm/, a download, perhaps a
    # newer model) wins over the copy installed into the package, which comes last.
    folders += [Path.cwd() / "bfm", package.parent / "bfm", cache_dir(), bundled_dir()]
    unique: list[Path] = []
    for folder in folders:
        if folder.resolve() not in [u.resolve() for u in unique]:
            unique.append(folder)
    return unique


def resolve_model(name_or_path: str | os.PathLike) -> ModelSource:
    """Find the files of a model given by name or by path (file or folder).

    Raises:
        InputError: an unknown name (the message lists the known names and folders searched),
            or a folder holding several models.
        ModelFileError: a path that does not exist or is not a model, or a known model whose file
            is in none of the folders.
    """
    text = str(name_or_path)
    path = Path(text).expanduser()
    looks_like_path = os.sep in text or "/" in text or path.suffix.lower() in MODEL_SUFFIXES
    key = text.strip().lower().replace("_", "-")
    spec = None if looks_like_path else next((s for s in KNOWN_MODELS if s.name == key), None)
    # A known name wins over a folder of the same name in the working directory (``bfm/``):
    # write ``./bfm`` to mean the folder.
    if spec is None and path.exists():
        return _source_for_path(path)
    if looks_like_path:
        raise ModelFileError(f"{path}: model file not found")
    folders = search_folders()
    if spec is not None:
        for folder in folders:
            for candidate in (folder / spec.filename, folder / spec.subfolder / spec.filename):
                if candidate.is_file():
                    return _source_for_file(candidate, spec.kind)
        hint = f" (for the folder {text}/ here, write ./{text})" if path.exists() else ""
        fetch = f"run 'faceanime model download {spec.name}', or " if spec.downloadable else ""
        raise ModelFileError(
            f"model '{spec.name}' not found: no {spec.filename} in {_listing(folders)}; {fetch}"
            f"set {ENV_MODEL_DIR} to the folder holding it (see docs/models.md){hint}")
    for folder in folders:
        if (folder / f"{text}.npz").is_file():
            return _source_for_file(folder / f"{text}.npz", "npz")
    known = ", ".join(s.name for s in KNOWN_MODELS)
    raise InputError(f"unknown model '{text}': known names are {known} (or NAME for NAME.npz, or "
                     f"a path); searched {_listing(folders)}")


def load_model(name_or_path: str | os.PathLike, device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32) -> FaceModel:
    """Load a morphable model by name (``sfm``, ``bfm``, ``bfm-front``, or a saved ``X.npz``) or
    by path (an eos ``.bin``, a BFM ``.mat``, a ``.npz``, or a folder holding one of them).

    Args:
        name_or_path: see above; the search order is in the module docstring.
        device: device of the model's tensors (CPU when None).
        dtype: floating dtype of the model's tensors.

    Returns:
        The model, in mm, with the conventions of :mod:`faceanime.morphable.model`.

    Raises:
        InputError: unknown name.
        ModelFileError: missing, truncated or malformed files.
    """
    source = resolve_model(name_or_path)
    stamp = tuple(sorted((role, _stamp(p)) for role, p in source.files.items()))
    arrays = _read_cached(source.kind, str(source.path), stamp)
    return storage.model_from_arrays(arrays, source.path, device=device, dtype=dtype)


def clear_cache() -> None:
    """Forget every parsed model file."""
    _read_cached.cache_clear()


@functools.lru_cache(maxsize=4)
def _read_cached(kind: str, path: str, stamp: tuple) -> dict[str, np.ndarray]:
    """The parsed arrays of a model file; ``stamp`` only keys the cache."""
    readers = {"eos": eos.read_sfm, "bfm2009": bfm.read_bfm2009, "bfm-front": bfm.read_bfm_front,
               "npz": storage.read_model_npz}
    arrays = readers[kind](path)
    for value in arrays.values():
        value.flags.writeable = False  # shared by every later call: never to be modified
    return arrays


def _stamp(path: Path | None) -> tuple[str, int, int]:
    if path is None:
        return ("", 0, 0)
    try:
        st = path.stat()
    except OSError:
        return (str(path), 0, 0)
    return (str(path.resolve()), st.st_mtime_ns, st.st_size)


def _source_for_path(path: Path) -> ModelSource:
    if path.is_file():
        return _source_for_file(path, _kind_of_file(path))
    candidates: list[tuple[str, Path]] = []
    shape = eos.find_shape_file(path)
    if shape is not None:
        candidates.append(("eos", shape))
    for kind, name in (("bfm2009", bfm.BFM2009_FILE), ("bfm-front", bfm.BFM_FRONT_FILE)):
        if (path / name).is_file():
            candidates.append((kind, path / name))
    candidates += [("npz", p) for p in sorted(path.glob("*.npz")) if p.is_file()]
    if not candidates:
        raise ModelFileError(f"{path}: no model in this folder (expected an eos "
                             f"*_shape_*.bin, {bfm.BFM2009_FILE}, {bfm.BFM_FRONT_FILE} or a .npz)")
    if len(candidates) > 1:
        names = ", ".join(p.name for _, p in candidates)
        raise InputError(f"{path}: several models in this folder ({names}); name the file")
    kind, file = candidates[0]
    return _source_for_file(file, kind)


def _source_for_file(path: Path, kind: str) -> ModelSource:
    if kind == "eos":
        return ModelSource(kind, path, eos.sfm_files(path))
    if kind == "bfm2009":
        return ModelSource(kind, path, bfm.bfm2009_files(path))
    return ModelSource(kind, path, {"model": path})


def _kind_of_file(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return "npz"
    if suffix == ".bin":
        if path.name.startswith("expression_blendshapes"):
            raise ModelFileError(f"{path}: a blendshapes file, not a model; pass the shape "
                                 f"model ({eos.DEFAULT_SHAPE_FILE}) or its folder")
        if path.name == bfm.EXP_PCA_FILE:
            raise ModelFileError(f"{path}: an expression basis, not a model; pass "
                                 f"{bfm.BFM2009_FILE} or its folder")
        return "eos"
    if suffix == ".mat":
        return _kind_of_mat(path)
    raise ModelFileError(f"{path}: unknown model file type '{path.suffix}' (expected an eos .bin, "
                         "a BFM .mat or a faceanime .npz)")


def _kind_of_mat(path: Path) -> str:
    import scipy.io

    try:
        variables = {name for name, _, _ in scipy.io.whosmat(path)}
    except NotImplementedError:  # v7.3: the loader gives the h5py advice; guess by name
        return "bfm-front" if path.name == bfm.BFM_FRONT_FILE else "bfm2009"
    except Exception as exc:
        # scipy raises whatever its parser hits on a damaged file (IndexError, OSError, ...).
        raise ModelFileError(f"{path}: not a readable MATLAB .mat file "
                             f"({type(exc).__name__}: {exc})") from exc
    if "shapeMU" in variables:
        return "bfm2009"
    if {"meanshape", "idBase"} <= variables:
        return "bfm-front"
    raise ModelFileError(f"{path}: not a morphable model (expected the variables of "
                         f"{bfm.BFM2009_FILE} (shapeMU, shapePC, shapeEV, tl) or of "
                         f"{bfm.BFM_FRONT_FILE} (meanshape, idBase, exBase, tri, keypoints))")


def _listing(folders: list[Path]) -> str:
    return ", ".join(str(f) for f in folders) if folders else "(no folders)"
