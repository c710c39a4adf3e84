"""The self- and cross-reenactment protocols, streamed over frames in batches.

**Self-reenactment** (the first-order-model protocol): the source is frame ``source_frame`` of a
video, the driver is the same video, and every evaluated output frame is compared with the real
one. Three passes over the video keep memory flat in its length: (1) count the frames and keep the
source frame, (2) dlib landmarks of the evaluated ground-truth frames (detected frame by frame,
not tracked or smoothed, the same procedure as on the outputs), then one fit of all of them with
the source's identity (the classic method's target coefficients), (3) render every method batch
by batch and score it. Only per-frame numbers are kept.

**Cross-reenactment**: a photo driven by a video. There is no ground truth; the output is scored
on identity (against the photo), pose (the output's fitted head rotation against the rotation
relative motion transfer asks for) and expression (correlation of the output's fitted expression
and mouth opening with the driver's).

Methods: ``static`` (the source repeated), ``classic``
(:class:`~faceanime.render.classic.ClassicRenderer`), ``generator`` (``--generator CKPT``, the
learned renderer of :mod:`faceanime.pgfg`) and ``results:<dir>`` (videos made by another tool,
named as the inputs). A method failing on one video (a corrupt or wrong-length results video, a
source without a face) is recorded for that video and the rest of the report goes on.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from faceanime.coefficients import Coefficients
from faceanime.errors import (
    BackendUnavailableError,
    FaceAnimeError,
    FaceNotFoundError,
    InputError,
    MediaError,
)
from faceanime.evaluation import metrics as M
from faceanime.fitting import FitConfig
from faceanime.fitting.fitter import fit_landmarks
from faceanime.identity import identity_distance
from faceanime.io import is_video_path, iter_video_frames, read_image
from faceanime.morphable import FaceModel, load_model
from faceanime.motion import MotionConfig, transfer_motion
from faceanime.render.classic import ClassicConfig, ClassicRenderer

SELF_METRICS = ("l1", "psnr", "ssim", "akd", "aed", "id_dist")
CROSS_METRICS = ("id_dist", "pose_err", "mouth")


@dataclass
class EvalConfig:
    """Settings of an evaluation run (field comments are the CLI help)."""

    source_frame: int = 0
    """Self-reenactment: the frame used as the source image (excluded from the scores)."""
    stride: int = 1
    """Evaluate every this many frames."""
    frames: int | None = None
    """Evaluate at most this many frames, evenly spaced over those the stride keeps."""
    methods: tuple[str, ...] = ("static", "classic")
    """Baselines to run beside --generator and --results."""
    generator: str | None = None
    """Checkpoint of the learned generator (faceanime.pgfg) to evaluate."""
    results: tuple[str, ...] = ()
    """Folders of videos made by another tool, one file per input with the input's name."""
    identity_threshold: float = 0.6
    """Identity distance below which two faces are the same person (dlib's threshold)."""
    batch_size: int = 8
    """Frames rendered and scored at once."""
    model: str = "sfm"
    """Morphable model name or path (for the classic method and the fits)."""
    device: str = "cpu"
    """Torch device for rendering, fitting and the identity network."""
    render: ClassicConfig = field(default_factory=ClassicConfig)
    """The classic renderer's settings."""
    motion: MotionConfig = field(default_factory=MotionConfig)
    """Cross-reenactment: how the driver's motion is applied."""
    progress: bool = True
    """Show progress bars."""


@dataclass
class MethodResult:
    """One method on one video: per-frame values (NaN where undefined) or an error."""

    name: str
    error: str | None = None
    per_frame: dict[str, list[float]] = field(default_factory=dict)
    summary: dict[str, float] = field(default_factory=dict)
    no_face: int = 0
    """Output frames in which dlib found no face."""


