"""Motion transfer between coefficient sequences: give a source face the driving video's motion.

Relative transfer (the default, as in FOMM, LivePortrait and FaceAnime's retargeting) applies
the driver's *change* from a reference frame to the source's own expression and pose, so the
source keeps its identity, head position and resting expression. Absolute transfer copies the
driver's expression, jaw and head rotation, keeping only the source's placement in its image.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace
from typing import Literal

import torch

from faceanime.coefficients import Coefficients, check_same_fit
from faceanime.errors import InputError
from faceanime.geometry.rotation import rotation_angle_between
from faceanime.morphable.brows import bound_brows
from faceanime.morphable.eyelid import CLOSURE_RANGE
from faceanime.morphable.lips import LIPS_RANGE, PUCKER_RANGE, Lips, lip_rig
from faceanime.morphable.model import FaceModel
from faceanime.reconstruction import face_vertices

# The jaw range the fitter allows (radians); transferred openings stay inside it.
JAW_RANGE = (-0.02, math.radians(35.0))


@dataclass
class MotionConfig:
    """How driving motion is applied to a source face."""

    mode: Literal["relative", "absolute"] = "relative"
    """relative: the driver's change from its reference frame is added to the source;
    absolute: the driver's expression, jaw and rotation replace the source's."""
    reference_frame: int | Literal["best"] = 0
    """The driving frame taken as the neutral reference (relative mode); ``"best"``: the frame
    whose mouth, lids, expression and head rotation are nearest the photo's
    (:func:`best_reference`, FOMM's ``--find_best_frame``). With frame 0 a photo with an open
    mouth can only open further, as the driver's first frame is its closed mouth; from the best
    frame it closes when the driver closes. The output equals the photo at that frame, not at
    frame 0."""
    pose: bool = True
    """Transfer head rotation, translation and scale; False keeps the source's pose."""
    expression: bool = True
    """Transfer expression and jaw; False keeps the source's."""
    nonnegative_expression: bool = True
    """Treat expression coefficients that are all >= 0 as blendshape weights (SFM): relative
    changes scaled to each face's room (:func:`relative_weights`), results >= 0. False, or any
    negative coefficient (a PCA basis such as BFM's), adds the changes as they are."""
    eyes: Literal["relative", "absolute", "off"] | None = None
    """Eyelids (blinks): relative (the photo's own lid closure changed as the driver's
    changes, closing at least the driver's share of its way to shut, so the driver's blinks
    shut the photo's eyes), absolute (the driver's closure), off (the photo's lids stay); None:
    as ``mode`` (off when ``expression`` is False)."""
    gaze: bool = True
    """Move the photo's irises where the driver's look (when both were measured,
    :mod:`faceanime.landmarks.gaze`), with the eyelids: the driver's change from its reference
    frame (both eyes' mean: eyes turn together, and one eye's landmarks may slip), in the
    absolute mode too (two faces' iris positions are not comparable); nothing when the lids are
    off."""
    mouth: Literal["relative", "absolute", "off"] | None = None
    """The jaw (mouth opening), in the same three ways; None: as ``mode``."""
    blink_gain: float = 1.0
    """Multiplies the transferred lid motion (the change in relative mode, the closure in
    absolute mode); results stay within the lids' range (wide open to shut)."""
    lip_gain: float = 1.0
    """Multiplies the transferred mouth motion (the jaw opening, the lips' closure and pucker:
    the change, or the value); results stay within their ranges."""
    close_mouth: bool = True
    """Relative mouth: a photo whose mouth is open wider than the driver's reference frame's
    first has it closed to that opening, then takes the driver's change: its mouth closes when
    the driver's does and opens as far (LivePortrait's ``--flag_normalize_lip``). The jaw
    closes first (when wider by more than :data:`CLOSE_MOUTH_MARGIN`); what an expression
    holds open (d19's surprise), when the model is given to :func:`transfer_motion` and the
    gap left is wider by more than :data:`CLOSE_LIPS_MARGIN`, the jaw closes further as far as
    the expression holds the chin down, and the lips close the rest
    (:func:`rest_mouth`, :mod:`faceanime.morphable.lips`). From the first frame on the output
    then shows the driver's opening, not the photo's. False: the photo's opening is the rest
    state and the driver's change is added to it (the mouth never closes)."""
    follow_gap: bool = True
    """Relative mouth, with the model given to :func:`transfer_motion`: each frame's jaw is
    corrected so that the lips part as far as the driver's do, however its fit shared the
    opening between the jaw, the lips and the expression (:func:`follow_lip_gap`). The
    expression's share is scaled to the photo's room (:func:`relative_weights`) and the jaw's
    is not, so without it a photo whose own expression already opens its mouth (d19's
    surprise) opened less than the driver where the driver's fit leant on an expression.
    False: the jaw takes the driver's change as it is."""

    def __post_init__(self) -> None:
        best = isinstance(self.reference_frame, str) and self.reference_frame == "best"
        number = (isinstance(self.reference_frame, numbers.Integral)
                  and not isinstance(self.reference_frame, bool))
        if not (best or number):
            raise InputError(f"--reference-frame {self.reference_frame!r}: use a frame number or "
                             f"best")
        for name in ("eyes", "mouth"):
            value = getattr(self, name)
            if value not in (None, "relative", "absolute", "off"):
                raise InputError(f"--{name} {value!r}: use relative, absolute or off")
        for name in ("blink_gain", "lip_gain"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise InputError(f"--{name.replace('_', '-')} must be a number ≥ 0, got "
                                 f"{value!r}")


# How much wider than the driver's reference a photo's jaw must open before close_mouth closes
# it: a photo's lips slightly apart (s42: 1.7° against d3's 0.3°) stay as they are.
CLOSE_MOUTH_MARGIN = math.radians(3.0)


# How much wider than the driver's reference the lips of a photo must still be apart, its jaw
# closed, before close_mouth brings them together (inner-lip gap over the outer eye corners'
# distance): s42's lips slightly apart (0.07 against d6's 0.02) stay; d19's open mouth (0.17,
# its surprise) closes.
CLOSE_LIPS_MARGIN = 0.06


# iBUG points (0-based) of lip_gap: the upper inner lip, the lower below it, the outer eye
# corners. Only their vertices are made.
_GAP_POINTS = (61, 62, 63, 67, 66, 65, 36, 45)


def lip_gap(model: FaceModel, coeffs: Coefficients, lips: Lips | None = None) -> torch.Tensor:
    """``(T,)`` how far apart the lips of each frame are in the model's own frame (pose left
    out): the mean vertical gap of the three inner-lip landmark pairs (iBUG 62/68, 63/67,
    64/66) over the outer eye corners' distance."""
    ids = model.landmark_indices[list(_GAP_POINTS)]
    verts = face_vertices(model, coeffs, lips=lips, index=ids)
    gap = (verts[:, :3, 1] - verts[:, 3:6, 1]).mean(1)
    return gap / (verts[:, 6] - verts[:, 7]).norm(dim=-1)


# Most the jaw turns past the photo's own rest to lift a chin its expression holds down (see
# rest_mouth): a yawn's jaw drops 20-30°; more than this is a fit's error, not a chin.
CLOSE_CHIN_LIMIT = math.radians(20.0)


def chin_height(model: FaceModel, coeffs: Coefficients, lips: Lips | None = None
                ) -> torch.Tensor:
    """``(T,)`` the chin's height (iBUG 9) in the model's own frame (pose left out) over the
    outer eye corners' distance; larger is higher."""
    verts = face_vertices(model, coeffs, lips=lips, index=model.landmark_indices[[8, 36, 45]])
    return verts[:, 0, 1] / (verts[:, 1] - verts[:, 2]).norm(dim=-1)


def _secant(value, target: torch.Tensor, start: torch.Tensor, step: float,
            steps: int = 2) -> torch.Tensor:
    """``x`` with ``value(x) == target`` (elementwise, ``value`` near linear in ``x``): secant
    steps from ``start``, each slope measured ``step`` away."""
    x = start
    for _ in range(steps):
        now, after = value(x), value(x + step)
        slope = (after - now) / step
        slope = torch.where(slope.abs() > 1e-6, slope, torch.full_like(slope, 1e-6))
        x = x - (now - target) / slope
    return x


def rest_mouth(model: FaceModel, source: Coefficients, reference: Coefficients,
               lips: Lips | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The source's jaw angle and lip closure, ``(1,)`` each, that relative transfer starts
    from, once its jaw is closed to the driver's ``reference`` frame (:func:`rest_jaw`): its
    own, or, where its lips are still apart wider than the reference's by more than
    :data:`CLOSE_LIPS_MARGIN` (an expression holds the mouth open: SFM's surprise drops the
    chin, and d19's yawn is fitted as 8° of jaw and 0.47 of surprise), the mouth closed to the
    reference's gap (see :attr:`MotionConfig.close_mouth`):

    1. the chin that expression holds down is lifted by the jaw, as a mouth closing from a
       yawn lifts it: turned further closed until the chin is where the face without its
       expression holds it, no further than the lips meeting at the reference's gap nor than
       :data:`CLOSE_CHIN_LIMIT` past its own;
    2. what is left open the lips close (their closure, within ``LIPS_RANGE``).

    Closed by the lips alone, the chin stayed down under a shut mouth: d19 by d3's first frame
    a face 0.16 inter-ocular distances longer from nose to chin than without its expression.
    """
    lips = lips if lips is not None else lip_rig(model)
    jaw = source.jaw.to(source.rotation.dtype)
    own = source.lips.to(jaw)
    if lips is None:
        return jaw, own
    goal = lip_gap(model, reference, lips).to(own)
    if not bool(lip_gap(model, source, lips).to(own) > goal + CLOSE_LIPS_MARGIN):
        return jaw, own

    # The chin's height and the gap are near linear in the jaw's angle and the closure over
    # these ranges: two secant steps land on the target.
    if int(model.landmark_indices[8]) >= 0:
        plain = replace(source, expression=torch.zeros_like(source.expression))
        chin = _secant(lambda j: chin_height(model, replace(source, jaw=j), lips).to(own),
                     chin_height(model, plain, lips).to(own), jaw, -0.05)
        shut = _secant(lambda j: lip_gap(model, replace(source, jaw=j), lips).to(own), goal, jaw,
                     -0.05)
        jaw = torch.minimum(torch.maximum(torch.maximum(chin, shut), jaw - CLOSE_CHIN_LIMIT),
                            jaw)
    closed = replace(source, jaw=jaw)
    closure = _secant(lambda c: lip_gap(model, replace(closed, lips=c), lips).to(own), goal, own,
                    1.0)
    return jaw, closure.clamp(*LIPS_RANGE)


def follow_lip_gap(model: FaceModel, target: Coefficients, driving: Coefficients, ref: int,
                   gain: float = 1.0, lips: Lips | None = None) -> torch.Tensor:
    """``(T,)`` the target's jaw angles, each turned so that the target's lips part from their
    gap at frame ``ref`` by ``gain`` times the driver's change from its own (:func:`lip_gap`:
    the inner lips' gap over the outer eye corners' distance, in the model's frame).

    The driver's opening is what its fit's jaw, lips and expression make together; relative
    transfer moves each by its own rule (the jaw and the lips by the driver's change, the
    blendshapes scaled to the photo's room), so their sum on the photo need not part its lips
    as far as the driver's: d19's surprise (0.5 in the photo) took half of every rise of the
    driver's. The jaw takes up the difference, as LivePortrait's lip retargeting matches a
    lip-open ratio. At ``ref`` nothing changes (the output there is the photo's rest mouth).
    Frames the jaw cannot bring to the goal within its range are left to the caller's clamp.

    Args:
        model: the model both were fitted with.
        target: ``T`` frames of the transferred coefficients.
        driving: the ``T`` driving frames they were made from.
        ref: the driver's reference frame.
        gain: multiplies the driver's change (``MotionConfig.lip_gain``).
        lips: the model's lip rig, its rest offsets included (:func:`lip_rig`; None: the
            closures applied as :func:`~faceanime.reconstruction.face_vertices` builds the
            rig, without rest offsets).
    """
    own = lip_gap(model, target, lips)
    change = lip_gap(model, driving, lips).to(own)
    goal = own[ref] + gain * (change - change[ref])
    jaw = target.jaw.to(own)
    # The gap is near linear in the jaw's angle over its range: two secant steps land on it.
    return _secant(lambda j: lip_gap(model, replace(target, jaw=j), lips).to(own), goal, jaw,
                   0.05)


def rest_jaw(source: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """The source's jaw angle ``(1,)`` that relative transfer starts from: its own, or the
    driver's reference opening ``(1,)`` where the source's is wider by more than
    :data:`CLOSE_MOUTH_MARGIN` (see :attr:`MotionConfig.close_mouth`)."""
    return torch.where(source > reference + CLOSE_MOUTH_MARGIN, reference, source)


# Scales of the differences best_reference weighs: a jaw angle, a lid closure, a blendshape
# weight, a head rotation (radians), each about what tells two faces apart at a glance.
_BEST_SCALES = {"jaw": math.radians(4.0), "eyes": 0.3, "expression": 0.3,
                "rotation": math.radians(15.0)}


def best_reference(source: Coefficients, driving: Coefficients) -> int:
    """The driving frame nearest the source's face: the smallest sum of squared differences of
    jaw, lid closure, expression and head rotation (the geodesic angle), each over its scale in
    :data:`_BEST_SCALES`. A driver's own first frame as the source picks frame 0.

    Args:
        source: the source face (frame 0 is used).
        driving: ``T`` driving frames, fitted with the same model.

    Returns:
        the frame index.
    """
    src = source.frames(slice(0, 1)).to(driving.rotation.device, driving.rotation.dtype)
    cost = ((driving.jaw - src.jaw) / _BEST_SCALES["jaw"]) ** 2
    cost = cost + (((driving.eyes - src.eyes) / _BEST_SCALES["eyes"]) ** 2).sum(1)
    cost = cost + (((driving.expression - src.expression) / _BEST_SCALES["expression"]) ** 2
                   ).sum(1)
    angle = rotation_angle_between(driving.rotation, src.rotation[:1])
    cost = cost + (angle / _BEST_SCALES["rotation"]) ** 2
    return int(cost.argmin())


def _part(source: torch.Tensor, driving: torch.Tensor, ref: int, how: str, gain: float,
          room: tuple[float, float] | None = None) -> torch.Tensor:
    """One articulated part (jaw ``(T,)`` or lids ``(T, 2)``) of the target: the source's own
    changed by the driver's change (relative), the driver's (absolute) or the source's (off),
    the transferred motion multiplied by ``gain``. With ``room`` (the lids' range), relative
    closing is at least the driver's share of the way to shut (:func:`lids_relative`)."""
    t = driving.shape[0]
    if how == "relative" and room is not None:
        return lids_relative(source, driving, ref, room, gain)
    if how == "relative":
        return source + gain * (driving - driving[ref])
    if how == "absolute":
        return gain * driving.clone()
    return source.expand(t, *source.shape[1:]).clone()


# Most a blendshape's change is scaled by in relative transfer (see relative_weights): where
# the driver's reference sits near the end of a range, its noise would be blown up.
MAX_WEIGHT_GAIN = 3.0


def relative_weights(source: torch.Tensor, driving: torch.Tensor, ref: int) -> torch.Tensor:
    """Blendshape weights of the source changed as the driver's change from frame ``ref``, each
    change scaled to the room the source has in that direction.

    A weight of 1 is the model's full expression. A rise of the driver's weight from its
    reference ``r`` towards the top ``m = max(1, r, s)`` moves the source's ``s`` the same share
    of its own way to ``m``; a fall towards 0 the same share of its way to 0. So a photo that
    already smiles fully stays at a full smile when the driver smiles (a plain sum would reach 2,
    a grotesque mouth), a neutral photo smiles as much as the driver, and where ``s == r`` (the
    driver's own face) the driver's weights come out unchanged. Scales are capped at
    :data:`MAX_WEIGHT_GAIN`.

    Args:
        source: ``(1, K)`` the source's weights (>= 0).
        driving: ``(T, K)`` the driver's weights (>= 0).
        ref: the driver's reference frame.

    Returns:
        ``(T, K)`` the target weights (>= 0).
    """
    r = driving[ref]
    delta = driving - r
    top = torch.maximum(torch.maximum(source, r), torch.ones_like(r))
    up = ((top - source) / (top - r).clamp_min(1e-6)).clamp(max=MAX_WEIGHT_GAIN)
    down = (source / r.clamp_min(1e-6)).clamp(max=MAX_WEIGHT_GAIN)
    # At the top already (r == m), or at 0 with nowhere lower: the change as it is.
    up = torch.where(top - r > 1e-6, up, torch.ones_like(up))
    down = torch.where(r > 1e-6, down, torch.ones_like(down))
    return (source + delta * torch.where(delta > 0, up, down)).clamp_min(0)


def lids_relative(source: torch.Tensor, driving: torch.Tensor, ref: int,
                  room: tuple[float, float], gain: float = 1.0) -> torch.Tensor:
    """The source's lid closure changed as the driver's changes from its reference frame
    ``ref``, closing at least the same share of its way to shut (``room[1]``) as the driver's.

    Added as it is, the driver's change left a photo with wider eyes than the driver's first
    frame a fifth open at the driver's blinks (s42 by d6: 0.80 closed); now the driver's shut
    eyes shut the photo's whatever either one's resting opening. A photo with narrower eyes
    keeps the plain sum (it shuts a little before the driver does: scaled to its smaller
    room, s12's hooded lids stayed visibly open at d3's lowered lids). Opening changes are
    added as they are. The scale is capped at :data:`MAX_WEIGHT_GAIN` (a reference near shut
    would blow its noise up).

    Args:
        source: ``(1, 2)`` the photo's closures.
        driving: ``(T, 2)`` the driver's.
        ref: the driver's reference frame.
        room: the closures' range (wide open, shut).
        gain: multiplies the driver's change.

    Returns:
        ``(T, 2)`` (the caller clamps them to ``room``).
    """
    high = room[1]
    r = driving[ref]
    delta = gain * (driving - r)
    plain = source + delta
    share = ((high - source) / (high - r).clamp_min(1e-6)).clamp(0, MAX_WEIGHT_GAIN)
    return torch.where(delta > 0, torch.maximum(plain, source + delta * share), plain)


def transfer_motion(source: Coefficients, driving: Coefficients,
                    config: MotionConfig | None = None, model: FaceModel | None = None
                    ) -> Coefficients:
    """Coefficients of the source face moving as the driver does.

    Args:
        source: the source face, one frame (frame 0 is used if it has several).
        driving: ``T`` driving frames, fitted with the same morphable model.
        config: transfer settings.
        model: that model; with it, ``close_mouth`` also closes what an expression holds open
            (:func:`rest_mouth`), without it only the jaw.

    Returns:
        ``T`` frames with the source's identity, camera and image size.

    Raises:
        InputError: models or cameras differ, or the reference frame is out of range.
    """
    config = config or MotionConfig()
    if config.mode not in ("relative", "absolute"):
        raise InputError(f"unknown motion mode {config.mode!r}; use relative or absolute")
    check_same_fit(source, driving, "driver")
    t = driving.n_frames
    ref = best_reference(source, driving) if config.reference_frame == "best" \
        else config.reference_frame
    if not -t <= ref < t:
        raise InputError(f"reference frame {ref} is outside the driving sequence ({t} frames)")
    src = source.frames(slice(0, 1)).to(driving.rotation.device, driving.rotation.dtype)
    drv = driving

    # Blendshape weights (SFM) are >= 0, a PCA basis's coefficients (BFM) take either sign.
    blendshapes = config.nonnegative_expression and bool(
        (src.expression >= 0).all() and (drv.expression >= 0).all())
    if config.expression and config.mode == "relative" and blendshapes:
        expression = relative_weights(src.expression, drv.expression, ref)
    elif config.expression and config.mode == "relative":
        expression = src.expression + (drv.expression - drv.expression[ref])
    elif config.expression:
        expression = drv.expression.clone()
    else:
        expression = src.expression.expand(t, -1).clone()
    default = config.mode if config.expression else "off"
    mouth_mode = config.mouth or default
    src_jaw = src.jaw
    if config.close_mouth and mouth_mode == "relative":
        src_jaw = rest_jaw(src.jaw, drv.jaw[ref].reshape(1))
    src_lips = src.lips
    lift = 0.0
    # The lip rig, built once for the rest mouth and the gap's following (~7 ms).
    rig = lip_rig(model) if model is not None and mouth_mode == "relative" else None
    if config.close_mouth and mouth_mode == "relative" and model is not None:
        closed = src_jaw
        src_jaw, src_lips = rest_mouth(model, replace(src, jaw=src_jaw), drv.frames([ref]), rig)
        # A chin lifted past closed takes the range below it along: the driver's closing
        # below its reference still closes it further.
        lift = float((closed - src_jaw).max())
    jaw = _part(src_jaw, drv.jaw, ref, mouth_mode, config.lip_gain)
    lips = _part(src_lips, drv.lips, ref, mouth_mode, config.lip_gain).clamp(*LIPS_RANGE)
    pucker = _part(src.pucker, drv.pucker, ref, mouth_mode, config.lip_gain).clamp(*PUCKER_RANGE)
    # The brows go with the expression (relative: the photo's own raised by the driver's change).
    brows = bound_brows(_part(src.brows, drv.brows, ref, default, 1.0))
    eyes = _part(src.eyes, drv.eyes, ref, config.eyes or default, config.blink_gain,
                 room=CLOSURE_RANGE)
    eyes = eyes.clamp(*CLOSURE_RANGE)
    gaze = transfer_gaze(src.gaze, drv.gaze, ref, config.eyes or default) if config.gaze else None
    if blendshapes:
        expression = expression.clamp_min(0)
    jaw = jaw.clamp(JAW_RANGE[0] - lift, JAW_RANGE[1])

    if config.pose and config.mode == "relative":
        # Rotation change in the camera frame, applied on top of the source's head rotation.
        rotation = drv.rotation @ drv.rotation[ref].T @ src.rotation[0]
        if drv.camera == "orthographic":
            # Pixel offsets scale with the face size in each image.
            gain = src.scale[0] / drv.scale[ref]
            translation = src.translation + (drv.translation - drv.translation[ref]) * gain
            scale = src.scale[0] * drv.scale / drv.scale[ref]
        else:
            translation = src.translation + (drv.translation - drv.translation[ref])
            scale = src.scale.expand(t).clone()  # the focal length is the source camera's
    elif config.pose:
        rotation = drv.rotation.clone()
        translation, scale = src.translation.expand(t, -1).clone(), src.scale.expand(t).clone()
    else:
        rotation = src.rotation.expand(t, -1, -1).clone()
        translation, scale = src.translation.expand(t, -1).clone(), src.scale.expand(t).clone()
    # The driver's mouth interior goes with its mouth motion.
    mouth = drv.mouth if mouth_mode != "off" else None
    out = Coefficients(model=src.model, shape=src.shape.clone(), expression=expression,
                       jaw=jaw, eyes=eyes, lips=lips, pucker=pucker, brows=brows,
                       rotation=rotation,
                       translation=translation, scale=scale,
                       camera=src.camera, image_size=src.image_size, fps=drv.fps, mouth=mouth,
                       gaze=gaze)
    if (config.follow_gap and mouth_mode == "relative" and model is not None
            and bool((model.landmark_indices[list(_GAP_POINTS)] >= 0).all())):
        followed = follow_lip_gap(model, out, drv, ref, config.lip_gain, rig)
        out.jaw = followed.to(jaw).clamp(JAW_RANGE[0] - lift, JAW_RANGE[1])
    return out


def transfer_gaze(source: torch.Tensor | None, driving: torch.Tensor | None, ref: int,
                  mode: str = "relative") -> torch.Tensor | None:
    """``(T, 2, 2)`` the transferred gaze (:attr:`MotionConfig.gaze`) from the photo's
    ``(1, 2, 2)`` and the driver's ``(T, 2, 2)``; None where either was not measured or the
    lids are off. NaN (an eye not measured) counts as no change."""
    if source is None or driving is None or mode == "off":
        return None
    # Relative in both modes: two faces' iris positions are not comparable (s1 and s42 both
    # look at the camera, and their right irises sit 0.21 eye widths apart in their eyes'
    # frames: head turn, the landmarks' habits). Copied across, a glance appeared from nowhere.
    change = (driving - driving[ref]).nanmean(1, keepdim=True)                 # (T, 1, 2)
    return source + torch.nan_to_num(change)
