"""Upsampled activation maps: the forward response of a layer, summed over all or chosen channels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..maps import normalize, upsample
from ..registry import Param, register
from .base import LAYER, conv_maps, forward, layer_index

__all__ = ["activation"]

CHANNELS = Param("channels", None, "channels to sum (None: all of them)", kind="channels")


@register("activation", params=[LAYER, CHANNELS], paper="Oramas et al. 2019 (baseline)", class_specific=False)
def activation(
    model: nn.Module,
    images: Tensor,
    target: Any = None,
    *,
    layer: str | int | None = None,
    channels: Sequence[int] | None = None,
) -> Tensor:
    """Upsampled activation Σ_{k ∈ channels} A^k of a conv layer; ``target`` is ignored (not class-specific)."""
    index = layer_index(model, layer, images)
    trace, _ = forward(model, images, target, rules=(), keep=[index])
    acts = conv_maps(trace, index, "activation maps")
    if channels is not None:
        n = acts.shape[1]
        bad = [c for c in channels if not -n <= c < n]
        if bad or not channels:
            raise ValueError(
                f"channels {list(channels)} invalid for layer {trace.graph.nodes[index].name} with {n} "
                f"channels (valid 0..{n - 1}, at least one)"
            )
        acts = acts[:, torch.as_tensor(list(channels), device=acts.device)]
    return normalize(upsample(acts.sum(1), images.shape[-2:]))
