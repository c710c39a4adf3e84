"""The eos / Surrey Face Model reader: the real SFM files, eos-py as the reference, and damaged or
synthetic files (cereal archives of every class version written by a small writer below)."""

from __future__ import annotations

import json
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import assert_close

from faceanime.errors import ModelFileError
from faceanime.morphable.eos import (
    Blendshapes,
    PcaModel,
    load_sfm,
    mirror_matching,
    read_blendshapes,
    read_eos_model,
    read_sfm,
    read_symmetry,
)

SFM_FILES = ("sfm_shape_3448.bin", "expression_blendshapes_3448.bin", "ibug_to_sfm.txt",
             "sfm_model_contours.json", "sfm_reference_symmetry.txt")


# --- a minimal cereal writer (the byte layout of GUIDE §2), for synthetic files ------------------
def _matrix(a: np.ndarray) -> bytes:
    a = np.asarray(a, dtype="<f4")
    a = a.reshape(a.shape[0], -1) if a.ndim else a.reshape(1, 1)
    return struct.pack("<ii", *a.shape) + a.T.tobytes()  # column-major


def _vector(v: np.ndarray) -> bytes:
    return _matrix(np.asarray(v, dtype="<f4").reshape(-1, 1))


def _triples(t: np.ndarray, dtype: str = "<i4") -> bytes:
    t = np.asarray(t).reshape(-1, 3)
    return struct.pack("<Q", len(t)) + t.astype(dtype).tobytes()


def _string(s: str) -> bytes:
    raw = s.encode()
    return struct.pack("<Q", len(raw)) + raw


def _pca(mean, basis, eigenvalues, triangles) -> bytes:
    return _vector(mean) + _matrix(basis) + _vector(eigenvalues) + _triples(triangles)


EMPTY_PCA = struct.pack("<ii", 0, 1) + struct.pack("<ii", 0, 0) + struct.pack("<ii", 0, 1) \
    + struct.pack("<Q", 0)


def _blendshapes(names, deltas) -> bytes:
    out = struct.pack("<Q", len(names))
    for name, d in zip(names, deltas, strict=True):
        out += _string(name) + _vector(d)
    return out


def write_eos_model(path: Path, version: int, shape: tuple, texcoords: np.ndarray,
                    expression: bytes | None = None, landmarks: dict | None = None,
                    texture_triangles: np.ndarray | None = None) -> Path:
    """An eos MorphableModel archive; ``expression`` is the already serialised variant
    (int32 index + value)."""
    out = struct.pack("<I", version) + _pca(*shape) + EMPTY_PCA
    if version >= 2:
        out += b"\x01" if expression is None else b"\x00" + expression
    if version >= 3:
        if landmarks is None:
            out += b"\x01"
        else:
            out += b"\x00" + struct.pack("<Q", len(landmarks))
            for key, value in landmarks.items():
                out += _string(key) + struct.pack("<i", value)
    out += struct.pack("<Q", len(texcoords)) + np.asarray(texcoords, "<f8").tobytes()
    if version >= 4:
        out += _triples(np.zeros((0, 3)) if texture_triangles is None else texture_triangles)
    path.write_bytes(out)
    return path


def tiny_shape(n: int = 5, k: int = 3, seed: int = 0) -> tuple:
    rng = np.random.default_rng(seed)
    mean = rng.normal(size=3 * n).astype(np.float32)
    basis = np.linalg.qr(rng.normal(size=(3 * n, k)))[0].astype(np.float32)
    eigenvalues = np.array([9.0, 4.0, 1.0][:k], np.float32)
    triangles = np.array([[0, 1, 2], [2, 3, 4]])
    return mean, basis, eigenvalues, triangles


TINY_DELTAS = np.arange(30, dtype=np.float32).reshape(2, 15) / 10


