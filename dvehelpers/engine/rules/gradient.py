"""``GRADIENT``: the exact vector-Jacobian product of every node kind, so that a walk equals ``torch.autograd``.

Every other rule set starts from this one and replaces a few kinds' rules. Each rule takes the signal ``s`` at the
node's output and returns the signal at its input(s):

* conv: the transposed convolution with the layer's own (folded) filters, ``Wᵀ ∗ s``; linear: ``s W``;
* batch norm (unfolded): ``s ⊙ γ/√(σ² + ε)``;
* ReLU: ``s ⊙ [x > 0]``; ReLU6: ``s ⊙ [0 < x < 6]`` (boolean masks from the record);
* smooth activations (SiLU, hard swish, GELU, tanh, sigmoid, hard sigmoid): their derivative at the input;
* max pool: each pooled value back to its argmax (the switches), summed where windows overlap; average pools and
  means: spread evenly over the window; reshapes: reshaped back; pad: cropped (its exact adjoint for other modes);
* add: the signal to both inputs (summed over broadcast axes); mul ``a ⊙ b``: ``s ⊙ b`` to a and ``s ⊙ a`` to b
  (a squeeze-excitation gate included); scale by c: ``c s``; cat: split along the concatenated axis.
"""

from __future__ import annotations

from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import Tensor

from ...devices import conv_layout, is_channels_last
from ..graph import Node
from ..record import Trace
from ..walk import RuleSet, needs

__all__ = [
    "GRADIENT",
    "conv",
    "linear",
    "batchnorm",
    "relu_mask",
    "smooth",
    "maxpool",
    "avgpool",
    "adaptive_avgpool",
    "mean",
    "reshape",
    "add",
    "mul",
    "scale",
    "shift",
    "cat",
    "pad",
    "unbroadcast",
]


@needs()
def conv(node: Node, trace: Trace, signal: Tensor) -> Tensor:
    """``Wᵀ ∗ s``: the transposed convolution with the layer's filters, landing on the input's exact shape."""
    w, _ = trace.weights[node.index]
    s = node.spec
    shape = trace.shape(node.inputs[0])
    return torch.nn.grad.conv2d_input(list(shape), w, conv_layout(signal), s.stride, s.padding, s.dilation, s.groups)


@needs()
def linear(node: Node, trace: Trace, signal: Tensor) -> Tensor:
    """``s W``."""
    w, _ = trace.weights[node.index]
    return signal @ w


@needs()
def batchnorm(node: Node, trace: Trace, signal: Tensor) -> Tensor:
    """``s ⊙ scale`` per channel (the batch norm's affine map in eval mode, ``y = scale ⊙ x + shift``)."""
    scale, _ = trace.weights[node.index]
    assert scale is not None
    return signal * scale.view((1, -1) + (1,) * (signal.ndim - 2))


@needs("mask")
def relu_mask(node: Node, trace: Trace, signal: Tensor) -> Tensor:
    """``s ⊙ [x > 0]`` (ReLU) or ``s ⊙ [0 < x < 6]`` (ReLU6): autograd's rule, from a recorded boolean mask.
    A select, as autograd's ``threshold_backward`` does: multiplying by the mask would first copy it to floats."""
    return torch.where(trace.mask(node.index), signal, 0)


@needs("inputs")
def smooth(node: Node, trace: Trace, signal: Tensor) -> Tensor:
    """``s ⊙ f'(x)`` for a smooth activation f, by autograd on the recorded input."""
    with torch.enable_grad():
        x = trace.input(node.index).detach().requires_grad_(True)
        (g,) = torch.autograd.grad(node.fn(x, **node.kwargs), x, signal)
    return g


def _stand_in(signal: Tensor, shape: torch.Size) -> Tensor:
    # the pooling backward kernels read only the input's shape and strides; in the signal's memory layout, so that
    # they do not convert a channels-last signal (conv_layout) and its switches to the default layout and back
    layout = torch.channels_last if is_channels_last(signal) else torch.contiguous_format
    return torch.empty(shape, dtype=signal.dtype, device=signal.device, memory_format=layout)


@needs("switches")
def maxpool(node: Node, trace: Trace, signal: Tensor) -> Tensor:
    """Each pooled value back to its window's argmax (the switches); overlapping windows (AlexNet's 3×3/2) add up.
    This is autograd's own kernel for max pooling, fed with the recorded switches."""
    s = node.spec
    x = _stand_in(signal, trace.shape(node.inputs[0]))
    return torch.ops.aten.max_pool2d_with_indices_backward(
        signal, x, s.kernel, s.stride, s.padding, s.dilation, s.ceil_mode, trace.switches[node.index]
    )


