"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1``) as a PyTorch module.

The layer stack is dlib's ``anet_type`` from ``examples/dnn_face_recognition_ex.cpp``: a 7×7
stride-2 convolution and a 3×3 max pool, 14 residual blocks of two 3×3 convolutions (29
convolutions in all), a global average pool and a 128-D fully connected layer without bias. Every
convolution is followed by an ``affine`` layer, the per-channel scale and shift dlib substitutes
for batch normalisation at test time.

Three dlib conventions decide the output sizes and are kept exactly:

- a layer with stride 2 has **no** padding (dlib's default padding is ``size // 2`` only for
  stride 1), so a 150×150 chip becomes 72² after the stem convolution and 35² after the pool;
- a down-sampling block's shortcut is a 2×2 average pool of its input, not a 1×1 convolution;
- ``add_prev`` adds tensors of different shapes as if both were zero-padded to the larger one
  (more channels after each down-sampling block, and 3² + 4² → 4², 1² + 2² → 2² spatially).

:meth:`DlibResNet.dlib_layers` lists the same stack in dlib's terms; the ``.dat`` reader walks
that list, so the architecture is written down once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from faceanime.errors import InputError

CHIP_SIZE = 150
EMBEDDING_DIM = 128
STEM_CHANNELS = 32
# (output channels, down-sampling) of each residual block, input side first: dlib's alevel4 ..
# alevel0 (3 × 32, 4 × 64, 3 × 128, 3 × 256, then one more down-sampling 256 block).
BLOCKS: tuple[tuple[int, bool], ...] = (
    ((32, False),) * 3
    + ((64, True),) + ((64, False),) * 3
    + ((128, True),) + ((128, False),) * 2
    + ((256, True),) + ((256, False),) * 2
    + ((256, True),)
)
# dlib's input layer subtracts these from 0–255 RGB values before dividing by 256; the values in
# the .dat file replace them when weights are loaded.
DEFAULT_INPUT_MEAN = (122.782, 117.001, 104.298)


@dataclass(frozen=True)
class DlibLayer:
    """One layer of the stack in dlib's terms.

    Attributes:
        kind: dlib's layer: ``input``, ``con``, ``affine``, ``relu``, ``max_pool``, ``avg_pool``,
            ``tag``, ``skip``, ``add_prev`` or ``fc``.
        shape: ``con``: ``(filters, rows, cols, stride_y, stride_x, pad_y, pad_x)``; pools:
            ``(rows, cols, stride_y, stride_x, pad_y, pad_x)`` (0 rows = the whole input);
            ``affine``: ``(channels,)``; ``fc``: ``(outputs, inputs)``; ``input``:
            ``(rows, cols)``; empty otherwise.
        target: the PyTorch submodule holding the layer's parameters ("" when it has none).
    """

    kind: str
    shape: tuple[int, ...] = ()
    target: str = ""


class Affine(nn.Module):
    """dlib's ``affine_`` layer in convolution mode: ``x * weight[c] + bias[c]`` per channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, C, H, W)``."""
        return torch.addcmul(self.bias.view(1, -1, 1, 1), x, self.weight.view(1, -1, 1, 1))


