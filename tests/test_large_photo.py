"""A photo far larger than any video: reduced on reading (a JPEG decoded reduced), the output
capped at 2048 px unless --size asks otherwise, said in the summary, and peak memory that does
not follow the photo's size."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from helpers import run_cli
from PIL import Image

from faceanime.coefficients import Coefficients
from faceanime.io import iter_video_frames, read_image
from faceanime.samples import motion_template


@pytest.fixture(scope="module")
def big(data_dir, tmp_path_factory):
    """s1 enlarged to 6000², as a JPEG and as the same picture at 2048², and a 12-frame
    driver."""
    folder = tmp_path_factory.mktemp("big")
    photo = Image.open(data_dir / "faces" / "s1.jpg").convert("RGB")
    large = photo.resize((6000, 6000), Image.BICUBIC)
    large.save(folder / "big.jpg", quality=90)
    large.resize((2048, 2048), Image.LANCZOS).save(folder / "same_2048.jpg", quality=90)
    Coefficients.load(motion_template("nod").path).frames(slice(0, 12)).save(folder / "nod.npz")
    return folder


def test_reading_reduced(big):
    small = read_image(big / "big.jpg", max_side=2048)
    assert small.shape == (2048, 2048, 3) and small.flags.writeable  # torch.from_numpy-safe
    reference = read_image(big / "same_2048.jpg")
    # the same picture as reducing the full decode (JPEG noise aside)
    assert np.abs(small.astype(int) - reference.astype(int)).mean() < 3


def test_output_capped_and_said(big, tmp_path, capsys):
    status, _, err = run_cli(capsys, "retarget", "--source", str(big / "big.jpg"), "--driving",
                             str(big / "nod.npz"), "-o", str(tmp_path / "o.mp4"),
                             "--no-progress")
    assert status == 0, err
    assert "the 6000×6000 photo worked on at 2048×2048 (--size to change)" in err
    frame = next(iter(iter_video_frames(tmp_path / "o.mp4")))
    assert frame.shape == (2048, 2048, 3)
    status, _, err = run_cli(capsys, "retarget", "--source", str(big / "big.jpg"), "--driving",
                             str(big / "nod.npz"), "-o", str(tmp_path / "p.mp4"),
                             "--no-progress", "--size", "640")
    assert status == 0 and "worked on" not in err  # asked for: nothing to say
    assert next(iter(iter_video_frames(tmp_path / "p.mp4"))).shape == (640, 640, 3)


PEAK = """
import json, resource, sys
from faceanime.cli import main
status = main(sys.argv[1:])
print(json.dumps({"status": status,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


@pytest.mark.slow
def test_peak_memory_does_not_follow_the_photo(big, tmp_path):
    peaks = {}
    for name in ("big.jpg", "same_2048.jpg"):
        run = subprocess.run(
            [sys.executable, "-c", PEAK, "retarget", "--source", str(big / name), "--driving",
             str(big / "nod.npz"), "-o", str(tmp_path / f"{name}.mp4"), "--quiet"],
            capture_output=True, text=True, check=True)
        result = json.loads(run.stdout.strip().splitlines()[-1])
        assert result["status"] == 0
        peaks[name] = result["peak_mb"]
    # 8.6x the pixels; measured +95 MB over a ~2.6 GB peak (the reduced JPEG decode)
    assert peaks["big.jpg"] - peaks["same_2048.jpg"] < 200, peaks
