"""Evaluation metrics on constructed cases: known answers, SSIM against an independent
reference, a known pixel shift of a real frame measured through dlib's landmarks, what a viewer
sees on synthetic landmark tracks, and dlib's face count on a photo with a pasted second face."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from faceanime.evaluation import metrics as M
from faceanime.evaluation.metrics import correlation, mouth_opening
from faceanime.evaluation.protocol import rotation_angle_deg, select_frames
from faceanime.evaluation.report import json_number


@pytest.fixture(scope="module")
def frames(data_dir) -> np.ndarray:
    """The first and the 40th frame of videos/d0.mp4, ``(2, 512, 512, 3)`` uint8."""
    from faceanime.io import iter_video_frames

    out = [f for i, f in zip(range(41), iter_video_frames(data_dir / "videos" / "d0.mp4"),
                             strict=False) if i in (0, 40)]
    return np.stack(out)


@pytest.fixture(scope="module")
def scorer(data_dir):
    from faceanime.evaluation.protocol import Scorer

    s = Scorer()
    yield s
    s.close()


def as_tensor(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255


def test_identical_frames(frames):
    x = as_tensor(frames)
    assert torch.equal(M.l1(x, x), torch.zeros(2))
    assert torch.isinf(M.psnr(x, x)).all() and (M.psnr(x, x) > 0).all()
    assert torch.equal(M.ssim(x, x), torch.ones(2))
    points = torch.rand(2, 68, 2) * 500
    assert torch.equal(M.akd(points, points), torch.zeros(2))


def test_known_values():
    x = torch.full((1, 3, 32, 32), 0.4)
    y = x + 0.1
    assert M.l1(y, x).item() == pytest.approx(0.1, abs=1e-6)
    assert M.psnr(y, x).item() == pytest.approx(20.0, abs=1e-4)  # MSE 0.01
    # Flat images: the structure term is c2 / c2 = 1, SSIM is the luminance term alone.
    c1 = M.SSIM_K1**2
    expected = (2 * 0.4 * 0.5 + c1) / (0.4**2 + 0.5**2 + c1)
    assert M.ssim(y, x).item() == pytest.approx(expected, abs=2e-5)  # float32 moments
    # One point off by (3, 4) of four: AKD = 5 / 4.
    a = torch.zeros(1, 4, 2)
    b = a.clone()
    b[0, 2] = torch.tensor([3.0, 4.0])
    assert M.akd(b, a).item() == pytest.approx(1.25)
    nan = a.clone()
    nan[0, 0, 0] = float("nan")
    assert math.isnan(M.akd(nan, a).item())


def _ssim_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al.'s SSIM written out window by window (float64, one channel), independent of
    the convolution code."""
    size, sigma = M.SSIM_WINDOW, M.SSIM_SIGMA
    r = np.arange(size) - (size - 1) / 2
    g = np.exp(-(r[:, None] ** 2 + r[None] ** 2) / (2 * sigma**2))
    g /= g.sum()
    c1, c2 = M.SSIM_K1**2, M.SSIM_K2**2
    values = []
    for i in range(x.shape[0] - size + 1):
        for j in range(x.shape[1] - size + 1):
            a, b = x[i:i + size, j:j + size], y[i:i + size, j:j + size]
            ma, mb = (g * a).sum(), (g * b).sum()
            va, vb = (g * (a - ma) ** 2).sum(), (g * (b - mb) ** 2).sum()
            cov = (g * (a - ma) * (b - mb)).sum()
            values.append((2 * ma * mb + c1) * (2 * cov + c2)
                          / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(values))


def test_ssim_matches_window_by_window_reference(frames):
    crop = as_tensor(frames[:, 200:230, 220:254])  # (2, 3, 30, 34): a face region
    got = M.ssim(crop[1:], crop[:1]).item()
    a, b = crop[1].double().numpy(), crop[0].double().numpy()
    want = np.mean([_ssim_reference(a[c], b[c]) for c in range(3)])  # per channel, averaged
    assert got == pytest.approx(want, abs=1e-5)
    assert 0.2 < got < 0.99  # a real difference, not a degenerate case


