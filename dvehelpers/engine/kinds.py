"""Which kind of node a traced call is (:data:`dvehelpers.engine.graph.KINDS`), with its constants.

A call of a ``torch.nn`` layer and the equivalent function call get the same kind and spec, so a rule never needs
to know how the model's author wrote it (``nn.ReLU()`` or ``F.relu`` or ``x.relu_()``; ``nn.Flatten`` or
``x.view(x.size(0), -1)``). The forward pass of a classified node is written as a function call
(``fn(*args, **kwargs)``), never as a call of the user's module, so no hook of theirs runs.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .functions import CustomFunction, SamePad2d
from .graph import Adaptive, Attr, Cat, Conv, Mean, Pad, Pool, Ref, Scale, Weights

__all__ = ["Classified", "classify_module", "classify_function"]


@dataclass
class Classified:
    """A call's kind, the node inputs it reads (in argument order), its constants (``spec``) and ``weights``, a
    functional form of its forward pass (``fn``; None: the traced call as it is), whether it overwrites its first
    input (``inplace``), a description (``what``) and, for a convolution whose padding is not plain symmetric zero
    padding, the explicit pad node that must come before it (``pre_pad``)."""

    kind: str
    inputs: list[Ref]
    spec: Any = None
    weights: Weights | None = None
    fn: Callable[..., Any] | None = None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    inplace: bool = False
    what: str = ""
    pre_pad: Pad | None = None


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[-1]))


def _tensor_refs(value: Any) -> list[Ref]:
    out: list[Ref] = []
    if isinstance(value, Ref) and not value.meta:
        out.append(value)
    elif isinstance(value, (tuple, list)):
        for v in value:
            out += _tensor_refs(v)
    return out


def _own_forward(module: nn.Module, base: type[nn.Module]) -> bool:
    """Whether ``module`` runs ``base``'s forward (and not one of its own)."""
    return isinstance(module, base) and type(module).forward is base.forward


# ---------------------------------------------------------------- modules

_MODULE_ACTIVATIONS: tuple[tuple[type[nn.Module], str, Callable[..., Any]], ...] = (
    (nn.ReLU, "relu", F.relu),
    (nn.ReLU6, "relu6", F.relu6),
    (nn.SiLU, "silu", F.silu),
    (nn.Hardswish, "hardswish", F.hardswish),
    (nn.Tanh, "tanh", torch.tanh),
    (nn.Sigmoid, "sigmoid", torch.sigmoid),
    (nn.Hardsigmoid, "hardsigmoid", F.hardsigmoid),
)
_NO_OPS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity)


