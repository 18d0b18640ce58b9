"""The an8Flower localisation score (Oramas et al., METHODS.md §6): IoU curves over thresholds.

Each heatmap is min-max normalised to [0, 1]; at every threshold ``τ`` the region ``{h ≥ τ}`` is compared with
the ground-truth mask by pixel IoU; IoUs are averaged over images, then over thresholds (the normalised area
under the IoU curve) and reported ×100. The paper does not give its threshold grid: the default here is
0.05, 0.10, …, 0.95 (:data:`THRESHOLDS`).

Edge cases, never NaN: an empty ground-truth mask is an error (no region to find); a constant heatmap
normalises to all zeros, so ``{h ≥ τ}`` is empty for every ``τ > 0`` and its IoU is 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .maps import normalize

__all__ = ["THRESHOLDS", "iou_curve", "mean_iou", "per_image_iou", "evaluate", "summary", "salient_area"]

#: Default threshold grid: 0.05 … 0.95 in steps of 0.05 (our choice; the paper's grid is unknown).
THRESHOLDS = torch.arange(1, 20, dtype=torch.float64) / 20


def _check(heatmaps: Tensor, masks: Tensor) -> None:
    if heatmaps.ndim != 3 or masks.shape != heatmaps.shape:
        raise ValueError(
            f"heatmaps and masks must both be B×H×W of one shape, got {tuple(heatmaps.shape)} and {tuple(masks.shape)}"
        )
    if not heatmaps.is_floating_point():
        raise TypeError(f"heatmaps must be floating point, got {heatmaps.dtype}")
    if not torch.isfinite(heatmaps).all():
        raise ValueError("heatmaps contain NaN or infinite values")
    empty = ~masks.bool().flatten(1).any(1)
    if empty.any():
        raise ValueError(f"ground-truth mask of image {int(empty.nonzero()[0])} is empty: nothing to localise")


def per_image_iou(heatmaps: Tensor, masks: Tensor, thresholds: Tensor | None = None) -> Tensor:
    """IoU of ``{h ≥ τ}`` with the mask for every image and threshold: B×T, on the heatmaps' device.

    Vectorised without a B×T×H×W tensor: each pixel is binned by how many thresholds it reaches, so the
    predicted and intersecting areas at every threshold are reverse cumulative sums of per-image bin counts.
    """
    _check(heatmaps, masks)
    t = (THRESHOLDS if thresholds is None else torch.as_tensor(thresholds, dtype=torch.float64)).to(heatmaps.device)
    if t.ndim != 1 or t.numel() == 0 or (t <= 0).any() or (t > 1).any():
        raise ValueError("thresholds must be a non-empty 1-D sequence of values in (0, 1]")
    t, _ = t.sort()
    h = normalize(heatmaps.double()).flatten(1)
    m = masks.bool().flatten(1)
    b, n_t = h.shape[0], t.numel()
    level = torch.bucketize(h, t, right=True)  # number of thresholds each pixel reaches, 0..T
    counts = torch.zeros(b, n_t + 1, dtype=torch.float64, device=h.device)
    counts.scatter_add_(1, level, torch.ones_like(h))
    inside = torch.zeros_like(counts).scatter_add_(1, level, m.double())
    predicted = counts.flip(1).cumsum(1).flip(1)[:, 1:]  # pixels with level > k, i.e. h ≥ t_k
    inter = inside.flip(1).cumsum(1).flip(1)[:, 1:]
    union = predicted + m.sum(1, keepdim=True) - inter
    return inter / union


def iou_curve(heatmaps: Tensor, masks: Tensor, thresholds: Tensor | None = None) -> Tensor:
    """Mean IoU over images at every threshold (length T)."""
    return per_image_iou(heatmaps, masks, thresholds).mean(0)


def mean_iou(heatmaps: Tensor, masks: Tensor, thresholds: Tensor | None = None) -> float:
    """Mean over thresholds of the mean IoU over images, ×100 (the an8Flower table's number)."""
    return float(iou_curve(heatmaps, masks, thresholds).mean() * 100)


def salient_area(heatmaps: Tensor, threshold: float = 0.5) -> Tensor:
    """Fraction of each image's pixels whose normalised heat is at least ``threshold`` (B): how much of the
    image an explanation calls salient — the quantity behind "the better network attends to a smaller area"."""
    return (normalize(heatmaps) >= threshold).flatten(1).float().mean(1)


def evaluate(
    model: torch.nn.Module,
    images: Tensor,
    masks: Tensor,
    methods: Sequence[str],
    target: Tensor | None = None,
    thresholds: Tensor | None = None,
    params: dict[str, dict[str, Any]] | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> dict[str, Tensor]:
    """Per-image IoU curves (N×T) of every method on a labelled set, in batches on the model's device.

    ``target``: the explained class of each image (default: the model's top-1 prediction, as in Oramas et
    al.'s protocol); ``params[name]`` overrides a method's registry defaults.
    """
    from tqdm.auto import tqdm

    from .registry import explain

    params = params or {}
    dev = next(model.parameters()).device
    out: dict[str, list[Tensor]] = {m: [] for m in methods}
    steps = [(m, i) for m in methods for i in range(0, len(images), batch_size)]
    for m, i in tqdm(steps, desc="explaining", unit="batch", disable=not progress):
        x = images[i : i + batch_size].to(dev)
        t = None if target is None else target[i : i + batch_size].to(dev)
        heat = explain(m, model, x, t, **params.get(m, {}))
        out[m].append(per_image_iou(heat, masks[i : i + batch_size].to(dev), thresholds))
    return {m: torch.cat(v) for m, v in out.items()}


def summary(results: dict[str, Tensor]) -> dict[str, float]:
    """Mean IoU ×100 per method (mean over images, then thresholds) from :func:`evaluate`'s curves."""
    return {m: float(curves.mean(0).mean() * 100) for m, curves in results.items()}
