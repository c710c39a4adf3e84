"""What the jobs (:mod:`~faceanime.jobs.retarget`, :mod:`~faceanime.jobs.predict`,
:mod:`~faceanime.jobs.animate`) share: output checks, the photo and the driver fitted
(:func:`prepare`), the source photo in the output's framing, the renderer choice, streaming
output with provenance, and runs over many sources.

Every generated file says it was synthesised: an mp4 carries ``comment`` and ``description``
metadata tags, a PNG ``tEXt`` chunks and a JPEG a comment, all naming faceanime, its version,
the job and the SHA-256 of the source photo (:func:`provenance`); ``watermark`` adds a visible
mark in a corner (:func:`watermark_frame`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import types
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from faceanime import __version__
from faceanime.coefficients import Coefficients
from faceanime.devices import resolve_device
from faceanime.errors import BackendUnavailableError, FaceAnimeError, InputError
from faceanime.fitting import FitConfig, fit_image, fit_video, read_landmarks_file
from faceanime.geometry.rotation import so3_exp
from faceanime.io import (
    IMAGE_EXTENSIONS,
    file_digest,
    image_size,
    is_video_path,
    read_image,
    read_video_info,
    video_encoder,
    write_image,
    write_video,
)
from faceanime.landmarks import (
    LandmarkDetector,
    TrackerConfig,
    VideoLandmarks,
    create_detector,
    detect_landmarks,
    measure_gaze,
    track_video,
)
from faceanime.morphable import FaceModel, load_model
from faceanime.parallel import Background, default_track_parts
from faceanime.render.classic import ClassicConfig, ClassicRenderer
from faceanime.render.frames import image_tensor
from faceanime.render.paste import crop_affine, warp_to_crop
from faceanime.render.warp import WarpConfig, WarpRenderer
from faceanime.samples import resolve_driving, template_names

VIDEO_OUTPUTS = (".mp4",)
WATERMARK_TEXT = "faceanime: synthetic"
RENDERERS = ("warp", "mask")


@dataclass
class OutputConfig:
    """How a job's frames are framed, rendered and written (shared by the three jobs)."""

    paste_back: bool = True
    """Show the face inside the full photo; False: an aligned square crop of the face."""
    size: int | None = None
    """Output side in pixels: the crop's side without paste-back (default 512), the photo's
    longer side with it (default: the photo's own size, at most ``max_side``)."""
    crop_scale: float = 1.5
    """Without paste-back: how much around the face the crop takes in (1 = eyes to chin)."""
    generator: str | None = None
    """A PGFG generator checkpoint; None: the weight-free ``renderer``."""
    renderer: str = "warp"
    """The weight-free renderer: ``warp`` (the photo moves, warped by the 3D fit's flow:
    :mod:`faceanime.render.warp`) or ``mask`` (the photo's face texture on the fitted mesh,
    pasted into the still photo: :mod:`faceanime.render.classic`)."""
    warp: WarpConfig | None = None
    """The warp renderer's settings (default: WarpConfig())."""
    render: ClassicConfig | None = None
    """The mask renderer's and the generator's settings (default: ClassicConfig())."""
    watermark: bool = False
    """Draw a visible "synthetic" mark in the bottom-right corner of every frame."""
    device: str | None = "auto"
    """auto (CUDA when this machine has it, else the CPU), cpu, cuda or cuda:N; None: the
    CPU. Each job resolves it once, before any work (:func:`on_device`)."""
    progress: bool = True
    """Show progress bars."""
    max_side: int = 2048
    """With paste-back and no ``size``: the longer side a larger photo is reduced to (and the
    output's); without paste-back, the most the photo is worked on at."""


@dataclass
class TaskResult:
    """What one job run produced."""

    output: Path | None
    """The file written (None when the frames were returned instead)."""
    frames: int
    fps: float
    seconds: float
    coefficients: Coefficients
    """The rendered coefficients, one frame per output frame."""
    video: np.ndarray | None = None
    """``(T, H, W, 3)`` uint8 frames when no output file was asked for."""
    device: str = "cpu"
    """Where it was rendered."""
    notes: tuple[str, ...] = ()
    """What the user should know about how it was made (a fallback detector found the face,
    the output was made smaller than the photo, ...); the summary line ends with them."""

    def summary(self) -> str:
        rate = self.frames / self.seconds if self.seconds > 0 else float("inf")
        where = self.output if self.output is not None else "(in memory)"
        notes = "".join(f"; {note}" for note in self.notes)
        return (f"{where}: {self.frames} frames at {self.fps:g} fps in {self.seconds:.1f} s "
                f"({rate:.1f} frames/s on {self.device}){notes}")


