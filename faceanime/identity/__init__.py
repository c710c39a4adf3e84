"""Face identity: dlib's 128-D face descriptor, differentiable in PyTorch.

::

    from faceanime.identity import identity_distance, load_embedder

    embedder = load_embedder()                      # "torch" (default) or "dlib"
    d = embedder.embed(images, landmarks)           # (B, 3, H, W) in [0, 1], (B, 68, 2) -> (B, 128)
    identity_distance(d, d_ref)                     # (B,); < 0.6: the same person

- :mod:`~faceanime.identity.network` — the ResNet (dlib's ``anet_type``) as a PyTorch module;
- :mod:`~faceanime.identity.dlib_weights` — the ``.dat`` reader and the safetensors cache;
- :mod:`~faceanime.identity.align` — dlib's 150×150 face chip, in torch;
- :mod:`~faceanime.identity.embedder` — the two backends and the distance.

See docs/identity.md for the measured agreement with dlib and the speed.
"""

from faceanime.identity.align import ChipConfig, ChipGeometry, chip_geometry, extract_chips
from faceanime.identity.embedder import (
    BACKENDS,
    METRICS,
    SAME_PERSON_THRESHOLD,
    DlibFaceEmbedder,
    FaceEmbedder,
    identity_distance,
    load_embedder,
)
from faceanime.identity.network import CHIP_SIZE, EMBEDDING_DIM, DlibResNet

__all__ = [
    "BACKENDS",
    "CHIP_SIZE",
    "EMBEDDING_DIM",
    "METRICS",
    "SAME_PERSON_THRESHOLD",
    "ChipConfig",
    "ChipGeometry",
    "DlibFaceEmbedder",
    "DlibResNet",
    "FaceEmbedder",
    "chip_geometry",
    "extract_chips",
    "identity_distance",
    "load_embedder",
]
