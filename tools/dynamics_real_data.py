"""The dynamics predictor on the real videos: train with one video held out, measure on it.

Fits ``videos/d0 d3 d6 d18`` (or reads a dataset folder from ``faceanime prepare``), trains with
``faceanime train dynamics``'s code for each held-out video asked for, and prints markdown tables:

- 5 frames ahead of ``--observe`` observed frames on the held-out video: mean vertex error (mm)
  of the model's expected path, holding the last frame, constant velocity, and the damped
  constant velocity the network starts from (``velocity_prior``, untrained);
- free-running from single frames of the held-out video, 120 frames, two seeds: per-frame vertex
  speed and spread against the real videos' (mean over the four);
- target-driven, 60 frames between frames of the held-out video: arrival error, largest step
  away from the target, largest progress along the line (1 = no overshoot), jerk.

The first fold's ``loss.png`` is copied to ``--plot`` (docs/img/dynamics_loss.png).

    python tools/dynamics_real_data.py [--data ../shared/data] [--dataset DIR] [--work DIR]
        [--hold-out d18 [d0 ...]] [--steps 300] [--hidden 16] [--seed 0] [--plot PNG]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from faceanime.dynamics import (
    Dynamics,
    DynamicsConfig,
    DynamicsModel,
    LossConfig,
    TrainConfig,
    VertexSubset,
    from_features,
    innovations,
    load_dataset,
    to_features,
    train,
)
from faceanime.dynamics.data import WindowSampler
from faceanime.dynamics.losses import vertex_error
from faceanime.morphable import load_model

VIDEOS = ("d0", "d3", "d6", "d18")


def prepare(data: Path, root: Path, model) -> Path:
    from faceanime.dataset.prepare import training_fit
    from faceanime.fitting import fit_file
    from faceanime.landmarks import TrackerConfig

    (root / "coefficients").mkdir(parents=True, exist_ok=True)
    for stem in VIDEOS:
        path = root / "coefficients" / f"{stem}.npz"
        if not path.is_file():
            fit_file(data / "videos" / f"{stem}.mp4", model, config=training_fit(),
                     tracker=TrackerConfig(progress=False)).save(path)
    (root / "manifest.json").write_text(json.dumps(
        {"version": 1, "model": "sfm", "videos": {s: {"status": "ok"} for s in VIDEOS}}))
    return root


def posed(vertices: VertexSubset, raw: torch.Tensor, ref: torch.Tensor,
          shape: torch.Tensor) -> torch.Tensor:
    return vertices.posed(to_features(raw, ref, "orthographic"), vertices.neutral(shape))


def ahead(dyn: Dynamics, video, vertices, observe: int, steps: int = 5) -> dict[str, float]:
    raw, shape = WindowSampler([video], observe + steps).fixed(1)
    ref, last = raw[:, 0], raw[:, observe - 1:observe]
    truth = posed(vertices, raw[:, -1:], ref, shape)
    prior_net = DynamicsModel(DynamicsConfig(velocity_prior=dyn.checkpoint.config.velocity_prior,
                                             local_scale=dyn.checkpoint.config.local_scale),
                              dyn.normalizer).eval()
    with torch.no_grad():
        prior = from_features(prior_net.rollout(to_features(raw[:, :observe], ref, "orthographic"),
                                                steps), ref, "orthographic")[:, -1:]
    paths = {"model": dyn.rollout(raw[:, :observe], steps)[:, -1:], "hold": last,
             "velocity": last + steps * (last - raw[:, observe - 2:observe - 1]),
             "prior": prior}
    return {k: float(vertex_error(posed(vertices, p, ref, shape), truth).mean())
            for k, p in paths.items()}


def motion(vertices, raw, shape) -> tuple[float, float]:
    v = posed(vertices, raw, raw[:, 0], shape)
    return (float((v[:, 1:] - v[:, :-1]).norm(dim=-1).mean()),
            float(v.std(1).norm(dim=-1).mean()))


def free_running(dyn, data, video, vertices, frames: int = 120) -> dict[str, float]:
    real = []
    for v in data.videos:
        length = min(frames, v.raw.shape[0])
        windows = torch.stack([v.raw[s:s + length]
                               for s in range(0, v.raw.shape[0] - length + 1, 20)])
        real.append(motion(vertices, windows, v.shape.expand(len(windows), -1)))
    starts = video.raw[::20, None]
    shape = video.shape.expand(len(starts), -1)
    out = {"real_speed": sum(s for s, _ in real) / 4, "real_spread": sum(s for _, s in real) / 4}
    for seed in (0, 1):
        roll = dyn.rollout(starts, frames, noise=innovations(seed, len(starts), frames, dyn.dim))
        out[f"speed_{seed}"], out[f"spread_{seed}"] = motion(
            vertices, torch.cat([starts, roll], 1), shape)
    return out


def target_driven(dyn, data, video, vertices, steps: int = 60) -> dict[str, float]:
    n = video.raw.shape[0]
    src = torch.arange(0, n, 15)
    tgt = torch.randint(0, n, (len(src),), generator=torch.Generator().manual_seed(0))
    src, tgt = src[tgt != src], tgt[tgt != src]
    start, target = video.raw[src][:, None], video.raw[tgt]
    out = dyn.rollout(start, steps, target=target)
    every = torch.cat([v.raw for v in data.videos])
    span = (every.max(0).values - every.min(0).values).clamp_min(1e-6)
    shape = video.shape.expand(len(src), -1)
    path = posed(vertices, torch.cat([start, out], 1), start[:, 0], shape)
    goal = posed(vertices, target[:, None], start[:, 0], shape)
    dist = (path - goal).square().sum(-1).mean(-1).sqrt()
    line = goal - path[:, :1]
    progress = ((path - path[:, :1]) * line).sum((-1, -2)) / line.square().sum((-1, -2))
    linear = path[:, :1] + line * torch.linspace(0, 1, steps + 1)[None, :, None, None]

    def jerk(p):
        return float((p[:, 3:] - 3 * p[:, 2:-1] + 3 * p[:, 1:-2] - p[:, :-3]).norm(dim=-1).mean())

    return {"arrival": float(((out[:, -1] - target).abs() / span).max()),
            "away": float(((dist[:, 1:] - dist[:, :-1]) / dist[:, :1]).max()),
            "progress": float(progress.max()), "jerk": jerk(path), "jerk_linear": jerk(linear)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = os.environ.get("FACEANIME_TEST_DATA", str(Path(__file__).parents[2] / "shared/data"))
    parser.add_argument("--data", default=default, help="shared data folder (sfm/, videos/)")
    parser.add_argument("--dataset", help="an existing dataset folder of the four videos")
    parser.add_argument("--work", help="where to fit and train (default: a temporary folder)")
    parser.add_argument("--hold-out", nargs="+", default=["d18"], choices=VIDEOS)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--observe", type=int, default=8)
    parser.add_argument("--plot", help="copy the first fold's loss.png here")
    args = parser.parse_args()
    data = Path(args.data)
    model = load_model(data / "sfm" / "sfm_shape_3448.bin")
    work = Path(args.work or tempfile.mkdtemp(prefix="dynamics_real_"))
    root = Path(args.dataset) if args.dataset else prepare(data, work / "dataset", model)
    dataset = load_dataset(root)
    vertices = VertexSubset.from_model(model, 256)
    rows = []
    for i, held in enumerate(args.hold_out):
        t0 = time.perf_counter()
        result = train(root, work / f"run_{held}",
                       TrainConfig(steps=args.steps, window=24, observe=args.observe, lr=3e-3,
                                   seed=args.seed, val_videos=(held,),
                                   checkpoint_every=args.steps, val_every=max(1, args.steps // 20),
                                   progress=False),
                       DynamicsConfig(hidden=args.hidden, layers=args.layers, dropout=0.0),
                       LossConfig(), face_model=model)
        seconds = time.perf_counter() - t0
        dyn = Dynamics.load(result.checkpoint)
        video = dataset.select([held])[0]
        rows.append((held, seconds, ahead(dyn, video, vertices, args.observe),
                     free_running(dyn, dataset, video, vertices),
                     target_driven(dyn, dataset, video, vertices)))
        if i == 0 and args.plot:
            shutil.copyfile(result.plot, args.plot)
    print(f"steps {args.steps}, LSTM {args.hidden}x{args.layers}, seed {args.seed}, "
          f"K = {args.observe} observed frames\n")
    print("| held out | train s | model mm | hold mm | const. velocity mm | prior mm |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for held, sec, e, _, _ in rows:
        print(f"| {held} | {sec:.0f} | {e['model']:.3f} | {e['hold']:.3f} | "
              f"{e['velocity']:.3f} | {e['prior']:.3f} |")
    print("\n| held out | speed mm/frame (seed 0, 1; real) | spread mm (seed 0, 1; real) |")
    print("| --- | --- | --- |")
    for held, _, _, f, _ in rows:
        print(f"| {held} | {f['speed_0']:.2f}, {f['speed_1']:.2f}; {f['real_speed']:.2f} | "
              f"{f['spread_0']:.2f}, {f['spread_1']:.2f}; {f['real_spread']:.2f} |")
    print("\n| held out | arrival (share of range) | largest step away | largest progress | "
          "jerk (linear interp.) |")
    print("| --- | ---: | ---: | ---: | --- |")
    for held, _, _, _, t in rows:
        print(f"| {held} | {t['arrival']:.1e} | {t['away']:.4f} | {t['progress']:.3f} | "
              f"{t['jerk']:.4f} ({t['jerk_linear']:.4f}) |")


if __name__ == "__main__":
    main()
