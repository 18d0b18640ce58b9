"""The recorded forward pass: a sequential CNN run layer by layer, keeping every layer's input and output.

:func:`walk` flattens a torchvision ``VGG`` / ``AlexNet`` or any (nested) ``nn.Sequential`` into a list of
:class:`Step` s, each with its paper name (:mod:`dvehelpers.models`). :func:`record` runs them under
``torch.no_grad`` with eval-mode semantics (dropout off, batch-norm running statistics) *without* changing
the model's mode, never in place (so in-place ReLUs cannot overwrite a recorded input), and without
registering anything on the model. The backward-rule engine (:mod:`dvehelpers.backprop`) walks the
result backwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision import models as tvm

from .models import paper_names

__all__ = ["Step", "Trace", "walk", "record", "SUPPORTED"]

# Module type -> step kind. The kind selects the backward rule; subclasses map like their base.
_KINDS: tuple[tuple[type[nn.Module], str], ...] = (
    (nn.Conv2d, "conv"),
    (nn.ReLU, "relu"),
    (nn.MaxPool2d, "maxpool"),
    (nn.AvgPool2d, "avgpool"),
    (nn.AdaptiveAvgPool2d, "adaptive_avgpool"),
    (nn.Linear, "linear"),
    (nn.Flatten, "flatten"),
    (nn.Dropout, "dropout"),
    (nn.Dropout2d, "dropout"),
    (nn.BatchNorm2d, "batchnorm"),
    (nn.Identity, "identity"),
)
SUPPORTED = tuple(t.__name__ for t, _ in _KINDS)

# Step kind -> the kind used for naming (models.paper_names).
_NAMING = {
    "conv": "conv",
    "relu": "relu",
    "maxpool": "pool",
    "avgpool": "pool",
    "adaptive_avgpool": "avgpool",
    "linear": "fc",
    "flatten": "flatten",
    "dropout": "drop",
    "batchnorm": "bn",
    "identity": "identity",
}


@dataclass(frozen=True)
class Step:
    """One layer of the forward pass: paper name, torchvision module path, the module and its kind."""

    name: str
    path: str
    module: nn.Module
    kind: str


@dataclass
class Trace:
    """A recorded forward pass. ``acts[i]`` is the input of step ``i``; ``acts[i + 1]`` its output.

    Entries below ``keep_from`` are dropped (``None``) to save memory when no backward pass goes there.
    ``aux[i]`` holds what a rule needs beyond the tensors (max-pooling switches).
    """

    steps: list[Step]
    acts: list[Tensor | None]
    aux: dict[int, Any] = field(default_factory=dict)

    @property
    def logits(self) -> Tensor:
        out = self.acts[-1]
        assert out is not None
        return out

    def output(self, i: int) -> Tensor:
        out = self.acts[i + 1]
        if out is None:
            raise RuntimeError(f"output of step {i} ({self.steps[i].name}) was not kept")
        return out

    def input(self, i: int) -> Tensor:
        out = self.acts[i]
        if out is None:
            raise RuntimeError(f"input of step {i} ({self.steps[i].name}) was not kept")
        return out

    def select(self, rows: Tensor, upto: int | None = None) -> Trace:
        """The trace of the images ``rows`` (a LongTensor, repeats allowed) through step ``upto`` (default: all),
        as if they had been recorded in that order: one forward pass serves several backward passes per image."""
        last = len(self.steps) - 1 if upto is None else upto
        acts = [None if a is None else a.index_select(0, rows) for a in self.acts[: last + 2]]
        aux = {i: a.index_select(0, rows) for i, a in self.aux.items() if i <= last}
        return Trace(self.steps[: last + 1], acts, aux)


def _kind(module: nn.Module) -> str | None:
    for cls, kind in _KINDS:
        if isinstance(module, cls):
            return kind
    return None


def _leaves(module: nn.Module, prefix: str) -> list[tuple[str, nn.Module]]:
    if isinstance(module, nn.Sequential):
        out = []
        for name, child in module.named_children():
            out += _leaves(child, f"{prefix}.{name}" if prefix else name)
        return out
    if _kind(module) is None:
        raise TypeError(
            f"cannot walk module {prefix or '<model>'!r} of type {type(module).__name__}: the rule engine "
            f"supports torchvision VGG/AlexNet and nn.Sequential models of {', '.join(SUPPORTED)}"
        )
    return [(prefix, module)]


def walk(model: nn.Module) -> list[Step]:
    """The model's layers in forward order, as named :class:`Step` s."""
    if isinstance(model, (tvm.VGG, tvm.AlexNet)):
        leaves = _leaves(model.features, "features") + _leaves(model.avgpool, "avgpool")
        leaves += [("flatten", nn.Flatten(1))]  # torch.flatten(x, 1) in their forward()
        leaves += _leaves(model.classifier, "classifier")
        block_style = isinstance(model, tvm.VGG)
    elif isinstance(model, nn.Sequential):
        leaves = _leaves(model, "")
        block_style = _has_multi_conv_block([_kind(m) for _, m in leaves])
    else:
        raise TypeError(
            f"cannot walk a model of type {type(model).__name__}: the rule engine supports torchvision "
            f"VGG/AlexNet and nn.Sequential models of {', '.join(SUPPORTED)}"
        )
    kinds = [_kind(m) or "" for _, m in leaves]
    names = paper_names([_NAMING[k] for k in kinds], block_style)
    return [Step(n, p, m, k) for n, (p, m), k in zip(names, leaves, kinds, strict=True)]


