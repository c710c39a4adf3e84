"""Data-parallel training under ``torchrun``: which process this is, the process group, and the
share of each global batch that this process computes (docs/scale.md).

``torchrun`` starts one process per GPU (or per CPU share) and tells each, through its
environment, who it is: ``RANK`` (0 .. N-1 over all nodes), ``LOCAL_RANK`` (its GPU on this node),
``WORLD_SIZE`` (N) and ``MASTER_ADDR``/``MASTER_PORT`` (where the processes meet). A plain
``python`` or ``faceanime`` run has none of these: it is rank 0 of 1, and nothing here starts,
waits or communicates.

The trainers' contract, kept by :class:`Ranks`:

- ``--batch`` is the *global* batch. Every rank draws the whole global batch from the same seeded
  generator (drawing is cheap: indices and augmentation parameters) and computes only its rows,
  ``share(batch)``, a contiguous block of ``batch / N`` of them; the random streams therefore stay
  the same on every rank and equal to a one-process run's.
- Losses are means over the batch, so the per-rank mean times DDP's average over ranks equals the
  global mean only when every share has the same size: the global batch must divide by N.
  Losses that divide by a batch *sum* (the dynamics' relative losses) take that sum over all
  ranks with :meth:`Ranks.sum`.
- Writing (logs, plots, checkpoints, validation, the EMA, progress bars) is rank 0's.

The backend is gloo on the CPU and NCCL on CUDA; ``FACEANIME_DIST_BACKEND`` overrides it (e.g.
gloo on GPUs whose NCCL fails).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch

from faceanime.errors import BackendUnavailableError, InputError

ENV_BACKEND = "FACEANIME_DIST_BACKEND"
BACKENDS = ("gloo", "nccl", "mpi")


@dataclass(frozen=True)
class Ranks:
    """This process's place in a data-parallel run (rank 0 of 1 in a plain process).

    Attributes:
        rank: global rank, 0 .. ``world_size - 1``.
        world_size: processes in the run (over all nodes).
        local_rank: rank on this node (the CUDA device a GPU rank uses).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        """More than one process: DDP, collectives and rank-0-only writing apply."""
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Rank 0, the one that logs, validates and writes checkpoints."""
        return self.rank == 0

    def per_rank(self, batch: int, flag: str = "--batch") -> int:
        """Rows of a global batch of ``batch`` each rank computes.

        Raises:
            InputError: ``batch`` does not divide by the world size (unequal shares would weigh
                the ranks' samples unequally in DDP's average of their gradients).
        """
        if batch % self.world_size:
            lower = batch - batch % self.world_size
            raise InputError(
                f"{flag} {batch} is the global batch and must divide by the {self.world_size} "
                f"processes (equal shares make DDP's averaged gradient the whole batch's); use "
                f"{flag} {lower or self.world_size} or {lower + self.world_size}")
        return batch // self.world_size

    def share(self, batch: int) -> slice:
        """This rank's rows of a global batch of ``batch`` (a contiguous block)."""
        size = self.per_rank(batch)
        return slice(self.rank * size, (self.rank + 1) * size)

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` summed over the ranks, as a new tensor outside autograd (the input itself
        in one process)."""
        if not self.distributed:
            return values
        total = values.detach().clone()
        torch.distributed.all_reduce(total)
        return total

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` averaged over the ranks, outside autograd (what rank 0 logs of per-rank
        losses)."""
        return self.sum(values) / self.world_size if self.distributed else values

    def barrier(self) -> None:
        """Wait until every rank is here (nothing in one process)."""
        if self.distributed:
            torch.distributed.barrier()

    def device(self, device: torch.device) -> torch.device:
        """The device this rank trains on: with several ranks, ``cuda`` is ``cuda:LOCAL_RANK``.

        Raises:
            InputError: a numbered CUDA device with several ranks (each rank takes its own).
        """
        if not self.distributed or device.type != "cuda":
            return device
        if device.index is not None:
            raise InputError(f"--device {device}: under torchrun each process takes the GPU of "
                             "its LOCAL_RANK; pass --device cuda (choose GPUs with "
                             "CUDA_VISIBLE_DEVICES)")
        return torch.device("cuda", self.local_rank)

    def wrap(self, module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """``module`` as DistributedDataParallel (the module itself in one process).

        Buffers are not broadcast at each forward: no network here keeps running statistics
        (no BatchNorm), and their fixed buffers are computed alike on every rank.
        """
        if not self.distributed:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        # Newer torch renames the switch (and syncs once at construction, harmless here).
        import inspect

        sync = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(
            DistributedDataParallel).parameters else "broadcast_buffers"
        return DistributedDataParallel(module, device_ids=ids, **{sync: False})


SINGLE = Ranks()
"""A plain process: rank 0 of 1."""


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The network inside a DistributedDataParallel wrapper (or ``module`` itself): what
    checkpoints, the EMA and validation use, so that weights never carry a ``module.`` prefix."""
    from torch.nn.parallel import DistributedDataParallel

    return module.module if isinstance(module, DistributedDataParallel) else module


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError as exc:
        raise InputError(f"${name}={text!r}: not an integer; launch with torchrun") from exc


