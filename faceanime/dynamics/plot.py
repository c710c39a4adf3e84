"""The training loss plot, drawn with Pillow (no plotting library is a dependency).

Log-scale y axis (linear when a value is <= 0: the likelihood term can be negative), the step on
x; the per-step training loss is shown faint and as a moving average, validation losses as a
line with dots.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from faceanime.io.atomic import atomic_path

Series = tuple[str, Sequence[float], Sequence[float], tuple[int, int, int]]


def _moving_average(values: Sequence[float], width: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= width:
            acc -= values[i - width]
        out.append(acc / min(i + 1, width))
    return out


def plot_losses(path: str | os.PathLike, steps: Sequence[float], train: Sequence[float],
                val_steps: Sequence[float] = (), val: Sequence[float] = (),
                title: str = "3DDP training", size: tuple[int, int] = (800, 480)) -> None:
    """Write a PNG of the training (and validation) loss against the step, atomically."""
    width, height = size
    left, right, top, bottom = 70, 20, 36, 46
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    smooth = _moving_average(list(train), max(1, len(train) // 50))
    values = [v for v in [*train, *val] if math.isfinite(v)]
    if not values or not steps:
        draw.text((left, top), "no data yet", fill="black", font=font)
    else:
        log = min(values) > 0
        scale = math.log10 if log else float
        lo, hi = scale(min(values)), scale(max(values))
        if hi - lo < 1e-6:
            lo, hi = lo - 0.5, hi + 0.5
        x0, x1 = min(steps), max(max(steps), min(steps) + 1)

        def xy(step: float, value: float) -> tuple[float, float]:
            fx = (step - x0) / (x1 - x0)
            fy = (scale(value) - lo) / (hi - lo) if math.isfinite(value) else 0.0
            return left + fx * (width - left - right), top + (1 - fy) * (height - top - bottom)

        marks = []
        if log:  # grid at powers of ten (and 2x, 5x when the range is narrow)
            for decade in range(math.floor(lo), math.ceil(hi) + 1):
                for m in ((1,) if hi - lo > 2 else (1, 2, 5)):
                    v = m * 10.0 ** decade
                    if lo <= math.log10(v) <= hi:
                        marks.append(v)
            if len(marks) < 3:  # a narrow range: label its ends and middle too
                marks += [10 ** (lo + (hi - lo) * i / 4) for i in (0, 2, 4)]
        else:
            marks = [lo + (hi - lo) * i / 5 for i in range(6)]
        for v in marks:
            _, y = xy(x0, v)
            draw.line([(left, y), (width - right, y)], fill=(225, 225, 225))
            draw.text((4, y - 6), f"{v:.3g}", fill="black", font=font)
        for i in range(6):
            s = x0 + (x1 - x0) * i / 5
            x = left + i / 5 * (width - left - right)
            draw.text((x - 12, height - bottom + 6), f"{s:.0f}", fill="black", font=font)
        series: list[Series] = [("train", steps, train, (200, 210, 240)),
                                ("train (avg)", steps, smooth, (30, 70, 200))]
        if val:
            series.append(("validation", val_steps, val, (220, 80, 20)))
        for name, xs, ys, colour in series:
            points = [xy(s, v) for s, v in zip(xs, ys, strict=True) if math.isfinite(v)]
            if len(points) > 1:
                draw.line(points, fill=colour, width=2)
            if name == "validation":
                for x, y in points:
                    draw.ellipse([x - 2.5, y - 2.5, x + 2.5, y + 2.5], fill=colour)
        legend_x = width - right - 300
        for i, (name, _, _, colour) in enumerate(series):
            lx = legend_x + i * 100
            draw.line([(lx, 18), (lx + 18, 18)], fill=colour, width=3)
            draw.text((lx + 22, 12), name, fill="black", font=font)
    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    draw.text((left, 10), title, fill="black", font=font)
    draw.text(((width - left) // 2 + left - 20, height - 18), "step", fill="black", font=font)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
