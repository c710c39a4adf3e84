"""Face-identity speed per backend: faces per second (and ms per face) for the torch path (chip
alignment + ResNet, forward only and forward + backward to the image) and for dlib's own
``compute_face_descriptor``, at batch 1, 16 and 32, on frames of a video.

    python tools/bench_identity.py                    # videos/d3.mp4 of the shared data
    python tools/bench_identity.py --batches 1 8 --device cuda

Landmarks are found once, before timing; models are loaded and warmed outside the timings; each
figure is the best of ``--repeats`` runs. Besides wall-clock time the table gives the process's
CPU time per face (all threads): on a machine shared with other jobs the wall clock measures the
neighbours as much as this code, CPU time much less so. Results go in docs/identity.md with the
machine they ran on.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from faceanime.identity import extract_chips, load_embedder  # noqa: E402
from faceanime.io import iter_video_frames  # noqa: E402
from faceanime.landmarks import create_detector  # noqa: E402


def _data_root() -> Path:
    env = os.environ.get("FACEANIME_TEST_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def _best(run: Callable[[], object], repeats: int, device: torch.device
          ) -> tuple[float, float]:
    """Best wall time and best process CPU time of ``repeats`` runs, in seconds (the GPU
    synchronised)."""
    wall = cpu = float("inf")
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return wall, cpu


def _row(backend: str, what: str, batch: int, seconds: tuple[float, float]) -> str:
    wall, cpu = seconds
    return (f"| {backend} | {what} | {batch} | {batch / wall:7.1f} | {1000 * wall / batch:7.1f} | "
            f"{1000 * cpu / batch:7.1f} |")


def load_faces(video: Path, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` frames spread over ``video`` with their dlib landmarks: ``(N, 3, H, W)`` in
    [0, 1] and ``(N, 68, 2)``."""
    frames = [f.copy() for f in iter_video_frames(video)]
    step = max(1, len(frames) // count)
    images, points = [], []
    with create_detector("dlib") as detector:
        for frame in frames[::step]:
            faces = detector.detect(frame)
            if faces:
                images.append(torch.from_numpy(frame).permute(2, 0, 1).float() / 255.0)
                points.append(torch.from_numpy(faces[0].points))
            if len(images) == count:
                break
    return torch.stack(images), torch.stack(points)


def main(argv: list[str] | None = None) -> int:
    data = _data_root()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=data / "videos" / "d3.mp4")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 32])
    parser.add_argument("--device", default="cpu", help="torch device of the torch path")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    images, points = load_faces(args.video, max(args.batches))
    size = f"{images.shape[3]}×{images.shape[2]}"
    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads){gpu}")
    print(f"faces: {len(images)} frames of {args.video.name} ({size}), dlib landmarks\n")
    print("| backend | path | batch | faces/s | ms/face | CPU ms/face |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")

    torch_embedder = load_embedder("torch", device)
    dlib_embedder = load_embedder("dlib")
    gpu_images, gpu_points = images.to(device), points.to(device)
    with torch.no_grad():  # warm-up: first calls allocate and pick kernels
        torch_embedder.embed(gpu_images[:2], gpu_points[:2])
    dlib_embedder.embed(images[:1], points[:1])

    for batch in args.batches:
        x, p = gpu_images[:batch], gpu_points[:batch]
        chips = extract_chips(x, p)

        def forward(x=x, p=p) -> None:
            with torch.no_grad():
                torch_embedder.embed(x, p)

        def network(chips=chips) -> None:
            with torch.no_grad():
                torch_embedder.embed_chips(chips)

        def align(x=x, p=p) -> None:
            with torch.no_grad():
                extract_chips(x, p)

        def backward(x=x, p=p) -> None:
            leaf = x.clone().requires_grad_(True)
            torch_embedder.embed(leaf, p).square().sum().backward()

        for what, run in (("align + network", forward), ("alignment only", align),
                          ("network only (chips given)", network),
                          ("align + network, forward + backward", backward)):
            seconds = _best(run, args.repeats, device)
            print(_row(f"torch ({device.type})", what, batch, seconds), flush=True)
        seconds = _best(lambda b=batch: dlib_embedder.embed(images[:b], points[:b]),
                        args.repeats, torch.device("cpu"))
        print(_row("dlib", "compute_face_descriptor (align + network)", batch, seconds),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
