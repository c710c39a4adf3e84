"""``faceanime model``: inspect a morphable model, export its mesh, convert it to ``.npz``,
download the Surrey Face Model."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from faceanime.coefficients import Coefficients
from faceanime.errors import InputError
from faceanime.io.atomic import atomic_path
from faceanime.morphable.download import SFM_REF, SFM_REPOSITORY, download_sfm
from faceanime.morphable.model import N_LANDMARKS, FaceModel
from faceanime.morphable.registry import (
    ENV_MODEL_DIR,
    KNOWN_MODELS,
    bundled_dir,
    cache_dir,
    load_model,
    resolve_model,
    search_folders,
)
from faceanime.morphable.storage import save_model
from faceanime.reconstruction import face_vertices

MESH_SUFFIXES = (".obj", ".ply")
COEFF_LAYOUT = ("shape (Ks,), expression (T, Ke), jaw (T,), rotation (T, 3, 3), "
                "translation (T, 3), scale (T,), model (name)")
MODEL_HELP = (f"a model name ({', '.join(s.name for s in KNOWN_MODELS)}, or NAME for a saved "
              "NAME.npz; looked up in $FACEANIME_MODEL_DIR, ./bfm, then the download cache) or a "
              "path to an eos .bin, a BFM .mat, a .npz, or a folder holding one")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``model`` command and its ``info``, ``export``, ``convert`` and ``download``
    subcommands."""
    parser = subparsers.add_parser(
        "model", help="inspect, export, convert or download a 3D morphable face model",
        description="Inspect a 3D morphable face model (SFM, BFM 2009, Deep3DFaceRecon's BFM, or a "
                    "saved .npz), export its mesh for given coefficients, convert it to .npz, or "
                    "download the Surrey Face Model. Formats and where to get each model: "
                    "docs/models.md.")
    sub = parser.add_subparsers(dest="model_command", metavar="SUBCOMMAND", required=True)

    info = sub.add_parser(
        "info", help="print a model's sizes, landmarks, bounding box and files",
        description="Print the number of vertices, triangles and shape/expression components, the "
                    "expression names, how many of the 68 iBUG landmarks map to a vertex, the jaw "
                    "contour candidates, the bounding box of the mean shape in mm and the files "
                    "the model was read from.")
    info.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    info.set_defaults(func=run_info)

    export = sub.add_parser(
        "export", help="write a model's mesh (.obj or .ply) at given coefficients",
        description="Write the mesh of a model: the mean face, or the face of one frame of a "
                    "coefficient file written by 'faceanime fit' (identity, expression and jaw), "
                    "in model space (mm) or, with --posed, after the frame's pose. Vertices keep "
                    "the model's order.")
    export.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    export.add_argument("output", metavar="OUT", type=Path,
                        help="mesh file to write, .obj or .ply (written atomically)")
    export.add_argument("--coeffs", metavar="C.npz", type=Path,
                        help=f"coefficient file of 'faceanime fit' (keys {COEFF_LAYOUT}); "
                             "without it the mean face is written")
    export.add_argument("--frame", type=int, metavar="I",
                        help="frame of the coefficient file to export (default 0)")
    export.add_argument("--posed", action="store_true",
                        help="apply the frame's scale, rotation and translation (camera space) "
                             "instead of writing model space")
    export.set_defaults(func=run_export)

    convert = sub.add_parser(
        "convert", help="save a model as faceanime .npz (fast to load)",
        description="Load a model from any supported format and save it in faceanime's own .npz "
                    "format, which loads in milliseconds and carries every field.")
    convert.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    convert.add_argument("output", metavar="OUT.npz", type=Path, help="model file to write")
    convert.set_defaults(func=run_convert)

    download = sub.add_parser(
        "download", help="download the Surrey Face Model (sfm) files, SHA-256 verified",
        description=f"Download the Surrey Face Model files and the eos licence from the eos "
                    f"repository ({SFM_REPOSITORY}, release {SFM_REF}) into the per-user cache "
                    f"({cache_dir()}/sfm, set by $FACEANIME_CACHE), where '--model sfm' finds "
                    "them. Each file is checked against its pinned SHA-256 before it is saved; "
                    "files already present and intact are not downloaded again. Only 'sfm' can "
                    "be downloaded: the Basel Face Model's licence requires each user to get it "
                    "by hand (bfm/README.md).")
    download.add_argument("model", metavar="MODEL", help="the model to download: sfm")
    where = download.add_mutually_exclusive_group()
    where.add_argument("--to", metavar="DIR", type=Path,
                       help="folder to put the files in (default: the cache folder above)")
    where.add_argument("--bundle", action="store_true",
                       help="put them inside the installed package (faceanime/data/sfm), "
                            "where every user of this install finds them; what "
                            "tools/install.sh does, and what a release wheel ships")
    download.add_argument("--from", dest="source", metavar="DIR", type=Path,
                          help="copy the files from this local folder instead of the network "
                               "(an eos share/ folder or another cache), verified the same way")
    download.add_argument("--no-progress", dest="progress", action="store_false",
                          help="do not show progress bars")
    download.set_defaults(func=run_download)


