"""The evaluation report: ``report.json``, ``report.md`` and per-frame curve plots.

JSON has no infinity or NaN: an infinite value (PSNR of identical frames) is written as the
string ``"inf"`` (``"-inf"``), an undefined one (NaN: no frame with a face, a correlation of a
series that does not move) as ``null``. Markdown shows them as ``∞`` and ``–``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from faceanime import __version__
from faceanime.evaluation.plot import Panel, plot_panels
from faceanime.evaluation.protocol import EvalConfig, VideoResult, method_names
from faceanime.io.atomic import atomic_path

# (key, column header, format) per protocol; arrows say which way is better.
COLUMNS = {
    "self": [("l1", "L1 ↓", "{:.4f}"), ("psnr", "PSNR dB ↑", "{:.2f}"),
             ("ssim", "SSIM ↑", "{:.4f}"), ("akd", "AKD px ↓", "{:.2f}"),
             ("aed", "AED ↓", "{:.3f}"), ("id", "ID % ↑", "{:.1f}")],
    "cross": [("id", "ID % ↑", "{:.1f}"), ("id_dist", "ID dist ↓", "{:.3f}"),
              ("pose_err", "pose err ° ↓", "{:.2f}"), ("expr_corr", "expr corr ↑", "{:.3f}")],
}
# What a viewer sees: the second table of both protocols.
VIEWER_COLUMNS = [("double_face", "double face % ↓", "{:.1f}"),
                  ("head_follow", "head follow ↑", "{:.3f}"),
                  ("blink_follow", "blink follow ↑", "{:.3f}"),
                  ("closed_eye", "closed-eye ratio ↓", "{:.3f}"),
                  ("mouth_corr", "mouth follow ↑", "{:.3f}"),
                  ("width_corr", "mouth width follow ↑", "{:.3f}"),
                  ("brow_corr", "brow follow ↑", "{:.3f}")]
# Per-frame series drawn with the driver's own beside the methods'.
VIEWER_CURVES = [("head_dx", "head x displacement (inter-ocular units)"),
                 ("head_dy", "head y displacement (inter-ocular units)"),
                 ("ear", "eye aspect ratio"), ("mouth", "mouth opening / eye distance"),
                 ("width", "mouth width / eye distance"),
                 ("brow_height", "brows' height above the eyes / eye distance"),
                 ("brow_gap", "gap between the brows' inner ends / eye distance"),
                 ("faces", "faces found")]
CURVES = {
    "self": [("l1", "L1 (mean absolute error)"), ("psnr", "PSNR (dB)"), ("ssim", "SSIM"),
             ("akd", "AKD (pixels)"), ("id_dist", "identity distance to the source"),
             *VIEWER_CURVES],
    "cross": [("id_dist", "identity distance to the photo"),
              ("pose_err", "pose error (degrees)"), *VIEWER_CURVES],
}
DRIVER = "driver"
"""The name of the driver's series in the plots (self-reenactment: the real frames)."""
RETEST = "driver, read mirrored"
"""The viewer tables' reference row: the driver's frames read again, mirrored, scored as an
output against the driver (:func:`~faceanime.evaluation.protocol.driver_reference`)."""

TRACKED = "driver, as the job tracks it"
"""The viewer tables' second reference row: the landmarks retarget tracks and fits (what drives
every renderer) scored as an output against the driver
(:func:`~faceanime.evaluation.protocol.tracked_reference`): about how far a renderer that
draws exactly what drives it can agree with the measure."""


