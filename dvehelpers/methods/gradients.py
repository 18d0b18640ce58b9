"""Input-space backward methods: vanilla gradient, DeconvNet, guided backprop — one engine, three rule sets.

For the explained logit ``k_c`` each returns ``R = B_1 ∘ … ∘ B_L (e_c)``, the one-hot start signal walked
down every node with the rule set's backward maps ``B_l`` (:mod:`dvehelpers.engine.rules`), reduced over RGB.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..engine import DECONVNET, GRADIENT, GUIDED, RuleSet
from ..registry import register
from .base import OUTPUT, REDUCTION, SMOOTH, forward, input_signal, input_space_output, rule_set

__all__ = ["gradient", "deconvnet", "guided_backprop"]


def _explain(rules: RuleSet, model: nn.Module, images: Tensor, target: Any, reduction: str, output: str) -> Tensor:
    trace, targets = forward(model, images, target, rules=rules)
    return input_space_output(input_signal(trace, targets, rules), reduction, output)


@register("gradient", params=[REDUCTION, OUTPUT], paper="Simonyan et al. 2014", class_specific=True)
def gradient(
    model: nn.Module,
    images: Tensor,
    target: Any = None,
    *,
    reduction: str = "pos_l2",
    output: str = "heatmap",
) -> Tensor:
    """Vanilla gradient ∂k_c/∂x (Simonyan, Vedaldi & Zisserman 2014, eq. 2)."""
    return _explain(GRADIENT, model, images, target, reduction, output)


@register("deconvnet", params=[SMOOTH, REDUCTION, OUTPUT], paper="Zeiler & Fergus 2014", class_specific=True)
def deconvnet(
    model: nn.Module,
    images: Tensor,
    target: Any = None,
    *,
    smooth: str = "refuse",
    reduction: str = "pos_l2",
    output: str = "heatmap",
) -> Tensor:
    """DeconvNet: ReLU and ReLU6 pass max(R, 0) regardless of the forward input; max-pool switches (Zeiler & Fergus
    2014).

    The image enters the backward pass only through the max-pool switches (and through gates such as
    squeeze-excitation products, or smooth activations with ``smooth="gradient"``): on a network without them —
    EfficientNet-Lite0, MobileNetV2 — the map depends on the class and the weights, not on the image."""
    return _explain(rule_set(DECONVNET, smooth), model, images, target, reduction, output)


@register("guided_backprop", params=[SMOOTH, REDUCTION, OUTPUT], paper="Springenberg et al. 2015", class_specific=True)
def guided_backprop(
    model: nn.Module,
    images: Tensor,
    target: Any = None,
    *,
    smooth: str = "refuse",
    reduction: str = "pos_l2",
    output: str = "heatmap",
) -> Tensor:
    """Guided backprop: ReLU passes max(R, 0)·[x > 0], ReLU6 max(R, 0)·[0 < x < 6] (Springenberg et al. 2015,
    eq. in §3.4)."""
    return _explain(rule_set(GUIDED, smooth), model, images, target, reduction, output)
