"""Reading and writing media and files, atomically. numpy and file formats live only here and in
the CLI; everything inside the pipeline takes and returns tensors."""

from faceanime.io.atomic import atomic_path
from faceanime.io.digest import file_digest
from faceanime.io.media import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    VideoInfo,
    image_size,
    is_video_path,
    iter_video_frames,
    read_image,
    read_metadata,
    read_video_info,
    video_encoder,
    write_image,
    write_video,
)
from faceanime.io.npz import load_npz, read_npz_bytes, save_npz

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "VideoInfo",
    "atomic_path",
    "file_digest",
    "image_size",
    "is_video_path",
    "iter_video_frames",
    "load_npz",
    "read_image",
    "read_metadata",
    "read_npz_bytes",
    "read_video_info",
    "save_npz",
    "video_encoder",
    "write_image",
    "write_video",
]
