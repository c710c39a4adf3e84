"""Which torch device a run uses: ``auto`` (CUDA when this machine has it, else the CPU),
``cpu``, ``cuda`` or ``cuda:N``, checked before any work so that a missing GPU is one clear line,
not a stack trace from deep inside the first kernel."""

from __future__ import annotations

import argparse

import torch

from faceanime.errors import InputError

DEVICE_HELP = "auto (CUDA when available, else the CPU), cpu, cuda or cuda:N"


def resolve_device(name: str | torch.device | None) -> torch.device:
    """The device ``name`` means here: None and ``"cpu"`` are the CPU, ``"auto"`` is CUDA when
    available (else the CPU), ``"cuda"``/``"cuda:N"`` must exist.

    Raises:
        InputError: an unknown name, or CUDA asked for where there is none (or not that many).
    """
    if name is None:
        return torch.device("cpu")
    text = str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError as exc:
        raise InputError(f"--device {name}: unknown device; use {DEVICE_HELP}") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch is a CPU-only build" if torch.version.cuda is None
                   else "no CUDA device or driver is visible")
            raise InputError(f"--device {name}: CUDA is not available here ({why}); use "
                             "--device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"--device {name}: only {torch.cuda.device_count()} CUDA "
                             "device(s) here")
    elif device.type != "cpu":
        raise InputError(f"--device {name}: unsupported device type; use {DEVICE_HELP}")
    return device


def device_arg(text: str) -> str:
    """argparse ``type=`` for ``--device``: the resolved device as a string (``"cpu"``,
    ``"cuda"``, ``"cuda:1"``); a bad one is a command-line error."""
    try:
        return str(resolve_device(text))
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix(f"--device {text}: ")) from exc
