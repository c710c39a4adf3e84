"""Training losses of the dynamics model (weights: :class:`~faceanime.dynamics.config.LossConfig`).

- **coefficient L2**: squared error of the rolled-out features, each dimension divided by its
  training standard deviation (so expression, rotation and translation weigh alike), averaged
  over the predicted dimensions;
- **vertex L2**: squared distance between predicted and true posed vertices
  (:mod:`~faceanime.dynamics.vertices`) in ``vertex_unit`` mm, averaged over a vertex subset: it
  weighs each coefficient by how far it moves the face (the mouth's jaw more than a subtle
  blendshape), as FaceAnime §III-A's 3D loss does;
- **Gaussian NLL** of each true next change under the predicted mean and standard deviation,
  along the ground-truth window (teacher forcing): it fits the noise scale ``sigma`` that
  sampling uses. Without it ``sigma`` would get no training signal, since the L2 terms are taken
  on the expected path.

Under data-parallel training (:mod:`faceanime.distributed`) each rank holds a share ``B / N`` of
the global batch and DDP averages the ranks' gradients. Plain means then need nothing more; the
relative losses divide by sums over the batch, which ``ranks`` takes over the global batch, and
scale the rank's numerator by ``N`` so that DDP's average of the ranks' losses is the
one-process loss of the whole batch.
"""

from __future__ import annotations

import math

import torch

from faceanime.distributed import SINGLE, Ranks


def _per_step(err: torch.Tensor, hold: torch.Tensor | None, ranks: Ranks = SINGLE) -> torch.Tensor:
    """``(B, T)`` squared errors -> scalar: their mean, or with ``hold`` ``(B, T)`` the mean over
    steps of ``sum_b err / sum_b hold`` (each step's error relative to the baseline's), the sums
    over the global batch of ``ranks``."""
    if hold is None:
        return err.mean()
    base = ranks.sum(hold.detach().sum(0))
    return (err.sum(0) * ranks.world_size / base.clamp_min(1e-12)).mean()


def coefficient_loss(pred: torch.Tensor, truth: torch.Tensor, std: torch.Tensor,
                     active: torch.Tensor, hold: torch.Tensor | None = None,
                     ranks: Ranks = SINGLE) -> torch.Tensor:
    """Mean squared error in standard deviations over the active dimensions.

    Args:
        pred, truth: ``(B, T, D)`` features.
        std: ``(D,)`` feature standard deviations.
        active: ``(D,)`` 0/1 mask.
        hold: ``(B, D)`` the last observed frame: when given, each step's error is divided by
            that of holding this frame (1 = as good as the hold-last-frame baseline).
        ranks: the data-parallel run whose global batch the relative errors are taken over.
    """
    def sq(p: torch.Tensor) -> torch.Tensor:
        return ((p - truth) / std).square() * active

    n = active.sum().clamp_min(1)
    if hold is None:
        return sq(pred).sum(-1).mean() / n
    # Per step *and* dimension: the jaw must beat holding the jaw, not hide behind the head's
    # larger motion. The floor (0.1 std) keeps still dimensions from dividing by ~0.
    base = ranks.sum(sq(hold[:, None].expand_as(truth)).detach().sum(0)) \
        + 0.01 * truth.shape[0] * ranks.world_size
    return ((sq(pred).sum(0) * ranks.world_size / base) * active).sum(-1).mean() / n


def vertex_loss(pred: torch.Tensor, truth: torch.Tensor, unit: float,
                hold: torch.Tensor | None = None, ranks: Ranks = SINGLE) -> torch.Tensor:
    """Mean squared vertex distance in ``unit`` (mm).

    Args:
        pred, truth: ``(B, T, V, 3)``.
        unit: mm.
        hold: ``(B, T, V, 3)`` the hold-last-frame baseline's vertices: when given, each step's
            error is divided by the baseline's (and ``unit`` cancels).
        ranks: as for :func:`coefficient_loss`.
    """
    def sq(p: torch.Tensor) -> torch.Tensor:
        return ((p - truth) / unit).square().sum(-1).mean(-1)

    return _per_step(sq(pred), None if hold is None else sq(hold), ranks)


def vertex_error(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Mean vertex distance (mm, not squared) per frame: ``(B, T, V, 3)`` -> ``(B, T)``."""
    return (pred - truth).norm(dim=-1).mean(-1)


def gaussian_nll(mu: torch.Tensor, log_sigma: torch.Tensor, change: torch.Tensor,
                 active: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood per active dimension of ``change`` under ``N(mu, sigma^2)``.

    Args:
        mu, log_sigma: ``(B, T, D)`` predicted mean and log standard deviation.
        change: ``(B, T, D)`` true changes, in the same units (the window's motion scale).
        active: ``(D,)`` 0/1 mask.
    """
    z = (change - mu) * torch.exp(-log_sigma)
    nll = (0.5 * z.square() + log_sigma + 0.5 * math.log(2 * math.pi)) * active
    return nll.sum(-1).mean() / active.sum().clamp_min(1)
