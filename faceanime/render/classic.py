"""The classic dense reenactment: the source photo's own face texture, rendered at new
coefficients and pasted back into the photo. No learned weights: it works on a fresh install,
and it is the baseline the generator must beat (GUIDE §1).

The source face's texture is taken once (:func:`~faceanime.render.texture.extract_texture`:
visible texels from the photo, hidden ones from the mirror side, the rest filled). Every target
frame then renders the textured model at its coefficients (the mouth hole closed by a recessed
cap shaded like a mouth interior, so an opening jaw shows a dark mouth rather than the photo's
closed lips) and composites it into the source photo with a feathered mask. Hair, ears and the
background stay those of the photo: only the face moves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from faceanime.coefficients import Coefficients
from faceanime.errors import InputError
from faceanime.morphable.model import FaceModel
from faceanime.render.frames import Box, BoxRenderer, clip_box
from faceanime.render.paste import paste_back
from faceanime.render.texture import Texture, TextureConfig, extract_texture, render_texture


@dataclass
class ClassicConfig:
    """Settings of the classic reenactment."""

    texture: TextureConfig = field(default_factory=TextureConfig)
    """How the source texture is taken."""
    feather: float = 6.0
    """Width in pixels over which the rendered face fades into the photo at its border."""
    mouth_interior: bool = True
    """Close the model's mouth hole with a cap shaded as a mouth interior."""
    interior_darkness: float = 0.85
    """How dark the back of the mouth is (0: lip colour, 1: black)."""
    batch_size: int = 0
    """Frames rendered at once (memory grows with it and the image size); 0: 8 on the CPU,
    32 on CUDA (:func:`faceanime.parallel.default_batch`)."""
    workers: int = 0
    """Batches rendered at once on as many threads, sharing the torch threads out (0: one per
    torch CPU thread, at most 4; 1 on CUDA). See :mod:`faceanime.parallel`."""
    backend: str = "torch"
    """Rasterizer backend (``torch`` or ``pytorch3d``)."""

    def __post_init__(self) -> None:
        if not isinstance(self.batch_size, int) or self.batch_size < 0:
            raise InputError(f"batch_size must be a whole number ≥ 0 (0: by device), got "
                             f"{self.batch_size!r}")


class ClassicRenderer(BoxRenderer):
    """Render one source photo's face at any coefficients.

    Args:
        model: the morphable model the coefficients were fitted with.
        source_image: the photo, ``(H, W, 3)`` uint8 or ``(3, H, W)`` float in [0, 1].
        source: its fitted coefficients (frame 0 is used).
        config: settings.
    """

    def __init__(self, model: FaceModel, source_image, source: Coefficients,
                 config: ClassicConfig | None = None) -> None:
        self.config = config or ClassicConfig()
        self._set_up(model, source_image, source, self.config.mouth_interior, own_lips=True)
        if model.texcoords is None:
            raise InputError(f"model {model.name} has no texture coordinates; the classic "
                             "render needs them")
        self.source = source.frames(slice(0, 1))
        screen = self._screen(self.source)
        # The texture comes from the face's own triangles: the cap overlaps the lips in UV.
        self.texture: Texture = extract_texture(
            self.image[None], screen, model.triangles, self.mesh.texcoords,
            self.mesh.symmetry, self.config.texture)
        # Kept channels last: a texel's three colours together, so a bilinear lookup touches 4
        # places in memory instead of 12 (a quarter faster on a 1024² texture, same values).
        self.texture.image = self.texture.image.contiguous(memory_format=torch.channels_last)

    def render_faces(self, target: Coefficients, box: tuple[int, int, int, int] | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """The face alone at ``T`` target frames: ``(T, 3, h, w)`` colours (zeros off the face)
        and ``(T, 1, h, w)`` coverage, over the photo's pixels ``box = (x0, y0, x1, y1)``
        (default: the whole photo)."""
        return self._faces_at(self._screen(target), box)

    def _faces_at(self, screen: torch.Tensor, box: tuple[int, int, int, int] | None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        x0, y0, x1, y1 = box or (0, 0, self.image_size[1], self.image_size[0])
        screen = screen - torch.tensor([x0, y0, 0], dtype=screen.dtype, device=screen.device)
        image, mask, fragments = render_texture(
            self.texture.image, screen, self.mesh.triangles, self.mesh.texcoords,
            (y1 - y0, x1 - x0), self.config.backend)
        if self.cap is not None:
            # Cap triangles list the centre vertex first: its barycentric weight is how deep
            # into the mouth a pixel lies.
            first_cap = int(self.cap.triangles[0])
            on_cap = fragments.face_index >= first_cap
            depth = fragments.bary[..., 0].clamp(0, 1).sqrt()
            shade = 1 - self.config.interior_darkness * torch.where(on_cap, depth, 0.0)
            image = image * shade[:, None].to(image.dtype)
        return image, mask

    def face_box(self, target: Coefficients) -> tuple[int, int, int, int]:
        """Pixel box ``(x0, y0, x1, y1)`` holding the face in every target frame, with a margin
        for the feathering, clipped to the photo."""
        return self._box_of(self._screen(target))

    def _box_of(self, screen: torch.Tensor) -> Box:
        finite = screen[..., :2][torch.isfinite(screen[..., :2]).all(-1)]
        if finite.numel() == 0:
            return 0, 0, 1, 1
        return clip_box(finite.amin(0), finite.amax(0), self.image_size)

    def _render_box(self, target: Coefficients) -> tuple[Box, torch.Tensor]:
        """The box holding the faces and the photo's pixels there with the faces composited:
        ``(x0, y0, x1, y1)`` and ``(T, 3, y1 - y0, x1 - x0)`` in [0, 1]."""
        screen = self._screen(target)
        box = self._box_of(screen)
        x0, y0, x1, y1 = box
        face, mask = self._faces_at(screen, box)
        crop = self.image[:, y0:y1, x0:x1]
        return box, paste_back(face, mask, crop, feather=self.config.feather, color_match=False)
