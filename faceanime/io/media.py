"""Image and video I/O at the pipeline's edges.

Images are read with imageio (``(H, W, 3)`` uint8 RGB, whatever the file's colour mode); videos are
decoded and encoded by imageio-ffmpeg's bundled ffmpeg as a stream, so memory stays flat in video
length. Every failure becomes a :class:`~faceanime.errors.MediaError` naming the file.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import re
import subprocess
import warnings
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from PIL import Image, ImageOps, PngImagePlugin

from faceanime.errors import MediaError
from faceanime.io.atomic import atomic_path


def _ffmpeg():
    """imageio-ffmpeg, imported when a video is read or written: coefficient files, photos
    and fits work without it."""
    try:
        import imageio_ffmpeg
    except ImportError as exc:
        raise MediaError("reading or writing video needs imageio-ffmpeg: pip install "
                         "imageio-ffmpeg") from exc
    return imageio_ffmpeg


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".gif")


def is_video_path(path: str | os.PathLike) -> bool:
    """True where ``path``'s extension is a video container's."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _require_file(path: Path) -> None:
    if not path.exists():
        raise MediaError(f"{path}: no such file")
    if not path.is_file():
        raise MediaError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: file is empty")


def read_image(path: str | os.PathLike, max_side: int | None = None) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8 RGB, as a viewer shows it.

    The EXIF orientation is applied (phones store photos sideways with a tag saying so);
    16- and 32-bit images are scaled to 8 bits (not clipped: a 16-bit grey PNG would read as
    white); grey, palette and CMYK images are converted; transparency is composited over white.

    Args:
        path: the image file.
        max_side: when given and the image is larger, it is reduced (antialiased) so that its
            longer side is ``max_side``; a JPEG is then decoded at a reduced scale to begin with
            (Pillow's draft mode), so a 6000² photo never takes its full size in memory.

    Raises:
        MediaError: missing, empty or not a readable image.
    """
    path = Path(path)
    with _opened_image(path) as opened:
        if max_side is not None and max(opened.size) > max_side:
            k = max_side / max(opened.size)
            # Draft decodes at 1/2, 1/4 or 1/8, the smallest not below the requested size.
            opened.draft("RGB", (math.ceil(opened.width * k), math.ceil(opened.height * k)))
        image = _to_rgb(ImageOps.exif_transpose(opened))
        if max_side is not None and max(image.shape[:2]) > max_side:
            h, w = image.shape[:2]
            k = max_side / max(h, w)
            size = (max(1, round(w * k)), max(1, round(h * k)))
            image = np.asarray(Image.fromarray(image).resize(size, Image.LANCZOS,
                                                             reducing_gap=3.0))
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise MediaError(f"{path}: unexpected image layout {image.shape} {image.dtype}")
    # Writable: numpy's view of a Pillow image is read-only, which torch.from_numpy warns about.
    return np.require(image, requirements=["C", "W"])


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` of an image file as a viewer shows it (EXIF orientation applied),
    from its header alone.

    Raises:
        MediaError: missing, empty or not a readable image.
    """
    path = Path(path)
    with _opened_image(path) as opened:
        w, h = opened.size
        orientation = opened.getexif().get(0x0112, 1)
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


@contextlib.contextmanager
def _opened_image(path: Path) -> Iterator[Image.Image]:
    """The image file opened by Pillow; whatever Pillow raises while it is read becomes one
    :class:`MediaError` naming the file."""
    _require_file(path)
    try:
        with Image.open(path) as opened:
            yield opened
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise MediaError(f"{path}: not a readable image ({type(exc).__name__}); "
                         "expected PNG, JPEG or another common image format") from exc


def _to_rgb(image: Image.Image) -> np.ndarray:
    """A Pillow image of any mode as ``(H, W, 3)`` uint8 RGB."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        values = np.asarray(image).astype(np.float64)
        # 16-bit files hold 0-65535 (Pillow reads some as 32-bit "I"); float images 0-1.
        top = 1.0 if image.mode == "F" else (255.0 if values.max() <= 255 else 65535.0)
        grey = np.clip(np.round(values * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "RGBa", "La", "PA"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))


def write_image(path: str | os.PathLike, image: np.ndarray,
                metadata: dict[str, str] | None = None) -> Path:
    """Write a ``(H, W, 3)`` uint8 image atomically (format from the extension).

    ``metadata`` becomes PNG ``tEXt`` chunks, or a JPEG comment (its ``comment`` entry)."""
    path = Path(path)
    suffix = path.suffix.lower()
    with atomic_path(path) as tmp:
        try:
            if metadata and suffix == ".png":
                info = PngImagePlugin.PngInfo()
                for key, value in metadata.items():
                    info.add_text(key, value)
                Image.fromarray(np.asarray(image)).save(tmp, format="PNG", pnginfo=info)
            elif metadata and suffix in (".jpg", ".jpeg") and "comment" in metadata:
                Image.fromarray(np.asarray(image)).save(tmp, format="JPEG", quality=95,
                                                        comment=metadata["comment"])
            else:
                iio.imwrite(tmp, np.asarray(image), extension=suffix)
        except (OSError, ValueError, TypeError) as exc:
            raise MediaError(f"{path}: cannot write image ({exc})") from exc
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The text metadata of a media file: an image's PNG text chunks or JPEG comment, a video's
    container tags (as ffmpeg reports them, keys in lower case)."""
    path = Path(path)
    _require_file(path)
    if not is_video_path(path):
        try:
            with Image.open(path) as image:
                info = dict(image.info)
        except OSError as exc:
            raise MediaError(f"{path}: not a readable image ({exc})") from exc
        out = {k: v for k, v in info.items() if isinstance(v, str)}
        if isinstance(info.get("comment"), bytes):
            out["comment"] = info["comment"].decode("utf-8", "replace")
        return out
    command = [_ffmpeg().get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f",
               "ffmetadata", "-"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise MediaError(f"{path}: cannot read metadata ({done.stderr.strip()[:120]})")
    tags = {}
    for line in done.stdout.splitlines():
        if "=" in line and not line.startswith((";", "[")):
            key, value = line.split("=", 1)
            # ffmetadata escapes '=', ';', '#', '\\' and newlines with a backslash.
            tags[key.lower()] = re.sub(r"\\(.)", r"\1", value)
    return tags


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds, as ffmpeg reports it.

    Attributes:
        fps: frames per second.
        size: ``(width, height)`` in pixels.
        duration: seconds (0 when unknown).
        has_audio: whether an audio stream is present.
    """

    fps: float
    size: tuple[int, int]
    duration: float
    has_audio: bool


class _RotationNote(logging.Filter):
    """Drops imageio-ffmpeg's note that ffmpeg's frames differ in size from the stream's. A
    phone stores a portrait video as landscape frames with a rotation tag, which ffmpeg applies
    as players do: the frames come upright and the note, logged at every open, is expected."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "different from the source frame size" not in record.getMessage()


def _open_reader(path: Path, start: int = 0) -> tuple[Iterator[bytes], dict]:
    _require_file(path)
    # Frames before ``start`` are dropped inside ffmpeg by their index (exact, unlike a seek by
    # time), and the rest re-timed from 0 so that no frame is duplicated to fill the gap.
    output = ["-vf", f"trim=start_frame={start},setpts=PTS-STARTPTS"] if start else None
    try:
        gen = _ffmpeg().read_frames(str(path), pix_fmt="rgb24", output_params=output)
        note, logger = _RotationNote(), logging.getLogger("imageio_ffmpeg")
        logger.addFilter(note)
        try:
            meta = next(gen)  # ffmpeg's header is parsed (and the note logged) here
        finally:
            logger.removeFilter(note)
    except (OSError, RuntimeError, StopIteration) as exc:
        raise MediaError(f"{path}: not a readable video ({str(exc).splitlines()[0][:120]}); "
                         "check that the file is complete and a video ffmpeg can decode") from exc
    if not meta.get("size") or not meta.get("fps"):
        gen.close()
        raise MediaError(f"{path}: no video stream found")
    return gen, meta


def read_video_info(path: str | os.PathLike) -> VideoInfo:
    """Frame rate, size, duration and audio presence of a video, without decoding its frames."""
    path = Path(path)
    gen, meta = _open_reader(path)
    gen.close()
    return VideoInfo(fps=float(meta["fps"]), size=tuple(int(s) for s in meta["size"]),
                     duration=float(meta.get("duration") or 0.0),
                     has_audio=bool(meta.get("audio_codec")))


def iter_video_frames(path: str | os.PathLike, start: int = 0,
                      allow_truncated: bool = False) -> Iterator[np.ndarray]:
    """Decode a video as a stream of ``(H, W, 3)`` uint8 RGB frames.

    Args:
        path: the video.
        start: index of the first frame to yield (the earlier ones are decoded and dropped by
            ffmpeg, never copied here); past the end, nothing is yielded.
        allow_truncated: a video that ends well before its header's duration (a cut-off
            download, a damaged file) yields the frames it has with a warning instead of
            raising once they are used up.

    Raises:
        MediaError: missing, empty, corrupt, holding no decodable frame (from ``start`` on,
            an empty stream is not an error), or, unless ``allow_truncated``, truncated: raised
            after its last good frame, naming it.
    """
    path = Path(path)
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    gen, meta = _open_reader(path, start)
    width, height = (int(s) for s in meta["size"])
    count = 0
    try:
        for raw in gen:
            frame = np.frombuffer(raw, dtype=np.uint8)
            if frame.size != width * height * 3:
                break  # a truncated last frame: keep what decoded cleanly
            count += 1
            yield frame.reshape(height, width, 3)
    except (OSError, RuntimeError) as exc:
        if count == 0:
            raise MediaError(f"{path}: video could not be decoded ({exc}); "
                             "the file may be corrupt") from exc
        # ffmpeg stops at the first broken packet: the frames so far are sound.
    finally:
        gen.close()
    if count == 0 and not start:
        raise MediaError(f"{path}: video holds no decodable frame; the file may be corrupt")
    _check_complete(path, meta, start + count, allow_truncated, before=count == 0)


def mp4_video_duration(path: str | os.PathLike) -> float | None:
    """The video track's own duration in seconds from an MP4/MOV header (its ``mdhd`` box), or
    None for another container or a header without one. The container's duration is the
    longest track's: an audio track may run far beyond the picture."""
    def boxes(f, end: int):
        while f.tell() + 8 <= end:
            start = f.tell()
            head = f.read(8)
            size, kind = int.from_bytes(head[:4], "big"), head[4:]
            if size == 1:
                size = int.from_bytes(f.read(8), "big")
            elif size == 0:
                size = end - start
            if size < 8 or start + size > end + 8:
                return
            yield kind, f.tell(), min(start + size, end)
            f.seek(min(start + size, end))

    def child(f, begin: int, end: int, kind: bytes):
        f.seek(begin)
        return next(((b, e) for k, b, e in boxes(f, end) if k == kind), None)

    try:
        with open(path, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            moov = child(f, 0, end, b"moov")
            if moov is None:
                return None
            f.seek(moov[0])
            tracks = [(b, e) for k, b, e in boxes(f, moov[1]) if k == b"trak"]
            for begin, stop in tracks:
                mdia = child(f, begin, stop, b"mdia")
                if mdia is None:
                    continue
                hdlr = child(f, *mdia, b"hdlr")
                if hdlr is None:
                    continue
                f.seek(hdlr[0] + 8)
                if f.read(4) != b"vide":
                    continue
                mdhd = child(f, *mdia, b"mdhd")
                if mdhd is None:
                    return None
                f.seek(mdhd[0])
                version = f.read(4)[0]
                f.seek(16 if version == 1 else 8, os.SEEK_CUR)
                timescale = int.from_bytes(f.read(4), "big")
                duration = int.from_bytes(f.read(8 if version == 1 else 4), "big")
                return duration / timescale if timescale else None
    except (OSError, IndexError):
        return None
    return None


def _check_complete(path: Path, meta: dict, decoded: int, allow_truncated: bool,
                    before: bool = False) -> None:
    """Raise (or warn) when a video stopped decoding well before its header's duration
    (``before``: nothing decoded from frame ``decoded`` on, so it ends somewhere earlier): the
    video track's own duration where the container records it (MP4/MOV), else the container's
    when there is no audio track (whose length says nothing about the picture's). A margin of
    5 % (at least 2 frames): durations are rounded."""
    fps = float(meta.get("fps") or 0.0)
    duration = mp4_video_duration(path)
    if duration is None:
        if meta.get("audio_codec"):
            return
        duration = float(meta.get("duration") or 0.0)
    expected = round(duration * fps)
    if expected <= 0 or expected - decoded <= max(2, 0.05 * expected):
        return
    where = f"before frame {decoded}" if before else f"at frame {decoded}"
    what = (f"{path}: the video stops {where} of the {expected} its header promises "
            f"({duration:.1f} s at {fps:g} frames/s): the file is truncated or damaged")
    if not allow_truncated:
        raise MediaError(f"{what}; use a complete copy, or pass --allow-truncated to use the "
                         "frames it has")
    warnings.warn(f"{what}; using the frames it has", stacklevel=3)


# NVENC's constant-quality mode at about x264's crf 15 (write_video's default quality 7) for
# talking heads; p4 is NVENC's middle preset (speed and size between p1 and p7).
NVENC_PARAMS = ("-preset", "p4", "-rc", "vbr", "-cq", "19", "-b:v", "0")


def pick_encoder(device: str | None, offered: Collection[str], nvenc_runs: bool) -> str:
    """The H.264 encoder for a job on ``device``: NVIDIA's hardware encoder (``h264_nvenc``)
    when the job runs on CUDA, ffmpeg offers it (``offered``, its encoder names) and a test
    encode ran (``nvenc_runs``: a build may list it where no NVIDIA driver is), else x264."""
    on_cuda = device is not None and str(device).startswith("cuda")
    return "h264_nvenc" if on_cuda and "h264_nvenc" in offered and nvenc_runs else "libx264"


@functools.cache
def ffmpeg_encoders() -> frozenset[str]:
    """The video encoders the ffmpeg that writes our videos offers (asked once a process)."""
    try:
        out = subprocess.run([_ffmpeg().get_ffmpeg_exe(), "-hide_banner", "-encoders"],
                             capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError, MediaError):
        return frozenset()
    return frozenset(m.group(1) for m in re.finditer(r"^ V\S* (\S+)", out, re.MULTILINE))


@functools.cache
def nvenc_runs() -> bool:
    """Whether a 16-frame ``h264_nvenc`` encode with :data:`NVENC_PARAMS` succeeds here (asked
    once a process, only for CUDA jobs): listed is not working without an NVIDIA driver."""
    cmd = [_ffmpeg().get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "lavfi",
           "-i", "testsrc=size=256x256:rate=25", "-frames:v", "16", "-c:v", "h264_nvenc",
           *NVENC_PARAMS, "-pix_fmt", "yuv420p", "-f", "null", "-"]
    try:
        return subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def video_encoder(device: str | None) -> str:
    """:func:`pick_encoder` for this machine (probes ffmpeg only for a CUDA job)."""
    if device is None or not str(device).startswith("cuda"):
        return "libx264"
    offered = ffmpeg_encoders()
    return pick_encoder(device, offered, "h264_nvenc" in offered and nvenc_runs())


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float,
                audio_from: str | os.PathLike | None = None, quality: int = 7,
                metadata: dict[str, str] | None = None, preset: str = "veryfast",
                encoder: str = "libx264") -> int:
    """Encode ``(H, W, 3)`` uint8 frames as H.264 mp4 (yuv420p), streaming, written atomically.

    An odd width or height gets one repeated column or row (yuv420p needs even sizes).

    Args:
        path: output file.
        frames: an iterable of equally sized frames.
        fps: frame rate.
        audio_from: a media file whose audio track is muxed in (AAC), or None; a file without
            audio is ignored.
        quality: imageio-ffmpeg quality, 0–10.
        metadata: container tags (``comment``, ``description``, ...) written into the file.
        preset: x264 speed preset; ``veryfast`` encodes ~5x faster than x264's default
            ``medium`` at about the same size for talking heads (docs/performance.md).
        encoder: ``libx264`` or ``h264_nvenc`` (:func:`video_encoder` picks; NVENC takes
            :data:`NVENC_PARAMS` instead of ``quality`` and ``preset``).

    Returns:
        The number of frames written.
    """
    path = Path(path)
    if audio_from is not None and not read_video_info(audio_from).has_audio:
        audio_from = None
    count = 0
    with atomic_path(path) as tmp:
        writer = None
        try:
            for frame in frames:
                frame = np.asarray(frame, dtype=np.uint8)
                # H.264 in yuv420p needs even sizes: repeat the last row/column rather than let
                # the encoder resample the whole frame.
                pad = ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0))
                frame = np.ascontiguousarray(np.pad(frame, pad, mode="edge") if any(
                    p[1] for p in pad) else frame)
                if writer is None:
                    h, w = frame.shape[:2]
                    kwargs = {}
                    if audio_from is not None:
                        kwargs = {"audio_path": str(audio_from), "audio_codec": "aac"}
                    nvenc = encoder == "h264_nvenc"
                    params = list(NVENC_PARAMS) if nvenc else ["-preset", preset]
                    if metadata:
                        # Custom keys need use_metadata_tags; comment/description are standard.
                        params += ["-movflags", "+use_metadata_tags"]
                        for key, value in metadata.items():
                            params += ["-metadata", f"{key}={value}"]
                    kwargs["output_params"] = params
                    writer = _ffmpeg().write_frames(
                        str(tmp), (w, h), fps=fps, codec=encoder, pix_fmt_out="yuv420p",
                        quality=None if nvenc else quality, macro_block_size=2,
                        ffmpeg_log_level="error", **kwargs)
                    writer.send(None)
                writer.send(frame)
                count += 1
        finally:
            if writer is not None:
                writer.close()
        if count == 0:
            raise MediaError(f"{path}: no frames to write")
    return count
