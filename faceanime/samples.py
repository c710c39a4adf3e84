"""What ships in the package to try the toolkit with nothing else at hand: a sample portrait and
motion templates.

- :func:`sample_portrait` — ``faceanime/data/samples/portrait.jpg``, astronaut Eileen Collins
  (NASA, public domain, by way of scikit-image's ``astronaut`` image), head and shoulders, 384².
- :data:`DEFAULT_DYNAMICS` — a small 3DDP checkpoint for ``faceanime predict`` without
  ``--dynamics``.
- :data:`MOTION_TEMPLATES` — coefficient files (``faceanime/data/motions/NAME.npz``, tens of KB
  each) of real head and face motion, fitted with the Surrey Face Model from the MIT-licensed
  talking-head videos of the LivePortrait repository by ``tools/make_motion_templates.py``. A job
  takes one by name wherever it takes a driving coefficient file: ``--driving talk``.

``faceanime/data/*/README.md`` holds each file's source and licence.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
SAMPLES_DIR = DATA_DIR / "samples"
MOTIONS_DIR = DATA_DIR / "motions"
DEFAULT_DYNAMICS = DATA_DIR / "dynamics" / "talking_head.safetensors"
"""The 3DDP checkpoint ``faceanime predict`` uses when given none: a 16-unit LSTM trained by
``tools/train_default_dynamics.py`` on three of the shared talking-head videos (its JSON beside
it says how)."""


@dataclass(frozen=True)
class MotionTemplate:
    """A shipped motion: its ``name``, what it shows, and where it comes from (``video``, the
    first and one-past-last ``start``/``stop`` frame of that video's fit)."""

    name: str
    description: str
    video: str
    start: int
    stop: int

    @property
    def path(self) -> Path:
        return MOTIONS_DIR / f"{self.name}.npz"


MOTION_TEMPLATES: tuple[MotionTemplate, ...] = (
    MotionTemplate("talk", "talking: lips, blinks, small head motion", "d6", 0, 300),
    MotionTemplate("nod", "nodding while talking", "d3", 230, 354),
    MotionTemplate("turn", "talking with the head turned left and right", "d3", 0, 230),
    MotionTemplate("smile", "a broad smile and back", "d18", 60, 216),
)
DEFAULT_TEMPLATE = "talk"


def sample_portrait() -> Path:
    """The bundled sample portrait (a public-domain photo, 384² JPEG)."""
    return SAMPLES_DIR / "portrait.jpg"


def template_names() -> list[str]:
    return [t.name for t in MOTION_TEMPLATES]


def motion_template(name: str) -> MotionTemplate | None:
    """The template called ``name`` (case-insensitive), or None."""
    key = name.strip().lower()
    return next((t for t in MOTION_TEMPLATES if t.name == key), None)


def resolve_driving(driving: str | os.PathLike) -> Path:
    """A driving input as a path: a template's name (one that is not also a file here) gives
    its coefficient file; anything else is taken as the path it is."""
    text = os.fspath(driving)
    path = Path(text)
    if path.exists() or path.suffix:
        return path
    template = motion_template(text)
    return template.path if template is not None else path
