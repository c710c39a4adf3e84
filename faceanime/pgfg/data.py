"""Training pairs for the generator from a ``faceanime prepare`` dataset, and the sparse priors
in crop coordinates.

A pair is two frames of one video: the source crop ``I_s`` and the target crop ``I_t``, with the
priors ``p_s`` (the source's sampled vertex colours drawn where the source's own vertices lie)
and ``p_t`` (the same colours where the target's vertices lie). Everything lives in the aligned
crops' pixel frame: the coefficients are mapped through each frame's crop affine
(:func:`crop_coefficients`), so one projection formula serves training, validation, the classic
baseline and inference.

What is cached: per frame, the crop-space positions of the sparse vertex subset, which of them
the frame shows, and their colours in the frame (:class:`PriorBank`); a pair's priors are then
two point splats, made on the fly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from faceanime.coefficients import Coefficients
from faceanime.dataset.manifest import coefficient_path, crop_paths
from faceanime.dynamics.data import read_manifest
from faceanime.errors import InputError
from faceanime.io import iter_video_frames, load_npz
from faceanime.morphable.jaw import build_jaw
from faceanime.morphable.model import FaceModel
from faceanime.pgfg.flow import face_flow, flip_flow
from faceanime.reconstruction import face_vertices, project_vertices
from faceanime.render.points import splat_points
from faceanime.render.texture import sample_image, sparse_vertices
from faceanime.render.visibility import vertex_visibility


def crop_coefficients(coeffs: Coefficients, affine: torch.Tensor, crop_size: int
                      ) -> Coefficients:
    """Orthographic coefficients re-expressed in aligned-crop pixels.

    A similarity ``x_c = k R(a) x + b`` of the image plane composes with the scaled orthographic
    camera: the in-plane rotation joins the model rotation (about the viewing axis), ``k``
    multiplies the scale and the translation is mapped like a point. Projecting the result gives
    exactly the affine applied to the frame projection (depth is scaled by ``k`` too).

    Args:
        coeffs: ``T`` frames, orthographic camera.
        affine: ``(T, 2, 3)`` or ``(2, 3)`` similarity frame -> crop pixels.
        crop_size: the crop side (the new ``image_size``).

    Returns:
        Coefficients with landmarks (detected and fitted) mapped into the crop as well.
    """
    if coeffs.camera != "orthographic":
        raise InputError(f"crop coefficients need the orthographic camera, got {coeffs.camera!r}:"
                         " fit with the default camera")
    t = coeffs.n_frames
    a = affine.to(coeffs.rotation.dtype).reshape(-1, 2, 3).expand(t, -1, -1)
    linear, shift = a[:, :, :2], a[:, :, 2]
    k = torch.sqrt(torch.linalg.det(linear).abs())
    c, s = linear[:, 0, 0] / k, linear[:, 1, 0] / k
    # Image y points down, model y up: the image-plane rotation by +a is a model rotation by -a.
    rz = torch.zeros(t, 3, 3, dtype=a.dtype)
    rz[:, 0, 0], rz[:, 0, 1], rz[:, 1, 0], rz[:, 1, 1], rz[:, 2, 2] = c, s, -s, c, 1.0
    translation = coeffs.translation.clone()
    translation[:, :2] = (linear @ coeffs.translation[:, :2, None])[..., 0] + shift

    def points(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else x @ linear.transpose(1, 2) + shift[:, None]

    return replace(coeffs, rotation=rz @ coeffs.rotation, translation=translation,
                   scale=coeffs.scale * k, image_size=torch.tensor([crop_size, crop_size]),
                   landmarks=points(coeffs.landmarks),
                   fitted_landmarks=points(coeffs.fitted_landmarks))


def screen_vertices(model: FaceModel, coeffs: Coefficients, chunk: int = 256) -> torch.Tensor:
    """``(T, N, 3)`` projected vertices (pixel u, v, depth) of every frame, jaw opened."""
    jaw = build_jaw(model)
    out = [project_vertices(c, face_vertices(model, c, jaw=jaw))
           for c in (coeffs.frames(slice(i, i + chunk)) for i in range(0, coeffs.n_frames, chunk))]
    return torch.cat(out, 0).float()


@dataclass
class PriorBank:
    """Per-frame pieces of the sparse priors of one video (or photo), in crop pixels.

    Attributes:
        screen: ``(T, M, 3)`` the sparse vertices' positions and depths.
        visible: ``(T, M)`` which of them the frame shows.
        colors: ``(T, M, 3)`` their colours sampled in the frame, in [0, 1].
    """

    screen: torch.Tensor
    visible: torch.Tensor
    colors: torch.Tensor

    @classmethod
    def build(cls, model: FaceModel, screen: torch.Tensor, images: torch.Tensor | None,
              stride: int, chunk: int = 64) -> PriorBank:
        """From ``(T, N, 3)`` vertices and ``(T, 3, S, S)`` images (uint8 or float in [0, 1];
        None: colours left zero, for targets only) of size S."""
        keep = sparse_vertices(screen.shape[1], stride)
        size = None if images is None else tuple(images.shape[-2:])
        vis, col = [], []
        for i in range(0, screen.shape[0], chunk):
            sc = screen[i:i + chunk]
            if images is None:
                vis.append(torch.ones(sc.shape[0], len(keep), dtype=torch.bool))
                col.append(torch.zeros(sc.shape[0], len(keep), 3))
                continue
            img = images[i:i + chunk]
            img = img.float() / 255.0 if img.dtype == torch.uint8 else img.float()
            vis.append(vertex_visibility(sc, model.triangles, size)[:, keep])
            col.append(sample_image(img, sc[:, keep]))
        return cls(screen[:, keep].contiguous(), torch.cat(vis), torch.cat(col))


def render_priors(source_screen: torch.Tensor, target_screen: torch.Tensor,
                  colors: torch.Tensor, visible: torch.Tensor, size: int, radius: float = 1.0,
                  mask_channel: bool = True, flow_channel: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """``p_s`` and ``p_t`` of a batch: the source's visible colours splatted at the source's and
    at the target's vertex positions.

    Args:
        source_screen, target_screen: ``(B, M, 3)``.
        colors: ``(B, M, 3)`` source colours. visible: ``(B, M)`` drawn points.
        size: crop side S. radius: point radius in pixels.
        mask_channel: append the coverage as a channel.
        flow_channel: append two channels holding, at each drawn point, the offset from where
            the point is drawn to where the same vertex lies in the source, in ``grid_sample``
            units (2 = the crop's side); zero in ``p_s`` (every point is at its source).

    Returns:
        Two ``(B, C_p, S, S)`` priors, ``C_p = 3 + mask_channel + 2 flow_channel``.
    """
    b = source_screen.shape[0]
    values = torch.cat([colors, colors], 0)
    if flow_channel:
        offset = (source_screen[..., :2] - target_screen[..., :2]) * (2.0 / (size - 1))
        values = torch.cat([values, torch.cat([torch.zeros_like(offset), offset], 0)], -1)
    both = torch.cat([source_screen, target_screen], 0)
    img, mask, _ = splat_points(both, values, (size, size), radius,
                                mask=torch.cat([visible, visible], 0))
    parts = [img[:, :3]]
    if mask_channel:
        parts.append(mask.to(img.dtype))
    if flow_channel:
        parts.append(img[:, 3:5])
    prior = torch.cat(parts, 1)
    return prior[:b], prior[b:]


def flip_priors(prior: torch.Tensor) -> torch.Tensor:
    """Mirror ``(B, C_p, S, S)`` priors left-right; offsets' x (channel 4 of 6) changes sign."""
    out = prior.flip(-1)
    if out.shape[1] == 6:
        out = torch.cat([out[:, :4], -out[:, 4:5], out[:, 5:]], 1)
    return out


@dataclass
class VideoPairs:
    """One video of the dataset, ready for pairs.

    Attributes:
        name: the video's stem.
        crops: ``(T, 3, S, S)`` uint8 crops.
        coeffs: crop-space coefficients (:func:`crop_coefficients`).
        bank: its :class:`PriorBank`.
        landmarks: ``(T, 68, 2)`` detected landmarks in crop pixels.
        usable: ``(T,)`` frames with a face, a crop placed by their own landmarks and finite
            landmarks (the only frames drawn).
        screen: ``(T, N, 3)`` every vertex in crop pixels (the dense face flow's input), or
            None.
    """

    name: str
    crops: torch.Tensor
    coeffs: Coefficients
    bank: PriorBank
    landmarks: torch.Tensor
    usable: torch.Tensor
    screen: torch.Tensor | None = None

    @property
    def frames(self) -> torch.Tensor:
        return self.usable.nonzero()[:, 0]


def read_crops(path: Path, frames: int, size: int) -> torch.Tensor:
    """``(T, 3, S, S)`` uint8 crops of a dataset video."""
    out = np.stack(list(iter_video_frames(path)))
    if out.shape != (frames, size, size, 3):
        raise InputError(f"{path}: {out.shape[0]} frames of {out.shape[2]}x{out.shape[1]}, the "
                         f"dataset says {frames} of {size}x{size}; re-run 'faceanime prepare'")
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def load_video_pairs(root: str | os.PathLike, stem: str, model: FaceModel, stride: int
                     ) -> VideoPairs:
    """Read one prepared video (coefficients, crops, affines) and build its prior bank.

    Raises:
        InputError: the video has no crops, or its files disagree.
    """
    mp4, meta = crop_paths(root, stem)
    if not mp4.is_file() or not meta.is_file():
        raise InputError(f"{mp4}: missing; the generator trains on crops: run 'faceanime "
                         "prepare' without --no-crops")
    coeffs = Coefficients.load(coefficient_path(root, stem))
    crop, size, lms, usable = crop_frames(coeffs, load_npz(meta, "crop metadata"), str(meta))
    crops = read_crops(mp4, coeffs.n_frames, size)
    return video_pairs(stem, crops, crop, lms, usable, model, stride)


def crop_frames(coeffs: Coefficients, arrays: dict[str, np.ndarray], where: str
                ) -> tuple[Coefficients, int, torch.Tensor, torch.Tensor]:
    """A prepared video's coefficients in crop space and the frames pairs may use.

    Args:
        coeffs: the video's ``T`` frames.
        arrays: its crop metadata (``affine`` ``(T, 2, 3)``, ``crop_size``, ``valid`` ``(T,)``).
        where: the metadata's file (or shard member), for messages.

    Returns:
        Crop-space coefficients, the crop side ``S``, ``(T, 68, 2)`` landmarks in crop pixels
        and ``(T,)`` usable frames (a face, a crop placed by their own landmarks, finite
        landmarks).

    Raises:
        InputError: the metadata disagrees with the coefficients.
    """
    affine = torch.from_numpy(np.asarray(arrays["affine"], dtype=np.float32))
    size = int(arrays["crop_size"])
    if affine.shape[0] != coeffs.n_frames:
        raise InputError(f"{where}: {affine.shape[0]} crop transforms for {coeffs.n_frames} "
                         "frames of coefficients; re-run 'faceanime prepare'")
    crop = crop_coefficients(coeffs, affine, size)
    lms = crop.landmarks if crop.landmarks is not None else \
        torch.full((coeffs.n_frames, 68, 2), float("nan"))
    usable = torch.isfinite(lms).all(-1).all(-1)
    usable &= torch.from_numpy(np.asarray(arrays["valid"], dtype=bool))
    if coeffs.valid is not None:
        usable &= coeffs.valid.bool()
    return crop, size, lms.float(), usable


def video_pairs(stem: str, crops: torch.Tensor, crop: Coefficients, landmarks: torch.Tensor,
                usable: torch.Tensor, model: FaceModel, stride: int, screen: bool = True
                ) -> VideoPairs:
    """:class:`VideoPairs` of ``F`` frames (a whole video, or the frames a stream drew) from
    their ``(F, 3, S, S)`` crops, crop-space coefficients, ``(F, 68, 2)`` landmarks and
    ``(F,)`` usable flags; ``screen`` keeps every vertex's position (the dense face flow's)."""
    vertices = screen_vertices(model, crop)
    bank = PriorBank.build(model, vertices, crops, stride)
    return VideoPairs(stem, crops, crop, bank, landmarks, usable, vertices if screen else None)


@dataclass
class PairDataset:
    """The videos of a dataset folder as generator training data."""

    root: Path
    model_name: str
    size: int
    videos: list[VideoPairs]

    def select(self, names: list[str] | tuple[str, ...]) -> list[VideoPairs]:
        by_name = {v.name: v for v in self.videos}
        return [by_name[n] for n in names]


def load_pair_dataset(root: str | os.PathLike, model: FaceModel, stride: int = 4,
                      names: list[str] | None = None, progress: bool = True) -> PairDataset:
    """Every ``ok`` video with crops of a ``faceanime prepare`` folder (or only ``names``).

    Raises:
        InputError: no crops in the dataset, too few usable frames, unknown names.
    """
    root = Path(root)
    manifest = read_manifest(root)
    size = manifest.get("crop_size")
    if not size:
        raise InputError(f"{root}: the dataset has no crops; run 'faceanime prepare' without "
                         "--no-crops (e.g. --crop-size 128)")
    ok = sorted(s for s, e in manifest["videos"].items()
                if isinstance(e, dict) and e.get("status") == "ok")
    if names is not None:
        unknown = sorted(set(names) - set(ok))
        if unknown:
            raise InputError(f"{root}: no usable video named {unknown} (have: {', '.join(ok)})")
        ok = [s for s in ok if s in names]
    if manifest.get("model") not in (None, model.name):
        raise InputError(f"{root}: fitted with model {manifest.get('model')!r}, not "
                         f"{model.name!r}: pass --model {manifest.get('model')}")
    videos = []
    for stem in tqdm(ok, desc="load videos", disable=not progress, unit="video"):
        video = load_video_pairs(root, stem, model, stride)
        if int(video.usable.sum()) >= 2:
            videos.append(video)
    if not videos:
        raise InputError(f"{root}: no video with two usable frames; nothing to train on")
    return PairDataset(root, model.name, int(size), videos)


@dataclass
class PairBatch:
    """A batch of training pairs (all ``(B, ...)``): ``source``/``target`` ``(B, 3, S, S)`` in
    [0, 1], ``p_s``/``p_t`` priors, ``landmarks`` ``(B, 68, 2)`` of the target (of the unflipped
    crop), ``flipped`` ``(B,)`` bool (mirror back before the identity network), ``flow``
    ``(B, 3, S, S)`` the exact face flow (:func:`faceanime.pgfg.flow.face_flow`) or None."""

    source: torch.Tensor
    target: torch.Tensor
    p_s: torch.Tensor
    p_t: torch.Tensor
    landmarks: torch.Tensor
    flipped: torch.Tensor
    flow: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> PairBatch:
        return PairBatch(*(getattr(self, k).to(device) for k in
                           ("source", "target", "p_s", "p_t", "landmarks", "flipped")),
                         flow=None if self.flow is None else self.flow.to(device))


def make_batch(videos: list[VideoPairs], index: list[tuple[int, int, int]], radius: float,
               mask_channel: bool, flip: torch.Tensor | None = None,
               gain: torch.Tensor | None = None, bias: torch.Tensor | None = None,
               flow_channel: bool = False, triangles: torch.Tensor | None = None) -> PairBatch:
    """Assemble pairs ``(video, source frame, target frame)`` with optional augmentation.

    ``flip`` ``(B,)`` bool mirrors a pair's images and priors together; ``gain``/``bias``
    ``(B,)`` change contrast and brightness of both images and of the prior colours alike (the
    priors are sampled from the source, so they change with it). With the model's
    ``triangles``, the batch carries the exact face flow of each pair (needs the videos'
    ``screen``).
    """
    src = torch.stack([videos[v].crops[s] for v, s, _ in index]).float() / 255.0
    tgt = torch.stack([videos[v].crops[t] for v, _, t in index]).float() / 255.0
    s_screen = torch.stack([videos[v].bank.screen[s] for v, s, _ in index])
    t_screen = torch.stack([videos[v].bank.screen[t] for v, _, t in index])
    colors = torch.stack([videos[v].bank.colors[s] for v, s, _ in index])
    visible = torch.stack([videos[v].bank.visible[s] for v, s, _ in index])
    lms = torch.stack([videos[v].landmarks[t] for v, _, t in index])
    b = len(index)
    if gain is not None and bias is not None:
        g, o = gain.view(b, 1, 1, 1), bias.view(b, 1, 1, 1)
        src, tgt = (src * g + o).clamp(0, 1), (tgt * g + o).clamp(0, 1)
        colors = (colors * gain.view(b, 1, 1) + bias.view(b, 1, 1)).clamp(0, 1)
    size = src.shape[-1]
    p_s, p_t = render_priors(s_screen, t_screen, colors, visible, size, radius, mask_channel,
                             flow_channel)
    flow = None
    if triangles is not None:
        if any(videos[v].screen is None for v, _, _ in index):
            raise InputError("the dense face flow needs every vertex's position (VideoPairs."
                             "screen)")
        flow = face_flow(torch.stack([videos[v].screen[s] for v, s, _ in index]),
                         torch.stack([videos[v].screen[t] for v, _, t in index]), triangles,
                         size)
    flipped = torch.zeros(b, dtype=torch.bool) if flip is None else flip.bool()
    if bool(flipped.any()):
        f = flipped.view(b, 1, 1, 1)
        src, tgt = torch.where(f, src.flip(-1), src), torch.where(f, tgt.flip(-1), tgt)
        p_s, p_t = torch.where(f, flip_priors(p_s), p_s), torch.where(f, flip_priors(p_t), p_t)
        if flow is not None:
            flow = torch.where(f, flip_flow(flow), flow)
    return PairBatch(src, tgt, p_s, p_t, lms, flipped, flow)


class PairSampler:
    """Random pairs: a video uniformly (short videos are not drowned by long ones), then two of
    its usable frames at most ``max_gap`` apart (0: any two)."""

    def __init__(self, videos: list[VideoPairs], max_gap: int = 0):
        if not videos:
            raise InputError("no training videos")
        self.videos = videos
        self.max_gap = max_gap
        self.frames = [v.frames for v in videos]

    def sample(self, batch: int, generator: torch.Generator) -> list[tuple[int, int, int]]:
        out = []
        vids = torch.randint(len(self.videos), (batch,), generator=generator).tolist()
        for v in vids:
            frames = self.frames[v]
            i = int(torch.randint(len(frames), (1,), generator=generator))
            if self.max_gap:
                near = frames[(frames - frames[i]).abs() <= self.max_gap]
                j = int(near[int(torch.randint(len(near), (1,), generator=generator))])
            else:
                j = int(frames[int(torch.randint(len(frames), (1,), generator=generator))])
            out.append((v, int(frames[i]), j))
        return out


def validation_pairs(videos: list[VideoPairs], count: int) -> list[tuple[int, int, int]]:
    """Self-reenactment pairs of held-out videos: source = a video's first usable frame, targets
    = ``count`` of its other usable frames, evenly spaced (split over the videos)."""
    out = []
    per = max(1, count // max(len(videos), 1))
    for v, video in enumerate(videos):
        frames = video.frames
        if len(frames) < 2:
            continue
        picks = torch.linspace(1, len(frames) - 1, min(per, len(frames) - 1)).round().long()
        out += [(v, int(frames[0]), int(frames[p])) for p in picks.unique()]
    return out


__all__ = ["PairBatch", "PairDataset", "PairSampler", "PriorBank", "VideoPairs",
           "crop_coefficients", "crop_frames", "flip_priors", "load_pair_dataset",
           "load_video_pairs", "make_batch", "render_priors", "screen_vertices",
           "validation_pairs", "video_pairs"]
