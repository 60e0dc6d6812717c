"""Which torch device a stage runs on: ``auto`` (a visible CUDA GPU, else the CPU), ``cpu`` or ``cuda``."""

from __future__ import annotations

import torch

from leam.errors import LeamError, check_choice

__all__ = ["DEVICES", "resolve_device"]

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(choice: str = "auto", key: str = "device") -> torch.device:
    """The device for ``choice``; ``cuda`` without a visible GPU is one LeamError naming the param ``key``."""
    check_choice(key, choice, DEVICES)
    if choice == "cuda" and not torch.cuda.is_available():
        raise LeamError(f"{key}=cuda but no CUDA device is visible; use auto or cpu")
    return torch.device("cuda" if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()) else "cpu")