@dataclass
class VideoResult:
    """All methods on one input (a video, or a photo × driver pair for cross-reenactment)."""

    name: str
    path: str
    frames_total: int = 0
    frame_indices: list[int] = field(default_factory=list)
    source_frame: int | None = None
    driver: str | None = None
    gt_no_face: int = 0
    """Ground-truth (self) or driver (cross) frames without a face: excluded from AKD/AED."""
    error: str | None = None
    methods: dict[str, MethodResult] = field(default_factory=dict)
    seconds: float = 0.0
    """Wall-clock time this input took, every method included."""


# --- shared helpers ---------------------------------------------------------------------------


def select_frames(total: int, stride: int = 1, frames: int | None = None,
                  exclude: int | None = None) -> list[int]:
    """The evaluated frame indices: every ``stride``-th of ``total`` (without ``exclude``), then
    at most ``frames`` of them, evenly spaced (first and last kept)."""
    if stride < 1:
        raise InputError(f"--stride {stride}: must be at least 1")
    if frames is not None and frames < 1:
        raise InputError(f"--frames {frames}: must be at least 1")
    keep = [i for i in range(0, total, stride) if i != exclude]
    if frames is not None and len(keep) > frames:
        picks = np.linspace(0, len(keep) - 1, frames).round().astype(int)
        keep = [keep[i] for i in sorted(set(picks.tolist()))]
    return keep