@needs()
def avgpool(node: Node, trace: Trace, signal: Tensor) -> Tensor:
    """Every pooled value spread evenly over its window."""
    s = node.spec
    x = _stand_in(signal, trace.shape(node.inputs[0]))
    return torch.ops.aten.avg_pool2d_backward(
        signal, x, s.kernel, s.stride, s.padding, s.ceil_mode, s.count_include_pad, s.divisor_override
    )


@needs()
def adaptive_avgpool(node: Node, trace: Trace, signal: Tensor) -> Tensor:
    """Every pooled value spread evenly over its (adaptive) window; global pooling: ``s / (h w)`` everywhere."""
    shape = trace.shape(node.inputs[0])
    if signal.shape[-2:] == shape[-2:]:
        return signal  # VGG-16's 7×7 -> 7×7 at 224²: the identity
    if signal.shape[-2:] == (1, 1):
        return signal.expand(shape) / (shape[-2] * shape[-1])
    return torch.ops.aten._adaptive_avg_pool2d_backward(signal, _stand_in(signal, shape))


@needs()
def mean(node: Node, trace: Trace, signal: Tensor) -> Tensor:
    """``s / n`` spread over the averaged dimensions."""
    shape = trace.shape(node.inputs[0])
    dims = sorted(d % len(shape) for d in node.spec.dims)
    if not node.spec.keepdim:
        for d in dims:
            signal = signal.unsqueeze(d)
    count = 1
    for d in dims:
        count *= shape[d]
    return signal.expand(shape) / count


@needs()
def reshape(node: Node, trace: Trace, signal: Tensor) -> Tensor:
    """The same values back in the input's shape."""
    return signal.reshape(trace.shape(node.inputs[0]))


def unbroadcast(signal: Tensor, shape: torch.Size) -> Tensor:
    """``signal`` summed over the axes along which an operand of ``shape`` was broadcast."""
    if signal.shape == shape:
        return signal
    lead = signal.ndim - len(shape)
    axes = [i for i in range(signal.ndim) if i < lead or (shape[i - lead] == 1 and signal.shape[i] != 1)]
    return signal.sum(axes, keepdim=True).reshape(shape) if axes else signal


@needs()
def add(node: Node, trace: Trace, signal: Tensor) -> tuple[Tensor, Tensor]:
    """The signal to both summands (a residual connection's two branches)."""
    a, b = (trace.shape(j) for j in node.inputs)
    return unbroadcast(signal, a), unbroadcast(signal, b)


@needs("inputs")
def mul(node: Node, trace: Trace, signal: Tensor) -> tuple[Tensor, Tensor]:
    """``(s ⊙ b, s ⊙ a)`` for ``a ⊙ b``: exact for a squeeze-excitation gate too (the gate's branch gets its
    share)."""
    a, b = trace.input(node.index, 0), trace.input(node.index, 1)
    return unbroadcast(signal * b, a.shape), unbroadcast(signal * a, b.shape)


@needs()
def scale(node: Node, trace: Trace, signal: Tensor) -> Tensor:
    """``c s`` for a multiplication by the constant c."""
    return signal * node.spec.factor


@needs()
def shift(node: Node, trace: Trace, signal: Tensor) -> Tensor:
    """The signal unchanged (adding a constant)."""
    return signal


@needs()
def cat(node: Node, trace: Trace, signal: Tensor) -> tuple[Tensor, ...]:
    """The signal split along the concatenated axis, one piece per input."""
    dim = node.spec.dim
    sizes = [trace.shape(j)[dim] for j in node.inputs]
    return tuple(signal.split(sizes, dim))


@needs()
def pad(node: Node, trace: Trace, signal: Tensor) -> Tensor:
    """Zero padding: the signal cropped back to the input (the padded border's signal is dropped); other modes
    (reflect, replicate, circular) by their exact adjoint, which also adds the border's signal back."""
    amounts = trace.pads[node.index]
    if node.spec.mode == "constant":
        return F.pad(signal, [-a for a in amounts])
    with torch.enable_grad():
        x = torch.zeros(trace.shape(node.inputs[0]), dtype=signal.dtype, device=signal.device, requires_grad=True)
        (g,) = torch.autograd.grad(F.pad(x, amounts, mode=node.spec.mode), x, signal)
    return g


GRADIENT = RuleSet(
    "gradient",
    MappingProxyType(
        {
            "conv": conv,
            "linear": linear,
            "batchnorm": batchnorm,
            "relu": relu_mask,
            "relu6": relu_mask,
            **{k: smooth for k in ("silu", "hardswish", "gelu", "tanh", "sigmoid", "hardsigmoid")},
            "maxpool": maxpool,
            "avgpool": avgpool,
            "adaptive_avgpool": adaptive_avgpool,
            "mean": mean,
            "reshape": reshape,
            "add": add,
            "mul": mul,
            "scale": scale,
            "shift": shift,
            "cat": cat,
            "pad": pad,
        }
    ),
    doc="exact vector-Jacobian products (equals torch.autograd)",
)
