"""Assertion helpers shared by the tests."""

from __future__ import annotations

import numpy as np
import torch


def assert_close(actual, expected, atol: float = 1e-6, rtol: float = 1e-5, msg: str = "") -> None:
    """``torch.testing.assert_close`` for tensors or arrays, with a readable max-error message."""
    a = torch.as_tensor(np.asarray(actual) if not isinstance(actual, torch.Tensor) else actual)
    e = torch.as_tensor(np.asarray(expected) if not isinstance(expected, torch.Tensor) else expected)
    torch.testing.assert_close(a, e.to(a.dtype), atol=atol, rtol=rtol, msg=msg or None)
