"""Checkpoints of score networks: weights-only torch files with a verified JSON sidecar.

A checkpoint is two files:

* ``CKPT``: ``torch.save`` of plain containers and tensors only,
  ``{"model": state_dict, "raw": state_dict | None, "optimizer": Adam state_dict | None,
  "step": int, "history": float64 tensor (m, 2) of (step, loss)}``; "model" holds the weights to
  sample with (the exponential moving average when training kept one, then "raw" holds the
  optimised weights that resuming continues from). It is read with
  ``torch.load(weights_only=True)``, which refuses any pickled object other than tensors and
  plain containers, so loading never executes code from the file.
* ``CKPT.json``: the network config, the training config (target spec, process, ...), the step
  count, the final loss, the torch version and the sha256 of ``CKPT``.

``load_checkpoint`` checks the sidecar's sha256 before unpickling anything, and checks every
parameter's shape against the network the sidecar describes before loading it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from convergence.learned.device import resolve_device
from convergence.learned.network import NetworkConfig, ScoreNetwork

FORMAT = "convergence.learned/1"
FINAL_LOSS_WINDOW = 50  # the sidecar's final loss is the mean of the last <= 50 training losses


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON sidecar of a checkpoint: ``CKPT.json`` beside ``CKPT``."""
    return Path(str(path) + ".json")


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def save_checkpoint(
    path: str | os.PathLike,
    model: ScoreNetwork,
    network_config: NetworkConfig,
    train_config: Any,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    step: int,
    history: list[tuple[int, float]],
    raw: ScoreNetwork | None = None,
    extra: dict | None = None,
) -> Path:
    """Write ``path`` (weights-only torch file) and its sidecar ``path.json``; returns ``path``.

    ``model`` is the network to sample with, ``raw`` the optimised weights when ``model`` is their
    moving average, ``optimizer`` the Adam state for resuming, ``train_config`` a dataclass
    (``TrainConfig``), ``extra`` more JSON-able sidecar fields (device, wall time). Both files are
    written to temporary names and renamed, so an interrupted save leaves the old pair intact
    up to the last rename.
    """
    if model.config != network_config:
        raise ValueError(
            f"the model's config {model.config} differs from network_config {network_config}"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "model": _cpu_state(model),
        "raw": None if raw is None else _cpu_state(raw),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "step": int(step),
        "history": torch.tensor(history, dtype=torch.float64).reshape(-1, 2),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tail = [loss for _, loss in history[-FINAL_LOSS_WINDOW:]]
    meta = {
        "format": FORMAT,
        "network": dataclasses.asdict(network_config),
        "train": dataclasses.asdict(train_config),
        "step": int(step),
        "final_loss": sum(tail) / len(tail) if tail else None,
        "torch": torch.__version__,
        "sha256": sha256_of(tmp),
        "weights": path.name,
        "resumable": optimizer is not None,
        "ema": raw is not None,
        **(extra or {}),
    }
    side = sidecar_path(path)
    side_tmp = side.with_name(side.name + ".tmp")
    side_tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, path)
    os.replace(side_tmp, side)
    return path


def read_checkpoint(
    path: str | os.PathLike, device: str | torch.device = "auto"
) -> tuple[dict, dict]:
    """The verified contents (state dict of the module docstring, sidecar dict) of a checkpoint,
    tensors on the resolved ``device``. Raises ValueError (one line) when the file or its sidecar
    is missing, the sha256 does not match, or the file holds anything but tensors and plain
    containers."""
    dev = resolve_device(device)
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path}: no such file")
    side = sidecar_path(path)
    if not side.is_file():
        raise ValueError(f"checkpoint {path} has no sidecar {side.name}; it cannot be verified")
    try:
        meta = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"sidecar {side} is not valid JSON: {exc}") from None
    missing = {"network", "train", "step", "sha256"} - set(meta if isinstance(meta, dict) else {})
    if missing:
        raise ValueError(f"sidecar {side} lacks {', '.join(sorted(missing))}")
    if sha256_of(path) != meta["sha256"]:
        raise ValueError(
            f"checkpoint {path} does not match the sha256 in its sidecar (modified or "
            "truncated); retrain or restore it"
        )
    try:
        state = torch.load(path, map_location=dev, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise ValueError(
            f"checkpoint {path} is not a weights-only checkpoint; refused to load it ({reason})"
        ) from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise ValueError(f"checkpoint {path} holds no 'model' state dict")
    return state, meta


def network_config_of(meta: dict, path: str | os.PathLike = "") -> NetworkConfig:
    """The NetworkConfig recorded in a sidecar (ValueError when it is not a valid one)."""
    try:
        return NetworkConfig(**meta["network"])
    except TypeError as exc:
        raise ValueError(f"sidecar of {path} has a bad network config: {exc}") from None


def load_weights(model: nn.Module, weights: dict, path: str | os.PathLike = "") -> None:
    """``model.load_state_dict(weights, strict=True)`` after checking names and shapes, so a
    mismatch is one line naming the parameter and both shapes."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {path} does not fit the network of its sidecar: missing "
            f"{missing[:3] or 'none'}, unexpected {unexpected[:3] or 'none'}"
        )
    for name, tensor in expected.items():
        got = weights[name]
        if not isinstance(got, torch.Tensor) or got.shape != tensor.shape:
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise ValueError(
                f"checkpoint {path}: parameter {name} has shape {shape} in the weights but "
                f"{tuple(tensor.shape)} in the network its sidecar describes"
            )
    model.load_state_dict(weights, strict=True)


def load_checkpoint(
    path: str | os.PathLike, device: str | torch.device = "auto"
) -> tuple[ScoreNetwork, dict]:
    """The network of a checkpoint (eval mode, parameters frozen, on the resolved ``device``)
    and its sidecar dict (keys "network", "train", "step", "final_loss", "torch", "sha256",
    ...). Verification as in ``read_checkpoint`` and ``load_weights``."""
    state, meta = read_checkpoint(path, device)
    model = ScoreNetwork(network_config_of(meta, path), seed=None, device=resolve_device(device))
    load_weights(model, state["model"], path)
    model.eval()
    model.requires_grad_(False)  # sampling builds no autograd graph through the weights
    return model, meta
