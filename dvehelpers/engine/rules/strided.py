"""Oramas et al.'s fix for strided convolutions (ICLR 2019, "Visual Explanation by Interpretation", §3.2).

The exact backward rule of a convolution with stride s (a transposed convolution with that stride) scatters every
unit into a grid with gaps of period s: the checkerboard of deconvolution visualisations. The fix resizes the
backward signal first and then applies a *stride-1* transposed convolution with the layer's filters: for kernel k,
padding p and dilation d, resized to ``n' = H_in + 2p − d(k − 1)`` per axis, the stride-1 transposed convolution
lands on ``H_in`` exactly. It applies at every convolution with stride > 1: depthwise and grouped ones, and 1×1
stride-2 downsampling (ResNet's shortcuts); TF "same" padding lives in the pad node before the convolution (the
convolution itself pads nothing), whose rule then crops the result.

When ``n'`` is exactly the stride times the signal's size (AlexNet's first layer: 55 → 110 for stride 2), nearest
resizing replicates every unit over an s×s block, and the stride-1 transposed convolution of the blocks equals a
stride-s transposed convolution of the signal itself with the block's offsets summed into the kernel (the dilated
kernel convolved with an s×s box of ones): s² fewer positions for a kernel s − 1 taps wider.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

from ..graph import Conv, Node
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
        if resize == "nearest" and size == tuple(st * n for st, n in zip(s.stride, signal.shape[-2:], strict=True)):
            return F.conv_transpose2d(signal, _block_kernel(w, s), None, s.stride, s.padding, 0, s.groups)
        kwargs = {"align_corners": False} if resize == "bilinear" else {}
        resized = F.interpolate(signal, size=size, mode=resize, **kwargs)
        return F.conv_transpose2d(resized, w, None, 1, s.padding, 0, s.groups, s.dilation)

    return rule


def _block_kernel(w: Tensor, spec: Conv) -> Tensor:
    """The kernel of the fix's stride-s form: ``w`` dilated, then convolved with an s×s box of ones (every output
    tap sums the kernel taps that one replicated block reaches)."""
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    c_out, c_in, kh, kw = w.shape
    dilated = w.new_zeros(c_out * c_in, 1, dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    dilated[..., ::dh, ::dw] = w.reshape(c_out * c_in, 1, kh, kw)
    box = w.new_ones(1, 1, sh, sw)  # symmetric: correlation is convolution
    blocks = F.conv2d(dilated, box, padding=(sh - 1, sw - 1))
    return blocks.reshape(c_out, c_in, *blocks.shape[-2:])


GUIDED_STRIDED_FIX = GUIDED.with_rules(
    "guided_strided_fix", "Oramas et al. 2019: guided, strided convs resized", conv=strided_fix("nearest")
)
