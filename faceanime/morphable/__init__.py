"""3D morphable face models: one :class:`FaceModel` whatever file it came from.

- :mod:`~faceanime.morphable.model` — the model and vertex generation;
- :mod:`~faceanime.morphable.eos` — the Surrey Face Model (eos binary files);
- :mod:`~faceanime.morphable.bfm` — Basel Face Model 2009 and Deep3DFaceRecon's BFM_model_front;
- :mod:`~faceanime.morphable.storage` — the project's own ``.npz`` model file;
- :mod:`~faceanime.morphable.registry` — ``load_model(name_or_path)`` and the search folders.

Formats, units and where to get each model: ``docs/models.md``.
"""

from faceanime.morphable.bfm import load_bfm2009, load_bfm_front
from faceanime.morphable.eos import load_sfm
from faceanime.morphable.model import N_LANDMARKS, FaceModel
from faceanime.morphable.registry import (
    KNOWN_MODELS,
    ModelSource,
    ModelSpec,
    load_model,
    resolve_model,
    search_folders,
)
from faceanime.morphable.storage import load_model_npz, save_model

__all__ = [
    "KNOWN_MODELS",
    "N_LANDMARKS",
    "FaceModel",
    "ModelSource",
    "ModelSpec",
    "load_bfm2009",
    "load_bfm_front",
    "load_model",
    "load_model_npz",
    "load_sfm",
    "resolve_model",
    "save_model",
    "search_folders",
]
