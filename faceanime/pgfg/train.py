"""Training of the prior-guided generator on a prepared dataset (``faceanime train generator``).

Each step draws ``batch`` pairs (two frames of one training video), augments them (mirror,
brightness/contrast), renders their sparse priors, then (1) updates the discriminator on real
``[p_t, I_t]`` against generated ``[p_t, G(I_s, p_s, p_t)]`` pairs (hinge or WGAN-GP) and (2) the
generator on ``l1 * L1 + adversarial * L_adv + identity * L_id``; an exponential moving average
of the generator's weights is what validation and inference use.

Validation (held-out videos, every ``val_every`` steps): self-reenactment from each video's first
frame to evenly spaced later frames, in crop space; L1 and dlib identity distance of the EMA
generator, beside the same numbers for the classic dense render and for copying the source.

Reproducible on CPU: weights, pairs and augmentation come from ``seed``; a checkpoint stores the
optimisers and random generators, so a resumed run repeats the uninterrupted run. Writes
checkpoints (:mod:`~faceanime.pgfg.checkpoint`), ``log.csv``, ``loss.png`` and sample grids
``samples/step_*.png`` into the output folder.

Under ``torchrun`` the same function trains with DistributedDataParallel
(:mod:`faceanime.distributed`, docs/scale.md): ``batch`` is the global batch, every rank draws
its pairs and augmentation whole and builds and trains on its share; rank 0 alone keeps the
EMA, validates and writes.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm import tqdm

from faceanime import __version__
from faceanime.dataset.shards import ShardIndex, is_shard_source, is_url, load_index, stream_batches
from faceanime.devices import resolve_device
from faceanime.distributed import SINGLE, Ranks, from_environment, process_group, unwrap
from faceanime.dynamics.data import split_videos
from faceanime.dynamics.plot import plot_losses
from faceanime.errors import InputError
from faceanime.identity import identity_distance, load_embedder
from faceanime.io.atomic import atomic_path
from faceanime.io.checkpoint import random_states, restore_random_states
from faceanime.io.csvlog import read_log, write_log
from faceanime.morphable import FaceModel, load_model
from faceanime.parallel import torch_threads
from faceanime.pgfg.checkpoint import (
    FINAL,
    Checkpoint,
    load_checkpoint,
    load_train_state,
    save_checkpoint,
)
from faceanime.pgfg.config import DiscriminatorConfig, GeneratorConfig, LossConfig, TrainConfig
from faceanime.pgfg.data import (
    PairBatch,
    PairSampler,
    VideoPairs,
    load_pair_dataset,
    make_batch,
    validation_pairs,
)
from faceanime.pgfg.losses import d_loss, g_loss, gradient_penalty, identity_loss, l1_loss
from faceanime.pgfg.networks import Discriminator, Generator
from faceanime.pgfg.stream import PairStream, load_stream_val
from faceanime.render.classic import ClassicRenderer

LOSS_TERMS = ("loss", "l1", "adversarial", "identity")
LOG_FIELDS = ("step", "lr", "loss", "l1", "adversarial", "identity", "d_loss", "val_l1",
              "val_identity", "classic_l1", "classic_identity", "source_l1", "seconds")


@dataclass
class TrainResult:
    """What a training run wrote and how it ended."""

    checkpoint: Path
    step: int
    log: Path
    plot: Path
    metrics: dict[str, float]  # the last validation (empty without validation videos)
    stopped_early: bool = False  # max_minutes ran out before config.steps


def config_mismatch(expected: Any, got: Any) -> list[str]:
    """``field: expected != got`` for each differing field of two config dataclasses."""
    a, b = asdict(expected), asdict(got)
    return [f"{k}: {a[k]!r} != {b[k]!r}" for k in a if a[k] != b.get(k)]


def learning_rate(step: int, base: float, steps: int) -> float:
    """Constant, then linear decay to 10 % over the last half of the run (pix2pix practice)."""
    half = steps / 2
    return base if step < half else base * (1 - 0.9 * (step - half) / max(half, 1))


@torch.no_grad()
def ema_update(ema: Generator, model: Generator, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p.detach(), 1 - decay)


def _unflip(x: torch.Tensor, flipped: torch.Tensor) -> torch.Tensor:
    return torch.where(flipped.view(-1, 1, 1, 1), x.flip(-1), x)


def generator_losses(generator: torch.nn.Module, discriminator: torch.nn.Module | None,
                     batch: PairBatch, loss: LossConfig, embedder, ranks: Ranks = SINGLE
                     ) -> dict[str, torch.Tensor]:
    """The generator's loss terms on a batch: ``loss`` (weighted sum), ``l1``, ``adversarial``,
    ``identity`` scalars, and ``fake``, the generated ``(B, 3, S, S)``.

    Under data parallelism ``batch`` is this rank's share of the global batch (``ranks``); the
    identity loss is taken on the first ``identity_samples`` pairs of the *global* batch, each
    rank weighting those it holds so that DDP's average over ranks is their mean.
    """
    fake = generator(batch.source, batch.p_s, batch.p_t, batch.flow)
    l1 = l1_loss(fake.float(), batch.target)
    zero = torch.zeros((), device=fake.device)
    adv = g_loss(discriminator(batch.p_t, fake).float(), loss.gan) \
        if discriminator is not None else zero
    ident = zero
    if loss.identity > 0 and embedder is not None:
        b = fake.shape[0]
        whole = b * ranks.world_size
        n = min(loss.identity_samples or whole, whole)
        mine = min(max(n - ranks.rank * b, 0), b)  # of the first n, the ones this rank holds
        if mine:
            # The identity network expects the landmarks' (unflipped) geometry.
            ident = identity_loss(embedder, _unflip(fake[:mine], batch.flipped[:mine]),
                                  _unflip(batch.target[:mine], batch.flipped[:mine]),
                                  batch.landmarks[:mine], loss.identity_metric)
            if mine * ranks.world_size != n:
                ident = ident * (mine * ranks.world_size / n)
    total = loss.l1 * l1 + (loss.adversarial * adv if discriminator is not None else 0) \
        + loss.identity * ident
    return {"loss": total, "l1": l1, "adversarial": adv, "identity": ident, "fake": fake}


def discriminator_step(generator: torch.nn.Module, discriminator: torch.nn.Module,
                       optimizer: torch.optim.Optimizer, batch: PairBatch, loss: LossConfig,
                       rng: torch.Generator, alpha: torch.Tensor | None = None) -> float:
    """One discriminator update; returns its loss.

    ``discriminator`` may be DistributedDataParallel; ``alpha`` ``(B,)`` are WGAN-GP's mixing
    weights (None: drawn from ``rng``; a rank passes its share of the global batch's)."""
    with torch.no_grad():
        fake = unwrap(generator)(batch.source, batch.p_s, batch.p_t, batch.flow)
    real_s = discriminator(batch.p_t, batch.target).float()
    fake_s = discriminator(batch.p_t, fake).float()
    total = d_loss(real_s, fake_s, loss.gan)
    if loss.gan == "wgan-gp":
        # The bare network: DDP cannot follow torch.autograd.grad, but the penalty's gradient
        # still reaches the parameters' .grad in the same backward, which DDP then averages.
        total = total + loss.gp * gradient_penalty(unwrap(discriminator), batch.p_t,
                                                   batch.target, fake.float(), rng, alpha)
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    return float(total.detach())


@torch.no_grad()
def evaluate(generator: Generator, batch: PairBatch, embedder, chunk: int = 8
             ) -> tuple[dict[str, float], torch.Tensor]:
    """Held-out L1 and identity distance (dlib's Euclidean metric) of ``generator`` on a fixed
    batch; returns the metrics and the generated images."""
    was = generator.training
    generator.eval()
    fake = generator.generate(batch.source, batch.p_s, batch.p_t, chunk, batch.flow).cpu()
    generator.train(was)
    return image_metrics(fake, batch.target, batch.landmarks, embedder), fake


@torch.no_grad()
def image_metrics(images: torch.Tensor, target: torch.Tensor, landmarks: torch.Tensor,
                  embedder) -> dict[str, float]:
    """``l1`` (mean absolute error) and ``identity`` (mean dlib distance, embedded with the
    target's landmarks) of ``(B, 3, S, S)`` images against their targets."""
    out = {"l1": float((images - target).abs().mean())}
    if embedder is not None:
        dev = next(embedder.parameters()).device
        a = embedder.embed(images.to(dev).float(), landmarks.to(dev))
        b = embedder.embed(target.to(dev).float(), landmarks.to(dev))
        out["identity"] = float(identity_distance(a, b).mean())
    return out


@torch.no_grad()
def classic_render(model: FaceModel, video: VideoPairs, pairs: list[tuple[int, int]],
                   renderer: type = ClassicRenderer) -> torch.Tensor:
    """The classic dense render (or another weight-free ``renderer`` class, e.g.
    :class:`~faceanime.render.warp.WarpRenderer`) of self-reenactment pairs
    ``(source, target)`` of one video, in crop space: ``(P, 3, S, S)``, in the pairs' order."""
    out, order = [], []
    for s in sorted({s for s, _ in pairs}):
        targets = [t for ss, t in pairs if ss == s]
        order += [k for k, (ss, _) in enumerate(pairs) if ss == s]
        made = renderer(model, video.crops[s].float() / 255.0,
                        video.coeffs.frames(slice(s, s + 1)))
        out.append(made.render(video.coeffs.frames(torch.tensor(targets))).cpu())
    rendered = torch.cat(out, 0)
    return rendered[torch.argsort(torch.tensor(order))]


def sample_grid(path: Path, batch: PairBatch, generated: torch.Tensor,
                classic: torch.Tensor | None = None, count: int = 6) -> None:
    """PNG rows: source | p_t | generated | (classic) | target, for ``count`` pairs."""
    n = min(count, generated.shape[0])
    cols = [batch.source[:n].cpu(), batch.p_t[:n, :3].cpu(), generated[:n].cpu()]
    if classic is not None:
        cols.append(classic[:n].cpu())
    cols.append(batch.target[:n].cpu())
    rows = torch.cat([torch.cat(list(c), -1) for c in zip(*cols, strict=True)], -2)
    grid = (rows.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")


def _plot(path: Path, rows: list[dict[str, Any]]) -> None:
    steps = [int(r["step"]) for r in rows]
    train = [float(r["l1"]) for r in rows]
    val = [(int(r["step"]), float(r["val_l1"])) for r in rows
           if r.get("val_l1") not in ("", None)]
    plot_losses(path, steps, train, [s for s, _ in val], [v for _, v in val],
                title="PGFG training: L1 (train per step; validation = held-out EMA)")


def train(data: str | os.PathLike, output: str | os.PathLike,
          config: TrainConfig | None = None, generator_config: GeneratorConfig | None = None,
          discriminator_config: DiscriminatorConfig | None = None,
          loss_config: LossConfig | None = None, resume: str | os.PathLike | None = None,
          face_model: FaceModel | None = None) -> TrainResult:
    """Train (or resume training) a generator.

    Args:
        data: dataset folder written by ``faceanime prepare`` with crops, or shards to stream
            from (a folder or URL with an ``index.json``: :mod:`~faceanime.pgfg.stream`).
        output: folder for checkpoints, ``log.csv``, ``loss.png`` and ``samples/``.
        config: training settings (a resumed run continues up to ``config.steps``).
        generator_config, discriminator_config, loss_config: network and loss settings; when
            resuming, the checkpoint's are used, and given ones must equal them.
        resume: a checkpoint to continue from (its ``.state.pt`` beside it).
        face_model: the morphable model (default: by name from ``config.model`` or the
            dataset's manifest).

    Raises:
        InputError: unusable dataset or settings. ModelFileError: unusable checkpoint.
        BackendUnavailableError: under torchrun, no collective backend for the device.
    """
    config = config or TrainConfig()
    output = Path(output)
    # Under torchrun: checked before the slow part, and alike on every rank.
    ranks = from_environment()
    ranks.per_rank(config.batch)
    device = ranks.device(resolve_device(config.device))
    ckpt: Checkpoint | None = load_checkpoint(resume) if resume is not None else None
    if ckpt is not None:
        for what, given, stored in (("generator", generator_config, ckpt.generator),
                                    ("discriminator", discriminator_config, ckpt.discriminator),
                                    ("loss", loss_config, ckpt.loss)):
            diff = config_mismatch(stored, given) if given is not None else []
            if diff:
                raise InputError(f"{ckpt.path}: its {what} config differs from the one asked "
                                 f"for ({'; '.join(diff)}); resume with the checkpoint's "
                                 "settings or start a new run")
        generator_config, discriminator_config = ckpt.generator, ckpt.discriminator
        loss_config = ckpt.loss
        if ckpt.step >= config.steps:
            raise InputError(f"{ckpt.path} is at step {ckpt.step}: pass --steps above it")
    generator_config = generator_config or GeneratorConfig()
    discriminator_config = discriminator_config or DiscriminatorConfig()
    loss_config = loss_config or LossConfig()
    with torch_threads(config.threads), process_group(ranks, device):
        result = _train(data, output, config, generator_config, discriminator_config,
                        loss_config, ckpt, face_model, device, ranks)
        # The other ranks return rank 0's checkpoint: wait until it is written.
        ranks.barrier()
    return result


def _train(data, output: Path, config: TrainConfig, gen_config: GeneratorConfig,
           disc_config: DiscriminatorConfig, loss_config: LossConfig, ckpt: Checkpoint | None,
           face_model: FaceModel | None, device: torch.device, ranks: Ranks) -> TrainResult:
    from faceanime.dynamics.data import read_manifest

    # Shards stream (bounded memory, each rank its own videos); a folder is loaded whole.
    shards: ShardIndex | None = load_index(data) if is_shard_source(data) else None
    if shards is not None:
        manifest = {"model": shards.model, "crop_size": shards.crop_size,
                    "crop_scale": shards.crop_scale}
        if shards.crop_size is None:
            raise InputError(f"{data}: the shards hold no crops; the generator trains on crops: "
                             "prepare without --no-crops and shard again")
    else:
        manifest = read_manifest(data)
    size = manifest.get("crop_size")
    if size and int(size) != gen_config.size:
        # Checked before the slow loading: a wrong size is the most common first mistake.
        raise InputError(f"{data}: crops are {size} px but the generator is "
                         f"{gen_config.size} px: prepare with --crop-size {gen_config.size} or "
                         f"pass --size {size}")
    face_model = face_model or load_model(config.model or manifest.get("model") or "sfm")
    if shards is not None:
        if shards.model != face_model.name:
            raise InputError(f"{data}: fitted with model {shards.model!r}, not "
                             f"{face_model.name!r}: pass --model {shards.model}")
        dataset = None
        names = shards.stems
    else:
        dataset = load_pair_dataset(data, face_model, config.stride,
                                    progress=config.progress and ranks.main)
        names = [v.name for v in dataset.videos]
    if ckpt is not None:
        videos = ckpt.info.get("videos", {})
        train_names, val_names = list(videos.get("train", [])), list(videos.get("val", []))
        missing = sorted(set(train_names + val_names) - set(names))
        if missing:
            raise InputError(f"{ckpt.path}: trained on videos missing here ({missing[:3]}); "
                             "resume with the dataset it was trained on")
    else:
        train_names, val_names = split_videos(
            names, config.val_videos, config.val_fraction, config.seed,
            config.stream_val_videos if shards is not None else None)
    config = replace(config, val_videos=tuple(val_names))
    sampler: PairSampler | None = None
    if shards is not None:
        # Only rank 0 validates: the others need no validation video in memory.
        train_videos = []
        val_videos = load_stream_val(shards, val_names, face_model, config.stride) \
            if ranks.main and val_names else []
    else:
        train_videos, val_videos = dataset.select(train_names), dataset.select(val_names)
        sampler = PairSampler(train_videos, config.max_gap)
    mask, flow = gen_config.prior_mask, gen_config.prior_flow
    triangles = face_model.triangles.cpu() if gen_config.flow_init == "dense" else None
    validating = bool(val_videos) and ranks.main
    need_embedder = loss_config.identity > 0 or validating
    embedder = load_embedder("torch", device) if need_embedder else None

    val_batch = None
    baseline: dict[str, float] = {}
    classic = None
    if validating:
        pairs = validation_pairs(val_videos, config.val_pairs)
        val_batch = make_batch(val_videos, pairs, config.radius, mask, flow_channel=flow,
                               triangles=triangles)
        classic = torch.cat([classic_render(face_model, video, [(s, t) for v, s, t in pairs
                                                                 if v == i])
                             for i, video in enumerate(val_videos)], 0)
        cm = image_metrics(classic, val_batch.target, val_batch.landmarks, embedder)
        baseline = {"classic_l1": cm["l1"], "classic_identity": cm["identity"],
                    "source_l1": float((val_batch.source - val_batch.target).abs().mean())}

    log_path, plot_path = output / "log.csv", output / "loss.png"
    start = ckpt.step if ckpt is not None else 0
    rows: list[dict[str, Any]] = []
    if ranks.main:
        output.mkdir(parents=True, exist_ok=True)
        rows = read_log(log_path, start)
    info = {"model": face_model.name if dataset is None else dataset.model_name,
            "crop_size": int(size) if dataset is None else dataset.size,
            "crop_scale": float(manifest.get("crop_scale") or 1.0),
            "videos": {"train": train_names, "val": val_names},
            "dataset": str(data) if is_url(data) else str(Path(data).resolve()),
            "data_format": "folder" if shards is None else "shards",
            "faceanime_version": __version__, "processes": ranks.world_size}
    metrics: dict[str, float] = dict(ckpt.info.get("metrics", {})) if ckpt else {}

    rng_devices = [device] if device.type == "cuda" else []
    amp = config.amp and device.type == "cuda"
    stopped_early = False
    with torch.random.fork_rng(devices=rng_devices):
        torch.manual_seed(config.seed)
        generator = Generator(gen_config)
        discriminator = Discriminator(disc_config, generator.prior_channels) \
            if loss_config.uses_discriminator else None
        if ckpt is not None:
            generator.load_state_dict(ckpt.build_generator(ema=False).state_dict())
            if discriminator is not None:
                discriminator.load_state_dict(ckpt.build_discriminator().state_dict())
        generator.to(device).train()
        ema = copy.deepcopy(generator).eval().requires_grad_(False) \
            if config.ema and ranks.main else None
        if ema is not None and ckpt is not None:
            ema.load_state_dict(ckpt.build_generator(ema=True).state_dict())
        if discriminator is not None:
            discriminator.to(device).train()
        # The optimisers hold the bare networks' parameters, which the wrappers share.
        gen_ddp = ranks.wrap(generator, device)
        disc_ddp = ranks.wrap(discriminator, device) if discriminator is not None else None
        betas = (config.beta1, 0.999)
        opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr, betas=betas)
        opt_d = torch.optim.Adam(discriminator.parameters(), lr=config.lr_d, betas=betas) \
            if discriminator is not None else None
        rng = torch.Generator().manual_seed(config.seed)
        if ckpt is not None:
            state = load_train_state(ckpt)
            opt_g.load_state_dict(state["opt_g"])
            if opt_d is not None and "opt_d" in state:
                opt_d.load_state_dict(state["opt_d"])
            restore_random_states(state, rng, device)

        def checkpoint(name: str, step: int) -> Path:
            state = {"opt_g": opt_g.state_dict(), "step": step, **random_states(rng, device)}
            if opt_d is not None:
                state["opt_d"] = opt_d.state_dict()
            return save_checkpoint(output, name, generator, ema, discriminator, loss_config,
                                   config, {**info, "step": step, "metrics": metrics}, state)

        def validate(step: int) -> dict[str, float]:
            assert val_batch is not None
            found, fake = evaluate(ema or generator, val_batch.to(device), embedder)
            sample_grid(output / "samples" / f"step_{step:07d}.png", val_batch, fake, classic)
            return {f"val_{k}": v for k, v in found.items()} | baseline

        share = ranks.share(config.batch)
        # Streaming: this rank's own pairs, batch by batch (the augmentation below is still
        # drawn for the global batch, and each rank takes its share of it).
        stream = None if shards is None else stream_batches(PairStream(
            shards, ranks, ranks.per_rank(config.batch), face_model, config.stride,
            config.max_gap, config.stream_pairs, config.shuffle_buffer, config.seed, start,
            val_names, triangles is not None), config.workers)
        bar = tqdm(total=config.steps, initial=start, disable=not (config.progress and ranks.main),
                   desc="train generator", unit="step", dynamic_ncols=True)
        t0 = time.perf_counter()
        done = start
        for step in range(start, config.steps):
            lr = learning_rate(step, config.lr, config.steps)
            for group in opt_g.param_groups:
                group["lr"] = lr
            if opt_d is not None:
                for group in opt_d.param_groups:
                    group["lr"] = learning_rate(step, config.lr_d, config.steps)
            # Every rank draws the whole global batch's pairs and augmentation (cheap, and the
            # generator's stream stays that of one process), then builds only its share.
            index = sampler.sample(config.batch, rng) if sampler is not None else None
            flip = torch.rand(config.batch, generator=rng) < 0.5 if config.flip else None
            gain = 1 + config.jitter * (2 * torch.rand(config.batch, generator=rng) - 1)
            bias = config.jitter / 2 * (2 * torch.rand(config.batch, generator=rng) - 1)
            alpha = torch.rand(config.batch, generator=rng)[share] \
                if discriminator is not None and loss_config.gan == "wgan-gp" else None
            if stream is None:
                videos, pairs = train_videos, index[share]
            else:
                videos = next(stream)
                pairs = [(i, 0, 1) for i in range(len(videos))]
            batch = make_batch(videos, pairs, config.radius, mask,
                               None if flip is None else flip[share], gain[share], bias[share],
                               flow, triangles).to(device)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                dl = discriminator_step(gen_ddp, disc_ddp, opt_d, batch, loss_config, rng,
                                        alpha) if disc_ddp is not None else float("nan")
                # The bare discriminator: its gradients from this loss are thrown away (the
                # next discriminator step starts from zero), so no rank needs the others'.
                terms = generator_losses(gen_ddp, discriminator, batch, loss_config, embedder,
                                         ranks)
            opt_g.zero_grad(set_to_none=True)
            terms["loss"].backward()
            opt_g.step()
            if ema is not None:
                ema_update(ema, generator, config.ema)
            done = step + 1
            elapsed = time.perf_counter() - t0
            out_of_time = config.max_minutes > 0 and elapsed > 60 * config.max_minutes
            # One exchange per step: the losses rank 0 logs (means over the global batch) and
            # whether any rank ran out of time (all must stop at the same step).
            logged = ranks.mean(torch.tensor([*(float(terms[k].detach()) for k in LOSS_TERMS),
                                              dl, float(out_of_time)], dtype=torch.float64,
                                             device=device))
            out_of_time = bool(logged[-1] > 0)
            last = done == config.steps or out_of_time
            if not ranks.main:
                if out_of_time:
                    stopped_early = done < config.steps
                    break
                continue
            row: dict[str, Any] = {"step": done, "lr": f"{lr:.6g}",
                                   "d_loss": f"{float(logged[-2]):.6g}",
                                   **{k: f"{float(v):.6g}" for k, v in
                                      zip(LOSS_TERMS, logged[:len(LOSS_TERMS)], strict=True)}}
            if val_batch is not None and (done % config.val_every == 0 or last):
                metrics = validate(done)
                row.update({k: f"{v:.6g}" for k, v in metrics.items()})
            row["seconds"] = f"{elapsed:.2f}"
            rows.append(row)
            bar.update(1)
            bar.set_postfix(l1=f"{float(logged[1]):.4f}",
                            val_l1=f"{metrics['val_l1']:.4f}" if metrics else "-")
            if done % config.checkpoint_every == 0 and not last:
                checkpoint(f"step_{done:07d}", done)
                write_log(log_path, LOG_FIELDS, rows)
                _plot(plot_path, rows)
            if out_of_time:
                stopped_early = done < config.steps
                break
        bar.close()
        weights = output / f"{FINAL}.safetensors"
        if ranks.main:
            weights = checkpoint(FINAL, done)
    if ranks.main:
        write_log(log_path, LOG_FIELDS, rows)
        _plot(plot_path, rows)
    return TrainResult(checkpoint=weights, step=done, log=log_path, plot=plot_path,
                       metrics=metrics, stopped_early=stopped_early)


@torch.no_grad()
def heldout_report(checkpoint: str | os.PathLike, data: str | os.PathLike,
                   videos: list[str] | None = None, every: int = 1, batch: int = 16,
                   face_model: FaceModel | None = None, progress: bool = True,
                   ema: bool = True) -> dict[str, dict[str, float]]:
    """Self-reenactment of held-out videos in crop space: source = a video's first usable frame,
    targets = every ``every``-th of its other usable frames. Scores the generator (EMA weights),
    the weight-free warp renderer (every job's default: the baseline a generator must beat),
    the classic dense render and copying the source on the same frames.

    Args:
        checkpoint: a generator checkpoint.
        data: the dataset folder.
        videos: stems to score (default: the checkpoint's validation videos).
        ema: score the EMA weights (else the raw trained ones).

    Returns:
        ``{"generator" | "warp" | "classic" | "source": {"l1", "identity"}, "frames":
        {"count"}}``.
    """
    from faceanime.pgfg.checkpoint import load_checkpoint as _load
    from faceanime.render.warp import WarpRenderer

    ckpt = _load(checkpoint)
    names = videos or list(ckpt.info.get("videos", {}).get("val", []))
    if not names:
        raise InputError(f"{checkpoint}: no held-out videos recorded; name them")
    face_model = face_model or load_model(ckpt.train.model or ckpt.info.get("model") or "sfm")
    dataset = load_pair_dataset(data, face_model, ckpt.train.stride, names, progress)
    generator = ckpt.build_generator(ckpt.train.device if ckpt.train.device == "cpu" or
                                     torch.cuda.is_available() else "cpu", ema=ema)
    embedder = load_embedder("torch", next(generator.parameters()).device)
    sums: dict[str, dict[str, float]] = {k: {"l1": 0.0, "identity": 0.0}
                                         for k in ("generator", "warp", "classic", "source")}
    count = 0
    for v, video in enumerate(dataset.videos):
        frames = video.frames.tolist()
        pairs = [(v, frames[0], t) for t in frames[1::every]]
        for i in tqdm(range(0, len(pairs), batch), desc=f"evaluate {video.name}",
                      disable=not progress):
            chunk = pairs[i:i + batch]
            b = make_batch(dataset.videos, chunk, ckpt.train.radius,
                           ckpt.generator.prior_mask, flow_channel=ckpt.generator.prior_flow,
                           triangles=face_model.triangles.cpu()
                           if ckpt.generator.flow_init == "dense" else None)
            images = {"generator": generator.generate(b.source, b.p_s, b.p_t,
                                                      flow=b.flow).cpu(),
                      "warp": classic_render(face_model, video, [(s, t) for _, s, t in chunk],
                                             WarpRenderer),
                      "classic": classic_render(face_model, video, [(s, t) for _, s, t in chunk]),
                      "source": b.source}
            for name, img in images.items():
                m = image_metrics(img, b.target, b.landmarks, embedder)
                for key in ("l1", "identity"):
                    sums[name][key] += m[key] * len(chunk)
            count += len(chunk)
    report = {k: {m: v / count for m, v in d.items()} for k, d in sums.items()}
    report["frames"] = {"count": float(count)}
    return report


__all__ = [
    "LOG_FIELDS",
    "TrainResult",
    "classic_render",
    "config_mismatch",
    "evaluate",
    "generator_losses",
    "heldout_report",
    "image_metrics",
    "learning_rate",
    "sample_grid",
    "train",
]
