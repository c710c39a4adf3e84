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

import os
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
from faceanime.io.checkpoint import (
    CheckpointKind,
    load_matching,
    read_checkpoint,
    read_train_state,
    write_checkpoint,
)
from faceanime.io.checkpoint import resolve_checkpoint as _resolve

KIND = CheckpointKind(format="faceanime.dynamics/1", final="dynamics", noun="dynamics",
                      command="faceanime train dynamics",
                      contents="config and normalisation")
FORMAT, FINAL, RETRAIN = KIND.format, KIND.final, KIND.retrain


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

    def build_model(self, device: torch.device | str | None = None) -> DynamicsModel:
        """The network with these weights, in eval mode.

        Raises:
            ModelFileError: the weights do not fit the network the JSON describes.
        """
        model = DynamicsModel(self.config, self.normalizer)
        load_matching(model, self.state_dict, self.path, "weights", RETRAIN)
        return model.to(device).eval()


def save_checkpoint(folder: str | os.PathLike, name: str, model: DynamicsModel,
                    normalizer: Normalizer, loss: LossConfig, train: TrainConfig,
                    info: dict[str, Any], train_state: dict[str, Any] | None = None) -> Path:
    """Write checkpoint ``name`` into ``folder`` (:func:`faceanime.io.checkpoint.write_checkpoint`);
    returns the weights' path."""
    document = {"config": to_json(model.config), "loss": to_json(loss), "train": to_json(train),
                "normalizer": normalizer.to_json(), **info}
    return write_checkpoint(KIND, folder, name, model.state_dict(), document, train_state)


def resolve_checkpoint(path: str | os.PathLike) -> tuple[Path, Path]:
    """The weights and JSON files a path names (see the module docstring).

    Raises:
        ModelFileError: nothing there, or a folder without checkpoints.
    """
    return _resolve(KIND, path)


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint and check its files belong together.

    Raises:
        ModelFileError: a file missing, not a checkpoint, damaged, or from another checkpoint;
            the message names the file and what to do.
    """
    weights, tensors, document = read_checkpoint(KIND, path)
    try:
        info = {k: v for k, v in document.items()
                if k not in ("config", "loss", "train", "normalizer")}
        return Checkpoint(path=weights, config=from_json(DynamicsConfig, document["config"]),
                          loss=from_json(LossConfig, document["loss"]),
                          train=from_json(TrainConfig, document["train"]),
                          normalizer=Normalizer.from_json(document["normalizer"]),
                          state_dict=tensors, info=info)
    except (KeyError, TypeError, FaceAnimeError) as exc:
        raise ModelFileError(f"{weights.with_suffix('.json')}: malformed checkpoint JSON "
                             f"({exc}); {RETRAIN}") from exc


def load_train_state(checkpoint: Checkpoint) -> dict[str, Any]:
    """The optimiser and generator states saved with a training checkpoint.

    Raises:
        ModelFileError: no state file (a final checkpoint copied without it), or a damaged one.
    """
    return read_train_state(checkpoint.path)
