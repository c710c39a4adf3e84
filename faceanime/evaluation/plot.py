"""Per-frame metric curves, drawn with Pillow (no plotting library is a dependency).

A general form of the loss plot in :mod:`faceanime.dynamics.plot`: any number of stacked panels,
each with any number of named series over a shared x axis; linear y axes; non-finite values
(NaN: no face; inf: identical frames) leave gaps.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from faceanime.io.atomic import atomic_path

# Distinct colours, in method order (static grey, then the other methods in report order).
PALETTE = ((120, 120, 120), (30, 90, 200), (230, 110, 20), (40, 160, 70), (180, 40, 160),
           (200, 40, 40), (20, 160, 170))


@dataclass
class Panel:
    """One chart: a title and ``(name, xs, ys)`` series."""

    title: str
    series: Sequence[tuple[str, Sequence[float], Sequence[float]]]


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    return [lo + (hi - lo) * i / count for i in range(count + 1)]


def _draw_panel(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], panel: Panel,
                colours: dict[str, tuple[int, int, int]], xlabel: str, font) -> None:
    x_left, y_top, x_right, y_bottom = box
    left, right, top, bottom = x_left + 64, x_right - 12, y_top + 22, y_bottom - 28
    draw.text((left, y_top + 4), panel.title, fill="black", font=font)
    xs = [x for _, sx, _ in panel.series for x in sx]
    ys = [y for _, _, sy in panel.series for y in sy if math.isfinite(y)]
    draw.rectangle([left, top, right, bottom], outline="black")
    if not xs or not ys:
        draw.text((left + 8, top + 8), "no finite values", fill="black", font=font)
        return
    x0, x1 = min(xs), max(max(xs), min(xs) + 1)
    lo, hi = min(ys), max(ys)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    pad = 0.05 * (hi - lo)
    lo, hi = lo - pad, hi + pad

    def xy(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x0) / (x1 - x0) * (right - left),
                top + (1 - (y - lo) / (hi - lo)) * (bottom - top))

    for v in _ticks(lo, hi, 4):
        _, y = xy(x0, v)
        draw.line([(left + 1, y), (right - 1, y)], fill=(228, 228, 228))
        draw.text((x_left + 4, y - 6), f"{v:.4g}", fill="black", font=font)
    for v in _ticks(x0, x1, 5):
        x, _ = xy(v, lo)
        draw.text((x - 10, bottom + 4), f"{v:.0f}", fill="black", font=font)
    draw.text(((left + right) // 2 - 12, bottom + 14), xlabel, fill="black", font=font)
    for name, sx, sy in panel.series:
        colour = colours[name]
        run: list[tuple[float, float]] = []
        for x, y in [*zip(sx, sy, strict=True), (None, None)]:
            if x is not None and math.isfinite(y):
                run.append(xy(x, y))
                continue
            if len(run) > 1:
                draw.line(run, fill=colour, width=2)
            elif len(run) == 1:
                px, py = run[0]
                draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=colour)
            run = []


def plot_panels(path: str | os.PathLike, panels: Sequence[Panel], title: str,
                xlabel: str = "frame", width: int = 900, panel_height: int = 190,
                fixed: Mapping[str, tuple[int, int, int]] | None = None) -> None:
    """Write a PNG of stacked line charts with one legend for all, atomically. Series take the
    :data:`PALETTE` colours in order of appearance, except those named in ``fixed`` (e.g. the
    driver's, in black)."""
    fixed = fixed or {}
    names: list[str] = []
    for panel in panels:
        for name, _, _ in panel.series:
            if name not in names:
                names.append(name)
    free = [n for n in names if n not in fixed]
    colours = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(free)}
    colours.update({n: fixed[n] for n in names if n in fixed})
    header = 44
    image = Image.new("RGB", (width, header + panel_height * max(1, len(panels))), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    draw.text((10, 8), title, fill="black", font=font)
    lx = 10
    for name in names:
        draw.line([(lx, 32), (lx + 18, 32)], fill=colours[name], width=3)
        draw.text((lx + 22, 26), name, fill="black", font=font)
        lx += 30 + 7 * len(name)
    for i, panel in enumerate(panels):
        top = header + i * panel_height
        _draw_panel(draw, (0, top, width, top + panel_height), panel, colours, xlabel, font)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
