"""Basel Face Model 2009 (+ Guo et al.'s expression basis) and Deep3DFaceRecon's BFM_model_front,
on small synthetic files in the exact field layout of the real ones (which may not be shipped)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from helpers import assert_close

from faceanime.errors import ModelFileError
from faceanime.morphable.bfm import (
    load_bfm2009,
    load_bfm_front,
    orient_outward,
    read_bfm2009,
    read_bfm_front,
)

ROWS, COLS = 6, 10  # a dome of 60 vertices facing +z
N_FULL = ROWS * COLS
DROPPED = np.array([0, 9, 25, 50, 59])  # vertices the expression basis does not cover
KEEP = np.setdiff1d(np.arange(N_FULL), DROPPED)


def dome() -> tuple[np.ndarray, np.ndarray]:
    """``(mean (60, 3) mm, triangles (F, 3))`` counter-clockwise seen from +z."""
    x, y = np.meshgrid(np.linspace(-60, 60, COLS), np.linspace(-80, 80, ROWS))
    z = np.sqrt(150.0**2 - x**2 - y**2) - 100
    mean = np.stack([x, y, z], axis=-1).reshape(-1, 3)
    i, j = np.meshgrid(np.arange(ROWS - 1), np.arange(COLS - 1), indexing="ij")
    v00 = (i * COLS + j).ravel()
    v01, v10, v11 = v00 + 1, v00 + COLS, v00 + COLS + 1
    tri = np.concatenate([np.stack([v00, v01, v11], 1), np.stack([v00, v11, v10], 1)])
    return mean, tri


def write_bfm2009(folder: Path, expression: bool = True, landmarks: bool = True) -> dict:
    """``01_MorphableModel.mat`` (+ Exp_Pca.bin, std_exp.txt, BFM_exp_idx.mat,
    bfm_landmarks_68.txt) in micrometres; returns the source arrays."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    mean, tri = dome()
    k = 4
    pc = np.linalg.qr(rng.normal(size=(3 * N_FULL, k)))[0].astype(np.float32)
    ev = np.array([[5000.0], [3000.0], [2000.0], [1000.0]], np.float32)  # std in µm
    cw = tri[:, [0, 2, 1]]  # written clockwise: the loader must turn it around
    scipy.io.savemat(folder / "01_MorphableModel.mat", {
        "shapeMU": (mean.reshape(-1, 1) * 1000).astype(np.float32), "shapePC": pc,
        "shapeEV": ev, "tl": (cw + 1).astype(np.float64),
        "texMU": np.zeros((3 * N_FULL, 1), np.float32), "segbin": np.zeros((N_FULL, 4))})
    out = {"mean": mean, "tri": tri, "pc": pc, "ev": ev.ravel()}
    if expression:
        n, ke = KEEP.size, 3
        exp_mu = rng.normal(size=3 * n).astype(np.float32)
        exp_pc = rng.normal(size=(ke, 3 * n)).astype(np.float32)
        std = np.array([800.0, 500.0, 250.0])
        (folder / "Exp_Pca.bin").write_bytes(struct.pack("<i", ke) + exp_mu.tobytes()
                                              + exp_pc.tobytes())
        np.savetxt(folder / "std_exp.txt", std)
        scipy.io.savemat(folder / "BFM_exp_idx.mat", {"trimIndex": (KEEP + 1)[:, None]})
        out.update(exp_pc=exp_pc, std=std)
    if landmarks:
        lm = np.zeros(68, np.int64)
        lm[8], lm[30], lm[36] = 33, 15, 41  # 1-based vertices, all kept; the others unmapped
        (folder / "bfm_landmarks_68.txt").write_text(
            "# iBUG point -> 1-based BFM vertex\n" + "\n".join(str(v) for v in lm) + "\n")
        out["landmarks"] = lm
    return out


