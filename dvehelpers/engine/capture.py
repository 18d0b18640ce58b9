"""Capture: any classifier turned into the graph the engine walks, by ``torch.fx`` symbolic tracing.

The model is traced through an *eval view*: a shallow copy of its module tree with ``training = False`` and no
hooks, sharing every parameter and buffer with the model. So Python branches on ``self.training`` take their
eval-mode side (dropout and stochastic depth vanish, batch norm uses its running statistics), and the model's own
mode is never touched. Layers of ``torch.nn`` are leaves (one node per call, so a ReLU module called three times
gives three nodes); every other module is traced into, which is how an ``nn.Conv2d`` subclass that pads inside
its own ``forward`` becomes a pad node and a convolution node. A custom ``torch.autograd.Function`` stays one
opaque node (its own backward is invisible to a rule set), instead of being traced into silently.

Each traced call is classified into a node kind (:data:`dvehelpers.engine.graph.KINDS`) and then put into the
canonical forms of :mod:`dvehelpers.engine.canonical`. Graphs are cached per model and re-captured when its module
tree or parameter objects change.
"""

from __future__ import annotations

import copy
import functools
import operator
import weakref
from collections.abc import Callable
from typing import Any
from unittest import mock

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .canonical import Raw, canonical_forms
from .functions import APPLY, CustomFunction, SamePad2d
from .graph import INPUT, SIZE_OPS, Attr, Graph, Meta, Ref, UnsupportedModel
from .kinds import Classified, classify_function, classify_module
from .naming import call_site_names, paper_names_for

__all__ = ["capture"]

_CACHE: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[Any, ...], Graph]] = weakref.WeakKeyDictionary()


def capture(model: nn.Module) -> Graph:
    """The captured, canonical graph of ``model``, cached (re-captured when its modules or parameters change)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    sig = _signature(model)
    hit = _CACHE.get(model)
    if hit is not None and hit[0] == sig:
        return hit[1]
    graph = _build(model)
    _CACHE[model] = (sig, graph)
    return graph


def _signature(model: nn.Module) -> tuple[Any, ...]:
    """What a cached graph depends on: the module tree and the identity of every parameter and buffer."""
    modules = tuple((name, id(m)) for name, m in model.named_modules(remove_duplicate=False))
    tensors = tuple(id(t) for t in model.parameters()) + tuple(id(t) for t in model.buffers())
    return modules + tensors


def _eval_view(module: nn.Module, memo: dict[int, nn.Module]) -> nn.Module:
    """A shallow copy of ``module``'s tree in eval mode without hooks; parameters and buffers are shared."""
    if id(module) in memo:
        return memo[id(module)]
    view = copy.copy(module)
    memo[id(module)] = view
    state = view.__dict__
    state["training"] = False
    state["_parameters"] = dict(module._parameters)
    state["_buffers"] = dict(module._buffers)
    state["_modules"] = {k: None if m is None else _eval_view(m, memo) for k, m in module._modules.items()}
    for key, value in list(state.items()):
        if "hook" in key and isinstance(value, dict):
            state[key] = type(value)()
    return view


class _Tracer(fx.Tracer):
    """torch.fx's tracer, which also keeps TF "same" padding (:class:`~dvehelpers.engine.functions.SamePad2d`)
    whole: its amounts depend on the input's size, which symbolic tracing cannot compute."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, SamePad2d) or super().is_leaf_module(m, module_qualified_name)


def _trace(model: nn.Module) -> tuple[fx.Graph, nn.Module]:
    """The fx graph of ``model``'s eval view; custom autograd functions are kept as single nodes."""
    view = _eval_view(model, {})
    tracer = _Tracer()

    def apply(cls: type, *args: Any, **kwargs: Any) -> Any:
        if not any(isinstance(a, fx.Proxy) for a in (*args, *kwargs.values())):
            return APPLY.__get__(None, cls)(*args, **kwargs)
        return tracer.create_proxy("call_function", CustomFunction(cls), args, kwargs)

    try:
        with mock.patch.object(torch.autograd.Function, "apply", classmethod(apply)):
            graph = tracer.trace(view)
    except Exception as err:  # any tracing failure: say what and what to do
        raise UnsupportedModel(
            f"torch.fx cannot trace {type(model).__name__}: {type(err).__name__}: {err}. The engine captures a model "
            f"by symbolic tracing, which cannot follow Python control flow that depends on tensor values (e.g. "
            f"`if x.sum() > 0:`) or calls it cannot see through. Make such a part a module of its own that "
            f"torch.fx keeps whole (torch.fx.wrap for a function), or explain a traceable copy of the model."
        ) from err
    return graph, view


