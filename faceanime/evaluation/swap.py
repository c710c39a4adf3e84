"""Face-swap evaluation with FaceShifter's three measures, computed with the project's own tools.

Every photo is swapped onto every target video, on every ``stride``-th frame the target shows a
face (the occlusion mask carries over between those frames as it does between consecutive
ones). For each output frame, dlib finds the face and its 128-D identity descriptor, and the
fitter fits its landmarks (frame by frame, one identity per sequence); the target's frames are
measured the same way, so fitting errors common to both cancel.

- **ID retrieval** (%): the share of output frames whose nearest identity, among all the run's
  photos and the target frame itself, is the photo (a frame without a face is a miss).
- **ID dist**: mean distance of the output's descriptor to the photo's (dlib's same-person
  threshold is 0.6).
- **pose err** (degrees): the angle between the fitted head rotations of output and target frame.
- **expr err**: L2 distance between their fitted expression weights (the six SFM blendshapes).
- **jaw err** (degrees): between their fitted jaw openings.
- **double face** (%): frames where more faces are found than in the target frame.

Methods: ``swap`` (:class:`~faceanime.render.swap.SwapRenderer` as ``faceanime swap`` runs it),
``paste`` (the naive paste: the same face, no colour matching, no occlusion mask, the photo's
fringe kept, on the target's unbent head) and ``static`` (the target unchanged: the identity
it must move away from, and the pose and expression errors of the measurement itself).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from faceanime.devices import resolve_device
from faceanime.errors import InputError
from faceanime.evaluation.protocol import Scorer, rotation_angle_deg
from faceanime.fitting import FitConfig, fit_image, fit_landmarks, fit_video
from faceanime.io import iter_video_frames, read_image
from faceanime.landmarks import TrackerConfig
from faceanime.landmarks.gaze import measure_gaze
from faceanime.morphable import load_model
from faceanime.parallel import default_batch, default_track_parts
from faceanime.render.frames import frames_tensor, to_uint8
from faceanime.render.swap import SwapRenderConfig, SwapRenderer

SWAP_METHODS = ("static", "paste", "swap")
# What each measure is called in the tables, and which way is better.
COLUMNS = (("id_retrieval", "ID retrieval % ↑", "{:.1f}"), ("id_dist", "ID dist ↓", "{:.3f}"),
           ("pose_err", "pose err ° ↓", "{:.2f}"), ("expr_err", "expr err ↓", "{:.3f}"),
           ("jaw_err", "jaw err ° ↓", "{:.2f}"), ("double_face", "double face % ↓", "{:.1f}"))


@dataclass
class SwapEvalConfig:
    """Settings of the swap evaluation."""

    stride: int = 8
    """Score every this many frames of each target."""
    methods: tuple[str, ...] = SWAP_METHODS
    """Which of ``static``, ``paste`` and ``swap`` to score."""
    swap: SwapRenderConfig = field(default_factory=SwapRenderConfig)
    """The swap's settings (``paste`` drops colour matching, occlusion, fringe and the shape
    bending from them)."""
    model: str = "sfm"
    device: str = "auto"
    """auto (CUDA when available, else the CPU), cpu, cuda or cuda:N."""
    progress: bool = True


def _measure(scorer, model, frames: np.ndarray) -> dict:
    """dlib points, face counts, descriptors and a frame-by-frame fit of ``(T, H, W, 3)``."""
    points, counts = scorer.detect(frames)
    embeddings = scorer.embed(frames_tensor(frames), points)
    fitted = fit_landmarks(model, points, frames.shape[1:3],
                           FitConfig(temporal_weight=0.0, eyelid_temporal_weight=0.0))
    found = torch.isfinite(points).flatten(1).all(1)
    return {"points": points, "counts": counts, "embeddings": embeddings, "fit": fitted,
            "found": found}


def score(out: dict, target: dict, gallery: torch.Tensor, own: int) -> dict[str, float]:
    """The measures of one method on one pair, from :func:`_measure` of its output and of the
    target frames; ``gallery (P, 128)`` the run's photos, ``own`` the photo's row."""
    both = out["found"] & target["found"]
    # Per frame, the distance to every photo and to the target frame itself: (T, P + 1).
    candidates = torch.cat([torch.cdist(out["embeddings"], gallery),
                            (out["embeddings"] - target["embeddings"]).norm(dim=-1)[:, None]], 1)
    nearest = torch.nan_to_num(candidates, nan=math.inf).argmin(1)
    found = out["found"]
    hits = ((nearest == own) & found).float()          # a frame without a face is a miss
    dist = candidates[found, own]
    fo, ft = out["fit"], target["fit"]
    pose = rotation_angle_deg(fo.rotation[both], ft.rotation[both])
    expr = (fo.expression[both] - ft.expression[both]).norm(dim=-1)
    jaw = torch.rad2deg((fo.jaw[both] - ft.jaw[both]).abs())
    double = (out["counts"] > target["counts"].clamp_min(1)).float()
    nan = float("nan")
    return {"id_retrieval": 100 * float(hits.mean()) if len(hits) else nan,
            "id_dist": float(dist.mean()) if len(dist) else nan,
            "pose_err": float(pose.mean()) if len(pose) else nan,
            "expr_err": float(expr.mean()) if len(expr) else nan,
            "jaw_err": float(jaw.mean()) if len(jaw) else nan,
            "double_face": 100 * float(double.mean()) if len(double) else nan,
            "frames": len(out["found"])}


def evaluate_swap(photos: Sequence[str | os.PathLike], targets: Sequence[str | os.PathLike],
                  config: SwapEvalConfig | None = None) -> dict:
    """Swap every photo onto every target and score it.

    Returns:
        ``{"pairs": {"<photo>_<target>": {method: measures}}, "mean": {method: measures},
        "seconds": ..., "config": ...}``.

    Raises:
        InputError: an unknown method, or a stride below 1.
    """
    config = config or SwapEvalConfig()
    config = replace(config, device=str(resolve_device(config.device)))
    unknown = set(config.methods) - set(SWAP_METHODS)
    if unknown:
        raise InputError(f"unknown swap method(s) {', '.join(sorted(unknown))}: choose from "
                         f"{', '.join(SWAP_METHODS)}")
    if config.stride < 1:
        raise InputError(f"--stride must be ≥ 1, got {config.stride}")
    started = time.perf_counter()
    model = load_model(config.model, device=config.device)
    scorer = Scorer(config.device)
    try:
        images = [read_image(p) for p in photos]
        fits = [fit_image(image, model) for image in images]
        for image, fit in zip(images, fits, strict=True):
            # Where the photo's eyes look, as the job measures it (the swap moves its irises
            # to the target's gaze).
            fit.gaze = measure_gaze(frames_tensor(image[None]), fit.landmarks).to(fit.expression)
        photo_points = [scorer.landmarks(image[None])[0] for image in images]
        gallery = torch.cat([scorer.embed(frames_tensor(image[None]), points[None])
                             for image, points in zip(images, photo_points, strict=True)])
        variants = {"swap": config.swap,
                    "paste": replace(config.swap, colour="none", occlusion=False, fringe=False,
                                     reshape=False)}
        pairs: dict[str, dict[str, dict[str, float]]] = {}
        for target in targets:
            target = Path(target)
            # Tracked as the swap job tracks its target (in parts, one per core): the scores
            # are of what the job makes.
            coeffs = fit_video(target, model,
                               tracker=TrackerConfig(progress=config.progress,
                                                     parts=default_track_parts()))
            valid = coeffs.valid if coeffs.valid is not None else torch.ones(
                coeffs.n_frames, dtype=torch.bool)
            index = [i for i in range(0, coeffs.n_frames, config.stride) if bool(valid[i])]
            wanted = set(index)
            frames = np.stack([f for i, f in enumerate(iter_video_frames(target))
                               if i in wanted])
            measured = _measure(scorer, model, frames)
            picks = sorted({round(x) for x in np.linspace(0, len(index) - 1,
                                                          min(8, len(index)))})
            for p, photo in enumerate(photos):
                name = f"{Path(photo).stem}_{target.stem}"
                pairs[name] = {}
                for method in config.methods:
                    if method == "static":
                        out = frames
                    else:
                        renderer = SwapRenderer(model, images[p], fits[p],
                                                frames_tensor(frames[picks]),
                                                coeffs.frames([index[k] for k in picks]),
                                                variants[method])
                        batch = variants[method].batch_size or default_batch(
                            config.device, frames.shape[1] * frames.shape[2])
                        out = np.concatenate([to_uint8(renderer.render_frames(
                            frames_tensor(frames[s:s + batch]),
                            coeffs.frames(index[s:s + batch]))[0])
                            for s in range(0, len(index), batch)])
                    pairs[name][method] = score(_measure(scorer, model, out), measured,
                                                gallery, p)
    finally:
        scorer.close()
    mean = {m: {key: float(np.nanmean([pairs[n][m][key] for n in pairs]))
                for key, _, _ in COLUMNS} for m in config.methods}
    return {"pairs": pairs, "mean": mean, "seconds": time.perf_counter() - started,
            "photos": [str(p) for p in photos], "targets": [str(t) for t in targets],
            "stride": config.stride, "methods": list(config.methods)}


def markdown(report: dict, command: str = "", machine: str = "") -> str:
    """The report as Markdown: the mean over pairs, then each pair."""
    def table(rows: dict[str, dict[str, float]]) -> list[str]:
        lines = ["| method | " + " | ".join(title for _, title, _ in COLUMNS) + " |",
                 "|---|" + "---|" * len(COLUMNS)]
        for method, values in rows.items():
            cells = [fmt.format(values[key]) if math.isfinite(values[key]) else "–"
                     for key, _, fmt in COLUMNS]
            lines.append(f"| `{method}` | " + " | ".join(cells) + " |")
        return lines

    out = ["# faceanime evaluation: face swap", ""]
    if command:
        out.append(f"- command: `{command}`")
    if machine:
        out.append(f"- machine: {machine}")
    out += [f"- time: {report['seconds']:.0f} s for {len(report['pairs'])} pair(s); scored on "
            f"every {report['stride']} frame(s) with a face",
            "- measures and methods: docs/swap.md (`faceanime.evaluation.swap`); the gallery "
            "for ID retrieval: " + ", ".join(Path(p).stem for p in report["photos"])
            + " and the target frame itself", "", "## Mean over pairs", ""]
    out += table(report["mean"])
    for name, rows in report["pairs"].items():
        frames = next(iter(rows.values()))["frames"]
        out += ["", f"## {name}", "", f"{frames} frames scored", "", *table(rows)]
    return "\n".join(out) + "\n"
