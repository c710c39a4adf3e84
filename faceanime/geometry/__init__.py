"""Rotations and cameras: batched pure functions on tensors shared by the fitter and renderer."""

from faceanime.geometry.camera import project_orthographic, project_perspective
from faceanime.geometry.rotation import (
    euler_to_matrix,
    matrix_to_euler,
    so3_exp,
    so3_log,
)

__all__ = [
    "euler_to_matrix",
    "matrix_to_euler",
    "project_orthographic",
    "project_perspective",
    "so3_exp",
    "so3_log",
]