def tiny_folder(folder: Path, version: int = 1, **kwargs) -> Path:
    """A complete eos-format model folder with 5 vertices and 2 blendshapes."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "expression_blendshapes_3448.bin").write_bytes(
        _blendshapes(["smile", "frown"], TINY_DELTAS))
    shape = tiny_shape()
    write_eos_model(folder / "sfm_shape_3448.bin", version, shape,
                    np.linspace(0, 1, 10).reshape(5, 2), **kwargs)
    (folder / "ibug_to_sfm.txt").write_text("[landmark_mappings]\n9 = 4  # chin\n31 = 1\n")
    (folder / "sfm_model_contours.json").write_text(json.dumps(
        {"model_contour": {"right_contour": [0, 1], "left_contour": [3]}}))
    (folder / "sfm_reference_symmetry.txt").write_text("1\n2\n3\n4\n5\n")
    return folder


@pytest.fixture
def sfm_copy(data_dir, tmp_path) -> Path:
    """A writable copy of the SFM files (to damage or remove them)."""
    folder = tmp_path / "sfm"
    folder.mkdir()
    for name in SFM_FILES:
        shutil.copy(data_dir / "sfm" / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def sfm(data_dir):
    return load_sfm(data_dir / "sfm" / "sfm_shape_3448.bin")


# --- the real SFM --------------------------------------------------------------------------------
def test_sfm_sizes(sfm):
    assert sfm.name == "sfm"
    assert (sfm.n_vertices, sfm.n_shape, sfm.n_expression, sfm.n_triangles) == (3448, 63, 6, 6736)
    assert sfm.expression_names == ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]
    assert sfm.expression_eigenvalues is None
    assert sfm.texcoords.shape == (3448, 2)
    assert sfm.texcoords.min() >= 0 and sfm.texcoords.max() <= 1
    assert sfm.dtype == torch.float32 and sfm.triangles.dtype == torch.int64


def test_sfm_loads_from_its_folder(data_dir, sfm):
    from_folder = load_sfm(data_dir / "sfm")
    assert torch.equal(from_folder.mean, sfm.mean)


def test_sfm_axes_and_units(sfm):
    """mm, x to the subject's left, y up, the face towards +z (model.py's conventions)."""
    v = sfm.mean
    nose_tip, chin, right_eye_outer, left_eye_outer = v[114], v[33], v[177], v[610]
    assert nose_tip[2] > right_eye_outer[2] + 20 and nose_tip[2] > left_eye_outer[2] + 20
    assert right_eye_outer[0] < -30 and left_eye_outer[0] > 30
    assert right_eye_outer[1] > nose_tip[1] > chin[1]
    eye_distance = torch.linalg.norm(left_eye_outer - right_eye_outer)
    assert 80 < eye_distance < 110  # outer eye corners of an adult, in millimetres


def test_sfm_triangles_face_outwards(sfm):
    v, t = sfm.mean.double(), sfm.triangles
    normals = torch.linalg.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]])
    # counter-clockwise seen from the front: the projected area onto xy is positive
    assert normals[:, 2].sum() > 0.9 * normals[:, 2].abs().sum()


def test_zero_coefficients_give_the_mean_exactly(sfm, data_dir):
    stored = np.fromfile(data_dir / "sfm" / "sfm_shape_3448.bin", dtype="<f4",
                         count=10344, offset=12)
    assert np.array_equal(sfm.mean.numpy().reshape(-1), stored)
    zeros = sfm.vertices(torch.zeros(3, 63), torch.zeros(3, 6))
    assert zeros.shape == (3, 3448, 3)
    assert torch.equal(zeros, sfm.mean.expand(3, -1, -1))
    assert torch.equal(sfm.vertices()[0], sfm.mean)


def test_batched_vertices_match_numpy(sfm):
    rng = np.random.default_rng(1)
    shape, expression = rng.normal(size=(4, 63)), rng.uniform(0, 1, size=(4, 6))
    out = sfm.vertices(torch.tensor(shape, dtype=torch.float32),
                       torch.tensor(expression, dtype=torch.float32))
    mean = sfm.mean.double().numpy()
    sb, eb = sfm.shape_basis.double().numpy(), sfm.expression_basis.double().numpy()
    for b in range(4):
        expected = mean.copy()
        for k in range(63):
            expected += shape[b, k] * sb[k]
        for k in range(6):
            expected += expression[b, k] * eb[k]
        assert_close(out[b], expected, atol=1e-3, rtol=0)


def test_landmark_mapping(sfm, data_dir):
    text = (data_dir / "sfm" / "ibug_to_sfm.txt").read_text()
    table = text.split("[landmark_mappings]")[1].split("[")[0]
    pairs = {int(a): int(b) for a, b in re.findall(r"^\s*(\d+)\s*=\s*(\d+)", table, re.M)}
    assert len(pairs) == 50
    lm = sfm.landmark_indices
    assert int(sfm.landmark_mask().sum()) == 50
    for ibug, vertex in pairs.items():
        assert lm[ibug - 1] == vertex
    assert lm[9 - 1] == 33 and lm[31 - 1] == 114 and lm[37 - 1] == 177 and lm[46 - 1] == 610
    unmapped = [i + 1 for i in torch.nonzero(lm < 0).flatten().tolist()]
    assert unmapped == [*range(1, 9), *range(10, 18), 61, 65]


def test_contours_match_json(sfm, data_dir):
    doc = json.loads((data_dir / "sfm" / "sfm_model_contours.json").read_text())["model_contour"]
    assert sfm.contour_right.tolist() == doc["right_contour"]
    assert sfm.contour_left.tolist() == doc["left_contour"]
    # right contour on the subject's right (-x), left on +x
    assert (sfm.mean[sfm.contour_right, 0] < 0).all() and (sfm.mean[sfm.contour_left, 0] > 0).all()


def test_symmetry(sfm, data_dir):
    sym = sfm.symmetry
    assert sym.shape == (3448,)
    assert torch.equal(sym[sym], torch.arange(3448))  # a permutation that is its own inverse
    lines = (data_dir / "sfm" / "sfm_reference_symmetry.txt").read_text().splitlines()
    listed = [int(line.split("#")[0]) - 1 for line in lines if line.split("#")[0].strip()]
    assert sym[:845].tolist() == listed
    mirrored = sfm.mean[sym] * torch.tensor([-1.0, 1.0, 1.0])
    error = torch.linalg.norm(mirrored - sfm.mean, dim=1)
    assert error.mean() < 1.0 and error.max() < 3.0  # mm; the SFM mean is nearly symmetric


def _dense_matching(points: np.ndarray) -> np.ndarray:
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    cost = cdist(points * np.array([-1.0, 1.0, 1.0]), points)
    return linear_sum_assignment(cost + cost.T)[1]


def test_sparse_mirror_matching_equals_the_dense_assignment_on_the_sfm(sfm):
    # The SFM's 2603 vertices beyond its 845-vertex symmetry file are paired by the matching.
    rest = sfm.mean[845:].double().numpy()
    assert np.array_equal(mirror_matching(rest), _dense_matching(rest))


def test_mirror_matching_falls_back_to_the_dense_assignment():
    # With one candidate each, both a's and c's mirror images are nearest to b: the sparse
    # problem has no perfect matching (a and c both need b), so the dense assignment decides.
    points = np.array([[1.0, 0, 0], [-1.0, 0, 0], [1.1, 0, 0]])
    result = mirror_matching(points, neighbours=1)
    assert np.array_equal(result, _dense_matching(points))
    assert sorted(result.tolist()) == [0, 1, 2]


# --- eos-py as the reference ---------------------------------------------------------------------
def test_matches_eos(data_dir, sfm):
    eos = pytest.importorskip("eos")
    folder = data_dir / "sfm"
    ref = eos.morphablemodel.load_model(str(folder / "sfm_shape_3448.bin"))
    shape = ref.get_shape_model()
    raw = read_eos_model(folder / "sfm_shape_3448.bin")
    assert np.array_equal(sfm.mean.numpy().reshape(-1), np.asarray(shape.get_mean()))
    assert np.array_equal(raw.shape.orthonormal_basis,
                          np.asarray(shape.get_orthonormal_pca_basis()))
    assert np.array_equal(sfm.shape_eigenvalues.numpy(), np.asarray(shape.get_eigenvalues()))
    # eos rescales with Eigen's vectorised float sqrt, which may differ from the correctly rounded
    # one by an ulp: equal up to float32 rounding.
    ours = sfm.shape_basis.numpy().reshape(63, -1).T
    assert_close(ours, np.asarray(shape.get_rescaled_pca_basis()), atol=1e-6, rtol=1e-6)
    assert np.array_equal(sfm.triangles.numpy(), np.asarray(shape.get_triangle_list()))
    assert np.array_equal(raw.texcoords, np.asarray(ref.get_texture_coordinates()))
    blendshapes = eos.morphablemodel.load_blendshapes(str(folder / SFM_FILES[1]))
    assert sfm.expression_names == [b.name for b in blendshapes]
    for i, b in enumerate(blendshapes):
        assert np.array_equal(sfm.expression_basis[i].numpy().reshape(-1),
                              np.asarray(b.deformation))

    # vertex generation against eos's draw_sample
    full = eos.morphablemodel.MorphableModel(shape, blendshapes,
                                             color_model=eos.morphablemodel.PcaModel())
    rng = np.random.default_rng(2)
    alpha, beta = rng.normal(size=63).astype(np.float32), rng.uniform(size=6).astype(np.float32)
    mesh = full.draw_sample(alpha.tolist(), beta.tolist(), [])
    ours = sfm.vertices(torch.from_numpy(alpha)[None], torch.from_numpy(beta)[None])[0]
    assert_close(ours, np.asarray(mesh.vertices), atol=1e-3, rtol=0)


def test_reads_what_eos_writes(tmp_path, data_dir, sfm):
    """eos-py writes class version 4 with an expression model, landmarks and texture triangles."""
    eos = pytest.importorskip("eos")
    folder = data_dir / "sfm"
    ref = eos.morphablemodel.load_model(str(folder / "sfm_shape_3448.bin"))
    blendshapes = eos.morphablemodel.load_blendshapes(str(folder / SFM_FILES[1]))
    model = eos.morphablemodel.MorphableModel(
        ref.get_shape_model(), blendshapes, color_model=eos.morphablemodel.PcaModel(),
        vertex_definitions={"9": 33, "31": 114}, texture_coordinates=ref.get_texture_coordinates(),
        texture_triangle_indices=[[0, 1, 2], [2, 3, 4]])
    eos.morphablemodel.save_model(model, str(tmp_path / "v4.bin"))
    raw = read_eos_model(tmp_path / "v4.bin")
    assert raw.version == 4
    assert isinstance(raw.expression, Blendshapes) and raw.expression.names == sfm.expression_names
    assert np.array_equal(raw.expression.deltas.reshape(6, -1, 3), sfm.expression_basis.numpy())
    assert raw.landmark_definitions == {"9": 33, "31": 114}
    assert raw.texture_triangles.tolist() == [[0, 1, 2], [2, 3, 4]]

    # our writer produces eos's bytes (so the synthetic tests below test the real layout)
    s = ref.get_shape_model()
    ours = write_eos_model(
        tmp_path / "ours.bin", 4,
        (np.asarray(s.get_mean()), np.asarray(s.get_orthonormal_pca_basis()),
         np.asarray(s.get_eigenvalues()), np.asarray(s.get_triangle_list())),
        np.asarray(ref.get_texture_coordinates()),
        expression=struct.pack("<i", 1) + _blendshapes(
            [b.name for b in blendshapes], [np.asarray(b.deformation) for b in blendshapes]),
        landmarks=None, texture_triangles=np.array([[0, 1, 2], [2, 3, 4]]))
    eos.morphablemodel.save_model(eos.morphablemodel.MorphableModel(
        ref.get_shape_model(), blendshapes, color_model=eos.morphablemodel.PcaModel(),
        texture_coordinates=ref.get_texture_coordinates(),
        texture_triangle_indices=[[0, 1, 2], [2, 3, 4]]), str(tmp_path / "eos.bin"))
    assert ours.read_bytes() == (tmp_path / "eos.bin").read_bytes()


def test_pca_expression_model_written_by_eos(tmp_path):
    eos = pytest.importorskip("eos")
    mean, basis, ev, tri = tiny_shape()
    shape = eos.morphablemodel.PcaModel(mean[:, None], basis, ev[:, None], tri.tolist())
    e_mean = np.full(15, 0.5, np.float32)
    expr = eos.morphablemodel.PcaModel(e_mean[:, None], basis[:, :2], ev[:2, None], tri.tolist())
    eos.morphablemodel.save_model(eos.morphablemodel.MorphableModel(
        shape, expr, color_model=eos.morphablemodel.PcaModel()), str(tmp_path / "m.bin"))
    raw = read_eos_model(tmp_path / "m.bin")
    assert isinstance(raw.expression, PcaModel)
    assert np.array_equal(raw.expression.orthonormal_basis, basis[:, :2])


# --- synthetic files of every class version ------------------------------------------------------
@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_every_class_version(tmp_path, version):
    folder = tiny_folder(tmp_path / "m", version)
    arrays = read_sfm(folder)
    mean, basis, ev, _ = tiny_shape()
    assert np.array_equal(arrays["mean"], mean.reshape(5, 3))
    expected = (basis * np.sqrt(ev)).T.reshape(3, 5, 3)
    assert np.array_equal(arrays["shape_basis"], expected)
    assert np.array_equal(arrays["expression_basis"], TINY_DELTAS.reshape(2, 5, 3))
    assert arrays["expression_names"].tolist() == ["smile", "frown"]
    assert arrays["symmetry"].tolist() == [0, 1, 2, 3, 4]
    assert arrays["landmark_indices"][8] == 4 and arrays["landmark_indices"][30] == 1
    assert (arrays["landmark_indices"] >= 0).sum() == 2
    assert arrays["contour_right"].tolist() == [0, 1] and arrays["contour_left"].tolist() == [3]
    assert np.array_equal(arrays["texcoords"], np.linspace(0, 1, 10).reshape(5, 2))


def test_embedded_blendshapes_and_landmarks(tmp_path):
    """An expression model inside the model file wins over a blendshapes file beside it."""
    deltas = np.arange(30, dtype=np.float32).reshape(2, 15)
    expression = struct.pack("<i", 1) + _blendshapes(["a", "b"], deltas)
    folder = tiny_folder(tmp_path / "m", 3, expression=expression,
                         landmarks={"9": 2, "30": 3})
    (folder / "ibug_to_sfm.txt").unlink()  # the embedded iBUG-numbered definitions serve instead
    model = load_sfm(folder)
    assert model.expression_names == ["a", "b"]
    assert torch.equal(model.expression_basis, torch.from_numpy(deltas.reshape(2, 5, 3)))
    assert model.landmark_indices[8] == 2 and model.landmark_indices[29] == 3


def test_embedded_pca_expression_mean_is_folded_into_the_mean(tmp_path):
    mean, basis, ev, tri = tiny_shape()
    e_mean = np.full(15, 0.25, np.float32)
    expression = struct.pack("<i", 0) + _pca(e_mean, basis[:, :2], ev[:2], tri)
    folder = tiny_folder(tmp_path / "m", 2, expression=expression)
    model = load_sfm(folder)
    assert_close(model.mean.reshape(-1), mean + e_mean, atol=0, rtol=0)
    assert model.expression_names == ["exp_0", "exp_1"]
    assert_close(model.expression_eigenvalues, ev[:2], atol=0, rtol=0)
    assert_close(model.expression_basis[1].reshape(-1), basis[:, 1] * 2.0, atol=1e-7, rtol=0)


def test_texture_triangles_drop_per_vertex_texcoords(tmp_path):
    folder = tiny_folder(tmp_path / "m", 4, texture_triangles=np.array([[0, 1, 2]]))
    with pytest.warns(UserWarning, match="texture"):
        arrays = read_sfm(folder)
    assert "texcoords" not in arrays


# --- damaged files -------------------------------------------------------------------------------
TRUNCATIONS = {
    2: "class version",
    10: "mean",
    12 + 41376 + 8 + 1000: "shape model basis",
    12 + 41376 + 8 + 2606688 + 8 + 100: "shape model eigenvalues",
    12 + 41376 + 8 + 2606688 + 8 + 252 + 8 + 5000: "shape model triangle list",
    12 + 41376 + 8 + 2606688 + 8 + 252 + 8 + 80832 + 12: "colour model",
    2784392 - 5: "texture coordinates",
}


@pytest.mark.parametrize("size", list(TRUNCATIONS))
def test_truncated_model(sfm_copy, size):
    path = sfm_copy / "sfm_shape_3448.bin"
    path.write_bytes(path.read_bytes()[:size])
    with pytest.raises(ModelFileError, match=r"sfm_shape_3448\.bin: truncated at byte") as info:
        read_eos_model(path)
    assert TRUNCATIONS[size] in str(info.value)


def test_truncated_basis_message(sfm_copy):
    path = sfm_copy / "sfm_shape_3448.bin"
    path.write_bytes(path.read_bytes()[:100000])
    with pytest.raises(ModelFileError, match=r"truncated at byte 41396 while reading the shape "
                                             r"model basis \(expected 10344x63 float32"):
        load_sfm(sfm_copy)


@pytest.mark.parametrize("version", [0, 5, 7])
def test_wrong_version(sfm_copy, version):
    path = sfm_copy / "sfm_shape_3448.bin"
    path.write_bytes(struct.pack("<I", version) + path.read_bytes()[4:])
    with pytest.raises(ModelFileError, match=rf"sfm_shape_3448\.bin: unsupported eos model class "
                                             rf"version {version}"):
        read_eos_model(path)


def test_version_that_does_not_match_the_content(sfm_copy):
    path = sfm_copy / "sfm_shape_3448.bin"
    path.write_bytes(struct.pack("<I", 2) + path.read_bytes()[4:])
    with pytest.raises(ModelFileError, match=r"sfm_shape_3448\.bin: "):
        read_eos_model(path)


def test_trailing_bytes(sfm_copy):
    path = sfm_copy / "sfm_shape_3448.bin"
    path.write_bytes(path.read_bytes() + b"\0\0\0")
    with pytest.raises(ModelFileError, match="3 unexpected bytes after the texture coordinates"):
        read_eos_model(path)


def test_negative_matrix_size(tmp_path):
    path = tmp_path / "bad.bin"
    path.write_bytes(struct.pack("<Iii", 1, -3, 1))
    with pytest.raises(ModelFileError, match=r"bad\.bin: malformed header of the shape model mean"):
        read_eos_model(path)


def test_blendshapes_file_passed_as_model(data_dir):
    with pytest.raises(ModelFileError, match="unsupported eos model class version 6"):
        read_eos_model(data_dir / "sfm" / "expression_blendshapes_3448.bin")


@pytest.mark.parametrize("size", [4, 20, 30, 248400 - 1])
def test_truncated_blendshapes(sfm_copy, size):
    path = sfm_copy / "expression_blendshapes_3448.bin"
    path.write_bytes(path.read_bytes()[:size])
    with pytest.raises(ModelFileError, match=r"expression_blendshapes_3448\.bin: truncated at"):
        read_blendshapes(path)
    with pytest.raises(ModelFileError, match=r"expression_blendshapes_3448\.bin"):
        load_sfm(sfm_copy)


def test_blendshapes_of_another_model(tmp_path):
    folder = tiny_folder(tmp_path / "m")
    (folder / "expression_blendshapes_3448.bin").write_bytes(
        _blendshapes(["a"], [np.zeros(12, np.float32)]))
    with pytest.raises(ModelFileError, match="blendshapes have 4 vertices, the shape model 5"):
        read_sfm(folder)


@pytest.mark.parametrize("missing", ["ibug_to_sfm.txt", "sfm_model_contours.json"])
def test_missing_required_companion(sfm_copy, missing):
    (sfm_copy / missing).unlink()
    with pytest.raises(ModelFileError, match=re.escape(missing)):
        load_sfm(sfm_copy / "sfm_shape_3448.bin")


def test_missing_blendshapes_gives_no_expressions(sfm_copy):
    (sfm_copy / "expression_blendshapes_3448.bin").unlink()
    with pytest.warns(UserWarning, match="no expression_blendshapes"):
        model = load_sfm(sfm_copy)
    assert model.n_expression == 0 and model.expression_names == []


def test_missing_symmetry_gives_none(sfm_copy):
    (sfm_copy / "sfm_reference_symmetry.txt").unlink()
    with pytest.warns(UserWarning, match="symmetry"):
        model = load_sfm(sfm_copy)
    assert model.symmetry is None


def test_missing_shape_file(tmp_path):
    with pytest.raises(ModelFileError, match=r"nothere\.bin: eos model file not found"):
        load_sfm(tmp_path / "nothere.bin")
    with pytest.raises(ModelFileError, match="no eos shape model"):
        load_sfm(tmp_path)


@pytest.mark.parametrize("text, message", [
    ("[landmark_mappings\n", "not valid TOML"),
    ("[other]\n1 = 2\n", "no \\[landmark_mappings\\] table"),
    ("[landmark_mappings]\n70 = 2\n", "iBUG id 70 outside"),
    ("[landmark_mappings]\n9 = 5000\n", "iBUG point 9 maps to 5000"),
    ("[landmark_mappings]\neye = 2\n", "landmark id 'eye' is not an iBUG number"),
])
def test_malformed_landmark_mapping(tmp_path, text, message):
    folder = tiny_folder(tmp_path / "m")
    (folder / "ibug_to_sfm.txt").write_text(text)
    with pytest.raises(ModelFileError, match=rf"ibug_to_sfm\.txt: {message}"):
        read_sfm(folder)


@pytest.mark.parametrize("text, message", [
    ("{", "not valid JSON"),
    ('{"model_contour": {"right_contour": [0]}}', "'model_contour.left_contour' must be a list"),
    ('{"contour": []}', "expected an object 'model_contour'"),
    ('{"model_contour": {"right_contour": [9], "left_contour": []}}', "outside \\[0, 5\\)"),
])
def test_malformed_contours(tmp_path, text, message):
    folder = tiny_folder(tmp_path / "m")
    (folder / "sfm_model_contours.json").write_text(text)
    with pytest.raises(ModelFileError, match=rf"sfm_model_contours\.json: .*{message}"):
        read_sfm(folder)


@pytest.mark.parametrize("text, message", [
    ("2\nx\n", "every line must be one 1-based vertex index"),
    ("0\n1\n", "indices must lie in \\[1, 2\\]"),
    ("1\n2\n3\n4\n5\n6\n", "lists 6 vertices but the model has 5"),
])
def test_malformed_symmetry(tmp_path, text, message):
    path = tmp_path / "sym.txt"
    path.write_text(text)
    with pytest.raises(ModelFileError, match=rf"sym\.txt: {message}"):
        read_symmetry(path, np.zeros((5, 3)))


def test_symmetry_completion_pairs_mirror_vertices(tmp_path):
    # 2 listed vertices (a mirror pair) and 4 more: two mirror pairs the matching must find
    mean = np.array([[-1, 0, 0], [1, 0, 0], [-2, 1, 0], [2.1, 1, 0], [3, 5, 0], [-3, 5.1, 0]])
    path = tmp_path / "sym.txt"
    path.write_text("2 # comment\n1\n")
    assert read_symmetry(path, mean).tolist() == [1, 0, 3, 2, 5, 4]
