"""PGFG, FaceAnime's prior-guided face generator (§III-C): a conditional GAN that turns a source
face crop and the motion between its sparse priors ``p_s -> p_t`` into the target frame.

::

    from faceanime.pgfg import GeneratorRenderer, load_generator

    g = load_generator("runs/pgfg")            # EMA weights, eval mode
    frames = g.generate(source_crop, p_s, p_t)              # (B, 3, S, S) in [0, 1]
    renderer = GeneratorRenderer(model, photo, photo_coeffs, "runs/pgfg")
    video = renderer.render(target_coeffs)                  # (T, 3, H, W), pasted into the photo

- :mod:`~faceanime.pgfg.config` — network, loss and training settings (dataclasses);
- :mod:`~faceanime.pgfg.networks` — dense blocks, encoders, decoder, generator, discriminator;
- :mod:`~faceanime.pgfg.data` — crop-space coefficients, sparse priors, training pairs;
- :mod:`~faceanime.pgfg.losses`, :mod:`~faceanime.pgfg.train`, :mod:`~faceanime.pgfg.checkpoint`;
- :mod:`~faceanime.pgfg.renderer` — the generator behind the classic renderer's interface.

docs/pgfg.md: architecture, losses, training at scale, measured numbers.
"""

from faceanime.pgfg.checkpoint import load_generator
from faceanime.pgfg.config import (
    DiscriminatorConfig,
    GeneratorConfig,
    LossConfig,
    TrainConfig,
    tiny_configs,
)
from faceanime.pgfg.networks import DenseBlock, Discriminator, Generator
from faceanime.pgfg.renderer import GeneratorRenderer

__all__ = [
    "DenseBlock",
    "Discriminator",
    "DiscriminatorConfig",
    "Generator",
    "GeneratorConfig",
    "GeneratorRenderer",
    "LossConfig",
    "TrainConfig",
    "load_generator",
    "tiny_configs",
]