def from_environment(env: Mapping[str, str] | None = None) -> Ranks:
    """This process's ranks as ``torchrun`` set them (rank 0 of 1 without torchrun). Reads only;
    starts nothing.

    Raises:
        InputError: inconsistent or non-numeric ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``.
    """
    env = os.environ if env is None else env
    world = _int(env, "WORLD_SIZE", 1)
    rank = _int(env, "RANK", 0)
    local = _int(env, "LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world or local < 0:
        raise InputError(f"$RANK={rank}, $LOCAL_RANK={local}, $WORLD_SIZE={world}: not a "
                         "process of a run; launch with torchrun")
    return Ranks(rank, world, local)


def backend_for(device: torch.device, env: Mapping[str, str] | None = None) -> str:
    """The collective backend for ``device``: gloo on the CPU, NCCL on CUDA, or
    ``$FACEANIME_DIST_BACKEND``.

    Raises:
        InputError: an unknown backend name, or NCCL for CPU tensors.
        BackendUnavailableError: this torch build lacks the backend.
    """
    env = os.environ if env is None else env
    name = (env.get(ENV_BACKEND) or ("nccl" if device.type == "cuda" else "gloo")).lower()
    if name not in BACKENDS:
        raise InputError(f"${ENV_BACKEND}={name}: unknown backend; use {', '.join(BACKENDS)}")
    if name == "nccl" and device.type != "cuda":
        raise InputError(f"NCCL exchanges CUDA tensors only, the device is {device}: use "
                         f"--device cuda, or {ENV_BACKEND}=gloo")
    if not torch.distributed.is_available():
        raise BackendUnavailableError("this torch build has no torch.distributed; install a "
                                      "standard build to train with torchrun")
    available = {"gloo": torch.distributed.is_gloo_available,
                 "nccl": torch.distributed.is_nccl_available,
                 "mpi": torch.distributed.is_mpi_available}[name]()
    if not available:
        hint = (f"set {ENV_BACKEND}=gloo (slower on GPUs)" if name != "gloo"
                else "install a standard torch build")
        raise BackendUnavailableError(f"the {name} backend is not in this torch build "
                                      f"({torch.__version__}); {hint}")
    return name


@contextlib.contextmanager
def process_group(ranks: Ranks, device: torch.device) -> Iterator[None]:
    """The process group of a run with several ranks, joined inside and left after (nothing in
    one process, nor when the caller has already joined one, which it then keeps).

    Raises:
        InputError: no rendezvous address in the environment (not started by torchrun).
        BackendUnavailableError: see :func:`backend_for`.
    """
    if not ranks.distributed or torch.distributed.is_initialized():
        yield
        return
    backend = backend_for(device)
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise InputError(f"$WORLD_SIZE={ranks.world_size} but ${' and $'.join(missing)} unset: "
                         "start distributed runs with torchrun (docs/scale.md)")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.distributed.init_process_group(backend, init_method="env://", rank=ranks.rank,
                                         world_size=ranks.world_size)
    try:
        yield
    finally:
        torch.distributed.destroy_process_group()


__all__ = ["BACKENDS", "ENV_BACKEND", "SINGLE", "Ranks", "backend_for", "from_environment",
           "process_group", "unwrap"]
