"""``faceanime fit``: 3DMM coefficients of a photo or a whole video."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from faceanime.capture import capture_driver
from faceanime.devices import DEVICE_HELP, device_arg
from faceanime.errors import InputError
from faceanime.fitting import FitConfig, draw_mesh, fit_file
from faceanime.io import is_video_path, iter_video_frames, read_image, write_image, write_video
from faceanime.landmarks import TrackerConfig, measure_gaze
from faceanime.morphable import load_model
from faceanime.reconstruction import face_vertices, project_vertices
from faceanime.render.frames import image_tensor

_DEFAULT = FitConfig()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit", help="fit the 3D morphable model to a photo or a video",
        description="Fit shape (one per input), expression, jaw and pose (per frame) to 68-point "
                    "landmarks, detected with dlib or read from --landmarks. Writes the "
                    "coefficient .npz that retargeting, training and evaluation read "
                    "(docs/fitting.md).")
    p.add_argument("input", help="photo (png/jpg) or video (mp4, ...)")
    p.add_argument("-o", "--output", required=True, help="coefficient file to write (.npz)")
    p.add_argument("--landmarks", help="use these landmarks instead of detecting: an iBUG .pts "
                   "(photos) or a 'faceanime landmarks' .npz")
    p.add_argument("--model", default="sfm", help="morphable model name or path (default: sfm; "
                   "see 'faceanime model info')")
    p.add_argument("--overlay", help="also write the input with the fitted mesh drawn on it "
                   "(.png for photos, .mp4 for videos)")
    p.add_argument("--camera", choices=["orthographic", "perspective"], default=_DEFAULT.camera,
                   help="camera model (default: %(default)s)")
    p.add_argument("--focal", type=float, default=_DEFAULT.focal,
                   help="perspective focal length in pixels (default: estimated)")
    p.add_argument("--shape-weight", type=float, default=_DEFAULT.shape_weight,
                   help="identity regularisation; larger keeps the face nearer the mean "
                        "(default: %(default)g)")
    p.add_argument("--expression-weight", type=float, default=_DEFAULT.expression_weight,
                   help="expression regularisation (default: %(default)g)")
    p.add_argument("--lower-face-weight", type=float, default=_DEFAULT.lower_face_weight,
                   help="weight of the chin's and mouth's landmarks against the others' (1: "
                        "all alike; the default keeps mouth shapes the model cannot make "
                        "from moving the head: docs/fitting.md; default: %(default)g)")
    p.add_argument("--temporal-weight", type=float, default=_DEFAULT.temporal_weight,
                   help="smoothness of expression and pose over time, videos only "
                        "(default: %(default)g)")
    p.add_argument("--iterations", type=int, default=_DEFAULT.iterations,
                   help="most Levenberg-Marquardt iterations; the fit stops earlier once "
                        "the cost stops falling (default: %(default)s)")
    p.add_argument("--no-jaw", action="store_true", help="do not fit the jaw opening")
    p.add_argument("--no-contour", action="store_true",
                   help="ignore the jaw-outline landmarks (1-17 but the chin)")
    p.add_argument("--backend", default="dlib", help="landmark backend when detecting "
                   "(dlib, mediapipe, fan; default: %(default)s)")
    p.add_argument("--face-index", type=int, default=0,
                   help="which face when there are several, by size (default: 0 = largest)")
    p.add_argument("--device", type=device_arg, default="auto",
                   help=f"where the work runs: {DEVICE_HELP} (default: auto)")
    p.add_argument("--parts", type=int, default=1, metavar="N",
                   help="video only: track up to N parts at once, one process each (see "
                        "'faceanime landmarks --help'; default %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run, face_hint=_face_hint)


def _face_hint(args: argparse.Namespace, message: str) -> str:
    other = "try --backend mediapipe" if args.backend == "dlib" else "try --backend dlib"
    return other if args.landmarks else f"give the 68 points with --landmarks FILE, or {other}"


def run(args: argparse.Namespace) -> None:
    output = Path(args.output)
    if output.suffix.lower() != ".npz":
        raise InputError(f"{output}: the coefficient file must end in .npz")
    if args.overlay:
        allowed = (".mp4",) if is_video_path(args.input) else (".png", ".jpg", ".jpeg")
        if Path(args.overlay).suffix.lower() not in allowed:
            raise InputError(f"{args.overlay}: the overlay of this input must be a "
                             f"{' or '.join(allowed)} file")
    config = FitConfig(camera=args.camera, focal=args.focal, shape_weight=args.shape_weight,
                       expression_weight=args.expression_weight,
                       temporal_weight=args.temporal_weight, iterations=args.iterations,
                       lower_face_weight=args.lower_face_weight,
                       jaw=not args.no_jaw, contour=not args.no_contour, device=args.device)
    tracker = TrackerConfig(backend=args.backend, face_index=args.face_index,
                            progress=not args.no_progress, parts=args.parts)
    model = load_model(args.model, device=args.device)
    coeffs = fit_file(args.input, model, args.landmarks, config, tracker)
    # Where the eyes look, measured from the pixels (the fit sees landmarks only): a
    # coefficient file then drives a photo's gaze as its video would.
    if is_video_path(args.input):
        capture_driver(args.input, coeffs, progress=not args.no_progress)
    else:
        coeffs.gaze = measure_gaze(image_tensor(read_image(args.input))[None],
                                   coeffs.landmarks.float()).to(coeffs.expression)
    coeffs.save(output)
    if args.overlay:
        write_overlay(args.input, args.overlay, model, coeffs)
    err = np.linalg.norm(coeffs.fitted_landmarks.numpy() - coeffs.landmarks.numpy(), axis=-1)
    print(f"{output}: {coeffs.n_frames} frame(s), {int(coeffs.valid.sum())} with a face, "
          f"mean landmark error {np.nanmean(err):.2f} px", file=sys.stderr)


def write_overlay(source: str, target: str, model, coeffs) -> None:
    """Draw each frame's fitted mesh over the input and write it (.png or .mp4, with audio)."""
    projected = project_vertices(coeffs, face_vertices(model, coeffs))
    if is_video_path(source):
        frames = (draw_mesh(frame, projected[i], model.triangles)
                  for i, frame in enumerate(iter_video_frames(source)))
        write_video(target, frames, fps=coeffs.fps or 25.0, audio_from=source)
    else:
        write_image(target, draw_mesh(read_image(source), projected[0], model.triangles))
