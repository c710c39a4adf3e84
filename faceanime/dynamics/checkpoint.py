"""Dynamics checkpoints: weights as safetensors, everything else as JSON beside them.

A checkpoint ``NAME`` in a folder is three files, each written atomically:

- ``NAME.safetensors``: the network's weights (float32), metadata ``{"format": FORMAT}``;
- ``NAME.json``: the configs that built it (network, losses, training), the feature
  normaliser, the morphable model's name and sizes, the train/validation videos, the step, the
  last validation numbers, and the SHA-256 of the weights file, checked at load time so that a
  weights file and a JSON of two different checkpoints are never combined;
- ``NAME.state.pt`` (training only): optimiser and random-generator states for ``--resume``,
  a ``torch.save`` of tensors and numbers read back with ``weights_only=True``.

Training writes ``step_0000500.*`` every ``checkpoint_every`` steps and ``dynamics.*`` at the end.
A path to any of the files, or to the folder (its ``dynamics.*``, else its latest step), names
a checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from faceanime.dynamics.config import (
    DynamicsConfig,
    LossConfig,
    TrainConfig,
    from_json,
    to_json,
)
from faceanime.dynamics.features import Normalizer
from faceanime.dynamics.model import DynamicsModel
from faceanime.errors import FaceAnimeError, ModelFileError
from faceanime.io.atomic import atomic_path

FORMAT = "faceanime.dynamics/1"
FINAL = "dynamics"
STEP_PATTERN = re.compile(r"step_(\d+)$")
RETRAIN = "use a checkpoint written by 'faceanime train dynamics'"


@dataclass
class Checkpoint:
    """A checkpoint as read from disk (the network is built by :meth:`build_model`).

    Attributes:
        path: the weights file.
        config, loss, train: the configs that built it.
        normalizer: feature statistics.
        state_dict: the weights.
        info: the rest of the JSON: ``model`` (morphable model name), ``n_expression``,
            ``n_shape``, ``camera``, ``step``, ``videos`` (train/val), ``metrics``...
    """

    path: Path
    config: DynamicsConfig
    loss: LossConfig
    train: TrainConfig
    normalizer: Normalizer
    state_dict: dict[str, torch.Tensor]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def step(self) -> int:
        return int(self.info.get("step", 0))

    @property
    def state_path(self) -> Path:
        return self.path.with_name(self.path.name.removesuffix(".safetensors") + ".state.pt")

    def build_model(self, device: torch.device | str | None = None) -> DynamicsModel:
        """The network with these weights, in eval mode.

        Raises:
            ModelFileError: the weights do not fit the network the JSON describes.
        """
        model = DynamicsModel(self.config, self.normalizer)
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in self.state_dict.items()}
        missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        wrong = [k for k in expected if k in got and expected[k] != got[k]]
        if missing or extra or wrong:
            if wrong:
                what = f"{wrong[0]} is {got[wrong[0]]}, the config needs {expected[wrong[0]]}"
            else:
                what = f"missing {missing[:2]}, unexpected {extra[:2]}"
            raise ModelFileError(f"{self.path}: weights of the wrong shape for the network its "
                                 f"JSON describes ({what}); {RETRAIN}")
        model.load_state_dict(self.state_dict)
        return model.to(device).eval()


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(folder: str | os.PathLike, name: str, model: DynamicsModel,
                    normalizer: Normalizer, loss: LossConfig, train: TrainConfig,
                    info: dict[str, Any], train_state: dict[str, Any] | None = None) -> Path:
    """Write checkpoint ``name`` into ``folder`` (the state file first, the JSON last, so a
    JSON on disk always describes complete weights); returns the weights' path."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / f"{name}.safetensors"
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous()
               for k, v in model.state_dict().items()}
    with atomic_path(weights) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT})
        digest = file_digest(tmp)
        if train_state is not None:
            # Renamed into place before the weights, which are before the JSON.
            with atomic_path(folder / f"{name}.state.pt") as tmp_state:
                torch.save({**train_state, "weights_sha256": digest}, tmp_state)
    document = {"format": FORMAT, "config": to_json(model.config), "loss": to_json(loss),
                "train": to_json(train), "normalizer": normalizer.to_json(), **info,
                "weights": weights.name, "weights_sha256": digest}
    with atomic_path(folder / f"{name}.json") as tmp:
        tmp.write_text(json.dumps(document, indent=1) + "\n")
    return weights


