"""3DMM fitting: shape, expression, jaw and pose from 68-point landmarks, for photos and videos.

- :mod:`~faceanime.fitting.fitter` — the batched Levenberg–Marquardt core (tensors in and out);
- :mod:`~faceanime.fitting.api` — photos and videos end to end (landmarks detected or read);
- :mod:`~faceanime.fitting.contour` — jaw-outline correspondences;
- :mod:`~faceanime.fitting.init` — closed-form initial pose;
- :mod:`~faceanime.fitting.overlay` — the fitted mesh drawn over its image.

The objective, camera, coefficient file and weights are explained in ``docs/fitting.md``.
"""

from faceanime.fitting.api import fit_file, fit_image, fit_video, read_landmarks_file
from faceanime.fitting.fitter import FitConfig, fit_landmarks
from faceanime.fitting.overlay import draw_mesh

__all__ = [
    "FitConfig",
    "draw_mesh",
    "fit_file",
    "fit_image",
    "fit_landmarks",
    "fit_video",
    "read_landmarks_file",
]