def test_ssim_matches_scikit_image(frames):
    metrics = pytest.importorskip("skimage.metrics")
    a, b = frames[0].astype(np.float64) / 255, frames[1].astype(np.float64) / 255
    want = metrics.structural_similarity(a, b, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                         use_sample_covariance=False, data_range=1.0)
    got = M.ssim(as_tensor(frames[1:]), as_tensor(frames[:1])).item()
    assert got == pytest.approx(want, abs=1e-4)


def test_ssim_properties(frames):
    x = as_tensor(frames[:1])
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=gen)
    scores = [M.ssim((x + s * noise).clamp(0, 1), x).item() for s in (0.01, 0.05, 0.2)]
    assert 1 > scores[0] > scores[1] > scores[2] > 0  # more noise, less similar
    y = as_tensor(frames[1:])
    assert M.ssim(x, y).item() == pytest.approx(M.ssim(y, x).item(), abs=1e-7)  # symmetric
    # Reversed structure: strongly negative SSIM where the image has texture.
    assert (M.ssim_map(1 - x, x) < -0.5).any()
    with pytest.raises(ValueError):
        M.ssim(x[..., :8, :8], x[..., :8, :8])  # smaller than the window


@pytest.mark.parametrize("shift", [(7, 4), (-12, 9), (20, 0)])
def test_known_shift_gives_expected_akd(frames, scorer, shift):
    """A real frame moved by (dx, dy) pixels: dlib finds the same face moved by as much."""
    dx, dy = shift
    moved = np.roll(frames[0], (dy, dx), axis=(0, 1))
    points = scorer.landmarks(np.stack([frames[0], moved]))
    assert torch.isfinite(points).all()
    assert M.akd(points[1:], points[:1]).item() == pytest.approx(math.hypot(dx, dy), abs=1.0)
    # Undo the shift: what is left is the detector's own jitter, under a pixel on average.
    assert M.akd(points[1:] - torch.tensor([dx, dy]), points[:1]).item() < 1.5


def test_identity_share_counts_missing_faces_as_failures():
    d = torch.tensor([0.1, 0.59, 0.61, float("nan")])
    assert M.id_share(d, 0.6) == 0.5
    assert math.isnan(M.id_share(torch.tensor([]), 0.6))
    assert M.nanmean(torch.tensor([1.0, float("nan"), 3.0])) == 2.0
    assert M.nanmean(torch.tensor([1.0, float("inf")])) == math.inf
    assert math.isnan(M.nanmean(torch.tensor([float("nan")])))


def test_select_frames():
    assert select_frames(10, 1, exclude=0) == list(range(1, 10))
    assert select_frames(10, 3) == [0, 3, 6, 9]
    assert select_frames(10, 3, exclude=3) == [0, 6, 9]
    picked = select_frames(100, 1, frames=5, exclude=0)
    assert picked[0] == 1 and picked[-1] == 99 and len(picked) == 5
    assert picked == sorted(set(picked))
    from faceanime.errors import InputError

    with pytest.raises(InputError):
        select_frames(10, 0)


def test_pose_and_expression_helpers():
    from faceanime.geometry.rotation import so3_exp

    axis = torch.tensor([[0.3, -0.5, 0.8]])
    axis = axis / axis.norm()
    r = so3_exp(axis * math.radians(10))
    assert rotation_angle_deg(r, torch.eye(3)[None]).item() == pytest.approx(10, abs=1e-3)
    t = torch.linspace(0, 1, 20)
    assert correlation(t, 3 * t + 1) == pytest.approx(1.0)
    assert correlation(t, -t) == pytest.approx(-1.0)
    assert math.isnan(correlation(t, torch.ones(20)))  # a static output does not move
    two = torch.stack([t, t**2], 1)
    assert correlation(two, two * 2) == pytest.approx(1.0)
    points = torch.zeros(1, 68, 2)
    points[0, 36], points[0, 45] = torch.tensor([0.0, 0]), torch.tensor([100.0, 0])
    points[0, [65, 66, 67], 1] = 20.0  # lower inner lip 20 px under the upper
    assert mouth_opening(points).item() == pytest.approx(0.2)


