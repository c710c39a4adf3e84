"""Benchmark PGFG: generator inference ms/frame at 128² and 256², batch 1 and 8, and a full
training step (discriminator + generator update, hinge loss, no identity term) with its peak
memory, on CPU and on CUDA when present. Random inputs, default network config (docs/pgfg.md);
each figure is the median of ``--repeat`` timed calls after one warm-up. Prints a table.

    python tools/bench_generator.py [--device cpu cuda] [--threads 0] [--repeat 5] [--no-train]

Training-step memory is measured in a child process per configuration (peak RSS on CPU, which
includes the interpreter's ~0.3 GB; ``torch.cuda.max_memory_allocated`` on CUDA).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from dataclasses import replace

# As the CLI does (faceanime/cli/__init__.py): busy-waiting OpenMP threads run many times slower
# when another process holds a core. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
from timing import median_seconds

from faceanime.pgfg import Discriminator, Generator, GeneratorConfig, LossConfig
from faceanime.pgfg.config import prior_channels
from faceanime.pgfg.train import discriminator_step, generator_losses


def config_for(size: int) -> GeneratorConfig:
    """The default network at ``size`` (one more level at 256², same 8 px bottleneck)."""
    return replace(GeneratorConfig(), size=size, levels=4 if size == 128 else 5)




def inputs(size: int, batch: int, device: torch.device):
    """Random source and priors (6 channels: RGB, mask, small offsets) and a face flow (small
    offsets, known over the crop's middle)."""
    g = torch.Generator().manual_seed(0)
    source, p_s, p_t, flow = (torch.rand(batch, c, size, size, generator=g)
                              for c in (3, 6, 6, 3))
    p_s[:, 4:], p_t[:, 4:] = 0.0, 0.1 * p_t[:, 4:] - 0.05
    flow[:, :2] = 0.1 * flow[:, :2] - 0.05
    flow[:, 2] = 0.0
    flow[:, 2, size // 4:3 * size // 4, size // 4:3 * size // 4] = 1.0
    flow[:, :2] *= flow[:, 2:]
    return source.to(device), p_s.to(device), p_t.to(device), flow.to(device)


def train_step_child(size: int, batch: int, device: str, repeat: int, threads: int) -> dict:
    """One configuration's training step time and peak memory (run in a fresh process)."""
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    torch.manual_seed(0)
    gen = Generator(config_for(size)).to(dev)
    disc = Discriminator(prior_channels=prior_channels(gen.config)).to(dev)
    opt_g = torch.optim.Adam(gen.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), 2e-4, betas=(0.5, 0.999))
    loss = LossConfig(identity=0.0)
    source, p_s, p_t, flow = inputs(size, batch, dev)
    from faceanime.pgfg.data import PairBatch

    pairs = PairBatch(source, source.flip(-1), p_s, p_t, torch.zeros(batch, 68, 2, device=dev),
                      torch.zeros(batch, dtype=torch.bool, device=dev), flow)
    rng = torch.Generator().manual_seed(0)

    def step() -> None:
        with torch.autocast(dev.type, dtype=torch.float16, enabled=dev.type == "cuda"):
            discriminator_step(gen, disc, opt_d, pairs, loss, rng)
            terms = generator_losses(gen, disc, pairs, loss, None)
        opt_g.zero_grad(set_to_none=True)
        terms["loss"].backward()
        opt_g.step()

    seconds = median_seconds(step, repeat, dev)
    if dev.type == "cuda":
        memory = torch.cuda.max_memory_allocated(dev) / 2 ** 30
    else:
        memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    return {"seconds": seconds, "memory_gb": memory}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", nargs="+", default=["cpu", "cuda"],
                        help="devices to measure (cuda is skipped when absent)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-train", action="store_true", help="inference only")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        size, batch, device = args.child.split(",")
        print(json.dumps(train_step_child(int(size), int(batch), device, args.repeat,
                                          args.threads)))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [d for d in args.device if d != "cuda" or torch.cuda.is_available()]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print(f"{'device':6} {'size':>5} {'batch':>5} {'params':>8} {'ms/frame':>9}")
    for device in devices:
        dev = torch.device(device)
        for size in (128, 256):
            torch.manual_seed(0)
            net = Generator(config_for(size)).to(dev).eval()
            params = sum(p.numel() for p in net.parameters())
            for batch in (1, 8):
                source, p_s, p_t, flow = inputs(size, batch, dev)
                s = median_seconds(lambda n=net, x=(source, p_s, p_t), b=batch, f=flow:
                                   n.generate(*x, b, f), args.repeat, dev)
                print(f"{device:6} {size:5d} {batch:5d} {params / 1e6:7.2f}M "
                      f"{1000 * s / batch:9.1f}", flush=True)
    if args.no_train:
        return
    print(f"\n{'device':6} {'size':>5} {'batch':>5} {'s/step':>8} {'peak GB':>8}   "
          "(training step: D + G update, hinge, no identity)")
    for device in devices:
        for size, batch in ((128, 8), (256, 8)):
            cmd = [sys.executable, __file__, "--child", f"{size},{batch},{device}", "--repeat",
                   str(max(2, args.repeat // 2)), "--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            found = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{device:6} {size:5d} {batch:5d} {found['seconds']:8.2f} "
                  f"{found['memory_gb']:8.2f}", flush=True)


if __name__ == "__main__":
    main()
