"""Pieces that a traced model may contain and the engine knows: TF-style "same" padding (a module the tracer keeps
whole), and the wrapper that keeps a custom ``torch.autograd.Function`` as one node."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SamePad2d", "same_amounts", "CustomFunction", "APPLY"]

#: ``torch.autograd.Function.apply`` as torch defines it (capture replaces it while tracing).
APPLY = torch.autograd.Function.__dict__["apply"]


def same_amounts(
    size: tuple[int, ...] | torch.Size, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int]
) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) of TF "same" padding for an input of ``size`` (h, w): the output keeps
    ``ceil(n / stride)`` positions per axis; an odd total puts the extra pixel at the end (right, bottom)."""
    out = []
    for n, k, s, d in zip(size, kernel, stride, dilation, strict=True):
        total = max((-(-int(n) // s) - 1) * s + (k - 1) * d + 1 - int(n), 0)
        out.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = out
    return left, right, top, bottom


class SamePad2d(nn.Module):
    """TF "same" zero padding for a window of ``kernel``, ``stride`` and ``dilation``, for any input size (see
    :func:`same_amounts`). A traced model keeps it as one pad node whose amounts are recorded at every pass."""

    def __init__(self, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int] = (1, 1)) -> None:
        super().__init__()
        self.kernel, self.stride, self.dilation = tuple(kernel), tuple(stride), tuple(dilation)

    def forward(self, x: Tensor) -> Tensor:
        return F.pad(x, same_amounts(x.shape[-2:], self.kernel, self.stride, self.dilation))  # type: ignore[arg-type]


class CustomFunction:
    """The ``apply`` of a custom ``torch.autograd.Function``, kept as one node: it runs forward, and no rule set
    crosses it (its backward is the function's own, which a rule set cannot see or modify)."""

    def __init__(self, cls: type) -> None:
        self.cls = cls
        self.__name__ = cls.__name__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return APPLY.__get__(None, self.cls)(*args, **kwargs)
