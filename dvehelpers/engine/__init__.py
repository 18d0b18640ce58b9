"""The backward-rule engine: capture a classifier as a graph, record a forward pass, walk a signal back.

* :mod:`~dvehelpers.engine.capture` — ``torch.fx`` tracing in eval semantics, cached; :mod:`.kinds` — what each
  call is; :mod:`.canonical` — the rewrites that keep the output; :mod:`.naming` — paper and call-site names;
* :mod:`~dvehelpers.engine.record` — the forward pass, keeping what the rules need;
* :mod:`~dvehelpers.engine.walk` — rule sets and the walk; :mod:`.rules` — the rule sets by family;
* :mod:`~dvehelpers.engine.layers` — layers by name and default layers; :mod:`.geometry` — sizes, receptive fields.
"""

from .capture import capture
from .functions import SamePad2d, same_amounts
from .graph import ACTIVATIONS, INPUT, KINDS, SMOOTH, Graph, Node, UnsupportedModel, UnsupportedNode
from .layers import LayerInfo, activation_layers, cam_layer, head_chain, layer_table, pool5_layer, resolve
from .record import NEEDS, Trace, record, shapes
from .rules import (
    DECONVNET,
    GRADIENT,
    GUIDED,
    GUIDED_STRIDED_FIX,
    RESIZE_MODES,
    RULESETS,
    SMOOTH_POLICIES,
    strided_fix,
    with_smooth,
)
from .walk import Rule, RuleSet, needs, one_hot, propagate, refuse

__all__ = [
    "capture",
    "SamePad2d",
    "same_amounts",
    "ACTIVATIONS",
    "INPUT",
    "KINDS",
    "SMOOTH",
    "Graph",
    "Node",
    "UnsupportedModel",
    "UnsupportedNode",
    "LayerInfo",
    "activation_layers",
    "cam_layer",
    "head_chain",
    "layer_table",
    "pool5_layer",
    "resolve",
    "NEEDS",
    "Trace",
    "record",
    "shapes",
    "DECONVNET",
    "GRADIENT",
    "GUIDED",
    "GUIDED_STRIDED_FIX",
    "RESIZE_MODES",
    "RULESETS",
    "SMOOTH_POLICIES",
    "strided_fix",
    "with_smooth",
    "Rule",
    "RuleSet",
    "needs",
    "one_hot",
    "propagate",
    "refuse",
]
