"""The 3DDP network: an LSTM over feature vectors that predicts each next frame's change.

Per step ``t`` the LSTM reads ``[v_t, c_t]`` (``2D + 3`` values):

- ``v_t = (x_t - x_{t-1}) / s``: the last change, in the window's *motion scale* ``s``
  (:meth:`DynamicsModel.motion_scale`: the observed frames' RMS change, shrunk towards the
  training set's), 0 at the first frame;
- ``c_t``: the target condition, zeros when free-running; in target-driven mode
  ``[(x_T - x_t) / std, t / T, exp(-(T - t) / tau), 1]``: how far the target still is, the share
  of time used, a timer that rises to ~1 over the last ``tau`` frames, and a mode flag.

``levels`` adds the frame itself, ``(x_t - x_0) / std`` ("relative") or ``(x_t - mean) / std``
("absolute"). Off by default: with three training videos, levels taught the model those people's
habits (a jaw that springs back open after closing, a resting face) and it imposed them on new
ones; the changes alone carry what transfers (docs/dynamics.md, "What the model sees").

Its head outputs, per dimension, the mean ``mu_t`` and log standard deviation ``log sigma_t`` of
the next change in units of ``s``, plus a linear map of the inputs (``linear_skip``) that starts
as damped constant velocity, ``mu = velocity_prior * v_t``. The next frame is

    x~_{t+1} = clamp(x_t + s * (mu_t + temperature * k * sigma_t * eps_t))

with ``eps_t ~ N(0, I)`` drawn from the caller's seed: the *noise input*, and ``k`` the
normalizer's per-feature ``noise_scale`` (1 unless calibrated). ``temperature = 0``
gives the expected path; ``1`` samples the motion the training data's spread says is plausible,
so one photo yields different futures for different seeds (docs/dynamics.md: why per-step
innovations and not a per-sequence latent).

Target-driven mode blends the network's step with the step that reaches ``x_T`` at constant
speed, weighted by the timer ``alpha_t = ((t + 1) / T)^p``::

    x_{t+1} = x_t + beta_t (1 - alpha_t) (x~_{t+1} - x_t) + alpha_t (x_T - x_t) / (T - t)

``beta_t`` in [0, 1] shrinks the network's share where it would move the face away from the
target or past it (``monotone_target``). ``alpha`` reaches exactly 1 at the last step, which then
lands on ``x_T``: the roll-out arrives on time whatever the network does.

Identity is not in the vector: it is carried unchanged from the observed frames.
"""

from __future__ import annotations

import torch
from torch import nn

from faceanime.dynamics.config import DynamicsConfig
from faceanime.dynamics.features import Normalizer

# Bounds of the predicted log standard deviation (motion-scale units): fitted coefficients hold
# exact repeats (blendshapes clamped at 0) on which an unbounded NLL would drive sigma to 0.
LOG_SIGMA_MIN, LOG_SIGMA_MAX = -4.0, 2.0

State = list[tuple[torch.Tensor, torch.Tensor]]  # (h, c) per layer, each (B, H)


