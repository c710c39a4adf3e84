"""Training of the dynamics model on a dataset folder (``faceanime train dynamics``).

Each step draws ``batch`` windows of ``window`` frames from the training videos, an observed
length ``K`` in ``[1, observe]`` (so one model serves a single photo and a few frames alike), and
for each window whether it is trained target-driven (its last frame as the target). The model
then (1) predicts every next frame along the true window (teacher forcing) for the likelihood
loss, and (2) rolls out the ``W - K`` unobserved frames from its own predictions, on which the
coefficient and vertex losses are taken: the errors it learns to avoid are those of a real
roll-out, not of one-step guesses.

Reproducible on CPU: the weights, the windows and dropout all come from ``seed``; a checkpoint
stores the optimiser and both random generators, so a resumed run repeats the uninterrupted run's
losses exactly. Writes into the output folder: checkpoints (:mod:`~faceanime.dynamics.checkpoint`),
``log.csv`` (one row per step) and ``loss.png``.

Under ``torchrun`` the same function trains with DistributedDataParallel
(:mod:`faceanime.distributed`, docs/scale.md): ``batch`` is the global batch, every rank draws
it whole and trains on its share, and rank 0 alone validates and writes.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from faceanime import __version__
from faceanime.dataset.shards import ShardIndex, is_shard_source, is_url, load_index, stream_batches
from faceanime.devices import resolve_device
from faceanime.distributed import SINGLE, Ranks, from_environment, process_group, unwrap
from faceanime.dynamics.checkpoint import (
    FINAL,
    Checkpoint,
    load_checkpoint,
    load_train_state,
    save_checkpoint,
)
from faceanime.dynamics.config import DynamicsConfig, LossConfig, TrainConfig
from faceanime.dynamics.data import Dataset, WindowSampler, load_dataset, split_videos
from faceanime.dynamics.features import Normalizer, group_mask, to_features
from faceanime.dynamics.losses import coefficient_loss, gaussian_nll, vertex_error, vertex_loss
from faceanime.dynamics.model import DynamicsModel
from faceanime.dynamics.plot import plot_losses
from faceanime.dynamics.stream import WindowStream, load_stream_dataset
from faceanime.dynamics.vertices import VertexSubset, vertex_metric
from faceanime.errors import InputError
from faceanime.io.checkpoint import random_states, restore_random_states
from faceanime.io.csvlog import read_log, write_log
from faceanime.morphable import FaceModel, load_model
from faceanime.parallel import torch_threads

LOSS_TERMS = ("loss", "coefficient", "vertex", "nll")
LOG_FIELDS = ("step", "lr", "loss", "coefficient", "vertex", "nll", "val_loss",
              "val_coefficient", "val_vertex", "val_nll", "val_vertex_mm", "val_hold_mm",
              "seconds")


@dataclass
class TrainResult:
    """What a training run wrote and how it ended."""

    checkpoint: Path  # the final weights file
    step: int
    log: Path
    plot: Path
    metrics: dict[str, float]  # the last validation (empty without validation videos)


def batch_losses(model: DynamicsModel, vertices: VertexSubset, raw: torch.Tensor,
                 shape: torch.Tensor, observe: int, target_flag: torch.Tensor | None,
                 loss: LossConfig, target_mode: bool | None = None, ranks: Ranks = SINGLE
                 ) -> dict[str, torch.Tensor]:
    """The loss terms of a batch of windows (or of this rank's share of a global batch).

    Args:
        model: the network.
        vertices: vertex subset for the vertex loss.
        raw: ``(B, W, D)`` raw coefficient windows.
        shape: ``(B, Ks)`` identities.
        observe: ``K``, observed frames.
        target_flag: ``(B,)`` 1 for target-driven windows, or None (all free-running).
        loss: weights.
        target_mode: roll out in target-driven mode, in which free-running windows are not
            held to the training heads' reach (None: when any of ``target_flag`` is set). A
            share of a global batch takes the whole batch's answer, so that it rolls out as the
            one-process batch would.
        ranks: the data-parallel run (:mod:`faceanime.distributed`); relative losses divide by
            sums over its global batch.

    Returns:
        ``loss`` (the weighted sum), ``coefficient``, ``vertex``, ``nll`` scalars, and
        ``vertex_mm``: ``(B, W - K)`` mean vertex error per predicted frame.
    """
    feat = to_features(raw, raw[:, 0], model.camera)
    mu, log_sigma, scale = model.teacher_forced(feat, observe, target_flag)
    change = (feat[:, 1:] - feat[:, :-1]) / scale[:, None]
    nll = gaussian_nll(mu, log_sigma, change, model.active)
    use_target = target_flag is not None and (bool(target_flag.any()) if target_mode is None
                                              else target_mode)
    pred = model.rollout(feat[:, :observe], feat.shape[1] - observe,
                         target=feat[:, -1] if use_target else None,
                         target_flag=target_flag if use_target else None)
    truth = feat[:, observe:]
    last = feat[:, observe - 1]
    coef = coefficient_loss(pred, truth, model.std, model.active,
                            last if loss.relative else None, ranks)
    neutral = vertices.neutral(shape)
    posed_pred, posed_true = vertices.posed(pred, neutral), vertices.posed(truth, neutral)
    posed_hold = vertices.posed(last[:, None], neutral).expand_as(posed_true)
    vert = vertex_loss(posed_pred, posed_true, loss.vertex_unit,
                       posed_hold if loss.relative else None, ranks)
    total = loss.coefficient * coef + loss.vertex * vert + loss.nll * nll
    return {"loss": total, "coefficient": coef, "vertex": vert, "nll": nll,
            "vertex_mm": vertex_error(posed_pred.detach(), posed_true)}


class Objective(torch.nn.Module):
    """:func:`batch_losses` as a module's ``forward``: DistributedDataParallel averages the
    gradients of what runs through ``forward`` only, and the losses call the model's
    ``teacher_forced`` and ``rollout``."""

    def __init__(self, model: DynamicsModel, vertices: VertexSubset, loss: LossConfig,
                 ranks: Ranks):
        super().__init__()
        self.model, self.vertices, self.loss, self.ranks = model, vertices, loss, ranks

    def forward(self, raw: torch.Tensor, shape: torch.Tensor, observe: int,
                target_flag: torch.Tensor | None, target_mode: bool | None
                ) -> dict[str, torch.Tensor]:
        """:func:`batch_losses` of ``(B, W, D)`` windows and ``(B, Ks)`` identities."""
        return batch_losses(self.model, self.vertices, raw, shape, observe, target_flag,
                            self.loss, target_mode, self.ranks)


@torch.no_grad()
def evaluate(model: DynamicsModel, vertices: VertexSubset, raw: torch.Tensor,
             shape: torch.Tensor, observe: int, loss: LossConfig,
             chunk: int = 256) -> dict[str, float]:
    """Validation on fixed windows, free-running on the expected path (no dropout, no noise).

    Returns:
        The loss terms (``loss``, ``coefficient``, ``vertex``, ``nll``), ``vertex_mm`` (mean
        vertex error of the roll-outs) and ``hold_mm`` (the same for holding the last observed
        frame, the baseline to beat).
    """
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    n = raw.shape[0]
    for i in range(0, n, chunk):
        r, s = raw[i:i + chunk], shape[i:i + chunk]
        terms = batch_losses(model, vertices, r, s, observe, None, loss)
        feat = to_features(r, r[:, 0], model.camera)
        hold = feat[:, observe - 1:observe].expand(-1, feat.shape[1] - observe, -1)
        neutral = vertices.neutral(s)
        hold_mm = vertex_error(vertices.posed(hold, neutral),
                               vertices.posed(feat[:, observe:], neutral))
        weight = r.shape[0] / n
        for key in ("loss", "coefficient", "vertex", "nll"):
            sums[key] = sums.get(key, 0.0) + float(terms[key]) * weight
        sums["vertex_mm"] = sums.get("vertex_mm", 0.0) + float(terms["vertex_mm"].mean()) * weight
        sums["hold_mm"] = sums.get("hold_mm", 0.0) + float(hold_mm.mean()) * weight
    model.train(was_training)
    return sums


def augment(raw: torch.Tensor, n_expression: int, mirror: torch.Tensor | None,
            reverse: torch.Tensor | None) -> torch.Tensor:
    """Flip windows left-right and/or play them backwards, per sample.

    Three videos carry their own habits (a drift to one side, a head turning one way); flipped
    and reversed copies take such habits out of what the model can learn. Mirroring ``x -> -x``
    negates the x translation and the rotation vector's y and z (yaw and roll); expressions stay
    as they are, which assumes a left-right symmetric expression basis (true of SFM's emotion
    blendshapes, not of a PCA basis such as BFM's: turn ``mirror`` off there).

    Args:
        raw: ``(B, W, D)`` raw windows.
        n_expression: ``Ke``.
        mirror, reverse: ``(B,)`` bool, or None for none.
    """
    out = raw
    if mirror is not None and bool(mirror.any()):
        ke = n_expression
        sign = torch.ones(raw.shape[-1], dtype=raw.dtype, device=raw.device)
        sign[[ke + 2, ke + 3, ke + 4]] = -1  # rotation y, z; translation x
        out = torch.where(mirror[:, None, None].to(raw.device), out * sign, out)
    if reverse is not None and bool(reverse.any()):
        out = torch.where(reverse[:, None, None].to(raw.device), out.flip(1), out)
    return out


def source_window(window: int, speed: float) -> int:
    """Frames a window of ``window`` frames needs at the fastest augmented speed."""
    return math.ceil(speed * (window - 1) - 1e-9) + 1


def resample(raw: torch.Tensor, window: int, speed: torch.Tensor) -> torch.Tensor:
    """Play windows at other speeds, by linear interpolation between frames.

    Videos differ most in how fast and how smoothly they move; a model that sees each training
    video only at its own pace learns those paces instead of reading the pace off the observed
    frames. Slowed-down windows (``speed < 1``) are smoother, sped-up ones jerkier.

    Args:
        raw: ``(B, S, D)`` source windows, ``S >= source_window(window, speed.max())``.
        window: ``W`` frames to return.
        speed: ``(B,)`` playback speed of each window.

    Returns:
        ``(B, W, D)``: frame ``i`` is the source at time ``speed * i``.
    """
    pos = speed[:, None].to(raw) * torch.arange(window, dtype=raw.dtype, device=raw.device)
    pos = pos.clamp(max=raw.shape[1] - 1)
    lo = pos.floor().long().clamp(max=raw.shape[1] - 2)
    frac = (pos - lo.to(pos))[..., None]
    take = lo[..., None].expand(-1, -1, raw.shape[-1])
    return (1 - frac) * raw.gather(1, take) + frac * raw.gather(1, take + 1)


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warm-up over the first 5 % (at most 100 steps), then cosine decay to 5 %."""
    warm = min(100, config.steps // 20)
    if step < warm:
        return config.lr * (step + 1) / warm
    progress = (step - warm) / max(1, config.steps - warm)
    return config.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def _plot(path: Path, rows: list[dict[str, Any]]) -> None:
    steps = [int(r["step"]) for r in rows]
    train = [float(r["loss"]) for r in rows]
    val = [(int(r["step"]), float(r["val_loss"])) for r in rows if r.get("val_loss") not in
           ("", None)]
    plot_losses(path, steps, train, [s for s, _ in val], [v for _, v in val])


def _check_model(face_model: FaceModel, dataset: Dataset) -> None:
    if face_model.name != dataset.model:
        raise InputError(f"the dataset was fitted with model {dataset.model!r} but the vertex "
                         f"loss got {face_model.name!r}: pass --model for {dataset.model!r}")
    shapes = max(v.shape.shape[0] for v in dataset.videos)
    if dataset.n_expression > face_model.n_expression or shapes > face_model.n_shape:
        raise InputError(f"the dataset's coefficients ({shapes} shape, {dataset.n_expression} "
                         f"expression) do not fit model {face_model.name} "
                         f"({face_model.n_shape}, {face_model.n_expression})")


def train(data: str | os.PathLike, output: str | os.PathLike,
          config: TrainConfig | None = None, model_config: DynamicsConfig | None = None,
          loss_config: LossConfig | None = None, resume: str | os.PathLike | None = None,
          face_model: FaceModel | None = None) -> TrainResult:
    """Train (or resume training) a dynamics model.

    Args:
        data: dataset folder (:mod:`~faceanime.dynamics.data`), or shards to stream from (a
            folder or URL with an ``index.json``: :mod:`~faceanime.dynamics.stream`).
        output: folder for checkpoints, ``log.csv`` and ``loss.png`` (created).
        config: training settings (a resumed run continues up to ``config.steps``).
        model_config: network settings (ignored when resuming: the checkpoint's are used).
        loss_config: loss weights (ignored when resuming).
        resume: a checkpoint to continue from (its ``.state.pt`` must be beside it).
        face_model: the morphable model for the vertex loss (default: loaded by the name in
            ``config.model`` or the dataset's manifest).

    Raises:
        InputError: unusable dataset or settings. ModelFileError: unusable checkpoint.
        BackendUnavailableError: under torchrun, no collective backend for the device.
    """
    config = config or TrainConfig()
    # Under torchrun: checked before the slow part, and alike on every rank.
    ranks = from_environment()
    ranks.per_rank(config.batch)
    device = ranks.device(resolve_device(config.device))
    with process_group(ranks, device):
        result = _train(data, output, config, model_config, loss_config, resume, face_model,
                        ranks, device)
        # The other ranks return rank 0's checkpoint: wait until it is written.
        ranks.barrier()
    return result


def _train(data: str | os.PathLike, output: str | os.PathLike, config: TrainConfig,
           model_config: DynamicsConfig | None, loss_config: LossConfig | None,
           resume: str | os.PathLike | None, face_model: FaceModel | None, ranks: Ranks,
           device: torch.device) -> TrainResult:
    output = Path(output)
    # Shards stream (bounded memory, each rank its own videos); a folder is loaded whole.
    index: ShardIndex | None = load_index(data) if is_shard_source(data) else None
    dataset = load_dataset(data) if index is None else None
    all_names = index.stems if index is not None else [v.name for v in dataset.videos]
    ckpt: Checkpoint | None = load_checkpoint(resume) if resume is not None else None
    if ckpt is not None:
        model_config, loss_config = ckpt.config, ckpt.loss
        names = ckpt.info.get("videos", {})
        train_names, val_names = list(names.get("train", [])), list(names.get("val", []))
        missing = sorted(set(train_names + val_names) - set(all_names))
        model_name = index.model if index is not None else dataset.model
        if ckpt.info.get("model") != model_name or missing:
            raise InputError(f"{ckpt.path}: trained on another dataset (model "
                             f"{ckpt.info.get('model')!r}, videos missing here: {missing[:3]}); "
                             "resume with the dataset it was trained on")
        start = ckpt.step
        if start >= config.steps:
            raise InputError(f"{ckpt.path} is at step {start}: pass --steps above it to continue")
    else:
        model_config, loss_config = model_config or DynamicsConfig(), loss_config or LossConfig()
        train_names, val_names = split_videos(
            all_names, config.val_videos, config.val_fraction, config.seed,
            config.stream_val_videos if index is not None else None)
        start = 0
    config = replace(config, val_videos=tuple(val_names))
    sampler: WindowSampler | None = None
    if index is not None:
        # The statistics' videos stand in for the training set where a statistic is needed.
        dataset, train_videos, val_videos = load_stream_dataset(index, val_names,
                                                                config.stats_videos, ranks.main)
    else:
        train_videos, val_videos = dataset.select(train_names), dataset.select(val_names)
        sampler = WindowSampler(train_videos, source_window(config.window, config.speed))
    face_model = face_model or load_model(config.model or dataset.model)
    _check_model(face_model, dataset)
    if ckpt is not None:
        normalizer = ckpt.normalizer
    else:
        fps = sorted(v.fps for v in train_videos)[len(train_videos) // 2]
        normalizer = Normalizer.fit([v.raw for v in train_videos], dataset.camera,
                                    model_config.coefficients, config.window,
                                    model_config.bound_margin, fps)
    vertices = VertexSubset.from_model(face_model.to("cpu"), loss_config.vertex_count,
                                       dataset.camera)
    if ckpt is None:
        # Linearised at the training mean, at the reference pose (relative dimensions 0).
        at = torch.where(group_mask(dataset.n_expression, ("translation", "scale")),
                         torch.zeros_like(normalizer.mean), normalizer.mean)
        normalizer.metric = vertex_metric(vertices, at)
    vertices = vertices.to(device)
    val_raw = val_shape = None
    if val_videos and ranks.main:
        val_raw, val_shape = WindowSampler(val_videos, config.window).fixed(config.window // 2)
        val_raw, val_shape = val_raw.to(device), val_shape.to(device)

    log_path, plot_path = output / "log.csv", output / "loss.png"
    rows: list[dict[str, Any]] = []
    if ranks.main:
        output.mkdir(parents=True, exist_ok=True)
        rows = read_log(log_path, start)
    n_shape = int(sampler.shapes.shape[1]) if sampler is not None else \
        max(v.shape.shape[0] for v in dataset.videos)
    info = {"model": dataset.model, "n_expression": dataset.n_expression,
            "n_shape": n_shape, "camera": dataset.camera,
            "videos": {"train": train_names, "val": val_names},
            "dataset": str(data) if is_url(data) else str(Path(data).resolve()),
            "data_format": "folder" if index is None else "shards",
            "faceanime_version": __version__, "processes": ranks.world_size}
    metrics: dict[str, float] = dict(ckpt.info.get("metrics", {})) if ckpt else {}

    rng_devices = [device] if device.type == "cuda" else []
    with torch_threads(config.threads), torch.random.fork_rng(devices=rng_devices):
        # Dropout draws from torch's global generator: seeded (and restored on resume) inside
        # this fork, which leaves the caller's generator as it was.
        torch.manual_seed(config.seed)
        model = DynamicsModel(model_config, normalizer)
        if ckpt is not None:
            model.load_state_dict(ckpt.build_model().state_dict())
        model.to(device).train()
        objective = ranks.wrap(Objective(model, vertices, loss_config, ranks), device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                      weight_decay=config.weight_decay)
        generator = torch.Generator().manual_seed(config.seed)
        if ckpt is not None:
            state = load_train_state(ckpt)
            optimizer.load_state_dict(state["optimizer"])
            restore_random_states(state, generator, device)
        if ranks.rank > 0:
            # Dropout: rank 0 continues the one-process stream, the others draw their own
            # (the checkpoint keeps rank 0's only, so these restart from the step on resume).
            torch.manual_seed((config.seed * 1_000_003 + ranks.rank) * 1_000_033 + start)

        def checkpoint(name: str, step: int) -> Path:
            state = {"optimizer": optimizer.state_dict(), "step": step,
                     **random_states(generator, device)}
            return save_checkpoint(output, name, unwrap(objective).model, normalizer,
                                   loss_config, config,
                                   {**info, "step": step, "metrics": metrics}, state)

        share = ranks.share(config.batch)
        # Streaming: this rank's own windows, batch by batch (the global draws below stay
        # global, so the ranks still agree on K and the roll-out mode).
        stream = None if index is None else stream_batches(WindowStream(
            index, ranks, ranks.per_rank(config.batch),
            source_window(config.window, config.speed), dataset, config.stream_windows,
            config.balanced, config.shuffle_buffer, config.seed, start, val_names),
            config.workers)
        bar = tqdm(total=config.steps, initial=start, disable=not (config.progress and ranks.main),
                   desc="train dynamics", unit="step", dynamic_ncols=True)
        t0 = time.perf_counter()
        for step in range(start, config.steps):
            lr = learning_rate(step, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            # The whole global batch is drawn on every rank (the draws are cheap and keep the
            # generator's stream that of one process); each rank then computes its share.
            observe = int(torch.randint(1, config.observe + 1, (1,), generator=generator))
            if sampler is not None:
                raw, shape = sampler.sample(config.batch, generator, config.balanced)
            speed = torch.exp((2 * torch.rand(config.batch, generator=generator) - 1)
                              * math.log(config.speed))
            flags = (torch.rand(config.batch, generator=generator) < config.target_fraction)
            flips = torch.rand(2, config.batch, generator=generator) < 0.5
            target_mode = bool(flags.any())
            speed, flags, flips = speed[share], flags[share], flips[:, share]
            if stream is None:
                raw, shape = raw[share], shape[share]
            else:
                raw, shape = next(stream)
            raw = resample(raw, config.window, speed)
            raw = augment(raw, dataset.n_expression, flips[0] if config.mirror else None,
                          flips[1] if config.reverse else None)
            terms = objective(raw.to(device), shape.to(device), observe,
                              flags.float().to(device), target_mode)
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            done = step + 1
            logged = ranks.mean(torch.stack([terms[k].detach() for k in LOSS_TERMS]))
            if not ranks.main:
                continue
            row: dict[str, Any] = {"step": done, "lr": f"{lr:.6g}",
                                   **{k: f"{float(v):.6g}" for k, v in
                                      zip(LOSS_TERMS, logged, strict=True)}}
            if val_raw is not None and (done % config.val_every == 0 or done == config.steps):
                metrics = evaluate(model, vertices, val_raw, val_shape, config.observe,
                                   loss_config)
                row.update({f"val_{k}": f"{metrics[k]:.6g}" for k in
                            ("loss", "coefficient", "vertex", "nll")})
                row["val_vertex_mm"] = f"{metrics['vertex_mm']:.4f}"
                row["val_hold_mm"] = f"{metrics['hold_mm']:.4f}"
            row["seconds"] = f"{time.perf_counter() - t0:.2f}"
            rows.append(row)
            bar.update(1)
            bar.set_postfix(loss=f"{float(logged[0]):.4f}",
                            val_mm=f"{metrics['vertex_mm']:.2f}" if metrics else "-")
            if done % config.checkpoint_every == 0 or done == config.steps:
                checkpoint(f"step_{done:07d}", done)
                write_log(log_path, LOG_FIELDS, rows)
                _plot(plot_path, rows)
        bar.close()
        weights = output / f"{FINAL}.safetensors"
        if ranks.main:
            weights = checkpoint(FINAL, config.steps)
    if ranks.main:
        write_log(log_path, LOG_FIELDS, rows)
        _plot(plot_path, rows)
    return TrainResult(checkpoint=weights, step=config.steps, log=log_path, plot=plot_path,
                       metrics=metrics)
