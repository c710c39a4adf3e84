"""CUDA against CPU for the stages a job runs, in one prepared script for a GPU session.

A GPU host may lack dlib and its 100 MB landmark model, so the landmarks are tracked here first
(``--prepare``, on the CPU machine) and carried as one ``.npz``; the device run then fits,
transfers and renders on both devices from the same inputs and prints one table: the largest
difference per stage, and the render speed on each device. Every check runs even when an
earlier one fails (its traceback is printed), so one run shows every device bug.

    python tools/device_check.py --prepare DATA OUT.npz      # CPU machine, with dlib
    python tools/device_check.py --data DATA --inputs OUT.npz  # GPU machine
"""

from __future__ import annotations

import argparse
import time
import traceback
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROWS: list[tuple[str, str, str]] = []


def row(check: str, result: str, note: str = "") -> None:
    ROWS.append((check, result, note))
    print(f"{check:<34} {result:<28} {note}", flush=True)


def prepare(data: Path, out: Path) -> None:
    from faceanime.landmarks import TrackerConfig, create_detector, track_video

    arrays = {}
    with create_detector("dlib") as detector:
        for name in ("s1", "d19"):
            image = np.array(Image.open(data / "faces" / f"{name}.jpg").convert("RGB"))
            arrays[name] = np.asarray(detector.detect(image)[0].points, np.float32)
    for name in ("d3", "d6"):
        track = track_video(data / "videos" / f"{name}.mp4", TrackerConfig(progress=False))
        arrays[name] = track.points
        arrays[f"{name}_size"] = np.array(track.image_size)
        arrays[f"{name}_fps"] = np.array(track.fps)
    np.savez(out, **arrays)


def timed(fn, device: str, repeat: int = 3) -> float:
    fn()  # warm-up: kernels, caches, allocator
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeat


