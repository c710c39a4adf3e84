"""faceanime.parallel: ordered thread maps and background processes."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import torch

from faceanime.errors import FaceNotFoundError
from faceanime.parallel import MAX_WORKERS, Background, default_workers, ordered_map

needs_fork = pytest.mark.skipif(not hasattr(os, "fork") or not os.uname().sysname == "Linux",
                                reason="background processes are forked on Linux only")


# --- ordered_map -------------------------------------------------------------------------------


def _slow_square(x: int) -> int:
    # Later items finish first: the order must come from the map, not from completion.
    time.sleep(0.002 * (10 - x % 10))
    return x * x


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_ordered_map_keeps_the_order(workers):
    assert list(ordered_map(_slow_square, range(25), workers)) == [x * x for x in range(25)]


def test_ordered_map_runs_at_once_and_bounds_what_it_takes_ahead():
    pulled = []
    running, most = [0], [0]
    lock = threading.Lock()

    def items():
        for i in range(40):
            pulled.append(i)
            yield i

    def work(x):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        return x

    results = ordered_map(work, items(), workers=2, ahead=3)
    assert next(results) == 0
    # One being yielded plus at most `ahead` submitted beyond it.
    assert len(pulled) <= 5
    assert list(results) == list(range(1, 40))
    assert most[0] == 2  # two calls really ran at the same time


def test_ordered_map_workers_use_one_torch_thread_and_leave_the_caller_alone():
    before = torch.get_num_threads()
    seen = list(ordered_map(lambda _: torch.get_num_threads(), range(6), workers=2))
    assert seen == [1] * 6
    assert torch.get_num_threads() == before


def test_ordered_map_raises_where_the_failing_result_belongs():
    def work(x):
        if x == 3:
            raise ValueError("item 3 is bad")
        return x

    got = []
    with pytest.raises(ValueError, match="item 3 is bad"):
        for value in ordered_map(work, range(10), workers=2):
            got.append(value)
    assert got == [0, 1, 2]


def test_ordered_map_closed_early_starts_nothing_more():
    started = []

    def work(x):
        started.append(x)
        time.sleep(0.005)
        return x

    results = ordered_map(work, range(100), workers=2, ahead=2)
    assert next(results) == 0
    results.close()
    count = len(started)
    time.sleep(0.05)
    assert len(started) == count < 10


def test_ordered_map_shares_out_torch_threads():
    seen = list(ordered_map(lambda _: torch.get_num_threads(), range(4), workers=2,
                            torch_threads=3))
    assert seen == [3] * 4


def test_default_workers():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert default_workers("cpu") == 2
        torch.set_num_threads(16)  # a worker holds a batch in memory: a few at most
        assert default_workers("cpu") == MAX_WORKERS < 16
    finally:
        torch.set_num_threads(before)
    assert default_workers("cuda") == 1


# --- Background ------------------------------------------------------------------------------


def _pid_and_square(x: int) -> tuple[int, int]:
    return os.getpid(), x * x


def _no_face(path: str) -> None:
    raise FaceNotFoundError(f"{path}: no face found")


def _die() -> None:
    os._exit(3)


def _sleep_then_write(path: str) -> None:
    time.sleep(30)
    with open(path, "w") as f:
        f.write("finished")


@needs_fork
def test_background_runs_in_another_process():
    with Background(_pid_and_square, 12) as job:
        pid, value = job.result()
    assert value == 144
    assert pid != os.getpid()


@needs_fork
def test_background_reraises_the_childs_error_with_its_type_and_message():
    with Background(_no_face, "clip.mp4") as job, \
            pytest.raises(FaceNotFoundError, match=r"clip\.mp4: no face found"):
        job.result()


@needs_fork
def test_background_says_when_the_child_died():
    with Background(_die) as job, pytest.raises(RuntimeError, match=r"_die died \(exit code 3\)"):
        job.result()


@needs_fork
def test_leaving_the_block_stops_the_child(tmp_path):
    marker = tmp_path / "marker"
    job = Background(_sleep_then_write, str(marker))
    pid = job._process.pid
    started = time.perf_counter()
    with pytest.raises(KeyError), job:
        raise KeyError("an error elsewhere")
    assert time.perf_counter() - started < 10
    with pytest.raises(ProcessLookupError):  # terminated and reaped
        os.kill(pid, 0)
    assert not marker.exists()


def _nested(pid_file: str, marker: str) -> None:
    with Background(_sleep_then_write, marker) as inner:
        with open(pid_file, "w") as f:
            f.write(str(inner._process.pid))
        time.sleep(30)


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return any(line.split()[1:2] == ["Z"] for line in f if line.startswith("State:"))
    except FileNotFoundError:
        return True


@needs_fork
def test_stopping_a_child_stops_its_own_background_children(tmp_path):
    pid_file, marker = tmp_path / "inner.pid", tmp_path / "marker"
    job = Background(_nested, str(pid_file), str(marker))
    for _ in range(100):
        if pid_file.exists() and pid_file.read_text():
            break
        time.sleep(0.05)
    inner = int(pid_file.read_text())
    assert not _gone(inner)
    job.stop()
    for _ in range(100):
        if _gone(inner):
            break
        time.sleep(0.05)
    assert _gone(inner)
    assert not marker.exists()


def _deaf_big_result() -> bytes:
    # Deaf to SIGTERM (as when the signal's exception is swallowed inside a finalizer), and a
    # result larger than a pipe holds: it blocks on sending until someone reads or closes.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return b"x" * 300_000


def _deaf_forever() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(0.1)


@needs_fork
def test_stop_ends_a_child_blocked_on_sending_its_result():
    job = Background(_deaf_big_result)
    time.sleep(0.5)  # it has finished and waits for the pipe to drain
    started = time.perf_counter()
    job.stop(timeout=30)
    assert time.perf_counter() - started < 5  # ended by the closed pipe, not the timeout


@needs_fork
def test_stop_kills_a_child_that_ignores_the_request():
    job = Background(_deaf_forever)
    pid = job._process.pid
    time.sleep(0.2)
    started = time.perf_counter()
    job.stop(timeout=0.5)
    assert time.perf_counter() - started < 5
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def _nap_then_square(x: int) -> int:
    time.sleep(0.5)
    return x * x


@needs_fork
def test_ready_says_when_the_result_is_there():
    with Background(_nap_then_square, 7) as job:
        assert not job.ready()
        assert job.ready(timeout=10)
        assert job.result() == 49