def to_tensor(frames: Sequence[np.ndarray] | np.ndarray, device: torch.device | str
              ) -> torch.Tensor:
    """``(B, H, W, 3)`` uint8 -> ``(B, 3, H, W)`` float32 in [0, 1] on ``device``."""
    array = np.stack(list(frames)) if not isinstance(frames, np.ndarray) else frames
    tensor = torch.from_numpy(np.ascontiguousarray(array)).to(device)
    return tensor.permute(0, 3, 1, 2).float() / 255


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``(B, 3, H, W)`` in [0, 1] -> ``(B, H, W, 3)`` uint8, as a video writer would store it."""
    return images.mul(255).round().clamp(0, 255).byte().permute(0, 2, 3, 1).cpu().numpy()


def count_frames(path: str | os.PathLike) -> tuple[int, tuple[int, int]]:
    """Decode a whole video: ``(frame count, (height, width))``. Raises MediaError."""
    count, size = 0, (0, 0)
    for frame in iter_video_frames(path):
        count += 1
        size = frame.shape[:2]
    return count, size


class Scorer:
    """dlib landmarks and identity descriptors of frames, shared by every method."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        from faceanime.identity import load_embedder
        from faceanime.landmarks import create_detector

        self.detector = create_detector("dlib")
        self.embedder = load_embedder("torch", device)
        self.device = torch.device(device)

    def landmarks(self, frames: np.ndarray) -> torch.Tensor:
        """``(B, H, W, 3)`` uint8 -> ``(B, 68, 2)`` float32 points of the largest face (NaN where
        none is found). One detection per frame: no tracking, no smoothing, so a frame's points
        do not depend on its neighbours (or on the stride)."""
        out = np.full((len(frames), 68, 2), np.nan, np.float32)
        for i, frame in enumerate(frames):
            faces = self.detector.detect(np.ascontiguousarray(frame), max_faces=1)
            if faces:
                out[i] = faces[0].points
        return torch.from_numpy(out)

    @torch.no_grad()
    def embed(self, images: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` and ``(B, 68, 2)`` -> ``(B, 128)`` descriptors, NaN rows where the
        points are NaN (no face)."""
        out = torch.full((images.shape[0], 128), float("nan"), device=self.device)
        ok = torch.isfinite(points).flatten(1).all(1)
        if ok.any():
            idx = ok.nonzero().flatten().to(images.device)
            out[ok.to(self.device)] = self.embedder.embed(
                images.index_select(0, idx), points[ok].to(images.device)).float()
        return out

    def close(self) -> None:
        self.detector.close()


def summarise(per_frame: dict[str, list[float]], threshold: float) -> dict[str, float]:
    """Per-video values from per-frame ones: means (NaN skipped, so frames without a face leave
    AKD/AED out) and the identity share (``id``, a percentage; NaN distances are failures)."""
    out = {}
    for key, values in per_frame.items():
        t = torch.tensor(values, dtype=torch.float64)
        if key == "id_dist":
            out["id"] = 100 * M.id_share(t, threshold)
            out["id_dist"] = M.nanmean(t)
        else:
            out[key] = M.nanmean(t)
    return out


def _generator_class():
    """The learned renderer, imported on use (it brings its own dependencies)."""
    try:
        from faceanime.pgfg import GeneratorRenderer
    except ImportError as exc:
        raise BackendUnavailableError(
            "--generator: the learned generator (faceanime.pgfg.GeneratorRenderer) is not part "
            f"of this installation ({exc}); evaluate without --generator") from exc
    return GeneratorRenderer


def _renderer(method: str, model: FaceModel, image: np.ndarray, source: Coefficients,
              config: EvalConfig):
    if method == "classic":
        return ClassicRenderer(model, image, source, config.render)
    if method == "generator":
        return _generator_class()(model, image, source, config.generator, config.render,
                                  config.device)
    raise InputError(f"unknown method {method!r}")


def method_names(config: EvalConfig) -> list[str]:
    """Methods in report order: baselines, generator, external results."""
    for m in config.methods:
        if m not in ("static", "classic"):
            raise InputError(f"unknown baseline {m!r}; choose static and/or classic")
    names = list(config.methods)
    if config.generator is not None:
        names.append("generator")
    names += [f"results:{d}" for d in config.results]
    return names


def check_inputs(paths: Sequence[str | os.PathLike], config: EvalConfig, kind: str,
                 settings: bool = True) -> None:
    """Fail fast on what would fail every input: missing files, bad folders, bad settings, an
    unreadable generator checkpoint (``settings=False`` checks only the files)."""
    if not paths:
        raise InputError(f"no {kind} given")
    for p in paths:
        if not Path(p).is_file():
            raise InputError(f"{p}: no such file")
    names = [Path(p).name for p in paths]
    if len(set(names)) != len(names):
        raise InputError("two inputs share a file name; the report and --results match videos "
                         "by name, so rename one")
    if not settings:
        return
    select_frames(1, config.stride, config.frames)  # validates both
    if config.batch_size < 1:
        raise InputError(f"--batch-size {config.batch_size}: must be at least 1")
    if config.source_frame < 0:
        raise InputError(f"--source-frame {config.source_frame}: must be 0 or more")
    if not config.identity_threshold > 0:
        raise InputError(f"--identity-threshold {config.identity_threshold}: must be positive")
    for d in config.results:
        if not Path(d).is_dir():
            raise InputError(f"--results {d}: no such folder")
    if config.generator is not None:
        _generator_class()
        from faceanime.pgfg.checkpoint import load_checkpoint

        # Read once here so that a bad checkpoint stops the run before any work.
        load_checkpoint(config.generator)
    method_names(config)


def _error_text(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


# --- self-reenactment ---------------------------------------------------------------------------


def _results_stream(folder: str, video: Path, total: int, size: tuple[int, int]
                    ) -> Iterator[np.ndarray]:
    """Frames of ``folder/<video name>``, checked first: same frame count and size."""
    path = Path(folder) / video.name
    if not path.is_file():
        raise MediaError(f"{path}: missing (--results needs one video per input, same name)")
    count, got = count_frames(path)
    if count != total:
        raise MediaError(f"{path}: {count} frames, but {video.name} has {total}; results must "
                         "hold one frame per input frame")
    if got != size:
        raise MediaError(f"{path}: frames are {got[1]}×{got[0]}, but {video.name} is "
                         f"{size[1]}×{size[0]}; results must be at the input's size")
    return iter_video_frames(path)


def evaluate_self_video(video: str | os.PathLike, config: EvalConfig, model: FaceModel,
                        scorer: Scorer) -> VideoResult:
    """Self-reenactment of one video by every method (see the module docstring)."""
    video = Path(video)
    result = VideoResult(name=video.stem, path=str(video))
    names = method_names(config)
    device = torch.device(config.device)

    # Pass 1: length, size, source frame.
    source_image, total, size = None, 0, (0, 0)
    for i, frame in enumerate(iter_video_frames(video)):
        if i == config.source_frame:
            source_image = frame.copy()
        total, size = i + 1, frame.shape[:2]
    result.frames_total = total
    if source_image is None:
        raise InputError(f"{video}: --source-frame {config.source_frame} is past its last frame "
                         f"({total} frames)")
    result.source_frame = config.source_frame
    indices = select_frames(total, config.stride, config.frames, exclude=config.source_frame)
    if not indices:
        raise InputError(f"{video}: no frame left to evaluate (only the source frame)")
    result.frame_indices = indices
    wanted = set(indices)

    # Pass 2: ground-truth landmarks of the evaluated frames, and the fit.
    gt_points = torch.full((total, 68, 2), float("nan"))
    bar = tqdm(total=len(indices), desc=f"landmarks {video.name}", unit="frame",
               disable=not config.progress, leave=False)
    for i, frame in enumerate(iter_video_frames(video)):
        if i in wanted:
            gt_points[i] = scorer.landmarks(frame[None])[0]
            bar.update(1)
    bar.close()
    src_points = scorer.landmarks(source_image[None])
    if not torch.isfinite(src_points).all():
        raise FaceNotFoundError(f"{video}: no face in source frame {config.source_frame}; choose "
                                "another with --source-frame")
    gt_points[config.source_frame] = src_points[0]
    gt_face = torch.isfinite(gt_points[indices]).flatten(1).all(1)
    result.gt_no_face = int((~gt_face).sum())

    fitted = sorted([*indices, config.source_frame])
    position = {f: k for k, f in enumerate(fitted)}
    consecutive = fitted[-1] - fitted[0] == len(fitted) - 1
    # The temporal term links neighbouring rows: only meaningful when they are neighbours.
    fit_config = FitConfig(device=config.device,
                           temporal_weight=FitConfig.temporal_weight if consecutive else 0.0)
    coeffs = fit_landmarks(model, gt_points[fitted], size, fit_config)
    source_coeffs = coeffs.frames([position[config.source_frame]])

    src_tensor = to_tensor(source_image[None], device)
    src_desc = scorer.embed(src_tensor, src_points.to(device))

    # Pass 3: render and score, batch by batch.
    renderers, streams = {}, {}
    for name in names:
        result.methods[name] = MethodResult(name, per_frame={k: [] for k in SELF_METRICS})
        try:
            if name in ("classic", "generator"):
                renderers[name] = _renderer(name, model, source_image, source_coeffs, config)
            elif name.startswith("results:"):
                streams[name] = _results_stream(name[len("results:"):], video, total, size)
        except FaceAnimeError as exc:
            result.methods[name].error = _error_text(exc)
    live = [n for n in names if result.methods[n].error is None]

    def batches() -> Iterator[tuple[list[int], np.ndarray, dict[str, np.ndarray]]]:
        idx, gts, ext = [], [], {n: [] for n in streams}
        for i, frame in enumerate(iter_video_frames(video)):
            others = {}
            for n, s in streams.items():
                others[n] = next(s)
            if i not in wanted:
                continue
            idx.append(i)
            gts.append(frame)
            for n in streams:
                ext[n].append(others[n])
            if len(idx) == config.batch_size:
                yield idx, np.stack(gts), {n: np.stack(v) for n, v in ext.items()}
                idx, gts, ext = [], [], {n: [] for n in streams}
        if idx:
            yield idx, np.stack(gts), {n: np.stack(v) for n, v in ext.items()}

    bar = tqdm(total=len(indices), desc=f"evaluate {video.name}", unit="frame",
               disable=not config.progress, leave=False)
    try:
        for idx, gt_frames, external in batches():
            gt = to_tensor(gt_frames, device)
            points = gt_points[idx]
            gt_desc = scorer.embed(gt, points.to(device))
            for name in live:
                method = result.methods[name]
                if method.error is not None:
                    continue
                try:
                    if name == "static":
                        out = np.repeat(source_image[None], len(idx), 0)
                    elif name in renderers:
                        target = coeffs.frames([position[i] for i in idx])
                        out = to_uint8(renderers[name].render(target.to(device)))
                    else:
                        out = external[name]
                except FaceAnimeError as exc:
                    method.error = _error_text(exc)
                    continue
                _score_self(method, to_tensor(out, device), out, gt, points, gt_desc, src_desc,
                            scorer)
            bar.update(len(idx))
    finally:
        bar.close()
        for s in streams.values():
            s.close()
    for method in result.methods.values():
        if method.error is None:
            method.summary = summarise(method.per_frame, config.identity_threshold)
            method.summary["no_face"] = method.no_face
        else:
            method.per_frame = {}
    return result


def _score_self(method: MethodResult, out: torch.Tensor, out_frames: np.ndarray,
                gt: torch.Tensor, gt_points: torch.Tensor, gt_desc: torch.Tensor,
                src_desc: torch.Tensor, scorer: Scorer) -> None:
    """Append one batch's per-frame values to ``method``."""
    points = scorer.landmarks(out_frames)
    desc = scorer.embed(out, points.to(out.device))
    method.no_face += int((~torch.isfinite(points).flatten(1).all(1)).sum())
    values = {
        "l1": M.l1(out, gt), "psnr": M.psnr(out, gt), "ssim": M.ssim(out, gt),
        # NaN where either side has no face: excluded from the means.
        "akd": M.akd(points, gt_points),
        "aed": identity_distance(desc, gt_desc),
        "id_dist": identity_distance(desc, src_desc.expand_as(desc)),
    }
    for key, v in values.items():
        method.per_frame[key] += [float(x) for x in v.cpu()]


def evaluate_self(videos: Sequence[str | os.PathLike], config: EvalConfig | None = None
                  ) -> list[VideoResult]:
    """Self-reenactment of each video by every method; a video that fails as a whole (unreadable,
    no face in its source frame) carries its error and the others go on."""
    config = config or EvalConfig()
    check_inputs(videos, config, "videos")
    for v in videos:
        if not is_video_path(v):
            raise InputError(f"{v}: not a video (mp4, mov, ...); self-reenactment needs videos")
    model = load_model(config.model, device=config.device)
    scorer = Scorer(config.device)
    results = []
    try:
        for v in videos:
            started = time.perf_counter()
            try:
                results.append(evaluate_self_video(v, config, model, scorer))
            except FaceAnimeError as exc:
                results.append(VideoResult(name=Path(v).stem, path=str(v),
                                           error=_error_text(exc)))
            results[-1].seconds = time.perf_counter() - started
    finally:
        scorer.close()
    return results


# --- cross-reenactment --------------------------------------------------------------------------


def rotation_angle_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Angle of ``a bᵀ`` in degrees: ``(T, 3, 3)`` × 2 -> ``(T,)`` (the geodesic distance)."""
    rel = a @ b.transpose(-1, -2)
    trace = rel.diagonal(dim1=-2, dim2=-1).sum(-1)
    return torch.rad2deg(torch.acos(((trace - 1) / 2).clamp(-1, 1)))


def mouth_opening(points: torch.Tensor) -> torch.Tensor:
    """Inner-lip opening over the outer-eye-corner distance: ``(T, 68, 2)`` -> ``(T,)`` (NaN
    without a face). iBUG 0-based 61–63 are the upper inner lip, 65–67 the lower."""
    gap = (points[:, [67, 66, 65]] - points[:, [61, 62, 63]]).norm(dim=-1).mean(-1)
    eyes = (points[:, 36] - points[:, 45]).norm(dim=-1)
    return gap / eyes


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two series ``(T,)`` or ``(T, K)``: each column is centred over
    time, then the centred arrays are compared as one vector (so every expression coefficient
    and the jaw contribute by how much they move). Rows with NaN are dropped; NaN when either
    side does not move (a static output has no expression to correlate) or T < 3."""
    a, b = a.double().reshape(a.shape[0], -1), b.double().reshape(b.shape[0], -1)
    ok = torch.isfinite(a).all(1) & torch.isfinite(b).all(1)
    a, b = a[ok], b[ok]
    if a.shape[0] < 3:
        return float("nan")
    a, b = (a - a.mean(0)).flatten(), (b - b.mean(0)).flatten()
    denom = float(a.norm() * b.norm())
    if denom < 1e-12:
        return float("nan")
    return float((a @ b) / denom)


def cross_results_name(photo: str | os.PathLike, driving: str | os.PathLike) -> str:
    """File name a ``--results`` folder holds for one photo × driver pair."""
    return f"{Path(photo).stem}_{Path(driving).stem}.mp4"


def evaluate_cross_pair(photo: str | os.PathLike, driving: str | os.PathLike,
                        config: EvalConfig, model: FaceModel, scorer: Scorer) -> VideoResult:
    """One photo driven by one video, by every method (see the module docstring)."""
    photo, driving = Path(photo), Path(driving)
    names = method_names(config)
    device = torch.device(config.device)
    result = VideoResult(name=f"{photo.stem}_{driving.stem}", path=str(photo),
                         driver=str(driving))
    image = read_image(photo)
    photo_points = scorer.landmarks(image[None])
    if not torch.isfinite(photo_points).all():
        raise FaceNotFoundError(f"{photo}: no face found; use a roughly frontal portrait")
    source = fit_landmarks(model, photo_points, image.shape[:2], FitConfig(device=config.device))
    photo_desc = scorer.embed(to_tensor(image[None], device), photo_points.to(device))

    # The driver: length, then landmarks of the evaluated frames and their fit.
    total, size = count_frames(driving)
    indices = select_frames(total, config.stride, config.frames)
    wanted = set(indices)
    drv_points = torch.full((len(indices), 68, 2), float("nan"))
    k = 0
    for i, frame in enumerate(iter_video_frames(driving)):
        if i in wanted:
            drv_points[k] = scorer.landmarks(frame[None])[0]
            k += 1
    result.frames_total, result.frame_indices = total, indices
    drv_face = torch.isfinite(drv_points).flatten(1).all(1)
    result.gt_no_face = int((~drv_face).sum())
    consecutive = config.stride == 1 and config.frames is None
    fit_config = FitConfig(device=config.device,
                           temporal_weight=FitConfig.temporal_weight if consecutive else 0.0)
    drv = fit_landmarks(model, drv_points, size, fit_config)
    motion = MotionConfig(**{**config.motion.__dict__, "reference_frame": 0})
    target = transfer_motion(source, drv, motion)
    drv_mouth = mouth_opening(drv_points)
    drv_expr = torch.cat([drv.expression, drv.jaw[:, None]], 1).cpu()

    for name in names:
        method = MethodResult(name)
        result.methods[name] = method
        try:
            points, desc = [], []
            with tqdm(total=len(indices), desc=f"{name} {result.name}", unit="frame",
                      disable=not config.progress, leave=False) as bar:
                for out in _cross_outputs(name, photo, driving, image, model, source, target,
                                          indices, total, config):
                    p = scorer.landmarks(out)
                    points.append(p)
                    desc.append(scorer.embed(to_tensor(out, device), p.to(device)).cpu())
                    bar.update(len(out))
            points, desc = torch.cat(points), torch.cat(desc)
        except FaceAnimeError as exc:
            method.error = _error_text(exc)
            continue
        face = torch.isfinite(points).flatten(1).all(1)
        method.no_face = int((~face).sum())
        pose = torch.full((len(indices),), float("nan"))
        expr_corr = float("nan")
        if bool(face.any()):
            # The output's own head pose and expression, fitted as the driver's were.
            out = fit_landmarks(model, points, image.shape[:2], fit_config)
            ok = out.valid.cpu() & face & drv_face
            angle = rotation_angle_deg(out.rotation.cpu(), target.rotation.cpu())
            pose = torch.where(ok, angle, torch.full_like(angle, float("nan")))
            out_expr = torch.cat([out.expression, out.jaw[:, None]], 1).cpu()
            expr_corr = correlation(out_expr[ok], drv_expr[ok])
        mouth = mouth_opening(points)
        method.per_frame = {"id_dist": identity_distance(desc, photo_desc.cpu()).tolist(),
                            "pose_err": pose.tolist(), "mouth": mouth.tolist()}
        method.summary = summarise({k: method.per_frame[k] for k in ("id_dist", "pose_err")},
                                   config.identity_threshold)
        method.summary["expr_corr"] = expr_corr
        method.summary["mouth_corr"] = correlation(mouth, drv_mouth)
        method.summary["no_face"] = method.no_face
    return result


def _cross_outputs(name: str, photo: Path, driving: Path, image: np.ndarray, model: FaceModel,
                   source: Coefficients, target: Coefficients, indices: list[int], total: int,
                   config: EvalConfig) -> Iterator[np.ndarray]:
    """A method's output frames at ``indices``, in batches of ``(B, H, W, 3)`` uint8."""
    b = config.batch_size
    if name == "static":
        for k in range(0, len(indices), b):
            yield np.repeat(image[None], len(indices[k:k + b]), 0)
        return
    if name in ("classic", "generator"):
        renderer = _renderer(name, model, image, source, config)
        dev = torch.device(config.device)
        for k in range(0, len(indices), b):
            yield to_uint8(renderer.render(target.frames(slice(k, k + b)).to(dev)))
        return
    folder = Path(name[len("results:"):])
    path = folder / cross_results_name(photo, driving)
    if not path.is_file():
        raise MediaError(f"{path}: missing (--results needs <photo>_<driver>.mp4 per pair)")
    count, size = count_frames(path)
    if count != total:
        raise MediaError(f"{path}: {count} frames, but {driving.name} has {total}; results must "
                         "hold one frame per driving frame")
    if size != image.shape[:2]:
        raise MediaError(f"{path}: frames are {size[1]}×{size[0]}, but {photo.name} is "
                         f"{image.shape[1]}×{image.shape[0]}; results must be at the photo's size")
    wanted, batch = set(indices), []
    for i, frame in enumerate(iter_video_frames(path)):
        if i in wanted:
            batch.append(frame)
            if len(batch) == b:
                yield np.stack(batch)
                batch = []
    if batch:
        yield np.stack(batch)


def evaluate_cross(photos: Sequence[str | os.PathLike], driving: Sequence[str | os.PathLike],
                   config: EvalConfig | None = None) -> list[VideoResult]:
    """Cross-reenactment of every photo by every driving video; a pair that fails as a whole
    carries its error and the others go on."""
    config = config or EvalConfig()
    check_inputs(photos, config, "photos")
    check_inputs(driving, config, "driving videos", settings=False)
    for v in driving:
        if not is_video_path(v):
            raise InputError(f"{v}: --driving takes videos (mp4, mov, ...)")
    model = load_model(config.model, device=config.device)
    scorer = Scorer(config.device)
    results = []
    try:
        for p in photos:
            for v in driving:
                started = time.perf_counter()
                try:
                    results.append(evaluate_cross_pair(p, v, config, model, scorer))
                except FaceAnimeError as exc:
                    results.append(VideoResult(name=f"{Path(p).stem}_{Path(v).stem}",
                                               path=str(p), driver=str(v),
                                               error=_error_text(exc)))
                results[-1].seconds = time.perf_counter() - started
    finally:
        scorer.close()
    return results
