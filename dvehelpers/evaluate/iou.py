"""The an8Flower localisation score (Oramas et al., METHODS.md §6): IoU curves over thresholds.

Each heatmap is min-max normalised to [0, 1]; at every threshold ``τ`` the region ``{h ≥ τ}`` is compared with
the ground-truth mask by pixel IoU; IoUs are averaged over images, then over thresholds (the normalised area
under the IoU curve) and reported ×100. The paper does not give its threshold grid: the default here is
0.05, 0.10, …, 0.95 (:data:`THRESHOLDS`).

Edge cases, never NaN: an empty ground-truth mask is an error (no region to find); a constant heatmap
normalises to all zeros, so ``{h ≥ τ}`` is empty for every ``τ > 0`` and its IoU is 0.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..data import PARTS
from ..maps import THRESHOLDS, normalize
from ..models import num_classes
from ..registry import explain
from ..train import predict

__all__ = [
    "THRESHOLDS",
    "check_maps",
    "REFERENCES",
    "iou_curve",
    "mean_iou",
    "per_image_iou",
    "evaluate",
    "heatmaps",
    "per_class",
    "summary",
    "salient_area",
    "salient_parts",
    "reference_maps",
    "correlation",
    "class_sensitivity",
    "Sensitivity",
    "salient_shares",
    "confusions",
]


def check_maps(heatmaps: Tensor, masks: Tensor) -> None:
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
    check_maps(heatmaps, masks)
    t = (THRESHOLDS if thresholds is None else torch.as_tensor(thresholds, dtype=torch.float64)).to(heatmaps.device)
    if t.ndim != 1 or t.numel() == 0 or (t <= 0).any() or (t > 1).any():
        raise ValueError("thresholds must be a non-empty 1-D sequence of values in (0, 1]")
    t, _ = t.sort()
    h = normalize(heatmaps.double()).flatten(1)
    m = masks.bool().flatten(1)
    b, n_t = h.shape[0], t.numel()
    level = torch.bucketize(h, t, right=True)  # number of thresholds each pixel reaches, 0..T
    level += (n_t + 1) * torch.arange(b, device=h.device)[:, None]  # one bin range per image
    counts = torch.bincount(level.flatten(), minlength=b * (n_t + 1)).view(b, n_t + 1).double()
    inside = torch.bincount(level[m], minlength=b * (n_t + 1)).view(b, n_t + 1).double()
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


def salient_parts(heatmaps: Tensor, parts: Tensor, n_parts: int, threshold: float = 0.5) -> Tensor:
    """Where the salient region lands: for each image, the fraction of its salient pixels (normalised heat
    ≥ ``threshold``) that show each part id ``0..n_parts−1`` of the B×H×W part map ``parts`` (B×n_parts;
    a row sums to 1, or is NaN — undefined — when nothing is salient, e.g. an empty Grad-CAM map). With
    :data:`dvehelpers.data.PARTS` it answers "on the petals, the stem or the background?"."""
    if parts.shape != heatmaps.shape:
        raise ValueError(f"parts must be shaped like the heatmaps {tuple(heatmaps.shape)}, got {tuple(parts.shape)}")
    hot = (normalize(heatmaps) >= threshold).flatten(1).to(heatmaps.dtype)
    counts = torch.zeros(hot.shape[0], n_parts, dtype=hot.dtype, device=hot.device)
    counts.scatter_add_(1, parts.flatten(1).long().to(hot.device), hot)
    total = hot.sum(1, keepdim=True)
    return torch.where(total > 0, counts / total.clamp_min(1), torch.nan)


def salient_shares(
    heatmaps: Tensor, parts: Tensor, groups: Mapping[str, Sequence[str]], threshold: float = 0.5
) -> dict[str, Tensor]:
    """:func:`salient_parts` summed over named groups of parts of :data:`dvehelpers.data.PARTS`: for each group,
    the share of every image's salient pixels that land on it (B). E.g. ``{"petals": ["petals"],
    "stem + leaves": ["stem", "leaves"]}``."""
    unknown = sorted({p for names in groups.values() for p in names} - set(PARTS))
    if unknown:
        raise ValueError(f"unknown part(s) {unknown}; valid: {', '.join(PARTS)}")
    share = salient_parts(heatmaps, parts, len(PARTS), threshold)
    return {g: share[:, [PARTS.index(p) for p in names]].sum(1) for g, names in groups.items()}


#: Reference maps that make a score readable (:func:`reference_maps`).
REFERENCES = {
    "constant": "one value everywhere: normalises to zeros, so no pixel reaches any τ > 0 (the floor, 0)",
    "centre": "a centred Gaussian, σ = a quarter of the side: where objects usually are, with no image seen",
    "random": "uniform noise, seeded",
    "mask_lowres": "the mask averaged onto an h×w grid and upsampled bilinearly: the mask as a layer of that "
    "resolution sees it (a reference, not an upper bound: the score also depends on the map's values)",
    "mask": "the ground-truth mask itself (the ceiling, 100)",
}


def reference_maps(
    kind: str, masks: Tensor, grid: tuple[int, int] | None = None, seed: int = 0, index: Tensor | None = None
) -> Tensor:
    """B×H×W reference heatmaps for the masks' images, one of :data:`REFERENCES`.

    ``grid`` (h, w) is required for ``"mask_lowres"``: the resolution of the explained layer (7×7 for the
    small VGG's ``relu5_2`` at 112²). Area averaging then bilinear upsampling is what a CAM at that layer
    does to the mask; it indicates what that resolution allows, but it is no bound (a sharper monotone
    transform of it can score higher). ``index``: the images' positions in their set; given, each ``"random"`` map
    is drawn from its own generator seeded by ``(seed, index)``, so it does not depend on the batch it is drawn in.
    """
    if kind not in REFERENCES:
        raise ValueError(f"unknown reference {kind!r}; valid: {', '.join(REFERENCES)}")
    b, h, w = masks.shape
    dev, dtype = masks.device, torch.float32
    if kind == "constant":
        return torch.full((b, h, w), 0.5, dtype=dtype, device=dev)
    if kind == "mask":
        return masks.to(dtype)
    if kind == "random" and index is not None:
        if len(index) != b:
            raise ValueError(f"index must give one position per mask ({b}), got {len(index)}")
        gs = [torch.Generator().manual_seed(seed * 1_000_003 + int(i)) for i in index]
        return torch.stack([torch.rand(h, w, generator=g, dtype=dtype) for g in gs]).to(dev)
    if kind == "random":
        g = torch.Generator().manual_seed(seed)
        return torch.rand(b, h, w, generator=g, dtype=dtype).to(dev)
    if kind == "centre":
        ys = (torch.arange(h, dtype=dtype, device=dev) + 0.5) / h - 0.5
        xs = (torch.arange(w, dtype=dtype, device=dev) + 0.5) / w - 0.5
        bump = torch.exp(-(ys[:, None].square() + xs[None, :].square()) / (2 * 0.25**2))
        return bump.expand(b, h, w).clone()
    if grid is None:
        raise ValueError("reference 'mask_lowres' needs grid=(h, w), the explained layer's resolution")
    low = torch.nn.functional.adaptive_avg_pool2d(masks[:, None].to(dtype), grid)
    return torch.nn.functional.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)[:, 0]


def correlation(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation of each pair of maps ``a[i]``, ``b[i]`` (B×…) → B.

    A constant map has no correlation; it counts as 1 against an identical map and 0 otherwise, so
    "the map did not change" always reads 1.
    """
    x, y = a.flatten(1).double(), b.flatten(1).double()
    x, y = x - x.mean(1, keepdim=True), y - y.mean(1, keepdim=True)
    den = (x.square().sum(1) * y.square().sum(1)).sqrt()
    same = (a.flatten(1) == b.flatten(1)).all(1)
    r = (x * y).sum(1) / torch.where(den > 0, den, 1)
    return torch.where(den > 0, r, same.double())


@dataclass
class Sensitivity:
    """:func:`class_sensitivity`'s result, B×(K−1) each: the correlations ``r`` and which other-class maps are
    ``empty`` (constant: nothing is salient for that class, e.g. Grad-CAM after its ReLU)."""

    r: Tensor
    empty: Tensor

    def mean(self, skip_empty: bool = False) -> float:
        """Mean correlation over all pairs, or over the pairs whose other-class map is not empty."""
        return float(self.r[~self.empty].mean() if skip_empty else self.r.mean())


def class_sensitivity(
    model: torch.nn.Module,
    images: Tensor,
    method: str,
    params: dict[str, Any] | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> Sensitivity:
    """How much a method's map changes with the explained class.

    ``r[i, o − 1]`` is the :func:`correlation` of image i's map for its top-1 class ĉ with its map for class
    ``(ĉ + o) mod K``, o = 1…K−1: about 1 for a map that ignores the class, well below 1 for a class-specific
    one. An other-class map that is constant (``empty``) counts as r = 0 — the map changed, by vanishing —
    so read ``r`` together with how often that happens.
    """
    params = params or {}
    k = num_classes(model)
    dev = next(model.parameters()).device
    rs, empties = [], []
    for i in tqdm(range(0, len(images), batch_size), desc=f"{method}: {k} classes", disable=not progress):
        x = images[i : i + batch_size].to(dev)
        top1 = predict(model, x).to(dev)
        ref = explain(method, model, x, top1, **params)
        others = [explain(method, model, x, (top1 + o) % k, **params) for o in range(1, k)]
        rs.append(torch.stack([correlation(ref, other) for other in others], 1))
        empties.append(torch.stack([_constant(other) for other in others], 1))
    return Sensitivity(torch.cat(rs), torch.cat(empties))


def _constant(maps: Tensor) -> Tensor:
    flat = maps.flatten(1)
    return (flat == flat[:, :1]).all(1)


def confusions(labels: Tensor, predictions: Tensor, class_names: Sequence[str]) -> list[tuple[str, str, int]]:
    """The off-diagonal entries of the confusion matrix, largest first: ``(true, predicted, count)``.

    For a near-perfect classifier this short list says everything its confusion matrix would.
    """
    k = len(class_names)
    counts = torch.bincount(labels.long().cpu() * k + predictions.long().cpu(), minlength=k * k).view(k, k)
    counts.fill_diagonal_(0)
    pairs = counts.nonzero().tolist()
    rows = [(class_names[t], class_names[p], int(counts[t, p])) for t, p in pairs]
    return sorted(rows, key=lambda r: -r[2])


Jobs = Sequence[str] | Mapping[str, tuple[str, Mapping[str, Any]]]


def _jobs(methods: Jobs, params: Mapping[str, Mapping[str, Any]] | None) -> dict[str, tuple[str, dict[str, Any]]]:
    """``label -> (method, parameters)``: names use ``params[name]`` (or the defaults); a mapping is taken as is."""
    if isinstance(methods, Mapping):
        return {label: (name, dict(p)) for label, (name, p) in methods.items()}
    return {m: (m, dict((params or {}).get(m, {}))) for m in methods}


def _explained(
    model: torch.nn.Module,
    images: Tensor,
    method: str,
    params: Mapping[str, Any],
    target: Tensor | int | None,
    batch_size: int,
) -> Iterator[tuple[int, Tensor]]:
    """``(start, heatmaps)`` for consecutive batches of ``images``, explained on the model's device."""
    dev = next(model.parameters()).device
    for i in range(0, len(images), batch_size):
        t = target if target is None or isinstance(target, int) else target[i : i + batch_size].to(dev)
        yield i, explain(method, model, images[i : i + batch_size].to(dev), t, **params)


def heatmaps(
    model: torch.nn.Module,
    images: Tensor,
    method: str,
    params: Mapping[str, Any] | None = None,
    target: Tensor | int | None = None,
    batch_size: int = 32,
    progress: bool = False,
) -> Tensor:
    """``method``'s maps (N×H×W, on the model's device) for a whole set, explained in batches.

    ``target``: None (each image's top-1 class), one class for every image, or one class per image."""
    batches = _explained(model, images, method, params or {}, target, batch_size)
    n = -(-len(images) // batch_size)
    return torch.cat([h for _, h in tqdm(batches, total=n, desc=method, unit="batch", disable=not progress)])


def per_class(values: Tensor, labels: Tensor, n_classes: int) -> Tensor:
    """The mean of ``values`` (N×…) over the images of each class, NaN entries left out: n_classes×… (NaN
    where a class has no defined value)."""
    labels = labels.to(values.device).long()
    defined = ~values.isnan()
    sums = torch.zeros(n_classes, *values.shape[1:], dtype=values.dtype, device=values.device)
    sums.index_add_(0, labels, torch.where(defined, values, 0))
    counts = torch.zeros_like(sums).index_add_(0, labels, defined.to(values.dtype))
    return sums / counts


def evaluate(
    model: torch.nn.Module,
    images: Tensor,
    masks: Tensor,
    methods: Jobs,
    target: Tensor | int | None = None,
    thresholds: Tensor | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> dict[str, Tensor]:
    """Per-image IoU curves (N×T) of every method on a labelled set, in batches on the model's device.

    ``methods``: registry names (with ``params[name]`` overriding their defaults), or a mapping
    ``label -> (name, params)`` so that one method can be scored with several settings. ``target``: the
    explained class of each image (default: the model's top-1 prediction, as in Oramas et al.'s protocol).
    """
    jobs = _jobs(methods, params)
    dev = next(model.parameters()).device
    bar = tqdm(total=len(jobs) * -(-len(images) // batch_size), desc="explaining", unit="batch", disable=not progress)
    out: dict[str, Tensor] = {}
    for label, (name, p) in jobs.items():
        curves = []
        for i, heat in _explained(model, images, name, p, target, batch_size):
            curves.append(per_image_iou(heat, masks[i : i + batch_size].to(dev), thresholds))
            bar.update()
        out[label] = torch.cat(curves)
    bar.close()
    return out


def summary(results: dict[str, Tensor]) -> dict[str, float]:
    """Mean IoU ×100 per method (mean over images, then thresholds) from :func:`evaluate`'s curves, best first."""
    scores = {m: float(curves.mean(0).mean() * 100) for m, curves in results.items()}
    return dict(sorted(scores.items(), key=lambda kv: -kv[1]))
