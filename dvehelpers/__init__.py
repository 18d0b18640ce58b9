"""dvehelpers: the tested compute behind the Deep Visual Explanation notebooks.

>>> import dvehelpers as dh
>>> heatmaps = dh.explain("gradcam", model, images, target=None)   # B×H×W in [0, 1]

The package's folders follow its architecture: :mod:`~dvehelpers.engine` (capture any classifier as a graph,
record a forward pass, walk a signal back by rule sets), :mod:`~dvehelpers.methods` (one module per paper or
baseline family, registered in :data:`METHODS`), :mod:`~dvehelpers.evaluate` (scores, metrics, sanity checks,
experiments, the an8Flower protocol and its report), :mod:`~dvehelpers.data` (the rendered an8Flower analogue),
:mod:`~dvehelpers.models` (builders, checkpoints, layers by name), :mod:`~dvehelpers.viz` and
:mod:`~dvehelpers.widgets`.
"""

from __future__ import annotations

from . import data, diagrams, engine, evaluate, images, integrity, maps, methods, models, train, viz, widgets
from .devices import device
from .evaluate import experiments, metrics, protocol, sanity
from .registry import METHODS, Method, Param, explain, register
from .version import __version__

__all__ = [
    "device",
    "explain",
    "register",
    "METHODS",
    "Method",
    "Param",
    "engine",
    "models",
    "maps",
    "methods",
    "data",
    "evaluate",
    "metrics",
    "protocol",
    "sanity",
    "experiments",
    "images",
    "integrity",
    "train",
    "viz",
    "diagrams",
    "widgets",
    "__version__",
]