JobConfig = TypeVar("JobConfig", bound="PhotoInputs")


def on_device(config: JobConfig) -> JobConfig:
    """``config`` (a job's, with an ``output``) with its device resolved: ``"auto"`` becomes
    ``"cuda"`` or ``"cpu"``, and CUDA asked for where there is none is one clear error
    (:func:`~faceanime.devices.resolve_device`) before anything is read."""
    device = str(resolve_device(config.output.device))
    return replace(config, output=replace(config.output, device=device))


# --- outputs ------------------------------------------------------------------------------------


def check_output(path: str | os.PathLike, suffixes: tuple[str, ...] = VIDEO_OUTPUTS) -> Path:
    """Refuse an output before any work is done: wrong extension, or a folder that does not
    exist or cannot be written."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise InputError(f"{path}: the output must be a {' or '.join(suffixes)} file")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise InputError(f"{path}: output folder {folder} {what}; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{path}: output folder {folder} is not writable; choose another")
    return path


def check_outputs(output: str | os.PathLike | None, save_coefficients: str | os.PathLike | None,
                  suffixes: tuple[str, ...] = VIDEO_OUTPUTS) -> Path | None:
    """:func:`check_output` on a job's output (None: frames returned, not written) and on its
    coefficient file (``.npz``, when asked for); returns the output's path."""
    path = check_output(output, suffixes) if output is not None else None
    if save_coefficients is not None:
        check_output(save_coefficients, (".npz",))
    return path


def provenance(job: str, source: str | os.PathLike | None) -> dict[str, str]:
    """The metadata every generated file carries: who made it, by which job, from what."""
    text = f"synthesised by faceanime {__version__} ({job})"
    tags = {"comment": text, "description": text, "faceanime_version": __version__,
            "faceanime_job": job}
    if source is not None and Path(source).is_file():
        digest = file_digest(source)
        tags["faceanime_source_sha256"] = digest
        tags["comment"] = f"{text}; source sha256 {digest}"
        tags["description"] = tags["comment"]
    return tags


