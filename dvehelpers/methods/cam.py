"""Class activation maps: Grad-CAM, Grad-CAM++ and their guided versions.

Only the layers above the explained layer are crossed backwards (the gradient is needed there alone), and
the forward pass keeps no activation below it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..engine import GRADIENT, GUIDED, Trace
from ..maps import normalize, upsample
from ..registry import register
from .base import (
    LAYER,
    OUTPUT,
    REDUCTION,
    SMOOTH,
    conv_maps,
    forward,
    input_signal,
    input_space_output,
    layer_index,
    layer_signal,
    rule_set,
)

__all__ = ["gradcam", "gradcam_pp", "guided_gradcam", "guided_gradcam_pp", "cam_weights", "low_res_cam"]


def cam_weights(activations: Tensor, grads: Tensor, plus: bool) -> Tensor:
    """Channel weights ``w_k`` (B×C) from the layer's activations ``A`` and gradients ``g = ∂k_c/∂A``.

    Grad-CAM (Selvaraju et al. 2017, eq. 1): ``w_k = mean_ij g_ij^k``.
    Grad-CAM++ (Chattopadhyay et al. 2018, eqs. 19 and 10) with ``Y_c = exp(k_c)``, whose derivatives are
    ``exp(k_c)·g``, ``exp(k_c)·g²``, ``exp(k_c)·g³`` for a piecewise-linear network:
    ``α_ij^k = g² / (2g² + Σ_ab A_ab^k · g³)`` (0 where the denominator is 0) and
    ``w_k = Σ_ij α_ij^k · relu(g_ij^k)``; the common factor ``exp(k_c)`` cancels in α and scales every
    ``w_k`` alike, so it is dropped (it vanishes under normalisation).
    """
    if not plus:
        return grads.mean(dim=(2, 3))
    g2 = grads.square()
    denom = 2 * g2 + activations.sum(dim=(2, 3), keepdim=True) * g2 * grads
    alpha = torch.where(denom != 0, g2 / torch.where(denom != 0, denom, 1), torch.zeros_like(g2))
    return (alpha * grads.clamp(min=0)).sum(dim=(2, 3))


def low_res_cam(trace: Trace, targets: Tensor, index: int, plus: bool = False) -> Tensor:
    """``relu(Σ_k w_k A^k)`` at the layer's resolution (Selvaraju et al. eq. 2), B×h×w, not normalised."""
    acts = conv_maps(trace, index, "CAM")
    weights = cam_weights(acts, layer_signal(trace, targets, index), plus)
    return torch.einsum("bc,bchw->bhw", weights, acts).clamp(min=0)


def _cam(model: nn.Module, images: Tensor, target: Any, layer: str | int | None, plus: bool) -> Tensor:
    index = layer_index(model, layer, images)
    trace, targets = forward(model, images, target, rules=GRADIENT, keep=[index], down_to=index)
    return normalize(upsample(low_res_cam(trace, targets, index, plus), images.shape[-2:]))


def _guided_cam(
    model: nn.Module,
    images: Tensor,
    target: Any,
    layer: str | int | None,
    plus: bool,
    smooth: str,
    reduction: str,
    output: str,
) -> Tensor:
    index = layer_index(model, layer, images)
    guided = rule_set(GUIDED, smooth)
    trace, targets = forward(model, images, target, rules=[GRADIENT, guided], keep=[index])
    cam = normalize(upsample(low_res_cam(trace, targets, index, plus), images.shape[-2:]))
    raw = input_signal(trace, targets, guided) * cam[:, None]
    return input_space_output(raw, reduction, output)


@register("gradcam", params=[LAYER], paper="Selvaraju et al. 2017", class_specific=True)
def gradcam(model: nn.Module, images: Tensor, target: Any = None, *, layer: str | int | None = None) -> Tensor:
    """Grad-CAM: relu(Σ_k mean_ij(∂k_c/∂A^k_ij) A^k), upsampled bilinearly (Selvaraju et al. 2017, eqs. 1–2)."""
    return _cam(model, images, target, layer, plus=False)


@register("gradcam_pp", params=[LAYER], paper="Chattopadhyay et al. 2018", class_specific=True)
def gradcam_pp(model: nn.Module, images: Tensor, target: Any = None, *, layer: str | int | None = None) -> Tensor:
    """Grad-CAM++: weights Σ_ij α_ij relu(∂Y_c/∂A_ij) with α of eq. 19 (Chattopadhyay et al. 2018)."""
    return _cam(model, images, target, layer, plus=True)


@register(
    "guided_gradcam", params=[LAYER, SMOOTH, REDUCTION, OUTPUT], paper="Selvaraju et al. 2017", class_specific=True
)
def guided_gradcam(
    model: nn.Module,
    images: Tensor,
    target: Any = None,
    *,
    layer: str | int | None = None,
    smooth: str = "refuse",
    reduction: str = "pos_l2",
    output: str = "heatmap",
) -> Tensor:
    """Guided Grad-CAM: guided backprop ⊙ upsampled Grad-CAM (Selvaraju et al. 2017, §3.1)."""
    return _guided_cam(model, images, target, layer, False, smooth, reduction, output)


@register(
    "guided_gradcam_pp",
    params=[LAYER, SMOOTH, REDUCTION, OUTPUT],
    paper="Chattopadhyay et al. 2018",
    class_specific=True,
)
def guided_gradcam_pp(
    model: nn.Module,
    images: Tensor,
    target: Any = None,
    *,
    layer: str | int | None = None,
    smooth: str = "refuse",
    reduction: str = "pos_l2",
    output: str = "heatmap",
) -> Tensor:
    """Guided Grad-CAM++: guided backprop ⊙ upsampled Grad-CAM++ (Chattopadhyay et al. 2018)."""
    return _guided_cam(model, images, target, layer, True, smooth, reduction, output)