def resolve_checkpoint(path: str | os.PathLike) -> tuple[Path, Path]:
    """The weights and JSON files a path names (see the module docstring).

    Raises:
        ModelFileError: nothing there, or a folder without checkpoints.
    """
    path = Path(path)
    if path.is_dir():
        if (path / f"{FINAL}.safetensors").is_file():
            path = path / f"{FINAL}.safetensors"
        else:
            steps = sorted((int(m.group(1)), p) for p in path.glob("step_*.safetensors")
                           if (m := STEP_PATTERN.match(p.name.removesuffix(".safetensors"))))
            if not steps:
                raise ModelFileError(f"{path}: no dynamics checkpoint in this folder (expected "
                                     f"{FINAL}.safetensors or step_*.safetensors); {RETRAIN}")
            path = steps[-1][1]
    if not path.exists():
        raise ModelFileError(f"{path}: no such checkpoint; {RETRAIN}")
    name = path.name
    for suffix in (".safetensors", ".state.pt", ".json"):
        if name.endswith(suffix):
            name = name.removesuffix(suffix)
            break
    else:
        raise ModelFileError(f"{path}: not a dynamics checkpoint (expected a .safetensors file "
                             f"with its .json beside it); {RETRAIN}")
    return path.with_name(f"{name}.safetensors"), path.with_name(f"{name}.json")


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint and check its files belong together.

    Raises:
        ModelFileError: a file missing, not a checkpoint, damaged, or from another checkpoint;
            the message names the file and what to do.
    """
    from safetensors import SafetensorError, safe_open

    weights, meta = resolve_checkpoint(path)
    if not weights.is_file():
        raise ModelFileError(f"{weights}: missing; the weights of a dynamics checkpoint sit "
                             f"beside its {meta.name}; copy both files")
    if not meta.is_file():
        raise ModelFileError(f"{meta}: missing; a dynamics checkpoint is {weights.name} plus "
                             f"this JSON (config and normalisation); copy both files")
    try:
        with safe_open(str(weights), framework="pt") as f:
            fmt = (f.metadata() or {}).get("format")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelFileError(f"{weights}: not a safetensors file ({first}); {RETRAIN}") from exc
    if fmt != FORMAT:
        raise ModelFileError(f"{weights}: not a faceanime dynamics checkpoint (format "
                             f"{fmt!r}, expected {FORMAT!r}); {RETRAIN}")
    try:
        document = json.loads(meta.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelFileError(f"{meta}: unreadable checkpoint JSON ({exc}); {RETRAIN}") from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ModelFileError(f"{meta}: not a faceanime dynamics checkpoint JSON; {RETRAIN}")
    if document.get("weights_sha256") != file_digest(weights):
        raise ModelFileError(f"{weights}: these weights are not the ones {meta.name} was written "
                             "with (checksum differs); use the two files of one checkpoint")
    try:
        info = {k: v for k, v in document.items()
                if k not in ("config", "loss", "train", "normalizer")}
        return Checkpoint(path=weights, config=from_json(DynamicsConfig, document["config"]),
                          loss=from_json(LossConfig, document["loss"]),
                          train=from_json(TrainConfig, document["train"]),
                          normalizer=Normalizer.from_json(document["normalizer"]),
                          state_dict=tensors, info=info)
    except (KeyError, TypeError, FaceAnimeError) as exc:
        raise ModelFileError(f"{meta}: malformed checkpoint JSON ({exc}); {RETRAIN}") from exc


def load_train_state(checkpoint: Checkpoint) -> dict[str, Any]:
    """The optimiser and generator states saved with a training checkpoint.

    Raises:
        ModelFileError: no state file (a final checkpoint copied without it), or a damaged one.
    """
    path = checkpoint.state_path
    if not path.is_file():
        raise ModelFileError(f"{path}: missing; resuming needs the .state.pt written with the "
                             "checkpoint (training's own output folder has it)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged pickle
        raise ModelFileError(f"{path}: unreadable training state ({type(exc).__name__}); "
                             "resume from another checkpoint") from exc
    if not isinstance(state, dict) or state.get("weights_sha256") != file_digest(checkpoint.path):
        raise ModelFileError(f"{path}: this training state belongs to another checkpoint than "
                             f"{checkpoint.path.name}; resume from a complete checkpoint")
    return state
