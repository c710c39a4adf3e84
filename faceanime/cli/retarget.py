"""``faceanime retarget``: a photo's face makes a driving video's motions."""

from __future__ import annotations

import argparse
import sys

from faceanime.fitting import FitConfig
from faceanime.motion import MotionConfig
from faceanime.render.classic import ClassicConfig

_MOTION = MotionConfig()
_RENDER = ClassicConfig()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "retarget", help="make a photo's face follow a driving video",
        description="Fit the photo and the driver, transfer the driver's motion (by default its "
                    "change from the first frame, applied to the photo's own pose and "
                    "expression), render the photo's face with it and paste it back into the "
                    "photo. Writes an H.264 mp4 at the driver's frame rate with the driver's "
                    "audio. Renderer: the classic dense render (no learned weights).")
    p.add_argument("--source", required=True, help="the photo whose face moves")
    p.add_argument("--driving", required=True,
                   help="driving video, or a coefficient file (.npz) from 'faceanime fit'")
    p.add_argument("-o", "--output", required=True, help="video to write (.mp4)")
    p.add_argument("--motion", choices=["relative", "absolute"], default=_MOTION.mode,
                   help="relative: the driver's change from the reference frame, applied to the "
                        "photo's pose and expression; absolute: the driver's expression and head "
                        "rotation replace the photo's (default: %(default)s)")
    p.add_argument("--reference-frame", type=int, default=_MOTION.reference_frame,
                   help="driving frame taken as the neutral reference (default: %(default)s)")
    p.add_argument("--no-pose", action="store_true", help="keep the photo's head pose")
    p.add_argument("--no-audio", action="store_true", help="do not keep the driver's audio")
    p.add_argument("--feather", type=float, default=_RENDER.feather,
                   help="width in pixels of the face's blend into the photo "
                        "(default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=_RENDER.batch_size,
                   help="frames rendered at once (default: %(default)s)")
    p.add_argument("--side-by-side", action="store_true",
                   help="write photo | driver | result side by side")
    p.add_argument("--save-coeffs", help="also write the rendered coefficients (.npz)")
    p.add_argument("--fps", type=float, default=None,
                   help="frame rate when driving with a coefficient file that has none "
                        "(default: 25)")
    p.add_argument("--model", default="sfm", help="morphable model (default: %(default)s)")
    p.add_argument("--face-index", type=int, default=0,
                   help="which face when there are several, by size (default: 0 = largest)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cpu)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from faceanime.retarget import RetargetConfig, retarget

    config = RetargetConfig(
        motion=MotionConfig(mode=args.motion, reference_frame=args.reference_frame,
                            pose=not args.no_pose),
        render=ClassicConfig(feather=args.feather, batch_size=args.batch_size),
        fit=FitConfig(device=args.device), model=args.model, face_index=args.face_index,
        audio=not args.no_audio, fps=args.fps, side_by_side=args.side_by_side,
        progress=not args.no_progress)
    result = retarget(args.source, args.driving, args.output, config, args.save_coeffs)
    print(f"{result.output}: {result.frames} frames at {result.fps:g} fps in "
          f"{result.seconds:.1f} s ({result.frames / result.seconds:.1f} frames/s)",
          file=sys.stderr)
