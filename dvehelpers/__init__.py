"""dvehelpers: the tested compute behind the Deep Visual Explanation notebooks.

>>> import dvehelpers as dh
>>> heatmaps = dh.explain("gradcam", model, images, target=None)   # B×H×W in [0, 1]
"""

from __future__ import annotations

import os

import torch

from . import (
    backprop,
    data,
    evaluate,
    experiments,
    geometry,
    images,
    maps,
    methods,
    metrics,
    models,
    protocol,
    sanity,
    trace,
    train,
    viz,
    widgets,
)
from .registry import METHODS, Method, Param, explain, register

__version__ = "0.1.0"
__all__ = [
    "device",
    "explain",
    "register",
    "METHODS",
    "Method",
    "Param",
    "models",
    "trace",
    "geometry",
    "backprop",
    "maps",
    "methods",
    "data",
    "evaluate",
    "metrics",
    "protocol",
    "sanity",
    "experiments",
    "images",
    "train",
    "viz",
    "widgets",
    "__version__",
]


def device() -> torch.device:
    """``cuda`` when a GPU is available, else ``cpu``; the ``DVE_DEVICE`` environment variable overrides."""
    name = os.environ.get("DVE_DEVICE")
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
