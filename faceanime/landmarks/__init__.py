"""68-point iBUG face landmarks for images and videos.

Images::

    from faceanime.landmarks import detect_landmarks
    face = detect_landmarks("photo.jpg")            # largest face; face.points (68, 2)

Videos (detect once, track, smooth)::

    from faceanime.landmarks import TrackerConfig, track_video
    track = track_video("talk.mp4", TrackerConfig(smooth=1.0))
    track.points, track.valid                        # (T, 68, 2), (T,)

Backends (``"dlib"`` default, ``"mediapipe"``, ``"fan"``) share one interface,
:class:`LandmarkDetector`, built by :func:`create_detector`. Points are float32 pixel ``x, y``,
0-based, with the centre of the top-left pixel at ``(0, 0)``; ``.pts`` files are 1-based.
"""

from faceanime.landmarks.boxes import box_iou, points_box
from faceanime.landmarks.detector import (
    BACKENDS,
    N_POINTS,
    DetectorConfig,
    Face,
    LandmarkDetector,
    available_backends,
    create_detector,
    detect_faces,
    detect_landmarks,
)
from faceanime.landmarks.draw import draw_landmarks
from faceanime.landmarks.gaze import (
    GazeConfig,
    eye_contrast,
    fill_gaze,
    measure_frames,
    measure_gaze,
    narrowed,
    shut_frames,
)
from faceanime.landmarks.metrics import nme
from faceanime.landmarks.pts import read_pts, write_pts
from faceanime.landmarks.result import VideoLandmarks
from faceanime.landmarks.smoothing import (
    OneEuroConfig,
    face_scale,
    one_euro_filter,
    one_euro_zero_phase,
)
from faceanime.landmarks.tracking import TrackerConfig, track_video

__all__ = [
    "BACKENDS",
    "N_POINTS",
    "DetectorConfig",
    "Face",
    "GazeConfig",
    "LandmarkDetector",
    "OneEuroConfig",
    "TrackerConfig",
    "VideoLandmarks",
    "available_backends",
    "box_iou",
    "create_detector",
    "detect_faces",
    "detect_landmarks",
    "draw_landmarks",
    "eye_contrast",
    "face_scale",
    "fill_gaze",
    "measure_frames",
    "measure_gaze",
    "narrowed",
    "nme",
    "one_euro_filter",
    "one_euro_zero_phase",
    "points_box",
    "read_pts",
    "shut_frames",
    "track_video",
    "write_pts",
]
