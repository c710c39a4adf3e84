"""PGFG on real data (d0, prepared once with 128-px crops): crop-space geometry and priors,
overfitting a few real pairs, the training command (outputs, validation against the classic
render, exact resume), checkpoints and the photo renderer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import assert_close, assert_one_line_error, prepare_d0, run_cli

from faceanime.coefficients import Coefficients
from faceanime.errors import InputError, ModelFileError
from faceanime.io import iter_video_frames
from faceanime.pgfg import Generator, GeneratorConfig, GeneratorRenderer
from faceanime.pgfg.checkpoint import load_checkpoint, load_generator
from faceanime.pgfg.data import (
    PairSampler,
    crop_coefficients,
    load_video_pairs,
    make_batch,
    screen_vertices,
    validation_pairs,
)
from faceanime.pgfg.losses import l1_loss
from faceanime.pgfg.networks import warp_image
from faceanime.reconstruction import face_vertices, project_vertices

CROP = 128
# Tiny networks and a few steps: what the command's plumbing needs, in seconds.
TINY = ["--tiny", "--batch", "2", "--val-pairs", "4", "--identity-samples", "1",
        "--val-every", "2", "--checkpoint-every", "2", "--no-progress", "--threads", "1"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def dataset(data_dir, tmp_path_factory) -> Path:
    """d0 prepared with 128-px crops, plus a copy of it under the stem ``d0b``: a second
    "video" to hold out, so validation and the classic baseline run."""
    return prepare_d0(data_dir, tmp_path_factory.mktemp("pgfg") / "dataset", ["d0b"], CROP)


@pytest.fixture(scope="module")
def video(dataset, sfm_model):
    return load_video_pairs(dataset, "d0", sfm_model, stride=4)


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory, data_dir) -> Path:
    """A 4-step tiny training run with validation (train d0, hold out d0b)."""
    out = tmp_path_factory.mktemp("run") / "out"
    from faceanime.cli import main

    status = main(["train", "generator", "--data", str(dataset), "-o", str(out), "--steps", "4",
                   "--val-videos", "d0b", "--model",
                   str(data_dir / "sfm" / "sfm_shape_3448.bin"), *TINY])
    assert status == 0
    return out


def test_crop_coefficients_project_through_the_crop_affine(dataset, sfm_model):
    coeffs = Coefficients.load(dataset / "coefficients" / "d0.npz")
    affine = torch.from_numpy(np.load(dataset / "crops" / "d0.npz")["affine"])
    frame = project_vertices(coeffs, face_vertices(sfm_model, coeffs))
    expected = frame[..., :2] @ affine[:, :, :2].transpose(1, 2) + affine[:, None, :, 2]
    crop = crop_coefficients(coeffs, affine, CROP)
    got = screen_vertices(sfm_model, crop)
    assert_close(got[..., :2], expected, atol=2e-3, rtol=0)
    k = torch.linalg.det(affine[:, :, :2]).sqrt()
    assert_close(got[..., 2], frame[..., 2] * k[:, None], atol=1e-3, rtol=1e-5)
    assert crop.image_size.tolist() == [CROP, CROP]
    lm = coeffs.landmarks @ affine[:, :, :2].transpose(1, 2) + affine[:, None, :, 2]
    assert_close(crop.landmarks, lm, atol=1e-3, rtol=0)


def test_crop_coefficients_need_the_orthographic_camera(dataset):
    from dataclasses import replace

    coeffs = Coefficients.load(dataset / "coefficients" / "d0.npz")
    with pytest.raises(InputError, match="orthographic"):
        crop_coefficients(replace(coeffs, camera="perspective"), torch.eye(2, 3), CROP)


def test_priors_are_the_source_colours_at_source_and_target_positions(video):
    assert video.crops.shape == (78, 3, CROP, CROP) and bool(video.usable.all())
    batch = make_batch([video], [(0, 5, 5), (0, 5, 60)], 1.0, True)
    # Source = target: the two priors are the same image.
    assert torch.equal(batch.p_s[0], batch.p_t[0])
    # The sparse points cover part of the face, not the crop.
    cover = batch.p_s[:, 3].mean(dim=(1, 2))
    assert bool(((cover > 0.05) & (cover < 0.5)).all()), cover
    # Where p_s is drawn it shows the source crop's own colours.
    drawn = batch.p_s[0, 3] > 0
    diff = (batch.p_s[0, :3] - batch.source[0]).abs().mean(0)[drawn].mean()
    assert float(diff) < 0.06
    # A different target moves the points.
    assert float((batch.p_t[1, 3] - batch.p_s[1, 3]).abs().mean()) > 0.01


def test_prior_offsets_lead_back_to_the_source_points(video):
    batch = make_batch([video], [(0, 0, 60), (0, 40, 10)], 1.0, True, flow_channel=True)
    assert batch.p_t.shape[1] == 6 and float(batch.p_s[:, 4:].abs().max()) == 0
    # Following each drawn target pixel's offset lands on its point in p_s: same colour.
    # (Normalised by the warped coverage: bilinear sampling at a disc's rim mixes in the empty
    # background.)
    followed = warp_image(batch.p_s[:, :4], batch.p_t[:, 4:6])
    followed = followed[:, :3] / followed[:, 3:4].clamp_min(1e-3)
    drawn = (batch.p_t[:, 3:4] > 0) & (warp_image(batch.p_s[:, 3:4], batch.p_t[:, 4:6]) > 0.25)
    diff = ((followed - batch.p_t[:, :3]).abs() * drawn).sum() / (3 * drawn.sum())
    moved = ((batch.p_s[:, :3] - batch.p_t[:, :3]).abs() * drawn).sum() / (3 * drawn.sum())
    assert float(diff) < 0.3 * float(moved), (float(diff), float(moved))


def test_the_exact_face_flow_starts_closer_to_the_target_than_the_prior_points(video,
                                                                               sfm_model):
    """With its learned head silenced, the generator warps the source by its starting flow
    alone. On real pairs of d0 both starts bring the source closer to the targets than the
    source itself; the exact face flow (the warp renderer's correspondence, the default)
    more so than the sparse prior points' (issue 15)."""
    pairs = [(0, 0, t) for t in range(8, 78, 10)]
    batch = make_batch([video], pairs, 1.0, True, flow_channel=True,
                       triangles=sfm_model.triangles)
    copy_l1 = float((batch.source - batch.target).abs().mean())
    l1 = {}
    for start in ("sparse", "dense"):
        torch.manual_seed(0)
        net = Generator(GeneratorConfig(flow_init=start))
        with torch.no_grad():
            net.decoder.head[1].weight.zero_()
            out = net.generate(batch.source, batch.p_s, batch.p_t, flow=batch.flow)
        l1[start] = float((out - batch.target).abs().mean())
    print(f"copy {copy_l1:.4f}, sparse start {l1['sparse']:.4f}, dense start {l1['dense']:.4f}")
    assert l1["sparse"] < 0.97 * copy_l1
    assert l1["dense"] < 0.97 * l1["sparse"], l1


def test_flip_and_jitter_change_images_and_priors_together(video, sfm_model):
    index = [(0, 3, 50), (0, 10, 20)]
    plain = make_batch([video], index, 1.0, True, flow_channel=True,
                       triangles=sfm_model.triangles)
    flipped = make_batch([video], index, 1.0, True, flip=torch.tensor([True, False]),
                         flow_channel=True, triangles=sfm_model.triangles)
    assert torch.equal(flipped.flow[0, 1:], plain.flow[0, 1:].flip(-1))
    assert torch.equal(flipped.flow[0, 0], -plain.flow[0, 0].flip(-1))
    assert torch.equal(flipped.flow[1], plain.flow[1])
    for name in ("source", "target"):
        a, b = getattr(plain, name), getattr(flipped, name)
        assert torch.equal(b[0], a[0].flip(-1)) and torch.equal(b[1], a[1]), name
    for name in ("p_s", "p_t"):
        a, b = getattr(plain, name), getattr(flipped, name)
        assert torch.equal(b[0, :4], a[0, :4].flip(-1)) and torch.equal(b[1], a[1]), name
        # Mirrored offsets point the other way in x.
        assert torch.equal(b[0, 4], -a[0, 4].flip(-1)) and torch.equal(b[0, 5], a[0, 5].flip(-1))
    dark = make_batch([video], index, 1.0, True, gain=torch.full((2,), 0.8),
                      bias=torch.zeros(2))
    assert_close(dark.source, plain.source * 0.8, atol=1e-6)
    drawn = plain.p_t[:, 3:] > 0
    assert_close(dark.p_t[:, :3] * drawn, plain.p_t[:, :3] * drawn * 0.8, atol=1e-5)


def test_pair_sampler_is_seeded_and_respects_the_gap(video):
    sampler = PairSampler([video], max_gap=5)
    a = sampler.sample(50, torch.Generator().manual_seed(1))
    b = sampler.sample(50, torch.Generator().manual_seed(1))
    assert a == b
    assert all(abs(s - t) <= 5 for _, s, t in a)
    pairs = validation_pairs([video], 8)
    assert all(s == 0 and t > 0 for _, s, t in pairs) and len(pairs) == 8


@pytest.mark.slow
def test_overfits_a_few_real_pairs(video, sfm_model):
    """60 steps on 2 real pairs of d0 bring the L1 below 70 % of copying the source (measured
    here: 0.0418 at step 1, 0.0277 at step 60, copying 0.0489; ~50 s on a loaded CPU)."""
    batch = make_batch([video], [(0, 0, 40), (0, 30, 77)], 1.0, True, flow_channel=True,
                       triangles=sfm_model.triangles)
    copy_l1 = float((batch.source - batch.target).abs().mean())
    torch.manual_seed(0)
    net = Generator(GeneratorConfig())
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(60):
        loss = l1_loss(net(batch.source, batch.p_s, batch.p_t, batch.flow), batch.target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    print(f"copy {copy_l1:.4f}, L1 at steps 1, 20, 40, 60: {losses[0]:.4f} {losses[19]:.4f} "
          f"{losses[39]:.4f} {losses[-1]:.4f}")
    assert losses[-1] < 0.7 * copy_l1, (losses[-1], copy_l1)


@pytest.mark.slow
def test_training_writes_its_outputs_and_validates(trained):
    rows = (trained / "log.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert len(rows) == 5 and header[:3] == ["step", "lr", "loss"]
    last = dict(zip(header, rows[-1].split(","), strict=True))
    for key in ("val_l1", "val_identity", "classic_l1", "classic_identity", "source_l1"):
        assert 0 <= float(last[key]) < 1, key
    for name in ("loss.png", "samples/step_0000004.png", "generator.safetensors",
                 "generator.json", "generator.state.pt", "step_0000002.safetensors"):
        assert (trained / name).is_file(), name
    doc = json.loads((trained / "generator.json").read_text())
    assert doc["generator"]["base_channels"] == 8 and doc["videos"]["val"] == ["d0b"]
    assert doc["metrics"]["val_l1"] == pytest.approx(float(last["val_l1"]), rel=1e-4)


@pytest.mark.slow
def test_resume_repeats_the_uninterrupted_run(trained, dataset, tmp_path, capsys, data_dir):
    out = tmp_path / "resumed"
    shutil.copytree(trained, out)
    for p in out.glob("generator.*"):
        p.unlink()
    status, _, err = run_cli(capsys, "train", "generator", "--data", str(dataset), "-o",
                             str(out), "--steps", "4", "--resume",
                             str(out / "step_0000002.safetensors"), "--model",
                             str(data_dir / "sfm" / "sfm_shape_3448.bin"), *TINY)
    assert status == 0, err
    a = (trained / "log.csv").read_text().splitlines()
    b = (out / "log.csv").read_text().splitlines()
    strip = [[c for i, c in enumerate(r.split(",")) if i != len(r.split(",")) - 1] for r in a]
    assert strip == [[c for i, c in enumerate(r.split(",")) if i != len(r.split(",")) - 1]
                     for r in b]
    ta, tb = load_checkpoint(trained).tensors, load_checkpoint(out).tensors
    assert ta.keys() == tb.keys()
    for key in ta:
        assert torch.equal(ta[key], tb[key]), key


@pytest.mark.slow
def test_checkpoint_round_trip(trained, video, sfm_model):
    from safetensors.torch import load_file

    net = load_generator(trained)
    again = load_generator(trained / "generator.json")
    assert net.config.flow_init == "dense"
    batch = make_batch([video], [(0, 0, 30)], 1.0, True, flow_channel=True,
                       triangles=sfm_model.triangles)
    out = net.generate(batch.source, batch.p_s, batch.p_t, flow=batch.flow)
    assert torch.equal(out, again.generate(batch.source, batch.p_s, batch.p_t, flow=batch.flow))
    # Plain safetensors: the EMA generator, the raw weights and the discriminator.
    tensors = load_file(str(trained / "generator.safetensors"))
    manual = Generator(net.config)
    manual.load_state_dict({k[len("generator."):]: v for k, v in tensors.items()
                            if k.startswith("generator.")})
    assert torch.equal(manual.generate(batch.source, batch.p_s, batch.p_t, flow=batch.flow), out)
    assert any(k.startswith("raw.") for k in tensors)
    assert any(k.startswith("discriminator.") for k in tensors)
    state = torch.load(trained / "generator.state.pt", weights_only=True)
    assert state["step"] == 4 and "opt_g" in state and "opt_d" in state


@pytest.mark.slow
def test_checkpoint_of_another_config_is_refused(trained, tmp_path, dataset, capsys):
    for p in trained.glob("generator.*"):
        shutil.copy(p, tmp_path / p.name)
    doc = json.loads((tmp_path / "generator.json").read_text())
    doc["generator"]["base_channels"] = 16
    (tmp_path / "generator.json").write_text(json.dumps(doc))
    with pytest.raises(ModelFileError, match=r"config needs .*train generator"):
        load_generator(tmp_path)
    doc["generator"]["hidden"] = 3
    (tmp_path / "generator.json").write_text(json.dumps(doc))
    with pytest.raises(ModelFileError, match="unknown field"):
        load_checkpoint(tmp_path)
    # Weights of another checkpoint beside this JSON.
    shutil.copy(trained / "step_0000002.safetensors", tmp_path / "generator.safetensors")
    with pytest.raises(ModelFileError, match="checksum"):
        load_checkpoint(tmp_path)
    # Resuming with other network settings names the differing field.
    status, _, err = run_cli(capsys, "train", "generator", "--data", str(dataset), "-o",
                             str(tmp_path / "x"), "--steps", "6", "--resume",
                             str(trained / "step_0000002.safetensors"), "--base-channels", "12",
                             "--no-progress")
    assert_one_line_error(status, err, "base_channels: 8 != 12")


def test_cli_errors(dataset, tmp_path, capsys):
    status, _, err = run_cli(capsys, "train", "generator", "--data", str(tmp_path), "-o",
                             str(tmp_path / "o"), "--no-progress")
    assert_one_line_error(status, err, "no manifest")
    status, _, err = run_cli(capsys, "train", "generator", "--data", str(dataset), "-o",
                             str(tmp_path / "o"), "--size", "256", "--levels", "4",
                             "--no-progress")
    assert_one_line_error(status, err, "crops are 128 px", "--crop-size 256")
    status, _, err = run_cli(capsys, "train", "generator", "--data", str(dataset), "-o",
                             str(tmp_path / "o"), "--gan", "lsgan", "--no-progress")
    assert_one_line_error(status, err, "lsgan")


@pytest.mark.slow
def test_renderer_pastes_the_generated_crop_into_the_photo(trained, data_dir, dataset,
                                                           sfm_model):
    coeffs = Coefficients.load(dataset / "coefficients" / "d0.npz")
    photo = next(iter(iter_video_frames(data_dir / "videos" / "d0.mp4")))
    renderer = GeneratorRenderer(sfm_model, photo, coeffs.frames(slice(0, 1)), trained)
    assert renderer.image_size == (512, 512)
    # The photo is cropped as prepare crops frames (prepare also smooths over time: allow 2 px).
    affine = torch.from_numpy(np.load(dataset / "crops" / "d0.npz")["affine"][0])
    corners = torch.tensor([[0.0, 0.0, 1.0], [511.0, 511.0, 1.0]])
    assert float((corners @ renderer.affine[0].T - corners @ affine.T).abs().max()) < 2.0
    target = coeffs.frames(slice(10, 13))
    frames = renderer.render(target)
    assert frames.shape == (3, 3, 512, 512) and frames.min() >= 0 and frames.max() <= 1
    # Outside the crop's square the photo is untouched; inside, the face changed.
    from faceanime.render.paste import invert_affine

    inv = invert_affine(renderer.affine)[0]
    square = torch.tensor([[0, 0, 1], [CROP - 1, 0, 1], [0, CROP - 1, 1],
                           [CROP - 1, CROP - 1, 1]], dtype=torch.float32) @ inv.T
    x0, y0 = square.amin(0).floor().long().tolist()
    x1, y1 = square.amax(0).ceil().long().tolist()
    source = renderer.image
    outside = torch.ones(512, 512, dtype=torch.bool)
    outside[max(y0, 0):y1 + 1, max(x0, 0):x1 + 1] = False
    assert torch.equal(frames[:, :, outside], source[None].expand(3, -1, -1, -1)[:, :, outside])
    assert float((frames[:, :, ~outside] - source[:, ~outside]).abs().mean()) > 1e-4
    batches = list(renderer.iter_frames(target))
    assert len(batches) == 3 and batches[0].dtype == np.uint8 and batches[0].shape == (512,
                                                                                        512, 3)


def test_renderer_needs_landmarks(dataset, sfm_model, data_dir):
    from dataclasses import replace

    coeffs = Coefficients.load(dataset / "coefficients" / "d0.npz").frames(slice(0, 1))
    photo = next(iter(iter_video_frames(data_dir / "videos" / "d0.mp4")))
    net = Generator(GeneratorConfig(base_channels=8, max_channels=16, growth=4,
                                    dense_layers=1, levels=3))
    bare = replace(coeffs, landmarks=None, fitted_landmarks=None)
    with pytest.raises(InputError, match="landmarks"):
        GeneratorRenderer(sfm_model, photo, bare, net)


@pytest.mark.slow
def test_heldout_report_scores_every_method_on_the_same_frames(trained, dataset, sfm_model):
    from faceanime.pgfg.train import heldout_report

    report = heldout_report(trained, dataset, every=20, face_model=sfm_model, progress=False)
    assert report["frames"]["count"] == len(range(1, 78, 20))
    for name in ("generator", "warp", "classic", "source"):
        assert 0 < report[name]["l1"] < 0.2 and 0 <= report[name]["identity"] < 1, name
    # The warp moves the source towards each target: nearer than the unmoved source.
    assert report["warp"]["l1"] < report["source"]["l1"]
    raw = heldout_report(trained, dataset, every=20, face_model=sfm_model, progress=False,
                         ema=False)
    assert raw["classic"] == report["classic"] and raw["source"] == report["source"]
    assert raw["warp"] == report["warp"]
    assert raw["generator"]["l1"] != report["generator"]["l1"]