def _target_name(n: fx.Node) -> str:
    name = str(n.target) if n.op == "call_method" else getattr(n.target, "__name__", str(n.target))
    return name.rstrip("_") or name


def _scope(n: fx.Node) -> str:
    """The path of the module whose forward made this call ('' at the top level)."""
    stack = n.meta.get("nn_module_stack") or {}
    return str(next(reversed(stack))).split("@")[0] if stack else ""


def _call_method(name: str, obj: Any, *args: Any, **kwargs: Any) -> Any:
    return getattr(obj, name)(*args, **kwargs)


class _Builder:
    """One pass over the fx graph in order: tensor calls become :class:`~dvehelpers.engine.canonical.Raw` nodes,
    size arithmetic becomes :class:`~dvehelpers.engine.graph.Meta` steps; in-place calls are made out of place
    (later users of the overwritten tensor read the result), calls that are no-ops in eval mode are dropped (their
    users read their input), and padding that a convolution does itself in a non-plain way becomes a pad node."""

    def __init__(self, model: nn.Module, view: nn.Module) -> None:
        self.model, self.view = model, view
        self.raw: list[Raw] = []
        self.program: list[Raw | Meta] = []
        self.value: dict[fx.Node, Any] = {}  # fx node -> Ref (node or meta), Attr, or a constant
        self.metas = 0
        self.placeholders = 0

    def ref(self, value: Any) -> Any:
        """``value`` (fx arguments) with fx nodes replaced by what they stand for now."""
        return fx.node.map_aggregate(value, lambda v: self.value[v] if isinstance(v, fx.Node) else v)

    def add(self, n: fx.Node) -> None:
        if n.op == "placeholder":
            self._placeholder(n)
        elif n.op == "get_attr":
            module, _, name = str(n.target).rpartition(".")
            self.value[n] = Attr(self.model.get_submodule(module) if module else self.model, name)
        elif n.op == "output":
            return
        elif self._is_meta(n):
            fn, args, kwargs = self._callable(n)
            self.program.append(Meta(self.metas, fn, args, kwargs))
            self.value[n] = Ref(self.metas, meta=True)
            self.metas += 1
        else:
            self._tensor_call(n)

    def _placeholder(self, n: fx.Node) -> None:
        if self.placeholders == 0:
            self.value[n] = Ref(INPUT)
        elif n.args:  # another argument of forward() with a default: that constant
            self.value[n] = n.args[0]
        else:
            raise UnsupportedModel(
                f"{type(self.model).__name__}.forward takes more than one input ({n.target!r} has no default); the "
                f"engine explains a classifier of one batch of images"
            )
        self.placeholders += 1

    def _is_meta(self, n: fx.Node) -> bool:
        if n.op == "call_method" and n.target in ("size", "dim"):
            return True
        if n.op == "call_function" and n.target is getattr and n.args[1] in ("shape", "ndim", "dtype", "device"):
            return True
        if n.op == "call_function" and n.target in SIZE_OPS:
            refs = [self.value.get(a) for a in n.args if isinstance(a, fx.Node)]
            return bool(refs) and all(isinstance(r, Ref) and r.meta for r in refs)
        return False

    def _callable(self, n: fx.Node) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
        args, kwargs = self.ref(tuple(n.args)), self.ref(dict(n.kwargs))
        if n.op == "call_method":
            return functools.partial(_call_method, str(n.target)), args, kwargs
        if n.op == "call_module":  # only unknown modules run as modules: their eval view, never the user's
            return self.view.get_submodule(str(n.target)), args, kwargs
        return n.target, args, kwargs  # type: ignore[return-value]

    def _tensor_call(self, n: fx.Node) -> None:
        fn, args, kwargs = self._callable(n)
        if n.op == "call_module":
            c = classify_module(self.model.get_submodule(str(n.target)), args, kwargs)
            path = str(n.target)
        else:
            c = classify_function(n.target if n.op == "call_function" else str(n.target), args, kwargs)
            path = ".".join(p for p in (_scope(n), _target_name(n)) if p)
        if c.kind == "unknown" and n.target is operator.getitem and c.inputs and c.inputs[0].index != INPUT:
            source = self.raw[c.inputs[0].index]  # an item of what an unknown call returned: say what that was
            c.what = f"an item of {source.path} ({source.what})"
        if c.kind == "identity":  # an eval-mode no-op: its users read its input
            self.value[n] = c.inputs[0] if c.inputs else args[0]
            return
        if c.pre_pad is not None:
            c = self._explicit_pad(c, path)
        raw = Raw(
            len(self.raw),
            c.kind,
            [r.index for r in c.inputs],
            c.fn or fn,
            c.args if c.fn else args,
            c.kwargs if c.fn else kwargs,
            c.spec,
            c.weights,
            path,
            c.what,
        )
        self._append(raw)
        self.value[n] = Ref(raw.uid)
        if c.inplace and c.inputs:  # later users of the overwritten tensor read this node
            overwritten = c.inputs[0]
            for key, val in self.value.items():
                if isinstance(val, Ref) and val == overwritten and key is not n:
                    self.value[key] = Ref(raw.uid)

    def _explicit_pad(self, c: Classified, path: str) -> Classified:
        """A pad node for ``c.pre_pad``, made the input of the convolution ``c``."""
        pad = c.pre_pad
        assert pad is not None
        x = c.inputs[0]
        kwargs = {"mode": pad.mode, "value": pad.value} if pad.mode == "constant" else {"mode": pad.mode}
        raw = Raw(
            len(self.raw),
            "pad",
            [x.index],
            F.pad,
            (x, pad.pad),
            kwargs,
            pad,
            None,
            f"{path}.pad",
            f"padding of {c.what}",
        )
        self._append(raw)
        c.inputs = [Ref(raw.uid)]
        return c

    def _append(self, raw: Raw) -> None:
        self.raw.append(raw)
        self.program.append(raw)

    def output(self, graph: fx.Graph) -> int:
        out = next(n for n in graph.nodes if n.op == "output")
        value = out.args[0]
        ref = self.value.get(value) if isinstance(value, fx.Node) else None
        if not isinstance(ref, Ref) or ref.meta:
            raise UnsupportedModel(
                f"{type(self.model).__name__} returns {type(value).__name__}; the engine explains a model that "
                f"returns one B×K tensor of class scores (logits)"
            )
        if ref.index == INPUT:
            raise UnsupportedModel(f"{type(self.model).__name__} returns its input unchanged")
        return ref.index


def _build(model: nn.Module) -> Graph:
    fx_graph, view = _trace(model)
    b = _Builder(model, view)
    for n in fx_graph.nodes:
        b.add(n)
    raws, program, output = canonical_forms(b.raw, b.program, b.output(fx_graph))
    chain = [r.freeze(r.path) for r in raws]
    names = paper_names_for(model, chain) or call_site_names([r.path for r in raws])
    nodes = {id(r): r.freeze(name) for r, name in zip(raws, names, strict=True)}
    return Graph(
        tuple(nodes[id(r)] for r in raws),
        tuple(nodes[id(p)] if isinstance(p, Raw) else p for p in program),
        output,
        paper_names_for(model, chain) is not None,
        type(model).__name__,
    )
