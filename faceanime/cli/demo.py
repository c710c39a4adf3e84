"""``faceanime demo``: the main job on what ships in the package, with nothing to download."""

from __future__ import annotations

import argparse
import sys

from faceanime.devices import DEVICE_HELP, device_arg
from faceanime.samples import DEFAULT_TEMPLATE, MOTION_TEMPLATES, template_names


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="animate the bundled sample portrait (or your photo) with a motion template",
        description="Retarget a bundled motion template (real talking-head motion, no video "
                    "needed) onto the bundled sample portrait, a public-domain NASA photo, or "
                    "onto --source PHOTO: the quickest way to see what faceanime does on a "
                    "fresh install. The same as 'faceanime retarget --source PHOTO --driving "
                    "TEMPLATE -o OUT.mp4'.")
    p.add_argument("-o", "--output", default="demo.mp4",
                   help="video to write (default: %(default)s)")
    p.add_argument("--template", default=DEFAULT_TEMPLATE, type=str.lower,
                   choices=template_names(),
                   help="the motion to show (default: %(default)s; --list describes them)")
    p.add_argument("--source", metavar="PHOTO", default=None,
                   help="your photo instead of the sample portrait")
    p.add_argument("--side-by-side", action="store_true",
                   help="write the photo beside the result")
    p.add_argument("--device", type=device_arg, default="auto",
                   help=f"where the work runs: {DEVICE_HELP} (default: auto)")
    p.add_argument("--list", action="store_true", help="list the motion templates and exit")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars and no summary line (errors are still printed)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from pathlib import Path

    from faceanime.jobs.common import OutputConfig, run_many
    from faceanime.jobs.retarget import RetargetConfig, retarget
    from faceanime.samples import sample_portrait

    if args.list:
        from faceanime.coefficients import Coefficients

        for template in MOTION_TEMPLATES:
            coeffs = Coefficients.load(template.path)
            print(f"{template.name:8s} {coeffs.n_frames / coeffs.fps:5.1f} s  "
                  f"{template.description}")
        return
    source = Path(args.source) if args.source else sample_portrait()
    config = RetargetConfig(
        output=OutputConfig(device=args.device, progress=not (args.no_progress or args.quiet)),
        side_by_side=args.side_by_side)
    run_many([source], [Path(args.output)],
             lambda photo, output: retarget(photo, args.template, output, config),
             quiet=args.quiet)
    if not args.quiet and args.source is None:
        print("faceanime: sample portrait: NASA, public domain; your own photo: "
              f"faceanime retarget --source PHOTO --driving {args.template} -o OUT.mp4",
              file=sys.stderr)
