"""The vector the dynamics model sees: coefficients made image-independent, then normalised.

**Raw vector** ``r`` (``Coefficients.to_tensor()``, ``D = Ke + 8``): expression ``(Ke)``, jaw,
rotation vector ``(3)``, translation ``(3)``, log scale.

**Features** ``f``, relative to a *reference frame* ``r_0`` (the first observed frame):

- expression, jaw and rotation vector: unchanged; they mean the same in any image;
- translation, orthographic camera: ``((t_x - t_x0) / s_0, -(t_y - t_y0) / s_0, t_z - t_z0)``:
  the head's displacement in model units (mm) of the reference face, y up as in the model (image
  y points down). Perspective camera: ``t - t_0`` (already model units);
- scale: ``log s - log s_0``, the zoom relative to the reference.

Pixels never enter the features, so a model trained on 512² videos animates a 4K photo the same
way, and a window's motion does not depend on where the head sits in the frame. The inverse
(:func:`from_features`) puts a predicted motion back at the reference's pixel position.

**Normalisation** (:class:`Normalizer`, fitted on the training videos and stored in the
checkpoint's JSON): every feature dimension is standardised with its mean and standard deviation
over training windows, ``n = (f - mean) / std``; ``delta_std`` is the RMS frame-to-frame change,
the unit of the model's inputs and outputs (changes are ~5-10x smaller than values: one scale for
both would leave the outputs tiny), which each window refines with its own observed motion
(:meth:`~faceanime.dynamics.model.DynamicsModel.motion_scale`). Dimensions that never move
in the training data (``t_z`` of the orthographic camera, the jaw of a fit without one) are
*inactive*: held still, never predicted. Absolute dimensions are kept inside the training range
widened by ``bound_margin`` of it, for expression and jaw only (blendshape expressions that were
never negative stay >= 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from faceanime.dynamics.config import GROUPS
from faceanime.errors import InputError

CAMERAS = ("orthographic", "perspective")
# Standard deviations below this (in the feature's own units) count as "never moves".
_STILL = 1e-7


def group_slices(n_expression: int) -> dict[str, slice]:
    """Where each coefficient group sits in the ``D = Ke + 8`` vector."""
    ke = n_expression
    return {"expression": slice(0, ke), "jaw": slice(ke, ke + 1),
            "rotation": slice(ke + 1, ke + 4), "translation": slice(ke + 4, ke + 7),
            "scale": slice(ke + 7, ke + 8)}


def group_mask(n_expression: int, groups: tuple[str, ...] | list[str]) -> torch.Tensor:
    """``(D,)`` bool: the dimensions of ``groups``."""
    mask = torch.zeros(n_expression + 8, dtype=torch.bool)
    for name, span in group_slices(n_expression).items():
        if name in groups:
            mask[span] = True
    return mask


def _check_camera(camera: str) -> None:
    if camera not in CAMERAS:
        raise InputError(f"unknown camera {camera!r}: expected {' or '.join(CAMERAS)}")


def to_features(raw: torch.Tensor, ref: torch.Tensor, camera: str) -> torch.Tensor:
    """Raw coefficient vectors to features relative to ``ref``.

    Args:
        raw: ``(..., T, D)``.
        ref: ``(..., D)`` the reference frame's raw vector.
        camera: ``"orthographic"`` or ``"perspective"``.

    Returns:
        ``(..., T, D)``.
    """
    _check_camera(camera)
    ke = raw.shape[-1] - 8
    ref = ref.unsqueeze(-2)
    trans = raw[..., ke + 4:ke + 7] - ref[..., ke + 4:ke + 7]
    if camera == "orthographic":
        inv = torch.exp(-ref[..., ke + 7:ke + 8])
        trans = torch.cat([trans[..., :1] * inv, -trans[..., 1:2] * inv, trans[..., 2:]], -1)
    scale = raw[..., ke + 7:] - ref[..., ke + 7:]
    return torch.cat([raw[..., :ke + 4], trans, scale], -1)


def from_features(feat: torch.Tensor, ref: torch.Tensor, camera: str) -> torch.Tensor:
    """Inverse of :func:`to_features`: ``(..., T, D)`` features and ``(..., D)`` reference to
    ``(..., T, D)`` raw vectors."""
    _check_camera(camera)
    ke = feat.shape[-1] - 8
    ref = ref.unsqueeze(-2)
    trans = feat[..., ke + 4:ke + 7]
    if camera == "orthographic":
        s0 = torch.exp(ref[..., ke + 7:ke + 8])
        trans = torch.cat([trans[..., :1] * s0, -trans[..., 1:2] * s0, trans[..., 2:]], -1)
    trans = trans + ref[..., ke + 4:ke + 7]
    scale = feat[..., ke + 7:] + ref[..., ke + 7:]
    return torch.cat([feat[..., :ke + 4], trans, scale], -1)


@dataclass
class Normalizer:
    """Feature statistics of a training set (see the module docstring).

    Attributes:
        camera: camera of the training coefficients; inputs must use the same.
        n_expression: ``Ke``.
        mean: ``(D,)`` feature means.
        std: ``(D,)`` feature standard deviations (1 where inactive).
        delta_std: ``(D,)`` standard deviations of per-frame changes (1 where inactive).
        lower: ``(D,)`` lowest allowed feature value (``-inf``: unbounded).
        upper: ``(D,)`` highest allowed feature value (``inf``: unbounded).
        active: ``(D,)`` bool, the dimensions the model predicts.
        fps: median frame rate of the training videos (the rate predictions are made at).
        reach: ``(D,)`` the farthest a head-pose feature got from where a window of
            ``Normalizer.fit``'s ``horizon`` frames started, in the training videos, widened by
            the bound margin (``inf`` for expression and jaw, which have absolute bounds, and in
            checkpoints from before it): a free-running roll-out stays within it of its start,
            so a sampled head does not drift or turn further than real heads did.
        metric: ``(D, D)`` symmetric positive semi-definite: ``u^T metric u`` is the squared
            size of a feature change ``u`` (target-driven mode keeps every step from moving
            away from the target in this metric). Training sets it to the mean squared vertex
            displacement, mm² (:func:`~faceanime.dynamics.vertices.vertex_metric`); default
            ``diag(1 / std^2)``.
        turn_lower: ``(D,)`` lowest head rotation (rotation vector components, rad) a
            free-running roll-out takes: the training heads' lowest, widened by the bound
            margin (``-inf`` for every other dimension, and in checkpoints from before it). A
            start turned further keeps its own. The reach alone let a sampled head, starting
            near the end of the real range, turn 0.3 rad past anything real.
        turn_upper: ``(D,)`` the highest, likewise (``inf`` elsewhere).
        noise_scale: ``(D,)`` multiplier of each feature's sampled innovation (positive; 1 in
            checkpoints from before it): set by
            :func:`~faceanime.dynamics.calibrate.calibrate_noise` so sampled motion is as fast
            as real motion; the expected path does not depend on it.
    """

    camera: str
    n_expression: int
    mean: torch.Tensor
    std: torch.Tensor
    delta_std: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    active: torch.Tensor
    fps: float = 30.0
    metric: torch.Tensor | None = None
    reach: torch.Tensor | None = None
    noise_scale: torch.Tensor | None = None
    turn_lower: torch.Tensor | None = None
    turn_upper: torch.Tensor | None = None

    def __post_init__(self) -> None:
        _check_camera(self.camera)
        d = self.n_expression + 8
        if self.reach is None:
            self.reach = torch.full((d,), torch.inf)
        if tuple(self.reach.shape) != (d,):
            raise InputError(f"normalizer: reach must be ({d},), got {tuple(self.reach.shape)}")
        if self.noise_scale is None:
            self.noise_scale = torch.ones(d)
        if self.turn_lower is None:
            self.turn_lower = torch.full((d,), -torch.inf)
        if self.turn_upper is None:
            self.turn_upper = torch.full((d,), torch.inf)
        for name in ("turn_lower", "turn_upper"):
            if tuple(getattr(self, name).shape) != (d,):
                raise InputError(f"normalizer: {name} must be ({d},), "
                                 f"got {tuple(getattr(self, name).shape)}")
        if tuple(self.noise_scale.shape) != (d,) or not bool(
                (torch.isfinite(self.noise_scale) & (self.noise_scale > 0)).all()):
            raise InputError(f"normalizer: noise_scale must be ({d},) positive numbers, got "
                             f"{tuple(self.noise_scale.shape)}")
        for name in ("mean", "std", "delta_std", "lower", "upper", "active"):
            if tuple(getattr(self, name).shape) != (d,):
                raise InputError(f"normalizer: {name} must be ({d},), "
                                 f"got {tuple(getattr(self, name).shape)}")
        if self.metric is None:
            self.metric = torch.diag(self.std.float().reciprocal().square())
        if tuple(self.metric.shape) != (d, d):
            raise InputError(f"normalizer: metric must be ({d}, {d}), "
                             f"got {tuple(self.metric.shape)}")

    @property
    def dim(self) -> int:
        return self.n_expression + 8

    @classmethod
    def fit(cls, sequences: list[torch.Tensor], camera: str, groups: tuple[str, ...] = GROUPS,
            window: int = 40, bound_margin: float = 0.1, fps: float = 30.0,
            horizon: int = 120) -> Normalizer:
        """Statistics of raw sequences.

        Relative dimensions depend on the reference frame, so they are gathered over windows of
        ``window`` frames (each relative to its first frame, at a stride of half a window), as
        the model sees them in training.

        Args:
            sequences: raw ``(T_i, D)`` vectors, one per video.
            camera: their camera.
            groups: the groups the model will predict.
            window: training window length.
            bound_margin: widening of the absolute dimensions' allowed range (and of ``reach``).
            fps: the videos' frame rate.
            horizon: frames over which the head pose's ``reach`` is measured.
        """
        if not sequences:
            raise InputError("no training sequences to compute feature statistics from")
        d = sequences[0].shape[-1]
        ke = d - 8
        feats, deltas = [], []
        for seq in sequences:
            seq = seq.double()
            length = min(window, seq.shape[0])
            for start in range(0, seq.shape[0] - length + 1, max(1, length // 2)):
                win = to_features(seq[start:start + length], seq[start], camera)
                feats.append(win)
                deltas.append(win[1:] - win[:-1])
        feat = torch.cat(feats)
        delta = torch.cat(deltas)
        mean, std = feat.mean(0), feat.std(0, unbiased=False)
        delta_std = delta.pow(2).mean(0).sqrt()
        active = group_mask(ke, groups) & (delta_std > _STILL) & (std > _STILL)
        std = torch.where(active, std, torch.ones_like(std))
        delta_std = torch.where(active, delta_std, torch.ones_like(delta_std))
        # Bounds: only expression and jaw, which the fitter itself limits (blendshapes >= 0, the
        # jaw's range). A head may turn further than the training people's did (bounding the
        # rotation to their range cost 45 % of the 5-frame accuracy on a held-out video), and
        # relative dimensions drift with the reference.
        slices = group_slices(ke)
        absolute = torch.zeros(d, dtype=torch.bool)
        absolute[: slices["jaw"].stop] = True
        lo, hi = feat.min(0).values, feat.max(0).values
        span = hi - lo
        lower = torch.where(absolute, lo - bound_margin * span, torch.full_like(lo, -torch.inf))
        upper = torch.where(absolute, hi + bound_margin * span, torch.full_like(hi, torch.inf))
        expr = slices["expression"]
        lower[expr] = torch.where(lo[expr] >= 0, lower[expr].clamp_min(0), lower[expr])
        # How far the head got from where it was `horizon` frames before: the bound of a
        # free-running roll-out around its start (relative, so a photo turned further than
        # anyone in training keeps its own pose).
        reach = torch.zeros(d, dtype=torch.float64)
        for seq in sequences:
            seq = seq.double()
            length = min(horizon, seq.shape[0])
            for start in range(0, seq.shape[0] - length + 1, max(1, length // 4)):
                win = to_features(seq[start:start + length], seq[start], camera)
                reach = torch.maximum(reach, (win - win[:1]).abs().max(0).values)
        reach = torch.where(absolute, torch.full_like(reach, torch.inf),
                            reach * (1 + bound_margin))
        # The rotations real heads had (rotation vectors are the same in any image): where a
        # free-running head may turn, as far as its start allows.
        rotation = torch.zeros(d, dtype=torch.bool)
        rotation[slices["rotation"]] = True
        turn_lower = torch.where(rotation, lo - bound_margin * span, -torch.inf)
        turn_upper = torch.where(rotation, hi + bound_margin * span, torch.inf)
        return cls(camera=camera, n_expression=ke, mean=mean.float(), std=std.float(),
                   delta_std=delta_std.float(), lower=lower.float(), upper=upper.float(),
                   active=active, fps=float(fps), reach=reach.float(),
                   turn_lower=turn_lower.float(), turn_upper=turn_upper.float())

    def to(self, device: torch.device | str | None) -> Normalizer:
        return Normalizer(self.camera, self.n_expression, self.mean.to(device),
                          self.std.to(device), self.delta_std.to(device), self.lower.to(device),
                          self.upper.to(device), self.active.to(device), self.fps,
                          self.metric.to(device), self.reach.to(device),
                          self.noise_scale.to(device), self.turn_lower.to(device),
                          self.turn_upper.to(device))

    def normalize(self, feat: torch.Tensor) -> torch.Tensor:
        """``(..., D)`` features to standardised values."""
        return (feat - self.mean.to(feat)) / self.std.to(feat)

    def clamp(self, feat: torch.Tensor) -> torch.Tensor:
        """``(..., D)`` features kept inside the allowed range."""
        return torch.maximum(torch.minimum(feat, self.upper.to(feat)), self.lower.to(feat))

    def to_json(self) -> dict[str, Any]:
        def floats(t: torch.Tensor) -> list[float | str]:
            # JSON has no infinities: write them as strings.
            return [v if abs(v) != float("inf") else str(v) for v in t.double().tolist()]

        return {"camera": self.camera, "n_expression": self.n_expression,
                "mean": floats(self.mean), "std": floats(self.std),
                "delta_std": floats(self.delta_std), "lower": floats(self.lower),
                "upper": floats(self.upper), "active": [bool(a) for a in self.active],
                "fps": self.fps, "metric": [floats(row) for row in self.metric],
                "reach": floats(self.reach), "noise_scale": floats(self.noise_scale),
                "turn_lower": floats(self.turn_lower), "turn_upper": floats(self.turn_upper)}

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> Normalizer:
        """Inverse of :meth:`to_json`.

        Raises:
            InputError: a field is missing or malformed.
        """
        try:
            def floats(name: str) -> torch.Tensor:
                return torch.tensor([float(v) for v in values[name]], dtype=torch.float32)

            return cls(camera=str(values["camera"]), n_expression=int(values["n_expression"]),
                       mean=floats("mean"), std=floats("std"), delta_std=floats("delta_std"),
                       lower=floats("lower"), upper=floats("upper"),
                       active=torch.tensor([bool(a) for a in values["active"]]),
                       fps=float(values.get("fps", 30.0)),
                       metric=torch.tensor([[float(v) for v in row] for row in values["metric"]],
                                           dtype=torch.float32) if "metric" in values else None,
                       reach=floats("reach") if "reach" in values else None,
                       noise_scale=floats("noise_scale") if "noise_scale" in values else None,
                       turn_lower=floats("turn_lower") if "turn_lower" in values else None,
                       turn_upper=floats("turn_upper") if "turn_upper" in values else None)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"normalizer: missing or malformed field ({exc})") from exc
