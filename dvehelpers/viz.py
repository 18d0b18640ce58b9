"""Display: heatmaps over images, signed images centred on grey, labelled grids, mask outlines.

Tensors are turned into NumPy arrays here and only here, at the last moment, for matplotlib.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

__all__ = [
    "to_rgb",
    "signed_image",
    "overlay",
    "mask_outline",
    "grid",
    "image_grid",
    "iou_curves",
    "compare_methods",
]


def to_rgb(image: Tensor) -> np.ndarray:
    """A C×H×W (or H×W) tensor in [0, 1] as an H×W×C float array for ``imshow`` (clipped to [0, 1])."""
    image = image.detach().float().cpu().clamp(0, 1)
    return image.numpy() if image.ndim == 2 else image.permute(1, 2, 0).numpy()


def signed_image(raw: Tensor) -> Tensor:
    """A signed B×3×H×W signal as an image centred on grey: ``0.5 + raw / (2·max|raw|)`` per image.

    Zero is mid-grey, the largest magnitude reaches 0 or 1; an all-zero signal stays grey.
    """
    peak = raw.abs().flatten(1).amax(1).clamp_min(torch.finfo(raw.dtype).tiny).view(-1, 1, 1, 1)
    return 0.5 + raw / (2 * peak)


def overlay(
    ax: Axes,
    image: Tensor | None,
    heatmap: Tensor,
    alpha: float = 0.5,
    cmap: str = "jet",
    title: str | None = None,
) -> Axes:
    """Draw ``heatmap`` (H×W in [0, 1]) over ``image`` (3×H×W in [0, 1], or None for the map alone)."""
    if image is not None:
        ax.imshow(to_rgb(image))
        ax.imshow(to_rgb(heatmap), cmap=cmap, alpha=alpha, vmin=0, vmax=1)
    else:
        ax.imshow(to_rgb(heatmap), cmap=cmap, vmin=0, vmax=1)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def mask_outline(ax: Axes, mask: Tensor, color: str = "white", linewidth: float = 1.2) -> Axes:
    """Outline a binary H×W mask (the region a correct explanation must highlight)."""
    m = mask.detach().float().cpu().numpy()
    if m.min() < m.max():
        ax.contour(m, levels=[0.5], colors=[color], linewidths=linewidth)
    return ax


def grid(
    images: Tensor,
    maps: Sequence[Tensor] = (),
    row_titles: Sequence[str] = (),
    col_titles: Sequence[str] = (),
    masks: Tensor | None = None,
    alpha: float = 0.5,
    size: float = 2.0,
) -> Figure:
    """A figure with one row per image: the image, then each B×H×W map of ``maps`` overlaid on it.

    Maps with a channel axis (B×3×H×W, signed) are shown with :func:`signed_image` instead of a colormap.
    ``masks`` (B×H×W) are outlined on every panel.
    """
    b, cols = images.shape[0], 1 + len(maps)
    fig, axes = plt.subplots(b, cols, figsize=(size * cols, size * b), squeeze=False)
    for r in range(b):
        axes[r, 0].imshow(to_rgb(images[r]))
        axes[r, 0].set_axis_off()
        for c, m in enumerate(maps, start=1):
            if m.ndim == 4:
                axes[r, c].imshow(to_rgb(signed_image(m[r : r + 1])[0]))
                axes[r, c].set_axis_off()
            else:
                overlay(axes[r, c], images[r], m[r], alpha=alpha)
        if masks is not None:
            for ax in axes[r]:
                mask_outline(ax, masks[r])
        if r < len(row_titles):
            axes[r, 0].set_title(row_titles[r], fontsize=9, loc="left")
    for c, title in enumerate(col_titles):
        if c < cols:
            axes[0, c].set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def image_grid(
    images: Tensor,
    masks: Tensor | None = None,
    titles: Sequence[str] = (),
    ncols: int = 6,
    size: float = 1.7,
    outline: str = "white",
) -> Figure:
    """Images in rows of ``ncols``, each with its mask outlined (if given) and its title."""
    n = images.shape[0]
    rows = -(-n // ncols)
    fig, axes = plt.subplots(rows, ncols, figsize=(size * ncols, size * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k >= n:
            continue
        ax.imshow(to_rgb(images[k]))
        if masks is not None:
            mask_outline(ax, masks[k], color=outline)
        if k < len(titles):
            ax.set_title(titles[k], fontsize=8)
    fig.tight_layout()
    return fig


def iou_curves(results: dict[str, Tensor], thresholds: Tensor | None = None, ax: Axes | None = None) -> Axes:
    """Mean IoU against threshold for every method of :func:`dvehelpers.evaluate.evaluate`'s results."""
    from .evaluate import THRESHOLDS

    t = (THRESHOLDS if thresholds is None else thresholds).cpu().numpy()
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    for name, curves in results.items():
        ax.plot(t, curves.mean(0).cpu().numpy(), label=f"{name} ({float(curves.mean() * 100):.1f})")
    ax.set_xlabel("threshold τ")
    ax.set_ylabel("mean IoU")
    ax.legend(fontsize=7)
    return ax


def compare_methods(
    model: Any,
    images: Tensor,
    methods: Sequence[str],
    target: Any = None,
    display: Tensor | None = None,
    masks: Tensor | None = None,
    params: dict[str, dict[str, Any]] | None = None,
) -> Figure:
    """Explain ``images`` with each method (registry defaults, or ``params[name]``) and show them side by side.

    ``display``: the images as shown (e.g. before ImageNet normalisation); defaults to ``images``.
    """
    from .registry import explain

    params = params or {}
    maps = [explain(m, model, images, target, **params.get(m, {})) for m in methods]
    shown = images if display is None else display
    return grid(shown, maps, col_titles=["image", *methods], masks=masks)
