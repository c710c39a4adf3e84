"""Checkpoint files shared by the learned models (dynamics, generator): weights as safetensors,
everything else as JSON beside them, and optionally a training state for resuming.

A checkpoint ``NAME`` in a folder is, each file written atomically:

- ``NAME.safetensors``: float32 tensors, metadata ``{"format": <the model's format tag>}``;
- ``NAME.json``: what the model needs besides its weights (configs, statistics, provenance)
  and the SHA-256 of the weights file, checked at load time so that the weights and the JSON
  of two different checkpoints are never combined;
- ``NAME.state.pt`` (training only): optimiser and random-generator states, a ``torch.save`` of
  tensors and numbers read back with ``weights_only=True``, tagged with the same SHA-256.

Training writes ``step_0000500.*`` every so many steps and ``<final>.*`` at the end. A path to
any of the files, or to the folder (its final checkpoint, else its latest step), names one.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from faceanime.errors import ModelFileError
from faceanime.io.atomic import atomic_path
from faceanime.io.digest import file_digest

STEP_PATTERN = re.compile(r"step_(\d+)$")
SUFFIXES = (".safetensors", ".state.pt", ".json")


@dataclass(frozen=True)
class CheckpointKind:
    """What tells one model's checkpoints apart, and how errors name them."""

    format: str
    """Format tag in the weights' metadata and the JSON, e.g. ``faceanime.dynamics/1``."""
    final: str
    """Name of the checkpoint written at the end of training (``dynamics``, ``generator``)."""
    noun: str
    """How messages call it (``dynamics``, ``generator``)."""
    command: str
    """The command that writes one, for the "what to do" of messages."""
    contents: str = "its configs"
    """What the JSON holds, for the "JSON missing" message."""

    @property
    def retrain(self) -> str:
        return f"use a checkpoint written by '{self.command}'"