def write_bfm_front(path: Path) -> dict:
    """Deep3DFaceRecon's ``BFM_model_front.mat`` layout, in decimetres."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    mean, tri = dome()
    id_base = rng.normal(size=(3 * N_FULL, 5)).astype(np.float32) * 0.01
    ex_base = rng.normal(size=(3 * N_FULL, 3)).astype(np.float32) * 0.01
    keypoints = rng.choice(N_FULL, size=68) + 1  # 60 vertices: some points share one
    scipy.io.savemat(path, {
        "meanshape": (mean.reshape(1, -1) / 100).astype(np.float32), "idBase": id_base,
        "exBase": ex_base, "tri": (tri + 1).astype(np.float64),
        "keypoints": keypoints[None].astype(np.float64),
        "point_buf": np.ones((N_FULL, 8)), "meantex": np.zeros((1, 3 * N_FULL))})
    return {"mean": mean, "tri": tri, "id": id_base, "ex": ex_base, "keypoints": keypoints}


# --- BFM 2009 ---------------------------------------------------------------------------------
def test_bfm2009_with_expression(tmp_path):
    src = write_bfm2009(tmp_path)
    model = load_bfm2009(tmp_path / "01_MorphableModel.mat")
    n = KEEP.size
    assert model.name == "bfm"
    assert (model.n_vertices, model.n_shape, model.n_expression) == (n, 4, 3)
    # micrometres → mm, restricted to trimIndex
    assert_close(model.mean, src["mean"][KEEP], atol=1e-4)
    # basis per standard deviation: shapePC * shapeEV, as Deep3DFaceRecon's transferBFM09
    # (idBase = shapePC * shapeEV / 1e5 in dm, i.e. / 1e3 in mm)
    expected = (src["pc"] * src["ev"]).T.reshape(4, N_FULL, 3)[:, KEEP] / 1e3
    assert_close(model.shape_basis, expected, atol=1e-6)
    assert_close(model.shape_eigenvalues, (src["ev"] / 1e3) ** 2)
    # expression: expPC rows are components; scaled by std_exp
    exp = src["exp_pc"].reshape(3, n, 3) * src["std"][:, None, None] / 1e3
    assert_close(model.expression_basis, exp, atol=1e-6)
    assert_close(model.expression_eigenvalues, (src["std"] / 1e3) ** 2)
    assert model.expression_names == ["exp_0", "exp_1", "exp_2"]
    assert model.texcoords is None and model.symmetry is None


def test_bfm2009_triangles_and_landmarks_follow_the_vertex_subset(tmp_path):
    src = write_bfm2009(tmp_path)
    model = load_bfm2009(tmp_path)  # the folder works too
    kept = np.isin(src["tri"], KEEP).all(axis=1)
    new_index = np.full(N_FULL, -1)
    new_index[KEEP] = np.arange(KEEP.size)
    # the file was clockwise: flipped back to counter-clockwise from the front
    assert model.triangles.tolist() == new_index[src["tri"][kept]].tolist()
    lm = model.landmark_indices
    assert lm[8] == new_index[32] and lm[30] == new_index[14] and lm[36] == new_index[40]
    assert int(model.landmark_mask().sum()) == 3
    assert torch.equal(model.mean[lm[8]], torch.tensor(src["mean"][32], dtype=torch.float32))


def test_bfm2009_without_expression(tmp_path):
    src = write_bfm2009(tmp_path, expression=False, landmarks=False)
    with pytest.warns(UserWarning) as record:
        model = load_bfm2009(tmp_path)
    messages = " ".join(str(w.message) for w in record)
    assert "Exp_Pca.bin" in messages and "bfm_landmarks_68.txt" in messages
    assert model.n_vertices == N_FULL and model.n_expression == 0
    assert model.n_triangles == len(src["tri"])
    assert (model.landmark_indices == -1).all()


def test_bfm2009_vertices(tmp_path):
    write_bfm2009(tmp_path)
    model = load_bfm2009(tmp_path)
    alpha, beta = torch.randn(2, 4), torch.randn(2, 3)
    out = model.vertices(alpha, beta)
    ref = model.mean + torch.einsum("bk,knd->bnd", alpha, model.shape_basis) \
        + torch.einsum("bk,knd->bnd", beta, model.expression_basis)
    assert_close(out, ref, atol=1e-4)


@pytest.mark.parametrize("missing", ["std_exp.txt", "BFM_exp_idx.mat", "Exp_Pca.bin"])
def test_bfm2009_partial_expression_files(tmp_path, missing):
    write_bfm2009(tmp_path)
    (tmp_path / missing).unlink()
    with pytest.raises(ModelFileError, match=f"missing {missing}"):
        read_bfm2009(tmp_path)


def test_bfm2009_truncated_expression_basis(tmp_path):
    write_bfm2009(tmp_path)
    path = tmp_path / "Exp_Pca.bin"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(ModelFileError, match=r"Exp_Pca\.bin: truncated: \d+ bytes, expected \d+ "
                                             r"for 3 components over 55 vertices"):
        read_bfm2009(tmp_path)
    path.write_bytes(b"\x01")
    with pytest.raises(ModelFileError, match=r"Exp_Pca\.bin: truncated at byte 1"):
        read_bfm2009(tmp_path)


def test_bfm2009_std_count_mismatch(tmp_path):
    write_bfm2009(tmp_path)
    np.savetxt(tmp_path / "std_exp.txt", [1.0, 2.0])
    with pytest.raises(ModelFileError, match=r"std_exp\.txt: 2 values for the 3 components"):
        read_bfm2009(tmp_path)


def test_bfm2009_landmark_on_a_dropped_vertex(tmp_path):
    write_bfm2009(tmp_path)
    lm = np.zeros(68, np.int64)
    lm[0] = DROPPED[2] + 1
    (tmp_path / "bfm_landmarks_68.txt").write_text("\n".join(map(str, lm)))
    with pytest.raises(ModelFileError, match=r"bfm_landmarks_68\.txt: iBUG point\(s\) 1 map to "
                                             "vertices outside the expression basis"):
        read_bfm2009(tmp_path)


@pytest.mark.parametrize("text, message", [
    ("1\n2\n", "2 entries, expected 68"),
    ("x\n" * 68, "every line must be one 1-based vertex index"),
    ("1000\n" * 68, "vertex 1000 beyond the model's 60"),
])
def test_bfm2009_malformed_landmarks(tmp_path, text, message):
    write_bfm2009(tmp_path)
    (tmp_path / "bfm_landmarks_68.txt").write_text(text)
    with pytest.raises(ModelFileError, match=rf"bfm_landmarks_68\.txt: {message}"):
        read_bfm2009(tmp_path)


def test_bfm2009_missing_variable(tmp_path):
    scipy.io.savemat(tmp_path / "01_MorphableModel.mat", {"shapeMU": np.zeros((9, 1))})
    with pytest.raises(ModelFileError, match=r"01_MorphableModel\.mat: missing variable\(s\) "
                                             "shapePC, shapeEV, tl"):
        read_bfm2009(tmp_path)


@pytest.mark.parametrize("fields, message", [
    ({"shapeMU": np.zeros((10, 1))}, "shapeMU has 10 values, not 3 per vertex"),
    ({"shapePC": np.zeros((9, 2))}, r"shapePC must be \(180, K\)"),
    ({"shapeEV": np.ones((3, 1))}, "shapeEV has 3 values for 4 components"),
    ({"tl": np.ones((4, 2))}, r"tl must be \(F, 3\)"),
    ({"tl": np.full((4, 3), 61.0)}, r"tl has indices outside \[1, 60\]"),
    ({"tl": np.zeros((4, 3))}, r"tl has indices outside \[1, 60\]"),
    ({"shapeMU": np.full((180, 1), np.nan)}, "shapeMU holds NaN"),
])
def test_bfm2009_wrong_fields(tmp_path, fields, message):
    write_bfm2009(tmp_path, expression=False, landmarks=False)
    data = scipy.io.loadmat(tmp_path / "01_MorphableModel.mat")
    data = {k: v for k, v in data.items() if not k.startswith("__")}
    data.update(fields)
    scipy.io.savemat(tmp_path / "01_MorphableModel.mat", data)
    with pytest.raises(ModelFileError, match=rf"01_MorphableModel\.mat: {message}"):
        read_bfm2009(tmp_path)


def test_not_a_mat_file(tmp_path):
    (tmp_path / "01_MorphableModel.mat").write_bytes(b"hello world" * 20)
    with pytest.raises(ModelFileError, match=r"01_MorphableModel\.mat: not a readable MATLAB"):
        read_bfm2009(tmp_path)


def test_truncated_mat_file(tmp_path):
    write_bfm2009(tmp_path, expression=False, landmarks=False)
    path = tmp_path / "01_MorphableModel.mat"
    path.write_bytes(path.read_bytes()[:1500])
    with pytest.raises(ModelFileError, match=r"01_MorphableModel\.mat: "):
        read_bfm2009(tmp_path)


def test_matlab_v73_file(tmp_path):
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00 .".ljust(116) \
        + b"\0" * 8 + b"\x00\x02IM"
    (tmp_path / "01_MorphableModel.mat").write_bytes(header + b"\0" * 512)
    with pytest.raises(ModelFileError, match=r"01_MorphableModel\.mat: .*v7\.3"):
        read_bfm2009(tmp_path)


def test_missing_bfm(tmp_path):
    with pytest.raises(ModelFileError, match=r"01_MorphableModel\.mat: Basel Face Model file not "
                                             r"found; see bfm/README\.md"):
        read_bfm2009(tmp_path)


# --- Deep3DFaceRecon's BFM_model_front -----------------------------------------------------------
def test_bfm_front(tmp_path):
    src = write_bfm_front(tmp_path / "BFM_model_front.mat")
    model = load_bfm_front(tmp_path / "BFM_model_front.mat")
    assert model.name == "bfm-front"
    assert (model.n_vertices, model.n_shape, model.n_expression) == (N_FULL, 5, 3)
    assert_close(model.mean, src["mean"], atol=1e-4)  # decimetres → mm
    id_mm = src["id"].T.reshape(5, N_FULL, 3) * 100
    ex_mm = src["ex"].T.reshape(3, N_FULL, 3) * 100
    assert_close(model.shape_basis, id_mm, atol=1e-5)
    assert_close(model.expression_basis, ex_mm, atol=1e-5)
    # eigenvalues: squared column norms (the bases already carry their std)
    assert_close(model.shape_eigenvalues, (id_mm**2).sum(axis=(1, 2)), rtol=1e-5)
    assert_close(model.expression_eigenvalues, (ex_mm**2).sum(axis=(1, 2)), rtol=1e-5)
    assert model.triangles.tolist() == src["tri"].tolist()  # counter-clockwise already
    assert model.landmark_indices.tolist() == (src["keypoints"] - 1).tolist()
    assert model.expression_names == ["exp_0", "exp_1", "exp_2"]


def test_bfm_front_from_folder(tmp_path):
    write_bfm_front(tmp_path / "BFM_model_front.mat")
    assert read_bfm_front(tmp_path)["mean"].shape == (N_FULL, 3)


@pytest.mark.parametrize("fields, message", [
    ({"keypoints": np.ones((1, 5))}, "keypoints must hold 68 vertex indices, got 5"),
    ({"keypoints": np.full((1, 68), 0.5)}, r"keypoints must hold integer \(1-based\) indices"),
    ({"exBase": np.zeros((6, 3))}, r"exBase must be \(180, K\)"),
    ({"tri": np.zeros((2, 4))}, r"tri must be \(F, 3\)"),
])
def test_bfm_front_wrong_fields(tmp_path, fields, message):
    path = tmp_path / "BFM_model_front.mat"
    write_bfm_front(path)
    data = {k: v for k, v in scipy.io.loadmat(path).items() if not k.startswith("__")}
    data.update(fields)
    scipy.io.savemat(path, data)
    with pytest.raises(ModelFileError, match=rf"BFM_model_front\.mat: {message}"):
        read_bfm_front(path)


def test_bfm_front_missing_variable(tmp_path):
    path = tmp_path / "BFM_model_front.mat"
    scipy.io.savemat(path, {"meanshape": np.zeros((1, 9))})
    with pytest.raises(ModelFileError, match="missing variable"):
        read_bfm_front(path)


def test_orient_outward():
    mean, tri = dome()
    assert np.array_equal(orient_outward(mean, tri), tri)
    assert np.array_equal(orient_outward(mean, tri[:, [0, 2, 1]]), tri)
    # a face mask seen from behind (looking along -z) is wound the other way round
    back = mean * np.array([1, 1, -1])
    assert np.array_equal(orient_outward(back, tri), tri[:, [0, 2, 1]])
