"""Media I/O on the real files: decoding, metadata, atomic writes and clear errors."""

from __future__ import annotations

import itertools
import os
import re
import stat
import subprocess

import numpy as np
import pytest
import torch

from faceanime.errors import MediaError
from faceanime.io import (
    atomic_path,
    iter_video_frames,
    read_image,
    read_video_info,
    save_npz,
    write_image,
    write_video,
)


def test_read_image_colour_and_grey(data_dir, tmp_path):
    import imageio.v3 as iio

    colour = read_image(data_dir / "faces" / "s1.jpg")
    old_photo = read_image(data_dir / "faces" / "s12.jpg")
    grey_file = tmp_path / "grey.png"
    iio.imwrite(grey_file, colour[..., 1])  # a single-channel PNG
    grey = read_image(grey_file)
    for img in (colour, old_photo, grey):
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    # Grey input is replicated into three equal channels, not left single-channel.
    assert np.array_equal(grey[..., 0], colour[..., 1])
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])
    assert not np.array_equal(colour[..., 0], colour[..., 2])


def test_video_info_and_frame_count(data_dir):
    info = read_video_info(data_dir / "videos" / "d3.mp4")
    assert info.size == (512, 512) and info.fps == pytest.approx(30.0) and info.has_audio
    assert not read_video_info(data_dir / "videos" / "d0.mp4").has_audio
    frames = list(iter_video_frames(data_dir / "videos" / "d0.mp4"))
    assert len(frames) == 78
    assert frames[0].shape == (512, 512, 3) and frames[0].dtype == np.uint8


def test_decoding_from_a_frame_index_gives_exactly_the_later_frames(data_dir):
    path = data_dir / "videos" / "d0.mp4"
    frames = [f.copy() for f in iter_video_frames(path)]
    later = list(iter_video_frames(path, start=50))
    assert len(later) == 28
    assert all(np.array_equal(a, b) for a, b in zip(later, frames[50:], strict=True))
    assert list(iter_video_frames(path, start=500)) == []  # past the end: nothing, no error
    with pytest.raises(ValueError, match="start"):
        next(iter_video_frames(path, start=-1))


@pytest.mark.parametrize("content", [b"", b"this is not an image at all" * 10])
def test_bad_image_names_the_file(tmp_path, content):
    bad = tmp_path / "bad.png"
    bad.write_bytes(content)
    with pytest.raises(MediaError, match=r"bad\.png"):
        read_image(bad)
    with pytest.raises(MediaError, match="no such file"):
        read_image(tmp_path / "missing.png")


def test_corrupt_and_empty_video(tmp_path, data_dir):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).bytes(50_000))
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes((data_dir / "videos" / "d0.mp4").read_bytes()[:2000])
    for path in (empty, garbage, truncated):
        with pytest.raises(MediaError, match=re.escape(path.name)):
            list(iter_video_frames(path))


def test_write_video_round_trip_keeps_audio(tmp_path, data_dir):
    src = data_dir / "videos" / "d3.mp4"
    frames = list(itertools.islice(iter_video_frames(src), 30))
    out = tmp_path / "out.mp4"
    assert write_video(out, frames, fps=30.0, audio_from=src) == 30
    info = read_video_info(out)
    assert info.size == (512, 512) and info.has_audio and info.fps == pytest.approx(30.0)
    back = list(iter_video_frames(out))
    assert len(back) == 30
    # The driver's sound runs on for 11.8 s; the picture's own length is read from its track
    # (the container's duration would make a complete video look truncated).
    from faceanime.io.media import mp4_video_duration

    assert info.duration > 10 and mp4_video_duration(out) == pytest.approx(1.0, abs=0.05)
    # Lossy H.264: close to the input, not identical.
    err = np.abs(back[10].astype(float) - frames[10].astype(float)).mean()
    assert err < 4.0
    assert list(tmp_path.glob(".*part*")) == []


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "x.npz"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []

    def frames():
        yield np.zeros((16, 16, 3), np.uint8)
        raise RuntimeError("generator failed mid-way")

    with pytest.raises(RuntimeError):
        write_video(tmp_path / "v.mp4", frames(), fps=10)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_destination(tmp_path):
    with pytest.raises(MediaError, match="does not exist"):
        save_npz(tmp_path / "no" / "such" / "dir.npz", a=np.zeros(3))
    with pytest.raises(MediaError, match=r"x\.png"):
        write_image(tmp_path / "missing_dir" / "x.png", np.zeros((4, 4, 3), np.uint8))


def test_write_video_pads_odd_sizes_without_resampling(tmp_path):
    y, x = np.mgrid[0:51, 0:75]
    frame = np.stack([x * 3, y * 5, (x + y) * 2], -1).clip(0, 255).astype(np.uint8)
    out = tmp_path / "odd.mp4"
    assert write_video(out, [frame] * 4, fps=10, quality=10) == 4
    assert read_video_info(out).size == (76, 52)
    back = next(iter_video_frames(out)).astype(float)
    # The picture is not rescaled: every original pixel keeps its place (H.264 is lossy, so
    # within a few levels), and the added row and column repeat the last ones.
    assert np.abs(back[:51, :75] - frame).mean() < 3
    assert np.abs(back[51] - back[50]).mean() < 3 and np.abs(back[:, 75] - back[:, 74]).mean() < 3


