"""The captured graph: what the engine walks. A :class:`Graph` is a list of :class:`Node` s in topological order,
each one call of a layer or a tensor function in the model's forward pass, with its kind, its constants and where
its inputs come from.

A node's *kind* selects its backward rule (:mod:`dvehelpers.engine.rules`); its *spec* holds the constants a rule
reads (a convolution's stride and padding, a concatenation's dimension); its weights are read from the user's
modules when a forward pass is recorded, so a graph never holds a stale copy of them.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "INPUT",
    "KINDS",
    "ACTIVATIONS",
    "SMOOTH",
    "POOLS",
    "Ref",
    "Conv",
    "Pool",
    "Adaptive",
    "Mean",
    "Cat",
    "Pad",
    "Scale",
    "Weights",
    "Attr",
    "Node",
    "Meta",
    "Graph",
    "UnsupportedModel",
    "UnsupportedNode",
]

#: The index that stands for the model's input (the images) wherever a node index is expected.
INPUT = -1

#: Node kinds and what each one is. A rule set maps (some of) these to backward rules.
KINDS = {
    "conv": "2-D convolution (F.conv2d; a folded batch norm included), grouped and depthwise too",
    "linear": "fully connected layer",
    "batchnorm": "eval-mode batch norm that could not be folded into a convolution: a per-channel affine map",
    "relu": "ReLU",
    "relu6": "ReLU6 (min(max(x, 0), 6))",
    "silu": "SiLU / swish",
    "hardswish": "hard swish",
    "gelu": "GELU",
    "tanh": "tanh",
    "sigmoid": "sigmoid (squeeze-excitation gates)",
    "hardsigmoid": "hard sigmoid (squeeze-excitation gates)",
    "maxpool": "2-D max pooling",
    "avgpool": "2-D average pooling",
    "adaptive_avgpool": "adaptive average pooling (global pooling when the output is 1×1)",
    "mean": "mean over dimensions (global pooling written as x.mean((2, 3)))",
    "reshape": "flatten, view, reshape: the same values in another shape",
    "add": "sum of two tensors (residual connections), broadcasting",
    "mul": "product of two tensors (gates, e.g. squeeze-excitation), broadcasting",
    "scale": "a tensor times a constant",
    "shift": "a tensor plus a constant",
    "cat": "concatenation",
    "pad": "padding (constant, reflect, replicate, circular; TF 'same' padding)",
    "unknown": "anything else: it runs forward, and no rule set crosses it",
}
#: Kinds that are element-wise activation functions; ``SMOOTH`` are those other than the piecewise-linear ReLUs.
ACTIVATIONS = ("relu", "relu6", "silu", "hardswish", "gelu", "tanh", "sigmoid", "hardsigmoid")
SMOOTH = ("silu", "hardswish", "gelu", "tanh", "sigmoid", "hardsigmoid")
POOLS = ("maxpool", "avgpool")


class UnsupportedModel(TypeError):
    """The model cannot be captured (torch.fx cannot trace it, or it does not return one tensor of logits)."""


class UnsupportedNode(TypeError):
    """A rule set met a node it has no rule for."""


@dataclass(frozen=True)
class Ref:
    """A reference, inside a node's arguments, to the output of node ``index`` (``INPUT``: the images) or, with
    ``meta``, to a non-tensor value computed in the forward pass (a size, a shape)."""

    index: int
    meta: bool = False


Pair = tuple[int, int]


@dataclass(frozen=True)
class Conv:
    """A convolution's constants: stride, zero padding, dilation, groups (all per axis)."""

    stride: Pair
    padding: Pair
    dilation: Pair
    groups: int


@dataclass(frozen=True)
class Pool:
    """A pooling window: kernel, stride, padding, dilation (max pooling only) and the rounding of the output size;
    ``count_include_pad`` and ``divisor_override`` for average pooling."""

    kernel: Pair
    stride: Pair
    padding: Pair
    dilation: Pair = (1, 1)
    ceil_mode: bool = False
    count_include_pad: bool = True
    divisor_override: int | None = None


@dataclass(frozen=True)
class Adaptive:
    """An adaptive pool's output size (``None``: keep that axis)."""

    output_size: tuple[int | None, int | None]


@dataclass(frozen=True)
class Mean:
    """A mean over ``dims``."""

    dims: tuple[int, ...]
    keepdim: bool


@dataclass(frozen=True)
class Cat:
    """A concatenation along ``dim``."""

    dim: int


@dataclass(frozen=True)
class Pad:
    """Padding (left, right, top, bottom) with ``mode`` and ``value``; ``same`` = (kernel, stride, dilation) of a
    TF-style "same" padding whose amounts follow the input size (then ``pad`` is unused)."""

    pad: tuple[int, ...]
    mode: str = "constant"
    value: float = 0.0
    same: tuple[Pair, Pair, Pair] | None = None


@dataclass(frozen=True)
class Scale:
    """Multiplication by a constant."""

    factor: float


@dataclass(frozen=True, eq=False)
class Weights:
    """Where a conv, linear or batch-norm node takes its parameters, read afresh at every recorded forward pass:
    ``module`` and attribute names, and the batch norm ``fold`` ed into a convolution (None: none)."""

    module: nn.Module
    weight: str | None = "weight"
    bias: str | None = "bias"
    fold: nn.Module | None = None

    def tensors(self) -> tuple[Tensor | None, Tensor | None]:
        """(weight, bias) as the layer applies them now: with a folded batch norm
        ``y = s ⊙ (W x + b) + t`` becomes ``W' = s W``, ``b' = s b + t``."""
        w = None if self.weight is None else getattr(self.module, self.weight)
        b = None if self.bias is None else getattr(self.module, self.bias)
        if self.fold is None:
            return w, b
        scale, shift = batchnorm_affine(self.fold)
        assert w is not None
        w = w * scale.view(-1, *([1] * (w.ndim - 1)))
        b = shift if b is None else b * scale + shift
        return w, b


