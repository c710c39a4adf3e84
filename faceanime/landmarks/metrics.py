"""Landmark accuracy measures."""

from __future__ import annotations

import numpy as np

from faceanime.errors import InputError

# 0-based indices of the outer eye corners (iBUG points 37 and 46): the 300-W normalisation.
OUTER_EYE_CORNERS = (36, 45)


def nme(pred: np.ndarray, target: np.ndarray, per_point: bool = False) -> np.ndarray | float:
    """Normalised mean error: point-to-point distance divided by the target's outer-eye-corner
    distance (the 300-W "inter-ocular" normalisation).

    Args:
        pred: ``(..., 68, 2)`` predicted points.
        target: ``(..., 68, 2)`` ground truth.
        per_point: return the ``(..., 68)`` normalised errors instead of their mean.

    Returns:
        The mean over all points and faces (a float), or the per-point array.
    """
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if pred.shape != target.shape or pred.shape[-2:] != (68, 2):
        raise InputError(f"nme: expected matching (..., 68, 2) arrays, got {pred.shape} and "
                         f"{target.shape}")
    i, j = OUTER_EYE_CORNERS
    norm = np.linalg.norm(target[..., i, :] - target[..., j, :], axis=-1)
    err = np.linalg.norm(pred - target, axis=-1) / norm[..., None]
    return err if per_point else float(err.mean())
