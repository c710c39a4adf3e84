"""Run independent work at once: tensor work on several threads (:func:`ordered_map`), and work
that holds the GIL in a forked process (:class:`Background`).

PyTorch's CPU kernels release the GIL, so threads run them truly in parallel. For the many small
operations of a render (a few hundred per batch, most on tens of thousands of elements) this
beats intra-op parallelism: splitting each small operation over two cores gains little
(measured: 22 -> 21 ms a 512² frame with 1 -> 2 torch threads), while rendering two batches at
once on one thread each gains almost 2x (12 ms a frame). Each worker thread therefore runs its
operations on its own share of the torch threads (one, on two cores); the caller's own thread
settings are left as they were (OpenMP's thread count is a per-thread setting).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import pickle
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")


# Batch-level workers at most: each holds a batch's images and intermediates in memory, and
# beyond a few, intra-op threads inside each worker use further cores as well.
MAX_WORKERS = 4


def default_workers(device: torch.device | str | None = None) -> int:
    """Threads worth using for batch-level parallelism: torch's CPU thread count (the cores it
    would split each operation over), at most :data:`MAX_WORKERS`; 1 on an accelerator (its
    kernels queue on one stream)."""
    if device is not None and torch.device(device).type != "cpu":
        return 1
    return max(1, min(MAX_WORKERS, torch.get_num_threads()))


# Frames a renderer draws at once by default. On the CPU a batch beyond 8 gains nothing and
# holds more memory; a GPU's kernels are launch-bound at 8 (an H200, the warp at 512²: 2.32
# ms a frame at batch 8, 0.68 at 32, docs/performance.md), up to frames of about 1024².
CPU_BATCH, ACCELERATOR_BATCH, ACCELERATOR_BATCH_PIXELS = 8, 32, 1024 * 1024


def default_batch(device: torch.device | str | None, pixels: int) -> int:
    """Frames to render at once on ``device`` for frames of ``pixels`` pixels: 8 on the CPU;
    on an accelerator 32 up to 1024² frames, fewer for larger ones (at least 8)."""
    if device is None or torch.device(device).type == "cpu":
        return CPU_BATCH
    fits = ACCELERATOR_BATCH * ACCELERATOR_BATCH_PIXELS // max(1, pixels)
    return max(CPU_BATCH, min(ACCELERATOR_BATCH, fits))


# Processes a video is tracked in at most, by default: each loads dlib's models (~100 MB) and
# decodes on its own, and parts are at least 100 frames, so few videos use more.
MAX_TRACK_PARTS = 16


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity where the system says, e.g. a job
    scheduler's share), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on every platform
        return max(1, os.cpu_count() or 1)


def default_track_parts() -> int:
    """Parts a driving video is tracked in at once when the job does not say: one per usable
    core (:func:`usable_cores`), at most :data:`MAX_TRACK_PARTS`. Tracking is dlib on the CPU
    and comes before rendering, so the cores are spare then on a GPU host and on a CPU one."""
    return min(MAX_TRACK_PARTS, usable_cores())


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's CPU threads (of this thread) set to ``count`` inside, restored after; 0 leaves
    them unchanged. A training step is hundreds of small operations, for which one thread beat
    two by 3x on a 2-core CPU (tools/bench_dynamics.py)."""
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def ordered_map(function: Callable[[T], R], items: Iterable[T], workers: int = 1,
                ahead: int | None = None, torch_threads: int = 1) -> Iterator[R]:
    """``function(item)`` for each item, computed on ``workers`` threads, yielded in order.

    At most ``ahead`` calls (default ``2 * workers``) are submitted beyond the one being
    yielded, so memory stays bounded however many items there are; with ``workers <= 1`` the
    calls run one by one on the caller's thread. Each worker thread runs torch operations on
    ``torch_threads`` threads of its own. An exception raised by a call is raised where its
    result would have been yielded; closing the iterator early cancels the calls not yet
    started and waits for the running ones.
    """
    if workers <= 1:
        yield from map(function, items)
        return
    ahead = max(1, ahead if ahead is not None else 2 * workers)
    pending: deque[Future[R]] = deque()
    source = iter(items)
    executor = ThreadPoolExecutor(workers, thread_name_prefix="faceanime",
                                  initializer=torch.set_num_threads,
                                  initargs=(max(1, torch_threads),))
    try:
        for item in source:
            pending.append(executor.submit(function, item))
            if len(pending) > ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


