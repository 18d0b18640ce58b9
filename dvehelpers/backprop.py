"""The backward-rule engine: one walk down a recorded forward pass, one rule per layer kind.

A backward method is a :class:`RuleSet` — a map from step kind (``conv``, ``relu``, ``maxpool``, …) to a
rule ``rule(step, x_in, x_out, signal, aux) -> signal_in`` — plus an optional ``after`` hook applied to the
signal once a step has been crossed (FBI's forward-backward mask). :func:`propagate` is the only engine;
methods differ only by the rule set they pass:

* ``GRADIENT``: the exact vector-Jacobian product of every layer (equals ``torch.autograd``).
* ``DECONVNET`` (Zeiler & Fergus 2014): ReLU passes ``max(signal, 0)`` whatever the forward input was.
* ``GUIDED`` (Springenberg et al. 2015): ReLU passes ``max(signal, 0) · [x_in > 0]``.
* ``GUIDED_STRIDED_FIX`` (Oramas et al. 2019): ``GUIDED`` whose strided convolutions first resize the signal
  to ``n' = H_in + 2p − d(k − 1)`` and then apply a stride-1 transposed convolution, which lands on ``H_in``
  without the stride's grid of gaps (:func:`strided_fix`).

Max pooling routes through the forward pass's switches in all three. Later papers add their own rules
with :meth:`RuleSet.with_rules` (Oramas et al.'s strided-convolution fix, FBI's unpooling and masks).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor, nn

from .trace import Step, Trace

__all__ = [
    "Rule",
    "RuleSet",
    "GRADIENT",
    "DECONVNET",
    "GUIDED",
    "GUIDED_STRIDED_FIX",
    "RULESETS",
    "RESIZE_MODES",
    "strided_fix",
    "propagate",
    "propagate_from",
    "one_hot",
]

Rule = Callable[[Step, Tensor, Tensor, Tensor, Any], Tensor]
After = Callable[[Step, Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class RuleSet:
    """A named map from step kind to backward rule, and an optional hook run after every step."""

    name: str
    rules: Mapping[str, Rule]
    after: After | None = None
    doc: str = field(default="", compare=False)

    def with_rules(self, name: str, after: After | None = None, doc: str = "", **rules: Rule) -> RuleSet:
        """A new rule set: this one with some kinds' rules replaced (and an ``after`` hook)."""
        merged = MappingProxyType({**self.rules, **rules})
        return replace(self, name=name, rules=merged, after=after or self.after, doc=doc or self.doc)

    def rule(self, step: Step) -> Rule:
        try:
            return self.rules[step.kind]
        except KeyError:
            raise TypeError(
                f"rule set {self.name!r} has no rule for layer {step.name} ({type(step.module).__name__})"
            ) from None


# ---------------------------------------------------------------- exact gradient rules


def _local_vjp(step: Step, x_in: Tensor, signal: Tensor) -> Tensor:
    # Exact VJP of one layer by autograd on a detached copy: for cheap layers without a closed form here.
    with torch.enable_grad():
        x = x_in.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(step.module(x), x, signal)
    return g


def _conv_gradient(step: Step, x_in: Tensor, x_out: Tensor, signal: Tensor, aux: Any) -> Tensor:
    m = step.module
    assert isinstance(m, nn.Conv2d)
    if isinstance(m.padding, str) or m.padding_mode != "zeros":
        return _local_vjp(step, x_in, signal)
    # The transposed convolution with the layer's own filters; conv2d_input also fixes output_padding.
    return torch.nn.grad.conv2d_input(x_in.shape, m.weight, signal, m.stride, m.padding, m.dilation, m.groups)


def _linear_gradient(step: Step, x_in: Tensor, x_out: Tensor, signal: Tensor, aux: Any) -> Tensor:
    assert isinstance(step.module, nn.Linear)
    return signal @ step.module.weight


def _relu_gradient(step: Step, x_in: Tensor, x_out: Tensor, signal: Tensor, aux: Any) -> Tensor:
    # signal · [x_in > 0] in one fused pass: the kernel autograd itself uses for ReLU
    return torch.ops.aten.threshold_backward(signal, x_out, 0)


