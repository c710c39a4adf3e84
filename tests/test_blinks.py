"""Blinks the landmarks read half open: read shut from the pixels (no eye shows inside the
lids), in the job's driver capture and in the evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from faceanime.landmarks.gaze import BLINK_FRAMES, contrast_frames, measure_frames, shut_frames

# d18's blinks, shut in the picture (looked at): 94-97 and 186-187; 98, 185 and 188 show a
# sliver of eye, half a frame from shut. Its fitted lids there: 0.27-0.84 closed.
D18_SHUT = {94, 95, 96, 97, 186, 187}
D18_EDGES = {93, 98, 184, 185, 188, 189}


@pytest.fixture(scope="module")
def d18(data_dir, d18_track):
    """videos/d18.mp4's frames and tracked landmarks."""
    from faceanime.io import iter_video_frames

    video = data_dir / "videos" / "d18.mp4"
    return video, np.stack(list(iter_video_frames(video))), d18_track


def _contrast(frames: np.ndarray, points: np.ndarray) -> torch.Tensor:
    contrast = torch.cat([contrast_frames(torch.from_numpy(frames[s:s + 32]),
                                          torch.from_numpy(points[s:s + 32]).float())
                          for s in range(0, len(frames), 32)])
    # The same as the gaze pass measures it (retarget's driver capture).
    _, measured = measure_frames(torch.from_numpy(frames[:32]),
                                 torch.from_numpy(points[:32]).float())
    assert torch.equal(measured, contrast[:32])
    return contrast


def test_runs_longer_than_a_blink_are_not_blinks():
    """A 3-frame dip below half the track's median is a blink; a 12-frame one (a lowered look)
    is not; a shallow dip, NaN rows and a track without dips are never shut."""
    contrast = torch.full((60, 2), 0.5)
    contrast[10:13] = 0.1                      # a blink
    contrast[30:42] = 0.1                      # a lowered look, held
    contrast[50:52] = 0.3                      # a squint: 0.6 of the median
    contrast[55] = float("nan")
    shut = shut_frames(contrast)
    assert shut.nonzero()[:, 0].tolist() == [10, 11, 12]
    assert BLINK_FRAMES < 12
    assert not bool(shut_frames(torch.full((20, 2), 0.4)).any())
    # Every 8th frame of a video: a blink is one row, a lowered look three.
    sampled = torch.full((20, 2), 0.5)
    sampled[4] = 0.1
    sampled[10:13] = 0.1
    assert shut_frames(sampled, longest=1).nonzero()[:, 0].tolist() == [4]


def test_d18s_shut_eyes_show_no_eye(d18):
    """dlib leaves d18's lid points apart on its shut eyes (eye aspect ratio 0.12-0.18, where
    its shut reading is about 0.1 on d3 and d6), but inside them no eye shows: every shut
    frame reads shut, and nothing away from the two blinks does."""
    _, frames, track = d18
    shut = set(shut_frames(_contrast(frames, track.points)).nonzero()[:, 0].tolist())
    assert D18_SHUT <= shut <= D18_SHUT | D18_EDGES


def test_d3s_lowered_look_is_not_a_blink(data_dir, d3_track):
    """d3 looks down for 20-50 frames at a time (109-132, 139-162): as little eye shows as in a
    blink, but for longer; its lids are left as the landmarks fit them."""
    from faceanime.io import iter_video_frames

    frames = np.stack([f for i, f in enumerate(iter_video_frames(data_dir / "videos" / "d3.mp4"))
                       if i < 200])
    contrast = _contrast(frames, d3_track.points[:200])
    mean = contrast.mean(-1)
    assert bool((mean[112:130] < 0.5 * mean.nanmedian()).all())  # as dark as a shut eye
    assert not bool(shut_frames(contrast)[100:170].any())


def test_the_drivers_blinks_shut_the_lids(sfm_model, d18):
    """retarget's driver capture: d18's shut frames get shut lids (fitted 0.27-0.84 from the
    landmarks); its open frames keep their fitted closures."""
    from faceanime.capture import capture_driver
    from faceanime.fitting import fit_video

    video, _, track = d18
    coeffs = fit_video(video, sfm_model, track)
    fitted = coeffs.eyes.clone()
    assert float(fitted[sorted(D18_SHUT)].mean(1).min()) < 0.6
    captured = capture_driver(video, coeffs)
    assert bool((captured.eyes[sorted(D18_SHUT)] == 1).all())
    changed = set((captured.eyes != fitted).any(1).nonzero()[:, 0].tolist())
    assert changed <= D18_SHUT | D18_EDGES
