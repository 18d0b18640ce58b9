"""Display: the figure conventions of the notebook series (``NOTEBOOKS.md``), kept here so no notebook repeats them.

* Heatmaps share one colour bar that names its scale: per-image min-max, 0 = least and 1 = most salient.
* Rows are labelled with the true class and the prediction with its probability (:func:`prediction_labels`);
  columns with the method and the parameters that differ from its registry defaults (:func:`method_title`).
* Mask outlines are thin (:data:`OUTLINE_WIDTH`), so a 2-pixel stem stays visible inside its outline.
* Every figure uses ``layout="constrained"``: titles, labels and colour bars never overlap.
* A result that is near-trivial as a figure (the confusion matrix of a 99.9 % model) is a small :func:`table`.

Tensors become NumPy arrays here and only here, at the last moment, for matplotlib.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from itertools import cycle
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from torch import Tensor, nn

from .maps import THRESHOLDS
from .maps import saturate as saturate_maps
from .models import num_classes
from .registry import METHODS, explain
from .train import probabilities

__all__ = [
    "HEAT_CMAP",
    "HEAT_LABEL",
    "OUTLINE_WIDTH",
    "to_rgb",
    "luminance",
    "signed_image",
    "overlay",
    "mask_outline",
    "KINDS",
    "output_kind",
    "show",
    "fourier_steps",
    "score_matrix",
    "blur_curves",
    "strip",
    "heat_colorbar",
    "method_title",
    "prediction_labels",
    "grid",
    "image_grid",
    "compare_methods",
    "iou_curves",
    "bar_panels",
    "kl_steps",
    "mu_path",
    "ablation_bars",
    "layer_supports",
    "ranking",
    "randomisation_curves",
    "class_sensitivity",
    "faithfulness_curves",
    "Table",
    "table",
]

#: The series' heat colour map: perceptually ordered (equal steps of heat look equal, dark = low), readable in greyscale
#: print and by colour-blind readers. :func:`overlay` draws it over a greyscale copy of the image, so that no petal
#: colour can hide heat of the same hue (an8Flower's classes are colours; ``jet`` put red heat on red petals).
HEAT_CMAP = "inferno"
HEAT_LABEL = "heat (min-max per image): 0 = least, 1 = most salient"
#: Points; at a notebook's scale (112 px shown ~180 px wide) a 2-pixel stem keeps its colour inside the outline.
OUTLINE_WIDTH = 0.6

MethodSpec = str | tuple[str, Mapping[str, Any]]


def to_rgb(image: Tensor) -> np.ndarray:
    """A C×H×W (or H×W) tensor in [0, 1] as an H×W×C float array for ``imshow`` (clipped to [0, 1])."""
    image = image.detach().float().cpu().clamp(0, 1)
    return image.numpy() if image.ndim == 2 else image.permute(1, 2, 0).numpy()


def luminance(image: Tensor) -> Tensor:
    """The Rec. 601 luma of a 3×H×W (or B×3×H×W) image in [0, 1]: 0.299 R + 0.587 G + 0.114 B, H×W (B×H×W)."""
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=image.dtype, device=image.device)
    return (image * weights.view(3, 1, 1)).sum(-3)


def signed_image(raw: Tensor) -> Tensor:
    """A signed B×3×H×W signal as an image centred on grey: ``0.5 + raw / (2·max|raw|)`` per image.

    Zero is mid-grey, the largest magnitude reaches 0 or 1; an all-zero signal stays grey.
    """
    peak = raw.abs().flatten(1).amax(1).clamp_min(torch.finfo(raw.dtype).tiny).view(-1, 1, 1, 1)
    return 0.5 + raw / (2 * peak)


def _bare(ax: Axes) -> None:
    """No ticks and no frame, but the axis labels stay usable (row labels live in the y label)."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def overlay(
    ax: Axes,
    image: Tensor | None,
    heatmap: Tensor,
    alpha: float = 0.5,
    cmap: str = HEAT_CMAP,
    title: str | None = None,
) -> Axes:
    """Draw ``heatmap`` (H×W in [0, 1]) over a greyscale copy of ``image`` (3×H×W in [0, 1], or None for the map
    alone): the image's colours cannot hide heat of the same hue. An all-NaN ``heatmap`` stands for a missing map (an
    empty feature slot): the panel then shows the grey image labelled "no map", never an all-zero heat."""
    if bool(torch.isnan(heatmap).all()):
        if image is not None:
            ax.imshow(to_rgb(luminance(image)), cmap="gray", vmin=0, vmax=1)
        ax.text(
            0.5,
            0.5,
            "no map",
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=8,
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"},
        )
    elif image is not None:
        ax.imshow(to_rgb(luminance(image)), cmap="gray", vmin=0, vmax=1)
        ax.imshow(to_rgb(heatmap), cmap=cmap, alpha=alpha, vmin=0, vmax=1)
    else:
        ax.imshow(to_rgb(heatmap), cmap=cmap, vmin=0, vmax=1)
    _bare(ax)
    if title:
        ax.set_title(title, fontsize=8)
    return ax


#: How a method's output is drawn: a heatmap over the image, an image as is, or a signed signal centred on grey.
KINDS = ("heatmap", "image", "signed")


def output_kind(result: Tensor, output: str | None = None) -> str:
    """The :data:`KINDS` entry for a method's ``result`` called with ``output``: ``"masked"`` is an image,
    ``"signed"``/``"raw"`` and any B×C×H×W signal are signed, a B×H×W map in [0, 1] is a heatmap."""
    if output == "masked":
        return "image"
    if output in ("signed", "raw") or result.ndim == 4:
        return "signed"
    return "heatmap"


