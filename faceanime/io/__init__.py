"""Reading and writing media and files, atomically. numpy and file formats live only here and in
the CLI; everything inside the pipeline takes and returns tensors."""

from faceanime.io.atomic import atomic_path, save_npz
from faceanime.io.media import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    VideoInfo,
    is_video_path,
    iter_video_frames,
    read_image,
    read_video_info,
    write_image,
    write_video,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "VideoInfo",
    "atomic_path",
    "is_video_path",
    "iter_video_frames",
    "read_image",
    "read_video_info",
    "save_npz",
    "write_image",
    "write_video",
]
