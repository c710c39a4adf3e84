"""Landmarks for every frame of a video: detect once, then track.

Running the face detector on every frame is the cost to avoid (dlib's HOG: ~25 ms on a 640-px
frame, ~100 ms on a 1280-px one) while the landmark model in a known box costs ~1 ms. So:

1. **Acquire**: at the start, and whenever the track is lost, detect faces on a downscaled frame
   and take the ``face_index``-th largest (after a loss: the one overlapping the last box best).
2. **Track**: on the next frame the box comes from the previous frame's landmarks, shifted by the
   face's last per-frame motion, and only the landmark model runs. Landmark models expect
   *detector-like* boxes (dlib's predictor was trained on HOG boxes), so the relation landmark
   box → detector box (offset and size ratio) is calibrated on the detections of this video
   (:class:`BoxCalibration`).
3. **Check**: a tracked frame is accepted when (a) the landmark box agrees with the box it was
   predicted from (IoU ≥ ``min_iou``: the model did not run off) and (b) every ``check_every``
   frames, the *convergence test* passes: the landmark model is re-run from the box shifted by
   ±7 % of its size along both diagonals. A face attracts the model's cascade back to the same
   points (median response ~0.02 of the shift on our videos); on background or a flat frame the
   points follow the box (response ~1). A median response ≥ ``convergence_threshold`` (0.4)
   fails the check. On 1652 tracked frames of our four test videos at most 1.4 % of the
   real-face checks failed (each costs one detection that finds the face again); no background
   box responded below 0.48. A clear pass on the first diagonal skips the second (see
   :func:`convergence_response`).
4. **Re-detect**: a failed check only *suspects* a loss: the detector then runs on that very
   frame and decides. It finds the face → the frame is valid, boxes re-anchored and calibration
   refined; it finds nothing → the frame is invalid (points NaN), and detection is retried on
   each next frame until a face comes back.
5. **Refresh**: every ``redetect_every`` tracked frames (15) the detector runs anyway, and a
   detection overlapping the tracked face (IoU ≥ ``min_iou``) refines the calibration; the
   frame itself is tracked as usual, so the track does not jump there. dlib's points move with
   the box they are predicted in, and a calibration from one detection drifts from the
   detector's boxes as the face moves and talks (d6, tracked in two parts: mouth opening
   correlation with per-frame detections 0.886 without, 0.897 with; see docs/landmarks.md).
6. **Unfold**: a tracked face whose mouth lies nearer its eyes than ``min_face_height`` (0.8)
   of the detections' (:func:`face_height`, in eye widths) has its lower face folded up: on a
   wide-open mouth the predictor, started from the previous frame's box, can settle with the
   mouth on the nose, and converges there. The detector then runs on that frame, and its
   points, when they are not folded too, replace the tracked ones (d6: ten frames, 599-608,
   45-66 px off, and five more at 865-869, when tracked in two parts).

A backend whose landmark model rejects boxes without a face itself (mediapipe) skips the
convergence test. Smoothing (:mod:`faceanime.landmarks.smoothing`) runs after tracking.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing as mp
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from faceanime.errors import FaceNotFoundError, InputError
from faceanime.landmarks.boxes import box_iou, box_size, points_box
from faceanime.landmarks.detector import (
    N_POINTS,
    DetectorConfig,
    LandmarkDetector,
    as_rgb_image,
    create_detector,
)
from faceanime.landmarks.result import VideoLandmarks
from faceanime.landmarks.smoothing import (
    OneEuroConfig,
    face_scale,
    one_euro_filter,
    one_euro_zero_phase,
)
from faceanime.parallel import Background

DEFAULT_FPS = 30.0

# Diagonal unit shifts for the convergence test: both diagonals, both ways, so a response that is
# biased along one axis (a turned head slides sideways more easily) cannot decide alone.
_SHIFTS = np.array([(1, 1), (-1, -1), (1, -1), (-1, 1)], dtype=np.float64)


@dataclass(frozen=True)
class TrackerConfig:
    """Video landmark tracking settings (each field's comment is its CLI help)."""

    backend: str = "dlib"  # landmark backend: dlib, mediapipe or fan
    face_index: int = 0  # which face to track: 0 = the largest at the first detection
    smooth: float = 1.0  # One-Euro smoothing strength; 0 = off, 2 = smoother
    causal: bool = False  # smooth as a live stream must (lags); default: forward and back
    check_every: int = 1  # run the convergence test every this many tracked frames
    redetect_every: int = 15  # refine the box calibration by a detection every this many
    # tracked frames; 0 = never
    min_face_height: float = 0.8  # a tracked face whose mouth lies nearer its eyes than this
    # share of the detections' is checked by the detector (a lower face folded up); 0 = never
    convergence_shift: float = 0.07  # box shift of the convergence test, in box sizes
    convergence_threshold: float = 0.4  # median response at or above which the track is lost
    min_iou: float = 0.5  # landmark box vs predicted box IoU below which the track is lost
    reacquire_iou: float = 0.3  # after a loss, prefer a detection overlapping the last box so
    progress: bool = True  # show a progress bar
    parts: int = 1  # track a video file in up to this many parts at once, one process each
    allow_truncated: bool = False  # use a video that ends before its header says (with a warning)
    fallback_every: int = 60  # while the face is lost, the slow fallback at most every N frames
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    smoothing: OneEuroConfig = field(default_factory=OneEuroConfig)

    def __post_init__(self) -> None:
        # Checked here, when the settings are made: before any process is forked or file read.
        if self.check_every < 1:
            raise InputError(f"check_every {self.check_every}: must be at least 1")
        if not 0 <= self.min_face_height < 1:
            raise InputError(f"min_face_height {self.min_face_height}: must be at least 0 and "
                             "below 1")
        if self.redetect_every < 0:
            raise InputError(f"redetect_every {self.redetect_every}: must be 0 (never) or more")
        if self.parts < 1:
            raise InputError(f"parts {self.parts} (--parts, --track-parts): must be at least 1")


class BoxCalibration:
    """Maps the tight box of a landmark set to the box the detector would draw around that face.

    The detector box is modelled as ``centre = c + (dx, dy) · s`` and ``size = (kx, ky) · s``,
    where ``c`` is the landmark box's centre and ``s`` its size ``sqrt(w · h)``. The four numbers
    are an exponential average over this video's detections (each detection is one sample).
    """

    def __init__(self, weight: float = 0.3):
        self.weight = weight
        self.params: np.ndarray | None = None  # (4,) dx, dy, kx, ky

    def update(self, det_box: np.ndarray, points: np.ndarray) -> None:
        """Add one detection: ``det_box (4,)`` and the ``(68, 2)`` landmarks found in it."""
        lm = points_box(points).astype(np.float64)
        s = float(box_size(lm))
        if not s > 0:
            return
        det_box = np.asarray(det_box, dtype=np.float64)
        sample = np.concatenate([((det_box[:2] + det_box[2:]) - (lm[:2] + lm[2:])) / (2 * s),
                                 (det_box[2:] - det_box[:2]) / s])
        self.params = sample if self.params is None else (
            (1 - self.weight) * self.params + self.weight * sample)

    def box_from_points(self, points: np.ndarray) -> np.ndarray:
        """The detector-like ``(4,)`` box for ``(68, 2)`` landmarks."""
        if self.params is None:
            raise RuntimeError("BoxCalibration used before any detection")
        lm = points_box(points).astype(np.float64)
        s = float(box_size(lm))
        centre = (lm[:2] + lm[2:]) / 2 + self.params[:2] * s
        half = self.params[2:] * s / 2
        return np.concatenate([centre - half, centre + half]).astype(np.float32)


def convergence_response(detector: LandmarkDetector, image: np.ndarray, box: np.ndarray,
                         points: np.ndarray, shift: float = 0.07, early: float = 0.0) -> float:
    """How much the landmarks follow a shifted box: ~0 on a face, ~1 on background.

    Re-runs ``detector.landmarks_in_box`` from ``box`` shifted by ``shift`` box sizes along both
    diagonals, projects each mean point displacement on its shift, and returns the median of the
    four ratios (a backend answering "no face" counts as 1). When the two shifts along the first
    diagonal already average below ``early``, their mean is returned without the second diagonal
    (on our videos 86 % of real-face checks stop there with ``early = 0.2``, while no background
    box averaged below 0.41).
    """
    side = float(box_size(box))
    responses = []
    for i, direction in enumerate(_SHIFTS):
        if i == 2 and np.mean(responses) < early:
            return float(np.mean(responses))
        offset = direction * shift * side
        moved = detector.landmarks_in_box(image, box + np.tile(offset, 2).astype(np.float32))
        if moved is None:
            responses.append(1.0)
            continue
        mean_move = (np.asarray(moved, np.float64) - points).mean(axis=0)
        responses.append(float(mean_move @ offset / (offset @ offset)))
    return float(np.median(responses))


def _frames_from(source: str | os.PathLike | Iterable[np.ndarray] | np.ndarray,
                 fps: float | None, allow_truncated: bool = False
                 ) -> tuple[Iterator[np.ndarray], float, int | None, str]:
    """(frame iterator, fps, frame count if known, name) of a path, array or iterable."""
    if isinstance(source, (str, os.PathLike)):
        from faceanime.io import iter_video_frames, read_video_info

        info = read_video_info(source)
        total = round(info.duration * info.fps) or None
        return (iter_video_frames(source, allow_truncated=allow_truncated),
                float(fps or info.fps), total, str(Path(source)))
    total = len(source) if hasattr(source, "__len__") else None
    return iter(source), float(fps or DEFAULT_FPS), total, "frames"


class _Tracker:
    """Per-call tracking state (nothing survives between calls)."""

    def __init__(self, detector: LandmarkDetector, config: TrackerConfig):
        self.det = detector
        self.cfg = config
        self.calib = BoxCalibration()
        self.prev: np.ndarray | None = None  # (68, 2) landmarks of the previous frame, if valid
        self.motion = np.zeros(2)  # last per-frame motion of the landmark-box centre
        self.last_box: np.ndarray | None = None  # last accepted box (kept across a loss)
        self.acquired = False
        self.since_check = 0
        self.most_faces = 0  # most faces any detection returned (for the error message)
        self.detections = 0  # frames on which the detector ran
        self.since_fallback: int | None = None  # frames since the fallback detector last ran
        self.since_detect = 0  # frames tracked since the detector last drew the box
        self.face_height: float | None = None  # eyes-to-mouth over eye width, at detections

    def step(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """``(points (68, 2), box (4,))`` for one frame, or None where no face is found."""
        result = None
        if self.prev is not None:
            self.since_detect += 1
            if self.cfg.redetect_every and self.since_detect >= self.cfg.redetect_every:
                self._refresh(frame)
            result = self._track(frame)
            if result is not None and self._folded(result[0]):
                result = self._unfold(frame, result)
        if result is None:
            result = self._acquire(frame)
        if result is None:
            self.prev = None
            self.motion[:] = 0
            return None
        points, box = result
        if self.prev is not None:
            self.motion = _centre(points) - _centre(self.prev)
        self.prev, self.last_box = points, box
        return points, box

    def _track(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        box = self.calib.box_from_points(self.prev)
        box = box + np.tile(self.motion, 2).astype(np.float32)
        points = self.det.landmarks_in_box(frame, box)
        if points is None:
            return None
        points = np.asarray(points, np.float32)
        if box_iou(self.calib.box_from_points(points), box) < self.cfg.min_iou:
            return None
        self.since_check += 1
        if not self.det.self_verifying and self.since_check >= self.cfg.check_every:
            self.since_check = 0
            # Half the threshold as the early exit: a clear pass on one diagonal is final.
            response = convergence_response(self.det, frame, box, points,
                                            self.cfg.convergence_shift,
                                            early=self.cfg.convergence_threshold / 2)
            if response >= self.cfg.convergence_threshold:
                return None
        return points, box

    def _learn(self, box: np.ndarray, points: np.ndarray) -> None:
        """Learn from a detection: the box calibration and the face's :func:`face_height`
        (each an exponential average over the video's detections)."""
        self.calib.update(box, points)
        height = face_height(points)
        if np.isfinite(height) and height > 0:
            self.face_height = height if self.face_height is None else (
                0.7 * self.face_height + 0.3 * height)

    def _detect_near(self, frame: np.ndarray, box: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray] | None:
        """``(points, box)`` of the detection overlapping ``box`` most, by ``min_iou`` at
        least (never another face), or None."""
        self.detections += 1
        self.since_detect = 0
        boxes, _ = self.det.find_boxes(frame, allow_retry=False)
        if len(boxes) == 0:
            return None
        overlap = box_iou(boxes, box[None])
        if overlap.max() < self.cfg.min_iou:
            return None
        found = boxes[int(overlap.argmax())]
        points = self.det.landmarks_in_box(frame, found)
        return None if points is None else (np.asarray(points, np.float32), found)

    def _folded(self, points: np.ndarray) -> bool:
        """The tracked points put the mouth much nearer the eyes than the detections do."""
        if not self.cfg.min_face_height or self.face_height is None:
            return False
        return bool(face_height(points) < self.cfg.min_face_height * self.face_height)

    def _unfold(self, frame: np.ndarray, tracked: tuple[np.ndarray, np.ndarray]
                ) -> tuple[np.ndarray, np.ndarray]:
        """A folded track checked by the detector: its face's points when it finds the
        tracked face (overlapping by ``min_iou``) and they are not folded, else the tracked
        ones. dlib's predictor, started from the previous frame's box on a wide-open mouth,
        can settle on a face whose mouth sits on the nose (d6's frames 599-608 and 865-869:
        the mouth 45-66 px from where per-frame detection puts it); the convergence test
        passes such a face, since it converges there."""
        found = self._detect_near(frame, tracked[1])
        if found is None or self._folded(found[0]):
            return tracked
        self._learn(found[1], found[0])
        self.since_check = 0
        return found

    def _refresh(self, frame: np.ndarray) -> None:
        """Refine the box calibration with a detection of the tracked face, if the detector
        finds it (a box overlapping the expected one by ``min_iou``: never another face).

        A box carried from frame to frame drifts from the detector's, on which dlib's
        predictor was trained, and the points move with the box. Only the calibration moves
        (an exponential average): taking the detection's points on that frame made the
        track jump there (d18: the face centre's frame-to-frame acceleration 1.5 px at the
        refreshed frames against 0.3 px elsewhere, after smoothing); refined, it does not."""
        expected = self.calib.box_from_points(self.prev) + np.tile(self.motion, 2).astype(
            np.float32)
        found = self._detect_near(frame, expected)
        # (A detection can fold the face too: d6's "o" mouths at 528-536 and 968.)
        if found is not None and not self._folded(found[0]):
            self._learn(found[1], found[0])

    def _acquire(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        self.detections += 1
        self.since_detect = 0
        # The upsampled retry is for finding a small face at the start; once the face is known,
        # a miss means it is gone, and retrying at 4× the cost per frame would not bring it back.
        boxes, _ = self.det.find_boxes(frame, allow_retry=not self.acquired)
        if self.since_fallback is not None:
            self.since_fallback += 1
        if len(boxes) == 0 and self.det.config.fallback and (
                self.since_fallback is None or self.since_fallback >= self.cfg.fallback_every):
            # The slow detector (dlib's CNN: ~1 s a frame) on the first frame, then now and then
            # while the face is lost - not on every frame of a stretch without a face.
            self.since_fallback = 0
            return self._fallback(frame)
        self.most_faces = max(self.most_faces, len(boxes))
        chosen = None
        if self.last_box is not None and len(boxes):
            overlap = box_iou(boxes, self.last_box[None])
            if overlap.max() >= self.cfg.reacquire_iou:
                chosen = int(overlap.argmax())
        if chosen is None:
            if self.cfg.face_index >= len(boxes):
                return None
            chosen = self.cfg.face_index
        box = boxes[chosen]
        points = self.det.landmarks_in_box(frame, box)
        if points is None:
            return None
        points = np.asarray(points, np.float32)
        self._learn(box, points)
        self.acquired = True
        self.since_check = 0
        return points, box


    def _fallback(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        faces = self.det.fallback_faces(frame)
        self.most_faces = max(self.most_faces, len(faces))
        if self.cfg.face_index >= len(faces):
            return None
        face = faces[self.cfg.face_index]
        self._learn(face.box, np.asarray(face.points, np.float32))
        self.acquired = True
        self.since_check = 0
        return face.points, face.box


def face_height(points: np.ndarray) -> float:
    """How far below the eyes the mouth lies, in eye widths: the mouth points' mean minus the
    eye points' mean, along the perpendicular of the line between the outer eye corners, over
    their distance (``(68, 2)`` iBUG points; about 0.85-1 on a face seen from the front)."""
    points = np.asarray(points, np.float64)
    across = points[45] - points[36]
    width = float(np.hypot(*across))
    if not width > 0:
        return float("nan")
    down = np.array([-across[1], across[0]]) / width
    return float((points[48:68].mean(0) - points[36:48].mean(0)) @ down / width)


def _centre(points: np.ndarray) -> np.ndarray:
    b = points_box(points).astype(np.float64)
    return (b[:2] + b[2:]) / 2


# Below this many frames per part, a part's own start (loading the models, detecting the face)
# costs more than tracking in parallel saves.
MIN_PART_FRAMES = 100
# Landmark backends that run torch models: never tracked in forked parts.
TORCH_BACKENDS = frozenset({"fan"})


@dataclass
class _Part:
    """What tracking one run of consecutive frames found, before smoothing."""

    raw: list[np.ndarray] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    valid: list[bool] = field(default_factory=list)
    detected: list[bool] = field(default_factory=list)
    size: tuple[int, int] | None = None
    most_faces: int = 0
    backend: str = ""


def _track_frames(frames: Iterable[np.ndarray], det: LandmarkDetector, config: TrackerConfig,
                  name: str, first: int = 0,
                  report: Callable[[int], None] | None = None) -> _Part:
    """Track through ``frames`` from a fresh start (the first frame is detected), calling
    ``report(frames done)`` after each frame."""
    tracker = _Tracker(det, config)
    part = _Part(backend=det.name)
    nan_points = np.full((N_POINTS, 2), np.nan, dtype=np.float32)
    nan_box = np.full(4, np.nan, dtype=np.float32)
    for frame in frames:
        frame = as_rgb_image(frame, name)
        if not frame.flags.writeable:
            # dlib copies a read-only array on every call; one copy per frame is cheaper.
            frame = frame.copy()
        if part.size is None:
            part.size = frame.shape[:2]
        elif frame.shape[:2] != part.size:
            raise InputError(f"{name}: frame {first + len(part.raw)} is {frame.shape[1]}×"
                             f"{frame.shape[0]}, the first was {part.size[1]}×{part.size[0]}")
        before = tracker.detections
        found = tracker.step(frame)
        part.detected.append(tracker.detections > before)
        part.raw.append(nan_points if found is None else found[0])
        part.boxes.append(nan_box if found is None else found[1])
        part.valid.append(found is not None)
        if report is not None:
            report(len(part.raw))
    part.most_faces = tracker.most_faces
    return part


def _track_file_part(path: Path, config: TrackerConfig, start: int, stop: int | None,
                     detector: LandmarkDetector | None, counts: Sequence[int] | None,
                     index: int) -> _Part:
    """Track frames ``start`` to ``stop`` (None: the end) of a video file, with ``detector``
    (inherited, loaded, from the parent) or one of its own (run in a child process by
    :func:`track_video`), writing its frame count to ``counts[index]`` as it goes."""
    from faceanime.io import iter_video_frames

    frames = iter_video_frames(path, start, allow_truncated=config.allow_truncated)
    if stop is not None:
        frames = itertools.islice(frames, stop - start)

    def report(done: int) -> None:
        if counts is not None:
            counts[index] = done

    with contextlib.ExitStack() as stack:
        det = detector or stack.enter_context(create_detector(config.backend, config.detector))
        return _track_frames(frames, det, config, str(path), start, report)


def part_bounds(total: int | None, parts: int) -> list[tuple[int, int | None]]:
    """``(start, stop)`` frame ranges of the parts a video of about ``total`` frames is tracked
    in (``stop`` None: to the end of the stream, whatever its true length): at most ``parts``,
    each of at least :data:`MIN_PART_FRAMES` frames; one part when the length is unknown."""
    count = max(1, min(parts, (total or 0) // MIN_PART_FRAMES))
    starts = [round(i * total / count) for i in range(count)] if count > 1 else [0]
    return [(start, stop) for start, stop in zip(starts, [*starts[1:], None], strict=True)]


def track_video(source: str | os.PathLike | Iterable[np.ndarray] | np.ndarray,
                config: TrackerConfig | None = None, *, detector: LandmarkDetector | None = None,
                fps: float | None = None, name: str | None = None) -> VideoLandmarks:
    """Track one face's 68 landmarks through a video.

    Args:
        source: a video file, a ``(T, H, W, 3)`` uint8 array, or an iterable of ``(H, W, 3)``
            frames (streamed: frames are not kept).
        config: tracking settings (backend, face index, smoothing, checks).
        detector: an already built detector to reuse (its backend overrides ``config.backend``).
        fps: frame rate; defaults to the file's, or 30 for arrays and iterables.
        name: how to call the input in messages (defaults to the path, else "frames").

    Returns:
        :class:`VideoLandmarks` with ``points`` smoothed, ``raw``, ``boxes``, ``valid``, ``fps``
        and ``image_size = (height, width)``.

    Raises:
        FaceNotFoundError: no face in any frame (or never a ``face_index + 1``-th face).
        MediaError: the file cannot be decoded.
        InputError: frames of the wrong shape or changing size.
    """
    config = config or TrackerConfig()
    if config.face_index < 0:
        raise InputError(f"face index {config.face_index}: must be 0 (largest face) or more")
    frames, fps, total, default_name = _frames_from(source, fps, config.allow_truncated)
    name = name or default_name
    desc = f"landmarks {Path(name).name}"
    backend = detector.name if detector is not None else config.backend
    # Parts need a file to decode from and a backend free of torch (a forked child must not
    # use the OpenMP threads its parent may have started).
    bounds = (part_bounds(total, config.parts)
              if isinstance(source, (str, os.PathLike)) and backend not in TORCH_BACKENDS
              else [(0, None)])
    with contextlib.ExitStack() as stack:
        # Later parts in child processes (dlib holds the GIL), the first one here; every
        # part starts from its own detection.
        det = detector or stack.enter_context(create_detector(config.backend, config.detector))
        shared = None
        if len(bounds) > 1 and det.fork_safe:
            shared = det.load()  # loaded once, here: the children inherit it
        child = replace(config, progress=False, backend=backend)
        # Frames done per part, in memory the forked parts share: the one bar counts them all.
        counts = (mp.get_context("fork").RawArray("q", len(bounds))
                  if len(bounds) > 1 and "fork" in mp.get_all_start_methods() else None)
        others = [stack.enter_context(Background(
            _track_file_part, Path(source), child, start, stop, shared, counts, i))
            for i, (start, stop) in enumerate(bounds) if i]
        stop = bounds[0][1]
        # leave=False, closed by the context manager even on an error: the bar is wiped, so
        # the CLI's one-line error message stands alone.
        bar = stack.enter_context(tqdm(
            total=total if counts is not None else stop or total, disable=not config.progress,
            unit="frame", leave=False,
            desc=desc if len(bounds) == 1 else f"{desc} ({len(bounds)} parts)"))

        def report(done: int) -> None:
            if counts is not None:
                counts[0] = done
                done = sum(counts)
            bar.update(done - bar.n)

        first = _track_frames(frames if stop is None else itertools.islice(frames, stop), det,
                              config, name, 0, report)
        while not all(other.ready(0.1) for other in others):
            report(len(first.raw))  # the other parts' progress while waiting for them
        parts = [first] + [other.result() for other in others]
    sizes = {part.size for part in parts if part.size is not None}
    if len(sizes) > 1:
        raise InputError(f"{name}: frames change size ({', '.join(f'{w}×{h}' for h, w in sizes)})")
    raw = [p for part in parts for p in part.raw]
    boxes = [b for part in parts for b in part.boxes]
    valid = [v for part in parts for v in part.valid]
    detected = [d for part in parts for d in part.detected]
    size = first.size or next(iter(sizes), None)
    most_faces = max(part.most_faces for part in parts)
    if not raw:
        raise InputError(f"{name}: no frames")
    valid = np.array(valid, dtype=bool)
    if not valid.any():
        if config.face_index > 0 and most_faces > 0:
            raise FaceNotFoundError(
                f"{name}: face index {config.face_index} requested but at most "
                f"{most_faces} face{'s' if most_faces > 1 else ''} found in any "
                f"frame (indices 0–{most_faces - 1}, largest first)")
        raise FaceNotFoundError(f"{name}: no face found in any of the {len(raw)} frames; the "
                                f"{first.backend} detector needs a roughly frontal face")
    raw = np.stack(raw).astype(np.float32)
    # The whole track is at hand: smoothed forward and back, it does not trail the motion.
    smooth = one_euro_filter if config.causal else one_euro_zero_phase
    points = smooth(raw, fps, face_scale(raw), config.smoothing, config.smooth)
    return VideoLandmarks(points=points, raw=raw, boxes=np.stack(boxes).astype(np.float32),
                          valid=valid, fps=fps, image_size=(int(size[0]), int(size[1])),
                          backend=first.backend, source=name,
                          detected=np.array(detected, bool))
