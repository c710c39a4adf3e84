"""3D dynamics prediction (3DDP, FaceAnime §III-A): an LSTM over per-frame coefficient vectors
that rolls a face's expression and pose forward from one photo or a few frames (free-running,
seeded) or towards a target expression that it reaches on time (target-driven).

- :mod:`~faceanime.dynamics.config` — network, loss and training settings;
- :mod:`~faceanime.dynamics.features` — image-independent, normalised coefficient features;
- :mod:`~faceanime.dynamics.model` — the LSTM, its roll-outs and the timer weighting;
- :mod:`~faceanime.dynamics.vertices` — posed vertices for the vertex loss and metrics;
- :mod:`~faceanime.dynamics.losses` — coefficient L2, vertex L2, Gaussian NLL;
- :mod:`~faceanime.dynamics.data` — dataset folders, the split by video, windows;
- :mod:`~faceanime.dynamics.train` — training, logs and the loss plot;
- :mod:`~faceanime.dynamics.checkpoint` — safetensors + JSON checkpoints;
- :mod:`~faceanime.dynamics.infer` — :func:`predict` and :func:`animate` on coefficients;
- :mod:`~faceanime.dynamics.calibrate` — sampled motion calibrated to real speed.

Design and measured results: ``docs/dynamics.md``.
"""

from faceanime.dynamics.calibrate import calibrate_noise
from faceanime.dynamics.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from faceanime.dynamics.config import DynamicsConfig, LossConfig, TrainConfig
from faceanime.dynamics.data import Dataset, load_dataset, split_videos
from faceanime.dynamics.features import Normalizer, from_features, to_features
from faceanime.dynamics.infer import Dynamics, animate, innovations, predict
from faceanime.dynamics.model import DynamicsModel
from faceanime.dynamics.train import TrainResult, train
from faceanime.dynamics.vertices import VertexSubset

__all__ = [
    "Checkpoint",
    "Dataset",
    "Dynamics",
    "DynamicsConfig",
    "DynamicsModel",
    "LossConfig",
    "Normalizer",
    "TrainConfig",
    "TrainResult",
    "VertexSubset",
    "animate",
    "calibrate_noise",
    "from_features",
    "innovations",
    "load_checkpoint",
    "load_dataset",
    "predict",
    "save_checkpoint",
    "split_videos",
    "to_features",
    "train",
]
