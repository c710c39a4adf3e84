"""The coefficients of a fitted face: the currency between the pipeline's stages.

One identity (shape) vector per person, and per frame an expression vector, a jaw angle and a pose.
Saved as ``.npz`` (the format of ``faceanime fit``; docs/fitting.md documents it). Arrays are
tensors inside the pipeline and numpy only in :meth:`Coefficients.save` / :meth:`Coefficients.load`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

from faceanime.errors import InputError
from faceanime.io.npz import load_npz, save_npz

FORMAT_VERSION = 1


@dataclass
class Coefficients:
    """Fitted coefficients of one face over ``T`` frames (``T`` = 1 for a photo).

    Attributes:
        model: name of the morphable model the coefficients belong to.
        shape: ``(Ks,)`` identity coefficients (standard deviations), shared by all frames.
        expression: ``(T, Ke)`` expression coefficients.
        jaw: ``(T,)`` jaw opening angle in radians (0 = closed as in the model's mean).
        rotation: ``(T, 3, 3)`` model-to-camera rotation.
        translation: ``(T, 3)``: pixels (x, y; z unused) for the orthographic camera, model units
            for the perspective one.
        scale: ``(T,)`` pixels per model unit (orthographic), or the focal length in pixels
            (perspective).
        camera: ``"orthographic"`` or ``"perspective"``.
        image_size: ``(2,)`` int ``[height, width]`` of the frames the pose refers to.
        landmarks: ``(T, 68, 2)`` detected landmarks in pixels (NaN where not detected), or None.
        fitted_landmarks: ``(T, 68, 2)`` the model's projected landmarks, NaN where a point has no
            model counterpart, or None.
        valid: ``(T,)`` bool, False for frames with no detected face (their coefficients are
            interpolated from neighbours, never zero).
        fps: frame rate of the source video (0 for a photo).
        eyes: ``(T, 2)`` eyelid closure of each eye (iBUG's 37-42 eye first) in [-0.5, 1]:
            0 as in the model, 1 closed, negative opened wider
            (:mod:`faceanime.morphable.eyelid`); zeros when not given (files written before
            the eyelid rig).
        gaze: ``(T, 2, 2)`` where each eye looks: its iris centre ``(u, v)`` in the eye's own
            frame, in eye widths (:mod:`faceanime.landmarks.gaze`), or None (not measured: the
            irises stay where the photo has them).
        lips: ``(T,)`` lip closure (:mod:`faceanime.morphable.lips`): 0 as in the model,
            positive brings the lips together (the chin stays); zeros when not given (files
            written before the lip rig). Fitted from the inner lips' gaps after the jaw and
            the emotions (:func:`~faceanime.fitting.lips.fit_lip_closure`); motion transfer
            also closes an open-mouthed photo's lips with it
            (:attr:`~faceanime.motion.MotionConfig.close_mouth`).
        pucker: ``(T,)`` how much narrower the mouth is than the model's
            (:mod:`faceanime.morphable.lips`): positive rounds the lips ("o"), negative widens
            the mouth; fitted from the mouth's landmark widths; zeros when not given (files
            written before the pucker).
        brows: ``(T, 6)`` how far each brow's inner and outer half is raised (iBUG's 18-22
            brow first, inner half first), then how far each brow's inner half is drawn in
            (:data:`faceanime.morphable.brows.PARTS`): 0 as in the model, negative lowered (or
            moved out); fitted from the brows' landmarks; zeros when not given (files written
            before the brow rig), the last two zeros when given ``(T, 4)`` (raises alone).
        mouth: ``(T, 4, h, w)`` uint8 RGBA, the mouth interior each frame shows, in the
            canonical layout of :mod:`faceanime.render.mouth_interior` (captured from a
            driving video; alpha: how open that frame's mouth was), or None.
    """

    model: str
    shape: torch.Tensor
    expression: torch.Tensor
    jaw: torch.Tensor
    rotation: torch.Tensor
    translation: torch.Tensor
    scale: torch.Tensor
    camera: str = "orthographic"
    image_size: torch.Tensor | None = None
    landmarks: torch.Tensor | None = None
    fitted_landmarks: torch.Tensor | None = None
    valid: torch.Tensor | None = None
    fps: float = 0.0
    eyes: torch.Tensor | None = None
    mouth: torch.Tensor | None = None
    gaze: torch.Tensor | None = None
    lips: torch.Tensor | None = None
    pucker: torch.Tensor | None = None
    brows: torch.Tensor | None = None

    def __post_init__(self) -> None:
        t = self.expression.shape[0]
        if self.eyes is None:
            self.eyes = self.expression.new_zeros(t, 2)
        elif tuple(self.eyes.shape) != (t, 2):
            raise InputError(f"coefficients: eyes must be ({t}, 2), got {tuple(self.eyes.shape)}")
        if self.lips is None:
            self.lips = self.expression.new_zeros(t)
        if self.pucker is None:
            self.pucker = self.expression.new_zeros(t)
        if self.brows is None:
            self.brows = self.expression.new_zeros(t, 6)
        self.brows = _brow_parts(self.brows)
        if self.gaze is not None and tuple(self.gaze.shape) != (t, 2, 2):
            raise InputError(f"coefficients: gaze must be ({t}, 2, 2), "
                             f"got {tuple(self.gaze.shape)}")
        if self.mouth is not None and (self.mouth.ndim != 4 or self.mouth.shape[:2] != (t, 4)
                                       or self.mouth.dtype != torch.uint8):
            raise InputError(f"coefficients: mouth must be ({t}, 4, h, w) uint8, got "
                             f"{tuple(self.mouth.shape)} {self.mouth.dtype}")
        expect = {"jaw": (t,), "lips": (t,), "pucker": (t,), "brows": (t, 6),
                  "rotation": (t, 3, 3), "translation": (t, 3), "scale": (t,)}
        for name, shape in expect.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise InputError(f"coefficients: {name} must be {shape}, got {got}")
        if self.shape.ndim != 1:
            raise InputError(f"coefficients: shape must be (Ks,), got {tuple(self.shape.shape)}")
        for name in ("landmarks", "fitted_landmarks"):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != (t, 68, 2):
                raise InputError(f"coefficients: {name} must be ({t}, 68, 2), "
                                 f"got {tuple(value.shape)}")

    @property
    def n_frames(self) -> int:
        return self.expression.shape[0]

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> Coefficients:
        changes = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                cast = dtype if (dtype is not None and value.is_floating_point()) else None
                changes[f.name] = value.to(device=device, dtype=cast)
        return replace(self, **changes)

    def frames(self, index: slice | torch.Tensor | list[int]) -> Coefficients:
        """The coefficients of a subset of frames (the identity is shared)."""
        changes = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor) and f.name not in ("shape", "image_size"):
                changes[f.name] = value[index]
        return replace(self, **changes)

    # --- the per-frame vector view used by the dynamics model -------------------------------
    def to_tensor(self) -> torch.Tensor:
        """``(T, Ke + 1 + 3 + 3 + 1)`` per-frame vector: expression, jaw, rotation vector,
        translation, log scale. The identity is carried separately (it is not animated)."""
        from faceanime.geometry.rotation import so3_log

        return torch.cat([self.expression, self.jaw[:, None], so3_log(self.rotation),
                          self.translation, self.scale.log()[:, None]], -1)

    def with_tensor(self, vector: torch.Tensor) -> Coefficients:
        """Inverse of :meth:`to_tensor`: new per-frame values from a ``(T', D)`` vector, keeping
        the identity, model, camera and image size (landmarks are dropped). The eyelid and lip
        closures, the pucker, the brows, gaze and mouth interiors are not in the vector: kept
        per frame when ``T' = T``; else the last frame's closures, pucker, brows and gaze are
        held and the interiors dropped."""
        from faceanime.geometry.rotation import so3_exp

        ke = self.expression.shape[1]
        if vector.ndim != 2 or vector.shape[1] != ke + 8:
            raise InputError(f"coefficient vector must be (T, {ke + 8}), got {tuple(vector.shape)}")
        return Coefficients(
            model=self.model, shape=self.shape, expression=vector[:, :ke], jaw=vector[:, ke],
            rotation=so3_exp(vector[:, ke + 1:ke + 4]), translation=vector[:, ke + 4:ke + 7],
            scale=vector[:, ke + 7].exp(), camera=self.camera, image_size=self.image_size,
            fps=self.fps, eyes=(self.eyes.clone() if vector.shape[0] == self.n_frames
                                else self.eyes[-1:].expand(vector.shape[0], -1).clone()),
            lips=(self.lips.clone() if vector.shape[0] == self.n_frames
                  else self.lips[-1:].expand(vector.shape[0]).clone()),
            pucker=(self.pucker.clone() if vector.shape[0] == self.n_frames
                    else self.pucker[-1:].expand(vector.shape[0]).clone()),
            brows=(self.brows.clone() if vector.shape[0] == self.n_frames
                   else self.brows[-1:].expand(vector.shape[0], -1).clone()),
            mouth=self.mouth if vector.shape[0] == self.n_frames else None,
            gaze=(None if self.gaze is None else self.gaze.clone()
                  if vector.shape[0] == self.n_frames
                  else self.gaze[-1:].expand(vector.shape[0], -1, -1).clone()))

    # --- files -------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the ``.npz`` coefficient file atomically."""
        arrays: dict[str, np.ndarray] = {"format_version": np.array(FORMAT_VERSION),
                                         "model": np.array(self.model),
                                         "camera": np.array(self.camera),
                                         "fps": np.array(self.fps, dtype=np.float64)}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                arrays[f.name] = value.detach().cpu().numpy()
        return save_npz(path, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Coefficients:
        """Read a coefficient ``.npz``; a missing key or wrong shape names the file and key."""
        path = Path(path)
        return cls.from_arrays(load_npz(path, "coefficient file"), str(path))

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], source: str) -> Coefficients:
        """Coefficients from the arrays of a coefficient ``.npz`` (a file's, or a data shard
        member's); ``source`` is where they came from, for messages.

        Raises:
            InputError: a key is missing or an array has the wrong shape.
        """
        path = source
        required = ("shape", "expression", "rotation", "translation", "scale")
        missing = [k for k in required if k not in arrays]
        if missing:
            raise InputError(f"{path}: missing {', '.join(missing)}; expected a file written by "
                             "'faceanime fit'")
        t = arrays["expression"].shape[0] if arrays["expression"].ndim == 2 else -1

        def tensor(name: str, dtype=torch.float32) -> torch.Tensor | None:
            return torch.as_tensor(arrays[name], dtype=dtype) if name in arrays else None

        try:
            return cls(
                model=str(arrays.get("model", np.array("unknown"))),
                shape=tensor("shape"), expression=tensor("expression"),
                jaw=tensor("jaw") if "jaw" in arrays else torch.zeros(max(t, 0)),
                rotation=tensor("rotation"), translation=tensor("translation"),
                scale=tensor("scale"), camera=str(arrays.get("camera", np.array("orthographic"))),
                image_size=tensor("image_size", torch.long), landmarks=tensor("landmarks"),
                fitted_landmarks=tensor("fitted_landmarks"),
                valid=tensor("valid", torch.bool), fps=float(arrays.get("fps", 0.0)),
                eyes=tensor("eyes"), mouth=tensor("mouth", torch.uint8), gaze=tensor("gaze"),
                lips=tensor("lips"), pucker=tensor("pucker"), brows=_brow_parts(tensor("brows")))
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from exc


def _brow_parts(brows: torch.Tensor | None) -> torch.Tensor | None:
    """Brows as ``(T, 6)``: files written with one raise per brow (``(T, 2)``, before each
    brow's halves moved apart) give both halves that raise, the same geometry; raises alone
    (``(T, 4)``, before the brows were drawn in) are not drawn in."""
    if brows is not None and brows.ndim == 2 and brows.shape[1] == 2:
        brows = brows.repeat_interleave(2, dim=1)
    if brows is not None and brows.ndim == 2 and brows.shape[1] == 4:
        brows = torch.cat([brows, brows.new_zeros(brows.shape[0], 2)], 1)
    return brows


def check_same_fit(source: Coefficients, other: Coefficients, role: str = "driver") -> None:
    """Refuse to combine two fits made with different morphable models or cameras (``role``
    names the second in the message: driver, target, ...).

    Raises:
        InputError: the models or the cameras differ.
    """
    if source.model != other.model:
        raise InputError(f"the source was fitted with model {source.model!r} and the {role} with "
                         f"{other.model!r}: fit both with the same model")
    if source.camera != other.camera:
        raise InputError(f"the source uses the {source.camera} camera and the {role} the "
                         f"{other.camera} one: fit both with the same camera")
