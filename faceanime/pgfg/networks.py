"""PGFG's networks (FaceAnime §III-C): dense blocks, the prior encoder E, the source-image
encoder, the decoder that receives the motion residual E(p_t) - E(p_s), and the conditional patch
discriminator.

Shapes: images and priors are ``(B, C, S, S)`` with ``S = config.size``; images in [0, 1]; a
prior is its RGB splat plus (``prior_mask``) its coverage, ``(B, 4, S, S)``. Both encoders return
one feature map per scale ``S, S/2, ..., S/2^levels``; the decoder starts at the bottleneck and
takes the source's features and the residual at every scale (skip connections), so motion enters
everywhere but the source's appearance is what is decoded. No normalisation layers: outputs do not
depend on what else is in the batch, and WGAN-GP forbids batch norm in the critic anyway.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from faceanime.errors import InputError
from faceanime.pgfg.config import DiscriminatorConfig, GeneratorConfig, prior_channels


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, C, H, W)``, zero outside."""
    radius = max(1, round(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, radius), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(radius, 0), groups=c)


def prior_flow(offset: torch.Tensor, mask: torch.Tensor, sigma: float) -> torch.Tensor:
    """Dense flow from the sparse prior's offsets (normalised convolution).

    Args:
        offset: ``(B, 2, S, S)`` at drawn points the offset from the target position to the
            source position of the same vertex (grid units), zero elsewhere.
        mask: ``(B, 1, S, S)`` drawn points.
        sigma: interpolation width in pixels.

    Returns:
        ``(B, 2, S, S)``: the offsets interpolated over the face, fading to zero within a few
        ``sigma`` outside it (where the density of points falls under half its peak).
    """
    density = _blur(mask, sigma)
    flow = _blur(offset * mask, sigma) / density.clamp_min(1e-6)
    peak = density.flatten(1).amax(1).clamp_min(1e-6).view(-1, 1, 1, 1)
    return flow * (2 * density / peak).clamp(max=1.0)


def flow_init(flow: torch.Tensor, sigma: float) -> torch.Tensor:
    """The generator's starting flow from the exact face flow (:mod:`faceanime.pgfg.flow`).

    Args:
        flow: ``(B, 3, S, S)`` offsets (2 channels) and where they are known (1 channel).
        sigma: how far, in pixels, the known flow is continued beyond the face.

    Returns:
        ``(B, 2, S, S)``: the exact offsets where known; elsewhere their normalised-convolution
        continuation, equal to the known flow's local mean at the face's edge (where half the
        neighbourhood is known) and fading to zero within about two ``sigma`` beyond it.
    """
    known = flow[:, 2:3]
    # The sparse start's continuation; over a dense face its peak density is 1.
    return torch.where(known > 0, flow[:, :2], prior_flow(flow[:, :2], known, sigma))