def check(name: str):
    def wrap(fn):
        def run(*args):
            try:
                return fn(*args)
            except Exception as exc:  # every check runs; the first failure must not hide others
                row(name, "FAILED", f"{type(exc).__name__}: {str(exc)[:90]}")
                traceback.print_exc()
                return None
        return run
    return wrap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepare", nargs=2, metavar=("DATA", "OUT"))
    parser.add_argument("--data", type=Path)
    parser.add_argument("--inputs", type=Path)
    parser.add_argument("--frames", type=int, default=96, help="driver frames rendered")
    args = parser.parse_args()
    if args.prepare:
        prepare(Path(args.prepare[0]), Path(args.prepare[1]))
        return

    from faceanime.fitting import FitConfig, fit_landmarks
    from faceanime.morphable import load_model
    from faceanime.motion import transfer_motion
    from faceanime.render.classic import ClassicRenderer
    from faceanime.render.frames import to_uint8
    from faceanime.render.warp import WarpConfig, WarpRenderer

    cuda = torch.cuda.is_available()
    row("torch / device", torch.__version__,
        torch.cuda.get_device_name(0) if cuda else "no CUDA: CPU against CPU")
    gpu = "cuda" if cuda else "cpu"
    inputs = np.load(args.inputs)
    model_cpu = load_model(args.data / "sfm" / "sfm_shape_3448.bin")
    model_gpu = load_model(args.data / "sfm" / "sfm_shape_3448.bin", device=gpu)
    # The job's framing: a 512² photo (its landmarks scaled with it).
    full = Image.open(args.data / "faces" / "s1.jpg").convert("RGB")
    photo = np.array(full.resize((512, 512), Image.LANCZOS))
    photo_points = inputs["s1"] * (512 / np.array(full.size, np.float32))

    @check("fit photo (CPU landmarks)")
    def fit_photo():
        out = {}
        for device, model in (("cpu", model_cpu), (gpu, model_gpu)):
            # Landmarks as a detector returns them: a CPU array, whatever the fit's device.
            out[device] = fit_landmarks(model, photo_points, photo.shape[:2],
                                        FitConfig(device=device))
        a, b = out["cpu"], out[gpu].to("cpu")
        diff = float((a.fitted_landmarks - b.fitted_landmarks).abs().nan_to_num().max())
        row("fit photo (CPU landmarks)", f"{diff:.4f} px", f"on {out[gpu].rotation.device}")
        return out

    @check("fit video d3 (354 frames)")
    def fit_video_d3():
        out, seconds = {}, {}
        for device, model in (("cpu", model_cpu), (gpu, model_gpu)):
            start = time.perf_counter()
            out[device] = fit_landmarks(model, inputs["d3"], tuple(inputs["d3_size"]),
                                        FitConfig(device=device), fps=float(inputs["d3_fps"]))
            seconds[device] = time.perf_counter() - start
        a, b = out["cpu"], out[gpu].to("cpu")
        diff = (a.fitted_landmarks - b.fitted_landmarks).abs().nan_to_num()
        eyes = float((a.eyes - b.eyes).abs().max())
        row("fit video d3 (354 frames)", f"{float(diff.max()):.4f} px, eyes {eyes:.4f}",
            f"cpu {seconds['cpu']:.2f} s, {gpu} {seconds[gpu]:.2f} s")
        return out

    photos = fit_photo()
    drivers = fit_video_d3()
    if photos is None or drivers is None:
        return

    @check("motion transfer")
    def motion():
        a = transfer_motion(photos["cpu"], drivers["cpu"])
        b = transfer_motion(photos[gpu], drivers[gpu])
        diff = float((a.to_tensor() - b.to("cpu").to_tensor()).abs().max())
        row("motion transfer", f"{diff:.2e}", f"on {b.rotation.device}, {b.eyes.device}")
        return a

    target = motion()
    if target is None:
        return
    frames = list(range(0, target.n_frames, max(1, target.n_frames // args.frames)))
    target = target.frames(frames)
    # A mouth interior on every frame (as a driving video's capture gives), so the warp's
    # driver-interior path runs on both devices too.
    from faceanime.render.mouth_interior import TEXTURE_SIZE
    gen = torch.Generator().manual_seed(0)
    target.mouth = torch.randint(0, 256, (target.n_frames, 4, *TEXTURE_SIZE), generator=gen,
                                 dtype=torch.uint8)
    source = photos["cpu"]

    for name, make in (("warp", lambda m, s: WarpRenderer(m, photo, s, WarpConfig())),
                       ("mask", lambda m, s: ClassicRenderer(m, photo, s))):
        @check(f"render {name}")
        def render(name=name, make=make):
            cpu = make(model_cpu, source)
            dev = make(model_gpu, source.to(gpu))
            a = np.stack(list(cpu.iter_frames(target))).astype(np.int16)
            b = np.stack(list(dev.iter_frames(target.to(gpu)))).astype(np.int16)
            diff = np.abs(a - b).max(-1)
            row(f"render {name} {photo.shape[1]}² CPU vs {gpu}",
                f"max {diff.max()}, >1: {100 * (diff > 1).mean():.4f}%",
                f"{len(frames)} frames of d3")
            for device, renderer, coeffs in (("cpu", cpu, target), (gpu, dev, target.to(gpu))):
                for size in (8, 32) if device != "cpu" else (16,):
                    batch = coeffs.frames(list(range(min(size, coeffs.n_frames))))
                    seconds = timed(lambda r=renderer, b=batch: to_uint8(r.render(b)), device)
                    row(f"  {name} render, {device}", f"{1000 * seconds / batch.n_frames:.2f} "
                        "ms/frame", f"batch {batch.n_frames}")
        render()

    @check("generator")
    def generator():
        from faceanime.pgfg.config import GeneratorConfig
        from faceanime.pgfg.networks import Generator

        torch.manual_seed(0)
        config = GeneratorConfig()
        nets = {"cpu": Generator(config)}
        nets[gpu] = Generator(config).to(gpu)
        nets[gpu].load_state_dict(nets["cpu"].state_dict())
        gen = torch.Generator().manual_seed(1)
        s, c, b = config.size, nets["cpu"].prior_channels, 8
        flow = torch.zeros(b, 3, s, s)
        flow[:, 2, s // 4:3 * s // 4, s // 4:3 * s // 4] = 1.0
        flow[:, :2] = (0.1 * torch.rand(b, 2, s, s, generator=gen) - 0.05) * flow[:, 2:]
        inputs = (torch.rand(b, 3, s, s, generator=gen), torch.rand(b, c, s, s, generator=gen),
                  torch.rand(b, c, s, s, generator=gen), flow)
        out = {}
        with torch.no_grad():
            for device, net in nets.items():
                out[device] = net.eval()(*(x.to(device) for x in inputs)).float().cpu()
                with torch.autocast(device_type=device, dtype=torch.bfloat16):
                    out[device + " bf16"] = net(*(x.to(device) for x in inputs)).float().cpu()
        row(f"generator {s}² forward CPU vs {gpu}",
            f"max {float((out['cpu'] - out[gpu]).abs().max()):.2e}",
            f"bf16 vs fp32 on {gpu}: {float((out[gpu + ' bf16'] - out[gpu]).abs().max()):.2e}")
        for device, net in nets.items():
            net.train()
            optimizer = torch.optim.Adam(net.parameters(), 1e-4)
            x = [t.to(device) for t in inputs]

            def step(net=net, optimizer=optimizer, x=x):
                loss = (net(*x) - x[0]).abs().mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

            row(f"  generator train step, {device}", f"{timed(step, device, 2):.3f} s",
                f"batch {b}, {s}²")

    generator()

    print("\n| check | result | note |\n|---|---|---|")
    for r in ROWS:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
