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

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from faceanime.dynamics.checkpoint import file_digest
from faceanime.errors import FaceAnimeError, ModelFileError
from faceanime.io.atomic import atomic_path
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

FORMAT = "faceanime.pgfg/1"
FINAL = "generator"
STEP_PATTERN = re.compile(r"step_(\d+)$")
RETRAIN = "use a checkpoint written by 'faceanime train generator'"


def _load_matching(module: torch.nn.Module, tensors: dict[str, torch.Tensor], path: Path,
                   what: str) -> None:
    """Load ``tensors`` into ``module``, or say which tensor does not fit the config."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    wrong = [k for k in expected if k in got and expected[k] != got[k]]
    if missing or extra or wrong:
        if wrong:
            detail = f"{wrong[0]} is {got[wrong[0]]}, the config needs {expected[wrong[0]]}"
        else:
            detail = f"missing {missing[:2]}, unexpected {extra[:2]}"
        raise ModelFileError(f"{path}: {what} weights do not fit the network its JSON describes "
                             f"({detail}); {RETRAIN}")
    module.load_state_dict(tensors)


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

    @property
    def state_path(self) -> Path:
        return self.path.with_name(self.path.name.removesuffix(".safetensors") + ".state.pt")

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
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / f"{name}.safetensors"

    def flat(prefix: str, module: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {f"{prefix}.{k}": v.detach().to("cpu", torch.float32).contiguous()
                for k, v in module.state_dict().items()}

    tensors = flat("generator", ema if ema is not None else generator)
    if ema is not None:
        tensors.update(flat("raw", generator))
    disc_config = discriminator.config if discriminator is not None else DiscriminatorConfig()
    if discriminator is not None:
        tensors.update(flat("discriminator", discriminator))
    with atomic_path(weights) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT})
        digest = file_digest(tmp)
        if train_state is not None:
            with atomic_path(folder / f"{name}.state.pt") as tmp_state:
                torch.save({**train_state, "weights_sha256": digest}, tmp_state)
    document = {"format": FORMAT, "generator": to_json(generator.config),
                "discriminator": to_json(disc_config), "loss": to_json(loss),
                "train": to_json(train), **info, "weights": weights.name,
                "weights_sha256": digest}
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
                raise ModelFileError(f"{path}: no generator checkpoint in this folder (expected "
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
        raise ModelFileError(f"{path}: not a generator checkpoint (expected a .safetensors file "
                             f"with its .json beside it); {RETRAIN}")
    return path.with_name(f"{name}.safetensors"), path.with_name(f"{name}.json")


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint and check its files belong together.

    Raises:
        ModelFileError: a file missing, not a generator checkpoint, damaged, or from another
            checkpoint; the message names the file and what to do.
    """
    from safetensors import SafetensorError, safe_open

    weights, meta = resolve_checkpoint(path)
    if not weights.is_file():
        raise ModelFileError(f"{weights}: missing; the weights of a generator checkpoint sit "
                             f"beside its {meta.name}; copy both files")
    if not meta.is_file():
        raise ModelFileError(f"{meta}: missing; a generator checkpoint is {weights.name} plus "
                             "this JSON (its configs); copy both files")
    try:
        with safe_open(str(weights), framework="pt") as f:
            fmt = (f.metadata() or {}).get("format")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelFileError(f"{weights}: not a safetensors file ({first}); {RETRAIN}") from exc
    if fmt != FORMAT:
        raise ModelFileError(f"{weights}: not a faceanime generator checkpoint (format "
                             f"{fmt!r}, expected {FORMAT!r}); {RETRAIN}")
    try:
        document = json.loads(meta.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelFileError(f"{meta}: unreadable checkpoint JSON ({exc}); {RETRAIN}") from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ModelFileError(f"{meta}: not a faceanime generator checkpoint JSON; {RETRAIN}")
    if document.get("weights_sha256") != file_digest(weights):
        raise ModelFileError(f"{weights}: these weights are not the ones {meta.name} was written "
                             "with (checksum differs); use the two files of one checkpoint")
    keys = ("generator", "discriminator", "loss", "train")
    try:
        info = {k: v for k, v in document.items() if k not in keys}
        return Checkpoint(path=weights,
                          generator=from_json(GeneratorConfig, document["generator"]),
                          discriminator=from_json(DiscriminatorConfig, document["discriminator"]),
                          loss=from_json(LossConfig, document["loss"]),
                          train=from_json(TrainConfig, document["train"]), tensors=tensors,
                          info=info)
    except (KeyError, TypeError, FaceAnimeError) as exc:
        raise ModelFileError(f"{meta}: malformed checkpoint JSON ({exc}); {RETRAIN}") from exc


def load_train_state(checkpoint: Checkpoint) -> dict[str, Any]:
    """The optimiser and generator states saved with a training checkpoint.

    Raises:
        ModelFileError: no state file, a damaged one, or one of another checkpoint.
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


__all__ = ["FINAL", "FORMAT", "Checkpoint", "load_checkpoint", "load_train_state",
           "resolve_checkpoint", "save_checkpoint"]