def classify_module(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Classified:
    """The kind of a call of a ``torch.nn`` layer (a leaf of the trace)."""
    what = type(module).__name__
    x = args[0] if args else None
    inputs = _tensor_refs(x)
    if isinstance(module, _NO_OPS):
        return Classified("identity", inputs, what=what)
    if isinstance(module, SamePad2d):
        same = (module.kernel, module.stride, module.dilation)
        return Classified("pad", inputs, spec=Pad((), "constant", 0.0, same), what=what)  # type: ignore[arg-type]
    if _own_forward(module, nn.Conv2d):
        return _conv_module(module, x, what)  # type: ignore[arg-type]
    if _own_forward(module, nn.Linear):
        return Classified("linear", inputs, weights=Weights(module), fn=F.linear, args=(x,), what=what)
    if _own_forward(module, nn.BatchNorm2d):
        return Classified("batchnorm", inputs, spec=None, weights=Weights(module, None, None), what=what)
    for cls, kind, fn in _MODULE_ACTIVATIONS:
        if _own_forward(module, cls):
            return Classified(
                kind, inputs, fn=fn, args=(x,), inplace=bool(getattr(module, "inplace", False)), what=what
            )
    if _own_forward(module, nn.Hardtanh) and (module.min_val, module.max_val) == (0.0, 6.0):  # type: ignore[attr-defined]
        return Classified("relu6", inputs, fn=F.relu6, args=(x,), inplace=bool(module.inplace), what=what)  # type: ignore[attr-defined]
    if _own_forward(module, nn.GELU):
        approx = module.approximate  # type: ignore[attr-defined]
        return Classified("gelu", inputs, spec=approx, fn=F.gelu, args=(x,), kwargs={"approximate": approx}, what=what)
    if _own_forward(module, nn.MaxPool2d) and not module.return_indices:  # type: ignore[attr-defined]
        m = module
        spec = Pool(
            _pair(m.kernel_size), _pair(m.stride or m.kernel_size), _pair(m.padding), _pair(m.dilation), m.ceil_mode
        )  # type: ignore[attr-defined,arg-type]
        return _pool("maxpool", inputs, x, spec, what)
    if _own_forward(module, nn.AvgPool2d):
        m = module
        spec = Pool(
            _pair(m.kernel_size),  # type: ignore[attr-defined]
            _pair(m.stride or m.kernel_size),  # type: ignore[attr-defined]
            _pair(m.padding),  # type: ignore[attr-defined]
            (1, 1),
            m.ceil_mode,  # type: ignore[attr-defined]
            m.count_include_pad,  # type: ignore[attr-defined]
            m.divisor_override,  # type: ignore[attr-defined]
        )
        return _pool("avgpool", inputs, x, spec, what)
    if _own_forward(module, nn.AdaptiveAvgPool2d):
        return _adaptive(inputs, x, module.output_size, what)  # type: ignore[attr-defined]
    if _own_forward(module, nn.Flatten):
        m = module
        return Classified("reshape", inputs, fn=torch.flatten, args=(x, m.start_dim, m.end_dim), what=what)  # type: ignore[attr-defined]
    if isinstance(module, (nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d)):  # ZeroPad2d is constant
        mode = {nn.ReflectionPad2d: "reflect", nn.ReplicationPad2d: "replicate"}.get(type(module), "constant")  # type: ignore[call-overload]
        return _pad(inputs, x, tuple(module.padding), mode, float(getattr(module, "value", 0.0)), what)  # type: ignore[attr-defined]
    return Classified("unknown", _tensor_refs(list(args) + list(kwargs.values())), what=what)


def _conv_module(m: nn.Conv2d, x: Any, what: str) -> Classified:
    s, d = _pair(m.stride), _pair(m.dilation)
    padding, pre_pad = _conv_padding(m.padding, _pair(m.kernel_size), d, m.padding_mode)
    weights = Weights(m, "weight", "bias" if m.bias is not None else None)
    return Classified("conv", _tensor_refs(x), Conv(s, padding, d, m.groups), weights, what=what, pre_pad=pre_pad)


def _conv_padding(
    padding: Any, kernel: tuple[int, int], dilation: tuple[int, int], mode: str = "zeros"
) -> tuple[tuple[int, int], Pad | None]:
    """A convolution's padding as symmetric zero padding (h, w), or (0, 0) and the explicit pad node before it: for
    ``"same"`` with an odd total (PyTorch puts the extra pixel at the end) and for non-zero padding modes."""
    if padding == "valid":
        return (0, 0), None
    if padding == "same":
        totals = [dilation[i] * (kernel[i] - 1) for i in range(2)]
        if all(t % 2 == 0 for t in totals) and mode == "zeros":
            return (totals[0] // 2, totals[1] // 2), None
        (th, tw) = totals
        amounts = (tw // 2, tw - tw // 2, th // 2, th - th // 2)
    else:
        ph, pw = _pair(padding)
        if mode == "zeros":
            return (ph, pw), None
        amounts = (pw, pw, ph, ph)
    pad_mode = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate", "circular": "circular"}[mode]
    return (0, 0), Pad(amounts, pad_mode, 0.0)


def _pool(kind: str, inputs: list[Ref], x: Any, spec: Pool, what: str) -> Classified:
    if kind == "maxpool":
        fn, args = F.max_pool2d, (x, spec.kernel, spec.stride, spec.padding, spec.dilation, spec.ceil_mode)
    else:
        fn = F.avg_pool2d
        args = (
            x,
            spec.kernel,
            spec.stride,
            spec.padding,
            spec.ceil_mode,
            spec.count_include_pad,
            spec.divisor_override,
        )
    return Classified(kind, inputs, spec=spec, fn=fn, args=args, what=what)


def _adaptive(inputs: list[Ref], x: Any, size: Any, what: str) -> Classified:
    out = (size, size) if isinstance(size, int) or size is None else tuple(size)
    return Classified(
        "adaptive_avgpool", inputs, spec=Adaptive(out), fn=F.adaptive_avg_pool2d, args=(x, size), what=what
    )  # type: ignore[arg-type]


def _pad(inputs: list[Ref], x: Any, pad: tuple[int, ...], mode: str, value: float, what: str) -> Classified:
    spec = Pad(tuple(int(p) for p in pad), mode, value)
    kwargs = {"mode": mode, "value": value} if mode == "constant" else {"mode": mode}
    return Classified("pad", inputs, spec=spec, fn=F.pad, args=(x, spec.pad), kwargs=kwargs, what=what)


# ---------------------------------------------------------------- functions and methods


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], i: int, name: str, default: Any = None) -> Any:
    return args[i] if len(args) > i else kwargs.get(name, default)


def _is_tensor(v: Any) -> bool:
    return (isinstance(v, Ref) and not v.meta) or isinstance(v, Attr)


_FN_ACTIVATIONS: dict[Any, str] = {
    F.relu: "relu",
    torch.relu: "relu",
    torch.relu_: "relu",
    F.relu_: "relu",
    "relu": "relu",
    "relu_": "relu",
    F.relu6: "relu6",
    F.silu: "silu",
    "silu": "silu",
    F.hardswish: "hardswish",
    F.gelu: "gelu",
    torch.tanh: "tanh",
    F.tanh: "tanh",
    "tanh": "tanh",
    torch.sigmoid: "sigmoid",
    F.sigmoid: "sigmoid",
    "sigmoid": "sigmoid",
    "sigmoid_": "sigmoid",
    F.hardsigmoid: "hardsigmoid",
}
_FUNCTIONAL = {
    "relu": F.relu,
    "relu6": F.relu6,
    "silu": F.silu,
    "hardswish": F.hardswish,
    "gelu": F.gelu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "hardsigmoid": F.hardsigmoid,
}
_RESHAPES = {
    torch.flatten,
    torch.reshape,
    torch.squeeze,
    torch.unsqueeze,
    "flatten",
    "view",
    "reshape",
    "squeeze",
    "unsqueeze",
}
_ADDS = {operator.add, operator.iadd, torch.add, "add", "add_"}
_MULS = {operator.mul, operator.imul, torch.mul, "mul", "mul_"}
_CATS = {torch.cat, torch.concat, torch.concatenate}


def classify_function(target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Classified:
    """The kind of a traced function (or method, ``target`` its name) call."""
    name = target if isinstance(target, str) else getattr(target, "__name__", repr(target))
    what = f"{name}()" if isinstance(target, str) else name
    refs = _tensor_refs(list(args) + list(kwargs.values()))
    x = args[0] if args else None
    inplace = (isinstance(target, str) and target.endswith("_")) or bool(kwargs.get("inplace", False))
    if isinstance(target, CustomFunction):
        return Classified("unknown", refs, what=f"custom autograd function {target.__name__}")
    if target in _FN_ACTIVATIONS or (target is F.hardtanh and _hardtanh_is_relu6(args, kwargs)):
        kind = "relu6" if target is F.hardtanh else _FN_ACTIVATIONS[target]
        fkw = {"approximate": kwargs.get("approximate", "none")} if kind == "gelu" else {}
        return Classified(kind, refs[:1], fn=_FUNCTIONAL[kind], args=(x,), kwargs=fkw, inplace=inplace, what=what)
    if target is F.conv2d or target is torch.conv2d:
        return _conv_function(args, kwargs, refs, what)
    if target is F.linear:
        w, b = _arg(args, kwargs, 1, "weight"), _arg(args, kwargs, 2, "bias")
        if isinstance(w, Attr) and (b is None or isinstance(b, Attr)):
            weights = Weights(w.module, w.name, None if b is None else b.name)
            return Classified("linear", refs[:1], weights=weights, fn=F.linear, args=(x,), what=what)
    if target is F.max_pool2d and not _arg(args, kwargs, 6, "return_indices", False):
        k = _pair(_arg(args, kwargs, 1, "kernel_size"))
        s = _arg(args, kwargs, 2, "stride")
        spec = Pool(
            k,
            _pair(s) if s else k,
            _pair(_arg(args, kwargs, 3, "padding", 0)),
            _pair(_arg(args, kwargs, 4, "dilation", 1)),
            bool(_arg(args, kwargs, 5, "ceil_mode", False)),
        )
        return _pool("maxpool", refs[:1], x, spec, what)
    if target is F.avg_pool2d:
        k = _pair(_arg(args, kwargs, 1, "kernel_size"))
        s = _arg(args, kwargs, 2, "stride")
        spec = Pool(
            k,
            _pair(s) if s else k,
            _pair(_arg(args, kwargs, 3, "padding", 0)),
            (1, 1),
            bool(_arg(args, kwargs, 4, "ceil_mode", False)),
            bool(_arg(args, kwargs, 5, "count_include_pad", True)),
            _arg(args, kwargs, 6, "divisor_override"),
        )
        return _pool("avgpool", refs[:1], x, spec, what)
    if target is F.adaptive_avg_pool2d:
        return _adaptive(refs[:1], x, _arg(args, kwargs, 1, "output_size"), what)
    if target in ("mean",) or target is torch.mean:
        dims = _arg(args, kwargs, 1, "dim")
        if dims is not None and not isinstance(dims, Ref):
            dims = (dims,) if isinstance(dims, int) else tuple(dims)
            return Classified(
                "mean", refs[:1], spec=Mean(dims, bool(_arg(args, kwargs, 2, "keepdim", False))), what=what
            )
    if target in _RESHAPES and len(refs) == 1:
        return Classified("reshape", refs, what=what)
    if target in ("contiguous", "clone") or target is torch.clone:
        return Classified("identity", refs[:1], what=what)
    if target in ("dropout", F.dropout, F.dropout2d) and not _arg(args, kwargs, 2, "training", True):
        return Classified("identity", refs[:1], what=what)
    if name == "stochastic_depth" and (not _arg(args, kwargs, 3, "training", True) or _arg(args, kwargs, 1, "p") == 0):
        return Classified("identity", refs[:1], what=what)
    if target in _ADDS:
        return _binary("add", "shift", args, kwargs, refs, inplace, what)
    if target in _MULS:
        return _binary("mul", "scale", args, kwargs, refs, inplace, what)
    if (
        target in (operator.truediv, torch.div, "div")
        and len(refs) == 1
        and isinstance(_arg(args, kwargs, 1, "other"), (int, float))
        and _is_tensor(x)
    ):
        return Classified("scale", refs, spec=Scale(1.0 / float(args[1])), what=what)
    if target in _CATS:
        tensors = x if isinstance(x, (list, tuple)) else []
        if tensors and all(_is_tensor(t) and isinstance(t, Ref) for t in tensors):
            return Classified("cat", list(tensors), spec=Cat(int(_arg(args, kwargs, 1, "dim", 0))), what=what)
    if target is F.pad:
        pad = _arg(args, kwargs, 1, "pad")
        mode = _arg(args, kwargs, 2, "mode", "constant")
        value = _arg(args, kwargs, 3, "value", None)
        if not isinstance(pad, Ref) and all(isinstance(p, int) for p in pad):
            return _pad(refs[:1], x, tuple(pad), mode, float(value or 0.0), what)
    return Classified("unknown", refs, what=what)


def _hardtanh_is_relu6(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    return (_arg(args, kwargs, 1, "min_val", -1.0), _arg(args, kwargs, 2, "max_val", 1.0)) == (0.0, 6.0)


def _binary(
    kind: str, const_kind: str, args: tuple[Any, ...], kwargs: dict[str, Any], refs: list[Ref], inplace: bool, what: str
) -> Classified:
    a, b = args[0], _arg(args, kwargs, 1, "other")
    if kwargs.get("alpha", 1) != 1:
        return Classified("unknown", refs, what=what)
    if isinstance(a, Ref) and isinstance(b, Ref) and not a.meta and not b.meta:
        return Classified(kind, [a, b], inplace=inplace, what=what)
    tensor, const = (a, b) if isinstance(a, Ref) and not a.meta else (b, a)
    if isinstance(tensor, Ref) and not tensor.meta and isinstance(const, (int, float)) and not isinstance(const, bool):
        spec = Scale(float(const)) if kind == "mul" else None
        return Classified(const_kind, [tensor], spec=spec, inplace=inplace, what=what)
    return Classified("unknown", refs, what=what)


def _conv_function(args: tuple[Any, ...], kwargs: dict[str, Any], refs: list[Ref], what: str) -> Classified:
    x = args[0]
    w, b = _arg(args, kwargs, 1, "weight"), _arg(args, kwargs, 2, "bias")
    if not isinstance(w, Attr) or not (b is None or isinstance(b, Attr)) or not isinstance(x, Ref):
        return Classified("unknown", refs, what=f"{what} with a weight computed in the forward pass")
    dilation = _pair(_arg(args, kwargs, 5, "dilation", 1))
    kernel = _pair(tuple(w.get().shape[-2:]))
    padding, pre_pad = _conv_padding(_arg(args, kwargs, 4, "padding", 0), kernel, dilation)
    spec = Conv(_pair(_arg(args, kwargs, 3, "stride", 1)), padding, dilation, int(_arg(args, kwargs, 6, "groups", 1)))
    weights = Weights(w.module, w.name, None if b is None else b.name)
    return Classified("conv", [x], spec, weights, what=what, pre_pad=pre_pad)