def write_checkpoint(kind: CheckpointKind, folder: str | os.PathLike, name: str,
                     tensors: dict[str, torch.Tensor], document: dict[str, Any],
                     train_state: dict[str, Any] | None = None) -> Path:
    """Write checkpoint ``name`` into ``folder``: the training state first, then the weights,
    then the JSON, so a JSON on disk always describes complete weights. Returns the weights'
    path. ``document`` gets ``format``, ``weights`` and ``weights_sha256`` added."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / f"{name}.safetensors"
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in tensors.items()}
    with atomic_path(weights) as tmp:
        save_file(tensors, str(tmp), metadata={"format": kind.format})
        digest = file_digest(tmp)
        if train_state is not None:
            # Renamed into place before the weights, which are before the JSON.
            with atomic_path(state_path(weights)) as tmp_state:
                torch.save({**train_state, "weights_sha256": digest}, tmp_state)
    document = {"format": kind.format, **document, "weights": weights.name,
                "weights_sha256": digest}
    with atomic_path(folder / f"{name}.json") as tmp:
        tmp.write_text(json.dumps(document, indent=1) + "\n")
    return weights


def resolve_checkpoint(kind: CheckpointKind, path: str | os.PathLike) -> tuple[Path, Path]:
    """The weights and JSON files a path names (see the module docstring).

    Raises:
        ModelFileError: nothing there, or a folder without checkpoints.
    """
    path = Path(path)
    if path.is_dir():
        if (path / f"{kind.final}.safetensors").is_file():
            path = path / f"{kind.final}.safetensors"
        else:
            steps = sorted((int(m.group(1)), p) for p in path.glob("step_*.safetensors")
                           if (m := STEP_PATTERN.match(p.name.removesuffix(".safetensors"))))
            if not steps:
                raise ModelFileError(
                    f"{path}: no {kind.noun} checkpoint in this folder (expected "
                    f"{kind.final}.safetensors or step_*.safetensors); {kind.retrain}")
            path = steps[-1][1]
    if not path.exists():
        raise ModelFileError(f"{path}: no such checkpoint; {kind.retrain}")
    suffix = next((s for s in SUFFIXES if path.name.endswith(s)), None)
    if suffix is None:
        raise ModelFileError(f"{path}: not a {kind.noun} checkpoint (expected a .safetensors "
                             f"file with its .json beside it); {kind.retrain}")
    name = path.name.removesuffix(suffix)
    return path.with_name(f"{name}.safetensors"), path.with_name(f"{name}.json")


def read_checkpoint(kind: CheckpointKind, path: str | os.PathLike
                    ) -> tuple[Path, dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint's weights and JSON and check that they belong together.

    Returns:
        The weights' path, the tensors, and the JSON document.

    Raises:
        ModelFileError: a file missing, not a checkpoint of this kind, damaged, or from another
            checkpoint; the message names the file and what to do.
    """
    from safetensors import SafetensorError, safe_open

    weights, meta = resolve_checkpoint(kind, path)
    if not weights.is_file():
        raise ModelFileError(f"{weights}: missing; the weights of a {kind.noun} checkpoint sit "
                             f"beside its {meta.name}; copy both files")
    if not meta.is_file():
        raise ModelFileError(f"{meta}: missing; a {kind.noun} checkpoint is {weights.name} plus "
                             f"this JSON ({kind.contents}); copy both files")
    try:
        with safe_open(str(weights), framework="pt") as f:
            fmt = (f.metadata() or {}).get("format")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelFileError(f"{weights}: not a safetensors file ({first}); "
                             f"{kind.retrain}") from exc
    if fmt != kind.format:
        raise ModelFileError(f"{weights}: not a faceanime {kind.noun} checkpoint (format "
                             f"{fmt!r}, expected {kind.format!r}); {kind.retrain}")
    try:
        document = json.loads(meta.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelFileError(f"{meta}: unreadable checkpoint JSON ({exc}); "
                             f"{kind.retrain}") from exc
    if not isinstance(document, dict) or document.get("format") != kind.format:
        raise ModelFileError(f"{meta}: not a faceanime {kind.noun} checkpoint JSON; "
                             f"{kind.retrain}")
    if document.get("weights_sha256") != file_digest(weights):
        raise ModelFileError(f"{weights}: these weights are not the ones {meta.name} was written "
                             "with (checksum differs); use the two files of one checkpoint")
    return weights, tensors, document


def state_path(weights: Path) -> Path:
    """The training-state file beside a checkpoint's weights file."""
    return weights.with_name(weights.name.removesuffix(".safetensors") + ".state.pt")


def random_states(generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    """The random states a training run draws from (its own ``generator`` for data, torch's
    global one for dropout and initialisation, CUDA's on a GPU), for the training state."""
    states = {"generator": generator.get_state(), "torch_rng": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda_rng"] = torch.cuda.get_rng_state(device)
    return states


def restore_random_states(states: dict[str, Any], generator: torch.Generator,
                          device: torch.device) -> None:
    """Put back what :func:`random_states` saved, so a resumed run repeats the uninterrupted
    one."""
    generator.set_state(states["generator"])
    torch.set_rng_state(states["torch_rng"])
    if device.type == "cuda" and "cuda_rng" in states:
        torch.cuda.set_rng_state(states["cuda_rng"], device)


def read_train_state(weights: Path) -> dict[str, Any]:
    """The optimiser and random states saved with the training checkpoint whose weights are
    ``weights``.

    Raises:
        ModelFileError: no state file (a final checkpoint copied without it), a damaged one, or
            one written with other weights.
    """
    path = state_path(weights)
    if not path.is_file():
        raise ModelFileError(f"{path}: missing; resuming needs the .state.pt written with "
                             "the checkpoint (training's own output folder has it)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged pickle
        raise ModelFileError(f"{path}: unreadable training state ({type(exc).__name__}); "
                             "resume from another checkpoint") from exc
    if not isinstance(state, dict) or state.get("weights_sha256") != file_digest(weights):
        raise ModelFileError(f"{path}: this training state belongs to another checkpoint "
                             f"than {weights.name}; resume from a complete checkpoint")
    return state


def load_matching(module: torch.nn.Module, tensors: dict[str, torch.Tensor], path: Path,
                  what: str, retrain: str) -> None:
    """Load ``tensors`` into ``module``, or raise naming the first tensor that does not fit the
    network the checkpoint's JSON describes.

    Raises:
        ModelFileError: a missing, unexpected or wrong-shaped tensor.
    """
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    wrong = [k for k in expected if k in got and expected[k] != got[k]]
    if missing or extra or wrong:
        if wrong:
            detail = f"{wrong[0]} is {got[wrong[0]]}, the config needs {expected[wrong[0]]}"
        else:
            detail = f"missing {missing[:2]}, unexpected {extra[:2]}"
        raise ModelFileError(f"{path}: {what} of the wrong shape for the network its JSON "
                             f"describes ({detail}); {retrain}")
    module.load_state_dict(tensors)


__all__ = ["CheckpointKind", "load_matching", "random_states", "read_checkpoint",
           "read_train_state", "resolve_checkpoint", "restore_random_states", "state_path",
           "write_checkpoint"]
