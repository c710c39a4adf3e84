"""The CSV log of a training run (one row per step, validation columns on some rows), read back
on resume and rewritten atomically, so an interrupted run never leaves a torn log."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from faceanime.io.atomic import atomic_path


def read_log(path: str | os.PathLike, upto: int) -> list[dict[str, str]]:
    """Rows of an existing log up to step ``upto`` (a resumed run replaces the later ones);
    none when there is no log."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return [row for row in csv.DictReader(fh) if int(row["step"]) <= upto]


def write_log(path: str | os.PathLike, fields: Sequence[str],
              rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` (dicts keyed by ``fields``; missing keys empty) as the whole log."""
    with atomic_path(Path(path)) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, list(fields))
        writer.writeheader()
        writer.writerows(rows)
