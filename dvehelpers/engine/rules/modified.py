"""Backward-modifying rule sets: DeconvNet and guided backprop, which change only the activations' rules.

* ``DECONVNET`` (Zeiler & Fergus 2014): ReLU and ReLU6 pass ``max(s, 0)``, whatever the forward input was.
* ``GUIDED`` (Springenberg et al. 2015): ReLU passes ``max(s, 0) ⊙ [x > 0]``, ReLU6 ``max(s, 0) ⊙ [0 < x < 6]``
  (the gradient's own mask, and only positive signal).

Both papers define rules for piecewise-linear units only. A smooth activation (SiLU, hard swish, GELU, tanh, and
the sigmoid gates of squeeze-excitation) has no rule in them, so these rule sets *refuse* it by default, with an
error that names the node; ``smooth="gradient"`` (:func:`with_smooth`) crosses it by its exact gradient instead —
what Captum's and Zennit's hook-based versions do without a word (they hook ``nn.ReLU`` only, so on a ReLU6
network they return exactly the plain gradient).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..graph import SMOOTH, Node
from ..record import Trace
from ..walk import RuleSet, needs, refuse
from .gradient import GRADIENT, smooth

__all__ = ["SMOOTH_POLICIES", "relu_deconvnet", "relu_guided", "with_smooth", "DECONVNET", "GUIDED"]

#: How a backward-modifying rule set treats a smooth activation.
SMOOTH_POLICIES = {
    "refuse": "stop with an error naming the node (the papers define no rule for it)",
    "gradient": "cross it by its exact gradient (what hook-based peers do silently)",
}


@needs()
def relu_deconvnet(node: Node, trace: Trace, signal: Tensor) -> Tensor:
    """DeconvNet: ``max(s, 0)``, blind to the forward pass."""
    return signal.clamp(min=0)


@needs("mask")
def relu_guided(node: Node, trace: Trace, signal: Tensor) -> Tensor:
    """Guided backprop: ``max(s, 0) ⊙ mask`` (mask: ``x > 0`` for ReLU, ``0 < x < 6`` for ReLU6), as one select into
    a new tensor and an in-place clamp of it (a product with the boolean mask would first copy it to floats)."""
    return torch.where(trace.mask(node.index), signal, 0).clamp_(min=0)


def with_smooth(rules: RuleSet, policy: str) -> RuleSet:
    """``rules`` with its smooth activations refused (``"refuse"``) or crossed by their gradient (``"gradient"``)."""
    if policy not in SMOOTH_POLICIES:
        raise ValueError(f"smooth must be one of {', '.join(map(repr, SMOOTH_POLICIES))}, got {policy!r}")
    base = rules.name.removesuffix("+smooth_gradient")
    if policy == "gradient":
        return rules.with_rules(f"{base}+smooth_gradient", **{k: smooth for k in SMOOTH})
    reason = (
        f"rule set {base!r} modifies the backward pass of ReLU and ReLU6 only; its paper has no rule for a smooth "
        f"activation. Pass smooth='gradient' to cross smooth activations by their exact gradient, or use a method "
        f"without modified rules (gradient, gradcam)"
    )
    return rules.with_rules(base, **{k: refuse(reason) for k in SMOOTH})


DECONVNET = with_smooth(
    GRADIENT.with_rules("deconvnet", "Zeiler & Fergus 2014", relu=relu_deconvnet, relu6=relu_deconvnet), "refuse"
)
GUIDED = with_smooth(
    GRADIENT.with_rules("guided", "Springenberg et al. 2015", relu=relu_guided, relu6=relu_guided), "refuse"
)
