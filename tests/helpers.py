"""Assertion helpers shared by the tests."""

from __future__ import annotations

import numpy as np
import torch


def assert_close(actual, expected, atol: float = 1e-6, rtol: float = 1e-5, msg: str = "") -> None:
    """``torch.testing.assert_close`` for tensors or arrays, with a readable error message."""
    def tensor(x) -> torch.Tensor:
        return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))

    a, e = tensor(actual), tensor(expected)
    torch.testing.assert_close(a, e.to(a.dtype), atol=atol, rtol=rtol, msg=msg or None)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Run ``faceanime ARGV``; returns the exit status, stdout and stderr."""
    from faceanime.cli import main

    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line_error(status: int, err: str, *fragments: str) -> None:
    """Exit status 1 and exactly one ``faceanime: error:`` line holding every fragment."""
    assert status == 1
    assert err.count("\n") == 1 and err.startswith("faceanime: error: "), err
    for fragment in fragments:
        assert fragment in err, err


def rewrite_npz(path, arrays: dict | None = None, **changes) -> None:
    """Rewrite an ``.npz`` (from ``arrays``, or the file's own) with keys replaced, or dropped
    where the new value is None: how tests make malformed files."""
    if arrays is None:
        with np.load(path) as data:
            arrays = dict(data)
    arrays = dict(arrays)
    for key, value in changes.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    np.savez(path, **arrays)


def prepare_d0(data_dir, root, copies=(), crop_size: int = 128):
    """``videos/d0.mp4`` prepared with ``crop_size`` crops into ``root``, plus byte copies of it
    under the stems ``copies`` (more "videos" to hold out or shard: the same person, so a weak
    held-out test, but the same plumbing). Returns ``root``."""
    import json
    import shutil

    from faceanime.dataset import PrepareConfig, prepare_dataset

    report = prepare_dataset([data_dir / "videos" / "d0.mp4"], root,
                             PrepareConfig(model=str(data_dir / "sfm" / "sfm_shape_3448.bin"),
                                           crop_size=crop_size, progress=False))
    assert report.ok == ["d0"]
    manifest = json.loads((root / "manifest.json").read_text())
    for stem in copies:
        for sub, suffix in (("coefficients", ".npz"), ("crops", ".npz"), ("crops", ".mp4")):
            shutil.copy(root / sub / f"d0{suffix}", root / sub / f"{stem}{suffix}")
        manifest["videos"][stem] = manifest["videos"]["d0"]
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def posed_mean_face(model, t: int, jaw: torch.Tensor | None = None):
    """The mean face at ``t`` frames, turned 20° and tilted 10°, as a 512² photo's fit
    (``jaw``: each frame's opening, closed when None): ground truth for the rigs' fits."""
    import math

    from faceanime.coefficients import Coefficients
    from faceanime.geometry.rotation import euler_to_matrix

    rotation = euler_to_matrix(torch.full((t,), math.radians(20.0)),
                               torch.full((t,), math.radians(10.0)), torch.zeros(t))
    return Coefficients(model=model.name, shape=torch.zeros(model.n_shape),
                        expression=torch.zeros(t, model.n_expression),
                        jaw=torch.zeros(t) if jaw is None else jaw, rotation=rotation,
                        translation=torch.tensor([[256.0, 256.0, 0.0]]).expand(t, 3).clone(),
                        scale=torch.full((t,), 1.5), image_size=torch.tensor([512, 512]))


def projected_landmarks(model, coeffs) -> torch.Tensor:
    """``(T, 68, 2)`` the model's projected landmarks at ``coeffs``, NaN where a point has no
    vertex."""
    from faceanime.reconstruction import face_vertices, project_vertices

    ids = model.landmark_indices
    points = project_vertices(coeffs, face_vertices(model, coeffs))[:, ids.clamp_min(0), :2]
    return torch.where((ids >= 0)[None, :, None], points, torch.nan)



def shut_mouth(renderer, source):
    """``source`` (a photo's coefficients) with the jaw shut and the lips' closure at which the
    renderer's mesh closes its middle inner-lip pair (iBUG 63/67; the gap is linear in the
    closure): how a closed driver's reference closes an open photo."""
    from dataclasses import replace

    ids = renderer.mesh.landmark_indices
    top, bottom = ids[62], ids[66]

    def middle(closure: float) -> float:
        posed = renderer._posed(replace(source, jaw=torch.zeros(1),
                                        lips=torch.tensor([closure])))[0]
        return float(posed[top, 1] - posed[bottom, 1])

    c0 = float(source.lips[0])
    shut = c0 + middle(c0) / (middle(c0) - middle(c0 + 1))
    return replace(source, jaw=torch.zeros(1), lips=torch.tensor([shut]))


def photo_lab(image, at: torch.Tensor) -> torch.Tensor:
    """``(3,)`` the median CIE L*a*b* colour of a photo ``(H, W, 3)`` uint8 at pixel positions
    ``at (P, 2)`` (x, y; rounded)."""
    from faceanime.render.paste import rgb_to_lab

    photo = torch.from_numpy(np.asarray(image)).permute(2, 0, 1).float() / 255
    at = at.round().long()
    return rgb_to_lab(photo[None])[0][:, at[:, 1], at[:, 0]].median(-1).values
