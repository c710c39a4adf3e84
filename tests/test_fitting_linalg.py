"""The fitter's block-tridiagonal solver against a dense solve."""

from __future__ import annotations

import pytest
import torch

from faceanime.fitting.linalg import solve_block_tridiagonal
from tests.helpers import assert_close


def _system(t: int, d: int, k: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    root = torch.randn(t, d, d, generator=g, dtype=torch.float64)
    diag = root @ root.transpose(1, 2) + 2 * d * torch.eye(d, dtype=torch.float64)
    lower = torch.randn(t, d, d, generator=g, dtype=torch.float64)
    rhs = torch.randn(t, d, k, generator=g, dtype=torch.float64)
    dense = torch.zeros(t * d, t * d, dtype=torch.float64)
    for i in range(t):
        dense[i * d:(i + 1) * d, i * d:(i + 1) * d] = diag[i]
        if i:
            dense[i * d:(i + 1) * d, (i - 1) * d:i * d] = lower[i]
            dense[(i - 1) * d:i * d, i * d:(i + 1) * d] = lower[i].T
    return diag, lower, rhs, dense


@pytest.mark.parametrize("t", [1, 2, 3, 4, 5, 7, 8, 33, 100])
def test_block_tridiagonal_matches_dense_solve(t):
    d, k = 5, 3
    diag, lower, rhs, dense = _system(t, d, k, seed=t)
    expected = torch.linalg.solve(dense, rhs.reshape(t * d, k)).view(t, d, k)
    assert_close(solve_block_tridiagonal(diag, lower, rhs), expected, atol=1e-10, rtol=1e-9)


def test_block_tridiagonal_ignores_first_lower_block():
    diag, lower, rhs, _ = _system(6, 4, 2, seed=1)
    other = lower.clone()
    other[0] = 1e3
    assert_close(solve_block_tridiagonal(diag, other, rhs),
                 solve_block_tridiagonal(diag, lower, rhs), atol=0, rtol=0)


def test_uncoupled_frames_solve_independently():
    diag, _, rhs, _ = _system(9, 4, 2, seed=2)
    zero = torch.zeros_like(diag)
    assert_close(solve_block_tridiagonal(diag, zero, rhs), torch.linalg.solve(diag, rhs),
                 atol=1e-12, rtol=1e-10)