def show(
    ax: Axes, result: Tensor, image: Tensor | None = None, kind: str = "heatmap", title: str | None = None
) -> Axes:
    """One panel of one image's output (H×W or C×H×W) drawn as ``kind`` (:data:`KINDS`)."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; valid: {', '.join(KINDS)}")
    if kind == "heatmap":
        return overlay(ax, image, result, title=title)
    if kind == "signed":
        shown = signed_image(result[None] if result.ndim == 3 else result[None, None])[0]
        ax.imshow(to_rgb(shown if shown.shape[0] == 3 else shown[0]), cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(to_rgb(result))
    _bare(ax)
    if title:
        ax.set_title(title, fontsize=8)
    return ax


def mask_outline(
    ax: Axes, mask: Tensor, color: str = "white", linewidth: float = OUTLINE_WIDTH, alpha: float = 0.9
) -> Axes:
    """Outline a binary H×W mask (the region a correct explanation must highlight) with a thin line."""
    m = mask.detach().float().cpu().numpy()
    if m.min() < m.max():
        ax.contour(m, levels=[0.5], colors=[color], linewidths=linewidth, alpha=alpha)
    return ax


def heat_colorbar(
    fig: Figure, axes: Any, cmap: str = HEAT_CMAP, label: str = HEAT_LABEL, shrink: float = 0.6, aspect: float = 30
) -> Any:
    """One colour bar for every heatmap of ``axes``, on the [0, 1] scale the methods return."""
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), cmap), ax=axes, shrink=shrink, aspect=aspect, pad=0.01)
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    return bar


def method_title(name: str, params: Mapping[str, Any] | None = None) -> str:
    """``name``, then each parameter whose value differs from the registry default, one ``k=v`` per line
    (narrow columns never run into each other)."""

    defaults = METHODS[name].defaults if name in METHODS else {}
    changed = [f"{k}={v}" for k, v in (params or {}).items() if k not in defaults or defaults[k] != v]
    return "\n".join([name, *changed])


def prediction_labels(
    model: nn.Module | Mapping[str, nn.Module],
    images: Tensor,
    labels: Tensor | Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
) -> list[str]:
    """A row label per image: ``true: c`` (when ``labels`` are given) and ``pred: ĉ (p)`` with its softmax
    probability — one ``name: ĉ (p)`` line per model when ``model`` is a mapping ``name -> model``. Class names:
    ``class_names``, else the model's own (``meta["categories"]``, e.g. ImageNet's), else the class indices."""

    models = model if isinstance(model, Mapping) else {"pred": model}
    first = next(iter(models.values()))
    own = (getattr(first, "meta", None) or {}).get("categories")
    names = list(class_names or own or [str(i) for i in range(num_classes(first))])
    lines = [[] if labels is None else [f"true: {names[int(labels[i])]}"] for i in range(len(images))]
    for tag, net in models.items():
        p, pred = probabilities(net, images).max(1)
        for i, rows in enumerate(lines):
            rows.append(f"{tag}: {names[int(pred[i])]} ({float(p[i]):.2f})")
    return ["\n".join(rows) for rows in lines]


def grid(
    images: Tensor,
    maps: Sequence[Tensor] = (),
    row_titles: Sequence[str] = (),
    col_titles: Sequence[str] = (),
    masks: Tensor | None = None,
    alpha: float = 0.5,
    size: float = 1.8,
    colorbar: bool = True,
    kinds: Sequence[str] | None = None,
    colorbar_label: str = HEAT_LABEL,
) -> Figure:
    """One row per image: the image, then each B×H×W map of ``maps`` over it, with one shared colour bar
    (``colorbar_label`` says what its scale means).

    Maps with a channel axis (B×3×H×W, signed) are shown with :func:`signed_image` (grey = 0) instead of the
    colour map; ``kinds`` (one :data:`KINDS` entry per map) overrides that guess, e.g. ``"image"`` for a
    masked image. ``masks`` (B×H×W) are outlined on every panel. ``row_titles`` label the rows at the left,
    ``col_titles`` head the columns (the image column first).
    """
    b, cols = images.shape[0], 1 + len(maps)
    kinds = [output_kind(m) for m in maps] if kinds is None else list(kinds)
    if len(kinds) != len(maps):
        raise ValueError(f"kinds needs one entry per map ({len(maps)}), got {len(kinds)}")
    fig, axes = plt.subplots(b, cols, figsize=(size * cols + 1.6, size * b + 0.4), squeeze=False, layout="constrained")
    for r in range(b):
        axes[r, 0].imshow(to_rgb(images[r]))
        _bare(axes[r, 0])
        for c, (m, kind) in enumerate(zip(maps, kinds, strict=True), start=1):
            if kind == "heatmap":
                overlay(axes[r, c], images[r], m[r], alpha=alpha)
            else:
                show(axes[r, c], m[r], kind=kind)
        if masks is not None:
            for ax in axes[r]:
                mask_outline(ax, masks[r])
        if r < len(row_titles):
            axes[r, 0].set_ylabel(row_titles[r], fontsize=8, rotation=0, ha="right", va="center")
    for c, title in enumerate(col_titles[:cols]):
        axes[0, c].set_title(title, fontsize=8)
    if colorbar and "heatmap" in kinds:
        heat_colorbar(fig, axes, label=colorbar_label)
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
    fig, axes = plt.subplots(
        rows, ncols, figsize=(size * ncols, size * rows + 0.3), squeeze=False, layout="constrained"
    )
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k >= n:
            continue
        ax.imshow(to_rgb(images[k]))
        if masks is not None:
            mask_outline(ax, masks[k], color=outline)
        if k < len(titles):
            ax.set_title(titles[k], fontsize=8)
    return fig


def _spec(method: MethodSpec) -> tuple[str, dict[str, Any]]:
    return (method, {}) if isinstance(method, str) else (method[0], dict(method[1]))


def compare_methods(
    model: nn.Module,
    images: Tensor,
    methods: Sequence[MethodSpec],
    target: Any = None,
    display: Tensor | None = None,
    masks: Tensor | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    labels: Tensor | Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    saturate: float | None = None,
) -> Figure:
    """Explain ``images`` with each method and show them side by side, labelled by the conventions.

    A method is a registry name (its defaults, or ``params[name]``) or a ``(name, params)`` pair, so one
    method can appear with several settings. Rows say the true class (``labels``) and the prediction with its
    probability; columns say the method and its non-default parameters. ``display``: the images as shown
    (e.g. before ImageNet normalisation); defaults to ``images``. ``saturate`` (a quantile, e.g. 0.99): every
    heatmap is shown divided by its own quantile and clipped (:func:`dvehelpers.maps.saturate`), so that
    per-pixel maps on large photos are visible; the figure says so under it.
    """

    specs = [_spec(m) for m in methods]
    specs = [(name, {**(params or {}).get(name, {}), **p}) for name, p in specs]
    maps = [explain(name, model, images, target, **p) for name, p in specs]
    shown = images if display is None else display
    rows = prediction_labels(model, images, labels, class_names)
    cols = ["image", *(method_title(name, p) for name, p in specs)]
    kinds = [output_kind(m, p.get("output")) for m, (_, p) in zip(maps, specs, strict=True)]
    label = HEAT_LABEL
    if saturate is not None:
        maps = [saturate_maps(m, saturate) if k == "heatmap" else m for m, k in zip(maps, kinds, strict=True)]
        label = saturated_label(saturate)
    fig = grid(shown, maps, row_titles=rows, col_titles=cols, masks=masks, kinds=kinds, colorbar_label=label)
    if saturate is not None:
        fig.supxlabel(f"display: each heatmap divided by its own {saturate:.3g} quantile and clipped to 1", fontsize=8)
    return fig


def saturated_label(quantile: float) -> str:
    """The colour bar's label for heatmaps shown through :func:`dvehelpers.maps.saturate`."""
    return f"heat ÷ its own {quantile:.3g} quantile,\nclipped to 1 (display only)"