def _relu_deconvnet(step: Step, x_in: Tensor, x_out: Tensor, signal: Tensor, aux: Any) -> Tensor:
    return signal.clamp(min=0)


def _relu_guided(step: Step, x_in: Tensor, x_out: Tensor, signal: Tensor, aux: Any) -> Tensor:
    return torch.ops.aten.threshold_backward(signal.clamp(min=0), x_out, 0)


def _maxpool_switches(step: Step, x_in: Tensor, x_out: Tensor, signal: Tensor, aux: Any) -> Tensor:
    # Route each pooled value to its argmax (the switches); overlapping windows (AlexNet's 3×3/2)
    # accumulate. This is autograd's own kernel for max pooling, fed with the recorded indices.
    m = step.module
    assert isinstance(m, nn.MaxPool2d)
    k, s, p, d = (_pair(v) for v in (m.kernel_size, m.stride or m.kernel_size, m.padding, m.dilation))
    return torch.ops.aten.max_pool2d_with_indices_backward(signal, x_in, k, s, p, d, m.ceil_mode, aux)


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (v[0], v[-1])


def _pool_gradient(step: Step, x_in: Tensor, x_out: Tensor, signal: Tensor, aux: Any) -> Tensor:
    if x_in.shape == x_out.shape and step.kind == "adaptive_avgpool":
        return signal  # VGG-16's 7×7 -> 7×7 at 224²: the identity
    return _local_vjp(step, x_in, signal)


def _flatten_gradient(step: Step, x_in: Tensor, x_out: Tensor, signal: Tensor, aux: Any) -> Tensor:
    return signal.reshape(x_in.shape)


def _identity(step: Step, x_in: Tensor, x_out: Tensor, signal: Tensor, aux: Any) -> Tensor:
    return signal  # dropout in eval mode, identity


def _batchnorm_gradient(step: Step, x_in: Tensor, x_out: Tensor, signal: Tensor, aux: Any) -> Tensor:
    m = step.module
    assert isinstance(m, nn.BatchNorm2d) and m.running_var is not None
    scale = (m.running_var + m.eps).rsqrt()
    if m.weight is not None:
        scale = scale * m.weight
    return signal * scale.view(1, -1, 1, 1)


GRADIENT = RuleSet(
    "gradient",
    MappingProxyType(
        {
            "conv": _conv_gradient,
            "linear": _linear_gradient,
            "relu": _relu_gradient,
            "maxpool": _maxpool_switches,
            "avgpool": _pool_gradient,
            "adaptive_avgpool": _pool_gradient,
            "flatten": _flatten_gradient,
            "dropout": _identity,
            "identity": _identity,
            "batchnorm": _batchnorm_gradient,
        }
    ),
    doc="exact vector-Jacobian products (equals autograd)",
)
DECONVNET = GRADIENT.with_rules("deconvnet", relu=_relu_deconvnet, doc="Zeiler & Fergus 2014")
GUIDED = GRADIENT.with_rules("guided", relu=_relu_guided, doc="Springenberg et al. 2015")


# ---------------------------------------------------------------- Oramas et al.'s strided-convolution fix

#: How :func:`strided_fix` resizes the signal before the stride-1 transposed convolution.
RESIZE_MODES = ("nearest", "bilinear")


