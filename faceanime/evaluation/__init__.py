"""Evaluation of reenactment: the standard protocols as one command (``faceanime evaluate``).

- :mod:`~faceanime.evaluation.metrics` — L1, PSNR, SSIM, AKD, identity share: pure torch
  functions on batched frames; and what a viewer sees, on landmark tracks: double-face rate,
  head, blink and mouth follow, closed-eye ratio;
- :mod:`~faceanime.evaluation.warp2d` — the ``warp2d`` baseline's piecewise-affine warp;
- :mod:`~faceanime.evaluation.protocol` — self-reenactment (ground truth: the video itself) and
  cross-reenactment (a photo driven by a video), streamed in batches, with the ``static``,
  ``warp``, ``mask`` and ``warp2d`` baselines, the learned generator and external results;
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
