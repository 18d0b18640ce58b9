"""Schematic figures for the notebooks: a method's pipeline as boxes and arrows, and the strided-convolution fix of
Oramas et al. computed on a one-dimensional example (the figure plots what the code computes, not a drawing)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch
from torch import Tensor

__all__ = ["flowchart", "strided_backward_1d", "strided_fix"]

_BOX = {"boxstyle": "round,pad=0.004,rounding_size=0.02", "linewidth": 0.8}


def flowchart(
    rows: Sequence[Sequence[str]],
    row_titles: Sequence[str] = (),
    title: str | None = None,
    links: Sequence[tuple[tuple[int, int], tuple[int, int], str]] = (),
    width: float = 12.0,
    leftward: Sequence[int] = (),
) -> Figure:
    """Boxes joined left to right by arrows, one row of ``rows`` per stage (each box's text may span lines); the rows
    listed in ``leftward`` are read right to left (their arrows point left, e.g. a backward pass). ``row_titles`` label
    the rows at the left; ``links`` are extra arrows ``((row, box), (row, box), label)``, e.g. from a box of one row
    to a box of the next."""
    n_rows = len(rows)
    fig, ax = plt.subplots(figsize=(width, 1.35 * n_rows + (0.4 if title else 0)), layout="constrained")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, n_rows)
    ax.set_axis_off()
    left = 0.13 if row_titles else 0.01
    centres: dict[tuple[int, int], tuple[float, float]] = {}
    box_h = 0.62
    for r, boxes in enumerate(rows):
        y = n_rows - r - 0.5
        step = (1 - left - 0.01) / len(boxes)
        box_w = step * 0.74
        for b, text in enumerate(boxes):
            x = left + step * b + (step - box_w) / 2
            ax.add_patch(
                FancyBboxPatch((x, y - box_h / 2), box_w, box_h, facecolor="#eef2f7", edgecolor="#34495e", **_BOX)
            )
            ax.text(x + box_w / 2, y, text, ha="center", va="center", fontsize=8, wrap=True)
            centres[r, b] = (x + box_w / 2, y)
            if b:
                ends = [(x, y), (x - (step - box_w), y)]
                head, tail = ends[::-1] if r in leftward else ends
                ax.annotate("", head, tail, arrowprops={"arrowstyle": "->", "lw": 1.0})
        if r < len(row_titles):
            ax.text(0.005, y, row_titles[r], ha="left", va="center", fontsize=9, fontweight="bold")
    for (r0, b0), (r1, b1), label in links:
        (x0, y0), (x1, y1) = centres[r0, b0], centres[r1, b1]
        sign = 1 if y1 < y0 else -1
        ax.annotate(
            "",
            (x1, y1 + sign * box_h / 2),
            (x0, y0 - sign * box_h / 2),
            arrowprops={"arrowstyle": "->", "lw": 1.0, "ls": "--", "color": "#7f8c8d"},
        )
        if label:
            ax.text((x0 + x1) / 2 + 0.005, (y0 + y1) / 2, label, fontsize=7, color="#555", va="center")
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def strided_backward_1d(signal: Tensor, kernel: Tensor, stride: int, padding: int, n_in: int, fix: bool) -> Tensor:
    """A one-dimensional backward pass through a convolution of ``stride`` (``kernel`` of odd length, ``padding``)
    whose input had ``n_in`` samples: the transposed convolution at that stride (``fix=False``: every output sample
    scattered onto a grid with gaps), or Oramas et al.'s fix — resize the signal (nearest) to
    ``n' = n_in + 2·padding − k + 1`` and apply a stride-1 transposed convolution, which lands on ``n_in`` samples."""
    k = kernel.numel()
    w, s = kernel.view(1, 1, k), signal.view(1, 1, -1)
    if not fix:
        out = F.conv_transpose1d(s, w, stride=stride, padding=padding)
    else:
        n_prime = n_in + 2 * padding - k + 1
        out = F.conv_transpose1d(F.interpolate(s, size=n_prime, mode="nearest"), w, padding=padding)
    out = out.flatten()
    return F.pad(out, (0, max(0, n_in - out.numel())))[:n_in]


def strided_fix(n_in: int = 23, kernel_size: int = 3, stride: int = 2, padding: int = 1) -> Figure:
    """The checkerboard of a strided convolution's backward pass and its fix, on a constant backward signal through a
    convolution with an all-ones kernel: the transposed convolution at stride 2 gives every other input sample one
    kernel tap fewer (an alternating pattern: in two dimensions, a checkerboard); resizing first and transposing at
    stride 1 spreads the signal evenly."""
    n_out = (n_in + 2 * padding - kernel_size) // stride + 1
    signal, kernel = torch.ones(n_out), torch.ones(kernel_size)
    without = strided_backward_1d(signal, kernel, stride, padding, n_in, fix=False)
    with_fix = strided_backward_1d(signal, kernel, stride, padding, n_in, fix=True)
    fig, axes = plt.subplots(1, 3, figsize=(12, 2.6), layout="constrained", sharey=False)
    axes[0].stem(range(n_out), signal.numpy(), basefmt=" ")
    axes[0].set_title(f"backward signal at the conv's output\n({n_out} samples, all 1)", fontsize=8)
    for ax, values, title in (
        (axes[1], without, f"transposed conv, stride {stride}: uneven\n(the checkerboard in two dimensions)"),
        (axes[2], with_fix, "the fix: resize (nearest) to n′, then\ntransposed conv at stride 1: even"),
    ):
        ax.bar(range(n_in), values.numpy(), color="#34495e")
        ax.set_title(title, fontsize=8)
        ax.set_xlabel(f"input position (n = {n_in})", fontsize=8)
    for ax in axes:
        ax.tick_params(labelsize=7)
    axes[0].set_xlabel("output position", fontsize=8)
    return fig
