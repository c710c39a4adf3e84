"""The generator behind the classic renderer's interface: a source photo's face re-rendered at
any coefficients by PGFG, pasted back into the photo.

The photo's face is cropped the way ``faceanime prepare`` crops training frames (FFHQ layout,
:func:`~faceanime.render.paste.crop_affine`, at the checkpoint's resolution and crop scale), and
the priors are made in that crop exactly as in training (:mod:`faceanime.pgfg.data`). Targets
are expressed in the photo's pixel frame (as the retargeting stage gives them) and mapped into
the same crop. The generated crop goes back into the photo with a feathered mask over the crop's
area; near its border the generator changes little of the source, so the seam is soft.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch

from faceanime.coefficients import Coefficients
from faceanime.errors import InputError
from faceanime.morphable.model import FaceModel
from faceanime.parallel import default_batch
from faceanime.pgfg.data import PriorBank, crop_coefficients, render_priors, screen_vertices
from faceanime.pgfg.flow import face_flow
from faceanime.pgfg.networks import Generator
from faceanime.render.classic import ClassicConfig
from faceanime.render.frames import image_tensor
from faceanime.render.paste import crop_affine, paste_back, warp_to_crop, warp_to_frame

_CROP_POINTS = [*range(36, 48), 48, 54]


def _crop_landmarks(source: Coefficients) -> torch.Tensor:
    """``(1, 68, 2)`` landmarks placing the crop: detected ones, else the fitted projection."""
    for points in (source.landmarks, source.fitted_landmarks):
        if points is not None and bool(torch.isfinite(points[:1, _CROP_POINTS]).all()):
            return points[:1].float()
    raise InputError("the source coefficients hold no landmarks at the eyes and mouth corners "
                     "to place the face crop: fit the photo with 'faceanime fit' (it stores them)")


class GeneratorRenderer:
    """Same interface as :class:`faceanime.render.classic.ClassicRenderer`, frames made by the
    generator.

    Args:
        model: the morphable model the coefficients were fitted with.
        source_image: the photo, ``(H, W, 3)`` uint8 or ``(3, H, W)`` float in [0, 1].
        source: its fitted coefficients (frame 0; orthographic camera, with landmarks).
        checkpoint: a generator checkpoint path (file or folder) or a :class:`Generator`.
        config: ``feather`` (paste-back width) and ``batch_size`` are used.
        device: where the generator runs (default: the model's device).
    """

    def __init__(self, model: FaceModel, source_image, source: Coefficients,
                 checkpoint: str | os.PathLike | Generator, config: ClassicConfig | None = None,
                 device: str | torch.device | None = None) -> None:
        self.config = config or ClassicConfig()
        self.device = torch.device(device) if device is not None else model.device
        stride, radius, crop_scale = 4, 1.0, 1.0
        if isinstance(checkpoint, Generator):
            self.generator = checkpoint.to(self.device).eval()
        else:
            from faceanime.pgfg.checkpoint import load_checkpoint

            ckpt = load_checkpoint(checkpoint)
            self.generator = ckpt.build_generator(self.device)
            stride, radius = ckpt.train.stride, ckpt.train.radius
            crop_scale = float(ckpt.info.get("crop_scale") or 1.0)
        self.stride, self.radius = stride, radius
        self.model = model
        self.image = image_tensor(source_image, "cpu").float()
        h, w = self.image.shape[-2:]
        if source.image_size is not None and tuple(source.image_size.tolist()) != (h, w):
            raise InputError(f"the source coefficients were fitted on a {source.image_size[1]}x"
                             f"{source.image_size[0]} image, but the photo is {w}x{h}: fit "
                             "this photo")
        self.size = self.generator.config.size
        source = source.frames(slice(0, 1)).to("cpu")
        self.affine = crop_affine(_crop_landmarks(source), self.size, crop_scale)  # (1, 2, 3)
        self.crop = warp_to_crop(self.image[None], self.affine, self.size)  # (1, 3, S, S)
        self.source = crop_coefficients(source, self.affine, self.size)
        cpu_model = model.to("cpu")
        self._model = cpu_model
        self.source_screen = screen_vertices(cpu_model, self.source)         # (1, N, 3)
        self.bank = PriorBank.build(cpu_model, self.source_screen, self.crop, stride)

    @property
    def image_size(self) -> tuple[int, int]:
        h, w = self.image.shape[-2:]
        return int(h), int(w)

    def priors(self, target: Coefficients
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``p_s`` and ``p_t`` of ``T`` target frames in the crop, ``(T, C_p, S, S)`` each, and
        the exact face flow ``(T, 3, S, S)`` when the generator starts from it (else None)."""
        crop = crop_coefficients(target.to("cpu"), self.affine[0], self.size)
        full = screen_vertices(self._model, crop)
        keep = torch.arange(0, self._model.n_vertices, self.stride)
        screen = full[:, keep]
        t = screen.shape[0]
        config = self.generator.config
        p_s, p_t = render_priors(self.bank.screen.expand(t, -1, -1), screen,
                                 self.bank.colors.expand(t, -1, -1),
                                 self.bank.visible.expand(t, -1), self.size, self.radius,
                                 config.prior_mask, config.prior_flow)
        flow = None
        if config.predict == "warp" and config.flow_init == "dense":
            flow = face_flow(self.source_screen.expand(t, -1, -1), full, self._model.triangles,
                             self.size)
        return p_s, p_t, flow

    def render_crops(self, target: Coefficients) -> torch.Tensor:
        """The generated crops alone: ``(T, 3, S, S)`` in [0, 1]."""
        p_s, p_t, flow = self.priors(target)
        chunk = self.config.batch_size or default_batch(self.crop.device, self.size ** 2)
        return self.generator.generate(self.crop, p_s[:1], p_t, chunk, flow).cpu()

    def render(self, target: Coefficients) -> torch.Tensor:
        """Full photos with the generated face at ``T`` target frames: ``(T, 3, H, W)``."""
        crops = self.render_crops(target)
        t = crops.shape[0]
        affine = self.affine.expand(t, -1, -1)
        warped, coverage = warp_to_frame(crops, affine, self.image_size)
        return paste_back(warped, (coverage > 0.999).float(), self.image,
                          feather=self.config.feather, color_match=False)

    def iter_render(self, target: Coefficients) -> Iterator[torch.Tensor]:
        """:meth:`render` in batches of ``config.batch_size`` frames (0: by device)."""
        step = self.config.batch_size or default_batch(self.crop.device, self.size ** 2)
        for start in range(0, target.n_frames, step):
            yield self.render(target.frames(slice(start, start + step)))

    def iter_frames(self, target: Coefficients) -> Iterator[np.ndarray]:
        """:meth:`iter_render` as ``(H, W, 3)`` uint8 frames, one at a time."""
        for batch in self.iter_render(target):
            yield from batch.mul(255).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


__all__ = ["GeneratorRenderer"]
