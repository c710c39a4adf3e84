"""Generator checkpoints: weights as safetensors, everything else as JSON beside them (the
layout of :mod:`faceanime.dynamics.checkpoint`).

A checkpoint ``NAME`` in a folder is:

- ``NAME.safetensors``: tensors ``generator.*`` (the EMA weights when training kept an average,
  what inference uses), ``raw.*`` (the trained weights, when they differ) and
  ``discriminator.*``; metadata ``{"format": FORMAT}``;
- ``NAME.json``: the configs (generator, discriminator, losses, training), the dataset's model,
  the train/validation videos, the step, the last validation numbers and the weights' SHA-256;
- ``NAME.state.pt`` (training only): optimisers and random-generator states for ``--resume``,
  read back with ``weights_only=True``.

Training writes ``step_0000500.*`` every ``checkpoint_every`` steps and ``generator.*`` at the
end; a folder names its ``generator.*``, else its latest step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from faceanime.errors import FaceAnimeError, ModelFileError
from faceanime.io.checkpoint import (
    CheckpointKind,
    load_matching,
    read_checkpoint,
    read_train_state,
    write_checkpoint,
)
from faceanime.io.checkpoint import resolve_checkpoint as _resolve
from faceanime.pgfg.config import (
    DiscriminatorConfig,
    GeneratorConfig,
    LossConfig,
    TrainConfig,
    from_json,
    prior_channels,
    to_json,
)
from faceanime.pgfg.networks import Discriminator, Generator

KIND = CheckpointKind(format="faceanime.pgfg/1", final="generator", noun="generator",
                      command="faceanime train generator")
FORMAT, FINAL, RETRAIN = KIND.format, KIND.final, KIND.retrain


def _load_matching(module: torch.nn.Module, tensors: dict[str, torch.Tensor], path: Path,
                   what: str) -> None:
    load_matching(module, tensors, path, f"{what} weights", RETRAIN)


@dataclass
class Checkpoint:
    """A generator checkpoint as read from disk."""

    path: Path
    generator: GeneratorConfig
    discriminator: DiscriminatorConfig
    loss: LossConfig
    train: TrainConfig
    tensors: dict[str, torch.Tensor]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def step(self) -> int:
        return int(self.info.get("step", 0))

    def _part(self, prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) + 1:]: v for k, v in self.tensors.items()
                if k.startswith(prefix + ".")}

    def build_generator(self, device: torch.device | str | None = None, ema: bool = True
                        ) -> Generator:
        """The generator (EMA weights, or the raw trained ones with ``ema=False``), eval mode.

        Raises:
            ModelFileError: the weights do not fit the config.
        """
        model = Generator(self.generator)
        raw = self._part("raw")
        _load_matching(model, raw if (raw and not ema) else self._part("generator"), self.path,
                       "generator")
        return model.to(device).eval()

    def build_discriminator(self, device: torch.device | str | None = None) -> Discriminator:
        model = Discriminator(self.discriminator, prior_channels(self.generator))
        _load_matching(model, self._part("discriminator"), self.path, "discriminator")
        return model.to(device)


def save_checkpoint(folder: str | os.PathLike, name: str, generator: Generator,
                    ema: Generator | None, discriminator: Discriminator | None,
                    loss: LossConfig, train: TrainConfig, info: dict[str, Any],
                    train_state: dict[str, Any] | None = None) -> Path:
    """Write checkpoint ``name`` (state file, then weights, then JSON: a JSON on disk always
    describes complete weights); returns the weights' path."""
    def flat(prefix: str, module: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {f"{prefix}.{k}": v for k, v in module.state_dict().items()}

    tensors = flat("generator", ema if ema is not None else generator)
    if ema is not None:
        tensors.update(flat("raw", generator))
    disc_config = discriminator.config if discriminator is not None else DiscriminatorConfig()
    if discriminator is not None:
        tensors.update(flat("discriminator", discriminator))
    document = {"generator": to_json(generator.config), "discriminator": to_json(disc_config),
                "loss": to_json(loss), "train": to_json(train), **info}
    return write_checkpoint(KIND, folder, name, tensors, document, train_state)


def resolve_checkpoint(path: str | os.PathLike) -> tuple[Path, Path]:
    """The weights and JSON files a path names (see the module docstring).

    Raises:
        ModelFileError: nothing there, or a folder without checkpoints.
    """
    return _resolve(KIND, path)


def load_generator(path: str | os.PathLike, device: torch.device | str | None = None,
                   ema: bool = True) -> Generator:
    """A trained generator (the EMA weights when the checkpoint has them), in eval mode, from
    a checkpoint folder, its ``.safetensors`` or its ``.json``.

    Raises:
        ModelFileError: not a generator checkpoint, damaged, or weights that do not fit the
            config stored beside them.
    """
    return load_checkpoint(path).build_generator(device, ema=ema)


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint and check its files belong together.

    Raises:
        ModelFileError: a file missing, not a generator checkpoint, damaged, or from another
            checkpoint; the message names the file and what to do.
    """
    weights, tensors, document = read_checkpoint(KIND, path)
    keys = ("generator", "discriminator", "loss", "train")
    try:
        info = {k: v for k, v in document.items() if k not in keys}
        generator = dict(document["generator"])
        # Written before the dense start: the flow started from the prior's points, if any.
        generator.setdefault("flow_init", "sparse" if generator.get("prior_flow", True)
                             else "none")
        return Checkpoint(path=weights,
                          generator=from_json(GeneratorConfig, generator),
                          discriminator=from_json(DiscriminatorConfig, document["discriminator"]),
                          loss=from_json(LossConfig, document["loss"]),
                          train=from_json(TrainConfig, document["train"]), tensors=tensors,
                          info=info)
    except (KeyError, TypeError, FaceAnimeError) as exc:
        raise ModelFileError(f"{weights.with_suffix('.json')}: malformed checkpoint JSON "
                             f"({exc}); {RETRAIN}") from exc


def load_train_state(checkpoint: Checkpoint) -> dict[str, Any]:
    """The optimiser and generator states saved with a training checkpoint.

    Raises:
        ModelFileError: no state file, a damaged one, or one of another checkpoint.
    """
    return read_train_state(checkpoint.path)


__all__ = ["FINAL", "FORMAT", "Checkpoint", "load_checkpoint", "load_train_state",
           "resolve_checkpoint", "save_checkpoint"]