def strided_fix(resize: str = "nearest") -> Rule:
    """The conv rule of Oramas et al. (2019): for a strided convolution (kernel k, padding p, dilation d), resize
    the backward signal to ``n' = H_in + 2p − d(k − 1)`` per axis, then apply a stride-1 transposed convolution
    with the layer's filters and padding, whose output is ``H_in`` again. The exact rule (a transposed
    convolution with the stride) scatters every unit into a grid with gaps of the stride's period, the
    checkerboard of deconvolution visualisations; resizing first spreads the signal evenly. Stride-1
    convolutions keep the exact rule."""
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {', '.join(map(repr, RESIZE_MODES))}, got {resize!r}")

    def rule(step: Step, x_in: Tensor, x_out: Tensor, signal: Tensor, aux: Any) -> Tensor:
        m = step.module
        assert isinstance(m, nn.Conv2d)
        stride = _pair(m.stride)
        if stride == (1, 1) or isinstance(m.padding, str) or m.padding_mode != "zeros":
            return _conv_gradient(step, x_in, x_out, signal, aux)
        k, p, d = _pair(m.kernel_size), _pair(m.padding), _pair(m.dilation)
        size = tuple(x_in.shape[2 + i] + 2 * p[i] - d[i] * (k[i] - 1) for i in range(2))
        kwargs = {"align_corners": False} if resize == "bilinear" else {}
        resized = torch.nn.functional.interpolate(signal, size=size, mode=resize, **kwargs)
        return torch.nn.functional.conv_transpose2d(resized, m.weight, None, 1, p, 0, m.groups, d)

    return rule


GUIDED_STRIDED_FIX = GUIDED.with_rules(
    "guided_strided_fix", conv=strided_fix("nearest"), doc="Oramas et al. 2019: guided, strided convs resized"
)
RULESETS: Mapping[str, RuleSet] = MappingProxyType(
    {r.name: r for r in (GRADIENT, DECONVNET, GUIDED, GUIDED_STRIDED_FIX)}
)


# ---------------------------------------------------------------- the engine


def propagate(trace: Trace, signal: Tensor, rules: RuleSet, start: int | None = None, stop: int = 0) -> Tensor:
    """Walk ``signal`` backwards from the output of step ``start`` to the input of step ``stop``.

    ``start`` defaults to the last step (``signal`` shaped like the logits). Returns a tensor shaped like
    ``trace.input(stop)``; with ``stop = start + 1`` nothing is crossed and ``signal`` comes back.
    """
    start = len(trace.steps) - 1 if start is None else start
    if not 0 <= stop <= start + 1 <= len(trace.steps):
        raise ValueError(f"cannot propagate from step {start} down to step {stop} of {len(trace.steps)}")
    expected = trace.output(start).shape
    if signal.shape != expected:
        raise ValueError(f"start signal has shape {tuple(signal.shape)}, the layer's output {tuple(expected)}")
    with torch.no_grad():
        for i in range(start, stop - 1, -1):
            step = trace.steps[i]
            x_in, x_out = trace.input(i), trace.output(i)
            signal = rules.rule(step)(step, x_in, x_out, signal, trace.aux.get(i))
            if rules.after is not None:
                signal = rules.after(step, x_in, signal)
    return signal


def propagate_from(trace: Trace, signals: Mapping[int, Tensor], rules: RuleSet, stop: int = 0) -> Tensor:
    """Walk down from several layers at once: ``signals[i]`` (shaped like the output of step ``i``) joins the
    walk when it reaches the output of step ``i``; the sum arrives at the input of step ``stop``.

    Rules such as guided backprop's are not linear, so the result equals the sum of separate walks only where
    the walks do not overlap: give each image row its start signal at one layer alone (zeros elsewhere, which
    every rule maps to zeros), and this is one batched walk for starts at different depths.
    """
    if not signals:
        raise ValueError("no start signals given")
    starts = sorted(signals, reverse=True)
    if starts[-1] < stop:
        raise ValueError(f"a start signal at step {starts[-1]} lies below the stop step {stop}")
    signal = signals[starts[0]]
    for hi, lo in zip(starts, [*starts[1:], stop - 1], strict=True):
        signal = propagate(trace, signal, rules, start=hi, stop=lo + 1)
        if lo >= stop:
            signal = signal + signals[lo]
    return signal


def one_hot(logits: Tensor, targets: Tensor) -> Tensor:
    """The start signal at the logits: 1 at each image's target class, 0 elsewhere (∂k_c/∂k)."""
    return torch.zeros_like(logits).scatter_(1, targets.view(-1, 1), 1.0)
