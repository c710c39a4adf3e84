"""Benchmark the rasterizer (faceanime.render) on the Surrey Face Model.

Prints milliseconds per frame for :func:`rasterize`, :func:`interpolate` (3 channels),
:func:`splat_points` (every 4th vertex, radius 0.5) and :func:`vertex_visibility`, at 256² and
512² with batches of 1 and 16 frames (yaws spread over ±40°, the face ~200 px wide at 256², ~400
px at 512²). Each figure is the median of ``--repeat`` timed calls after one warm-up.

    python tools/bench_render.py [--data ../shared/data] [--device cpu] [--threads 1]
                                 [--backend torch] [--repeat 5] [--cpu-time]
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import torch
from timing import median_seconds

from faceanime.geometry.camera import project_orthographic
from faceanime.geometry.rotation import euler_to_matrix
from faceanime.morphable import load_model
from faceanime.render import interpolate, rasterize, splat_points, vertex_visibility


def face_poses(model, batch: int, size: int) -> torch.Tensor:
    """``(batch, N, 3)`` screen-space mean faces, yaw spread over ±40°, ~0.78 * size wide."""
    yaw = torch.linspace(-40.0, 40.0, batch) if batch > 1 else torch.zeros(1)
    rot = euler_to_matrix(yaw.deg2rad(), torch.zeros(batch), torch.zeros(batch)).to(model.device)
    scale = torch.full((batch,), 0.78 * size / 190.0, device=model.device)
    centre = torch.tensor([[size / 2, size / 2, 0.0]], device=model.device).expand(batch, 3)
    return project_orthographic(model.mean.expand(batch, -1, -1), rot, centre, scale)


def median_ms(fn, repeat: int, device: str, clock=time.perf_counter) -> float:
    return 1e3 * median_seconds(fn, repeat, device, clock)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = os.environ.get("FACEANIME_TEST_DATA", str(Path(__file__).parents[2] / "shared/data"))
    parser.add_argument("--data", default=default, help="shared data folder (holding sfm/)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--backend", default="torch", help="torch or pytorch3d")
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per figure")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time this process's CPU time, not wall-clock time: with "
                             "--threads 1, the cost whatever else runs on a shared machine")
    args = parser.parse_args()
    clock = time.process_time if args.cpu_time else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(Path(args.data) / "sfm" / "sfm_shape_3448.bin", device=args.device)
    triangles = model.triangles
    colours = torch.rand(model.n_vertices, 3, device=args.device)
    sparse = torch.zeros(model.n_vertices, dtype=torch.bool, device=args.device)
    sparse[::4] = True

    device = args.device
    print(f"SFM ({model.n_vertices} vertices, {model.n_triangles} triangles), device {device}, "
          f"backend {args.backend}, {torch.get_num_threads()} CPU threads, torch "
          f"{torch.__version__}, {'CPU' if args.cpu_time else 'wall-clock'} time")
    print(f"{'image':>7}{'batch':>7}{'rasterize':>11}{'interpolate':>13}{'splat':>8}"
          f"{'visibility':>12}   (ms/frame)")
    for size in (256, 512):
        for batch in (1, 16):
            verts = face_poses(model, batch, size)
            shape = (size, size)
            fragments = rasterize(verts, triangles, shape, backend=args.backend)
            row = [
                median_ms(lambda v=verts, s=shape: rasterize(v, triangles, s,
                                                             backend=args.backend),
                          args.repeat, device, clock),
                median_ms(lambda f=fragments: interpolate(f, colours, triangles),
                          args.repeat, device, clock),
                median_ms(lambda v=verts, s=shape: splat_points(
                    v, colours, s, backend=args.backend, mask=sparse), args.repeat, device, clock),
                median_ms(lambda v=verts, s=shape: vertex_visibility(v, triangles, s,
                                                                     backend=args.backend),
                          args.repeat, device, clock),
            ]
            cells = "".join(f"{ms / batch:>{w}.{1 if ms / batch >= 1 else 2}f}"
                            for ms, w in zip(row, (11, 13, 8, 12), strict=True))
            print(f"{f'{size}²':>7}{batch:>7}{cells}")
    covered = float(rasterize(face_poses(model, 1, 512), triangles, (512, 512)).mask.float()
                    .mean())
    print(f"(the face covers {100 * covered:.0f} % of a 512² frame; "
          f"{math.ceil(covered * 512 * 512)} pixels)")


if __name__ == "__main__":
    main()
