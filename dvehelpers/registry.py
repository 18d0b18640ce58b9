"""The method registry: one entry per method, read by ``explain``, the widgets, the evaluation and the benchmarks.

Adding a method is one module::

    @register("my_method", paper="Author et al. 2024", class_specific=True,
              params=[Param("sigma", 1.0, "width of the blur", range=(0.1, 10.0))])
    def my_method(model, images, target=None, *, sigma=1.0) -> Tensor: ...
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from torch import Tensor, nn

from .checks import preserved

__all__ = ["Param", "Method", "METHODS", "register", "explain"]

MethodFn = Callable[..., Tensor]
#: The kinds of :class:`Param`.
KINDS = ("float", "int", "bool", "choice", "layer", "channels", "object")


@dataclass(frozen=True)
class Param:
    """A method parameter: default, one-line doc, and its valid values.

    ``kind`` is ``"float"``, ``"int"``, ``"bool"``, ``"choice"`` (one of ``choices``), ``"layer"`` (a layer
    name of the model, ``None`` = the method's default), ``"channels"`` (``None`` or a list of ints) or
    ``"object"`` (a Python object the method checks itself, e.g. a fitted interpretation; it has no control).
    ``range`` bounds numbers, inclusive; ``log=True`` says the range spans orders of magnitude (a control
    then moves on a log scale). A parameter whose default is ``None`` also accepts ``None`` (the method then
    chooses, as its doc line says). ``when`` says under which values of the method's other parameters this one
    matters at all, e.g. ``when={"mask": ("tau",)}``: FBI's τ is read only by the τ mask. The explorers grey out a
    control whose ``when`` is not met.
    """

    name: str
    default: Any
    doc: str
    kind: str = "float"
    choices: tuple[Any, ...] | None = None
    range: tuple[float, float] | None = None
    log: bool = False
    when: Mapping[str, tuple[Any, ...]] | tuple[tuple[str, tuple[Any, ...]], ...] = ()

    def __post_init__(self) -> None:
        # stored as sorted pairs so that a Param stays hashable
        pairs = self.when.items() if isinstance(self.when, Mapping) else self.when
        object.__setattr__(self, "when", tuple(sorted((str(k), tuple(v)) for k, v in pairs)))
        if self.kind not in KINDS:
            raise ValueError(f"parameter {self.name!r}: unknown kind {self.kind!r}; valid: {', '.join(KINDS)}")
        if self.kind == "choice" and not self.choices:
            raise ValueError(f"parameter {self.name!r}: a choice parameter needs choices")
        if self.log and (self.kind != "float" or self.range is None or self.range[0] <= 0):
            raise ValueError(f"parameter {self.name!r}: a log scale needs a float with a positive range")

    def applies(self, values: Mapping[str, Any]) -> bool:
        """Whether this parameter matters when the method's parameters are ``values`` (see ``when``)."""
        return all(values.get(name) in allowed for name, allowed in self.when)  # type: ignore[union-attr]

    def validate(self, value: Any) -> Any:
        """``value`` checked against the spec (layer names are checked by the method, on the model)."""
        where = f"parameter {self.name!r}"
        if value is None and self.default is None:  # None: "the method's own default"
            return None
        if self.kind == "choice":
            if value not in self.choices:  # type: ignore[operator]
                raise ValueError(f"{where} got {value!r}; valid: {', '.join(map(repr, self.choices or ()))}")
        elif self.kind == "bool":
            if not isinstance(value, bool):
                raise TypeError(f"{where} must be True or False, got {value!r}")
        elif self.kind in ("float", "int"):
            ok = (int,) if self.kind == "int" else (int, float)
            if isinstance(value, bool) or not isinstance(value, ok):
                raise TypeError(f"{where} must be {'an int' if self.kind == 'int' else 'a number'}, got {value!r}")
            if self.range is not None and not self.range[0] <= value <= self.range[1]:
                raise ValueError(f"{where} = {value} is outside its range {self.range[0]}..{self.range[1]}")
        elif self.kind == "layer":
            if value is not None and not isinstance(value, (str, int)):
                raise TypeError(f"{where} must be a layer name, got {value!r}")
        elif (
            self.kind == "channels"
            and value is not None
            and (
                isinstance(value, (str, bytes))
                or not isinstance(value, Sequence)
                or not all(isinstance(c, int) and not isinstance(c, bool) for c in value)
            )
        ):
            raise TypeError(f"{where} must be None or a list of channel indices, got {value!r}")
        return value


#: A method's optional hook: what else its result depends on, for cache keys (e.g. a shipped file's checksum).
IdentityHook = Callable[[nn.Module, Mapping[str, Any]], Any]
#: A method's optional hook: its parameters for explaining randomised copies of a model (the sanity check).
RandomisedHook = Callable[[nn.Module, Mapping[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Method:
    """A registered method: ``fn(model, images, target=None, **params) -> Tensor[B, H, W]`` in [0, 1].

    Two optional hooks let the evaluation treat a method that carries state of its own (vebi's fitted
    interpretation) without knowing its name: ``identity(model, params)`` says what else a result depends on (a
    cache key reads it), ``randomised(model, params)`` gives the parameters for explaining a copy of the model
    with randomised weights."""

    name: str
    fn: MethodFn
    params: tuple[Param, ...]
    paper: str
    class_specific: bool
    doc: str
    identity: IdentityHook | None = None
    randomised: RandomisedHook | None = None

    def cache_identity(self, model: nn.Module, params: Mapping[str, Any]) -> Any:
        """What a result depends on beyond the method, its parameters and the model's weights (None: nothing)."""
        return None if self.identity is None else self.identity(model, params)

    def params_for_randomised(self, model: nn.Module, params: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters for explaining randomised copies of ``model`` (``params`` unless the method says)."""
        return dict(params) if self.randomised is None else self.randomised(model, params)

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def check(self, params: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(params) - {p.name for p in self.params})
        if unknown:
            valid = ", ".join(p.name for p in self.params) or "(none)"
            raise TypeError(f"method {self.name!r} got unknown parameter(s) {', '.join(unknown)}; valid: {valid}")
        return {p.name: p.validate(params.get(p.name, p.default)) for p in self.params}

    def __call__(self, model: nn.Module, images: Tensor, target: Any = None, **params: Any) -> Tensor:
        checked = self.check(params)
        with preserved(model):
            return self.fn(model, images, target, **checked)


_METHODS: dict[str, Method] = {}
#: name -> :class:`Method`, read-only.
METHODS = MappingProxyType(_METHODS)


def _check_when(method: str, params: Sequence[Param]) -> None:
    """Every ``when`` of ``params`` names another parameter of the method, and only values it can take."""
    by_name = {p.name: p for p in params}
    for p in params:
        for other, allowed in p.when:  # type: ignore[misc]
            spec = by_name.get(other)
            if spec is None or spec is p:
                raise ValueError(f"{method}: parameter {p.name!r} depends on {other!r}, not among {sorted(by_name)}")
            bad = [v for v in allowed if spec.kind == "choice" and v not in (spec.choices or ())]
            if bad:
                raise ValueError(f"{method}: {p.name!r} depends on {other!r} being {bad}; valid: {spec.choices}")


def register(
    name: str,
    *,
    params: Sequence[Param] = (),
    paper: str,
    class_specific: bool,
    identity: IdentityHook | None = None,
    randomised: RandomisedHook | None = None,
) -> Callable[[MethodFn], MethodFn]:
    """Register ``fn`` under ``name`` with its parameter specs (and the optional hooks of :class:`Method`); the
    first docstring line is its summary."""

    def deco(fn: MethodFn) -> MethodFn:
        if name in _METHODS:
            raise ValueError(f"method {name!r} is registered twice")
        _check_when(name, params)
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        _METHODS[name] = Method(name, fn, tuple(params), paper, class_specific, doc, identity, randomised)
        return fn

    return deco


def explain(name: str, model: nn.Module, images: Tensor, target: Any = None, **params: Any) -> Tensor:
    """Explain ``images`` with the registered method ``name``: a B×H×W heatmap in [0, 1] per image.

    ``target``: None (the top-1 class), an int, or a LongTensor of one class per image. Unknown method
    names and parameters raise an error listing the valid ones.
    """
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; valid: {', '.join(sorted(_METHODS))}")
    return _METHODS[name](model, images, target, **params)
