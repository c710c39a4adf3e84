"""Settings of the prior-guided face generator (PGFG): networks, losses and training.

Each field's comment is its help text. All of them are written into every checkpoint's JSON, so a
checkpoint always says what built it (docs/pgfg.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from faceanime.dynamics.config import from_json, to_json
from faceanime.errors import InputError

ADVERSARIAL = ("hinge", "wgan-gp", "none")
RESOLUTIONS = (128, 256)
OUTPUTS = ("warp", "residual", "blend", "direct")
FLOW_INITS = ("dense", "sparse", "none")


@dataclass
class GeneratorConfig:
    """The generator: prior encoder E, image encoder, decoder (docs/pgfg.md, "Architecture")."""

    size: int = 128  # crop side in pixels: 128 (the paper's) or 256
    base_channels: int = 16  # channels at full resolution (doubled per level up to max_channels)
    max_channels: int = 128  # channel cap of the deeper levels
    growth: int = 12  # dense-block growth rate (channels each dense layer adds)
    dense_layers: int = 3  # layers per dense block
    levels: int = 4  # downsampling levels (bottleneck at size / 2^levels)
    prior_mask: bool = True  # give E the prior's coverage mask as a fourth channel
    prior_flow: bool = True  # p_t also carries each point's offset to its source position (2 ch)
    predict: str = "warp"  # warp (source warped by a flow, plus a change), residual, blend, direct
    flow_init: str = "dense"  # flow start: dense (exact face flow), sparse (prior points), none

    def __post_init__(self) -> None:
        if self.size not in RESOLUTIONS:
            raise InputError(f"generator size must be one of {RESOLUTIONS}, got {self.size}")
        if min(self.base_channels, self.growth, self.dense_layers, self.levels) < 1:
            raise InputError("generator: base_channels, growth, dense_layers and levels must "
                             "be >= 1")
        if self.size % (2 ** self.levels) or self.size // 2 ** self.levels < 4:
            raise InputError(f"generator: {self.levels} levels leave no bottleneck of >= 4 px "
                             f"at size {self.size}")
        if self.prior_flow and not self.prior_mask:
            raise InputError("generator: prior_flow needs prior_mask (the flow is interpolated "
                             "from the drawn points)")
        if self.flow_init not in FLOW_INITS:
            raise InputError(f"generator flow_init {self.flow_init!r}: choose among "
                             f"{', '.join(FLOW_INITS)}")
        if self.flow_init == "sparse" and not self.prior_flow:
            raise InputError("generator: flow_init 'sparse' needs prior_flow (the offsets the "
                             "sparse start is made from)")
        if self.predict not in OUTPUTS:
            raise InputError(f"generator predict {self.predict!r}: choose among "
                             f"{', '.join(OUTPUTS)}")
        if self.max_channels < self.base_channels:
            raise InputError("generator: max_channels must be >= base_channels")


def prior_channels(config: GeneratorConfig) -> int:
    """Channels of a prior image: RGB, then the coverage mask, then the (x, y) offsets."""
    return 3 + int(config.prior_mask) + 2 * int(config.prior_flow)


@dataclass
class DiscriminatorConfig:
    """The conditional patch discriminator on [p_t, image]."""

    channels: int = 32  # channels of the first layer (doubled per layer up to 8x)
    layers: int = 3  # stride-2 layers (the patch grows with them: 3 layers -> 34 px patches)

    def __post_init__(self) -> None:
        if self.channels < 1 or self.layers < 1:
            raise InputError("discriminator: channels and layers must be >= 1")


@dataclass
class LossConfig:
    """Weights of the generator's losses (docs/pgfg.md, "Losses")."""

    l1: float = 10.0  # L1 pixel loss against the target frame
    adversarial: float = 0.1  # adversarial loss weight (0: no discriminator is trained)
    gan: str = "hinge"  # adversarial loss: hinge or wgan-gp (the paper's) or none
    gp: float = 10.0  # gradient-penalty weight of wgan-gp
    identity: float = 1.0  # identity loss: distance of dlib embeddings, generated vs target
    identity_samples: int = 2  # samples per batch the identity loss sees (0: all; ~60 ms each)
    identity_metric: str = "cosine"  # cosine (1 - cos) or euclidean

    def __post_init__(self) -> None:
        if min(self.l1, self.adversarial, self.gp, self.identity) < 0:
            raise InputError("loss weights must be >= 0")
        if self.gan not in ADVERSARIAL:
            raise InputError(f"unknown adversarial loss {self.gan!r}: choose among "
                             f"{', '.join(ADVERSARIAL)}")
        if self.identity_metric not in ("cosine", "euclidean"):
            raise InputError(f"unknown identity metric {self.identity_metric!r}: cosine or "
                             "euclidean")
        if self.identity_samples < 0:
            raise InputError("identity_samples must be >= 0")

    @property
    def uses_discriminator(self) -> bool:
        return self.adversarial > 0 and self.gan != "none"


