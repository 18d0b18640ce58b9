"""The recorded forward pass: the captured graph run on a batch, keeping what the backward rules will need.

:func:`record` runs every node of :func:`~dvehelpers.engine.capture.capture`'s graph under ``torch.no_grad`` with
eval-mode semantics (without changing the model's mode), never writing into the caller's images and never calling
the user's modules (so none of their hooks run). What it keeps is decided by the rule sets that will walk it
back: a ReLU under the gradient or guided rules needs only where its output is positive (a boolean mask), a max
pool its switches, a convolution nothing but its weights and input shape; FBI's masks need the activations
themselves. Every other intermediate is freed as soon as its last user has run, as autograd would.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..devices import conv_layout, is_channels_last
from .capture import capture
from .functions import same_amounts
from .graph import INPUT, Graph, Meta, Node, Pad, Ref, batchnorm_affine, resolve

__all__ = ["Trace", "record", "shapes", "NEEDS"]

#: What a rule may ask the record to keep for the node it crosses.
NEEDS = {
    "output": "the node's output",
    "inputs": "the outputs of the node's inputs",
    "mask": "where the activation passes its input's gradient (ReLU: x > 0; ReLU6: 0 < x < 6), as booleans",
    "switches": "max pooling's switches (the argmax of every window)",
}


class NeedsRules(Protocol):
    """Anything that says what it needs per node (a :class:`~dvehelpers.engine.walk.RuleSet`)."""

    def needs(self, node: Node) -> frozenset[str]: ...


@dataclass
class Trace:
    """A recorded forward pass of ``graph``: ``values`` (kept outputs; ``INPUT`` is the images), boolean ``masks``
    of activations, max-pooling ``switches``, the ``weights`` every conv / linear / batch-norm node used
    (``(weight, bias)``; ``(scale, shift)`` for a batch norm), the ``shapes`` of every output and, for pad nodes,
    the amounts padded (``pads``)."""

    graph: Graph
    values: dict[int, Tensor]
    masks: dict[int, Tensor] = field(default_factory=dict)
    switches: dict[int, Tensor] = field(default_factory=dict)
    weights: dict[int, tuple[Tensor | None, Tensor | None]] = field(default_factory=dict)
    shapes: dict[int, torch.Size] = field(default_factory=dict)
    pads: dict[int, tuple[int, ...]] = field(default_factory=dict)

    @property
    def logits(self) -> Tensor:
        return self.output(self.graph.output)

    @property
    def nodes(self) -> tuple[Node, ...]:
        return self.graph.nodes

    def output(self, index: int) -> Tensor:
        """The output of node ``index`` (``INPUT``: the images)."""
        if index not in self.values:
            name = "the input" if index == INPUT else f"node {self.graph.nodes[index].describe()}"
            raise RuntimeError(
                f"the output of {name} was not recorded: pass keep=[...] or the rule set you walk back to record()"
            )
        return self.values[index]

    def input(self, index: int, k: int = 0) -> Tensor:
        """The ``k``-th input of node ``index`` (the output of the node that feeds it)."""
        return self.output(self.graph.nodes[index].inputs[k])

    def shape(self, index: int) -> torch.Size:
        """The shape of node ``index``'s output (``INPUT``: the images'), always recorded."""
        return self.shapes[index]

    def mask(self, index: int) -> Tensor:
        """Where activation node ``index`` passes a gradient (see :data:`NEEDS`)."""
        if index not in self.masks:
            if index not in self.values:
                raise RuntimeError(f"no mask of {self.graph.nodes[index].describe()} was recorded")
            self.masks[index] = _mask(self.graph.nodes[index], self.values[index])
        return self.masks[index]

    def select(self, rows: Tensor) -> Trace:
        """The trace of the images ``rows`` (a LongTensor, repeats allowed), as if they had been recorded in that
        order: one forward pass serves several backward passes per image."""

        def pick(d: dict[int, Tensor]) -> dict[int, Tensor]:
            return {i: _take_rows(t, rows) for i, t in d.items()}

        n = len(rows)
        shapes = {i: torch.Size((n, *s[1:])) for i, s in self.shapes.items()}
        return Trace(
            self.graph, pick(self.values), pick(self.masks), pick(self.switches), self.weights, shapes, self.pads
        )


def _take_rows(t: Tensor, rows: Tensor) -> Tensor:
    """``t.index_select(0, rows)`` in ``t``'s memory layout: a channels-last tensor (conv_layout) stays one, so that
    the walk does not convert between layouts at every rule."""
    if is_channels_last(t):
        return t.permute(0, 2, 3, 1).index_select(0, rows).permute(0, 3, 1, 2)
    return t.index_select(0, rows)


def _mask(node: Node, out: Tensor) -> Tensor:
    if node.kind == "relu":
        return out > 0
    if node.kind == "relu6":
        return (out > 0) & (out < 6)
    raise RuntimeError(f"{node.describe()} is a {node.kind}, which has no mask")


class _Run:
    """One forward pass over the program, keeping what was asked for and freeing the rest."""

    def __init__(self, graph: Graph, images: Tensor, keep: set[int], needs: dict[int, frozenset[str]]) -> None:
        self.graph, self.keep, self.needs = graph, keep, needs
        self.trace = Trace(graph, {INPUT: images}, shapes={INPUT: images.shape})
        self.live: dict[int, Tensor] = {INPUT: images}
        self.metas: list[Any] = []
        self.last = graph_last_uses(graph)

    def tensor(self, index: int) -> Tensor:
        return self.live[index]

    def run(self, upto: int) -> Trace:
        with torch.no_grad():
            for step in self.graph.program:
                if isinstance(step, Meta):
                    args, kwargs = resolve((step.args, step.kwargs), self.tensor, self.metas)
                    self.metas.append(step.fn(*args, **kwargs))
                    continue
                self._node(step)
                if step.index == upto:
                    break
        return self.trace

    def _node(self, node: Node) -> None:
        try:
            out = self._forward(node)
        except RuntimeError as err:
            shapes = [tuple(self.trace.shapes[j]) for j in node.inputs]
            raise ValueError(f"forward pass failed at layer {node.describe()} on input shapes {shapes}: {err}") from err
        i = node.index
        self.live[i] = out
        # an unknown call may return something else than a tensor (attention returns a tuple): no shape, no rule
        self.trace.shapes[i] = out.shape if isinstance(out, Tensor) else torch.Size()
        need = self.needs.get(i, frozenset())
        if "mask" in need:
            self.trace.masks[i] = _mask(node, out)
        if i in self.keep:
            self.trace.values[i] = out
        for j in set(node.inputs):  # free what no later node reads (kept values live on in the trace)
            if self.last.get(j) == i and j != INPUT:
                del self.live[j]

    def _dead_after(self, node: Node, j: int) -> bool:
        """Whether node ``node`` may overwrite its input ``j``: nothing else reads or keeps it, and it owns its memory
        (a reshape's output may be a view of a tensor that lives on; the images are the caller's)."""
        if j == INPUT or self.graph.nodes[j].kind in ("reshape", "unknown"):
            return False
        return self.last.get(j) == node.index and j not in self.keep and node.inputs.count(j) == 1

    def _forward(self, node: Node) -> Tensor:
        x = self.live[node.inputs[0]] if node.inputs else None
        kind, s = node.kind, node.spec
        if kind in ("conv", "linear", "batchnorm"):
            assert node.weights is not None and x is not None
            if kind == "batchnorm":
                scale, shift = batchnorm_affine(node.weights.module)
                self.trace.weights[node.index] = (scale, shift)
                view = (1, -1) + (1,) * (x.ndim - 2)
                return torch.addcmul(shift.view(view), x, scale.view(view))
            w, b = node.weights.tensors()
            if kind == "linear":
                self.trace.weights[node.index] = (w, b)
                return F.linear(x, w, b)  # type: ignore[arg-type]
            w = conv_layout(w)  # type: ignore[arg-type]
            self.trace.weights[node.index] = (w, b)
            return F.conv2d(conv_layout(x), w, b, s.stride, s.padding, s.dilation, s.groups)
        if kind in ("relu", "relu6") and x is not None:
            inplace = self._dead_after(node, node.inputs[0])
            return (F.relu if kind == "relu" else F.relu6)(x, inplace=inplace)
        if kind == "maxpool" and "switches" in self.needs.get(node.index, frozenset()):
            assert x is not None
            out, idx = F.max_pool2d(x, s.kernel, s.stride, s.padding, s.dilation, s.ceil_mode, return_indices=True)
            self.trace.switches[node.index] = idx
            return out
        if kind == "add" and self._dead_after(node, node.inputs[0]):
            a, b = self.live[node.inputs[0]], self.live[node.inputs[1]]
            if a.shape == torch.broadcast_shapes(a.shape, b.shape) and a.dtype == b.dtype:
                return a.add_(b)
            return a + b
        if kind == "add":
            return self.live[node.inputs[0]] + self.live[node.inputs[1]]
        if kind == "pad" and isinstance(s, Pad):
            assert x is not None
            amounts = same_amounts(x.shape[-2:], *s.same) if s.same is not None else s.pad
            self.trace.pads[node.index] = tuple(amounts)
            if s.mode == "constant":
                return F.pad(x, amounts, value=s.value)
            return F.pad(x, amounts, mode=s.mode)
        if kind == "mean":
            assert x is not None
            return x.mean(s.dims, keepdim=s.keepdim)
        if kind == "scale":
            assert x is not None
            return x * s.factor
        args, kwargs = resolve((node.args, node.kwargs), self.tensor, self.metas)
        return node.fn(*args, **kwargs)


def graph_last_uses(graph: Graph) -> dict[int, int]:
    """For every node's output (and the input), the index of the last node that reads it; a size read by the
    forward pass counts as read by the node after it."""
    last: dict[int, int] = {}
    pending: list[int] = []  # tensors whose sizes were read since the last node
    for step in graph.program:
        if isinstance(step, Meta):
            _refs((step.args, step.kwargs), pending)
            continue
        for j in [*step.inputs, *pending]:
            last[j] = step.index
        pending = []
    return last


def _refs(value: Any, out: list[int]) -> None:
    if isinstance(value, Ref) and not value.meta:
        out.append(value.index)
    elif isinstance(value, (tuple, list)):
        for v in value:
            _refs(v, out)
    elif isinstance(value, dict):
        for v in value.values():
            _refs(v, out)


def _needs(graph: Graph, rules: Sequence[NeedsRules], nodes: Iterable[int]) -> dict[int, frozenset[str]]:
    out: dict[int, frozenset[str]] = {}
    for i in nodes:
        node = graph.nodes[i]
        need: frozenset[str] = frozenset()
        for r in rules:
            need |= r.needs(node)
        if need:
            out[i] = need
    return out


def record(
    model: nn.Module | Graph,
    images: Tensor,
    *,
    rules: NeedsRules | Sequence[NeedsRules] | None = None,
    keep: Iterable[int] = (),
    down_to: int = INPUT,
    upto: int | None = None,
) -> Trace:
    """Run ``model`` on ``images`` through its captured graph (no autograd graph) and record a :class:`Trace`.

    ``rules``: the rule set(s) that will walk the trace back; it keeps what they need at the nodes between the
    logits (or ``upto``) and ``down_to``'s output, and nothing else (``None``: keep every output). ``keep``: node
    indices whose outputs are kept whatever the rules need (the layer a method reads). ``upto``: stop after this
    node. The logits (or ``upto``'s output) are always kept.
    """
    graph = model if isinstance(model, Graph) else capture(model)
    last = graph.output if upto is None else upto
    if not (INPUT <= down_to < len(graph.nodes)) or not (0 <= last < len(graph.nodes)):
        raise ValueError(f"node index out of range for a graph of {len(graph.nodes)} nodes")
    kept = set(keep) | {last}
    if rules is None:
        kept |= set(range(len(graph.nodes)))
        needs = {i: frozenset({"switches"}) for i, n in enumerate(graph.nodes) if n.kind == "maxpool"}
    else:
        rule_sets = [rules] if not isinstance(rules, Sequence) else list(rules)
        needs = _needs(graph, rule_sets, graph.between([last], down_to))
        for i, need in needs.items():
            if "output" in need:
                kept.add(i)
            if "inputs" in need:
                kept.update(j for j in graph.nodes[i].inputs if j != INPUT)
    return _Run(graph, images, kept, needs).run(last)


def shapes(model: nn.Module | Graph, size: tuple[int, int], channels: int | None = None) -> dict[int, torch.Size]:
    """The output shape of every node (and ``INPUT``) for one image of ``size`` (h, w) with ``channels`` channels
    (default: what the first convolution takes), from one forward pass of zeros on the model's device, cached per
    graph and size."""
    graph = model if isinstance(model, Graph) else capture(model)
    channels = _in_channels(graph) if channels is None else int(channels)
    key = ("shapes", tuple(size), channels)
    cached = graph.shapes_for(key)
    if cached is not None:
        return dict(enumerate(cached[1:])) | {INPUT: cached[0]}
    ref = _reference_tensor(graph)
    x = torch.zeros(1, channels, *size, dtype=ref.dtype, device=ref.device)
    got = record(graph, x, rules=(), keep=()).shapes
    graph.remember_shapes(key, (got[INPUT], *(got[i] for i in range(len(graph.nodes)))))
    return got


def _reference_tensor(graph: Graph) -> Tensor:
    for node in graph.nodes:
        if node.weights is not None:
            w, _ = node.weights.tensors() if node.kind != "batchnorm" else batchnorm_affine(node.weights.module)
            if w is not None:
                return w
    return torch.zeros(())


def _in_channels(graph: Graph) -> int:
    """The number of input channels the first convolution fed by the images takes (3 if none says)."""
    for node in graph.nodes:
        if node.kind == "conv" and node.weights is not None and node.inputs == (INPUT,):
            w, _ = node.weights.tensors()
            assert w is not None
            return int(w.shape[1]) * node.spec.groups
    for node in graph.nodes:
        if node.kind == "conv" and node.weights is not None:
            w, _ = node.weights.tensors()
            assert w is not None
            return int(w.shape[1]) * node.spec.groups
    return 3
