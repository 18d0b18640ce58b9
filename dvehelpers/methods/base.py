"""What every method shares: the checked forward pass, layers, start signals, parameter specs, output forms."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import Tensor, nn

from ..checks import check_images, resolve_targets
from ..engine import (
    GRADIENT,
    INPUT,
    SMOOTH_POLICIES,
    RuleSet,
    Trace,
    cam_layer,
    capture,
    one_hot,
    propagate,
    record,
    resolve,
    with_smooth,
)
from ..maps import REDUCTIONS, normalize, reduce_rgb
from ..registry import Param

__all__ = [
    "forward",
    "input_signal",
    "layer_signal",
    "layer_index",
    "conv_maps",
    "input_space_output",
    "rule_set",
    "LAYER",
    "REDUCTION",
    "OUTPUT",
    "SMOOTH",
]

LAYER = Param("layer", None, "layer to explain (None: the last layer with a spatial map, e.g. relu5_3)", kind="layer")
REDUCTION = Param(
    "reduction",
    "pos_l2",
    "RGB -> heatmap: " + "; ".join(REDUCTIONS.values()),
    "choice",
    tuple(REDUCTIONS),
    when={"output": ("heatmap",)},
)
OUTPUT = Param(
    "output", "heatmap", "'heatmap' (B×H×W in [0,1]) or 'raw' (signed B×3×H×W)", "choice", ("heatmap", "raw")
)
SMOOTH = Param(
    "smooth",
    "refuse",
    "smooth activations (SiLU, hard swish, GELU, sigmoid gates): "
    + "; ".join(f"'{k}' {v}" for k, v in SMOOTH_POLICIES.items()),
    "choice",
    tuple(SMOOTH_POLICIES),
)


def forward(
    model: nn.Module,
    images: Any,
    target: Any,
    *,
    rules: RuleSet | Iterable[RuleSet] | None = None,
    keep: Iterable[int] = (),
    down_to: int = INPUT,
) -> tuple[Trace, Tensor]:
    """Validate the inputs, record the forward pass (keeping what ``rules`` need down to ``down_to`` and the
    outputs of ``keep``) and resolve the explained class of every image."""
    images = check_images(model, images)
    rule_sets = rules if rules is None or isinstance(rules, RuleSet) else tuple(rules)
    trace = record(model, images, rules=rule_sets, keep=keep, down_to=down_to)
    return trace, resolve_targets(target, trace.logits)


def layer_index(model: nn.Module, layer: str | int | None, images: Tensor) -> int:
    """The node index of ``layer``, or of the CAM-style default layer for images of this size (checked first)."""
    images = check_images(model, images)
    graph = capture(model)
    return cam_layer(graph, tuple(images.shape[-2:]), images.shape[1]) if layer is None else resolve(graph, layer)


def conv_maps(trace: Trace, index: int, method: str) -> Tensor:
    """The output of node ``index`` when it is a stack of B×C×h×w maps, else a clear error naming ``method``."""
    acts = trace.output(index)
    if acts.ndim != 4:
        raise ValueError(
            f"{method} needs a layer with spatial maps (B×C×h×w); {trace.graph.nodes[index].name} gives shape "
            f"{tuple(acts.shape)}"
        )
    return acts


def rule_set(rules: RuleSet, smooth: str) -> RuleSet:
    """``rules`` with the ``smooth`` policy for smooth activations."""
    return with_smooth(rules, smooth)


def input_signal(trace: Trace, targets: Tensor, rules: RuleSet) -> Tensor:
    """The target logit's signal at the input under ``rules`` (the gradient for ``GRADIENT``)."""
    return propagate(trace, one_hot(trace.logits, targets), rules)


def layer_signal(trace: Trace, targets: Tensor, index: int, rules: RuleSet = GRADIENT) -> Tensor:
    """The target logit's signal at the output of node ``index``; only the nodes above it are crossed."""
    return propagate(trace, one_hot(trace.logits, targets), rules, to=index)


def input_space_output(raw: Tensor, reduction: str, output: str) -> Tensor:
    """``raw`` as it is (``output="raw"``) or reduced over RGB and normalised to [0, 1]."""
    return raw if output == "raw" else normalize(reduce_rgb(raw, reduction))
