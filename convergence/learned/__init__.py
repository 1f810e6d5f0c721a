"""Score networks trained by denoising score matching on mixture targets, and their checkpoints.

``resolve_device`` (the one place device requests are resolved), ``NetworkConfig`` /
``ScoreNetwork`` (the network), ``TrainConfig`` / ``train`` (denoising score matching),
``save_checkpoint`` / ``load_checkpoint`` (weights-only files with a verified JSON sidecar).
"""

from convergence.learned.checkpoint import (
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
    sidecar_path,
)
from convergence.learned.device import resolve_device
from convergence.learned.network import NetworkConfig, ScoreNetwork
from convergence.learned.training import LossBar, TrainConfig, data_std, train

__all__ = [
    "LossBar",
    "NetworkConfig",
    "ScoreNetwork",
    "TrainConfig",
    "data_std",
    "load_checkpoint",
    "read_checkpoint",
    "resolve_device",
    "save_checkpoint",
    "sidecar_path",
    "train",
]
