"""FAN backend (optional): face-alignment's S3FD detector + 2D-FAN-4 heatmap network
(Bulat & Tzimiropoulos, ICCV 2017).

Install with ``pip install faceanime[fan]``. face-alignment downloads its weights on first use
into torch's hub cache (``$TORCH_HOME/hub/checkpoints``, by default
``~/.cache/torch/hub/checkpoints/``). On a machine without internet the download raises
``URLError``; this backend turns that into a :class:`~faceanime.errors.ModelFileError` naming the
files and the folder to copy them into (see :func:`weights_help`).
"""

from __future__ import annotations

import inspect
import pickle
from pathlib import Path
from typing import ClassVar

import numpy as np

from faceanime.errors import BackendUnavailableError, ModelFileError
from faceanime.landmarks.detector import DetectorConfig, LandmarkDetector

# face-alignment 1.4/1.5 weight URLs, used when the installed version does not expose them.
_DEFAULT_URLS = {
    "s3fd": "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth",
    "2DFAN-4": "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar",
}


def weight_urls() -> dict[str, str]:
    """The weight files face-alignment loads for 2D landmarks: name -> download URL."""
    urls = dict(_DEFAULT_URLS)
    try:
        from face_alignment.api import models_urls

        urls["2DFAN-4"] = models_urls.get("2DFAN-4", urls["2DFAN-4"])
        from face_alignment.detection.sfd.sfd_detector import models_urls as sfd_urls

        urls["s3fd"] = sfd_urls.get("s3fd", urls["s3fd"])
    except (ImportError, AttributeError):
        pass
    return urls


def checkpoint_dir() -> Path:
    """torch hub's checkpoint folder, where face-alignment looks for (and saves) its weights."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def weights_help() -> str:
    """One line telling where to put the weights by hand (for offline machines)."""
    files = ", ".join(f"{url.rsplit('/', 1)[-1]} (from {url})" for url in weight_urls().values())
    return (f"copy {files} into {checkpoint_dir()}/ (set TORCH_HOME to use another cache "
            "folder), or run once with internet access")


class FanDetector(LandmarkDetector):
    """S3FD + 2D-FAN-4 via face-alignment. Slow on a CPU (~0.1–0.3 s per face); use
    ``DetectorConfig(device="cuda")`` where a GPU is available."""

    name: ClassVar[str] = "fan"

    def __init__(self, config: DetectorConfig | None = None):
        super().__init__(config)
        try:
            import face_alignment
        except ImportError as exc:
            raise BackendUnavailableError("the fan backend needs face-alignment: run "
                                          "`pip install faceanime[fan]`") from exc
        device = self.config.device
        if device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise BackendUnavailableError(f"device {device!r} requested but torch has no "
                                              "CUDA device here; use --device cpu")
        types = face_alignment.LandmarksType
        kind = types.TWO_D if hasattr(types, "TWO_D") else types._2D  # renamed in 1.4
        kwargs = {"device": device, "flip_input": False}
        if "compile" in inspect.signature(face_alignment.FaceAlignment).parameters:
            kwargs["compile"] = False  # torch.compile on a CPU costs minutes at construction
        try:
            # The real construction path: it downloads the weights when they are not cached.
            self._fa = face_alignment.FaceAlignment(kind, **kwargs)
        except OSError as exc:  # URLError, timeouts, refused connections, unwritable cache
            raise ModelFileError(f"fan: could not download face-alignment's weights "
                                 f"({_reason(exc)}); {weights_help()}") from exc
        except (RuntimeError, EOFError, pickle.UnpicklingError) as exc:
            raise ModelFileError(f"fan: a weight file in {checkpoint_dir()} is unreadable "
                                 f"({_reason(exc)}); delete it and {weights_help()}") from exc

    def detect_boxes(self, image: np.ndarray, upsample: int = 0) -> tuple[np.ndarray, np.ndarray]:
        found = self._fa.face_detector.detect_from_image(np.array(image, copy=True))
        found = np.asarray(found, dtype=np.float32).reshape(-1, 5)
        return found[:, :4], found[:, 4]

    def landmarks_in_box(self, image: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        # float64: face-alignment assigns these numbers into torch tensors, which accept Python
        # floats (np.float64 is one) but not np.float32 scalars.
        face = np.append(np.asarray(box, np.float64), 1.0)
        result = self._fa.get_landmarks_from_image(image, detected_faces=[face])
        if not result:
            return None
        return np.asarray(result[0], dtype=np.float32)[:, :2]


def _reason(exc: BaseException) -> str:
    text = str(getattr(exc, "reason", None) or exc).splitlines()
    return (text[0] if text else type(exc).__name__)[:160]