# reference curves: grey, each with its own dash pattern, so that they differ without relying on shade alone
REFERENCE_STYLES = (
    ("0.15", (0, (5, 2))),
    ("0.4", (0, (3, 2))),
    ("0.6", (0, (1, 1.5))),
    ("0.75", (0, (6, 2, 1, 2))),
    ("0.3", (0, (1, 3))),
)


def iou_curves(
    results: Mapping[str, Tensor],
    thresholds: Tensor | None = None,
    ax: Axes | None = None,
    references: Mapping[str, Tensor] | None = None,
) -> Axes:
    """Mean IoU ×100 against threshold for every method of :func:`dvehelpers.evaluate.evaluate`'s results.

    Methods are coloured lines with their own markers, placed at staggered thresholds so that curves which
    coincide stay visible; ``references`` (same form, e.g. from :func:`dvehelpers.evaluate.reference_maps`)
    are grey and dashed, and only they are.
    """

    t = (THRESHOLDS if thresholds is None else thresholds).cpu().numpy()
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.8), layout="constrained")
    colours = [c for c in plt.get_cmap("tab10").colors if len(set(np.round(c, 3))) > 1]  # tab10 without its grey
    markers = "osD^vP*Xh<>"
    for k, (name, curves) in enumerate(results.items()):
        ax.plot(
            t,
            curves.mean(0).cpu().numpy() * 100,
            color=colours[k % len(colours)],
            marker=markers[k % len(markers)],
            markevery=(k % 3, 3),
            ms=4.5,
            lw=1.4,
            label=f"{name} ({_score(curves):.1f})",
        )
    greys = cycle(REFERENCE_STYLES)
    for name, curves in (references or {}).items():
        grey, dash = next(greys)
        ax.plot(
            t, curves.mean(0).cpu().numpy() * 100, ls=dash, color=grey, lw=1.3, label=f"{name} ({_score(curves):.1f})"
        )
    ax.set_xlabel("threshold τ")
    ax.set_ylabel("mean IoU ×100")
    ax.legend(
        fontsize=7,
        title="mean over τ, ×100",
        title_fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        handlelength=3.5,
    )
    return ax


def _score(curves: Tensor) -> float:
    return float(curves.mean() * 100)


def bar_panels(
    values: Mapping[str, Tensor],
    labels: Sequence[str],
    highlight: Sequence[int] = (),
    size: tuple[float, float] = (2.6, 2.4),
) -> Figure:
    """One bar chart per entry of ``values`` (a length-K vector each), bars named by ``labels``; the bars at
    ``highlight`` are drawn in black (e.g. the explained class; orange would read as the an8Flower class)."""
    fig, axes = plt.subplots(1, len(values), figsize=(size[0] * len(values), size[1]), layout="constrained")
    for ax, (title, v) in zip(np.atleast_1d(axes), values.items(), strict=True):
        colours = ["black" if i in highlight else "tab:blue" for i in range(len(labels))]
        ax.bar(range(len(labels)), v.detach().double().cpu().numpy(), color=colours)
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=8)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_title(title, fontsize=9)
    return fig


