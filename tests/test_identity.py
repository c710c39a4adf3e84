"""Face identity: dlib's .dat read into PyTorch, the aligned chip, agreement with dlib's own
descriptor on real faces, same/different person, gradients, the weights cache and bad files."""

from __future__ import annotations

import importlib.util
import itertools
import json

import numpy as np
import pytest
import torch
from helpers import assert_close

from faceanime.errors import InputError, ModelFileError
from faceanime.identity import (
    SAME_PERSON_THRESHOLD,
    ChipConfig,
    DlibResNet,
    chip_geometry,
    dlib_weights,
    extract_chips,
    identity_distance,
    load_embedder,
)
from faceanime.identity.embedder import DlibFaceEmbedder
from faceanime.io import iter_video_frames, read_image
from faceanime.landmarks import create_detector, detect_landmarks
from faceanime.morphable.registry import ENV_CACHE

dlib = pytest.importorskip("dlib")
if importlib.util.find_spec("face_recognition_models") is None:
    pytest.skip("face_recognition_models (dlib's model files) is not installed",
                allow_module_level=True)

PORTRAITS = ("s1.jpg", "s12.jpg", "s42.jpg", "d19.jpg", "image_0010.png")  # five people
VIDEO_FRAMES = 20
# The bar for "equal to dlib" (per component, or cosine); measured: ~4e-7 and 1 - 1e-7.
MAX_ABS, MIN_COS = 1e-3, 0.9999
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _tensor(image: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(1, 3, H, W)`` float in [0, 1]."""
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255.0


@pytest.fixture(scope="module")
def detector():
    with create_detector("dlib") as det:
        yield det


@pytest.fixture(scope="module")
def portraits(data_dir, detector) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """``(name, (1, 3, H, W) image, (1, 68, 2) landmarks)`` of each portrait."""
    faces = []
    for name in PORTRAITS:
        image = read_image(data_dir / "faces" / name)
        points = detect_landmarks(image, detector).points
        faces.append((name, _tensor(image), torch.from_numpy(points)[None]))
    return faces


@pytest.fixture(scope="module")
def video_faces(data_dir, detector) -> tuple[torch.Tensor, torch.Tensor]:
    """20 frames spread over videos/d3.mp4 (one talking person): ``(20, 3, 512, 512)`` and
    their ``(20, 68, 2)`` landmarks."""
    images, points = [], []
    for i, frame in enumerate(iter_video_frames(data_dir / "videos" / "d3.mp4")):
        if i % 17 == 0:
            images.append(_tensor(frame)[0])
            points.append(torch.from_numpy(detect_landmarks(frame, detector).points))
        if len(images) == VIDEO_FRAMES:
            break
    return torch.stack(images), torch.stack(points)


@pytest.fixture(scope="module")
def torch_embedder(tmp_path_factory):
    """The torch backend, its weights converted into a temporary cache (not the user's)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ENV_CACHE, str(tmp_path_factory.mktemp("identity-cache")))
        dlib_weights.clear_memory_cache()
        embedder = load_embedder("torch")
    dlib_weights.clear_memory_cache()
    return embedder


@pytest.fixture(scope="module")
def dlib_embedder():
    return load_embedder("dlib")


@pytest.fixture(scope="module")
def descriptors(torch_embedder, dlib_embedder, portraits, video_faces):
    """Both backends' descriptors: ``{"torch"|"dlib": ((5, 128) portraits, (20, 128) video)}``."""
    out = {}
    for name, embedder in (("torch", torch_embedder), ("dlib", dlib_embedder)):
        with torch.no_grad():
            still = torch.cat([embedder.embed(x, p) for _, x, p in portraits])
            video = embedder.embed(*video_faces)
        out[name] = (still, video)
    return out


@pytest.fixture
def cache_file(tmp_path, monkeypatch):
    """An empty cache folder for this test, and no weights in memory before or after."""
    monkeypatch.setenv(ENV_CACHE, str(tmp_path / "cache"))
    dlib_weights.clear_memory_cache()
    yield dlib_weights.cache_path()
    dlib_weights.clear_memory_cache()


def _dlib_detection(points: torch.Tensor):
    pts = np.rint(points.numpy()).astype(int)
    return dlib.full_object_detection(dlib.rectangle(0, 0, 1, 1),
                                      [dlib.point(int(x), int(y)) for x, y in pts])


# -- the .dat reader and the network ------------------------------------------------------------


def test_dat_reads_into_the_resnet():
    weights = dlib_weights.parse_dat(dlib_weights.dat_path())
    expected = {k: tuple(v.shape) for k, v in DlibResNet().state_dict().items()}
    assert {k: v.shape for k, v in weights.tensors.items()} == expected
    convs = [k for k, v in weights.tensors.items() if k.endswith("weight") and v.ndim == 4]
    assert len(convs) == 29 and weights.tensors["fc.weight"].shape == (128, 256)
    # dlib's input layer constants and loss settings, read from the file itself.
    assert_close(weights.tensors["input_mean"], [122.782, 117.001, 104.298], atol=1e-4)
    assert weights.distance_threshold == pytest.approx(SAME_PERSON_THRESHOLD)
    assert all(np.isfinite(v).all() for v in weights.tensors.values())


def test_network_equals_dlib_on_dlib_chips(torch_embedder, dlib_embedder, portraits):
    """The network alone: both fed dlib's own chips (dlib.get_face_chip)."""
    chips = []
    for _, image, points in portraits:
        frame = (image[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        chip = dlib.get_face_chip(np.ascontiguousarray(frame), _dlib_detection(points[0]), 150,
                                  0.25)
        chips.append(_tensor(chip)[0])
    chips = torch.stack(chips)
    with torch.no_grad():
        ours = torch_embedder.embed_chips(chips)
    theirs = dlib_embedder.embed_chips(chips)
    assert ours.shape == (len(PORTRAITS), 128)
    assert (ours - theirs).abs().max() <= 1e-5


def test_chips_equal_dlibs_pixel_for_pixel(portraits, video_faces):
    _, s42, s42_points = portraits[2]
    left = int(s42_points[0, :, 0].min()) + 40  # cut through the face: black beyond the border
    images = [(x, p) for _, x, p in portraits] + [
        (video_faces[0][i:i + 1], video_faces[1][i:i + 1]) for i in (0, 10)] + [
        (s42[..., left:], s42_points - torch.tensor([left, 0.0]))]
    for image, points in images:
        frame = (image[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        theirs = dlib.get_face_chip(np.ascontiguousarray(frame), _dlib_detection(points[0]), 150,
                                    0.25).astype(int)
        ours = (extract_chips(image, points)[0].permute(1, 2, 0) * 255).round().int().numpy()
        differ = np.abs(ours - theirs)
        # float32 against dlib's double may round a rare pixel the other way, never more.
        assert differ.max() <= 1 and (differ > 0).mean() < 1e-3


def test_geometry_equals_dlibs_chip_details(portraits):
    for _, _, points in portraits:
        details = dlib.get_face_chip_details(_dlib_detection(points[0]), 150, 0.25)
        geometry = chip_geometry(torch.round(points).double())
        assert float(geometry.angle[0]) == pytest.approx(details.angle, abs=1e-9)
        assert float(geometry.scale[0]) * 150 == pytest.approx(details.rect.width(), rel=1e-9)
        rect = details.rect
        centre = [(rect.left() + rect.right()) / 2, (rect.top() + rect.bottom()) / 2]
        assert_close(geometry.center[0], centre, atol=1e-6)


# -- agreement with dlib, same / different person -----------------------------------------------


def test_torch_embedding_equals_dlibs_descriptor(descriptors):
    """Portraits and 20 video frames, alignment included: the issue's bar."""
    for ours, theirs in zip(descriptors["torch"], descriptors["dlib"], strict=True):
        assert ours.shape == theirs.shape and ours.shape[1] == 128
        assert (ours - theirs).abs().max() <= MAX_ABS
        assert torch.cosine_similarity(ours, theirs).min() >= MIN_COS
        assert identity_distance(ours, theirs).max() < 1e-4  # measured ~1e-6


@pytest.mark.parametrize("backend", ["torch", "dlib"])
def test_same_person_close_different_people_far(descriptors, backend):
    still, video = descriptors[backend]
    pairs = np.triu_indices(len(video), 1)
    same = torch.cdist(video, video).numpy()[pairs]
    assert same.max() < SAME_PERSON_THRESHOLD  # measured 0.19–0.58 over 20 frames
    different = torch.cdist(still, still).numpy()[np.triu_indices(len(still), 1)]
    assert different.min() > SAME_PERSON_THRESHOLD  # measured 0.84–0.96
    assert torch.cdist(video, still).min() > SAME_PERSON_THRESHOLD  # d3 is none of them


def test_batched_equals_one_by_one(torch_embedder, video_faces):
    images, points = video_faces[0][:3], video_faces[1][:3]
    with torch.no_grad():
        batched = torch_embedder.embed(images, points)
        single = torch.cat([torch_embedder.embed(images[i:i + 1], points[i:i + 1])
                            for i in range(3)])
    assert_close(batched, single, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_equals_cpu(torch_embedder, video_faces):
    import copy

    images, points = video_faces[0][:4], video_faces[1][:4]
    gpu = copy.deepcopy(torch_embedder).to("cuda")
    with torch.no_grad():
        on_gpu = gpu.embed(images.cuda(), points.cuda())
        on_cpu = torch_embedder.embed(images, points)
    assert on_gpu.device.type == "cuda"
    assert (on_gpu.cpu() - on_cpu).abs().max() <= MAX_ABS


# -- gradients ----------------------------------------------------------------------------------


def test_gradients_reach_the_image(torch_embedder, portraits):
    _, image, points = portraits[2]
    image = image.clone().requires_grad_(True)
    torch_embedder.embed(image, points).square().sum().backward()
    grad = image.grad
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    # Only pixels under the chip (plus the pyramid filter's reach) get a gradient.
    corners = torch.tensor([[0.0, 0.0, 1.0], [149.0, 0.0, 1.0], [0.0, 149.0, 1.0],
                            [149.0, 149.0, 1.0]], dtype=torch.float64)
    xy = corners @ chip_geometry(points).chip_to_image()[0].T
    (x0, y0), (x1, y1) = (xy.min(0).values - 8).tolist(), (xy.max(0).values + 8).tolist()
    inside = torch.zeros_like(grad, dtype=torch.bool)
    inside[..., max(int(y0), 0):int(y1) + 1, max(int(x0), 0):int(x1) + 1] = True
    assert grad[~inside].abs().max() == 0 and grad[inside].abs().max() > 0


def test_alignment_gradcheck_float64():
    """The chip is linear in the image: exact gradients, checked by finite differences."""
    size = 40
    from faceanime.identity.align import TEMPLATE_POINTS, template_points

    points = torch.zeros(1, 68, 2, dtype=torch.float64)
    points[0, list(TEMPLATE_POINTS)] = template_points(size) * 0.9 + 2.0
    image = torch.rand(1, 3, 44, 44, dtype=torch.float64, requires_grad=True)
    config = ChipConfig(quantize=False)
    assert torch.autograd.gradcheck(lambda x: extract_chips(x, points, config, size=size),
                                    (image,), fast_mode=True)


def test_descent_towards_another_identity_lowers_the_distance(torch_embedder, portraits):
    """A few signed-gradient steps on one portrait's pixels towards another person."""
    _, source, source_points = portraits[2]  # s42, 512²
    _, target, target_points = portraits[1]  # s12
    with torch.no_grad():
        goal = torch_embedder.embed(target, target_points)
    image = source.clone()
    distances = []
    for _ in range(4):
        image.requires_grad_(True)
        distance = identity_distance(torch_embedder.embed(image, source_points), goal)
        distance.sum().backward()
        distances.append(float(distance.detach()))
        with torch.no_grad():
            image = (image - 2.0 / 255 * image.grad.sign()).clamp(0, 1)
    with torch.no_grad():
        final = float(identity_distance(torch_embedder.embed(image, source_points), goal))
    assert distances[0] > SAME_PERSON_THRESHOLD
    assert final < distances[0] - 0.1 and all(b < a for a, b in itertools.pairwise(distances))


def test_identity_distance_metrics():
    a = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    b = torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    assert_close(identity_distance(a, b), [5.0, 5.0 ** 0.5])
    assert_close(identity_distance(a, 2 * a, "cosine"), [0.0, 0.0], atol=1e-6)
    assert_close(identity_distance(a[1:], b[1:], "cosine"), [1.0])
    with pytest.raises(InputError, match="unknown identity metric"):
        identity_distance(a, b, "manhattan")


def test_bad_inputs_are_named(torch_embedder, portraits):
    _, image, points = portraits[2]
    with pytest.raises(InputError, match=r"\(B, 68, 2\)"):
        torch_embedder.embed(image, points[:, :5])
    with pytest.raises(InputError, match="2 landmark sets"):
        torch_embedder.embed(image, points.repeat(2, 1, 1))
    with pytest.raises(InputError, match="NaN"):
        torch_embedder.embed(image, torch.full_like(points, float("nan")))
    with pytest.raises(InputError, match="chips"):
        torch_embedder.embed_chips(image)
    with pytest.raises(InputError, match="unknown identity backend"):
        load_embedder("onnx")


# -- the weights cache --------------------------------------------------------------------------


def test_second_load_reads_the_cache(cache_file, monkeypatch):
    first = dlib_weights.load_weights()
    assert cache_file.is_file()
    dlib_weights.clear_memory_cache()

    def no_parse(*args, **kwargs):
        raise AssertionError("the .dat was parsed again")

    monkeypatch.setattr(dlib_weights, "parse_dat", no_parse)
    second = dlib_weights.load_weights()
    for name, value in first.tensors.items():
        np.testing.assert_array_equal(second.tensors[name], value)
    # No temporary files left beside it by the atomic write.
    assert [p.name for p in cache_file.parent.iterdir()] == [cache_file.name]


def test_damaged_cache_says_to_delete_it(cache_file):
    dlib_weights.load_weights()
    data = bytearray(cache_file.read_bytes())
    data[-1000] ^= 0xFF  # one byte of tensor data
    cache_file.write_bytes(bytes(data))
    dlib_weights.clear_memory_cache()
    with pytest.raises(ModelFileError, match="checksum") as err:
        dlib_weights.load_weights()
    assert str(cache_file) in str(err.value) and "delete it" in str(err.value)
    cache_file.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelFileError, match="damaged identity-weights cache"):
        dlib_weights.load_weights()


def test_cache_with_wrong_shapes_is_refused(cache_file):
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    dlib_weights.load_weights()
    with safe_open(str(cache_file), framework="numpy") as f:
        metadata = f.metadata()
    tensors = load_file(str(cache_file))
    tensors["fc.weight"] = tensors["fc.weight"][:64]
    save_file(tensors, str(cache_file), metadata=metadata)
    dlib_weights.clear_memory_cache()
    with pytest.raises(ModelFileError, match=r"fc\.weight .*\(64, 256\).*\(128, 256\)") as err:
        load_embedder("torch")
    assert str(cache_file) in str(err.value)


def test_stale_cache_is_rebuilt(cache_file):
    from safetensors.numpy import save_file

    cache_file.parent.mkdir(parents=True)
    save_file({"x": np.zeros(1, np.float32)}, str(cache_file),
              metadata={"format": "an older layout", "header": json.dumps({})})
    weights = dlib_weights.load_weights()
    assert "fc.weight" in weights.tensors
    dlib_weights.clear_memory_cache()
    assert "fc.weight" in dlib_weights.load_weights().tensors  # the rebuilt cache is valid


# -- missing, truncated and foreign model files -------------------------------------------------


def test_truncated_foreign_and_missing_dat(tmp_path):
    source = dlib_weights.dat_path()
    truncated = tmp_path / "truncated.dat"
    truncated.write_bytes(source.read_bytes()[:1_000_000])
    with pytest.raises(ModelFileError, match="truncated") as err:
        dlib_weights.parse_dat(truncated)
    assert str(truncated) in str(err.value) and "pip install --force-reinstall" in str(err.value)

    foreign = dlib_weights.models_dir() / "shape_predictor_5_face_landmarks.dat"
    with pytest.raises(ModelFileError, match="not dlib's face-recognition network"):
        dlib_weights.parse_dat(foreign)
    noise = tmp_path / "noise.dat"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelFileError, match="not dlib's face-recognition network"):
        dlib_weights.parse_dat(noise)

    with pytest.raises(ModelFileError, match="missing"):
        dlib_weights.load_weights(source=tmp_path / "absent.dat", cache=tmp_path / "c.st")
    with pytest.raises(ModelFileError, match="dlib cannot load"):
        DlibFaceEmbedder(model_path=str(truncated))


def test_models_package_missing(monkeypatch, cache_file):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "face_recognition_models" else
                        real(name, *a))
    for backend in ("torch", "dlib"):
        with pytest.raises(ModelFileError, match="pip install face_recognition_models"):
            load_embedder(backend)
