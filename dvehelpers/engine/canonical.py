"""Canonical forms: rewrites of the captured graph that keep the model's output and make the backward rules
simple. They change the graph only, never the user's model.

* **Eval no-ops dropped** — dropout, drop-connect / stochastic depth, ``nn.Identity``, ``.contiguous()``: their
  users read their input (done while the graph is built, :mod:`dvehelpers.engine.capture`).
* **Out of place** — an in-place call (``relu_``, ``inplace=True``, ``add_``) becomes a new node, and every later
  user of the tensor it overwrote reads the new node instead (also while building).
* **Explicit padding** — a convolution whose padding is not symmetric zero padding (``padding="same"`` with an odd
  total, a non-zero ``padding_mode``) becomes a pad node and an unpadded convolution; TF-style "same" padding
  done by the model itself (EfficientNet-Lite's ``Conv2dStaticSamePadding``, our
  :class:`~dvehelpers.engine.functions.SamePad2d`) already is one. Oramas et al.'s strided-convolution fix then
  reads the padding from the pad node.
* **Batch norm folded** into the convolution before it, when that convolution feeds nothing else:
  ``s ⊙ (W ∗ x + b) + t = (s W) ∗ x + (s b + t)`` (:class:`~dvehelpers.engine.graph.Weights`), computed from the
  live parameters at every recorded forward pass. A batch norm that cannot be folded stays a per-channel affine
  node with an exact rule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .graph import INPUT, Meta, Node, Ref, Weights

__all__ = ["Raw", "canonical_forms", "fold_batchnorm", "renumber"]


@dataclass(eq=False)
class Raw:
    """A node while the graph is being built: ``uid`` (its position at creation), inputs as uids."""

    uid: int
    kind: str
    inputs: list[int]
    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    spec: Any = None
    weights: Weights | None = None
    path: str = ""
    what: str = ""

    def freeze(self, name: str) -> Node:
        return Node(
            self.uid,
            name,
            self.path,
            self.kind,
            tuple(self.inputs),
            self.fn,
            self.args,
            dict(self.kwargs),
            self.spec,
            self.weights,
            self.what,
        )


def _map_refs(value: Any, mapping: dict[int, int]) -> Any:
    if isinstance(value, Ref) and not value.meta:
        return Ref(mapping.get(value.index, value.index))
    if isinstance(value, (tuple, list)):
        return type(value)(_map_refs(v, mapping) for v in value)
    if isinstance(value, dict):
        return {k: _map_refs(v, mapping) for k, v in value.items()}
    return value


def _rewire(raws: list[Raw], program: list[Raw | Meta], mapping: dict[int, int]) -> None:
    """Every reference to a uid in ``mapping`` now points to its image."""
    for r in raws:
        r.inputs = [mapping.get(i, i) for i in r.inputs]
        r.args, r.kwargs = _map_refs(r.args, mapping), _map_refs(r.kwargs, mapping)
    for k, p in enumerate(program):
        if isinstance(p, Meta):
            program[k] = Meta(p.slot, p.fn, _map_refs(p.args, mapping), _map_refs(p.kwargs, mapping))


def fold_batchnorm(raws: list[Raw], program: list[Raw | Meta], output: int) -> tuple[list[Raw], int]:
    """Fold every batch norm into the convolution before it when that convolution feeds nothing else."""
    users: dict[int, int] = {}
    for r in raws:
        for i in set(r.inputs):
            users[i] = users.get(i, 0) + 1
    by_uid = {r.uid: r for r in raws}
    gone: dict[int, int] = {}
    for r in raws:
        if r.kind != "batchnorm" or len(r.inputs) != 1 or r.inputs[0] == INPUT:
            continue
        conv = by_uid[r.inputs[0]]
        if conv.kind != "conv" or users.get(conv.uid) != 1 or conv.weights is None or conv.weights.fold is not None:
            continue
        assert r.weights is not None
        w = conv.weights
        conv.weights = Weights(w.module, w.weight, w.bias, fold=r.weights.module)
        conv.what = f"{conv.what} + {r.what} (folded)"
        gone[r.uid] = conv.uid
    kept = [r for r in raws if r.uid not in gone]
    program[:] = [p for p in program if not (isinstance(p, Raw) and p.uid in gone)]
    _rewire(kept, program, gone)
    return kept, gone.get(output, output)


def renumber(raws: list[Raw], program: list[Raw | Meta], output: int) -> int:
    """Give the nodes the indices 0, 1, … in program order (a topological order); returns the output's index."""
    mapping = {r.uid: i for i, r in enumerate(raws)}
    _rewire(raws, program, mapping)
    for r in raws:
        r.uid = mapping[r.uid]
    return mapping[output]


def canonical_forms(raws: list[Raw], program: list[Raw | Meta], output: int) -> tuple[list[Raw], list[Raw | Meta], int]:
    """The rewrites that are made on the built graph (batch-norm folding), and the final numbering."""
    raws, output = fold_batchnorm(list(raws), program, output)
    return raws, program, renumber(raws, program, output)
