"""The backward walk: one signal carried down the captured graph, one rule per node kind.

A backward method is a :class:`RuleSet` — a map from node kind to a rule ``rule(node, trace, signal)`` that turns
the signal at a node's output into the signals at its inputs (one tensor for a node with one input, a tuple for
``add``, ``mul`` and ``cat``). :func:`propagate` is the only engine: it visits the nodes in reverse topological
order, sums the signals that reach a node from all its users (fan-out: a residual connection's input gets the
signal of both branches), applies the node's rule and hands the results to the node's inputs. A node whose kind
the rule set has no rule for stops the walk with an error that names it; nothing is ever crossed by a silent
gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

import torch
from torch import Tensor

from .graph import INPUT, KINDS, Node, UnsupportedNode
from .record import Trace

__all__ = ["Rule", "RuleSet", "needs", "refuse", "propagate", "one_hot"]

Rule = Callable[[Node, Trace, Tensor], "Tensor | tuple[Tensor | None, ...] | None"]


def needs(*what: str) -> Callable[[Rule], Rule]:
    """Declare what a rule reads from the trace (:data:`dvehelpers.engine.record.NEEDS`), so that
    :func:`~dvehelpers.engine.record.record` keeps exactly that."""

    def deco(rule: Rule) -> Rule:
        rule.needs = frozenset(what)  # type: ignore[attr-defined]
        return rule

    return deco


def refuse(reason: str) -> Rule:
    """A rule that stops the walk at any node of its kind, with ``reason`` (what to do instead) in the error."""

    def rule(node: Node, trace: Trace, signal: Tensor) -> Tensor:
        raise UnsupportedNode(f"{node.describe()}: {reason}")

    rule.refuses = True  # type: ignore[attr-defined]
    return rule


@dataclass(frozen=True)
class RuleSet:
    """A named map from node kind to backward rule."""

    name: str
    rules: Mapping[str, Rule]
    doc: str = field(default="", compare=False)

    def with_rules(self, name: str, doc: str = "", **rules: Rule) -> RuleSet:
        """A new rule set: this one with some kinds' rules replaced or added."""
        return replace(self, name=name, rules=MappingProxyType({**self.rules, **rules}), doc=doc or self.doc)

    @property
    def supported(self) -> list[str]:
        """The kinds this rule set crosses."""
        return sorted(k for k, r in self.rules.items() if not getattr(r, "refuses", False))

    def rule(self, node: Node) -> Rule:
        """The rule for ``node``, or an error that names the node and the kinds this rule set supports."""
        rule = self.rules.get(node.kind)
        if rule is None:
            what = KINDS.get(node.kind, node.kind) if node.kind != "unknown" else "a call the engine has no kind for"
            raise UnsupportedNode(
                f"rule set {self.name!r} cannot cross node {node.describe()}: {what}. It supports "
                f"{', '.join(self.supported)}"
            )
        return rule

    def needs(self, node: Node) -> frozenset[str]:
        """What the rule for ``node`` reads from the trace (nothing when there is no rule)."""
        return getattr(self.rules.get(node.kind), "needs", frozenset())


def propagate(
    trace: Trace,
    signal: Tensor | Mapping[int, Tensor],
    rules: RuleSet,
    start: int | None = None,
    to: int = INPUT,
) -> Tensor:
    """Walk a signal down from node ``start``'s output (default: the logits) to node ``to``'s output (default: the
    images), and return it there.

    ``signal`` may instead map several nodes to signals that join the walk where it reaches them (one batched walk
    for start signals at different depths). Rules such as guided backprop's are not linear, so that equals the sum
    of separate walks only where the walks do not overlap: give each image row its start at one node alone (zeros
    elsewhere, which every rule maps to zeros).
    """
    graph = trace.graph
    starts = dict(signal) if isinstance(signal, Mapping) else {graph.output if start is None else start: signal}
    if not starts:
        raise ValueError("no start signals given")
    for i, s in starts.items():
        if not 0 <= i < len(graph.nodes):
            raise ValueError(f"start node {i} out of range for a graph of {len(graph.nodes)} nodes")
        if s.shape != trace.shape(i):
            raise ValueError(
                f"start signal has shape {tuple(s.shape)}, the output of {graph.nodes[i].name} {tuple(trace.shape(i))}"
            )
    order = graph.between(list(starts), to)
    crossed = set(order)
    if to != INPUT and any(i not in crossed and i != to for i in starts):
        raise ValueError(f"a start node lies below {graph.nodes[to].name}: nothing to walk")
    acc = dict(starts)
    with torch.no_grad():
        for i in order:
            s = acc.pop(i, None)
            if s is None:  # no signal reaches this node (e.g. a gate branch a rule set holds constant)
                continue
            node = graph.nodes[i]
            out = rules.rule(node)(node, trace, s)
            for j, sj in zip(node.inputs, out if isinstance(out, tuple) else (out,), strict=True):
                if sj is not None and (j in crossed or j == to):
                    acc[j] = sj if j not in acc else acc[j] + sj
    result = acc.get(to)
    if result is None:
        result = torch.zeros(trace.shape(to), dtype=trace.logits.dtype, device=trace.logits.device)
    return result


def one_hot(logits: Tensor, targets: Tensor) -> Tensor:
    """The start signal at the logits: 1 at each image's target class, 0 elsewhere (∂k_c/∂k)."""
    return torch.zeros_like(logits).scatter_(1, targets.view(-1, 1), 1.0)
