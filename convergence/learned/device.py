"""Where a network runs: the one place that turns a device request into a torch.device.

Every other module of ``convergence.learned`` (training, checkpoint loading, learned scores) asks
``resolve_device`` and then creates its tensors on the device it got; nothing else in the package
calls ``.cuda()`` or tests for CUDA.
"""

from __future__ import annotations

import re

import torch

DEVICES = ("auto", "cpu", "cuda", "cuda:N")
_CUDA = re.compile(r"cuda(:\d+)?")


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """The torch.device named by ``spec``.

    "auto" is CUDA (the current CUDA device) when ``torch.cuda.is_available()``, else the CPU;
    "cpu" is the CPU; "cuda" / "cuda:N" is that CUDA device and raises ValueError when CUDA is
    not available (or N is not one of its devices). A torch.device is checked the same way.
    Anything else raises ValueError naming the allowed values.
    """
    text = str(spec).strip().lower() if isinstance(spec, str | torch.device) else None
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text is not None and _CUDA.fullmatch(text):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {text!r} requested but CUDA is not available on this machine; "
                "use --device auto or cpu"
            )
        device = torch.device(text)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {text!r} requested but this machine has {torch.cuda.device_count()} "
                "CUDA device(s)"
            )
        return device
    raise ValueError(f"unknown device {spec!r}; allowed: {', '.join(DEVICES)}")
