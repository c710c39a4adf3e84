"""Benchmark the 3DMM fitter against eos-py on the same model and landmarks.

Prints, side by side: eos's ``fit_shape_and_pose`` (5 iterations, contour fitting) and ours on
``faces/image_0010.png`` with its ground-truth landmarks (time per image, mean reprojection error
at the 50 landmarks that map to SFM vertices and on the jaw), and the whole-video fit of
``videos/d3.mp4`` (``--video``; landmarks tracked first, not timed) in frames per second, with eos's
per-frame rate for comparison.

    python tools/bench_fit.py [--data ../shared/data] [--eos-frames 40] [--repeat 5]
                              [--video d3] [--landmarks d3.npz] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from faceanime.fitting import FitConfig, fit_landmarks, read_landmarks_file
from faceanime.landmarks import TrackerConfig, VideoLandmarks, track_video
from faceanime.morphable import load_model


def eos_fit(sfm_dir: Path):
    """eos's fit, loaded once: returns ``run(points (68, 2), width, height) -> (mesh, pose,
    ...)``."""
    import eos

    model = eos.morphablemodel.load_model(str(sfm_dir / "sfm_shape_3448.bin"))
    blendshapes = eos.morphablemodel.load_blendshapes(
        str(sfm_dir / "expression_blendshapes_3448.bin"))
    model = eos.morphablemodel.MorphableModel(
        model.get_shape_model(), blendshapes, color_model=eos.morphablemodel.PcaModel(),
        vertex_definitions=None, texture_coordinates=model.get_texture_coordinates())
    mapper = eos.core.LandmarkMapper(str(sfm_dir / "ibug_to_sfm.txt"))
    topology = eos.morphablemodel.load_edge_topology(str(sfm_dir / "sfm_3448_edge_topology.json"))
    contour_lms = eos.fitting.ContourLandmarks.load(str(sfm_dir / "ibug_to_sfm.txt"))
    model_contour = eos.fitting.ModelContour.load(str(sfm_dir / "sfm_model_contours.json"))

    def run(pts: np.ndarray, width: int, height: int):
        landmarks = [eos.core.Landmark(str(i + 1), [float(x), float(y)])
                     for i, (x, y) in enumerate(pts)]
        return eos.fitting.fit_shape_and_pose(model, landmarks, mapper, width, height, topology,
                                              contour_lms, model_contour)

    return run


def eos_projected(mesh, pose, width: int, height: int, vertex_ids: np.ndarray) -> np.ndarray:
    verts = np.asarray(mesh.vertices)[vertex_ids]
    hom = np.concatenate([verts, np.ones((len(verts), 1))], 1)
    clip = hom @ (np.asarray(pose.get_projection()) @ np.asarray(pose.get_modelview())).T
    # glm::project with viewport (0, height, width, -height), as eos renders.
    x = (clip[:, 0] + 1) / 2 * width
    y = height - (clip[:, 1] + 1) / 2 * height
    return np.stack([x, y], 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = os.environ.get("FACEANIME_TEST_DATA", str(Path(__file__).parents[2] / "shared/data"))
    parser.add_argument("--data", default=default,
                        help="shared data folder (sfm/, faces/, videos/)")
    parser.add_argument("--eos-frames", type=int, default=40,
                        help="video frames eos fits for its per-frame rate (default: %(default)s)")
    parser.add_argument("--video", default="d3",
                        help="which shared video (videos/NAME.mp4) is fitted whole "
                             "(default: %(default)s; d6 has 1008 frames)")
    parser.add_argument("--landmarks", default=None,
                        help="the video's landmarks as saved by 'faceanime landmarks' (.npz); "
                             "tracked with dlib when not given")
    parser.add_argument("--repeat", type=int, default=5,
                        help="whole-video fits timed; the median counts (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    data = Path(args.data)
    model = load_model(data / "sfm" / "sfm_shape_3448.bin", device=args.device)
    gt = read_landmarks_file(data / "faces" / "image_0010.pts")[0]
    width, height = 1280, 1024
    mapped = (model.landmark_indices >= 0).cpu().numpy()

    rows = []
    config = FitConfig(device=args.device)
    fit_landmarks(model, torch.from_numpy(gt)[None], (height, width), config)  # warm-up
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        coeffs = fit_landmarks(model, torch.from_numpy(gt)[None], (height, width), config)
        times.append(time.perf_counter() - t0)
    err = np.linalg.norm(coeffs.fitted_landmarks[0].cpu().numpy() - gt, axis=1)
    jaw = np.nanmean(err[:17][np.isfinite(err[:17])])
    rows.append(("faceanime (ours)", np.median(times) * 1e3, err[mapped].mean(), jaw))

    eos_rate = None
    try:
        run_eos = eos_fit(data / "sfm")
    except ImportError:
        run_eos = None
    if run_eos is not None:
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            mesh, pose, _, _ = run_eos(gt, width, height)
            times.append(time.perf_counter() - t0)
        ids = model.landmark_indices.cpu().numpy()
        proj = np.full((68, 2), np.nan)
        proj[mapped] = eos_projected(mesh, pose, width, height, ids[mapped])
        e = np.linalg.norm(proj - gt, axis=1)
        rows.append(("eos-py fit_shape_and_pose", np.median(times) * 1e3, e[mapped].mean(),
                     float("nan")))

    print(f"\nimage_0010.png, ground-truth landmarks, {width}x{height}")
    print(f"{'method':<28}{'ms/image':>10}{'err 50 pts (px)':>17}{'err jaw (px)':>14}")
    for name, ms, e50, ej in rows:
        print(f"{name:<28}{ms:>10.1f}{e50:>17.2f}{ej:>14.2f}")

    if args.landmarks:
        track = VideoLandmarks.load(args.landmarks)
    else:
        track = track_video(data / "videos" / f"{args.video}.mp4", TrackerConfig(progress=False))
    points = torch.from_numpy(track.points)
    size = tuple(int(v) for v in track.image_size)
    fit_landmarks(model, points[:16], size, config)  # warm-up
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        video = fit_landmarks(model, points, size, config, fps=track.fps)
        times.append(time.perf_counter() - t0)
    ours = len(points) / float(np.median(times))
    verr = np.nanmean(np.linalg.norm(video.fitted_landmarks.cpu().numpy() - track.points, axis=-1))
    # Errors at the 50 mapped points on the frames eos fits, so both are measured alike.
    n = min(args.eos_frames, len(points))
    ours_mapped = (np.linalg.norm(video.fitted_landmarks.cpu().numpy()[:n, mapped]
                                  - track.points[:n, mapped], axis=-1).mean()
                   if n > 0 else float("nan"))  # --eos-frames 0: no frames compared
    if run_eos is not None and n > 0:
        ids = model.landmark_indices.cpu().numpy()[mapped]
        eos_err, t_eos = [], 0.0
        for i in range(n):
            t0 = time.perf_counter()
            mesh, pose, _, _ = run_eos(track.points[i], size[1], size[0])
            t_eos += time.perf_counter() - t0
            proj = eos_projected(mesh, pose, size[1], size[0], ids)
            eos_err.append(np.linalg.norm(proj - track.points[i, mapped], axis=1).mean())
        eos_rate = n / t_eos
    print(f"\nvideos/{args.video}.mp4, {len(points)} frames, dlib landmarks (tracking not timed)")
    print(f"{'method':<28}{'frames/s':>10}{'err all (px)':>14}{f'err 50 pts, {n} fr':>20}")
    print(f"{'faceanime (whole video)':<28}{ours:>10.1f}{verr:>14.2f}{ours_mapped:>20.2f}")
    if eos_rate is not None:
        print(f"{'eos-py (frame by frame)':<28}{eos_rate:>10.1f}{'':>14}{np.mean(eos_err):>20.2f}")
        print(f"\nspeed-up over eos: {ours / eos_rate:.0f}x")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}")


if __name__ == "__main__":
    main()
