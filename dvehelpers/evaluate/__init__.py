"""The evaluation: localisation scores (:mod:`.iou`), further metrics (:mod:`.metrics`), sanity checks
(:mod:`.sanity`), the grid pointing game on real photos (:mod:`.grid`), the papers' experiments
(:mod:`.experiments`), the whole an8Flower protocol (:mod:`.protocol`) and the writing of its results
(:mod:`.report`).

``dh.evaluate.per_image_iou``, ``dh.evaluate.heatmaps`` … are the localisation score's functions; ``dh.evaluate.run``
runs the whole protocol (:func:`dvehelpers.evaluate.protocol.run`).
"""

from . import experiments, grid, iou, metrics, protocol, report, sanity
from .iou import (
    REFERENCES,
    THRESHOLDS,
    Sensitivity,
    check_maps,
    class_sensitivity,
    confusions,
    correlation,
    evaluate,
    heatmaps,
    iou_curve,
    mean_iou,
    per_class,
    per_image_iou,
    reference_maps,
    salient_area,
    salient_parts,
    salient_shares,
    summary,
)
from .protocol import bootstrap_interval, run

__all__ = [
    "experiments",
    "grid",
    "iou",
    "metrics",
    "protocol",
    "report",
    "sanity",
    "run",
    "bootstrap_interval",
    "REFERENCES",
    "THRESHOLDS",
    "Sensitivity",
    "check_maps",
    "class_sensitivity",
    "confusions",
    "correlation",
    "evaluate",
    "heatmaps",
    "iou_curve",
    "mean_iou",
    "per_class",
    "per_image_iou",
    "reference_maps",
    "salient_area",
    "salient_parts",
    "salient_shares",
    "summary",
]