@dataclass
class TrainConfig:
    """How a generator is trained (the flags of ``faceanime train generator``)."""

    steps: int = 20000  # optimiser steps in all (a resumed run continues up to this)
    batch: int = 8  # (source, target) pairs per step, the global batch: N processes take B/N each
    lr: float = 2e-4  # Adam learning rate of the generator
    lr_d: float = 2e-4  # Adam learning rate of the discriminator
    beta1: float = 0.5  # Adam beta1 (GAN practice)
    ema: float = 0.999  # decay of the generator's exponential moving average (0: off)
    max_gap: int = 0  # most frames between source and target of a pair (0: any two frames)
    flip: bool = True  # augment: mirror half the pairs left-right (images and priors together)
    jitter: float = 0.1  # augment: brightness/contrast jitter of a pair, +- this share
    stride: int = 4  # sparse prior: keep every stride-th vertex
    radius: float = 1.0  # sparse prior: point radius in crop pixels
    seed: int = 0  # seeds the weights, the pairs and the augmentation
    device: str = "cpu"  # cpu, cuda, cuda:N or auto (CUDA when available, else cpu)
    amp: bool = True  # mixed precision on CUDA (ignored on CPU)
    threads: int = 0  # torch CPU threads while training (0: torch's default)
    checkpoint_every: int = 500  # write a checkpoint every this many steps (and at the end)
    val_every: int = 250  # validate (and draw a sample grid) every this many steps
    val_pairs: int = 16  # held-out pairs per validation (first frame -> evenly spaced frames)
    val_videos: tuple[str, ...] = ()  # held-out video stems; default: val_fraction of them
    val_fraction: float = 0.2  # share of videos held out when val_videos is empty (>= 1 video)
    max_minutes: float = 0.0  # stop (with a final checkpoint) after this many minutes (0: off)
    model: str | None = None  # morphable model name/path; default: the dataset manifest's
    shuffle_buffer: int = 256  # streaming from shards: pairs in the shuffle buffer (~0.2 MB each)
    stream_pairs: int = 8  # streaming: pairs drawn from each video read
    stream_val_videos: int = 16  # streaming: most videos val_fraction holds out (held in memory)
    workers: int = 0  # streaming: loader worker processes per training process (0: none)
    progress: bool = True  # show a progress bar

    def __post_init__(self) -> None:
        self.val_videos = tuple(self.val_videos)
        if min(self.shuffle_buffer, self.stream_pairs, self.stream_val_videos) < 1 \
                or self.workers < 0:
            raise InputError("shuffle_buffer, stream_pairs and stream_val_videos must be >= 1, "
                             "workers >= 0")
        if min(self.steps, self.batch, self.checkpoint_every, self.val_every, self.stride) < 1:
            raise InputError("steps, batch, checkpoint_every, val_every and stride must be >= 1")
        if not 0 <= self.ema < 1 or self.jitter < 0 or self.radius <= 0 or self.max_gap < 0:
            raise InputError("ema must be in [0, 1), jitter >= 0, radius > 0, max_gap >= 0")
        if self.threads < 0 or self.max_minutes < 0 or self.val_pairs < 1:
            raise InputError("threads and max_minutes must be >= 0, val_pairs >= 1")
        if not 0 <= self.val_fraction < 1:
            raise InputError("val_fraction must be in [0, 1)")


def tiny_configs() -> tuple[GeneratorConfig, DiscriminatorConfig]:
    """Networks small enough for CPU smoke runs and tests (``--tiny``)."""
    return (GeneratorConfig(base_channels=8, max_channels=32, growth=4, dense_layers=2, levels=3),
            DiscriminatorConfig(channels=8, layers=2))


__all__ = ["ADVERSARIAL", "OUTPUTS", "RESOLUTIONS", "DiscriminatorConfig", "GeneratorConfig",
           "LossConfig", "TrainConfig", "from_json", "prior_channels", "tiny_configs", "to_json"]
