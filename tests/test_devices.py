"""--device auto|cpu|cuda|cuda:N: resolved and checked before any work, said in the summary."""

from __future__ import annotations

import pytest
import torch
from helpers import run_cli

from faceanime.devices import resolve_device
from faceanime.errors import InputError

HAS_CUDA = torch.cuda.is_available()


def test_auto_is_cuda_where_there_is_one():
    assert resolve_device("auto") == torch.device("cuda" if HAS_CUDA else "cpu")
    assert resolve_device(None) == torch.device("cpu") == resolve_device("CPU")


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA: asking for it is not an error")
def test_cuda_where_there_is_none_is_one_clear_error(tmp_path, capsys):
    with pytest.raises(InputError, match=r"--device cuda: CUDA is not available here .*; use "
                                         r"--device cpu or auto"):
        resolve_device("cuda")
    with pytest.raises(SystemExit) as exit_info:
        run_cli(capsys, "demo", "--device", "cuda", "-o", str(tmp_path / "x.mp4"))
    assert exit_info.value.code == 2
    assert "CUDA is not available here" in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_cuda_index_beyond_the_devices():
    with pytest.raises(InputError, match="CUDA device"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


@pytest.mark.parametrize("name", ["gpu", "mps:0x", "tpu"])
def test_unknown_devices(name):
    with pytest.raises(InputError, match=f"--device {name}: "):
        resolve_device(name)


def test_summary_says_where_it_ran(tmp_path, capsys):
    status, _, err = run_cli(capsys, "demo", "--template", "nod", "--device", "auto",
                             "-o", str(tmp_path / "x.mp4"), "--no-progress")
    assert status == 0, err
    where = "cuda" if HAS_CUDA else "cpu"
    assert f"frames/s on {where})" in err.splitlines()[0]
