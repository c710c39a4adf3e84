"""What every photo renderer shares: the photo as a tensor, batches of target frames rendered
on worker threads, and frames handed out as uint8 arrays with only the changed box converted.

A renderer subclasses :class:`BoxRenderer` and implements ``_render_box(target)``: the pixel box
that changes over a batch of target frames and the photo's content there, rendered. Everything
outside the box is the photo itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Literal, Protocol

import numpy as np
import torch

from faceanime.coefficients import Coefficients
from faceanime.errors import InputError
from faceanime.morphable.brows import Brows, brow_rig
from faceanime.morphable.eyelid import Eyelids, eyelid_rig
from faceanime.morphable.jaw import Jaw, build_jaw
from faceanime.morphable.lips import Lips, lip_rig, open_share, opening_profile, photo_lips
from faceanime.morphable.model import FaceModel
from faceanime.morphable.mouth import MouthCap, add_mouth_cap, flatten_cap
from faceanime.parallel import default_batch, default_workers, ordered_map
from faceanime.reconstruction import face_vertices, project_vertices
from faceanime.render.lip_edge import LipEdge, photo_lip_edge

Box = tuple[int, int, int, int]
"""A pixel box ``(x0, y0, x1, y1)``, end-exclusive."""


class BatchSettings(Protocol):
    batch_size: int
    workers: int


def image_tensor(image, device: torch.device | str | None = None) -> torch.Tensor:
    """An ``(H, W, 3)`` uint8 array or ``(3, H, W)`` float tensor as ``(3, H, W)`` float in
    [0, 1]."""
    t = image if isinstance(image, torch.Tensor) else torch.from_numpy(np.array(image))
    if t.ndim == 3 and t.shape[-1] == 3 and t.dtype == torch.uint8:
        t = t.permute(2, 0, 1).float() / 255.0
    if t.ndim != 3 or t.shape[0] != 3:
        raise InputError(f"expected an (H, W, 3) uint8 image or a (3, H, W) tensor, "
                         f"got {tuple(t.shape)}")
    return t.to(device) if device is not None else t


def frames_tensor(frames, device: torch.device | str | None = None) -> torch.Tensor:
    """``(T, H, W, 3)`` uint8 frames (an array, a tensor or a sequence of arrays) ->
    ``(T, 3, H, W)`` float32 in [0, 1] on ``device``."""
    if isinstance(frames, torch.Tensor):
        tensor = frames.to(device)
    else:
        array = frames if isinstance(frames, np.ndarray) else np.stack(list(frames))
        # A decoded frame may be read-only: torch warns on wrapping one (and it would be
        # shared).
        array = np.ascontiguousarray(array) if array.flags.writeable else np.array(array)
        tensor = torch.from_numpy(array).to(device)
    # Converted and scaled in the decoder's (channels-last) order, then viewed channels-first:
    # the same values and strides as converting the permuted view, in half the time.
    return tensor.to(torch.float32, copy=True).div_(255).permute(0, 3, 1, 2)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``(T, 3, H, W)`` floats in [0, 1] -> ``(T, H, W, 3)`` uint8 array (rounded), contiguous.

    One float copy, rounded and clamped in place, then the channels moved last in bytes: half
    the time of a copy per step, and the frames it is pasted into read it row by row."""
    pixels = images.mul(255).round_().clamp_(0, 255).to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def check_source_size(source: Coefficients, image: torch.Tensor) -> None:
    """The coefficients were fitted on an image of the photo's size, or :class:`InputError`."""
    h, w = image.shape[-2:]
    if source.image_size is not None and tuple(source.image_size.tolist()) != (h, w):
        raise InputError(f"the source coefficients were fitted on a {source.image_size[1]}x"
                         f"{source.image_size[0]} image, but the photo is {w}x{h}: fit "
                         "this photo")


def clip_box(low: torch.Tensor, high: torch.Tensor, size: tuple[int, int], pad: int = 2) -> Box:
    """The integer box holding the points between ``low`` and ``high`` ``(2,)`` (x, y), padded
    by ``pad`` pixels and clipped to an image of ``size = (H, W)``; never empty."""
    h, w = size
    lo = (low - pad).floor().long().tolist()
    hi = (high + pad).ceil().long().tolist()
    x0, y0 = min(max(lo[0], 0), w - 1), min(max(lo[1], 0), h - 1)
    x1, y1 = max(min(hi[0] + 1, w), x0 + 1), max(min(hi[1] + 1, h), y0 + 1)
    return x0, y0, x1, y1


