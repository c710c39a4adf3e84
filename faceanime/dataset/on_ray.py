"""``faceanime prepare --ray``: run per-video jobs as Ray tasks and stream their results back.

:func:`faceanime.dataset.prepare._prepare_on_ray` gives this module the task body
(``prepare_video_task``: the local run's own per-video code, into a scratch folder on the worker,
returning the files' bytes and the manifest numbers) and a callback that writes each result into
the dataset, atomically, with the manifest updated as a local run does. So the folder, its
resuming and its merging are a local run's (docs/scale.md, "Preparing on Ray"); this module only
knows Ray: connecting, submitting a bounded number of tasks, ``ray.wait`` for the next result,
retries of tasks whose worker died, and cancelling what is under way when the run stops.

Ray is imported only here, and this module only when ``--ray`` is given; it does not import the
preparation code (the task body arrives as an argument), so no two modules import each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from faceanime.errors import BackendUnavailableError, FaceAnimeError, MediaError

# The value of PrepareConfig.ray (and of a bare --ray) that starts or joins a Ray on this machine.
LOCAL = "local"
RAY_HINT = "pip install 'faceanime[ray]'"
# Runs of a task whose worker died before giving up (Ray's own default is 3 as well).
MAX_RETRIES = 3
# Tasks submitted per CPU of the cluster: enough to keep every worker busy while the driver
# writes results, few enough that finished results waiting in the object store stay small and
# that an interrupted run has little under way.
IN_FLIGHT_PER_CPU = 2


def import_ray() -> Any:
    """The ``ray`` module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise BackendUnavailableError(
            f"--ray needs Ray, which is not installed here: {RAY_HINT}") from exc
    return ray


def connect(address: str) -> bool:
    """Join Ray at ``address`` (:data:`LOCAL`: start or join one on this machine) unless this
    process is connected already; returns whether this call connected (and so should
    disconnect at the end)."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    try:
        if address == LOCAL:
            ray.init(include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = "a local Ray" if address == LOCAL else f"the Ray cluster at {address}"
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BackendUnavailableError(
            f"cannot start or join {where} ({first}); check the address ('ray status' on the "
            "head node) or run without --ray") from exc
    return True


def run_tasks(address: str, body: Callable[..., dict[str, Any]],
              jobs: Iterable[tuple[str, tuple[Any, ...]]], shared: Any,
              done: Callable[[str, dict[str, Any]], None], names: Mapping[str, str],
              gpus: int = 0, first: Callable[..., Any] | None = None) -> None:
    """Run ``body(*args, shared)`` as a Ray task for each ``(key, args)`` of ``jobs`` and call
    ``done(key, result)`` on this process as each result arrives, in the order they finish.
    With ``first``, each job is two tasks: ``first(*args, shared)`` on a CPU worker (1 CPU, no
    GPU), then ``body(first's result, *args, shared)`` with ``gpus`` GPUs; the result passes
    from one worker to the other through Ray's object store, never through this process, and
    a GPU is held only for the second half.

    Args:
        address: :data:`LOCAL` or a Ray cluster address.
        body: the task; ``body.__name__`` becomes the task's name (its worker's process title
            is ``ray::NAME`` while it runs).
        jobs: drawn lazily, at most :data:`IN_FLIGHT_PER_CPU` per cluster CPU ahead.
        shared: the last argument of every task, put once into the object store.
        done: the driver's handling of a result (writing files, the manifest).
        names: key -> what to call the job in an error (the video's path).
        gpus: GPUs each ``body`` task asks for (0 or 1).
        first: the CPU half of each job, or None.

    Raises:
        BackendUnavailableError: Ray is not installed, or cannot be started or joined.
        MediaError: a task's worker died more than :data:`MAX_RETRIES` times.
        FaceAnimeError: a task's typed error (e.g. the model file missing on a worker), as the
            task raised it; any other error of a task stops the run, as a bug does locally.
    """
    started = connect(address)
    ray = import_ray()
    pending: dict[Any, str] = {}
    try:
        task = ray.remote(body).options(num_cpus=1, num_gpus=gpus, max_retries=MAX_RETRIES)
        before = None if first is None else ray.remote(first).options(
            num_cpus=1, num_gpus=0, max_retries=MAX_RETRIES)
        shared_ref = ray.put(shared)
        limit = max(2, IN_FLIGHT_PER_CPU * int(ray.cluster_resources().get("CPU", 1)))
        todo = iter(jobs)

        def submit() -> None:
            for key, args in todo:
                head = () if before is None else (before.remote(*args, shared_ref),)
                pending[task.remote(*head, *args, shared_ref)] = key
                if len(pending) >= limit:
                    return

        submit()
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            key = pending.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:
                # The task raised. As in a local run that stops the run; a typed error (one
                # that concerns the run, not the video) keeps its one-line message.
                cause = getattr(exc, "cause", None)
                if isinstance(cause, FaceAnimeError):
                    raise cause from None
                raise
            except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                    ray.exceptions.OutOfMemoryError) as exc:
                raise MediaError(
                    f"{names[key]}: the Ray worker preparing it died on each of its "
                    f"{MAX_RETRIES + 1} tries ({type(exc).__name__}); run again to resume, or "
                    "leave the video out"
                ) from exc
            done(key, result)
            submit()
    finally:
        for ref in pending:  # stopped early: end the work under way, the next run redoes it
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()