class DynamicsModel(nn.Module):
    """LSTM dynamics over ``D``-dimensional feature vectors (tensors in, tensors out).

    Args:
        config: architecture and mode settings.
        normalizer: feature statistics; kept as (non-saved) buffers so they follow ``.to()``.
    """

    def __init__(self, config: DynamicsConfig, normalizer: Normalizer):
        super().__init__()
        self.config = config
        self.camera = normalizer.camera
        d = normalizer.dim
        self.dim = d
        for name in ("mean", "std", "delta_std", "lower", "upper", "reach", "noise_scale",
                     "turn_lower", "turn_upper"):
            self.register_buffer(name, getattr(normalizer, name).float().clone(),
                                 persistent=False)
        self.register_buffer("active", normalizer.active.float().clone(), persistent=False)
        self.register_buffer("metric", normalizer.metric.float().clone(), persistent=False)
        # A stack of cells stepped in Python rather than nn.LSTM: the roll-out feeds each output
        # back one step at a time, and on CPU nn.LSTM's oneDNN kernel costs ~100x more per
        # single-step backward than the plain cell does.
        self.n_inputs = (2 if config.levels == "none" else 3) * d + 3
        sizes = [self.n_inputs] + [config.hidden] * config.layers
        self.cells = nn.ModuleList(nn.LSTMCell(i, config.hidden) for i in sizes[:-1])
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden, 2 * d)
        # A linear path from the inputs to the mean change: damped-velocity extrapolation, the
        # strongest simple predictor of smooth motion, is one matrix away instead of having to
        # be learnt through the gates.
        self.skip = nn.Linear(self.n_inputs, d, bias=False) if config.linear_skip else None
        # Zero output at the start: an untrained model holds the last frame with unit noise,
        # the baseline training has to beat, instead of a random drift.
        for layer in (self.head, self.skip):
            if layer is not None:
                nn.init.zeros_(layer.weight)
        nn.init.zeros_(self.head.bias)
        if self.skip is not None and config.velocity_prior:
            # Start from damped constant velocity: change = prior * last change, per dimension
            # (the velocity block of the inputs maps to the output in the same units).
            with torch.no_grad():
                v = 0 if config.levels == "none" else d  # where the velocity block starts
                self.skip.weight[:, v:v + d] = config.velocity_prior * torch.diag(
                    normalizer.active.float())

    # --- pieces ------------------------------------------------------------------------------
    def motion_scale(self, observed: torch.Tensor) -> torch.Tensor:
        """The unit of changes for a window: ``(B, K, D)`` observed features -> ``(B, D)``.

        With ``local_scale``, the RMS change of the observed frames shrunk towards the training
        ``delta_std`` (one pseudo-frame of it): a calm video's small motions then read as the
        same shapes as a lively one's, instead of as "almost still". Else ``delta_std``.
        """
        b, k, d = observed.shape
        prior = self.delta_std.expand(b, d)
        if not self.config.local_scale or k < 2:
            return prior
        sq = (observed[:, 1:] - observed[:, :-1]).square().sum(1)
        scale = ((sq + prior.square()) / k).sqrt()
        return torch.where(self.active > 0, scale, prior)

    def _inputs(self, x: torch.Tensor, prev: torch.Tensor, cond: torch.Tensor,
                ref: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """``(B, T, D)`` frames, previous frames, ``(B, T, D + 3)`` conditions, the ``(B, D)``
        reference frame and ``(B, D)`` motion scale -> ``(B, T, I)`` (``I = 2D + 3``, or
        ``3D + 3`` with levels)."""
        velocity = (x - prev) / scale[:, None]
        if self.config.levels == "none":
            return torch.cat([velocity, cond], -1)
        base = self.mean if self.config.levels == "absolute" else ref[:, None]
        return torch.cat([(x - base) / self.std, velocity, cond], -1)

    def step(self, inputs: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """One LSTM step: ``(B, I)`` inputs -> ``(B, H)`` output and the new state."""
        new_state = []
        h = inputs
        for i, cell in enumerate(self.cells):
            if i > 0:
                h = self.drop(h)
            h, c = cell(h, None if state is None else state[i])
            new_state.append((h, c))
        return h, new_state

    def run(self, inputs: torch.Tensor, state: State | None = None
            ) -> tuple[torch.Tensor, State | None]:
        """``(B, T, I)`` inputs -> ``(B, T, H)`` outputs and the final state."""
        outs = []
        for t in range(inputs.shape[1]):
            out, state = self.step(inputs[:, t], state)
            outs.append(out)
        return torch.stack(outs, 1), state

    def condition(self, x: torch.Tensor, target: torch.Tensor | None, step: torch.Tensor,
                  steps: int, flag: torch.Tensor | None) -> torch.Tensor:
        """Target condition ``c_t`` of the module docstring.

        Args:
            x: ``(B, ..., D)`` current frames.
            target: ``(B, D)`` target frame, or None (free-running: zeros).
            step: ``(...)`` index ``t`` of each frame within the roll-out (broadcast over B).
            steps: roll-out length ``T``.
            flag: ``(B,)`` 1 for target-driven samples, 0 for free ones (None: all 1).

        Returns:
            ``(B, ..., D + 3)``.
        """
        shape = (*x.shape[:-1], self.dim + 3)
        if target is None:
            return x.new_zeros(shape)
        extra = x.ndim - 2
        tgt = target.reshape(target.shape[0], *([1] * extra), self.dim)
        gap = (tgt - x) / self.std
        t = step.to(x).expand(x.shape[:-1])
        timer = torch.stack([t / steps, torch.exp(-(steps - t) / self.config.timer_frames),
                             torch.ones_like(t)], -1)
        cond = torch.cat([gap, timer], -1)
        if flag is not None:
            cond = cond * flag.to(x).reshape(-1, *([1] * (x.ndim - 1)))
        return cond

    def alpha(self, step: int, steps: int, flag: torch.Tensor | None,
              like: torch.Tensor) -> torch.Tensor:
        """``(B, 1)`` target weight ``alpha_t`` of step ``step`` (0 for free samples)."""
        a = ((step + 1) / steps) ** self.config.target_power
        a = like.new_full((like.shape[0], 1), a)
        return a if flag is None else a * flag.to(like)[:, None]

    def toward(self, x: torch.Tensor, step: torch.Tensor, target: torch.Tensor, left: int,
               alpha: torch.Tensor, flag: torch.Tensor | None, start: torch.Tensor
               ) -> torch.Tensor:
        """The target-driven update of the module docstring, ``(B, D)`` tensors throughout.

        Args:
            x: current frame.
            step: the network's change ``x~_{t+1} - x_t``.
            target: ``x_T``.
            left: ``T - t`` steps left.
            alpha: ``(B, 1)`` target weight.
            flag: ``(B,)`` 1 for target-driven samples (None: all).
            start: the frame the roll-out started from.

        Returns:
            ``x_{t+1}``. With ``monotone_target``, the network's share is shrunk by the largest
            factor ``beta`` in [0, 1] that leaves the frame (1) no further from the target than
            it was and (2) not past the target along the line from ``start`` to it, both in the
            normalizer's metric (vertex displacement): the roll-out closes in on the target at
            every step and arrives without overshooting.
        """
        direct = (target - x) / left
        model = (1 - alpha) * step
        if self.config.monotone_target:
            def dot(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
                return ((u @ self.metric) * v).sum(-1, keepdim=True)

            gap = target - x
            rest = gap - alpha * direct  # the gap after the target-directed share
            mm = dot(model, model).clamp_min(1e-12)
            rm = dot(rest, model)
            slack = (dot(gap, gap) - dot(rest, rest)).clamp_min(0)
            # (1) Largest beta with |rest - beta m| <= |gap|: the upper root of a quadratic.
            beta = ((rm + torch.sqrt(rm.square() + mm * slack + 1e-20)) / mm).clamp(0, 1)
            # (2) Progress along the line, <y - start, L> / |L|^2, stays <= 1: the target-directed
            # share alone keeps it so, and the network's may use what is left.
            line = target - start
            room = dot(line, line) - dot(x + alpha * direct - start, line)
            along = dot(model, line)
            beta = torch.where(along > 0, torch.minimum(beta, room.clamp_min(0)
                                                        / along.clamp_min(1e-12)), beta)
            if flag is not None:
                beta = torch.where(flag.to(x)[:, None] > 0, beta, torch.ones_like(beta))
            model = beta * model
        return x + model + alpha * direct

    def head_outputs(self, hidden: torch.Tensor, inputs: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(..., H)`` LSTM outputs and ``(..., I)`` inputs -> mean and log-std
        ``(..., D)`` of the next change, in motion-scale units (0 on inactive dimensions)."""
        mu, log_sigma = self.head(self.drop(hidden)).chunk(2, -1)
        if self.skip is not None:
            mu = mu + self.skip(inputs)
        log_sigma = log_sigma.clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX)
        return mu * self.active, log_sigma * self.active

    # --- whole sequences ---------------------------------------------------------------------
    def teacher_forced(self, feat: torch.Tensor, observe: int, target_flag: torch.Tensor | None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One-step predictions along a known window (for the likelihood loss).

        Args:
            feat: ``(B, W, D)`` features; the last frame is the target of target-driven samples.
            observe: ``K``: frames ``0..K-1`` are observed, the roll-out covers ``K..W-1``.
            target_flag: ``(B,)`` 1 where the sample is target-driven, or None (all free).

        Returns:
            ``mu, log_sigma``: ``(B, W - 1, D)`` for the changes into frames ``1..W-1``, in
            units of ``scale`` ``(B, D)``, the window's :meth:`motion_scale`.
        """
        w = feat.shape[1]
        x, prev = feat[:, :-1], torch.cat([feat[:, :1], feat[:, :-2]], 1)
        steps = w - observe
        if target_flag is None:
            cond = self.condition(x, None, torch.zeros(()), steps, None)
        else:
            step = torch.arange(w - 1, device=feat.device) - (observe - 1)
            cond = self.condition(x, feat[:, -1], step.clamp_min(0), steps, target_flag)
            cond = cond * (step >= 0).to(cond)[None, :, None]
        scale = self.motion_scale(feat[:, :observe])
        inputs = self._inputs(x, prev, cond, feat[:, 0], scale)
        out, _ = self.run(inputs)
        return (*self.head_outputs(out, inputs), scale)

    def rollout(self, observed: torch.Tensor, steps: int, target: torch.Tensor | None = None,
                target_flag: torch.Tensor | None = None, noise: torch.Tensor | None = None,
                temperature: float = 1.0) -> torch.Tensor:
        """Free-running or target-driven roll-out.

        Args:
            observed: ``(B, K, D)`` observed features, ``K >= 1``.
            steps: ``T`` frames to predict.
            target: ``(B, D)`` features of frame ``K - 1 + T``: target-driven mode; None: free.
            target_flag: ``(B,)`` mixes modes in one batch (1 target-driven, 0 free).
            noise: ``(B, T, D)`` standard normal innovations ``eps``; None = expected path.
            temperature: multiplies the sampled innovation.

        Returns:
            ``(B, T, D)`` predicted features of frames ``K .. K + T - 1``.
        """
        b, k, _ = observed.shape
        state = None
        ref, scale = observed[:, 0], self.motion_scale(observed)
        if k > 1:
            warm = observed[:, :-1]
            prev = torch.cat([warm[:, :1], warm[:, :-1]], 1)
            zeros = warm.new_zeros(*warm.shape[:2], self.dim + 3)
            _, state = self.run(self._inputs(warm, prev, zeros, ref, scale))
        x = observed[:, -1]
        prev = observed[:, -2] if k > 1 else x
        lower, upper = self.lower, self.upper
        if target is None:
            # Free-running: the head stays within the training heads' reach of where it started.
            lower = torch.maximum(lower, x - self.reach)
            upper = torch.minimum(upper, x + self.reach)
            # ... and turned no further than real heads were, unless it starts further.
            lower = torch.maximum(lower, torch.minimum(self.turn_lower, x))
            upper = torch.minimum(upper, torch.maximum(self.turn_upper, x))
        frames = []
        for t in range(steps):
            cond = self.condition(x, target, torch.tensor(float(t)), steps, target_flag)
            inputs = self._inputs(x[:, None], prev[:, None], cond[:, None], ref, scale)[:, 0]
            out, state = self.step(inputs, state)
            mu, log_sigma = self.head_outputs(out, inputs)
            change = mu
            if noise is not None and temperature != 0:
                change = mu + (temperature * log_sigma.exp() * noise[:, t] * self.noise_scale
                               * self.active)
            nxt = torch.maximum(torch.minimum(x + change * scale, upper), lower)
            if target is not None:
                nxt = self.toward(x, nxt - x, target, steps - t,
                                  self.alpha(t, steps, target_flag, x), target_flag,
                                  observed[:, -1])
            prev, x = x, nxt
            frames.append(x)
        return torch.stack(frames, 1) if frames else observed.new_zeros(b, 0, self.dim)
