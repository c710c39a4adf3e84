"""Benchmark the 3D dynamics predictor: training steps per second and roll-out frames per second.

Runs on synthetic coefficient windows (SFM-sized: 6 expression coefficients, 14 per frame) with
the Surrey Face Model's vertex subset for the vertex loss, so no dataset is needed. Each figure is
the median of ``--repeat`` timed calls after one warm-up. Prints a table.

    python tools/bench_dynamics.py [--data ../shared/data] [--device cpu] [--threads 0]
                                   [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from timing import median_seconds

from faceanime.dynamics import DynamicsConfig, DynamicsModel, LossConfig, Normalizer, VertexSubset
from faceanime.dynamics.train import batch_losses
from faceanime.morphable import load_model

D = 14  # SFM: 6 expression + jaw + rotation (3) + translation (3) + log scale


def synthetic_sequences(count: int, frames: int, generator: torch.Generator) -> torch.Tensor:
    """``(count, frames, D)`` smooth random raw coefficient sequences (random walks of random
    velocities around a plausible face)."""
    base = torch.tensor([0.3, 0.1, 0.1, 0.2, 0.2, 0.1, 0.05, 0.0, 0.0, 0.0, 256, 256, 0, 0.7])
    step = torch.tensor([0.02] * 6 + [0.01, 0.005, 0.005, 0.003, 1.0, 1.0, 0.0, 0.002])
    vel = torch.randn(count, frames, D, generator=generator).cumsum(1) * 0.2
    return base + (vel * step).cumsum(1)




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = os.environ.get("FACEANIME_TEST_DATA", str(Path(__file__).parents[2] / "shared/data"))
    parser.add_argument("--data", default=default, help="shared data folder (holding sfm/)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    face = load_model(Path(args.data) / "sfm" / "sfm_shape_3448.bin")
    seqs = synthetic_sequences(8, 200, g)
    norm = Normalizer.fit(list(seqs), "orthographic", window=24)
    loss = LossConfig()
    vertices = VertexSubset.from_model(face, loss.vertex_count).to(device)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print()
    print("| network | batch | window | training steps/s | ms/step |")
    print("| --- | ---: | ---: | ---: | ---: |")
    cases = [(DynamicsConfig(hidden=64, layers=1), 32, 24),
             (DynamicsConfig(hidden=128, layers=2), 32, 40),
             (DynamicsConfig(hidden=128, layers=2), 128, 40)]
    for net, batch, window in cases:
        model = DynamicsModel(net, norm).to(device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        starts = torch.randint(0, 200 - window, (batch,), generator=g)
        raw = torch.stack([seqs[i % 8, s:s + window] for i, s in enumerate(starts.tolist())])
        raw, shape = raw.to(device), torch.zeros(batch, 63, device=device)
        flags = (torch.arange(batch) % 2).float().to(device)

        def step(model=model, opt=opt, raw=raw, shape=shape, flags=flags) -> None:
            terms = batch_losses(model, vertices, raw, shape, 8, flags, loss)
            opt.zero_grad()
            terms["loss"].backward()
            opt.step()

        sec = median_seconds(step, args.repeat, device)
        name = f"{net.hidden}x{net.layers}"
        print(f"| {name} | {batch} | {window} | {1 / sec:.1f} | {1e3 * sec:.0f} |")
    print()
    print("| network | mode | sequences | frames/s (all sequences) | ms/frame |")
    print("| --- | --- | ---: | ---: | ---: |")
    for net in (DynamicsConfig(hidden=64, layers=1), DynamicsConfig(hidden=128, layers=2)):
        model = DynamicsModel(net, norm).to(device).eval()
        for batch in (1, 16):
            obs = seqs[:1, :1].expand(batch, 1, D).to(device)
            noise = torch.randn(batch, 120, D, generator=g).to(device)
            target = seqs[:1, 100].expand(batch, D).to(device)
            for mode in ("free", "target"):
                def roll(model=model, obs=obs, noise=noise, target=target, mode=mode) -> None:
                    with torch.no_grad():
                        model.rollout(obs, 120, target=target if mode == "target" else None,
                                      noise=noise)

                sec = median_seconds(roll, args.repeat, device)
                print(f"| {net.hidden}x{net.layers} | {mode} | {batch} | "
                      f"{120 * batch / sec:.0f} | {1e3 * sec / 120:.2f} |")


if __name__ == "__main__":
    main()
