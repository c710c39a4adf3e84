"""`faceanime prepare --ray` on a local Ray of 2 CPUs over the shared videos: a worker killed
mid-task is retried, and the folder (and its tar shards) equal a local `prepare` byte for byte;
a second run skips every finished video; without Ray, `--ray` is a one-line error."""

from __future__ import annotations

import itertools
import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import assert_one_line_error, run_cli

from faceanime.dataset import PrepareConfig, load_manifest, prepare_dataset
from faceanime.dataset.shards import load_index, write_shards
from faceanime.io import iter_video_frames, read_video_info, write_video

CROP = 64
# The Ray tests are marked slow: starting Ray and the first, killed run take ~15 s together on a
# 2-core CPU, the killed-driver test ~10 s more.
# The title Ray gives a worker process while it runs a video's task (ray::<function name>).
TASK_TITLE = "ray::prepare_video_task"


@pytest.fixture(scope="module")
def clips(data_dir, tmp_path_factory) -> Path:
    """d0 (78 frames, linked), the first 40 frames of d3 and d18, a faceless noise video and a
    corrupt file: three videos to prepare and two to skip, as a local run does."""
    folder = tmp_path_factory.mktemp("clips")
    (folder / "d0.mp4").symlink_to(data_dir / "videos" / "d0.mp4")
    for name in ("d3", "d18"):
        source = data_dir / "videos" / f"{name}.mp4"
        write_video(folder / f"{name}_40.mp4", itertools.islice(iter_video_frames(source), 40),
                    fps=read_video_info(source).fps)
    noise = np.random.default_rng(1).integers(0, 256, (30, 96, 96, 3), dtype=np.uint8)
    write_video(folder / "blank.mp4", iter(noise), fps=25.0)
    (folder / "broken.mp4").write_bytes(np.random.default_rng(0).bytes(20_000))
    return folder


@pytest.fixture(scope="module")
def sfm_path(data_dir) -> str:
    return str(data_dir / "sfm" / "sfm_shape_3448.bin")


def config(sfm_path: str, **changes) -> PrepareConfig:
    return PrepareConfig(model=sfm_path, crop_size=CROP, progress=False, **changes)


@pytest.fixture(scope="module")
def local(clips, sfm_path, tmp_path_factory) -> tuple[Path, float]:
    """A local prepare of the clips, on one torch thread as each Ray worker runs (Ray sets
    OMP_NUM_THREADS to a task's 1 CPU): (dataset folder, seconds)."""
    root = tmp_path_factory.mktemp("local") / "dataset"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        report = prepare_dataset([clips], root, config(sfm_path))
    finally:
        torch.set_num_threads(threads)
    assert sorted(report.ok) == ["d0", "d18_40", "d3_40"]
    return root, report.seconds


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray of 2 CPUs for this module; `prepare --ray` joins it (it is already
    initialised) and leaves it running; shut down at the end even when a test fails."""
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install "
                                            "'faceanime[ray]'")
    start = time.monotonic()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield time.monotonic() - start
    finally:
        ray.shutdown()


class WorkerKiller(threading.Thread):
    """Kills (SIGKILL) the first worker process seen running a video's task: a real worker
    death in the middle of a video, which Ray must notice and retry."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.killed: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        psutil = pytest.importorskip("psutil")
        while not self.stop.is_set():
            for proc in psutil.process_iter(["pid", "cmdline"]):
                cmdline = proc.info["cmdline"] or []
                if cmdline and cmdline[0].startswith(TASK_TITLE):
                    os.kill(proc.info["pid"], signal.SIGKILL)
                    self.killed.append(proc.info["pid"])
                    return
            time.sleep(0.05)


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def on_ray(ray_cluster, clips, sfm_path, tmp_path_factory) -> tuple[Path, list[int], float]:
    """`faceanime prepare --ray` with one worker killed mid-video: (folder, killed PIDs, s)."""
    from faceanime.cli import main

    root = tmp_path_factory.mktemp("ray") / "dataset"
    killer = WorkerKiller()
    killer.start()
    start = time.monotonic()
    try:
        status = main(["prepare", str(clips), "-o", str(root), "--model", sfm_path,
                       "--crop-size", str(CROP), "--no-progress", "--ray"])
    finally:
        killer.stop.set()
        killer.join()
    assert status == 0
    return root, killer.killed, time.monotonic() - start


@pytest.mark.slow
def test_ray_prepare_survives_a_killed_worker_and_equals_local(on_ray, local):
    ray_root, killed, ray_seconds = on_ray
    local_root, local_seconds = local
    assert len(killed) == 1, "no worker was seen running a video, so none was killed"
    print(f"\nlocal prepare {local_seconds:.1f} s; on Ray (joined, one worker killed) "
          f"{ray_seconds:.1f} s")
    # Every file byte for byte: coefficients, crop videos and crop arrays, and the manifest
    # (same entries, skip reasons included); no leftover temporary file, nothing extra.
    assert files(ray_root) == files(local_root)
    manifest = load_manifest(ray_root)
    assert sorted(manifest.videos) == ["blank", "broken", "d0", "d18_40", "d3_40"]
    assert sorted(s for s, e in manifest.videos.items() if e.ok) == ["d0", "d18_40", "d3_40"]
    assert manifest.videos["blank"].reason.startswith("no face")
    assert manifest.videos["broken"].reason.startswith("unreadable")
    # The decoded coefficient arrays too (the bytes above imply it; this names what differs).
    for stem in ("d0", "d18_40", "d3_40"):
        with np.load(ray_root / "coefficients" / f"{stem}.npz") as a, \
                np.load(local_root / "coefficients" / f"{stem}.npz") as b:
            assert sorted(a.files) == sorted(b.files)
            for key in a.files:
                np.testing.assert_array_equal(a[key], b[key], err_msg=f"{stem}: {key}")


