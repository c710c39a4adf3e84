"""Compare design choices of the warp renderer on the self-reenactment protocol.

Each variant is a :class:`~faceanime.render.warp.WarpConfig`; every video drives its own first
frame and the output is scored against the real frames (``faceanime.evaluation``), plus the
pasted ``mask`` renderer for reference. Prints a Markdown table (docs/render.md holds it).

    python tools/compare_warp.py [--videos d3 d6] [--stride 8]
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("FACEANIME_TEST_DATA", REPO.parent / "shared" / "data"))

VARIANTS = {
    "warp (segmented head; outside the face ¾ of the rotation, no scale change, ¼ of the "
    "pivot's vertical motion; unfolded; ellipsoid proxy: the default)": {},
    "warp, the fitted head pose in full outside the face": {
        "rotation_follow": 1.0, "scale_follow": 1.0, "pivot_follow": 1.0},
    "warp, the fitted pose with half the pivot's vertical motion (the previous default)": {
        "rotation_follow": 1.0, "scale_follow": 1.0, "pivot_follow": 0.5, "unfold": 0.0},
    "warp, the rotation in full": {"rotation_follow": 1.0},
    "warp, the scale change in full": {"scale_follow": 1.0},
    "warp, folds left in place": {"unfold": 0.0},
    "warp, plane proxy": {"proxy": "plane"},
    "warp, the ellipsoid's exact flank (never softened)": {"flank_stretch": 0},
    "warp, the proxy's depth beyond the face not smoothed": {"proxy_smooth": 0.0},
    "warp, the face's motion continued over a fixed reach, the border's cap beside it too": {
        "extend_adapt": 0.0, "face_stretch": 0.0},
    "warp, no head motion beyond the face": {"head_width": 0.01, "head_height": 0.01,
                                            "falloff": 0.01},
}
KEYS = ("l1", "ssim", "akd", "aed", "double_face", "head_follow")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", nargs="+", default=["d0", "d3", "d6", "d18"])
    parser.add_argument("--stride", type=int, default=8)
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument("--only", nargs="+", default=None,
                        help="run only the variants whose names contain one of these words")
    args = parser.parse_args(argv)

    from faceanime.evaluation.protocol import EvalConfig, evaluate_self
    from faceanime.render.warp import WarpConfig

    videos = [DATA / "videos" / f"{v}.mp4" for v in args.videos]
    base = EvalConfig(stride=args.stride, frames=args.frames, progress=False,
                      model=str(DATA / "sfm" / "sfm_shape_3448.bin"))
    rows = []
    runs = [(name, replace(base, methods=("warp",), warp=WarpConfig(**changes)), "warp")
            for name, changes in VARIANTS.items()]
    runs.append(("mask (pasted face, before)", replace(base, methods=("mask",)), "mask"))
    if args.only:
        runs = [r for r in runs if any(word in r[0] for word in args.only)]
    for name, config, method in runs:
        results = evaluate_self(videos, config)
        values = {k: [] for k in KEYS}
        for video in results:
            if video.error is not None:
                raise SystemExit(f"{video.name}: {video.error}")
            summary = video.methods[method].summary
            for k in KEYS:
                if summary.get(k) is not None:
                    values[k].append(summary[k])
        rows.append((name, {k: sum(v) / len(v) if v else float("nan")
                            for k, v in values.items()}))
        print(f"done: {name}", file=sys.stderr)
    print(f"Self-reenactment, {', '.join(args.videos)}, every {args.stride}th frame; mean over "
          "the videos\n")
    print("| variant | L1 | SSIM | AKD px | AED | double face % | head follow |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, v in rows:
        print(f"| {name} | {v['l1']:.4f} | {v['ssim']:.3f} | {v['akd']:.2f} | {v['aed']:.3f} | "
              f"{v['double_face']:.1f} | {v['head_follow']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