class BoxRenderer:
    """Batching and frame output shared by the photo renderers.

    Subclasses set ``self.image`` (``(3, H, W)`` float photo), ``self.config`` (with
    ``batch_size`` and ``workers``), the mesh they pose (``mesh``, ``jaw``, ``eyelids``,
    ``lips``, ``brows``), and implement :meth:`_render_box`.
    """

    image: torch.Tensor
    config: BatchSettings
    mesh: FaceModel
    jaw: Jaw
    eyelids: Eyelids | None
    lips: Lips | None
    brows: Brows | None
    cap: MouthCap | None
    lip_edge: LipEdge | None = None

    def _set_up(self, model: FaceModel, source_image, source: Coefficients,
                mouth_interior: bool, own_lips: bool = False) -> None:
        """What every photo renderer starts with: the photo as ``(3, H, W)`` floats (refused
        when the coefficients were fitted on another size), and the mesh it poses — the model
        with its mouth hole closed by a recessed cap when asked (a model without a hole needs
        none), the jaw rig, the eyelid rig (None without mapped eye landmarks) and the lip rig
        (None without mapped lips). With ``own_lips`` (and a cap), the lips close along the
        photo's own opening (:func:`~faceanime.morphable.lips.photo_lips`) and an open mouth's
        lower lip (a wide-open one's upper lip too) is moved to its edge found by colour
        (:mod:`~faceanime.render.lip_edge`):
        for renderers whose targets move the photo's mouth from where it is."""
        self.image = image_tensor(source_image, model.device).to(model.dtype)
        check_source_size(source, self.image)
        self.model = model
        jaw = build_jaw(model)
        self.mesh, self.jaw, self.cap = model, jaw, None
        if mouth_interior:
            try:
                self.cap = add_mouth_cap(model, jaw)
                self.mesh, self.jaw = self.cap.model, self.cap.jaw
            except InputError:
                pass  # no hole at the mouth: nothing to close
        self.eyelids = eyelid_rig(self.mesh)
        self.lips = lip_rig(self.mesh, self.jaw)
        self.brows = brow_rig(self.mesh)
        self.lip_edge = None
        if own_lips and self.cap is not None and self.lips is not None:
            photo = source.frames(slice(0, 1))
            posed = self._posed(photo)[0]
            profile = opening_profile(self.mesh, self.jaw, self.cap.loop, posed)
            self.lips = photo_lips(self.mesh, self.jaw, self.cap.loop, posed,
                                   float(source.lips[0]), self.lips, profile)
            self.lip_edge = self._photo_lip_edge(photo, posed, profile)

    def _photo_lip_edge(self, photo: Coefficients, posed: torch.Tensor | None = None,
                        profile: tuple[torch.Tensor, torch.Tensor, float] | None = None
                        ) -> LipEdge | None:
        """The photo's lips moved to their edges found by colour (:func:`~faceanime.render.
        lip_edge.photo_lip_edge`; None without a cap, a lip rig or the photo's landmarks).

        Args:
            photo: the photo's coefficients (one frame).
            posed: ``(N, 3)`` its posed mesh, and ``profile`` its mouth's opening profile
                (:func:`~faceanime.morphable.lips.opening_profile`); both computed when None.
        """
        if self.cap is None or self.lips is None or photo.landmarks is None:
            return None
        if posed is None:
            posed = self._posed(photo, lip_edge=None)[0]
        if profile is None:
            profile = opening_profile(self.mesh, self.jaw, self.cap.loop, posed)
        return photo_lip_edge(self.image, self.mesh, self.jaw, self.cap.loop, posed,
                              project_vertices(photo, posed[None])[0].to(self.image.dtype),
                              photo.landmarks[0].to(self.image), photo.rotation[0],
                              float(photo.scale[0]), open_share(profile[2]))

    def _posed(self, coeffs: Coefficients, lip_edge: LipEdge | Literal[True] | None = True
               ) -> torch.Tensor:
        """``(T, N, 3)`` the renderer's mesh posed at ``T`` frames' coefficients, in model
        space, its lips moved by the renderer's :attr:`lip_edge` (``lip_edge``: by that one
        instead; None: by none). Lid closures are ignored by a mesh without an eyelid rig."""
        if self.eyelids is None and bool((coeffs.eyes != 0).any()):
            coeffs = replace(coeffs, eyes=torch.zeros_like(coeffs.eyes))
        if self.lips is None and bool((coeffs.lips != 0).any() or (coeffs.pucker != 0).any()):
            coeffs = replace(coeffs, lips=torch.zeros_like(coeffs.lips),
                             pucker=torch.zeros_like(coeffs.pucker))
        if self.brows is None and bool((coeffs.brows != 0).any()):
            coeffs = replace(coeffs, brows=torch.zeros_like(coeffs.brows))
        verts = face_vertices(self.mesh, coeffs, jaw=self.jaw, eyelids=self.eyelids,
                              lips=self.lips, brows=self.brows)
        edge = self.lip_edge if lip_edge is True else lip_edge
        return edge.apply(verts) if edge is not None else verts

    def _screen(self, coeffs: Coefficients, lip_edge: LipEdge | Literal[True] | None = True
                ) -> torch.Tensor:
        """``(T, N, 3)`` the renderer's mesh posed at ``T`` frames' coefficients
        (:meth:`_posed`, with ``lip_edge``), projected (pixels and depth), the mouth cap's fan
        centred on its lips in the image (:func:`~faceanime.morphable.mouth.flatten_cap`)."""
        screen = project_vertices(coeffs, self._posed(coeffs, lip_edge)).to(self.image.dtype)
        return flatten_cap(screen, self.cap) if self.cap is not None else screen

    @property
    def image_size(self) -> tuple[int, int]:
        h, w = self.image.shape[-2:]
        return int(h), int(w)

    def _render_box(self, target: Coefficients) -> tuple[Box, torch.Tensor]:
        """The box that changes over ``T`` target frames and the frames' pixels there:
        ``(x0, y0, x1, y1)`` and ``(T, 3, y1 - y0, x1 - x0)`` in [0, 1]."""
        raise NotImplementedError

    def render(self, target: Coefficients) -> torch.Tensor:
        """Full frames at ``T`` target coefficients: ``(T, 3, H, W)`` in [0, 1]."""
        (x0, y0, x1, y1), inside = self._render_box(target)
        frames = self.image.expand(target.n_frames, -1, -1, -1).clone()
        frames[:, :, y0:y1, x0:x1] = inside
        return frames

    def _batches(self, target: Coefficients) -> list[Coefficients]:
        step = self.config.batch_size or default_batch(self.image.device,
                                                       self.image.shape[-2] * self.image.shape[-1])
        return [target.frames(slice(start, start + step))
                for start in range(0, target.n_frames, step)]

    def _in_order(self, function, target: Coefficients) -> Iterator:
        """``function`` of each batch, ``config.workers`` batches at once, in order; the torch
        threads are shared out among the workers."""
        workers = self.config.workers or default_workers(self.image.device)
        return ordered_map(function, self._batches(target), workers,
                           torch_threads=torch.get_num_threads() // max(1, workers))

    def iter_render(self, target: Coefficients) -> Iterator[torch.Tensor]:
        """:meth:`render` in batches of ``config.batch_size`` frames, for long sequences
        (``config.workers`` batches at once)."""
        yield from self._in_order(self.render, target)

    def iter_frames(self, target: Coefficients) -> Iterator[np.ndarray]:
        """:meth:`iter_render` as ``(H, W, 3)`` uint8 frames, one at a time (for
        :func:`faceanime.io.write_video`).

        The same pixels as :meth:`render`, but only the changed box goes through float and back:
        the rest of each frame is a copy of the photo's bytes (on a 1145² photo the full-frame
        float round trip cost more than the render). Batches render on ``config.workers``
        threads while the caller encodes the frames already done."""
        photo = to_uint8(self.image[None])[0]

        def boxes(batch: Coefficients) -> tuple[Box, np.ndarray]:
            box, inside = self._render_box(batch)
            return box, to_uint8(inside)

        for (x0, y0, x1, y1), batch in self._in_order(boxes, target):
            for inside in batch:
                frame = photo.copy()
                frame[y0:y1, x0:x1] = inside
                yield frame