class Attr:
    """A parameter or buffer that a function of the forward pass uses directly (``F.conv2d(x, self.weight)``):
    ``module`` and attribute ``name``, read afresh whenever the graph runs."""

    def __init__(self, module: nn.Module, name: str) -> None:
        self.module, self.name = module, name

    def get(self) -> Tensor:
        return getattr(self.module, self.name)


def batchnorm_affine(bn: nn.Module) -> tuple[Tensor, Tensor]:
    """Eval-mode batch norm as ``y = s ⊙ x + t``: ``s = γ / √(σ² + ε)``, ``t = β − μ s``."""
    mean, var = bn.running_mean, bn.running_var
    if mean is None or var is None:
        raise UnsupportedModel(f"batch norm {bn} keeps no running statistics; eval-mode semantics need them")
    scale = (var + bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


@dataclass(frozen=True, eq=False)
class Node:
    """One call in the forward pass.

    ``name``: what a user passes as ``layer=`` (a paper name such as ``conv5_3`` for VGG/AlexNet-style nets, else
    a call-site name such as ``layer4.2.relu_2``); ``path``: the module that was called, or for a function the
    module whose forward called it, and the function (``layer1.0.add``); ``kind``: one of :data:`KINDS`;
    ``inputs``: the indices of the nodes whose outputs it takes (``INPUT`` for the images), in argument order;
    ``spec``: the kind's constants; ``weights``: where its parameters come from; ``fn``, ``args``, ``kwargs``:
    how to run it forward (``Ref`` s in the arguments are replaced by values); ``what``: a description for errors
    (the module type or function).
    """

    index: int
    name: str
    path: str
    kind: str
    inputs: tuple[int, ...]
    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    spec: Any = None
    weights: Weights | None = None
    what: str = ""

    def describe(self) -> str:
        return (
            f"{self.name!r} ({self.what} at {self.path})" if self.path != self.name else f"{self.name!r} ({self.what})"
        )


@dataclass(frozen=True, eq=False)
class Meta:
    """A non-tensor value computed in the forward pass (``x.size(0)``, ``x.shape[1]``), stored in slot ``slot``."""

    slot: int
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


def resolve(value: Any, tensors: Callable[[int], Tensor], metas: Sequence[Any]) -> Any:
    """``value`` with every :class:`Ref` replaced by its tensor (or meta value) and every :class:`Attr` by the
    parameter it names, inside tuples, lists and dicts."""
    if isinstance(value, Ref):
        return metas[value.index] if value.meta else tensors(value.index)
    if isinstance(value, Attr):
        return value.get()
    if isinstance(value, (tuple, list)):
        return type(value)(resolve(v, tensors, metas) for v in value)
    if isinstance(value, dict):
        return {k: resolve(v, tensors, metas) for k, v in value.items()}
    return value


@dataclass(eq=False)
class Graph:
    """A captured model: ``nodes`` in topological order (``nodes[i].index == i``), the ``program`` to run forward
    (the nodes with the :class:`Meta` computations between them), the index of the ``output`` node (the logits),
    and how the names were made (``paper_names``)."""

    nodes: tuple[Node, ...]
    program: tuple[Node | Meta, ...]
    output: int
    paper_names: bool
    model_type: str
    _users: tuple[tuple[int, ...], ...] = field(default=(), repr=False)
    _shapes: dict[Any, tuple[torch.Size, ...]] = field(default_factory=dict, repr=False)
    _between: dict[Any, tuple[int, ...]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        users: list[list[int]] = [[] for _ in self.nodes]
        for node in self.nodes:
            for j in set(node.inputs):
                if j != INPUT:
                    users[j].append(node.index)
        self._users = tuple(tuple(u) for u in users)

    def users(self, index: int) -> tuple[int, ...]:
        """The nodes that take node ``index``'s output."""
        return self._users[index]

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.nodes]

    def between(self, starts: Sequence[int], to: int) -> tuple[int, ...]:
        """The nodes a backward walk from ``starts`` down to the output of ``to`` crosses, top first: every node that
        is one of ``starts`` or feeds one of them, and that ``to``'s output reaches (``to = INPUT``: every one)."""
        key = (tuple(sorted(set(starts))), to)
        if key not in self._between:
            above: set[int] = set()
            stack = list(key[0])
            while stack:
                i = stack.pop()
                if i in above or i == INPUT:
                    continue
                above.add(i)
                stack.extend(self.nodes[i].inputs)
            if to != INPUT:
                below, stack = set(), list(self.users(to))
                while stack:
                    i = stack.pop()
                    if i not in below:
                        below.add(i)
                        stack.extend(self.users(i))
                above &= below
            self._between[key] = tuple(sorted(above, reverse=True))
        return self._between[key]

    def shapes_for(self, key: Any) -> tuple[torch.Size, ...] | None:
        return self._shapes.get(key)

    def remember_shapes(self, key: Any, shapes: tuple[torch.Size, ...]) -> None:
        self._shapes[key] = shapes


#: Python operators whose results on sizes are sizes (for telling size arithmetic from tensor arithmetic).
SIZE_OPS = (operator.getitem, operator.add, operator.sub, operator.mul, operator.floordiv, operator.mod, getattr)