def run_info(args: argparse.Namespace) -> None:
    source = resolve_model(args.model)
    model = load_model(source.path)
    for label, value in describe(model, source.kind, source.files):
        print(f"{label:<12} {value}")


def describe(model: FaceModel, kind: str, files: dict[str, Path | None]) -> list[tuple[str, str]]:
    """The ``(label, text)`` rows ``faceanime model info`` prints."""
    mapped = model.landmark_mask()
    unmapped = [i + 1 for i in range(N_LANDMARKS) if not mapped[i]]
    lo = model.mean.min(dim=0).values.tolist()
    hi = model.mean.max(dim=0).values.tolist()
    box = ", ".join(f"{axis} [{a:.1f}, {b:.1f}]" for axis, a, b in zip("xyz", lo, hi, strict=True))
    size = " x ".join(f"{b - a:.1f}" for a, b in zip(lo, hi, strict=True))
    if model.n_expression == 0:
        expression = "none"
    elif model.expression_eigenvalues is None:
        expression = f"{model.n_expression} blendshapes: {', '.join(model.expression_names)}"
    else:
        expression = (f"{model.n_expression} PCA components per standard deviation "
                      f"({_names(model.expression_names)})")
    std = model.shape_eigenvalues.sqrt()
    shape = f"{model.n_shape} PCA components per standard deviation"
    if model.n_shape:
        shape += f" (std {std.max():.1f} to {std.min():.2f} mm)"
    rows = [
        ("model", f"{model.name} ({kind})"),
        ("vertices", str(model.n_vertices)),
        ("triangles", str(model.n_triangles)),
        ("shape", shape),
        ("expression", expression),
        ("landmarks", f"{int(mapped.sum())} of {N_LANDMARKS} iBUG points mapped"
                      + (f"; no vertex for {_ranges(unmapped)}" if unmapped else "")),
        ("contours", f"{model.contour_right.numel()} right, {model.contour_left.numel()} left "
                     "candidate vertices"),
        ("texcoords", "yes" if model.texcoords is not None else "no"),
        ("symmetry", "yes" if model.symmetry is not None else "no"),
        ("bbox (mm)", f"{box}; size {size}"),
    ]
    present = [(role, p) for role, p in files.items() if p is not None]
    for i, (role, p) in enumerate(present):
        rows.append(("files" if i == 0 else "", f"{role}: {p}"))
    return rows


def run_export(args: argparse.Namespace) -> None:
    suffix = args.output.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise InputError(f"{args.output}: the mesh must be .obj or .ply")
    if args.coeffs is None and (args.frame is not None or args.posed):
        raise InputError("--frame and --posed need a coefficient file (--coeffs C.npz)")
    model = load_model(args.model)
    frame = 0 if args.frame is None else args.frame
    if args.coeffs is None:
        vertices = model.vertices()[0]
    else:
        coeffs = Coefficients.load(args.coeffs)
        vertices = coefficient_vertices(model, coeffs, args.coeffs, frame, args.posed)
    write_mesh(args.output, vertices.detach().cpu().numpy(), model.triangles.cpu().numpy())
    what = "mean face" if args.coeffs is None else f"frame {frame}" + (", posed" * args.posed)
    print(f"wrote {args.output}: {model.n_vertices} vertices, {model.n_triangles} triangles "
          f"({what})")


def run_convert(args: argparse.Namespace) -> None:
    model = load_model(args.model)
    save_model(model, args.output)
    print(f"wrote {args.output}: model '{model.name}', {model.n_vertices} vertices")