def _has_multi_conv_block(kinds: list[str | None]) -> bool:
    count = 0
    for k in kinds:
        if k == "conv":
            count += 1
            if count > 1:
                return True
        elif k in ("maxpool", "avgpool"):
            count = 0
    return False


def _forward(step: Step, x: Tensor, kept: bool) -> tuple[Tensor, Any]:
    """One step. ``kept``: its input is recorded (a backward pass may cross it), so never overwrite it and
    keep max-pooling switches; otherwise run as cheaply as the model itself (in-place ReLU, no switches)."""
    m, kind = step.module, step.kind
    if kind == "relu":
        return (torch.relu(x) if kept else torch.relu_(x)), None
    if kind in ("dropout", "identity"):
        return x, None
    if kind == "maxpool":
        assert isinstance(m, nn.MaxPool2d)
        if not kept:
            return F.max_pool2d(x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode), None
        return F.max_pool2d(x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, return_indices=True)
    if kind == "batchnorm":
        assert isinstance(m, nn.BatchNorm2d)
        if m.running_mean is None or m.running_var is None:
            raise ValueError(f"batch norm {step.path!r} keeps no running statistics; eval mode needs them")
        return F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps), None
    return m(x), None


def record(model: nn.Module, images: Tensor, upto: int | None = None, keep_from: int = 0) -> Trace:
    """Run ``model`` on ``images`` step by step (no autograd graph) and keep every step's output.

    ``upto``: stop after this step index (default: run to the logits). ``keep_from``: do not keep the
    inputs of steps before this index (nothing will be back-propagated below it).
    """
    steps = walk(model)
    last = len(steps) - 1 if upto is None else upto
    acts: list[Tensor | None] = [images if keep_from == 0 else None]
    aux: dict[int, Any] = {}
    x = images
    with torch.no_grad():
        for i, step in enumerate(steps[: last + 1]):
            try:
                # the caller's images are never written to, whatever is kept
                x, extra = _forward(step, x, kept=i >= keep_from or x is images)
            except RuntimeError as err:
                raise ValueError(
                    f"forward pass failed at layer {step.name} ({step.path}: {step.module}) on an input of "
                    f"shape {tuple(x.shape)}: {err}"
                ) from err
            if extra is not None:
                aux[i] = extra
            acts.append(x if i + 1 >= keep_from else None)
    return Trace(steps[: last + 1], acts, aux)
