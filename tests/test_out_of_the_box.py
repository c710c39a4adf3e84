"""A fresh install: the README's main-job command, the bundled model, sample portrait and motion
templates, with nothing downloaded and no model folder set."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli

from faceanime.coefficients import Coefficients
from faceanime.io import iter_video_frames, read_video_info
from faceanime.morphable import registry, resolve_model
from faceanime.morphable.download import download_sfm
from faceanime.samples import (
    MOTION_TEMPLATES,
    motion_template,
    resolve_driving,
    sample_portrait,
    template_names,
)

ROOT = Path(__file__).resolve().parents[1]
SEARCH_FOLDERS = registry.search_folders  # the real one, bundled folder included


@pytest.fixture
def fresh(isolated_models, data_dir, monkeypatch):
    """A fresh install: no $FACEANIME_MODEL_DIR, an empty cache, an empty working directory,
    and the SFM in the package's model folder as tools/install.sh puts it there (here a stand-in
    folder, filled from the test data the same way: ``model download sfm --bundle --from``)."""
    package = isolated_models / "package_data"
    download_sfm(package / "sfm", progress=False, source_dir=data_dir / "sfm")
    monkeypatch.setattr(registry, "bundled_dir", lambda: package)
    monkeypatch.setattr(registry, "search_folders", SEARCH_FOLDERS)
    return isolated_models / "work"


def n_frames(video: Path) -> int:
    return sum(1 for _ in iter_video_frames(video))


def readme_main_command() -> list[str]:
    """The first command of the README's first code block after "The main job"."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"The main job.*?```bash\n(.*?)```", text, re.S)
    assert block, "README: no code block after 'The main job'"
    line = next(ln for ln in block.group(1).splitlines() if ln.strip())
    return shlex.split(line.split("#")[0])


def test_readme_main_job_runs_as_written(fresh, capsys):
    argv = readme_main_command()
    assert argv[0] == "faceanime"
    assert resolve_model("sfm").path.is_relative_to(registry.bundled_dir())
    status, _, err = run_cli(capsys, *argv[1:])
    assert status == 0, err
    output = fresh / argv[argv.index("-o") + 1]
    talk = Coefficients.load(motion_template("talk").path)
    assert read_video_info(output).fps == pytest.approx(talk.fps)
    assert n_frames(output) == talk.n_frames
    assert list(fresh.iterdir()) == [output]  # nothing else written in the working directory


def test_templates_are_real_motion():
    assert template_names() == ["talk", "nod", "turn", "smile"]
    for template in MOTION_TEMPLATES:
        coeffs = Coefficients.load(template.path)
        assert coeffs.model == "sfm" and coeffs.fps == 30.0
        assert coeffs.landmarks is None and coeffs.mouth is None  # motion only, no images
        assert 100 <= coeffs.n_frames <= 300 and template.path.stat().st_size < 40_000
        # each shows what its name says, more than the others do
        jaw_range = float(np.ptp(coeffs.jaw.numpy()))
        assert jaw_range > 0.04, template.name  # every template talks or smiles (> 2.3 deg)
    turn, nod = (Coefficients.load(motion_template(n).path) for n in ("turn", "nod"))
    yaw = turn.rotation[:, 0, 2].numpy()  # sin(yaw) for a head upright
    assert np.ptp(yaw) > 0.4  # beyond +-12 degrees
    pitch = nod.rotation[:, 1, 2].numpy()
    assert np.ptp(pitch) > np.ptp(Coefficients.load(motion_template("talk").path)
                                  .rotation[:, 1, 2].numpy())
    smile = Coefficients.load(motion_template("smile").path)
    assert smile.expression[:, 3].max() > 0.9  # happiness near the full blendshape


def test_templates_hold_what_a_fit_holds_now():
    """The templates are remade with the fit's every part: besides the expression, jaw, lids
    and pose, the lips' gap and pucker and the brows (raised and drawn in) move in each; files
    made before those parts hold none of them, and a photo driven by ``talk`` kept its brows
    and lips still."""
    for template in MOTION_TEMPLATES:
        coeffs = Coefficients.load(template.path)
        change = (coeffs.brows - coeffs.brows[0]).abs().amax(0)
        assert bool((change[:4] > 0.1).all()) and bool((change[4:] > 0.1).all()), template.name
        assert np.ptp(coeffs.lips.numpy()) > 0.1 and np.ptp(coeffs.pucker.numpy()) > 0.1, \
            template.name


def test_template_names_resolve(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_driving("talk") == motion_template("talk").path
    assert resolve_driving("TALK") == motion_template("talk").path
    assert resolve_driving("talk.mp4") == Path("talk.mp4")  # a file name stays a file name
    (tmp_path / "talk").mkdir()
    assert resolve_driving("talk") == Path("talk")  # something here by that name wins
    assert motion_template("walk") is None


def test_unknown_driver_names_the_templates(sample_fresh_cli):
    status, err = sample_fresh_cli("retarget", "--source", str(sample_portrait()), "--driving",
                                   "tlak", "-o", "x.mp4")
    assert status == 1 and err.count("\n") == 1
    assert "tlak" in err and "talk, nod, turn, smile" in err


@pytest.fixture
def sample_fresh_cli(fresh, capsys):
    def run(*argv: str) -> tuple[int, str]:
        status, _, err = run_cli(capsys, *argv)
        return status, err
    return run


def test_demo_list(sample_fresh_cli, capsys):
    status, _ = sample_fresh_cli("demo", "--list")
    assert status == 0


def test_retarget_by_template_on_a_user_photo(fresh, data_dir, capsys):
    status, _, err = run_cli(capsys, "retarget", "--source", str(data_dir / "faces" / "s1.jpg"),
                             "--driving", "nod", "-o", "s1_nod.mp4", "--no-progress")
    assert status == 0, err
    nod = Coefficients.load(motion_template("nod").path)
    assert n_frames(fresh / "s1_nod.mp4") == nod.n_frames
