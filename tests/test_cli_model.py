"""``faceanime model info|export|convert``: output, meshes that match the model, one-line errors."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import trimesh
from helpers import assert_close, assert_one_line_error, rewrite_npz, run_cli
from test_morphable_storage import assert_same_model, tiny_model

from faceanime.cli import main
from faceanime.coefficients import Coefficients
from faceanime.morphable import load_model_npz, save_model
from faceanime.morphable.eos import load_sfm
from faceanime.reconstruction import face_vertices


def run(capsys, *argv: str) -> tuple[int, str, str]:
    return run_cli(capsys, *argv)


def read_mesh(path) -> trimesh.Trimesh:
    return trimesh.load(path, process=False, force="mesh")


@pytest.fixture
def tiny(tmp_path):
    return save_model(tiny_model(), tmp_path / "tiny.npz")


def write_coeffs(path, face_model, frames: int = 3, seed: int = 0, jaw: float = 0.0,
                 camera: str = "orthographic", **changes):
    """A coefficient file as 'faceanime fit' writes it, for ``face_model``; ``changes`` replace
    (None: drop) keys of the raw arrays."""
    rng = np.random.default_rng(seed)
    angles = rng.uniform(-0.3, 0.3, size=(frames, 3))
    coeffs = Coefficients(
        model=face_model.name,
        shape=torch.tensor(rng.normal(size=face_model.n_shape), dtype=torch.float32),
        expression=torch.tensor(rng.uniform(0, 1, size=(frames, face_model.n_expression)),
                                dtype=torch.float32),
        jaw=torch.full((frames,), jaw),
        rotation=torch.tensor(np.stack([_rotation(a) for a in angles]), dtype=torch.float32),
        translation=torch.tensor(rng.normal(size=(frames, 3)) * 10, dtype=torch.float32),
        scale=torch.tensor(rng.uniform(0.5, 2, size=frames), dtype=torch.float32),
        camera=camera)
    coeffs.save(path)
    if changes:
        rewrite_npz(path, **changes)
    return path, coeffs


def _rotation(a: np.ndarray) -> np.ndarray:
    cx, cy, cz = np.cos(a)
    sx, sy, sz = np.sin(a)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


# --- info ----------------------------------------------------------------------------------------
def test_info_sfm(capsys, data_dir):
    status, out, err = run(capsys, "model", "info", str(data_dir / "sfm"))
    assert status == 0 and err == ""
    for fragment in ("sfm (eos)", "vertices     3448", "triangles    6736", "63 PCA components",
                     "6 blendshapes: anger, disgust, fear, happiness, sadness, surprise",
                     "50 of 68 iBUG points mapped; no vertex for 1-8, 10-17, 61, 65",
                     "17 right, 17 left", "x [-74.5, 74.1]", "ibug_to_sfm.txt",
                     "sfm_model_contours.json", "expression_blendshapes_3448.bin"):
        assert fragment in out, fragment


def test_info_npz(capsys, tiny):
    status, out, _ = run(capsys, "model", "info", str(tiny))
    assert status == 0
    assert "tiny (npz)" in out and "vertices     4" in out
    assert "2 PCA components per standard deviation (jaw_open, smile)" in out
    assert "2 of 68 iBUG points mapped" in out and f"model: {tiny}" in out


def test_info_unknown_model(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("FACEANIME_MODEL_DIR", str(tmp_path))
    status, _, err = run(capsys, "model", "info", "nosuchmodel")
    assert_one_line_error(status, err, "unknown model 'nosuchmodel'", "sfm, bfm, bfm-front",
                          str(tmp_path))


def test_info_truncated_model(capsys, data_dir, tmp_path):
    for name in ("sfm_shape_3448.bin", "ibug_to_sfm.txt", "sfm_model_contours.json"):
        shutil.copy(data_dir / "sfm" / name, tmp_path / name)
    path = tmp_path / "sfm_shape_3448.bin"
    path.write_bytes(path.read_bytes()[:5000])
    status, _, err = run(capsys, "model", "info", str(path))
    assert_one_line_error(status, err, "sfm_shape_3448.bin: truncated at byte 12 while reading "
                                       "the shape model mean (expected 10344x1 float32")


def test_info_missing_companion(capsys, data_dir, tmp_path):
    shutil.copy(data_dir / "sfm" / "sfm_shape_3448.bin", tmp_path)
    status, _, err = run(capsys, "model", "info", str(tmp_path))
    # The CLI prints library warnings as one line each, before the error line.
    warning, error = err.splitlines(keepends=True)
    assert warning.startswith("faceanime: warning: ") and "no expression_blendshapes" in warning
    assert_one_line_error(status, error, "ibug_to_sfm.txt")


# --- export --------------------------------------------------------------------------------------
def test_export_mean_sfm(capsys, data_dir, tmp_path):
    out_path = tmp_path / "mean.obj"
    status, out, _ = run(capsys, "model", "export", str(data_dir / "sfm"), str(out_path))
    assert status == 0 and "3448 vertices, 6736 triangles (mean face)" in out
    mesh = read_mesh(out_path)
    model = load_sfm(data_dir / "sfm")
    assert mesh.vertices.shape == (3448, 3) and mesh.faces.shape == (6736, 3)
    assert_close(mesh.vertices, model.mean.double(), atol=1e-5)
    assert np.array_equal(mesh.faces, model.triangles.numpy())
    assert [p.name for p in tmp_path.iterdir()] == ["mean.obj"]  # no temporary left behind


def test_export_frame_of_coefficients(capsys, data_dir, tmp_path):
    model = load_sfm(data_dir / "sfm")
    coeffs_path, coeffs = write_coeffs(tmp_path / "c.npz", model)
    out_path = tmp_path / "f2.obj"
    status, _, _ = run(capsys, "model", "export", str(data_dir / "sfm"), str(out_path),
                       "--coeffs", str(coeffs_path), "--frame", "2")
    assert status == 0
    expected = model.vertices(coeffs.shape[None], coeffs.expression[2][None])[0]
    assert_close(read_mesh(out_path).vertices, expected.double(), atol=1e-4)


def test_export_opens_the_jaw(capsys, data_dir, tmp_path):
    model = load_sfm(data_dir / "sfm")
    coeffs_path, coeffs = write_coeffs(tmp_path / "c.npz", model, jaw=0.2)
    out_path = tmp_path / "f1.obj"
    status, _, _ = run(capsys, "model", "export", str(data_dir / "sfm"), str(out_path),
                       "--coeffs", str(coeffs_path), "--frame", "1")
    assert status == 0
    expected = face_vertices(model, coeffs.frames([1]))[0]
    closed = model.vertices(coeffs.shape[None], coeffs.expression[1][None])[0]
    chin = int(model.landmark_indices[8])
    assert float((expected[chin] - closed[chin]).norm()) > 5  # mm: the jaw really opened
    assert_close(read_mesh(out_path).vertices, expected.double(), atol=1e-4)


@pytest.mark.parametrize("camera", ["orthographic", "perspective"])
def test_export_posed(capsys, tiny, tmp_path, camera):
    model = tiny_model()
    coeffs_path, c = write_coeffs(tmp_path / "c.npz", model, frames=2, camera=camera)
    out_path = tmp_path / "posed.ply"
    status, out, _ = run(capsys, "model", "export", str(tiny), str(out_path), "--coeffs",
                         str(coeffs_path), "--frame", "1", "--posed")
    assert status == 0 and "frame 1, posed" in out
    v = model.vertices(c.shape[None], c.expression[1][None])[0].double()
    rotated = v @ c.rotation[1].double().T
    scale = c.scale[1].double() if camera == "orthographic" else 1.0  # perspective: focal length
    expected = scale * rotated + c.translation[1].double()
    assert_close(read_mesh(out_path).vertices, expected, atol=1e-4)


def test_export_fewer_components_than_the_model(capsys, tiny, tmp_path):
    model = tiny_model()
    coeffs, _ = write_coeffs(tmp_path / "c.npz", model, shape=np.array([1.5], np.float32),
                             expression=np.zeros((3, 1), np.float32))
    status, _, _ = run(capsys, "model", "export", str(tiny), str(tmp_path / "m.obj"),
                       "--coeffs", str(coeffs))
    assert status == 0
    expected = model.mean + 1.5 * model.shape_basis[0]
    assert_close(read_mesh(tmp_path / "m.obj").vertices, expected.double(), atol=1e-5)


@pytest.mark.parametrize("changes, fragment", [
    ({"expression": None}, "missing expression"),
    ({"rotation": None}, "missing rotation"),
    ({"shape": np.zeros((2, 2))}, "shape must be (Ks,), got (2, 2)"),
    ({"rotation": np.zeros((3, 3))}, "rotation must be (3, 3, 3)"),
    ({"shape": np.zeros(3)}, "3 shape and 2 expression coefficients, but model 'tiny' has 2 and 2"),
    ({"expression": np.zeros((3, 5))}, "2 shape and 5 expression coefficients"),
    ({"expression": np.full((3, 2), np.nan)}, "frame 0 has NaN or infinite expression"),
    ({"model": np.array("sfm")}, "coefficients of model 'sfm', not of 'tiny'"),
])
def test_export_bad_coefficients(capsys, tiny, tmp_path, changes, fragment):
    coeffs, _ = write_coeffs(tmp_path / "c.npz", tiny_model(), **changes)
    status, _, err = run(capsys, "model", "export", str(tiny), str(tmp_path / "m.obj"),
                         "--coeffs", str(coeffs))
    assert_one_line_error(status, err, "c.npz", fragment)
    assert not (tmp_path / "m.obj").exists()


def test_export_nan_pose_only_matters_when_posed(capsys, tiny, tmp_path):
    coeffs, _ = write_coeffs(tmp_path / "c.npz", tiny_model(), scale=np.full(3, np.nan))
    argv = ["model", "export", str(tiny), str(tmp_path / "m.obj"), "--coeffs", str(coeffs)]
    assert run(capsys, *argv)[0] == 0
    status, _, err = run(capsys, *argv, "--posed")
    assert_one_line_error(status, err, "frame 0 has NaN or infinite scale")


@pytest.mark.parametrize("frame", ["3", "-1"])
def test_export_frame_out_of_range(capsys, tiny, tmp_path, frame):
    coeffs, _ = write_coeffs(tmp_path / "c.npz", tiny_model())
    status, _, err = run(capsys, "model", "export", str(tiny), str(tmp_path / "m.obj"),
                         "--coeffs", str(coeffs), "--frame", frame)
    assert_one_line_error(status, err, f"frame {frame} out of range; the file has 3 frames")


def test_export_argument_errors(capsys, tiny, tmp_path):
    status, _, err = run(capsys, "model", "export", str(tiny), str(tmp_path / "m.obj"), "--posed")
    assert_one_line_error(status, err, "--posed need a coefficient file")
    status, _, err = run(capsys, "model", "export", str(tiny), str(tmp_path / "m.stl"))
    assert_one_line_error(status, err, "m.stl: the mesh must be .obj or .ply")
    status, _, err = run(capsys, "model", "export", str(tiny), str(tmp_path / "m.obj"),
                         "--coeffs", str(tmp_path / "none.npz"))
    assert_one_line_error(status, err, "none.npz: no such coefficient file")
    (tmp_path / "bad.npz").write_text("not a zip")
    status, _, err = run(capsys, "model", "export", str(tiny), str(tmp_path / "m.obj"),
                         "--coeffs", str(tmp_path / "bad.npz"))
    assert_one_line_error(status, err, "bad.npz: not a readable .npz file")
    status, _, err = run(capsys, "model", "export", str(tiny), str(tmp_path / "no" / "m.obj"))
    assert_one_line_error(status, err, "does not exist")


# --- convert and help ----------------------------------------------------------------------------
def test_convert(capsys, tiny, tmp_path):
    status, out, _ = run(capsys, "model", "convert", str(tiny), str(tmp_path / "copy.npz"))
    assert status == 0 and "model 'tiny'" in out
    assert_same_model(load_model_npz(tmp_path / "copy.npz"), tiny_model())


@pytest.mark.parametrize("argv", [["model"], ["model", "info"], ["model", "export"],
                                  ["model", "convert"], ["model", "--help"],
                                  ["model", "export", "--help"]])
def test_usage(capsys, argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    assert info.value.code == (0 if "--help" in argv else 2)
    assert "usage: faceanime model" in out + err
