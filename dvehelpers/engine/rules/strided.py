"""Oramas et al.'s fix for strided convolutions (ICLR 2019, "Visual Explanation by Interpretation", §3.2).

The exact backward rule of a convolution with stride s (a transposed convolution with that stride) scatters every
unit into a grid with gaps of period s: the checkerboard of deconvolution visualisations. The fix resizes the
backward signal first and then applies a *stride-1* transposed convolution with the layer's filters: for kernel k,
padding p and dilation d, resized to ``n' = H_in + 2p − d(k − 1)`` per axis, the stride-1 transposed convolution
lands on ``H_in`` exactly. It applies at every convolution with stride > 1: depthwise and grouped ones, and 1×1
stride-2 downsampling (ResNet's shortcuts); TF "same" padding lives in the pad node before the convolution (the
convolution itself pads nothing), whose rule then crops the result.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

from ..graph import Node
from ..record import Trace
from ..walk import needs
from .gradient import conv
from .modified import GUIDED

__all__ = ["RESIZE_MODES", "strided_fix", "GUIDED_STRIDED_FIX"]

#: How :func:`strided_fix` resizes the signal before the stride-1 transposed convolution.
RESIZE_MODES = ("nearest", "bilinear")


def strided_fix(resize: str = "nearest") -> Callable[[Node, Trace, Tensor], Tensor]:
    """The conv rule of Oramas et al.: stride-1 convolutions keep the exact rule; a strided one resizes the signal
    (``resize``: ``"nearest"`` as in the authors' code, or ``"bilinear"``) to ``n'`` and transposes at stride 1."""
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {', '.join(map(repr, RESIZE_MODES))}, got {resize!r}")

    @needs()
    def rule(node: Node, trace: Trace, signal: Tensor) -> Tensor:
        s = node.spec
        if s.stride == (1, 1):
            return conv(node, trace, signal)
        w, _ = trace.weights[node.index]
        assert w is not None
        k, shape = w.shape[-2:], trace.shape(node.inputs[0])
        size = tuple(shape[2 + i] + 2 * s.padding[i] - s.dilation[i] * (k[i] - 1) for i in range(2))
        kwargs = {"align_corners": False} if resize == "bilinear" else {}
        resized = F.interpolate(signal, size=size, mode=resize, **kwargs)
        return F.conv_transpose2d(resized, w, None, 1, s.padding, 0, s.groups, s.dilation)

    return rule


GUIDED_STRIDED_FIX = GUIDED.with_rules(
    "guided_strided_fix", "Oramas et al. 2019: guided, strided convs resized", conv=strided_fix("nearest")
)