def warp_image(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward warp: output pixel ``x`` takes ``image`` at ``x + flow(x)``.

    Args:
        image: ``(B, C, S, S)``.
        flow: ``(B, 2, S, S)`` offsets (x, y) in ``grid_sample``'s normalised units (2 = the
            image's width).

    Returns:
        ``(B, C, S, S)``, bilinear, edge colours continued outside.
    """
    h, w = image.shape[-2:]
    ys = torch.linspace(-1, 1, h, device=image.device, dtype=image.dtype)
    xs = torch.linspace(-1, 1, w, device=image.device, dtype=image.dtype)
    base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)  # (H, W, 2) as (x, y)
    grid = base[None] + flow.permute(0, 2, 3, 1).to(image.dtype)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border",
                         align_corners=True)


class DenseBlock(nn.Module):
    """DenseNet block: each of ``layers`` layers sees all earlier maps and adds ``growth``
    channels; a 1x1 transition maps the concatenation to ``out_channels``.

    ``(B, in_channels, H, W) -> (B, out_channels, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, growth: int, layers: int):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(_act(), nn.Conv2d(in_channels + i * growth, growth, 3, padding=1))
            for i in range(layers))
        self.transition = nn.Sequential(_act(), nn.Conv2d(in_channels + layers * growth,
                                                          out_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = [x]
        for layer in self.layers:
            maps.append(layer(torch.cat(maps, 1)))
        return self.transition(torch.cat(maps, 1))


def level_channels(config: GeneratorConfig) -> list[int]:
    """Channels of the feature maps at scales ``S, S/2, ..., S/2^levels``."""
    return [min(config.base_channels * 2 ** i, config.max_channels)
            for i in range(config.levels + 1)]


class Encoder(nn.Module):
    """Dense-block encoder: ``(B, C_in, S, S)`` -> a list of ``levels + 1`` maps,
    ``(B, c_i, S / 2^i, S / 2^i)``.

    The full-resolution map is a single convolution of the input; dense blocks start at S/2.
    Full-resolution dense blocks cost ~10x the rest of the network together on a CPU, and the
    full-resolution skip mainly carries edges and colour that one convolution sees.
    """

    def __init__(self, in_channels: int, config: GeneratorConfig):
        super().__init__()
        chans = level_channels(config)
        self.stem = nn.Conv2d(in_channels, chans[0], 3, padding=1)
        self.blocks = nn.ModuleList(
            DenseBlock(chans[i - 1], chans[i], config.growth, config.dense_layers)
            for i in range(1, config.levels + 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.stem(x)
        feats = [h]
        for block in self.blocks:
            h = block(F.avg_pool2d(h, 2))
            feats.append(h)
        return feats


class PriorEncoder(Encoder):
    """E: the encoder of sparse priors (shared by p_s and p_t, so equal priors give a zero
    residual exactly)."""

    def __init__(self, config: GeneratorConfig):
        super().__init__(prior_channels(config), config)


class ImageEncoder(Encoder):
    """The encoder of the source image."""

    def __init__(self, config: GeneratorConfig):
        super().__init__(3, config)


class Decoder(nn.Module):
    """From the source's features and the motion residual at every scale to an image.

    ``decoder(source_feats, residual) -> (B, 5 or 4, S, S)`` raw head output; :class:`Generator`
    turns it into an image according to ``config.predict``.
    """

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        chans = level_channels(config)
        g, n = config.growth, config.dense_layers
        self.fuse = nn.ModuleList(nn.Conv2d(2 * c + (c if i < config.levels else 0), c, 1)
                                  for i, c in enumerate(chans))
        # No dense block at full resolution (see Encoder): the fused map goes to the head.
        self.blocks = nn.ModuleList([nn.Identity()] + [DenseBlock(c, c, g, n) for c in chans[1:]])
        # Convolve before upsampling: the same receptive field at a quarter of the cost.
        self.up = nn.ModuleList(nn.Conv2d(chans[i + 1], chans[i], 3, padding=1)
                                for i in range(config.levels))
        self.head = nn.Sequential(_act(), nn.Conv2d(chans[0], 5 if config.predict == "warp"
                                                    else 4, 3, padding=1))
        with torch.no_grad():
            # A small start: an untrained residual generator is close to copying the source.
            self.head[1].weight.mul_(0.1)
            self.head[1].bias.zero_()

    def forward(self, source: list[torch.Tensor], residual: list[torch.Tensor]) -> torch.Tensor:
        top = len(source) - 1
        h = self.blocks[top](self.fuse[top](torch.cat([source[top], residual[top]], 1)))
        for i in range(top - 1, -1, -1):
            up = F.interpolate(self.up[i](h), scale_factor=2.0, mode="nearest")
            h = self.blocks[i](self.fuse[i](torch.cat([up, source[i], residual[i]], 1)))
        return self.head(h)


class Generator(nn.Module):
    """PGFG's generator: ``G(I_s, p_s, p_t) = D(enc(I_s), E(p_t) - E(p_s))``.

    Build from a config, or load trained weights with
    :func:`faceanime.pgfg.checkpoint.load_generator`.
    """

    def __init__(self, config: GeneratorConfig | None = None):
        super().__init__()
        self.config = config or GeneratorConfig()
        self.prior_encoder = PriorEncoder(self.config)
        self.image_encoder = ImageEncoder(self.config)
        self.decoder = Decoder(self.config)

    @property
    def prior_channels(self) -> int:
        return prior_channels(self.config)

    def _check(self, source: torch.Tensor, p_s: torch.Tensor, p_t: torch.Tensor) -> None:
        s, c = self.config.size, self.prior_channels
        if source.ndim != 4 or tuple(source.shape[1:]) != (3, s, s):
            raise InputError(f"generator: source must be (B, 3, {s}, {s}), got "
                             f"{tuple(source.shape)}")
        for name, p in (("p_s", p_s), ("p_t", p_t)):
            if p.ndim != 4 or tuple(p.shape[1:]) != (c, s, s) or p.shape[0] != source.shape[0]:
                raise InputError(f"generator: {name} must be ({source.shape[0]}, {c}, {s}, {s}), "
                                 f"got {tuple(p.shape)}")

    def motion(self, p_s: torch.Tensor, p_t: torch.Tensor) -> list[torch.Tensor]:
        """The motion residual ``E(p_t) - E(p_s)`` at every scale (one pass of E over both)."""
        feats = self.prior_encoder(torch.cat([p_t, p_s], 0))
        b = p_t.shape[0]
        return [f[:b] - f[b:] for f in feats]

    def forward(self, source: torch.Tensor, p_s: torch.Tensor, p_t: torch.Tensor,
                flow: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, 3, S, S)`` source crops, ``(B, C_p, S, S)`` priors -> ``(B, 3, S, S)`` images
        (in [0, 1] for ``blend`` and ``direct``; ``residual`` is clamped by :meth:`generate`
        only, so that training gradients never vanish at the range's ends). ``flow``
        ``(B, 3, S, S)``: the exact face flow (:func:`faceanime.pgfg.flow.face_flow`), needed
        when ``config.flow_init`` is ``dense``."""
        self._check(source, p_s, p_t)
        if self.config.predict == "warp" and self.config.flow_init == "dense":
            s = self.config.size
            if flow is None or tuple(flow.shape) != (source.shape[0], 3, s, s):
                raise InputError(f"generator: flow_init 'dense' needs the face flow "
                                 f"({source.shape[0]}, 3, {s}, {s}), got "
                                 f"{None if flow is None else tuple(flow.shape)}")
        out = self.decoder(self.image_encoder(source), self.motion(p_s, p_t))
        if self.config.predict == "warp":
            # Most of what changes between two frames of a talking head is where things are:
            # a flow field (channels 0-1, in units of 1/16 of the crop) moves the source's own
            # pixels, and a residual (channels 2-4) adds what no source pixel shows (teeth, a
            # mouth interior, lighting). Learned far faster than painting pixels (docs/pgfg.md).
            correction = out[:, :2] * (2.0 / 16)
            if self.config.flow_init == "dense":
                # The warp renderer's exact face flow is the start; the network corrects it
                # and continues it over hair and background.
                start = flow_init(flow.to(correction.dtype), self.config.size / 32)
            elif self.config.flow_init == "sparse":
                # The priors' own correspondences give the flow's start. From p_t - p_s, so
                # equal priors still mean no motion.
                start = prior_flow(p_t[:, 4:6] - p_s[:, 4:6], p_t[:, 3:4], self.config.size / 32)
            else:
                start = torch.zeros_like(correction)
            return warp_image(source, correction + start) + out[:, 2:5]
        if self.config.predict == "residual":
            # Most of a crop (hair, background) is the source's: predicting the change leaves
            # the network only the moving parts to learn.
            return source + out[:, :3]
        if self.config.predict == "blend":
            # A blend mask saturates towards "copy" early in training (measured: tiny nets
            # collapse to the identity at lr 5e-3); kept as an option, not the default.
            return torch.lerp(source, torch.sigmoid(out[:, :3]), torch.sigmoid(out[:, 3:]))
        return torch.sigmoid(out[:, :3])

    @torch.no_grad()
    def generate(self, source_image: torch.Tensor, p_s: torch.Tensor, p_t: torch.Tensor,
                 batch_size: int = 16, flow: torch.Tensor | None = None) -> torch.Tensor:
        """Inference in batches of ``batch_size``: ``source_image`` ``(B, 3, S, S)`` or
        ``(1, 3, S, S)`` / ``(3, S, S)`` shared by all, ``p_s`` likewise, ``p_t`` and ``flow``
        ``(B, C_p, S, S)`` and ``(B, 3, S, S)`` -> ``(B, 3, S, S)``, on the network's
        device."""
        device = next(self.parameters()).device
        if source_image.ndim == 3:
            source_image = source_image[None]
        if p_s.ndim == 3:
            p_s = p_s[None]
        b = p_t.shape[0]
        out = []
        for i in range(0, b, batch_size):
            j = min(b, i + batch_size)
            src = source_image[i:j] if source_image.shape[0] == b else \
                source_image.expand(j - i, -1, -1, -1)
            ps = p_s[i:j] if p_s.shape[0] == b else p_s.expand(j - i, -1, -1, -1)
            fl = None if flow is None else flow[i:j].to(device)
            out.append(self(src.to(device), ps.to(device), p_t[i:j].to(device), fl).float()
                       .clamp(0, 1))
        return torch.cat(out, 0)


class Discriminator(nn.Module):
    """Conditional patch discriminator on the channel concatenation ``[p_t, image]``:
    ``(B, C_p, S, S), (B, 3, S, S) -> (B, 1, S / 2^layers, S / 2^layers)`` scores (real high)."""

    def __init__(self, config: DiscriminatorConfig | None = None, prior_channels: int = 4):
        super().__init__()
        self.config = config or DiscriminatorConfig()
        layers: list[nn.Module] = []
        c_in = prior_channels + 3
        for i in range(self.config.layers):
            c_out = self.config.channels * min(2 ** i, 8)
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), _act()]
            c_in = c_out
        layers.append(nn.Conv2d(c_in, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, prior: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([prior, image], 1))


__all__ = [
    "Decoder",
    "DenseBlock",
    "Discriminator",
    "Encoder",
    "Generator",
    "ImageEncoder",
    "PriorEncoder",
    "level_channels",
]