@pytest.mark.slow
def test_ray_shards_equal_local_shards(on_ray, local, tmp_path):
    ray_index = write_shards([on_ray[0]], tmp_path / "ray", progress=False)
    local_index = write_shards([local[0]], tmp_path / "local", progress=False)
    stems = load_index(tmp_path / "ray").stems
    assert sorted(stems) == ["d0", "d18_40", "d3_40"] and len(set(stems)) == len(stems)
    assert ray_index.stems == local_index.stems
    for a, b in zip(ray_index.shards, local_index.shards, strict=True):
        assert (tmp_path / "ray" / a.name).read_bytes() == \
            (tmp_path / "local" / b.name).read_bytes()


@pytest.mark.slow
def test_second_ray_run_skips_every_finished_video(on_ray, clips, sfm_path):
    root = on_ray[0]
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    report = prepare_dataset([clips], root, config(sfm_path, ray="local"))
    assert report.actions == {"blank": "skipped before", "broken": "skipped before",
                              "d0": "done before", "d18_40": "done before",
                              "d3_40": "done before"}
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()
            if p.name != ".lock"} == {p: t for p, t in before.items() if p.name != ".lock"}
    assert json.loads((root / "manifest.json").read_text())["videos"]["d0"]["status"] == "ok"


@pytest.mark.slow
def test_ray_prepare_redoes_a_video_whose_files_were_lost(on_ray, local, clips, sfm_path):
    """Resume after a failure: a video whose coefficients are gone (as after a driver killed
    while writing) is redone on Ray, the others kept; the result is still the local one."""
    root = on_ray[0]
    (root / "coefficients" / "d18_40.npz").unlink()
    report = prepare_dataset([clips], root, config(sfm_path, ray="local"))
    assert report.actions["d18_40"] == "prepared"
    assert report.actions["d0"] == report.actions["d3_40"] == "done before"
    assert files(root) == files(local[0])


@pytest.mark.slow
def test_killed_driver_resumes_without_redoing_finished_videos(ray_cluster, local, clips,
                                                                sfm_path, tmp_path):
    """A driver killed (SIGKILL) once some videos are in: the next run keeps those (not even
    re-read) and prepares the rest, ending with the local run's folder."""
    import subprocess
    import sys

    import ray

    root = tmp_path / "dataset"
    # The driver joins this module's Ray by its address, as it would join a cluster's.
    address = ray.get_runtime_context().gcs_address
    driver = subprocess.Popen(
        [sys.executable, "-m", "faceanime", "prepare", str(clips), "-o", str(root), "--model",
         sfm_path, "--crop-size", str(CROP), "--no-progress", "--ray", address],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finished: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and driver.poll() is None:
            try:
                videos = json.loads((root / "manifest.json").read_text())["videos"]
            except (OSError, ValueError, KeyError):
                videos = {}
            finished = sorted(s for s, e in videos.items() if e["status"] == "ok")
            if finished:
                break
            time.sleep(0.02)
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.wait()
    assert driver.returncode == -signal.SIGKILL, "the driver ended before it could be killed"
    assert 1 <= len(finished) < 3, finished
    kept = {s: (root / "coefficients" / f"{s}.npz").stat().st_mtime_ns for s in finished}
    report = prepare_dataset([clips], root, config(sfm_path, ray="local"))
    for stem in finished:
        assert report.actions[stem] == "done before"
        assert (root / "coefficients" / f"{stem}.npz").stat().st_mtime_ns == kept[stem]
    assert sorted(s for s, a in report.actions.items() if a == "prepared") == sorted(
        {"d0", "d18_40", "d3_40"} - set(finished))
    assert files(root) == files(local[0])


def test_ray_missing_is_a_one_line_error(clips, sfm_path, tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without Ray sees
    status, _, err = run_cli(capsys, "prepare", str(clips / "d0.mp4"), "-o",
                             str(tmp_path / "ds"), "--model", sfm_path, "--ray")
    assert_one_line_error(status, err, "--ray needs Ray", "pip install 'faceanime[ray]'")
    assert not (tmp_path / "ds").exists()


@pytest.mark.slow
def test_each_job_is_a_cpu_task_then_a_device_task(ray_cluster):
    """run_tasks with ``first``: each job's first half runs as its own task and hands its
    result to the second half, which the driver's callback receives."""
    from faceanime.dataset.on_ray import LOCAL, run_tasks

    # Defined here, so that Ray sends them by value (the tests folder is not importable on a
    # worker).
    def _track_half(x: int, shared: int) -> dict:
        import os

        return {"value": x * shared, "pid": os.getpid()}

    def _fit_half(tracked: dict, x: int, shared: int) -> dict:
        return {"value": tracked["value"] + x, "first_pid": tracked["pid"]}

    got: dict[str, dict] = {}
    run_tasks(LOCAL, _fit_half, [(str(x), (x,)) for x in range(5)], 10,
              lambda key, result: got.__setitem__(key, result),
              {str(x): str(x) for x in range(5)}, first=_track_half)
    assert {k: v["value"] for k, v in got.items()} == {str(x): 11 * x for x in range(5)}
    # The first halves ran in Ray's workers, not in this process.
    assert all(v["first_pid"] != os.getpid() for v in got.values())