def test_json_encoding_of_non_finite_numbers():
    assert json_number(math.inf) == "inf" and json_number(-math.inf) == "-inf"
    assert json_number(math.nan) is None and json_number(1.5) == 1.5
    json.dumps([json_number(v) for v in (math.inf, math.nan, 2.0)], allow_nan=False)


# --- what a viewer sees, on synthetic landmark tracks -----------------------------------------


def face_track(dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """A ``(T, 68, 2)`` track of one fixed face (outer eye corners 100 px apart, open eyes of
    EAR 0.3) whose centre moves by ``(dx, dy)`` inter-ocular units from frame 0."""
    gen = torch.Generator().manual_seed(3)
    face = 200 + 100 * torch.rand((68, 2), generator=gen, dtype=torch.float64)
    face[36], face[45] = torch.tensor([150.0, 250.0]), torch.tensor([250.0, 250.0])
    shift = torch.stack([dx, dy], 1).double() * 100
    return face + shift[:, None] - shift[0]


def set_eyes(points: torch.Tensor, frame: int, ear: float) -> None:
    """Give both eyes of ``points[frame]`` the aspect ratio ``ear`` (corners 30 px apart)."""
    for p1, p2, p3, p4, p5, p6 in M.EYES:
        x0, y0 = points[frame, p1].tolist()
        points[frame, p4] = torch.tensor([x0 + 30, y0])
        for top, bottom, x in ((p2, p6, x0 + 10), (p3, p5, x0 + 20)):
            points[frame, top] = torch.tensor([x, y0 - 15 * ear])
            points[frame, bottom] = torch.tensor([x, y0 + 15 * ear])


def test_brow_position_known_values():
    """The brows' height above the eyes' four corners and their inner ends' gap, over the outer
    corners' distance; a blink (the lids) does not move it; NaN without a face."""
    points = torch.zeros(3, 68, 2)
    points[:, [36, 39, 42, 45]] = torch.tensor([[0.0, 100.0], [30.0, 100.0], [50.0, 100.0],
                                               [80.0, 100.0]])
    points[:, 17:27, 1] = 60.0
    points[:, 21, 0], points[:, 22, 0] = 32.0, 48.0
    points[1, 17:27, 1] = 52.0                                 # raised by 8 px
    points[1, 21, 0], points[1, 22, 0] = 36.0, 44.0            # drawn in: 8 px apart
    points[1, [37, 38], 1] = 100.0                             # the upper lids shut
    points[2] = float("nan")
    brows = M.brow_position(points)
    assert brows[0].tolist() == pytest.approx([40 / 80, 16 / 80])
    assert brows[1].tolist() == pytest.approx([48 / 80, 8 / 80])
    assert torch.isnan(brows[2]).all()


def test_eye_aspect_ratio_known_values():
    points = torch.zeros(3, 68, 2)
    points[0, 36:48] = torch.tensor([
        [0, 0], [10, -6], [20, -6], [30, 0], [20, 3], [10, 3],      # EAR (9 + 9) / 60 = 0.3
        [50, 0], [60, -1], [70, -1], [80, 0], [70, 2], [60, 2]])    # EAR (3 + 3) / 60 = 0.1
    set_eyes(points, 1, 0.25)
    points[2, 40, 0] = float("nan")
    ear = M.eye_aspect_ratio(points)
    assert ear[0].item() == pytest.approx(0.2)
    assert ear[1].item() == pytest.approx(0.25)
    assert math.isnan(ear[2].item())
    with pytest.raises(ValueError):
        M.eye_aspect_ratio(torch.zeros(3, 5, 2))


def test_head_follow_known_answers():
    t = torch.linspace(0, 6, 40)
    still = torch.zeros(40)
    driver = face_track(0.1 * torch.sin(t), still)               # moves in x only
    assert M.head_follow(face_track(0.3 * torch.sin(t), still), driver) == pytest.approx(1.0)
    assert M.head_follow(face_track(-0.1 * torch.sin(t), still), driver) == pytest.approx(-1.0)
    # The driver's still y axis is left out: the output's y wobble does not count.
    wobble = face_track(0.1 * torch.sin(t), 0.2 * torch.cos(3 * t))
    assert M.head_follow(wobble, driver) == pytest.approx(1.0)
    # Both axes moving: x followed (+1), y mirrored (-1).
    both = face_track(0.1 * torch.sin(t), 0.1 * torch.cos(t))
    mirrored = face_track(0.1 * torch.sin(t), -0.1 * torch.cos(t))
    assert M.head_follow(mirrored, both) == pytest.approx(0.0, abs=1e-9)
    assert M.head_follow(both, both) == pytest.approx(1.0)
    # The 0.02 inter-ocular threshold on the driver's standard deviation (here y's is ~0.007).
    faint = face_track(0.1 * torch.sin(t), 0.01 * torch.cos(t))
    assert M.head_follow(mirrored, faint) == pytest.approx(1.0)  # y (std < 0.02) left out
    assert M.head_follow(mirrored, faint, min_motion=0.001) == pytest.approx(0.0, abs=1e-9)
    # Undefined: a driver that does not move, an output that does not move.
    assert math.isnan(M.head_follow(driver, face_track(still, still)))
    assert math.isnan(M.head_follow(face_track(still, still), driver))
    # Frames without a face on either side are dropped; displacement is in inter-ocular units.
    holes = driver.clone()
    holes[[0, 7]] = float("nan")
    assert M.head_follow(face_track(0.3 * torch.sin(t), still), holes) == pytest.approx(1.0)
    shift = M.head_displacement(driver)
    assert shift[:, 0].tolist() == pytest.approx((0.1 * torch.sin(t)).tolist(), abs=1e-6)


def test_closed_eye_ratio_known_answers():
    drv = torch.full((20,), 0.3)
    drv[7] = 0.05                                   # the driver blinks once: 5 % of 20 frames
    out = torch.full((20,), 0.3)
    out[7] = 0.1
    assert M.closed_eye_ratio(out, drv) == pytest.approx(0.1 / 0.3)
    assert M.closed_eye_ratio(torch.full((20,), 0.3), drv) == pytest.approx(1.0)  # no blink
    late = torch.full((20,), 0.3)
    late[12] = 0.1                                  # blinks, but not with the driver
    assert M.closed_eye_ratio(late, drv) == pytest.approx(1.0)
    # 40 frames: the 2 most closed; never fewer than one frame.
    drv40, out40 = torch.full((40,), 0.3), torch.full((40,), 0.3)
    drv40[[3, 10, 30]] = torch.tensor([0.05, 0.06, 0.07])   # frame 30 is the third: left out
    out40[[3, 10, 30]] = torch.tensor([0.0, 0.15, 0.0])
    assert M.closed_eye_ratio(out40, drv40) == pytest.approx(0.15 / 2 / 0.3)
    assert M.closed_eye_ratio(out[:3], drv[:3]) == pytest.approx(1.0)
    nan = out.clone()
    nan[7] = float("nan")                           # the output lost the face on the blink
    assert M.closed_eye_ratio(nan, drv) == pytest.approx(1.0)
    assert math.isnan(M.closed_eye_ratio(torch.full((3,), float("nan")), drv[:3]))


def test_blink_and_mouth_follow_through_viewer_summary():
    """The protocol's per-method values on a synthetic output that blinks and opens its mouth
    with the driver, and on a static one."""
    from faceanime.evaluation.protocol import EvalConfig, viewer_summary

    t = torch.linspace(0, 6, 30)
    driver = face_track(0.1 * torch.sin(t), 0.05 * torch.cos(t))
    output = face_track(0.2 * torch.sin(t), 0.08 * torch.cos(t))
    for k, ear in enumerate((0.3 - 0.2 * torch.sin(t).clamp(min=0)).tolist()):
        set_eyes(driver, k, ear)
        set_eyes(output, k, 0.5 * ear)
    for track, scale in ((driver, 20), (output, 10)):  # the lower inner lip under the upper
        gap = (scale * torch.sin(2 * t)).clamp(min=0).double()
        track[:, [67, 66, 65]] = track[:, [61, 62, 63]]
        track[:, [67, 66, 65], 1] += gap[:, None]
    for track, scale in ((driver, 6), (output, 3)):  # the corners drawn in: an "o"
        track[:, 48, 0] += scale * torch.sin(3 * t).double()
        track[:, 54, 0] -= scale * torch.sin(3 * t).double()
    for track, scale in ((driver, 6), (output, 2)):  # the brows raised, then drawn in
        track[:, 21] = track[:, 36] + torch.tensor([35.0, -30.0], dtype=torch.float64)
        track[:, 22] = track[:, 36] + torch.tensor([65.0, -30.0], dtype=torch.float64)
        track[:, 17:27, 1] -= scale * torch.sin(t).double()[:, None]
        track[:, 21, 0] += scale * torch.cos(2 * t).double()
        track[:, 22, 0] -= scale * torch.cos(2 * t).double()
    faces = torch.tensor([1] * 27 + [2, 2, 0])
    summary, series = viewer_summary(output, faces, driver, 1, EvalConfig())
    assert summary["double_face"] == pytest.approx(200 / 30)
    assert summary["head_follow"] == pytest.approx(1.0)
    assert summary["blink_follow"] == pytest.approx(1.0)
    assert summary["mouth_corr"] == pytest.approx(1.0)
    assert summary["width_corr"] > 0.99  # the eye distance moves a little with the head
    assert summary["brow_corr"] > 0.99
    # The driver's 2 most closed frames (5 % of 30, rounded up), the output's median.
    ear = np.array([0.5 * e for e in (0.3 - 0.2 * torch.sin(t).clamp(min=0)).tolist()])
    closed = np.argsort(ear, kind="stable")[:2]
    assert summary["closed_eye"] == pytest.approx(ear[closed].mean() / np.median(ear), rel=1e-5)
    assert summary["closed_eye"] < 0.5
    assert set(series) == {"faces", "ear", "mouth", "width", "head_dx", "head_dy", "brow_height",
                           "brow_gap"}
    assert all(len(v) == 30 for v in series.values())
    static = output[:1].expand(30, -1, -1)
    summary, _ = viewer_summary(static, torch.ones(30, dtype=torch.long), driver, 1, EvalConfig())
    assert summary["double_face"] == 0 and summary["closed_eye"] == pytest.approx(1.0)
    assert all(math.isnan(summary[k])
               for k in ("head_follow", "blink_follow", "mouth_corr", "width_corr", "brow_corr"))


def test_the_jobs_own_reading_of_the_driver_is_scored_as_an_output():
    """The ``tracked`` reference row: the landmarks the job tracks, scored against the
    evaluator's reading of the same frames as an output is; a mouth the tracker reads shut
    where the evaluator sees it open lowers the mouth follow, a lost frame is left out."""
    from faceanime.evaluation.protocol import EvalConfig, tracked_reference

    t = torch.linspace(0, 6, 30)
    driver = face_track(0.1 * torch.sin(t), 0.05 * torch.cos(t))
    gap = (20 * torch.sin(2 * t)).clamp(min=0).double()
    driver[:, [67, 66, 65]] = driver[:, [61, 62, 63]]
    driver[:, [67, 66, 65], 1] += gap[:, None]
    for k, ear in enumerate((0.3 - 0.2 * torch.sin(t).clamp(min=0)).tolist()):
        set_eyes(driver, k, ear)
    same = tracked_reference(driver.float(), driver, EvalConfig())
    assert math.isnan(same["double_face"])
    assert all(same[k] == pytest.approx(1.0) for k in ("head_follow", "blink_follow", "mouth_corr"))
    assert math.isnan(same["width_corr"])  # the corners never move: no correlation to speak of
    tracked = driver.clone()
    widest = gap.argsort(descending=True)[:4]
    tracked[widest, 65:68] = tracked[widest][:, [63, 62, 61]]  # the widest mouths read shut
    tracked[5] = float("nan")  # a frame the tracker lost
    read = tracked_reference(tracked.float(), driver, EvalConfig())
    kept = torch.ones(30, dtype=torch.bool)
    kept[5] = False
    expected = correlation(mouth_opening(tracked[kept]), mouth_opening(driver[kept]))
    assert read["mouth_corr"] == pytest.approx(float(expected), abs=1e-5)
    assert read["mouth_corr"] < 0.9
    assert read["head_follow"] == pytest.approx(1.0)


def test_double_face_rate():
    assert M.double_face_rate(torch.tensor([1, 2, 1, 3]), 1) == 50.0
    assert M.double_face_rate(torch.tensor([0, 1]), 1) == 0.0  # fewer faces are not double
    assert M.double_face_rate(torch.tensor([2, 2]), 2) == 0.0
    assert math.isnan(M.double_face_rate(torch.tensor([], dtype=torch.long), 1))


@pytest.mark.parametrize("size", [None, (250, 188)])
def test_pasted_second_face_is_counted(data_dir, scorer, size):
    """dlib counts one face in a photo and two when a copy is pasted beside it, at full size
    and on a small frame (searched upsampled); the points stay those of one face."""
    from PIL import Image

    from faceanime.io import read_image

    photo = read_image(data_dir / "faces" / "s12.jpg")
    if size is not None:
        photo = np.asarray(Image.fromarray(photo).resize(size[::-1], Image.BILINEAR))
    double = np.ascontiguousarray(np.concatenate([photo, photo], 1))
    points, faces = scorer.detect(photo[None])
    assert faces.tolist() == [1] and torch.isfinite(points).all()
    points2, faces2 = scorer.detect(double[None])
    assert faces2.tolist() == [2] and torch.isfinite(points2).all()
    assert M.double_face_rate(torch.cat([faces, faces2]), int(faces[0])) == 50.0
    # landmarks() is detect() without the count: the same points.
    assert torch.equal(scorer.landmarks(double[None]), points2)


def test_mirror_index_pairs_each_point_with_its_counterpart():
    mirror = torch.tensor(M.MIRROR_68)
    assert sorted(M.MIRROR_68) == list(range(68))
    assert torch.equal(mirror[mirror], torch.arange(68))  # an involution
    # Outer eye corners, mouth corners and jaw ends swap; the nose ridge and chin stay.
    assert M.MIRROR_68[36] == 45 and M.MIRROR_68[48] == 54 and M.MIRROR_68[0] == 16
    assert M.MIRROR_68[60] == 64 and M.MIRROR_68[61] == 63 and M.MIRROR_68[67] == 65
    assert all(M.MIRROR_68[i] == i for i in (8, 27, 28, 29, 30, 33, 51, 57, 62, 66))
    # Mirroring the landmarks of a face and reading them through the index gives a face whose
    # left eye is on the left again: the eye aspect ratio and mouth opening are unchanged.
    points = torch.rand(3, 68, 2) * 100
    flipped = points[:, mirror]
    flipped[..., 0] = 200 - flipped[..., 0]
    assert torch.allclose(M.eye_aspect_ratio(flipped), M.eye_aspect_ratio(points), atol=1e-5)
    assert torch.allclose(mouth_opening(flipped), mouth_opening(points), atol=1e-5)


def test_mirrored_reading_lands_on_the_ground_truth(data_dir, scorer):
    """image_0010 read mirrored: the points are mapped back onto the photo, each on its own
    landmark (near the ground truth as the direct reading is), not on its counterpart."""
    from faceanime.io import read_image
    from faceanime.landmarks import nme, read_pts

    image = read_image(data_dir / "faces" / "image_0010.png")
    truth = read_pts(data_dir / "faces" / "image_0010.pts")
    direct = scorer.landmarks(image[None])[0].numpy()
    mirrored = scorer.mirrored_landmarks(image[None])[0].numpy()
    assert nme(direct, truth) < 0.05 and nme(mirrored, truth) < 0.05
    assert np.abs(mirrored - direct).mean() > 0.1  # a second reading, not the first again