def watermark_frame(frame: np.ndarray, text: str = WATERMARK_TEXT) -> np.ndarray:
    """``(H, W, 3)`` uint8 with a small visible mark (white text on a dark band) in the
    bottom-right corner, sized to the frame."""
    image = Image.fromarray(np.asarray(frame, np.uint8))
    h, w = frame.shape[:2]
    size = max(10, min(h, w) // 28)
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        font = ImageFont.load_default()
    draw = ImageDraw.Draw(image, "RGBA")
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    pad = max(2, size // 4)
    left, top = w - (x1 - x0) - 3 * pad, h - (y1 - y0) - 3 * pad
    draw.rectangle((left, top, w - pad, h - pad), fill=(0, 0, 0, 140))
    draw.text((left + pad - x0, top + pad - y0), text, font=font, fill=(255, 255, 255, 230))
    return np.asarray(image)


def write_frames(output: Path, frames: Iterable[np.ndarray], fps: float, *, job: str,
                 source: str | os.PathLike | None, total: int | None = None,
                 audio_from: str | os.PathLike | None = None, config: OutputConfig | None = None,
                 desc: str | None = None) -> int:
    """Stream frames into ``output`` (an mp4, or an image for a single frame: the last one),
    with provenance metadata, an optional watermark and a progress bar. Atomic."""
    config = config or OutputConfig()
    meta = provenance(job, source)
    bar = tqdm(total=total, desc=desc or job, unit="frame", disable=not config.progress,
               leave=False)

    def counted() -> Iterator[np.ndarray]:
        for frame in frames:
            if config.watermark:
                frame = watermark_frame(frame)
            bar.update(1)
            yield frame

    try:
        if output.suffix.lower() in IMAGE_EXTENSIONS:
            last = None
            for last in counted():  # noqa: B007 - the image is the last frame
                pass
            if last is None:
                raise InputError(f"{output}: no frame to write")
            write_image(output, last, metadata=meta)
            return 1
        return write_video(output, counted(), fps=fps, audio_from=audio_from, metadata=meta,
                           encoder=video_encoder(config.device))
    finally:
        bar.close()


# --- the source photo in the output's framing -----------------------------------------------


def transform_coefficients(coeffs: Coefficients, affine: torch.Tensor,
                           image_size: tuple[int, int]) -> Coefficients:
    """Coefficients whose projection is ``affine`` applied to ``coeffs``' projection.

    Args:
        coeffs: ``T`` frames, orthographic camera.
        affine: ``(2, 3)`` similarity ``[[a, -b, cx], [b, a, cy]]`` from old to new pixels.
        image_size: ``(H, W)`` of the new image.

    With ``u = s (Rv)_x + t_x`` and ``v = t_y - s (Rv)_y``, a similarity of scale ``k`` and
    angle ``θ`` (image y down) becomes scale ``k s``, the rotation ``Rz(-θ) R`` and the
    translation ``A [t_x, t_y, 1]``.
    """
    if coeffs.camera != "orthographic":
        raise InputError("resizing or cropping the output needs the orthographic camera: fit "
                         "with --camera orthographic")
    affine = affine.to(coeffs.rotation)
    a, b = affine[0, 0], affine[1, 0]
    k = torch.sqrt(a * a + b * b)
    theta = torch.atan2(b, a)
    rz = so3_exp(torch.stack([0 * theta, 0 * theta, -theta]))
    xy = coeffs.translation[:, :2] @ affine[:, :2].T + affine[:, 2]
    translation = torch.cat([xy, coeffs.translation[:, 2:]], 1)
    return replace(coeffs, rotation=rz @ coeffs.rotation, translation=translation,
                   scale=coeffs.scale * k, image_size=torch.tensor(image_size),
                   landmarks=_affine_points(coeffs.landmarks, affine),
                   fitted_landmarks=_affine_points(coeffs.fitted_landmarks, affine))


def _affine_points(points: torch.Tensor | None, affine: torch.Tensor) -> torch.Tensor | None:
    return None if points is None else points @ affine[:, :2].T.to(points) + affine[:, 2].to(points)


def frame_source(photo: np.ndarray, coeffs: Coefficients, config: OutputConfig
                 ) -> tuple[np.ndarray, Coefficients]:
    """The photo and its coefficients in the output's framing: the photo resized to
    ``config.size`` (paste-back), or an aligned ``size``² crop around the face (no paste-back)."""
    h, w = photo.shape[:2]
    if config.paste_back:
        if config.size is None or config.size == max(h, w):
            return photo, coeffs
        if config.size < 16:
            raise InputError(f"--size {config.size}: the output needs at least 16 pixels")
        k = config.size / max(h, w)
        nh, nw = max(1, round(h * k)), max(1, round(w * k))
        resized = F.interpolate(image_tensor(photo)[None], size=(nh, nw), mode="bilinear",
                                align_corners=False, antialias=True)[0]
        # Pixel centres at integers: x' = (x + 0.5) k - 0.5.
        affine = torch.tensor([[nw / w, 0.0, nw / w / 2 - 0.5], [0.0, nh / h, nh / h / 2 - 0.5]])
        out = (resized.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        return np.ascontiguousarray(out), transform_coefficients(coeffs, affine, (nh, nw))
    size = config.size or 512
    if size < 16:
        raise InputError(f"--size {size}: the output needs at least 16 pixels")
    points = coeffs.landmarks if coeffs.landmarks is not None else coeffs.fitted_landmarks
    if points is None:
        raise InputError("the source coefficients hold no landmarks to align a crop with")
    affine = crop_affine(points[:1].float(), size, config.crop_scale)
    crop = warp_to_crop(image_tensor(photo)[None], affine, size)[0]
    out = (crop.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    return np.ascontiguousarray(out), transform_coefficients(coeffs, affine[0], (size, size))


def make_renderer(model: FaceModel, image: np.ndarray, coeffs: Coefficients,
                  config: OutputConfig | None = None):
    """The renderer of a job, chosen in one place: the warp of the photo by default, the pasted
    mask with ``config.renderer="mask"``, the learned PGFG generator (:mod:`faceanime.pgfg`)
    with ``config.generator``. All take the
    source photo and its coefficients and render frames at target coefficients
    (``image_size``, ``render``, ``iter_render``, ``iter_frames``)."""
    config = config or OutputConfig()
    if config.generator is None:
        if config.renderer not in RENDERERS:
            raise InputError(f"unknown renderer {config.renderer!r}: choose "
                             f"{' or '.join(RENDERERS)}")
        if config.renderer == "mask":
            return ClassicRenderer(model, image, coeffs, config.render)
        return WarpRenderer(model, image, coeffs, config.warp)
    path = Path(config.generator)
    if not path.exists():
        raise InputError(f"{path}: no such generator checkpoint; train one with 'faceanime "
                         "train generator' or leave out --generator for the classic render")
    try:
        from faceanime.pgfg import GeneratorRenderer
    except ImportError as exc:
        raise BackendUnavailableError(
            f"{path}: this faceanime has no PGFG generator module (faceanime.pgfg: {exc}); "
            "leave out --generator to use the classic render") from exc
    return GeneratorRenderer(model, image, coeffs, path, config.render, config.device)


# --- many sources -------------------------------------------------------------------------------


def expand_files(items: str | os.PathLike | Iterable[str | os.PathLike],
                 extensions: Iterable[str], kind: str) -> list[Path]:
    """Files from paths and folders: a folder gives its files with one of ``extensions``,
    sorted by name (none there: an error naming the ``kind`` of file wanted)."""
    if isinstance(items, (str, os.PathLike)):
        items = [items]
    extensions = tuple(extensions)
    out: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir()
                           if p.is_file() and p.suffix.lower() in extensions)
            if not found:
                raise InputError(f"{path}: the folder holds no {kind} ({', '.join(extensions)})")
            out.extend(found)
        else:
            out.append(path)
    return out


def expand_sources(sources: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Photos from paths and folders (a folder gives its images, sorted by name)."""
    out = expand_files(sources, IMAGE_EXTENSIONS, "image")
    if not out:
        raise InputError("no source photo given")
    return out


def outputs_for(sources: list[Path], output: str | os.PathLike, suffix: str = ".mp4"
                ) -> list[Path]:
    """One output per source: ``output`` itself for one source, else ``output/<stem>.mp4``
    (``output`` must then be an existing folder)."""
    output = Path(output)
    if output.is_dir():
        names = [s.stem for s in sources]
        if len(set(names)) != len(names):
            raise InputError(f"{output}: two sources share a name ({', '.join(names)}); "
                             "rename them so each output has its own file")
        return [output / f"{s.stem}{suffix}" for s in sources]
    if len(sources) > 1:
        raise InputError(f"{output}: with {len(sources)} sources the output must be an existing "
                         "folder (one video per source is written there)")
    return [output]


def run_many(sources: list[Path], outputs: list[Path],
             job: Callable[[Path, Path], TaskResult], quiet: bool = False) -> list[TaskResult]:
    """Run ``job(source, output)`` for each source. With one source its error propagates; with
    several, a failing one is reported (one line) and skipped, the rest still run, and an error
    at the end says how many failed."""
    if len(sources) == 1:
        result = job(sources[0], outputs[0])
        if not quiet:
            print(result.summary(), file=sys.stderr)
        return [result]
    results, failed = [], []
    for source, output in zip(sources, outputs, strict=True):
        try:
            result = job(source, output)
        except FaceAnimeError as exc:
            print(f"faceanime: skipped: {exc}", file=sys.stderr)
            failed.append(source.name)
            continue
        results.append(result)
        if not quiet:
            print(result.summary(), file=sys.stderr)
    if failed:
        raise InputError(f"{len(failed)} of {len(sources)} sources failed "
                         f"({', '.join(failed)}); the others were written")
    return results


def read_source(source: str | os.PathLike, config: OutputConfig
                ) -> tuple[np.ndarray, float, list[str]]:
    """The source photo as the job works on it: a photo larger than ``config.max_side`` (or than
    a larger ``config.size`` with paste-back) reduced to it, decoded reduced where the format
    allows, so a 6000² photo costs little more than a 2048² one.

    Returns:
        ``(H, W, 3)`` uint8 pixels; their scale relative to the file's; notes for the summary
        (the reduction, when the user did not ask for a size).
    """
    width, height = image_size(source)
    # Detection and the fit want pixels: a small --size is made from the fit at up to max_side.
    limit = max(config.size or 0, config.max_side) if config.paste_back else config.max_side
    photo = read_image(source, max_side=limit if max(width, height) > limit else None)
    notes = []
    if photo.shape[1] != width and not (config.paste_back and config.size):
        notes.append(f"the {width}×{height} photo worked on at {photo.shape[1]}×{photo.shape[0]}"
                     + (" (--size to change)" if config.paste_back else ""))
    return photo, photo.shape[1] / width, notes


def source_landmarks(source: str | os.PathLike, photo: np.ndarray, scale: float = 1.0,
                     detector: LandmarkDetector | str = "dlib", face_index: int = 0,
                     landmarks: np.ndarray | str | os.PathLike | None = None
                     ) -> tuple[np.ndarray, list[str]]:
    """The ``(68, 2)`` landmarks of the source photo ``photo`` (the file ``source`` read at
    ``scale``, :func:`read_source`): ``landmarks`` when given (points, an iBUG ``.pts`` or a
    ``faceanime landmarks`` ``.npz`` - its first frame - in the file's pixels), else detected
    (``detector``: a backend name or a built one); and notes for the summary (where the points
    came from, when a fallback detector found the face).

    Raises:
        FaceNotFoundError: no face (or not ``face_index`` faces) in the photo.
        InputError: an unreadable landmarks file, or one without a face.
    """
    if landmarks is not None:
        if isinstance(landmarks, (str, os.PathLike)):
            points = read_landmarks_file(landmarks)[0]
            note = f"landmarks from {Path(landmarks).name}"
        else:
            points, note = np.asarray(landmarks, np.float32).reshape(-1, 68, 2)[0], ""
        if not np.isfinite(points).all():
            raise InputError(f"{landmarks}: its first frame holds no face")
        # Pixel centres at integers: x' = (x + 0.5) k - 0.5.
        return (points + 0.5) * scale - 0.5, [note] if note else []
    if isinstance(detector, str):
        with create_detector(detector) as det:
            return source_landmarks(source, photo, scale, det, face_index)
    face = detect_landmarks(photo, detector, face_index, name=str(source))
    notes = [f"face found by {face.method}"] if face.method else []
    if face.faces > 1:
        which = "the largest" if face_index == 0 else f"number {face_index + 1} by size"
        notes.append(f"{face.faces} faces in the photo, {which} used (--face-index to choose)")
    return face.points, notes


def load_source(source: str | os.PathLike, model: FaceModel, config: OutputConfig,
                fit: FitConfig | None = None, face_index: int = 0,
                detector: LandmarkDetector | None = None,
                landmarks: np.ndarray | str | os.PathLike | None = None,
                notes: list[str] | None = None) -> tuple[np.ndarray, Coefficients]:
    """Read (:func:`read_source`) and fit the source photo, in the output's framing
    (:func:`frame_source`). Its landmarks: ``landmarks`` (points or a file, in the file's
    pixels) when given, else detected with ``detector`` (a built one, e.g. shared with the
    driver's tracking; default dlib). ``notes`` (a list) receives what the summary should say
    about how the photo was read and its face found."""
    photo, scale, read_notes = read_source(source, config)
    points, found_notes = source_landmarks(source, photo, scale, detector or "dlib", face_index,
                                           landmarks)
    if notes is not None:
        notes += read_notes + found_notes
    coeffs = fit_image(photo, model, landmarks=points, config=fit)
    # Where its eyes look, for the driver's glances to move its irises.
    coeffs.gaze = measure_gaze(image_tensor(photo)[None], torch.as_tensor(
        np.asarray(points, np.float32))[None]).to(coeffs.expression)
    return frame_source(photo, coeffs, config)


def collect_frames(frames: Iterable[np.ndarray]) -> np.ndarray:
    """``(T, H, W, 3)`` uint8: what the Python API returns when no output file is given."""
    return np.stack(list(frames))


def finish_job(job: str, source: str | os.PathLike, output: Path | None, renderer,
               target: Coefficients, fps: float, config: OutputConfig, started: float,
               audio_from: str | os.PathLike | None = None,
               save_coefficients: str | os.PathLike | None = None,
               decorate: Callable[[Iterator[np.ndarray]], Iterable[np.ndarray]] | None = None,
               notes: Iterable[str] = ()) -> TaskResult:
    """The common end of every job: render ``target`` frame batch by frame batch, optionally
    ``decorate`` the stream (side by side, ...), and write it to ``output`` as it comes (or
    collect it when ``output`` is None); then save the coefficients. ``notes`` end the
    result's summary."""
    frames: Iterable[np.ndarray] = renderer.iter_frames(target)
    if decorate is not None:
        frames = decorate(frames)
    result = TaskResult(output=output, frames=0, fps=fps, seconds=0.0, coefficients=target,
                        device=str(config.device or "cpu"), notes=tuple(notes))
    if output is None:
        result.video = collect_frames(frames)
        result.frames = len(result.video)
    else:
        result.frames = write_frames(output, frames, fps, job=job, source=source,
                                     total=target.n_frames, audio_from=audio_from,
                                     config=config, desc=f"{job} {Path(source).name}")
    if save_coefficients is not None:
        target.save(save_coefficients)
    result.seconds = time.perf_counter() - started
    return result


def check_frames(frames: int) -> int:
    if not isinstance(frames, int) or frames < 1:
        raise InputError(f"--frames must be a whole number >= 1, got {frames}")
    return frames


def callable_module(name: str, function: Callable) -> None:
    """Make the module ``name`` callable as ``function``.

    ``faceanime.retarget`` (the package's lazy attribute for :mod:`faceanime.jobs.retarget`)
    is both the job's module and its function: ``faceanime.retarget(...)`` runs the job and
    ``faceanime.retarget.RetargetConfig`` is its config."""
    module = sys.modules[name]

    class JobModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return function(*args, **kwargs)

    module.__class__ = JobModule


# --- the inputs of a job: the photo and the driver, fitted --------------------------------------


@dataclass
class PhotoInputs:
    """How a job reads and fits its photo(s): the settings every job config starts with."""

    output: OutputConfig = field(default_factory=OutputConfig)
    """Framing, renderer, watermark, device and progress of the output."""
    fit: FitConfig = field(default_factory=FitConfig)
    """Fitter settings, for the photos and videos the job reads."""
    model: str = "sfm"
    """Morphable model name or path."""
    face_index: int = 0
    """Which face of a photo when it holds several, by size (0 = largest)."""
    backend: str = "dlib"
    """Landmark backend for the photos and videos: dlib, mediapipe or fan."""
    source_landmarks: str | os.PathLike | None = None
    """The photo's 68 landmarks (an iBUG ``.pts`` or a ``faceanime landmarks`` ``.npz``)
    instead of detecting them."""


@dataclass
class JobInputs(PhotoInputs):
    """:class:`PhotoInputs` and how the job's video is tracked (what :func:`prepare` reads)."""

    track_parts: int | None = None
    """Track the video in up to this many parts at once, one process each (each part of 100
    frames or more starts from its own detection; 1: one pass, as ``faceanime fit``); None:
    one per usable CPU core, at most 16 (:func:`~faceanime.parallel.default_track_parts`)."""
    allow_truncated: bool = False
    """Use a video that ends before its header says (cut off, damaged) with a warning,
    instead of stopping."""
    video_face_index: int = 0
    """Which face of the video (the driver, the swap's target) when it holds several, by size
    (0 = largest): chosen apart from the photo's (``face_index``), so a group photo's second
    face can be driven by a video of one person."""


def driver_tracker(config: JobInputs) -> TrackerConfig:
    """How a driving video is tracked in a job."""
    return TrackerConfig(backend=config.backend, face_index=config.video_face_index,
                         progress=config.output.progress,
                         parts=(default_track_parts() if config.track_parts is None
                                else config.track_parts),
                         allow_truncated=config.allow_truncated)


def track_driver(driving: str | os.PathLike, config: JobInputs) -> VideoLandmarks | None:
    """The driving video's landmarks, tracked as a job tracks them, for several jobs on the
    same video (several photos driven by it, swapped onto it): None for a coefficient file or
    a motion template, which are not tracked."""
    path = resolve_driving(driving)
    if not is_video_path(path):
        return None
    read_video_info(path)  # a missing or undecodable video: its one-line error
    return track_video(path, driver_tracker(config))


def load_driving(driving: str | os.PathLike, model: FaceModel, config: JobInputs,
                 landmarks: VideoLandmarks | None = None) -> tuple[Coefficients, Path | None]:
    """The driver's coefficients: fitted from a video, or read from a ``faceanime fit`` file.
    Also returns the file to take audio from (None for a coefficient file).

    A video is tracked unless its ``landmarks`` (:func:`~faceanime.landmarks.track_video` with
    :func:`driver_tracker`) are already at hand."""
    path = Path(driving)
    if path.suffix.lower() == ".npz":
        coeffs = Coefficients.load(path)
        if coeffs.model != model.name:
            raise InputError(f"{path}: fitted with model {coeffs.model!r}, but this run uses "
                             f"{model.name!r}; pass --model {coeffs.model} or refit the driver")
        if coeffs.n_frames < 1:
            raise InputError(f"{path}: the coefficient file holds no frame")
        return coeffs, None
    if not is_video_path(path):
        raise InputError(f"{path}: the driver must be a video (mp4, mov, ...) or a coefficient "
                         "file (.npz) from 'faceanime fit'")
    if landmarks is None:
        read_video_info(path)  # a missing or undecodable video fails here, before any fitting
    return fit_video(path, model, landmarks, config=config.fit,
                     tracker=driver_tracker(config)), path


def check_driving(driving: str | os.PathLike) -> Path:
    """Refuse a driver of the wrong kind before the photo is fitted; returns its path (a motion
    template's name becomes its bundled file, :func:`faceanime.samples.resolve_driving`)."""
    path = resolve_driving(driving)
    if path.suffix.lower() != ".npz" and not is_video_path(path):
        raise InputError(f"{path}: the driver must be a video (mp4, mov, ...), a coefficient "
                         "file (.npz) from 'faceanime fit', or a motion template "
                         f"({', '.join(template_names())})")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    # Reading the header (or the coefficients) is cheap: a broken driver fails in a moment.
    if path.suffix.lower() == ".npz":
        Coefficients.load(path)
    else:
        read_video_info(path)
    return path


@dataclass
class Prepared:
    """A job's inputs, ready to render: see :func:`prepare`."""

    model: FaceModel
    image: np.ndarray
    """The photo in the output's framing, ``(H, W, 3)`` uint8."""
    source: Coefficients
    """Its fitted coefficients."""
    renderer: object | None
    """From :func:`make_renderer` (None when not asked for)."""
    driving: Coefficients | None
    """The driver's coefficients (None without a driver)."""
    audio: Path | None
    """The file to take audio from (the driving video), if any."""
    notes: list[str] = field(default_factory=list)
    """For the summary line: how the photo's face was found, when not as usual."""


def prepare(source: str | os.PathLike, driving: str | os.PathLike | None,
            config: JobInputs, renderer: bool = True,
            landmarks: VideoLandmarks | None = None) -> Prepared:
    """Fit the photo and build its renderer (``renderer=False``: none, ``Prepared.renderer`` is
    None), and fit the driver (a video or a coefficient file; None for none). ``landmarks``:
    the driving video's, tracked before (:func:`track_driver`), instead of tracking it again.

    dlib holds the GIL while it tracks, so a driving video is tracked in background processes
    (:class:`~faceanime.parallel.Background`, in ``config.track_parts`` parts) while this one
    fits the photo and takes its texture: the same landmarks as tracking first, in less time.
    Each process loads its own dlib models. Loading them here first, for the tracking to
    inherit, kept one core idle meanwhile and measured no faster. The photo fails first: a
    photo without a face stops the tracking.
    """
    out_cfg = config.output
    with contextlib.ExitStack() as stack:
        tracking = None
        if driving is not None and is_video_path(driving) and landmarks is None:
            tracking = stack.enter_context(Background(track_video, Path(driving),
                                                      driver_tracker(config)))
        detector = stack.enter_context(create_detector(config.backend))
        model = load_model(config.model, device=out_cfg.device or config.fit.device)
        notes: list[str] = []
        image, source_coeffs = load_source(source, model, out_cfg, config.fit, config.face_index,
                                           detector, config.source_landmarks, notes)
        built = make_renderer(model, image, source_coeffs, out_cfg) if renderer else None
        if tracking is not None:
            landmarks = tracking.result()
    driving_coeffs, audio = (load_driving(driving, model, config, landmarks=landmarks)
                             if driving is not None else (None, None))
    return Prepared(model, image, source_coeffs, built, driving_coeffs, audio, notes)


