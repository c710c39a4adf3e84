"""What a driving video shows beyond its landmarks: each frame's mouth interior, where its eyes
look, and the blinks its landmarks read half open. Shared by the jobs that a video drives
(retarget, ``faceanime fit``) and by the evaluation, which drives its renderers as retarget does.
"""

from __future__ import annotations

import itertools
import os

import numpy as np
import torch
from tqdm import tqdm

from faceanime.coefficients import Coefficients
from faceanime.io import iter_video_frames
from faceanime.landmarks.gaze import fill_gaze, measure_frames, narrowed, shut_frames
from faceanime.render.mouth_interior import InteriorCapture


def capture_driver(video: str | os.PathLike, coeffs: Coefficients,
                   interiors: InteriorCapture | None = None, gaze: bool = True,
                   batch_size: int = 32, progress: bool = False,
                   blinks: bool = True) -> Coefficients:
    """What a driving video's frames show beyond its landmarks, in one more decode of it:
    each frame's mouth interior (``coeffs.mouth``, by ``interiors``; None: not captured), where
    its eyes look (``coeffs.gaze``, from its tracked landmarks; frames whose eyes are
    :func:`~faceanime.landmarks.gaze.narrowed` and gaps filled from their neighbours,
    :func:`~faceanime.landmarks.gaze.fill_gaze`) and, with the gaze and ``blinks``, the blinks
    its landmarks read half open: frames whose eyes show no eye (:func:`~faceanime.landmarks.
    gaze.shut_frames`) get their lids shut (``coeffs.eyes`` 1). Frames the video lacks get an
    empty interior (the synthesised one shows) and the gaze held. Returns ``coeffs`` with these
    set.

    Raises:
        MediaError: the video cannot be read.
    """
    gaze = gaze and coeffs.landmarks is not None
    if interiors is None and not gaze:
        return coeffs
    t = coeffs.n_frames
    mouths, gazes, contrasts = [], [], []
    frames = iter_video_frames(video)
    with tqdm(total=t, desc="driver's mouth and eyes", unit="frame", disable=not progress,
              leave=False) as bar:
        for start in range(0, t, batch_size):
            images = list(itertools.islice(frames, min(batch_size, t - start)))
            if not images:
                break
            batch = np.stack(images)
            part = coeffs.frames(slice(start, start + len(images)))
            if interiors is not None:
                mouths.append(interiors(batch, part))
            if gaze:
                seen, shown = measure_frames(torch.from_numpy(batch), part.landmarks.float())
                gazes.append(seen)
                contrasts.append(shown)
            bar.update(len(images))
    done = sum(len(m) for m in gazes) if gaze else sum(len(m) for m in mouths)
    missing = t - done
    if interiors is not None:
        h, w = interiors.layout.size
        captured = torch.cat(mouths) if mouths else torch.zeros(0, 4, h, w, dtype=torch.uint8)
        coeffs.mouth = torch.cat([captured, captured.new_zeros(missing, 4, h, w)])
    if gaze:
        measured = torch.cat(gazes) if gazes else torch.zeros(0, 2, 2)
        measured = torch.cat([measured, measured.new_full((missing, 2, 2), float("nan"))])
        measured[narrowed(coeffs.landmarks.float())] = float("nan")
        coeffs.gaze = fill_gaze(measured).to(coeffs.expression)
        if blinks:
            shown = torch.cat(contrasts) if contrasts else torch.zeros(0, 2)
            shut = shut_frames(torch.cat([shown, shown.new_full((missing, 2), float("nan"))]))
            coeffs.eyes = torch.where(shut[:, None].to(coeffs.eyes.device),
                                      torch.ones_like(coeffs.eyes), coeffs.eyes)
    return coeffs