def test_atomic_outputs_get_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "out.bin") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out.bin").stat().st_mode) == 0o644


# --- every image a user has (issue 17) ---------------------------------------------------------


def _s1(data_dir) -> np.ndarray:
    from PIL import Image

    with Image.open(data_dir / "faces" / "s1.jpg") as im:
        return np.asarray(im.convert("RGB").resize((286, 286)))


def test_read_image_applies_the_exif_orientation(data_dir, tmp_path):
    """A phone photo stored sideways with an EXIF orientation tag is read upright (it was read
    sideways, and no face was found in it)."""
    from PIL import Image

    upright = _s1(data_dir)
    stored = Image.fromarray(np.rot90(upright, k=1))  # the sensor's layout: turned left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = tmp_path / "phone.jpg"
    stored.save(path, quality=95, exif=exif)
    image = read_image(path)
    assert image.shape == upright.shape
    assert np.abs(image.astype(int) - upright).mean() < 3


def test_read_image_scales_16_bit_and_converts_every_mode(data_dir, tmp_path):
    """16-bit grey (read as nearly white before: no face), grey with alpha, palette, CMYK and
    RGBA images come out as the picture a viewer sees; transparency over white."""
    from PIL import Image

    rgb = _s1(data_dir)
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    sixteen = tmp_path / "grey16.png"
    Image.fromarray(grey.astype(np.uint16) * 257).save(sixteen)
    assert Image.open(sixteen).mode.startswith("I")
    image = read_image(sixteen)
    assert np.abs(image.astype(int) - grey[..., None]).max() <= 1

    cmyk = tmp_path / "cmyk.jpg"
    Image.fromarray(rgb).convert("CMYK").save(cmyk, quality=95)
    assert np.abs(read_image(cmyk).astype(int) - rgb).mean() < 4

    palette = tmp_path / "palette.png"
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(palette)
    assert np.abs(read_image(palette).astype(int) - rgb).mean() < 6

    rgba = np.concatenate([rgb, np.full((*rgb.shape[:2], 1), 255, np.uint8)], -1)
    rgba[:40, :, 3] = 0  # a transparent band at the top, its colour channels black
    rgba[:40, :, :3] = 0
    path = tmp_path / "cutout.png"
    Image.fromarray(rgba).save(path)
    image = read_image(path)
    assert (image[:40] == 255).all()  # over white, not the hidden black
    assert np.array_equal(image[40:], rgb[40:])
    grey_alpha = tmp_path / "la.png"
    Image.fromarray(rgba).convert("LA").save(grey_alpha)
    assert (read_image(grey_alpha)[:40] == 255).all()


def test_a_sixteen_bit_photo_is_fitted(data_dir, tmp_path, sfm_model):
    """End to end: the face in a 16-bit grey PNG is found and fitted."""
    from PIL import Image

    from faceanime.fitting import fit_image

    with Image.open(data_dir / "faces" / "s42.jpg") as im:
        grey = np.asarray(im.convert("L"))
    path = tmp_path / "s42_16.png"
    Image.fromarray(grey.astype(np.uint16) * 257).save(path)
    coeffs = fit_image(read_image(path), sfm_model)
    assert bool(torch.isfinite(coeffs.landmarks).all())


def test_a_phone_video_stored_sideways_reads_upright_and_quietly(data_dir, tmp_path, caplog):
    """A phone stores a portrait video as landscape frames with a rotation tag; ffmpeg applies
    it, as players do. imageio-ffmpeg then logs a size mismatch for every open: expected, so
    the user's terminal must not fill with it."""
    import imageio_ffmpeg

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    source = data_dir / "videos" / "d0.mp4"
    upright = np.stack([f[40:440] for f in itertools.islice(iter_video_frames(source), 3)])
    sideways, tagged = tmp_path / "sideways.mp4", tmp_path / "phone.mp4"
    # Landscape pixels (the face lying on its side), then a tag saying "turn it back".
    subprocess.run([ffmpeg, "-y", "-loglevel", "error", "-i", str(source), "-frames:v", "3",
                    "-vf", "crop=512:400:0:40,transpose=2", "-c:v", "libx264", "-qp", "0",
                    "-pix_fmt", "yuv444p", str(sideways)], check=True)
    subprocess.run([ffmpeg, "-y", "-loglevel", "error", "-display_rotation", "-90", "-i",
                    str(sideways), "-c", "copy", str(tagged)], check=True)
    caplog.set_level("DEBUG")
    assert read_video_info(tagged).size == (512, 400)
    frames = np.stack(list(iter_video_frames(tagged)))
    assert frames.shape == (3, 400, 512, 3)
    # Lossless but for the RGB → YUV round trip.
    assert np.abs(frames.astype(int) - upright).mean() < 3.0
    assert not [r for r in caplog.records if "frame size" in r.getMessage()]
