"""The self- and cross-reenactment protocols, streamed over frames in batches.

**Self-reenactment** (the first-order-model protocol): the source is frame ``source_frame`` of a
video, the driver is the same video, and every evaluated output frame is compared with the real
one. Passes over the video: (1) count the frames and keep the source frame, (2) dlib landmarks
of the evaluated ground-truth frames (detected frame by frame, not tracked or smoothed, the same
procedure as on the outputs: what the outputs are scored against), (3) the video captured as
retarget captures a driver (:func:`capture_driving`: every frame tracked and fitted with one
identity, its mouth interiors, gaze and blinks), whose rows are the rendering methods' source
and targets, (4) render every method batch by batch and score it. Only per-frame numbers and
the coefficients are kept.

**Cross-reenactment**: a photo driven by a video. There is no ground truth; the output is scored
on identity (against the photo), pose (the output's fitted head rotation against the rotation
relative motion transfer asks for) and expression (correlation of the output's fitted expression
and mouth opening with the driver's). The renderers are driven as retarget drives them (every
frame of the video tracked and fitted, its mouth interiors, gaze and blinks captured,
:func:`capture_driving`), while the driver is *measured* as the outputs are, frame by frame on
the scored frames: a renderer driven by those same per-frame detections would carry their
noise into its output and follow the reference better than the job can (mouth follow on d6
0.89 against the job's 0.72 for s1).

**What a viewer sees**, in both protocols and for every method (see
:mod:`~faceanime.evaluation.metrics`): the double-face rate (output frames where dlib's detector
finds more faces than in the source), head-motion follow, blink follow, the closed-eye ratio,
mouth follow and mouth width follow, each measured from the output's own landmarks against the
driver's (in self-reenactment the driver is the video itself).

Methods: ``static`` (the source repeated), ``warp`` (the default renderer,
:class:`~faceanime.render.warp.WarpRenderer`), ``mask`` (the face texture pasted into the still
photo, :class:`~faceanime.render.classic.ClassicRenderer`), ``warp2d`` (the source warped
piecewise-affinely onto the driver's 2-D landmarks, :mod:`~faceanime.evaluation.warp2d`),
``generator`` (``--generator CKPT``, the learned renderer of :mod:`faceanime.pgfg`) and
``results:<dir>`` (videos made by another tool, named as the inputs). A method failing on one
video (a corrupt or wrong-length results video, a source without a face) is recorded for that
video and the rest of the report goes on.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from faceanime.capture import capture_driver
from faceanime.coefficients import Coefficients
from faceanime.devices import resolve_device
from faceanime.errors import (
    BackendUnavailableError,
    FaceAnimeError,
    FaceNotFoundError,
    InputError,
    MediaError,
)
from faceanime.evaluation import metrics as M
from faceanime.evaluation.metrics import correlation, mouth_opening
from faceanime.evaluation.warp2d import transfer_landmarks, triangulate, warp_image
from faceanime.fitting import FitConfig, fit_video
from faceanime.fitting.fitter import fit_landmarks
from faceanime.identity import identity_distance
from faceanime.io import is_video_path, iter_video_frames, read_image
from faceanime.landmarks import TrackerConfig, track_video
from faceanime.landmarks.detector import as_rgb_image
from faceanime.landmarks.gaze import measure_gaze
from faceanime.morphable import FaceModel, load_model
from faceanime.motion import MotionConfig, transfer_motion
from faceanime.parallel import default_track_parts
from faceanime.render.classic import ClassicConfig, ClassicRenderer
from faceanime.render.frames import frames_tensor
from faceanime.render.mouth_interior import InteriorCapture
from faceanime.render.warp import WarpConfig, WarpRenderer

SELF_METRICS = ("l1", "psnr", "ssim", "akd", "aed", "id_dist")
CROSS_METRICS = ("id_dist", "pose_err")
BASELINES = ("static", "warp", "mask", "warp2d")
DEFAULT_METHODS = ("static", "warp", "warp2d")


@dataclass
class EvalConfig:
    """Settings of an evaluation run (field comments are the CLI help)."""

    source_frame: int = 0
    """Self-reenactment: the frame used as the source image (excluded from the scores)."""
    stride: int = 1
    """Evaluate every this many frames."""
    frames: int | None = None
    """Evaluate at most this many frames, evenly spaced over those the stride keeps."""
    methods: tuple[str, ...] = DEFAULT_METHODS
    """Baselines to run beside --generator and --results: static, warp, mask, warp2d."""
    generator: str | None = None
    """Checkpoint of the learned generator (faceanime.pgfg) to evaluate."""
    results: tuple[str, ...] = ()
    """Folders of videos made by another tool, one file per input with the input's name."""
    identity_threshold: float = 0.6
    """Identity distance below which two faces are the same person (dlib's threshold)."""
    batch_size: int = 8
    """Frames rendered and scored at once."""
    model: str = "sfm"
    """Morphable model name or path (for the rendering methods and the fits)."""
    device: str = "auto"
    """Torch device for rendering, fitting and the identity network: auto (CUDA when this
    machine has it, else the CPU), cpu, cuda or cuda:N; resolved once, before any work."""
    warp: WarpConfig = field(default_factory=WarpConfig)
    """The warp renderer's settings."""
    render: ClassicConfig = field(default_factory=ClassicConfig)
    """The mask renderer's and the generator's settings."""
    motion: MotionConfig = field(default_factory=MotionConfig)
    """Cross-reenactment: how the driver's motion is applied."""
    progress: bool = True
    """Show progress bars."""
    count_upsample_side: int = 400
    """Double-face count: frames whose longer side is below this many pixels are searched for
    faces at twice their size (dlib's HOG finds faces from ~80 px)."""
    min_head_motion: float = M.MIN_HEAD_MOTION
    """Head follow: a driver axis whose displacement varies less than this (standard deviation,
    inter-ocular units) is left out."""
    closed_eye_share: float = M.CLOSED_EYE_SHARE
    """Closed-eye ratio: the share of the driver's frames taken as its most closed."""


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
    source_faces: int | None = None
    """Faces dlib finds in the source image (the double-face rate's reference)."""
    reference: dict[str, list[float]] = field(default_factory=dict)
    """The driver's per-frame ``ear``, ``mouth``, ``head_dx``, ``head_dy`` (self: the real
    frames), beside the methods' in the plots."""
    reference_summary: dict = field(default_factory=dict)
    """The driver's own ``closed_eye`` ratio (what a method that blinks exactly as it does
    gets) and ``retest``, its frames read again mirrored and scored as an output
    (:func:`driver_reference`)."""
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
    """dlib landmarks, face counts and identity descriptors of frames, shared by every method.

    Args:
        device: torch device of the identity network.
        count_upsample_side: frames whose longer side is below this are searched for faces at
            twice their size when counting them (see :meth:`detect`).
    """

    def __init__(self, device: torch.device | str = "cpu",
                 count_upsample_side: int = EvalConfig.count_upsample_side) -> None:
        from faceanime.identity import load_embedder
        from faceanime.landmarks import create_detector

        self.detector = create_detector("dlib")
        self.embedder = load_embedder("torch", device)
        self.device = torch.device(device)
        self.count_upsample_side = count_upsample_side

    def detect(self, frames: np.ndarray, count: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, H, W, 3)`` uint8 -> ``(B, 68, 2)`` float32 points of the largest face (NaN where
        none is found) and ``(B,)`` int64 face counts.

        One detection per frame: no tracking, no smoothing, so a frame's points do not depend on
        its neighbours (or on the stride). The points are those of ``detect(max_faces=1)`` (HOG
        on a copy at most ``max_side`` = 640 px long, retried upsampled when a small frame shows
        none). The count is the number of HOG boxes of that same detection, except on frames
        whose longer side is below ``count_upsample_side``, which are counted on one more HOG
        pass upsampled once (``count=False`` skips that pass: the counts are then the plain
        detection's)."""
        points = np.full((len(frames), 68, 2), np.nan, np.float32)
        counts = np.zeros(len(frames), np.int64)
        for i, frame in enumerate(frames):
            image = as_rgb_image(frame)
            boxes, _ = self.detector.find_boxes(image)
            if len(boxes):
                found = self.detector.landmarks_in_box(image, boxes[0])
                if found is not None:
                    points[i] = found
            counts[i] = len(boxes)
            if count and max(image.shape[:2]) < self.count_upsample_side:
                counts[i] = len(self.detector.detect_boxes(image, upsample=1)[0])
        return torch.from_numpy(points), torch.from_numpy(counts)

    def landmarks(self, frames: np.ndarray) -> torch.Tensor:
        """``(B, H, W, 3)`` uint8 -> ``(B, 68, 2)`` float32 points of the largest face, NaN where
        none is found (:meth:`detect` without the counts)."""
        return self.detect(frames, count=False)[0]

    def mirrored_landmarks(self, frames: np.ndarray) -> torch.Tensor:
        """:meth:`landmarks` of the frames flipped left to right, mapped back onto the frames
        (x mirrored, each point its counterpart, :data:`~faceanime.evaluation.metrics.
        MIRROR_68`): the same faces read a second time, with the detector's and the
        predictor's errors drawn afresh."""
        flipped = np.ascontiguousarray(np.asarray(frames)[:, :, ::-1])
        points = self.landmarks(flipped)[:, list(M.MIRROR_68)]
        points[..., 0] = flipped.shape[2] - 1 - points[..., 0]
        return points

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


def viewer_series(points: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-frame landmark measures of what a viewer sees: ``(T, 68, 2)`` -> ``ear``, ``mouth``,
    ``width``, ``head_dx``, ``head_dy`` and ``brow_height``, ``brow_gap`` (:func:`~faceanime.
    evaluation.metrics.brow_position`), each ``(T,)`` (inter-ocular units), NaN without a face."""
    head = M.head_displacement(points)
    brows = M.brow_position(points)
    return {"ear": M.eye_aspect_ratio(points), "mouth": mouth_opening(points),
            "width": M.mouth_width(points), "head_dx": head[:, 0], "head_dy": head[:, 1],
            "brow_height": brows[:, 0], "brow_gap": brows[:, 1]}


def viewer_summary(points: torch.Tensor, faces: torch.Tensor, driver: torch.Tensor,
                   source_faces: int, config: EvalConfig
                   ) -> tuple[dict[str, float], dict[str, list[float]]]:
    """A method's per-video values of what a viewer sees (``double_face``, ``head_follow``,
    ``blink_follow``, ``closed_eye``, ``mouth_corr``, ``width_corr``, ``brow_corr``: the
    brows' height and inner gap correlated as one, each centred) and its per-frame series
    (``faces`` and :func:`viewer_series`).

    Args:
        points: ``(T, 68, 2)`` the output's landmarks, NaN where no face was found.
        faces: ``(T,)`` faces found in each output frame.
        driver: ``(T, 68, 2)`` the driver's landmarks at the same frames.
        source_faces: faces found in the source image.
        config: the thresholds (``min_head_motion``, ``closed_eye_share``).
    """
    out, drv = viewer_series(points), viewer_series(driver)
    summary = {
        "double_face": M.double_face_rate(faces, source_faces),
        "head_follow": M.head_follow(points, driver, config.min_head_motion),
        "blink_follow": correlation(out["ear"], drv["ear"]),
        "closed_eye": M.closed_eye_ratio(out["ear"], drv["ear"], config.closed_eye_share),
        "mouth_corr": correlation(out["mouth"], drv["mouth"]),
        "width_corr": correlation(out["width"], drv["width"]),
        "brow_corr": correlation(torch.stack([out["brow_height"], out["brow_gap"]], 1),
                                 torch.stack([drv["brow_height"], drv["brow_gap"]], 1)),
    }
    series = {"faces": [float(f) for f in faces.tolist()]}
    series.update({k: [float(x) for x in v.tolist()] for k, v in out.items()})
    return summary, series


def driver_reference(driver: torch.Tensor, config: EvalConfig,
                     mirrored: torch.Tensor | None = None
                     ) -> tuple[dict[str, list[float]], dict]:
    """The driver's own per-frame series (:func:`viewer_series`) and summary: its closed-eye
    ratio against itself (``closed_eye``) and, given ``mirrored``, the driver's frames read
    again, mirrored (:meth:`Scorer.mirrored_landmarks`), scored against the driver as an
    output is (``retest``: ``head_follow``, ``blink_follow``, ``closed_eye``, ``mouth_corr``,
    ``width_corr``, ``brow_corr``): how far the measure agrees with itself on this video,
    which no output's reading, noisy in its own way, can be expected to beat.

    Args:
        driver: ``(T, 68, 2)`` the driver's landmarks (NaN without a face).
        config: the thresholds.
        mirrored: ``(T, 68, 2)`` the same frames read mirrored, or None.
    """
    series = viewer_series(driver)
    summary: dict = {"closed_eye": M.closed_eye_ratio(series["ear"], series["ear"],
                                                      config.closed_eye_share)}
    if mirrored is not None:
        faces = torch.isfinite(mirrored).flatten(1).all(1).long()
        retest, _ = viewer_summary(mirrored, faces, driver, 1, config)
        retest["double_face"] = float("nan")  # the driver's face counts are not the question
        summary["retest"] = retest
    return {k: [float(x) for x in v.tolist()] for k, v in series.items()}, summary


def tracked_reference(tracked: torch.Tensor, driver: torch.Tensor, config: EvalConfig
                      ) -> dict[str, float]:
    """The driver as the job reads it, scored against the driver as an output is (the
    ``tracked`` row of ``reference_summary``): the landmarks retarget tracks and fits, which
    drive every renderer, against the evaluator's frame-by-frame reading of the same frames.
    A renderer that draws exactly what it is driven by agrees with the measure about this far,
    less the noise of its own output's reading (d6's mouth: 0.90, where dlib's reading of an
    "o" or a tongue depends on the box it starts from).

    Args:
        tracked: ``(T, 68, 2)`` the captured driver's landmarks at the scored frames.
        driver: ``(T, 68, 2)`` the evaluator's reading of them (NaN without a face).
        config: the thresholds.
    """
    faces = torch.isfinite(tracked).flatten(1).all(1).long()
    summary, _ = viewer_summary(tracked.float(), faces, driver, 1, config)
    summary["double_face"] = float("nan")  # one face by construction, not a question
    return summary


class Warp2D:
    """The ``warp2d`` baseline for one source image (see :mod:`faceanime.evaluation.warp2d`).

    Args:
        image: ``(H, W, 3)`` uint8 source.
        points: ``(68, 2)`` its landmarks, finite.
        reference: ``(68, 2)`` the driver's landmarks in its reference frame, finite.
        device: where to warp.
    """

    def __init__(self, image: np.ndarray, points: torch.Tensor, reference: torch.Tensor,
                 device: torch.device | str) -> None:
        self.image = frames_tensor(image[None], device)
        self.points = points.to(self.image.device, torch.float32)
        self.reference = reference.to(self.image.device, torch.float32)
        self.triangles = triangulate(self.points, image.shape[:2])

    def render(self, driver: torch.Tensor) -> np.ndarray:
        """``(B, 68, 2)`` driver landmarks (NaN rows: the source unchanged) -> ``(B, H, W, 3)``
        uint8 frames."""
        target = transfer_landmarks(self.points, driver.to(self.image.device), self.reference)
        return to_uint8(warp_image(self.image, self.points, target, self.triangles))


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
    if method == "warp":
        return WarpRenderer(model, image, source, config.warp)
    if method == "mask":
        return ClassicRenderer(model, image, source, config.render)
    if method == "generator":
        return _generator_class()(model, image, source, config.generator, config.render,
                                  config.device)
    raise InputError(f"unknown method {method!r}")


def _capture(model: FaceModel, config: EvalConfig) -> InteriorCapture | None:
    """The warp's capture of the driver's mouth interior, or None where it draws none."""
    if not (config.warp.mouth_interior and config.warp.driver_interior):
        return None
    try:
        return InteriorCapture(model)
    except InputError:
        return None  # a model without a mouth hole


def method_names(config: EvalConfig) -> list[str]:
    """Methods in report order: baselines, generator, external results."""
    for m in config.methods:
        if m not in BASELINES:
            raise InputError(f"unknown baseline {m!r}; choose from {', '.join(BASELINES)}")
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
    check_results_size(path, got, size, video.name, "input")
    return (frame[:size[0], :size[1]] for frame in iter_video_frames(path))


def check_results_size(path: Path, got: tuple[int, int], size: tuple[int, int], name: str,
                       what: str) -> None:
    """Refuse results frames of ``got`` (H, W) unless they are ``size``, or ``size`` with an
    odd side padded by one (an H.264 writer in yuv420p does that: faceanime's own, or ffmpeg
    with a pad filter); the caller crops such frames back to ``size``."""
    even = tuple(s + s % 2 for s in size)
    if got not in (size, even):
        raise MediaError(f"{path}: frames are {got[1]}×{got[0]}, but {name} is "
                         f"{size[1]}×{size[0]}; results must be at the {what}'s size")


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

    # Pass 2: ground-truth landmarks of the evaluated frames, detected frame by frame as on the
    # outputs (what the outputs are scored against).
    # Each is read mirrored too: how far the measure agrees with itself (driver_reference).
    gt_points = torch.full((total, 68, 2), float("nan"))
    gt_mirrored = torch.full((total, 68, 2), float("nan"))
    bar = tqdm(total=len(indices), desc=f"landmarks {video.name}", unit="frame",
               disable=not config.progress, leave=False)
    for i, frame in enumerate(iter_video_frames(video)):
        if i in wanted:
            gt_points[i] = scorer.landmarks(frame[None])[0]
            gt_mirrored[i] = scorer.mirrored_landmarks(frame[None])[0]
            bar.update(1)
    bar.close()
    src_points, src_faces = scorer.detect(source_image[None])
    if not torch.isfinite(src_points).all():
        raise FaceNotFoundError(f"{video}: no face in source frame {config.source_frame}; choose "
                                "another with --source-frame")
    result.source_faces = int(src_faces[0])
    gt_points[config.source_frame] = src_points[0]
    gt_face = torch.isfinite(gt_points[indices]).flatten(1).all(1)
    result.gt_no_face = int((~gt_face).sum())
    result.reference, result.reference_summary = driver_reference(
        gt_points[indices], config, gt_mirrored[indices])
    src_tensor = frames_tensor(source_image[None], device)
    src_desc = scorer.embed(src_tensor, src_points.to(device))

    # The renderers' coefficients: the video captured as retarget captures a driver (every
    # frame tracked and fitted, its mouth interiors, gaze and blinks); the source frame's row
    # is the source, each scored frame's row its target (relative motion from the source frame
    # with one identity is the frame's own coefficients).
    coeffs = None
    if any(n in ("warp", "mask", "generator") for n in names):
        coeffs = capture_driving(video, model, config)
        if coeffs.n_frames != total:
            raise MediaError(f"{video}: {coeffs.n_frames} frames tracked, {total} decoded; "
                             "re-encode the video (e.g. ffmpeg -i in.mp4 out.mp4)")
        source_coeffs = coeffs.frames([config.source_frame])
        if coeffs.landmarks is not None:
            result.reference_summary["tracked"] = tracked_reference(
                coeffs.landmarks[indices], gt_points[indices], config)

    # Pass 4: render and score, batch by batch.
    renderers, streams = {}, {}
    tracks: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {n: [] for n in names}
    for name in names:
        result.methods[name] = MethodResult(name, per_frame={k: [] for k in SELF_METRICS})
        try:
            if name in ("warp", "mask", "generator"):
                renderers[name] = _renderer(name, model, source_image, source_coeffs, config)
            elif name == "warp2d":
                # The driver is the video itself: its reference frame is the source frame, so
                # the targets are the detected landmarks of each frame.
                renderers[name] = Warp2D(source_image, src_points[0], src_points[0], device)
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
            gt = frames_tensor(gt_frames, device)
            points = gt_points[idx]
            gt_desc = scorer.embed(gt, points.to(device))
            for name in live:
                method = result.methods[name]
                if method.error is not None:
                    continue
                try:
                    if name == "static":
                        out = np.repeat(source_image[None], len(idx), 0)
                    elif name == "warp2d":
                        out = renderers[name].render(points)
                    elif name in renderers:
                        target = coeffs.frames(idx)
                        if name != "warp" or not config.motion.gaze:
                            target.gaze = None
                        out = to_uint8(renderers[name].render(target.to(device)))
                    else:
                        out = external[name]
                except FaceAnimeError as exc:
                    method.error = _error_text(exc)
                    continue
                tracks[name].append(_score_self(method, frames_tensor(out, device), out, gt, points,
                                                gt_desc, src_desc, scorer))
            bar.update(len(idx))
    finally:
        bar.close()
        for s in streams.values():
            s.close()
    for name, method in result.methods.items():
        if method.error is None:
            method.summary = summarise(method.per_frame, config.identity_threshold)
            points = torch.cat([p for p, _ in tracks[name]])
            faces = torch.cat([f for _, f in tracks[name]])
            viewer, series = viewer_summary(points, faces, gt_points[indices],
                                            result.source_faces, config)
            method.summary.update(viewer)
            method.per_frame.update(series)
            method.summary["no_face"] = method.no_face
        else:
            method.per_frame = {}
    return result


def _score_self(method: MethodResult, out: torch.Tensor, out_frames: np.ndarray,
                gt: torch.Tensor, gt_points: torch.Tensor, gt_desc: torch.Tensor,
                src_desc: torch.Tensor, scorer: Scorer) -> tuple[torch.Tensor, torch.Tensor]:
    """Append one batch's per-frame values to ``method``; returns the output's landmarks
    ``(B, 68, 2)`` and face counts ``(B,)``."""
    points, faces = scorer.detect(out_frames)
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
    return points, faces


def evaluate_self(videos: Sequence[str | os.PathLike], config: EvalConfig | None = None
                  ) -> list[VideoResult]:
    """Self-reenactment of each video by every method; a video that fails as a whole (unreadable,
    no face in its source frame) carries its error and the others go on."""
    config = config or EvalConfig()
    config = replace(config, device=str(resolve_device(config.device)))
    check_inputs(videos, config, "videos")
    for v in videos:
        if not is_video_path(v):
            raise InputError(f"{v}: not a video (mp4, mov, ...); self-reenactment needs videos")
    model = load_model(config.model, device=config.device)
    scorer = Scorer(config.device, config.count_upsample_side)
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


def cross_results_name(photo: str | os.PathLike, driving: str | os.PathLike) -> str:
    """File name a ``--results`` folder holds for one photo × driver pair."""
    return f"{Path(photo).stem}_{Path(driving).stem}.mp4"


def capture_driving(driving: Path, model: FaceModel, config: EvalConfig) -> Coefficients:
    """``T`` coefficients of every frame of a driving video, made as retarget makes them: the
    video tracked (:func:`~faceanime.landmarks.track_video`) and fitted with the temporal prior
    (:func:`~faceanime.fitting.fit_video`), then its mouth interiors where the warp draws the
    driver's (:func:`_capture`), gaze and blinks (:func:`~faceanime.capture.capture_driver`)."""
    tracker = TrackerConfig(progress=config.progress, parts=default_track_parts())
    coeffs = fit_video(driving, model, track_video(driving, tracker),
                       config=FitConfig(device=config.device))
    interiors = _capture(model, config) if "warp" in method_names(config) else None
    return capture_driver(driving, coeffs, interiors, gaze=config.motion.gaze,
                          progress=config.progress)


@dataclass
class DrivingVideo:
    """A driving video as the cross protocol uses it, made once for all of its photos.

    Attributes:
        total: its frame count.
        indices: the scored frames.
        points: ``(S, 68, 2)`` dlib's landmarks of the scored frames, detected frame by frame
            as on the outputs (NaN without a face): what the outputs are measured against.
        fit: their fit (the expression the outputs' is correlated with); ``fit_config`` made it
            and fits the outputs.
        reference: the driver's own per-frame viewer series, ``reference_summary`` its
            closed-eye ratio (:func:`driver_reference`).
        captured: ``T`` coefficients of every frame as retarget makes them
            (:func:`capture_driving`): what drives the renderers.
    """

    total: int
    indices: list[int]
    points: torch.Tensor
    fit: Coefficients
    fit_config: FitConfig
    reference: dict[str, list[float]]
    reference_summary: dict[str, float]
    captured: Coefficients


def measure_driving(driving: Path, model: FaceModel, scorer: Scorer, config: EvalConfig
                    ) -> DrivingVideo:
    """Measure a driving video's scored frames and capture all of its frames
    (:class:`DrivingVideo`).

    Raises:
        FaceNotFoundError: no scored frame shows a face.
        MediaError: the video cannot be read, or tracking saw another frame count.
    """
    total, size = count_frames(driving)
    indices = select_frames(total, config.stride, config.frames)
    wanted = set(indices)
    points = torch.full((len(indices), 68, 2), float("nan"))
    mirrored = torch.full_like(points, float("nan"))
    k = 0
    for i, frame in enumerate(iter_video_frames(driving)):
        if i in wanted:
            points[k] = scorer.landmarks(frame[None])[0]
            mirrored[k] = scorer.mirrored_landmarks(frame[None])[0]
            k += 1
    if not bool(torch.isfinite(points).flatten(1).all(1).any()):
        raise FaceNotFoundError(f"{driving}: no face in any of its {len(indices)} scored "
                                "frames; the driver must show a roughly frontal face")
    consecutive = config.stride == 1 and config.frames is None
    fit_config = FitConfig(device=config.device,
                           temporal_weight=FitConfig.temporal_weight if consecutive else 0.0)
    fit = fit_landmarks(model, points, size, fit_config)
    reference, reference_summary = driver_reference(points, config, mirrored)
    # The driver as retarget captures it (every frame tracked and fitted, its mouth interior,
    # gaze and blinks) drives the renderers: what they draw is what the job draws.
    captured = capture_driving(driving, model, config)
    if captured.n_frames != total:
        raise MediaError(f"{driving}: {captured.n_frames} frames tracked, {total} decoded; "
                         "re-encode the video (e.g. ffmpeg -i in.mp4 out.mp4)")
    if captured.landmarks is not None:
        reference_summary["tracked"] = tracked_reference(captured.landmarks[indices], points,
                                                         config)
    return DrivingVideo(total, indices, points, fit, fit_config, reference, reference_summary,
                        captured)


def evaluate_cross_pair(photo: str | os.PathLike, driving: str | os.PathLike,
                        config: EvalConfig, model: FaceModel, scorer: Scorer,
                        drivers: dict[Path, DrivingVideo | FaceAnimeError] | None = None
                        ) -> VideoResult:
    """One photo driven by one video, by every method (see the module docstring).
    ``drivers``: the driving videos measured and captured (:func:`measure_driving`, or the
    error that stopped one) by path, filled as they are made, so that several photos share
    one."""
    drivers = {} if drivers is None else drivers
    photo, driving = Path(photo), Path(driving)
    names = method_names(config)
    device = torch.device(config.device)
    result = VideoResult(name=f"{photo.stem}_{driving.stem}", path=str(photo),
                         driver=str(driving))
    image = read_image(photo)
    photo_points, photo_faces = scorer.detect(image[None])
    if not torch.isfinite(photo_points).all():
        raise FaceNotFoundError(f"{photo}: no face found; use a roughly frontal portrait")
    result.source_faces = int(photo_faces[0])
    source = fit_landmarks(model, photo_points, image.shape[:2], FitConfig(device=config.device))
    photo_desc = scorer.embed(frames_tensor(image[None], device), photo_points.to(device))
    source.gaze = measure_gaze(frames_tensor(image[None], device), photo_points.to(device)).to(
        source.expression)

    if driving not in drivers:
        try:
            drivers[driving] = measure_driving(driving, model, scorer, config)
        except FaceAnimeError as exc:
            drivers[driving] = exc  # each of its photos fails the same way, without a retry
    drv = drivers[driving]
    if isinstance(drv, FaceAnimeError):
        raise drv
    total, indices, drv_points = drv.total, drv.indices, drv.points
    drv_face = torch.isfinite(drv_points).flatten(1).all(1)
    result.frames_total, result.frame_indices = total, indices
    result.gt_no_face = int((~drv_face).sum())
    target = transfer_motion(source, drv.captured, config.motion, model).frames(indices)
    drv_expr = torch.cat([drv.fit.expression, drv.fit.jaw[:, None]], 1).cpu()
    result.reference, result.reference_summary = drv.reference, drv.reference_summary
    fit_config = drv.fit_config

    for name in names:
        method = MethodResult(name)
        result.methods[name] = method
        try:
            points, faces, desc = [], [], []
            with tqdm(total=len(indices), desc=f"{name} {result.name}", unit="frame",
                      disable=not config.progress, leave=False) as bar:
                for out in _cross_outputs(name, photo, driving, image, model, source, target,
                                          indices, total, config, photo_points[0], drv_points):
                    p, f = scorer.detect(out)
                    points.append(p)
                    faces.append(f)
                    desc.append(scorer.embed(frames_tensor(out, device), p.to(device)).cpu())
                    bar.update(len(out))
            points, faces, desc = torch.cat(points), torch.cat(faces), torch.cat(desc)
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
        method.per_frame = {"id_dist": identity_distance(desc, photo_desc.cpu()).tolist(),
                            "pose_err": pose.tolist()}
        method.summary = summarise({k: method.per_frame[k] for k in CROSS_METRICS},
                                   config.identity_threshold)
        method.summary["expr_corr"] = expr_corr
        viewer, series = viewer_summary(points, faces, drv_points, result.source_faces, config)
        method.summary.update(viewer)
        method.per_frame.update(series)
        method.summary["no_face"] = method.no_face
    return result


def _cross_outputs(name: str, photo: Path, driving: Path, image: np.ndarray, model: FaceModel,
                   source: Coefficients, target: Coefficients, indices: list[int], total: int,
                   config: EvalConfig, photo_points: torch.Tensor, drv_points: torch.Tensor
                   ) -> Iterator[np.ndarray]:
    """A method's output frames at ``indices``, in batches of ``(B, H, W, 3)`` uint8
    (``photo_points (68, 2)`` and ``drv_points (T, 68, 2)`` at ``indices`` drive ``warp2d``)."""
    b = config.batch_size
    if name == "static":
        for k in range(0, len(indices), b):
            yield np.repeat(image[None], len(indices[k:k + b]), 0)
        return
    if name == "warp2d":
        # The driver's reference is its frame 0, the first evaluated one (as for the motion).
        if indices[0] != 0 or not bool(torch.isfinite(drv_points[0]).all()):
            raise FaceNotFoundError(f"{driving}: no face in frame 0, the driver's reference; "
                                    "warp2d needs one")
        warp = Warp2D(image, photo_points, drv_points[0], config.device)
        for k in range(0, len(indices), b):
            yield warp.render(drv_points[k:k + b])
        return
    if name in ("warp", "mask", "generator"):
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
    h, w = image.shape[:2]
    check_results_size(path, size, (h, w), photo.name, "photo")
    wanted, batch = set(indices), []
    for i, frame in enumerate(iter_video_frames(path)):
        if i in wanted:
            batch.append(frame[:h, :w])
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
    config = replace(config, device=str(resolve_device(config.device)))
    check_inputs(photos, config, "photos")
    check_inputs(driving, config, "driving videos", settings=False)
    for v in driving:
        if not is_video_path(v):
            raise InputError(f"{v}: --driving takes videos (mp4, mov, ...)")
    model = load_model(config.model, device=config.device)
    scorer = Scorer(config.device, config.count_upsample_side)
    results: dict[tuple[int, int], VideoResult] = {}
    try:
        # Video by video, so that one driver's capture is held at a time; reported photo by
        # photo.
        for j, v in enumerate(driving):
            drivers: dict[Path, DrivingVideo | FaceAnimeError] = {}
            for i, p in enumerate(photos):
                started = time.perf_counter()
                try:
                    result = evaluate_cross_pair(p, v, config, model, scorer, drivers)
                except FaceAnimeError as exc:
                    result = VideoResult(name=f"{Path(p).stem}_{Path(v).stem}", path=str(p),
                                         driver=str(v), error=_error_text(exc))
                result.seconds = time.perf_counter() - started
                results[i, j] = result
    finally:
        scorer.close()
    return [results[i, j] for i in range(len(photos)) for j in range(len(driving))]
