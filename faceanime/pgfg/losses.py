"""PGFG's losses: L1 pixel, adversarial (hinge or WGAN-GP), identity.

An optional perceptual (VGG) term is not offered: no VGG weights ship with the toolkit's offline
dependencies, and a perceptual loss with random weights would only pretend to be one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from faceanime.errors import InputError
from faceanime.identity import FaceEmbedder, identity_distance


def l1_loss(generated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error of ``(B, 3, S, S)`` images (scalar)."""
    return (generated - target).abs().mean()


def d_loss(real: torch.Tensor, fake: torch.Tensor, kind: str) -> torch.Tensor:
    """The discriminator's loss on its scores of real and generated pairs (scalar).

    hinge: ``E[relu(1 - D(real))] + E[relu(1 + D(fake))]``; wgan-gp: ``E[D(fake)] - E[D(real)]``
    (the penalty is :func:`gradient_penalty`, added by the caller).
    """
    if kind == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    if kind == "wgan-gp":
        return fake.mean() - real.mean()
    raise InputError(f"unknown adversarial loss {kind!r}")


def g_loss(fake: torch.Tensor, kind: str) -> torch.Tensor:
    """The generator's adversarial loss on the discriminator's scores of its images."""
    if kind in ("hinge", "wgan-gp"):
        return -fake.mean()
    raise InputError(f"unknown adversarial loss {kind!r}")


def gradient_penalty(discriminator, prior: torch.Tensor, real: torch.Tensor,
                     fake: torch.Tensor, generator: torch.Generator | None = None,
                     alpha: torch.Tensor | None = None) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017): ``E[(||grad_x D(p, x)|| - 1)^2]`` at random points
    ``x`` between ``(B, 3, S, S)`` real and generated images (the condition ``p`` held fixed),
    mixed by ``alpha`` ``(B,)`` (None: drawn from ``generator``)."""
    b = real.shape[0]
    if alpha is None:
        alpha = torch.rand(b, generator=generator)
    alpha = alpha.reshape(b, 1, 1, 1).to(real)
    mixed = (alpha * real + (1 - alpha) * fake.detach()).requires_grad_(True)
    scores = discriminator(prior, mixed)
    (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def identity_loss(embedder: FaceEmbedder, generated: torch.Tensor, target: torch.Tensor,
                  landmarks: torch.Tensor, metric: str = "cosine") -> torch.Tensor:
    """Mean identity distance of generated and target faces (scalar, differentiable in
    ``generated``). Both are embedded with the target's ``(B, 68, 2)`` landmarks: the generated
    face is meant to sit where the target's does."""
    with torch.no_grad():
        ref = embedder.embed(target.float(), landmarks)
    return identity_distance(embedder.embed(generated.float(), landmarks), ref, metric).mean()


__all__ = ["d_loss", "g_loss", "gradient_penalty", "identity_loss", "l1_loss"]