def padded_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: the sum of two ``(B, C, H, W)`` tensors of possibly different ``C``,
    ``H``, ``W``, each zero-padded (after its last channel, row and column) to the larger size."""
    if a.shape == b.shape:
        return a + b
    size = [max(sa, sb) for sa, sb in zip(a.shape[1:], b.shape[1:], strict=True)]

    def grow(x: torch.Tensor) -> torch.Tensor:
        c, h, w = x.shape[1:]
        return F.pad(x, (0, size[2] - w, 0, size[1] - h, 0, size[0] - c))

    return grow(a) + grow(b)


class ResidualBlock(nn.Module):
    """dlib's ``ares`` (identity shortcut) or ``ares_down`` (stride 2, average-pooled shortcut):
    ``relu(affine(con(relu(affine(con(x))))) + shortcut(x))``."""

    def __init__(self, in_channels: int, out_channels: int, downsample: bool):
        super().__init__()
        stride = 2 if downsample else 1
        self.downsample = downsample
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=0 if downsample else 1)
        self.affine1 = Affine(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1)
        self.affine2 = Affine(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W)`` -> ``(B, C_out, H', W')`` (``H' = max((H-3)//2+1, H//2)`` when
        down-sampling, as dlib's shapes dictate)."""
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        shortcut = F.avg_pool2d(x, 2, 2) if self.downsample else x
        return F.relu(padded_add(y, shortcut))

    def dlib_layers(self, name: str) -> list[DlibLayer]:
        """This block's layers, input side first (see :meth:`DlibResNet.dlib_layers`)."""
        c1, c2 = self.conv1, self.conv2
        stride, pad = c1.stride[0], c1.padding[0]
        layers = [
            DlibLayer("tag"),
            DlibLayer("con", (c1.out_channels, 3, 3, stride, stride, pad, pad), f"{name}.conv1"),
            DlibLayer("affine", (c1.out_channels,), f"{name}.affine1"),
            DlibLayer("relu"),
            DlibLayer("con", (c2.out_channels, 3, 3, 1, 1, 1, 1), f"{name}.conv2"),
            DlibLayer("affine", (c2.out_channels,), f"{name}.affine2"),
        ]
        if self.downsample:
            # tag2 marks the block output; skip1 jumps back to the block input for the pool.
            layers += [DlibLayer("tag"), DlibLayer("skip"),
                       DlibLayer("avg_pool", (2, 2, 2, 2, 0, 0))]
        return [*layers, DlibLayer("add_prev"), DlibLayer("relu")]


class DlibResNet(nn.Module):
    """The network on aligned chips: ``(B, 3, 150, 150)`` RGB in ``[0, 1]`` -> ``(B, 128)``.

    The chip must be aligned as dlib aligns it (:func:`faceanime.identity.align.extract_chips`).
    Freshly built, the weights are placeholders; :func:`faceanime.identity.load_embedder` loads
    dlib's.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("input_mean", torch.tensor(DEFAULT_INPUT_MEAN))
        self.conv = nn.Conv2d(3, STEM_CHANNELS, 7, 2, padding=0)
        self.affine = Affine(STEM_CHANNELS)
        blocks = []
        channels = STEM_CHANNELS
        for out_channels, downsample in BLOCKS:
            blocks.append(ResidualBlock(channels, out_channels, downsample))
            channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(channels, EMBEDDING_DIM, bias=False)

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 150, 150)`` chips in ``[0, 1]`` -> ``(B, 128)`` descriptors."""
        if chips.shape[1:] != (3, CHIP_SIZE, CHIP_SIZE):
            raise InputError(f"expected (B, 3, {CHIP_SIZE}, {CHIP_SIZE}) chips, got "
                             f"{tuple(chips.shape)}")
        # dlib feeds (value - mean) / 256 with values on the 0–255 scale.
        x = (chips * 255.0 - self.input_mean.view(1, 3, 1, 1)) / 256.0
        x = F.max_pool2d(F.relu(self.affine(self.conv(x))), 3, 2)
        x = self.blocks(x)
        return self.fc(x.mean(dim=(2, 3)))

    def dlib_layers(self) -> list[DlibLayer]:
        """The stack as dlib stores it, input layer first, loss layer left out: the order in which
        the ``.dat`` reader meets (and checks) each layer's details."""
        layers = [
            DlibLayer("input", (CHIP_SIZE, CHIP_SIZE), "input_mean"),
            DlibLayer("con", (STEM_CHANNELS, 7, 7, 2, 2, 0, 0), "conv"),
            DlibLayer("affine", (STEM_CHANNELS,), "affine"),
            DlibLayer("relu"),
            DlibLayer("max_pool", (3, 3, 2, 2, 0, 0)),
        ]
        for i, block in enumerate(self.blocks):
            layers += block.dlib_layers(f"blocks.{i}")
        layers += [DlibLayer("avg_pool", (0, 0, 1, 1, 0, 0)),
                   DlibLayer("fc", (self.fc.out_features, self.fc.in_features), "fc")]
        return layers