def kl_steps(steps: Any, class_names: Sequence[str], i: int = 0) -> Figure:
    """Algorithm 1's quantities for image ``i`` of :func:`dvehelpers.methods.kl.kl_intermediates`: the logits
    ``k``, ``P``, ``Q`` (with their colour bars), ``z`` and ``α``; the explained class in black."""
    k = len(class_names)
    target = int(steps.targets[i])
    fig, axes = plt.subplots(1, 5, figsize=(16, 3.4), layout="constrained")
    for ax, (title, v) in zip(
        axes[[0, 3, 4]], [("logits k", steps.logits), ("z = ∂KL/∂k", steps.z), ("α (eq. 2)", steps.alpha)], strict=True
    ):
        colours = ["black" if c == target else "tab:blue" for c in range(k)]
        ax.bar(range(k), v[i].detach().double().cpu().numpy(), color=colours)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xticks(range(k), class_names, rotation=90, fontsize=8)
        ax.set_title(title, fontsize=9)
    for ax, (title, mat) in zip(axes[1:3], [("P (ground truth)", steps.P), ("Q (eq. 1)", steps.Q)], strict=True):
        im = ax.imshow(mat[i].detach().double().cpu().numpy(), cmap="viridis", vmin=0)
        ax.set_xticks(range(k), class_names, rotation=90, fontsize=7)
        ax.set_yticks(range(k), class_names, fontsize=7)
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.8).ax.tick_params(labelsize=7)
    return fig


def mu_path(path: Any, class_names: Sequence[str], mark: float | None = None) -> Figure:
    """What μ does (:func:`dvehelpers.methods.vebi.mu_path`): the number of relevant features per class (left) and
    the training fit — the objective per class and the accuracy of ``argmax xᵀW`` (right) — against μ (log axis);
    ``mark`` draws a vertical line at one μ (e.g. the default)."""
    from matplotlib.colors import is_color_like

    mus = path.mus.numpy()
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.6), layout="constrained")
    colours = plt.get_cmap("tab20").colors
    for j, name in enumerate(class_names):
        # a class named by a colour (an8Flower's) is drawn in that colour: a "red" line must not be blue
        colour = name if is_color_like(name) else colours[j % len(colours)]
        style = {"color": colour, "marker": "osD^v"[j % 5], "ms": 3.5, "lw": 1.2, "mec": "black", "mew": 0.4}
        ax[0].plot(mus, path.relevant[:, j].numpy(), label=name, **style)
        ax[1].plot(mus, path.objective[:, j].numpy(), **style)
    twin = ax[1].twinx()
    twin.plot(mus, path.accuracy.numpy() * 100, color="black", ls="--", lw=1.6, label="training accuracy of argmax xᵀW")
    twin.set_ylabel("training accuracy % (dashed)")
    twin.set_ylim(0, 105)
    ax[0].set_ylabel("relevant features (non-zero w)")
    ax[1].set_ylabel("objective ‖Xᵀw_j − l_j‖² per class")
    for a in ax:
        a.set_xscale("log")
        a.set_xlabel("μ (L1 radius of every w_j)")
        if mark is not None:
            a.axvline(mark, color="0.5", lw=1, ls=":")
    ax[0].legend(fontsize=7, ncol=2, title="class", title_fontsize=7)
    twin.legend(fontsize=7, loc="center right")
    return fig


