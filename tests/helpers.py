"""Assertion helpers shared by the tests."""

from __future__ import annotations

import numpy as np
import torch


def assert_close(actual, expected, atol: float = 1e-6, rtol: float = 1e-5, msg: str = "") -> None:
    """``torch.testing.assert_close`` for tensors or arrays, with a readable error message."""
    def tensor(x) -> torch.Tensor:
        return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))

    a, e = tensor(actual), tensor(expected)
    torch.testing.assert_close(a, e.to(a.dtype), atol=atol, rtol=rtol, msg=msg or None)
