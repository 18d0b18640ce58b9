"""What every method shares: the checked forward pass, start signals, parameter specs, output forms."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..backprop import GRADIENT, RuleSet, one_hot, propagate
from ..checks import check_images, resolve_targets
from ..maps import REDUCTIONS, normalize, reduce_rgb
from ..models import default_cam_layer, resolve_layer
from ..registry import Param
from ..trace import Trace, record

__all__ = [
    "forward",
    "input_signal",
    "layer_signal",
    "layer_index",
    "conv_maps",
    "input_space_output",
    "LAYER",
    "REDUCTION",
    "OUTPUT",
]

LAYER = Param("layer", None, "layer to explain (None: the last conv block's ReLU)", kind="layer")
REDUCTION = Param(
    "reduction", "pos_l2", "RGB -> heatmap: " + "; ".join(REDUCTIONS.values()), "choice", tuple(REDUCTIONS)
)
OUTPUT = Param(
    "output", "heatmap", "'heatmap' (B×H×W in [0,1]) or 'raw' (signed B×3×H×W)", "choice", ("heatmap", "raw")
)


def forward(model: nn.Module, images: Any, target: Any, keep_from: int = 0) -> tuple[Trace, Tensor]:
    """Validate the inputs, record the forward pass and resolve the explained class of every image."""
    images = check_images(model, images)
    trace = record(model, images, keep_from=keep_from)
    return trace, resolve_targets(target, trace.logits)


def layer_index(model: nn.Module, layer: str | int | None) -> int:
    return resolve_layer(model, default_cam_layer(model) if layer is None else layer)


def conv_maps(trace: Trace, index: int, method: str) -> Tensor:
    """The output of step ``index`` when it is a stack of B×C×h×w maps, else a clear error naming ``method``."""
    acts = trace.output(index)
    if acts.ndim != 4:
        raise ValueError(
            f"{method} needs a convolutional layer (B×C×h×w maps); {trace.steps[index].name} gives shape "
            f"{tuple(acts.shape)}"
        )
    return acts


def input_signal(trace: Trace, targets: Tensor, rules: RuleSet) -> Tensor:
    """The target logit's signal at the input under ``rules`` (the gradient for ``GRADIENT``)."""
    return propagate(trace, one_hot(trace.logits, targets), rules)


def layer_signal(trace: Trace, targets: Tensor, index: int, rules: RuleSet = GRADIENT) -> Tensor:
    """The target logit's signal at the output of step ``index``; only the layers above it are crossed."""
    return propagate(trace, one_hot(trace.logits, targets), rules, stop=index + 1)


def input_space_output(raw: Tensor, reduction: str, output: str) -> Tensor:
    """``raw`` as it is (``output="raw"``) or reduced over RGB and normalised to [0, 1]."""
    return raw if output == "raw" else normalize(reduce_rgb(raw, reduction))
