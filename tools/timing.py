"""Timing shared by the benchmarks in tools/ (imported as ``timing``: a script's own folder is on
``sys.path``)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def median_seconds(fn: Callable[[], object], repeat: int, device: torch.device | str = "cpu",
                   clock: Callable[[], float] = time.perf_counter) -> float:
    """Median over ``repeat`` timed calls of ``fn`` after one untimed warm-up call, in seconds.

    CUDA work is synchronised before each clock reading, so queued kernels count. ``clock`` may
    be ``time.process_time`` to measure CPU time (the cost on a shared machine, single-threaded).
    """
    cuda = torch.device(device).type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    fn()
    sync()
    times = []
    for _ in range(max(1, repeat)):
        t0 = clock()
        fn()
        sync()
        times.append(clock() - t0)
    return sorted(times)[len(times) // 2]
