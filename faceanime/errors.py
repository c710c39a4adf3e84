"""Typed errors. Library code raises these; the CLI catches :class:`FaceAnimeError` once and prints
its message as one line with a non-zero exit, so every message must name the file and what to do."""

from __future__ import annotations


class FaceAnimeError(Exception):
    """Base class of every error a user can act on."""


class ModelFileError(FaceAnimeError):
    """A morphable-model or network-weight file is missing, truncated or of the wrong format."""


class MediaError(FaceAnimeError):
    """An image or video cannot be read (corrupt, empty, not media), or an output not written."""


class FaceNotFoundError(FaceAnimeError):
    """No face was found where one is required."""


class BackendUnavailableError(FaceAnimeError):
    """An optional backend (mediapipe, face-alignment, pytorch3d) is missing or cannot load."""


class InputError(FaceAnimeError):
    """An argument or input file has the wrong content (shape, count, NaNs, unknown name)."""


class ShardError(InputError):
    """A data shard or its index is missing, truncated, corrupt or disagrees with the index."""