class Background(Generic[R]):
    """``function(*args)`` computed in a forked child process while the caller goes on.

    For CPU work that holds the GIL (dlib's landmark tracking holds it throughout), threads
    cannot overlap it with the caller's own work; a process can. The child is forked, so it
    starts at once with the caller's modules and loaded objects (nothing is pickled on the way
    in); its result (or the exception it raised) comes back pickled through a pipe. Where
    ``fork`` is not available (Windows, or where it is unsafe by default: macOS) the call runs
    in the caller's process when :meth:`result` is asked for.

    Keep the child's work free of torch: a forked child must not use the OpenMP thread pool
    its parent has started.

    Use as a context manager: leaving the block before :meth:`result` (an error elsewhere)
    stops the child.
    """

    def __init__(self, function: Callable[..., R], *args) -> None:
        self._call = (function, args)
        self._process = None
        self._receive = None
        if sys.platform.startswith("linux") and "fork" in mp.get_all_start_methods():
            context = mp.get_context("fork")
            self._receive, send = context.Pipe(duplex=False)
            # Not a daemon: a daemonic process may not start processes of its own, and a
            # background job may (tracking in parts inside a background tracking).
            self._process = context.Process(target=_run_child,
                                            args=(send, self._receive, function, args))
            self._process.start()
            send.close()  # the child holds the only writer: its exit ends our reads

    def ready(self, timeout: float = 0.0) -> bool:
        """Whether :meth:`result` would return (or raise) without waiting, after waiting up to
        ``timeout`` seconds for it. Always True where the call runs in this process."""
        if self._process is None:
            return True
        return self._receive.poll(timeout)

    def result(self) -> R:
        """Wait for the call and return its result, or raise the exception it raised."""
        if self._process is None:
            function, args = self._call
            return function(*args)
        try:
            status, value = self._receive.recv()
        except EOFError:
            self._process.join()
            raise RuntimeError(f"the background process computing {_name(self._call[0])} "
                               f"died (exit code {self._process.exitcode})") from None
        finally:
            self._receive.close()
        self._process.join()
        self._process = None
        if status == "error":
            raise value
        return value

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the child if it still runs (nothing to do once :meth:`result` returned): ask
        it to (SIGTERM, which also stops its own background children), and kill it if it has
        not ended within ``timeout`` seconds."""
        if self._process is not None:
            # First stop listening: a child that already finished and waits for a full pipe to
            # drain (a result over 64 KB) then fails its write and ends, whatever it makes of
            # the signal (raised inside a finalizer, the signal's exception is swallowed).
            self._receive.close()
            self._process.terminate()
            self._process.join(timeout)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
            self._process = None

    def __enter__(self) -> Background[R]:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _run_child(send, receive, function: Callable, args: tuple) -> None:
    # The reading end came along with the fork: closed here, the parent's is the only one, so
    # that a write fails (instead of blocking for ever) once the parent stops listening.
    receive.close()
    # Stopped by the parent (SIGTERM): unwind as an exception, so that this child's own
    # background children (context managers on the way out) are stopped too.
    signal.signal(signal.SIGTERM, _raise_exit)
    try:
        message = ("ok", function(*args))
    except BaseException as exc:  # every failure, even an interrupt, goes back to the parent
        message = ("error", exc)
    try:
        try:
            send.send(message)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            send.send(("error", RuntimeError(f"{_name(function)}: {message[1]!r} ({exc})")))
    except OSError:
        pass  # the parent stopped listening: nobody is left to tell
    finally:
        send.close()


def _raise_exit(signum: int, frame) -> None:
    raise SystemExit(128 + signum)


def _name(function: Callable) -> str:
    """A function's name for messages (through ``functools.partial``)."""
    return getattr(function, "__name__", None) or _name(getattr(function, "func", repr))