def ablation_bars(results: Mapping[str, Mapping[str, Any]]) -> Figure:
    """Oramas et al.'s ablation figure (blog post, Figure 6) from :func:`dvehelpers.experiments.ablation_test`
    results per model: the drop in balanced accuracy (percentage points) when the relevant filters are zeroed, beside
    as many random filters (bar: mean over seeds; dots: every draw, since the drops are skewed), one group per model
    and scope."""
    groups = [(f"{model}\n{scope} ({a.n} filters)", a) for model, res in results.items() for scope, a in res.items()]
    fig, ax = plt.subplots(figsize=(1.7 * len(groups) + 2.5, 3.4), layout="constrained")
    pos = np.arange(len(groups))
    rel = [a.relevant * 100 for _, a in groups]
    rnd = [a.random_mean * 100 for _, a in groups]
    ax.bar(pos - 0.18, rel, 0.36, color="tab:red", label="relevant filters zeroed")
    ax.bar(pos + 0.18, rnd, 0.36, color="tab:blue", alpha=0.6, label="as many random filters (mean)")
    for k, (_, a) in enumerate(groups):
        draws = a.random.numpy() * 100
        ax.plot(
            pos[k] + 0.18 + np.linspace(-0.1, 0.1, len(draws)),
            draws,
            "o",
            color="black",
            ms=3,
            label="one random draw" if k == 0 else None,
        )
        ax.text(pos[k] - 0.18, rel[k], f"{rel[k]:.1f}", ha="center", va="bottom", fontsize=7)
        ax.text(pos[k] + 0.38, rnd[k], f"{rnd[k]:.1f}", ha="left", va="center", fontsize=7, color="tab:blue")
    ax.set_xticks(pos, [g for g, _ in groups], fontsize=7)
    ax.set_ylabel("drop in balanced accuracy\n(percentage points)")
    ax.axhline(0, color="black", lw=0.8)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def layer_supports(
    supports: Mapping[str, Tensor],
    i: int = 0,
    layers: Sequence[str] | None = None,
    image: Tensor | None = None,
    mask: Tensor | None = None,
    size: float = 1.7,
) -> Figure:
    """A backward walk's per-layer supports (:func:`dvehelpers.methods.fbi.supports`) as the signal descends:
    for image ``i``, one panel per layer of feature maps (``layers``; default every such layer, in the order
    given: top first), each at its own resolution: white where at least one of the layer's maps kept an entry,
    black elsewhere — or, with ``image`` (3×H×W), the image where the layer keeps something and darkened where it
    keeps nothing, with ``mask`` (H×W) outlined. Titled by the shares of positions covered and of entries kept."""
    names = list(layers) if layers is not None else [n for n, v in supports.items() if v.ndim == 4]
    missing = [n for n in names if n not in supports or supports[n].ndim != 4]
    if missing or not names:
        valid = [n for n, v in supports.items() if v.ndim == 4]
        raise ValueError(f"no B×C×h×w support for layer(s) {missing or names}; valid: {', '.join(valid)}")
    fig, axes = plt.subplots(1, len(names), figsize=(size * len(names) + 0.4, size + 1.4), layout="constrained")
    for ax, name in zip(np.atleast_1d(axes), names, strict=True):
        kept = supports[name][i]
        where = kept.any(0)
        h, w = kept.shape[1:]
        if image is None:
            ax.imshow(where.cpu().numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        else:
            ax.imshow(to_rgb(image))
            size_hw = image.shape[-2:]
            dropped = F.interpolate(where[None, None].float(), size=size_hw, mode="nearest")[0, 0] == 0
            ax.imshow(
                np.ma.masked_where(~dropped.cpu().numpy(), dropped.cpu().numpy()),
                cmap="gray_r",
                vmin=0,
                vmax=1,
                alpha=0.75,
            )
        if mask is not None:
            mask_outline(ax, mask)
        ax.set_xticks([])
        ax.set_yticks([])  # keep the frame: a white panel edge must stay visible
        ax.set_title(
            f"{name} ({h}×{w})\n{float(where.double().mean()) * 100:.0f} % of positions\n"
            f"{float(kept.double().mean()) * 100:.1f} % of entries",
            fontsize=7,
        )
    kept_word = "the image shows through" if image is not None else "white"
    fig.supxlabel(f"{kept_word}: at least one feature map keeps an entry at this position", fontsize=7)
    return fig


def _signed_panel(fig: Figure, ax: Axes, values: Tensor, title: str) -> None:
    """A signed map on a diverging scale symmetric about 0 (white), with its own colour bar."""
    v = values.detach().double().cpu().numpy()
    peak = float(np.abs(v).max()) or 1.0
    im = ax.imshow(v, cmap="RdBu_r", vmin=-peak, vmax=peak)
    _bare(ax)
    ax.set_title(title, fontsize=8)
    fig.colorbar(im, ax=ax, shrink=0.75, pad=0.02).ax.tick_params(labelsize=6)


def fourier_steps(steps: Any, i: int = 0, channel: int = 0) -> Figure:
    """Eqs. 3–4 taken apart for image ``i`` of :func:`dvehelpers.methods.fourier.fourier_steps`.

    Top row, one map ``x`` of the layer (``channel``): the map, its centred amplitude spectrum ``|F(x)|`` and
    the transfer functions G₁ and 1 − G₂ (zero frequency in the middle). Bottom row: that map's low- and
    high-scale activations, their product, and the sum of the products over all maps (S, before the noise
    filter). Signed panels are red above and blue below zero, each with its own symmetric scale.
    """
    fig, axes = plt.subplots(2, 4, figsize=(12, 5.6), layout="constrained")
    x = steps.maps[i, channel]
    _signed_panel(fig, axes[0, 0], x, f"map x (channel {channel})")
    spec = axes[0, 1].imshow(steps.spectrum(i, channel).double().cpu().numpy(), cmap="magma")
    fig.colorbar(spec, ax=axes[0, 1], shrink=0.75, pad=0.02).ax.tick_params(labelsize=6)
    axes[0, 1].set_title("|F(x)|, centred", fontsize=8)
    _bare(axes[0, 1])
    for ax, g, title in ((axes[0, 2], steps.g_low, "G₁ (low-pass)"), (axes[0, 3], steps.g_high, "1 − G₂ (high-pass)")):
        im = ax.imshow(g.double().cpu().numpy(), cmap="viridis", vmin=0, vmax=1)
        fig.colorbar(im, ax=ax, shrink=0.75, pad=0.02).ax.tick_params(labelsize=6)
        ax.set_title(title, fontsize=8)
        _bare(ax)
    _signed_panel(fig, axes[1, 0], steps.low[i, channel], "low: F⁻¹(F(x)·G₁)")
    _signed_panel(fig, axes[1, 1], steps.high[i, channel], "high: F⁻¹(F(x)·(1−G₂))")
    _signed_panel(fig, axes[1, 2], steps.product[i, channel], "low ⊙ high (this map)")
    _signed_panel(fig, axes[1, 3], steps.summed[i], f"S = Σ over {steps.maps.shape[1]} maps")
    fig.suptitle(f"eq. 3 on one map of {steps.layer} ({x.shape[0]}×{x.shape[1]})", fontsize=9)
    return fig


def score_matrix(
    values: Tensor,
    rows: Sequence[Any],
    cols: Sequence[Any],
    row_label: str,
    col_label: str,
    title: str = "",
    ax: Axes | None = None,
    cbar_label: str = "mean IoU ×100",
    fmt: str = ".1f",
    mark: tuple[int, int] | None = None,
    mark_label: str = "default",
    best: bool = True,
    vmin: float | None = None,
    vmax: float | None = None,
) -> Axes:
    """A grid of scores (len(rows)×len(cols)) as an annotated heat map; the best cell is boxed in red (unless
    ``best=False``, for values where larger is not better), the cell ``mark`` (row, column), e.g. the default, in
    white and dashed, named in the title by ``mark_label``. Panels that are compared should share ``vmin`` and
    ``vmax`` (the colour scale; default: this panel's own range)."""
    v = values.detach().double().cpu().numpy()
    if v.shape != (len(rows), len(cols)):
        raise ValueError(f"values has shape {v.shape}; rows × cols is {(len(rows), len(cols))}")
    if ax is None:
        _, ax = plt.subplots(figsize=(0.62 * len(cols) + 2.2, 0.42 * len(rows) + 1.2), layout="constrained")
    im = ax.imshow(v, cmap="viridis", origin="lower", aspect="auto", vmin=vmin, vmax=vmax)
    ax.figure.colorbar(im, ax=ax, pad=0.02).set_label(cbar_label, fontsize=8)
    lo, hi = im.get_clim()
    mid = (lo + hi) / 2
    for (r, c), val in np.ndenumerate(v):
        ax.text(c, r, format(val, fmt), ha="center", va="center", fontsize=7, color="k" if val > mid else "w")
    if best:
        r, c = np.unravel_index(np.nanargmax(v), v.shape)
        ax.add_patch(plt.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, ec="red", lw=1.6))
    if mark is not None:
        ax.add_patch(plt.Rectangle((mark[1] - 0.42, mark[0] - 0.42), 0.84, 0.84, fill=False, ec="w", lw=1.4, ls="--"))
        title = f"{title}\n{'red: best; ' if best else ''}white dashed: {mark_label}".strip()
    ax.set_xticks(range(len(cols)), [str(x) for x in cols], fontsize=7)
    ax.set_yticks(range(len(rows)), [str(x) for x in rows], fontsize=7)
    ax.set_xlabel(col_label, fontsize=8)
    ax.set_ylabel(row_label, fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def strip(
    images: Tensor,
    maps: Tensor,
    titles: Sequence[str] = (),
    masks: Tensor | None = None,
    size: float = 1.6,
) -> Figure:
    """A sequence of images (N×3×H×W) in the top row and their heatmaps (N×H×W) over them below, one column
    per step (e.g. per blur level), titled by ``titles``, with one shared colour bar."""
    n = images.shape[0]
    fig, axes = plt.subplots(2, n, figsize=(size * n + 1.2, 2 * size + 0.8), squeeze=False, layout="constrained")
    for k in range(n):
        axes[0, k].imshow(to_rgb(images[k]))
        _bare(axes[0, k])
        overlay(axes[1, k], images[k], maps[k])
        if masks is not None:
            mask_outline(axes[1, k], masks[k])
        if k < len(titles):
            axes[0, k].set_title(titles[k], fontsize=7)
    heat_colorbar(fig, axes[1], label=HEAT_LABEL.replace(": ", ":\n"), shrink=1.0, aspect=12)
    return fig


def blur_curves(results: Mapping[str, Any], size: tuple[float, float] = (4.2, 3.2)) -> Figure:
    """The blur test (:func:`dvehelpers.experiments.blur_test`), one panel per entry of ``results``: against
    the blur σ, the accuracy, the map's agreement with the unblurred map and its mean IoU with the mask
    (all ×100; the agreement as median with its interquartile band over the images)."""
    fig, axes = plt.subplots(1, len(results), figsize=(size[0] * len(results) + 1.5, size[1]), layout="constrained")
    for ax, (title, r) in zip(np.atleast_1d(axes), results.items(), strict=True):
        s = r.sigmas.cpu().numpy()
        q = torch.quantile(
            r.same_map.detach().double().cpu(), torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64), dim=1
        )
        ax.plot(s, r.accuracy().cpu().numpy() * 100, "o-", color="tab:red", ms=4, label="accuracy")
        ax.plot(s, q[1].numpy() * 100, "s-", color="tab:blue", ms=4, label="same map as unblurred (median IoU)")
        ax.fill_between(s, q[0].numpy() * 100, q[2].numpy() * 100, color="tab:blue", alpha=0.15, lw=0)
        if not r.mask_iou.isnan().all():  # photos have no mask
            mask_iou = r.mask_iou.mean(1).cpu().numpy() * 100
            ax.plot(s, mask_iou, "D--", color="tab:green", ms=4, label="mean IoU with mask")
        ax.set_xlabel("Gaussian blur σ (pixels)")
        ax.set_ylim(0, 102)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("×100")
    np.atleast_1d(axes)[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


_MODEL_STYLE = {"vgg": ("o", "tab:blue"), "alexnet": ("s", "tab:orange")}


def ranking(
    rows: Sequence[Mapping[str, Any]], key: str = "mean_iou", size: tuple[float, float] = (4.6, 0.28)
) -> Figure:
    """The evaluation table as a figure: one panel per variant, one row per method (best on top by the mean over
    panels and models), a marker per model at ``key`` with its bootstrap 95 % interval (``ci_low``–``ci_high``)
    when ``key`` is the mean IoU. Reference rows (``"reference: …"``) are grey, below a line."""
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    by = {(r["method"], r["variant"], r["model"]): r for r in rows}
    names = list(dict.fromkeys(r["method"] for r in rows))
    mean = {m: np.nanmean([by[k][key] for k in by if k[0] == m]) for m in names}
    refs = [m for m in names if m.startswith("reference: ")]
    order = refs + sorted((m for m in names if m not in refs), key=lambda m: mean[m])  # bottom to top
    fig, axes = plt.subplots(
        1,
        len(variants),
        figsize=(size[0] * len(variants) + 2.4, size[1] * len(order) + 1.2),
        layout="constrained",
        sharey=True,
        squeeze=False,
    )
    # the axis ends just past the methods and the informative references; a reference beyond it (the mask's 100)
    # is drawn at the edge with its value, so that it does not squash every method into the left of the panel
    inside = [by[k][key] for k in by if by[k][key] == by[k][key] and not (k[0] in refs and by[k][key] >= 99.5)]
    edge = 1.08 * max(inside + [by[k].get("ci_high", by[k][key]) for k in by if k[0] not in refs]) if inside else None
    for ax, variant in zip(axes[0], variants, strict=True):
        for j, model in enumerate(models):
            marker, colour = _MODEL_STYLE.get(model, ("D", f"C{j + 2}"))
            for y, m in enumerate(order):
                r = by.get((m, variant, model))
                if r is None:
                    continue
                c = "0.45" if m in refs else colour
                off = (j - (len(models) - 1) / 2) * 0.22
                if edge is not None and r[key] > edge:
                    ax.plot(edge, y + off, ">", color=c, ms=4.5)
                    ax.text(edge, y + off, f"{r[key]:.0f} ", ha="right", va="center", fontsize=6.5, color=c)
                    continue
                if key == "mean_iou":
                    ax.plot([r["ci_low"], r["ci_high"]], [y + off] * 2, color=c, lw=1.2)
                ax.plot(r[key], y + off, marker, color=c, ms=4.5, label=model if y == len(order) - 1 else None)
        ax.axhline(len(refs) - 0.5, color="0.6", lw=0.8)
        if edge is not None:
            ax.set_xlim(right=edge * 1.02)
        ax.set_title(variant, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.set_xlabel("mean IoU ×100 (bar: bootstrap 95 % CI)" if key == "mean_iou" else key, fontsize=8)
    axes[0, 0].set_yticks(range(len(order)), order, fontsize=7)
    axes[0, -1].legend(fontsize=7, loc="lower right", title="model", title_fontsize=7)
    return fig


def randomisation_curves(
    cascades: Mapping[str, Tensor], layers: Sequence[str], ax: Axes | None = None, survives: float | None = None
) -> Axes:
    """Cascading randomisation (:func:`dvehelpers.sanity.cascade`): the median rank correlation of each method's
    maps with its trained-model maps (y) as learned layers are randomised from the top (x, cumulative). A
    dotted line marks the stage where the whole classifier (the ``fc`` layers) is random, a dashed line at
    ``survives`` the flag threshold; methods at or above it there are drawn thick."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.6), layout="constrained")
    x = np.arange(len(layers) + 1)
    markers = "osD^vP*Xh<>"
    many = len(cascades) > 10  # tab10 while its colours suffice, tab20 (paired shades) beyond
    colours = plt.get_cmap("tab20" if many else "tab10").colors
    for k, (name, med) in enumerate(cascades.items()):
        y = np.concatenate([[1.0], med.detach().double().cpu().numpy()])
        thick = survives is not None and y[sum(n.startswith("fc") for n in layers) or len(layers)] >= survives
        colour = colours[(2 * k) % 20 + (k // 10) % 2] if many else colours[k]
        style = ("-", "--", "-.", ":")[k % 4]  # with the marker, tells apart lines whose colours are close
        ax.plot(
            x, y, marker=markers[k % len(markers)], ms=3.5, lw=2.2 if thick else 1.0, ls=style, label=name, color=colour
        )
    if survives is not None:
        ax.axhline(survives, color="k", ls="--", lw=0.8)
    fc = sum(n.startswith("fc") for n in layers)
    if 0 < fc < len(layers):
        ax.axvline(fc, color="0.5", ls=":", lw=1.0)
        ax.text(fc + 0.1, 0.03, "classifier random →", fontsize=7, color="0.35", transform=ax.get_xaxis_transform())
    ax.set_xticks(x, ["trained", *(f"+{n}" for n in layers)], rotation=60, fontsize=7)
    ax.set_ylabel("median Spearman r with the trained map", fontsize=8)
    ax.set_xlabel("layers randomised, cumulatively from the top", fontsize=8)
    ax.set_ylim(min(-0.1, ax.get_ylim()[0]), 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return ax


def class_sensitivity(rows: Sequence[Mapping[str, Any]], blind: float | None = None) -> Figure:
    """The median correlation between a method's map for the predicted class and its maps for the other classes
    (``class_r`` of the evaluation rows), one marker per variant and model; 1 = the map ignores the class. A
    dashed line at ``blind`` marks the class-blind flag; methods without the number (class-agnostic) are left out."""
    rows = [r for r in rows if not np.isnan(r["class_r"])]
    names = sorted(
        dict.fromkeys(r["method"] for r in rows),
        key=lambda m: np.mean([r["class_r"] for r in rows if r["method"] == m]),
    )
    fig, ax = plt.subplots(figsize=(6.4, 0.3 * len(names) + 1.3), layout="constrained")
    keys = list(dict.fromkeys((r["model"], r["variant"]) for r in rows))
    for j, (model, variant) in enumerate(keys):
        pts = [(r["class_r"], names.index(r["method"])) for r in rows if (r["model"], r["variant"]) == (model, variant)]
        marker, colour = _MODEL_STYLE.get(model, ("D", f"C{j + 2}"))
        filled = variant == keys[0][1]
        ax.scatter(
            [p[0] for p in pts],
            [p[1] + (j - (len(keys) - 1) / 2) * 0.15 for p in pts],
            marker=marker,
            s=22,
            facecolors=colour if filled else "none",
            edgecolors=colour,
            label=f"{model} {variant}",
        )
    if blind is not None:
        ax.axvline(blind, color="k", ls="--", lw=0.8)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel(
        "median r(map for the predicted class, map for another class)  —  1: the class does not matter", fontsize=8
    )
    ax.grid(axis="x", alpha=0.3)
    ax.set_ylabel("method", fontsize=8)
    ax.set_title(
        f"class sensitivity (dashed: the class-blind flag at r = {blind})"
        if blind is not None
        else "class sensitivity",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="model, variant", title_fontsize=7)
    return fig


def faithfulness_curves(curves: Mapping[str, Mapping[str, Tensor]], size: tuple[float, float] = (4.8, 3.8)) -> Figure:
    """Deletion and insertion (:func:`dvehelpers.metrics.deletion_insertion`): ``curves[method][mode]`` is a
    B×(S+1) tensor of the explained class's probability; one panel per mode, the mean over images against the
    fraction of pixels deleted / inserted, the AUC in the legend. Deletion: lower is better; insertion: higher."""

    modes = list(dict.fromkeys(m for c in curves.values() for m in c))
    fig, axes = plt.subplots(1, len(modes), figsize=(size[0] * len(modes), size[1]), layout="constrained")
    for ax, mode in zip(np.atleast_1d(axes), modes, strict=True):
        greys, top = cycle(REFERENCE_STYLES), 0.0
        for k, (name, c) in enumerate(curves.items()):
            p = c[mode].double()
            mean = p.mean(0).cpu().numpy()
            top = max(top, float(mean.max()))
            grey, dash = next(greys) if name.startswith("reference: ") else (f"C{k % 10}", "-")
            ax.plot(
                np.linspace(0, 1, p.shape[1]),
                mean,
                ls=dash,
                color=grey,
                lw=1.3,
                label=f"{name} ({float(torch.trapezoid(p, dx=1 / (p.shape[1] - 1)).mean()):.3f})",
            )
        better = "lower" if mode == "deletion" else "higher"
        ax.set_title(f"{mode} (AUC: {better} is better)", fontsize=9)
        ax.set_xlabel(
            f"fraction of pixels {'deleted' if mode == 'deletion' else 'inserted'}, most salient first", fontsize=8
        )
        ax.set_ylim(0, min(1.02, top * 1.1 + 0.01))  # from 0, up to just above the highest mean curve
        ax.grid(alpha=0.3)
        ax.legend(
            fontsize=6, loc="upper right" if mode == "deletion" else "lower right", title="AUC", title_fontsize=6.5
        )
    np.atleast_1d(axes)[0].set_ylabel("probability of the explained class", fontsize=8)
    return fig


class Table:
    """A small table that reads as aligned text (``print``, checked notebook cells) and as HTML in Jupyter.

    ``floatfmt``: one format for every float, or one per column.
    """

    def __init__(
        self,
        rows: Sequence[Sequence[Any]],
        header: Sequence[str],
        title: str = "",
        floatfmt: str | Sequence[str] = ".1f",
    ):
        if any(len(r) != len(header) for r in rows):
            raise ValueError(f"every row needs {len(header)} cells, one per column of {list(header)}")
        fmts = [floatfmt] * len(header) if isinstance(floatfmt, str) else list(floatfmt)
        if len(fmts) != len(header):
            raise ValueError(f"floatfmt needs one format per column ({len(header)}), got {len(fmts)}")
        self.header, self.title = list(header), title
        self.rows = [[_cell(v, f) for v, f in zip(r, fmts, strict=True)] for r in rows]

    def __str__(self) -> str:
        cols = list(zip(self.header, *self.rows, strict=True))
        width = [max(len(c) for c in col) for col in cols]
        numeric = [all(_is_number(c) for c in col[1:]) and len(col) > 1 for col in cols]

        def line(cells: Sequence[str]) -> str:
            return "  ".join(
                c.rjust(w) if n else c.ljust(w) for c, w, n in zip(cells, width, numeric, strict=True)
            ).rstrip()

        out = [self.title] if self.title else []
        out += [line(self.header), "  ".join("-" * w for w in width)]
        return "\n".join(out + [line(r) for r in self.rows])

    __repr__ = __str__

    def _repr_html_(self) -> str:
        esc = html.escape
        head = "".join(f"<th>{esc(h)}</th>" for h in self.header)
        body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in self.rows)
        caption = f"<caption style='text-align:left'>{esc(self.title)}</caption>" if self.title else ""
        return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any, fmt: str) -> str:
    if isinstance(value, Tensor):
        value = value.item()
    return format(value, fmt) if isinstance(value, float) else str(value)


def _is_number(text: str) -> bool:
    try:
        float(text.replace("%", "").replace("×", ""))
    except ValueError:
        return False
    return True


def table(
    rows: Sequence[Sequence[Any]], header: Sequence[str], title: str = "", floatfmt: str | Sequence[str] = ".1f"
) -> Table:
    """A :class:`Table` of ``rows`` under ``header``; floats are written with ``floatfmt`` (one, or one per column)."""
    return Table(rows, header, title, floatfmt)
