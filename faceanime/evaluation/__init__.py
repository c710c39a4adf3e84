"""Evaluation of reenactment: the standard protocols as one command (``faceanime evaluate``).

- :mod:`~faceanime.evaluation.metrics` — L1, PSNR, SSIM, AKD, identity share: pure torch
  functions on batched frames;
- :mod:`~faceanime.evaluation.protocol` — self-reenactment (ground truth: the video itself) and
  cross-reenactment (a photo driven by a video), streamed in batches, with the ``static`` and
  ``classic`` baselines, the learned generator and external results;
- :mod:`~faceanime.evaluation.report` — ``report.json``, ``report.md`` and per-frame curves.

See docs/evaluation.md for the protocol and docs/results.md for the numbers.
"""

from faceanime.evaluation.protocol import (
    EvalConfig,
    MethodResult,
    VideoResult,
    evaluate_cross,
    evaluate_self,
    select_frames,
)

__all__ = [
    "EvalConfig",
    "MethodResult",
    "VideoResult",
    "evaluate_cross",
    "evaluate_self",
    "select_frames",
]
