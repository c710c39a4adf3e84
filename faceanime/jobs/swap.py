"""Face swap: a photo's identity on a target video's performance, occlusions kept.

The job composes the stages: the photo and the target video fitted (the video tracked in the
background while the photo is fitted: :func:`~faceanime.jobs.common.prepare`), the target's own
face texture taken from a few of its frames, then every frame swapped by
:class:`~faceanime.render.swap.SwapRenderer` (the photo's shape and texture at the frame's
expression, eyelids, jaw and pose, colour-matched, blended; what covers the target's face kept)
and streamed to an mp4 with the target's audio and provenance tags. Frames where the target
shows no face are written unchanged.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from faceanime.coefficients import Coefficients
from faceanime.errors import InputError
from faceanime.io import is_video_path, iter_video_frames, read_video_info
from faceanime.jobs.common import (
    JobInputs,
    TaskResult,
    callable_module,
    check_outputs,
    on_device,
    prepare,
    write_frames,
)
from faceanime.landmarks import VideoLandmarks
from faceanime.parallel import default_batch, default_workers, ordered_map
from faceanime.render.frames import frames_tensor, to_uint8
from faceanime.render.swap import SwapRenderConfig, SwapRenderer, swap_coefficients


@dataclass
class SwapConfig(JobInputs):
    """Settings of a face swap: the inputs' (:class:`~faceanime.jobs.common.JobInputs`; the
    output has the target's size and frame rate, so ``output``'s framing fields are not used)
    and these."""

    swap: SwapRenderConfig = field(default_factory=SwapRenderConfig)
    """How the face is rendered, colour-matched, blended and kept off occluders."""
    audio: bool = True
    """Keep the target video's audio."""


def check_target(target: str | os.PathLike) -> Path:
    """Refuse a target that is not a readable video before the photo is fitted."""
    path = Path(target)
    if not is_video_path(path):
        raise InputError(f"{path}: the swap target must be a video (mp4, mov, ...)")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    read_video_info(path)
    return path


def reference_frames(target: str | os.PathLike, coeffs: Coefficients, count: int,
                     allow_truncated: bool = False) -> tuple[torch.Tensor, list[int]]:
    """``(R, 3, H, W)`` up to ``count`` frames spread over the video where a face was found,
    and their indices: what the target's own texture is taken from."""
    valid = coeffs.valid if coeffs.valid is not None else torch.ones(coeffs.n_frames, dtype=bool)
    found = valid.nonzero()[:, 0].tolist()
    if not found:
        raise InputError(f"{target}: no frame of the target shows a face")
    picks = sorted({found[round(i)] for i in np.linspace(0, len(found) - 1, min(count,
                                                                                 len(found)))})
    wanted, frames = set(picks), []
    for i, frame in enumerate(iter_video_frames(target, allow_truncated=allow_truncated)):
        if i in wanted:
            frames.append(frame)
            if len(frames) == len(picks):
                break
    return frames_tensor(frames), picks[:len(frames)]


def swap(source: str | os.PathLike, target: str | os.PathLike,
         output: str | os.PathLike | None = None, config: SwapConfig | None = None,
         save_coefficients: str | os.PathLike | None = None,
         target_landmarks: VideoLandmarks | None = None) -> TaskResult:
    """Put the face in ``source`` (a photo) on every frame of ``target`` (a video).

    Args:
        source: the photo whose identity is used.
        target: the video whose performance, lighting and background are kept.
        output: the ``.mp4`` to write (atomically: nothing is left on failure); None returns
            the frames in ``result.video`` instead (memory grows with the length).
        config: settings.
        save_coefficients: also write the swapped coefficients here (``.npz``: the photo's
            shape at the target's expression and pose).
        target_landmarks: the target's landmarks (:func:`~faceanime.jobs.common.track_driver`),
            to swap several photos onto one tracking of the video.

    Returns:
        :class:`~faceanime.jobs.common.TaskResult` at the target's frame rate and size.
    """
    config = on_device(config or SwapConfig())
    started = time.perf_counter()
    output = check_outputs(output, save_coefficients)
    target = check_target(target)
    # The photo is read as it is (no framing): the output is the target's frames.
    inputs = replace(config, output=replace(config.output, paste_back=True, size=None,
                                            generator=None))
    prepared = prepare(source, target, inputs, renderer=False, landmarks=target_landmarks)
    tracked = prepared.driving
    reference, picks = reference_frames(target, tracked, config.swap.reference_frames,
                                        config.allow_truncated)
    renderer = SwapRenderer(prepared.model, prepared.image, prepared.source, reference,
                            tracked.frames(picks), config.swap)
    valid = tracked.valid if tracked.valid is not None else torch.ones(tracked.n_frames,
                                                                       dtype=bool)
    height, width = (int(v) for v in tracked.image_size)
    batch = config.swap.batch_size or default_batch(config.output.device, height * width)

    # Batches are prepared on worker threads (the faces and each frame's own occlusion: most
    # of the work), then finished in order on this one (the occlusion carried over from the
    # frames before, the blend) while the encoder works, as the warp renderer does.
    workers = default_workers(config.output.device)
    threads = max(1, torch.get_num_threads() // workers)

    def batches() -> Iterator[tuple[list[np.ndarray], list[int]]]:
        pending: list[np.ndarray] = []
        start = 0
        stream = iter_video_frames(target, allow_truncated=config.allow_truncated)
        for i, frame in enumerate(stream):
            if i >= tracked.n_frames:
                break
            pending.append(frame)
            if len(pending) == batch:
                yield pending, list(range(start, start + len(pending)))
                start += len(pending)
                pending = []
        if pending:
            yield pending, list(range(start, start + len(pending)))

    def prepare_batch(item: tuple[list[np.ndarray], list[int]]):
        chunk, index = item
        return chunk, index, renderer.prepare(frames_tensor(chunk), tracked.frames(index))

    def frames() -> Iterator[np.ndarray]:
        for chunk, index, prepared in ordered_map(prepare_batch, batches(), workers,
                                                  torch_threads=threads):
            done = to_uint8(renderer.finish(prepared)[0])
            for k, i in enumerate(index):
                # No face found there: the frame as it is (the fit's values are interpolated).
                yield done[k] if bool(valid[i]) else chunk[k]

    fps = tracked.fps or read_video_info(target).fps
    swapped = swap_coefficients(prepared.source, tracked)
    result = TaskResult(output=output, frames=0, fps=fps, seconds=0.0, coefficients=swapped,
                        device=str(config.output.device or "cpu"), notes=tuple(prepared.notes))
    if output is None:
        result.video = np.stack(list(frames()))
        result.frames = len(result.video)
    else:
        result.frames = write_frames(output, frames(), fps, job="swap", source=source,
                                     total=tracked.n_frames,
                                     audio_from=target if config.audio else None,
                                     config=config.output, desc=f"swap {Path(source).name}")
    if save_coefficients is not None:
        swapped.save(save_coefficients)
    result.seconds = time.perf_counter() - started
    return result


callable_module(__name__, swap)
