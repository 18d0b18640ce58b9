"""Where computations run by default."""

from __future__ import annotations

import os

import torch

__all__ = ["device"]


def device() -> torch.device:
    """``cuda`` when a GPU is available, else ``cpu``; the ``DVE_DEVICE`` environment variable overrides."""
    name = os.environ.get("DVE_DEVICE")
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