def json_number(value: float) -> float | str | None:
    """A float as JSON can hold it: ``"inf"``/``"-inf"`` for infinities, None for NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def _clean(obj):
    if isinstance(obj, float):
        return json_number(obj)
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit(root: Path | None = None) -> str | None:
    """The checkout's short commit, with ``+changes`` when tracked files differ from it (the
    numbers then belong to code no commit holds); None outside a git checkout."""
    root = Path(__file__).resolve().parents[2] if root is None else root
    if not (root / ".git").exists() or shutil.which("git") is None:
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=True)
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                 "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    if not commit:
        return None
    return commit + ("+changes" if status.stdout.strip() else "")


def machine_info(device: str) -> dict:
    """What the numbers were measured on."""
    info = {"cpu": _cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def mean_over_videos(results: Sequence[VideoResult], methods: Sequence[str]) -> dict:
    """Per method: the mean of each per-video value over the videos it succeeded on."""
    out = {}
    for name in methods:
        done = [v.methods[name] for v in results
                if v.error is None and name in v.methods and v.methods[name].error is None]
        summary: dict[str, float] = {"videos": len(done)}
        summary.update(_mean_of([{k: v for k, v in m.summary.items() if k != "no_face"}
                                 for m in done]))
        summary["no_face"] = sum(m.no_face for m in done)
        out[name] = summary
    return out


def reference_mean(results: Sequence[VideoResult], key: str) -> dict[str, float] | None:
    """The mean over videos of a reference row of the driver (``reference_summary[key]``: its
    mirrored re-reading, ``retest``, or the job's tracking of it, ``tracked``), each value over
    the videos where it is defined; None when no video has one."""
    rows = [v.reference_summary[key] for v in results
            if v.error is None and key in v.reference_summary]
    return _mean_of(rows) if rows else None


def _mean_of(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """Per key of the first row, the mean over the rows where it is not NaN (NaN where it is
    NaN in all of them)."""
    out = {}
    for key in rows[0] if rows else {}:
        values = [r[key] for r in rows if not math.isnan(r[key])]
        out[key] = sum(values) / len(values) if values else float("nan")
    return out


def build_report(protocol: str, results: Sequence[VideoResult], config: EvalConfig,
                 command: str | None = None) -> dict:
    """The report as a JSON-ready dict (non-finite numbers encoded, see the module docstring)."""
    methods = method_names(config)
    settings = asdict(config)
    settings["render"] = {"feather": config.render.feather,
                          "batch_size": config.render.batch_size}
    report = {
        "protocol": protocol,
        "faceanime_version": __version__,
        "git_commit": _git_commit(),
        "command": command,
        "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine_info(config.device),
        "settings": settings,
        "methods": methods,
        "seconds": round(sum(v.seconds for v in results), 1),
        "mean": mean_over_videos(results, methods),
        "retest_mean": reference_mean(results, "retest"),
        "tracked_mean": reference_mean(results, "tracked"),
        "videos": [],
    }
    for v in results:
        entry = {"name": v.name, "path": v.path, "driver": v.driver, "error": v.error,
                 "frames_total": v.frames_total, "frames_evaluated": len(v.frame_indices),
                 "frame_indices": v.frame_indices, "source_frame": v.source_frame,
                 "reference_no_face": v.gt_no_face, "source_faces": v.source_faces,
                 "reference": {"summary": v.reference_summary, "per_frame": v.reference},
                 "seconds": round(v.seconds, 1), "methods": {}}
        for name, m in v.methods.items():
            entry["methods"][name] = {"error": m.error, "summary": m.summary,
                                      "per_frame": m.per_frame}
        report["videos"].append(entry)
    return _clean(report)


def _cell(value, fmt: str) -> str:
    if value is None:
        return "–"
    if value == "inf":
        return "∞"
    if value == "-inf":
        return "−∞"
    return fmt.format(value)


def _table(rows: dict[str, dict], columns, first: str = "method", extra=(),
           reference: dict | None = None, tracked: dict | None = None) -> list[str]:
    """A markdown table, a row per method (and last, italic :data:`RETEST` and :data:`TRACKED`
    rows when ``reference`` and ``tracked`` are given)."""
    head = [first, *[c[1] for c in columns], *[e[1] for e in extra]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    named = [(f"`{name}`", summary) for name, summary in rows.items()]
    if reference is not None:
        named.append((f"*{RETEST}*", reference))
    if tracked is not None:
        named.append((f"*{TRACKED}*", tracked))
    for name, summary in named:
        cells = [_cell(summary.get(k), fmt) for k, _, fmt in columns]
        cells += [str(summary.get(k, "")) for k, _ in extra]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def render_markdown(report: dict, plots: dict[str, str] | None = None) -> str:
    """``report.md``: how it was made, the mean table, then one table (and plot) per video."""
    protocol = report["protocol"]
    cols = COLUMNS[protocol]
    s = report["settings"]
    m = report["machine"]
    title = "self-reenactment" if protocol == "self" else "cross-reenactment"
    lines = [f"# faceanime evaluation: {title}", ""]
    version = report["faceanime_version"]
    if report.get("git_commit"):
        version += f" (git {report['git_commit']})"
    lines += [f"- faceanime {version}, {report['created']}",
              f"- machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} with "
              f"{m['torch_threads']} thread(s), device {m['device']}"
              + (f" ({m['gpu']})" if m.get("gpu") else "") + f", {m['platform']}"]
    if report.get("command"):
        lines.append(f"- command: `{report['command']}`")
    lines.append(f"- time: {report['seconds']:.0f} s for {len(report['videos'])} input(s), "
                 "start-up not included")
    sampling = f"every {s['stride']} frame(s)" + (
        f", at most {s['frames']} per video (evenly spaced)" if s.get("frames") else "")
    if protocol == "self":
        lines.append(f"- protocol: source = frame {s['source_frame']} of each video, driver = "
                     f"the same video; scored on {sampling}, the source frame excluded; "
                     "outputs quantised to 8 bits as a video would store them")
    else:
        reference = ("the driver's scored frame nearest the photo's face"
                     if s["motion"].get("reference_frame") == "best"
                     else "the driver's first frame")
        closing = ("; a photo's mouth open wider than the reference's is closed to it first"
                   if s["motion"].get("close_mouth") and s["motion"]["mode"] == "relative"
                   else "")
        lines.append(f"- protocol: each photo driven by each video ({s['motion']['mode']} "
                     f"motion from {reference}{closing}); scored on {sampling}")
    lines += ["- metrics: docs/evaluation.md; ↓ lower is better, ↑ higher is better; `no face` "
              "counts output frames where dlib found no face (left out of landmark and identity "
              "distances, failures for ID %); the second table is what a viewer sees, measured "
              "on the output's landmarks against the driver's (`–`: undefined, e.g. an output "
              f"that does not move); its row *{RETEST}* scores the driver's own frames "
              "read again mirrored: how far the measure agrees with itself; its last row, "
              f"*{TRACKED}*, the landmarks the job tracks and fits (what drives every "
              "renderer): how far a renderer that draws exactly what drives it can agree "
              "with the measure", ""]
    lines += ["## Mean over videos", ""]
    lines += _table(report["mean"], cols, extra=[("no_face", "no face"),
                                                 ("videos", "videos")])
    lines += ["", *_table(report["mean"], VIEWER_COLUMNS, reference=report.get("retest_mean"),
                          tracked=report.get("tracked_mean"))]
    lines.append("")
    for v in report["videos"]:
        head = f"## {v['name']}"
        lines += [head, ""]
        if v["error"]:
            lines += [f"**failed**: {v['error']}", ""]
            continue
        what = (f"{v['frames_total']} frames, {v['frames_evaluated']} scored in "
                f"{v['seconds']:.0f} s")
        if protocol == "self":
            what += (f", source frame {v['source_frame']}; ground-truth frames without a face: "
                     f"{v['reference_no_face']}")
        else:
            what += (f", driver `{Path(v['driver']).name}`; driver frames without a face: "
                     f"{v['reference_no_face']}")
        closed = v["reference"]["summary"].get("closed_eye")
        what += (f"; faces in the source: {v['source_faces']}; the driver's own closed-eye "
                 f"ratio: {_cell(closed, '{:.3f}')}")
        lines += [what, ""]
        ok = {n: r["summary"] for n, r in v["methods"].items() if not r["error"]}
        lines += _table(ok, cols, extra=[("no_face", "no face")])
        lines += ["", *_table(ok, VIEWER_COLUMNS,
                              reference=v["reference"]["summary"].get("retest"),
                              tracked=v["reference"]["summary"].get("tracked"))]
        for n, r in v["methods"].items():
            if r["error"]:
                lines.append(f"\n`{n}` **failed**: {r['error']}")
        if plots and v["name"] in plots:
            lines += ["", f"![per-frame metrics of {v['name']}]({plots[v['name']]})"]
        lines.append("")
    return "\n".join(lines)


def write_plots(report: dict, folder: Path, prefix: str = "") -> dict[str, Path]:
    """One PNG of per-frame curves per video (a panel per metric, a line per method)."""
    out = {}
    for v in report["videos"]:
        if v["error"]:
            continue
        panels = []
        for key, title in CURVES[report["protocol"]]:
            sources = [(n, r["per_frame"]) for n, r in v["methods"].items() if not r["error"]]
            sources.append((DRIVER, v["reference"]["per_frame"]))
            series = []
            for name, per_frame in sources:
                if key not in per_frame:
                    continue
                ys = [float(y) if isinstance(y, str) else (math.nan if y is None else y)
                      for y in per_frame[key]]
                series.append((name, v["frame_indices"], ys))
            panels.append(Panel(title, series))
        path = folder / f"{prefix}{v['name']}.png"
        plot_panels(path, panels, f"{v['name']}: per-frame metrics ({report['protocol']})",
                    fixed={DRIVER: (0, 0, 0)})
        out[v["name"]] = path
    return out


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_report(report: dict, out_dir: str | os.PathLike, plots: bool = True,
                 markdown: str | os.PathLike | None = None,
                 figures: str | os.PathLike | None = None) -> Path:
    """Write ``report.json``, ``report.md`` and ``plots/<video>.png`` into ``out_dir`` (each file
    atomically), and optionally a copy of the Markdown at ``markdown`` whose plots are written
    to ``figures`` as ``eval_<video>.png`` (default: beside ``out_dir``'s) and linked
    relatively."""
    out_dir = Path(out_dir)
    out_dir.mkdir(exist_ok=True)
    _write_text(out_dir / "report.json",
                json.dumps(report, indent=1, ensure_ascii=False, allow_nan=False) + "\n")
    links: dict[str, str] = {}
    if plots:
        (out_dir / "plots").mkdir(exist_ok=True)
        made = write_plots(report, out_dir / "plots")
        links = {k: f"plots/{p.name}" for k, p in made.items()}
    _write_text(out_dir / "report.md", render_markdown(report, links))
    if markdown is not None:
        markdown = Path(markdown)
        other: dict[str, str] = {}
        if plots:
            folder = Path(figures) if figures is not None else out_dir / "plots"
            made = (write_plots(report, folder, "eval_") if figures is not None
                    else {k: out_dir / "plots" / f"{k}.png" for k in links})
            other = {k: os.path.relpath(p, markdown.parent) for k, p in made.items()}
        _write_text(markdown, render_markdown(report, other))
    return out_dir


def command_line() -> str:
    """The command as typed (for the report), program name shortened to ``faceanime``."""
    return " ".join(["faceanime", *sys.argv[1:]])