def run_download(args: argparse.Namespace) -> None:
    key = args.model.strip().lower().replace("_", "-")
    spec = next((s for s in KNOWN_MODELS if s.name == key), None)
    if spec is None:
        names = ", ".join(s.name for s in KNOWN_MODELS if s.downloadable)
        raise InputError(f"unknown model '{args.model}': only {names} can be downloaded")
    if not spec.downloadable:
        raise InputError(f"model '{spec.name}' cannot be downloaded: the Basel Face Model's "
                         "licence requires each user to register and download it by hand; "
                         "see bfm/README.md in the faceanime repository")
    target = bundled_dir() / "sfm" if args.bundle else args.to
    folder = download_sfm(target, progress=args.progress, source_dir=args.source)
    print(f"{folder}: Surrey Face Model files of {SFM_REPOSITORY} {SFM_REF}, SHA-256 verified")
    if not _is_searched(folder):
        print(f"'--model sfm' does not look there: set {ENV_MODEL_DIR}={folder}, or pass "
              f"--model {folder}")


def _is_searched(folder: Path) -> bool:
    """Whether ``load_model("sfm")`` looks in ``folder`` (a search folder or its ``sfm/``)."""
    target = folder.resolve()
    return any(target in (f.resolve(), (f / "sfm").resolve()) for f in search_folders())


def coefficient_vertices(model: FaceModel, coeffs: Coefficients, path: Path, frame: int,
                         posed: bool) -> torch.Tensor:
    """``(N, 3)`` vertices of ``frame`` of a coefficient file (jaw opened), in model space or,
    with ``posed``, after the frame's pose: ``scale * R @ v + t`` for the orthographic camera
    (pixel units, y up), ``R @ v + t`` for the perspective one (camera space, model units; its
    ``scale`` is the focal length).

    Raises:
        InputError: more components than the model has, NaNs, a model name that is not
            ``model.name``, or a frame out of range.
    """
    if coeffs.model not in ("unknown", model.name):
        raise InputError(f"{path}: coefficients of model '{coeffs.model}', not of "
                         f"'{model.name}'; pass that model")
    ks, ke = coeffs.shape.shape[0], coeffs.expression.shape[1]
    if ks > model.n_shape or ke > model.n_expression:
        raise InputError(f"{path}: {ks} shape and {ke} expression coefficients, but model "
                         f"'{model.name}' has {model.n_shape} and {model.n_expression}")
    t = coeffs.n_frames
    if not 0 <= frame < t:
        raise InputError(f"{path}: frame {frame} out of range; the file has {t} frames "
                         f"(0 to {t - 1})")
    one = coeffs.frames([frame])
    used = [("shape", one.shape), ("expression", one.expression), ("jaw", one.jaw)]
    if posed:
        used += [("rotation", one.rotation), ("translation", one.translation),
                 ("scale", one.scale)]
    bad = [name for name, value in used if not bool(torch.isfinite(value).all())]
    if bad:
        raise InputError(f"{path}: frame {frame} has NaN or infinite {', '.join(bad)}")
    vertices = face_vertices(model, one)[0]
    if posed:
        c = one.to(model.device, model.dtype)
        vertices = vertices @ c.rotation[0].T
        if c.camera != "perspective":
            vertices = c.scale[0] * vertices
        vertices = vertices + c.translation[0]
    return vertices


def write_mesh(path: Path, vertices: np.ndarray, triangles: np.ndarray) -> None:
    """Write ``vertices (N, 3)`` and ``triangles (F, 3)`` as a mesh file (format from the suffix),
    atomically.

    Raises:
        MediaError: the output folder does not exist or is not writable.
    """
    import trimesh

    # process=False: keep every vertex in model order, so indices stay those of the model.
    mesh = trimesh.Trimesh(vertices=vertices, faces=triangles, process=False)
    with atomic_path(path) as tmp:
        mesh.export(tmp, file_type=path.suffix.lower().lstrip("."))


def _names(names: list[str]) -> str:
    return ", ".join(names) if len(names) <= 4 else f"{names[0]} ... {names[-1]}"


def _ranges(values: list[int]) -> str:
    """``[1, 2, 3, 5]`` → ``"1-3, 5"``."""
    parts: list[str] = []
    start = prev = values[0]
    for v in [*values[1:], None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if v is not None:
            start = prev = v
    return ", ".join(parts)
