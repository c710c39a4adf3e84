"""faceanime: 3D-prior face video generation (FaceAnime, Tu et al., TCSVT 2021).

The pipeline's stages live in sub-packages named for what they are:

- :mod:`faceanime.morphable` — 3D morphable face models (SFM, BFM) and vertex generation;
- :mod:`faceanime.landmarks` — 68-point iBUG landmarks for images and videos;
- :mod:`faceanime.io` — image and video reading/writing at the edges;
- :mod:`faceanime.jobs` — the jobs, composing the stages: ``retarget``, ``predict``, ``animate``,
  ``swap`` and what they share (:mod:`faceanime.jobs.common`).

The jobs are functions of the package, imported on first use (they pull in torch and the
renderers): ``faceanime.retarget(photo, driving, "out.mp4")``, ``faceanime.predict(photo,
"out.mp4", dynamics=ckpt)``, ``faceanime.animate(photo_a, photo_b, "out.mp4")`` (docs/usage.md)
and ``faceanime.swap(photo, target_video, "out.mp4")`` (docs/swap.md).
"""

__version__ = "0.1.0"

_JOBS = ("retarget", "predict", "animate", "swap")


def __getattr__(name: str):
    if name in _JOBS:
        import importlib

        # The job's module is callable as its function (faceanime.jobs.common.callable_module).
        return importlib.import_module(f"faceanime.jobs.{name}")
    raise AttributeError(f"module 'faceanime' has no attribute {name!r}")
