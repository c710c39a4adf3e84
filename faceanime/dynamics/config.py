"""Settings of the 3D dynamics predictor (3DDP): the network, its losses and its training.

Each field's comment is its help text. All three dataclasses are written into every checkpoint's
JSON, so a checkpoint always says what built it (docs/dynamics.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from faceanime.errors import InputError

# The per-frame coefficient vector's groups, in the order of Coefficients.to_tensor().
GROUPS = ("expression", "jaw", "rotation", "translation", "scale")
LEVELS = ("none", "relative", "absolute")


@dataclass
class DynamicsConfig:
    """The network and what it predicts."""

    hidden: int = 64  # LSTM hidden size
    layers: int = 1  # stacked LSTM layers
    dropout: float = 0.0  # dropout between LSTM layers and before the output head
    coefficients: tuple[str, ...] = GROUPS  # groups to animate; the others are held still
    levels: str = "none"  # also feed the frame itself: none, relative (to frame 0), absolute
    local_scale: bool = True  # measure changes in the observed frames' own motion scale
    linear_skip: bool = True  # add a linear map from the inputs to the predicted change
    velocity_prior: float = 0.6  # the linear map starts as change = this * last change
    timer_frames: float = 8.0  # time constant of the "frames left" timer input exp(-(T-t)/tau)
    target_power: float = 0.5  # target weight alpha_t = ((t+1)/T)^power in target-driven mode
    monotone_target: bool = True  # target-driven steps never move away from the target
    bound_margin: float = 0.1  # expression and jaw stay within the training range +- this share

    def __post_init__(self) -> None:
        self.coefficients = tuple(self.coefficients)
        unknown = [g for g in self.coefficients if g not in GROUPS]
        if unknown or not self.coefficients:
            raise InputError(f"unknown coefficient group(s) {unknown}: choose among "
                             f"{', '.join(GROUPS)}")
        if self.hidden < 1 or self.layers < 1 or not 0 <= self.dropout < 1:
            raise InputError("dynamics config: hidden and layers must be >= 1, dropout in [0, 1)")
        if self.levels not in LEVELS:
            raise InputError(f"unknown levels {self.levels!r}: choose among {', '.join(LEVELS)}")
        if self.timer_frames <= 0 or self.target_power <= 0:
            raise InputError("dynamics config: timer_frames and target_power must be > 0")


@dataclass
class LossConfig:
    """Weights of the training losses (docs/dynamics.md, "Losses")."""

    coefficient: float = 1.0  # L2 of the rolled-out coefficients (normalised units)
    vertex: float = 1.0  # L2 of the rolled-out posed vertices, in vertex_unit^2
    nll: float = 0.2  # Gaussian NLL of the next step (teaches the noise scale for sampling)
    relative: bool = True  # divide each step's errors by those of holding the last frame
    vertex_unit: float = 5.0  # mm: vertex errors are divided by this (when not relative)
    vertex_count: int = 128  # vertices in the loss subset (landmarks, then evenly spread)

    def __post_init__(self) -> None:
        if min(self.coefficient, self.vertex, self.nll) < 0 or self.vertex_unit <= 0:
            raise InputError("loss weights must be >= 0 and vertex_unit > 0")
        if self.vertex_count < 1:
            raise InputError("vertex_count must be >= 1")


@dataclass
class TrainConfig:
    """How a model is trained (the flags of ``faceanime train dynamics``)."""

    steps: int = 1500  # optimiser steps in all (a resumed run continues up to this)
    batch: int = 32  # windows per step, the global batch: torchrun's N processes take B/N each
    window: int = 24  # frames per training window (observed + rolled out)
    observe: int = 8  # most observed frames K; each batch draws K in [1, observe]
    lr: float = 3e-3  # Adam learning rate (cosine-decayed to 5 % over the run)
    weight_decay: float = 0.0  # AdamW weight decay
    grad_clip: float = 1.0  # gradient norm clip
    target_fraction: float = 0.5  # share of windows trained in target-driven mode
    balanced: bool = True  # draw every training video equally often (else by length)
    mirror: bool = True  # augment: flip half the windows left-right (symmetric expression bases)
    reverse: bool = True  # augment: play half the windows backwards
    speed: float = 2.0  # augment: resample windows at speeds in [1/speed, speed] (1 = off)
    seed: int = 0  # seeds the weights, the windows and dropout
    device: str = "cpu"  # cpu, cuda, cuda:N or auto (CUDA when available, else cpu)
    threads: int = 1  # torch CPU threads while training (0: torch's default; see docs/dynamics.md)
    checkpoint_every: int = 500  # write a checkpoint every this many steps (and at the end)
    val_every: int = 100  # validate every this many steps
    val_videos: tuple[str, ...] = ()  # held-out video stems; default: val_fraction of them
    val_fraction: float = 0.2  # share of videos held out when val_videos is empty (>= 1 video)
    model: str | None = None  # morphable model name/path; default: the dataset manifest's
    shuffle_buffer: int = 4096  # streaming from shards: windows in the shuffle buffer
    stream_windows: int = 16  # streaming: windows drawn from each video read (with --balanced)
    stats_videos: int = 256  # streaming: first training videos the feature statistics come from
    stream_val_videos: int = 16  # streaming: most videos val_fraction holds out (held in memory)
    workers: int = 0  # streaming: loader worker processes per training process (0: none)
    progress: bool = True  # show a progress bar

    def __post_init__(self) -> None:
        self.val_videos = tuple(self.val_videos)
        if min(self.shuffle_buffer, self.stream_windows, self.stats_videos,
               self.stream_val_videos) < 1 or self.workers < 0:
            raise InputError("shuffle_buffer, stream_windows, stats_videos and "
                             "stream_val_videos must be >= 1, workers >= 0")
        if self.steps < 1 or self.batch < 1 or self.checkpoint_every < 1 or self.val_every < 1:
            raise InputError("steps, batch, checkpoint_every and val_every must be >= 1")
        if self.observe < 1 or self.window < self.observe + 1:
            raise InputError(f"window ({self.window}) must exceed observe ({self.observe}) "
                             "and observe must be >= 1")
        if self.threads < 0:
            raise InputError(f"threads must be >= 0, got {self.threads}")
        if self.speed < 1:
            raise InputError(f"speed must be >= 1 (a range [1/speed, speed]), got {self.speed}")
        if not 0 <= self.target_fraction <= 1 or not 0 <= self.val_fraction < 1:
            raise InputError("target_fraction must be in [0, 1] and val_fraction in [0, 1)")


def to_json(config: Any) -> dict[str, Any]:
    """A config dataclass as JSON-ready values (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}


def from_json(cls: type, values: dict[str, Any]):
    """Build ``cls`` from :func:`to_json` output; keys it does not know are an error (a newer
    checkpoint), missing keys take their defaults (an older one)."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise InputError(f"{cls.__name__}: unknown field(s) {unknown}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


__all__ = ["GROUPS", "DynamicsConfig", "LossConfig", "TrainConfig", "from_json", "to_json"]
