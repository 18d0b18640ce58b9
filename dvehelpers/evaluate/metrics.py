"""Metrics beyond the an8Flower IoU: the pointing game (localisation) and deletion / insertion (faithfulness).

**Pointing game** (Zhang et al., ECCV 2016): a map *hits* when its maximum lies on the object. Two conventions are
in use, and they are named here because they give different numbers:

* ``"quantus"`` — no tolerance: a hit when any pixel where the map reaches its maximum lies inside the mask
  (Quantus's ``PointingGame``, which also counts ties this way: a constant map hits whenever the mask is not empty);
* ``"torchray"`` — a 15-pixel tolerance: a hit when such a pixel lies within 15 px (Euclidean) of the mask
  (TorchRay's benchmark).

**Deletion / insertion** (Petsiuk, Das & Saenko, BMVC 2018, "RISE"): pixels are removed from the image (replaced
by a baseline) in decreasing order of the map, ``steps`` equal chunks at a time, and the explained class's softmax
probability is tracked; a faithful map makes it fall fast (low deletion AUC). Insertion starts from the baseline
and puts the pixels back in the same order (high insertion AUC is good). The AUC is the trapezoid area under the
probability curve over the fraction of pixels, in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checks import check_images, preserved, resolve_targets
from ..devices import conv_layout
from ..maps import gaussian_blur
from .iou import check_maps

__all__ = ["POINTING", "TIES", "pointing_game", "max_on", "dilate", "BASELINES", "Curves", "deletion_insertion", "auc"]

#: Pointing-game conventions: name -> tolerance in pixels.
POINTING: Mapping[str, float] = {"quantus": 0.0, "torchray": 15.0}


def dilate(masks: Tensor, radius: float) -> Tensor:
    """B×H×W boolean masks grown by every pixel within ``radius`` px (Euclidean) of them.

    The disc is taken row by row: offset dy reaches ``|dx| ≤ ⌊√(r² − dy²)⌋``, a horizontal window whose hits
    are counted from a running sum along the row — O(r·H·W) additions instead of an r²-tap convolution. Offsets
    ±dy share their window, computed once and shifted both ways."""
    r = math.floor(radius)
    m = masks.bool()
    if r < 1:
        return m
    b, h, w = m.shape
    padded = F.pad(m.to(torch.int32), (r + 1, r, r, r))  # one extra zero column on the left for the sums
    cs = padded.cumsum(2)
    grown = torch.zeros_like(m)
    for dy in range(r + 1):
        half = math.isqrt(math.floor(radius**2) - dy * dy) if dy * dy <= radius**2 else -1
        if half < 0:
            continue
        # window [x − half, x + half] of the unpadded row = columns (r + 1 + x ± half) of the padded sums
        hits = (cs[:, :, r + 1 + half : r + 1 + half + w] - cs[:, :, r - half : r - half + w]) > 0
        for shift in {dy, -dy}:
            grown |= hits[:, r + shift : r + shift + h]
    return grown


#: How a map with several maximal pixels scores: the share of them in the region (the expected hit when the tie is
#: broken at random: a constant map scores the region's area, not a hit), or a hit if ``any`` is (Quantus's rule).
TIES = ("share", "any")


def pointing_game(heatmaps: Tensor, masks: Tensor, convention: str = "quantus", ties: str = "share") -> Tensor:
    """Per image, whether the map's maximum lies on the mask (B floats in [0, 1]), under ``convention`` (see
    :data:`POINTING`): ``"quantus"`` (no tolerance) or ``"torchray"`` (within 15 px); ``ties`` (:data:`TIES`) says how
    several maximal pixels count. With one maximum both give 1 or 0."""
    if convention not in POINTING:
        raise ValueError(f"convention must be one of {', '.join(map(repr, POINTING))}, got {convention!r}")
    check_maps(heatmaps, masks)
    return max_on(heatmaps, dilate(masks, POINTING[convention]), ties)


def max_on(heatmaps: Tensor, regions: Tensor, ties: str = "share") -> Tensor:
    """Per image, the hit of the map's maximum on ``regions`` (B×H×W booleans, e.g. masks already grown by
    :func:`dilate`, so that many maps can be scored against them at once): B floats, 1 when every maximal pixel lies
    in the region, 0 when none does, and for a tie (:data:`TIES`) the share of them that does or whether any does."""
    if ties not in TIES:
        raise ValueError(f"ties must be one of {', '.join(map(repr, TIES))}, got {ties!r}")
    flat = heatmaps.flatten(1)
    at_max = flat == flat.amax(1, keepdim=True)
    hits = at_max & regions.to(heatmaps.device).flatten(1)
    if ties == "any":
        return hits.any(1).to(heatmaps.dtype)
    return _count(hits).to(heatmaps.dtype) / _count(at_max)


def _count(flags: Tensor) -> Tensor:
    # the True entries of each row, summed as bytes into int32 (a bool sum goes through int64: twice the time)
    return flags.view(torch.uint8).sum(1, dtype=torch.int32)


#: What removed (deletion) or not-yet-inserted (insertion) pixels become.
BASELINES = {"zeros": "zero (black)", "blur": "a Gaussian blur of the image, σ = 5 px (RISE's insertion start)"}


@dataclass
class Curves:
    """``probability[i, s]``: image i's explained-class probability after step s of ``steps`` (s = 0: nothing
    deleted / inserted yet); ``auc``: the area under each curve."""

    mode: str
    probability: Tensor
    auc: Tensor


def auc(curves: Tensor) -> Tensor:
    """Trapezoid area under each row of ``curves`` (B×(S+1)), sampled at 0, 1/S, …, 1."""
    s = curves.shape[1] - 1
    if s < 1:
        raise ValueError("a curve needs at least two points")
    return (curves.sum(1) - (curves[:, 0] + curves[:, -1]) / 2) / s


def _baseline(images: Tensor, baseline: str) -> Tensor:
    if baseline == "zeros":
        return torch.zeros_like(images)
    if baseline == "blur":
        return gaussian_blur(images, 5.0)
    raise ValueError(f"baseline must be one of {', '.join(map(repr, BASELINES))}, got {baseline!r}")


def deletion_insertion(
    model: nn.Module,
    images: Tensor,
    heatmaps: Tensor,
    target: Any = None,
    mode: str = "deletion",
    steps: int = 16,
    baseline: str | None = None,
    batch_size: int = 128,
) -> Curves:
    """RISE's deletion or insertion curves for every image at once: the (steps + 1) perturbed images of all images
    are classified in chunks of about ``batch_size``. Pixels are taken in decreasing order of the map (ties: by
    pixel index); step s has the first ``round(s/steps · H·W)`` of them deleted / inserted. ``baseline``: None =
    RISE's choice (``"zeros"`` for deletion, ``"blur"`` for insertion). ``target``: None = each image's top-1 class.
    The step that leaves the images as they are (deletion's first, insertion's last) is read from the images' own
    forward pass, which resolves the targets."""
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    images = check_images(model, images)
    b, _, h, w = images.shape
    if heatmaps.shape != (b, h, w):
        raise ValueError(f"heatmaps must be B×H×W = {(b, h, w)}, got {tuple(heatmaps.shape)}")
    base = _baseline(images, baseline or ("zeros" if mode == "deletion" else "blur"))
    order = heatmaps.flatten(1).to(images.device).argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(h * w, device=order.device).expand(b, -1))
    counts = torch.tensor([round(s / steps * h * w) for s in range(steps + 1)], device=images.device)
    unperturbed = 0 if mode == "deletion" else steps
    first, then = (base, images) if mode == "deletion" else (images, base)
    probability = images.new_empty(b, steps + 1)
    with preserved(model), torch.no_grad():
        model.eval()
        logits = model(conv_layout(images))
        targets = resolve_targets(target, logits)
        probability[:, unperturbed] = logits.softmax(1).gather(1, targets[:, None])[:, 0]
        todo = [s for s in range(steps + 1) if s != unperturbed]
        per_chunk = max(1, round(batch_size / b))  # steps classified together: per_chunk · B images
        for c0 in range(0, len(todo), per_chunk):
            chunk = todo[c0 : c0 + per_chunk]
            taken = (rank[None] < counts[chunk][:, None, None]).view(len(chunk), b, 1, h, w)  # S'×B×1×H×W
            x = conv_layout(torch.where(taken, first, then).flatten(0, 1))
            p = model(x).softmax(1).view(len(chunk), b, -1)
            probability[:, chunk] = p.gather(2, targets.view(1, b, 1).expand(len(chunk), b, 1))[..., 0].T
    return Curves(mode, probability, auc(probability))
