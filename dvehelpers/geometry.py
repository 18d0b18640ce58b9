"""Layer geometry computed from the layer stack alone, without running the network.

``output_sizes`` gives every step's spatial output size for an input size, by the convolution arithmetic of
PyTorch's own layers (padding, dilation, stride, ``ceil_mode``), so a method can pick its default layer for
the images it is given at no cost. ``receptive_field`` gives the input window every unit of a layer sees
(Oramas et al.'s average-image interpretations crop it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from torch import nn

from .trace import Step, walk

__all__ = ["output_sizes", "spatial_size", "ReceptiveField", "receptive_field"]

Size = tuple[int, int]


def _pair(v: Any) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _window_out(n: int, kernel: int, stride: int, pad: int, dilation: int, ceil: bool) -> int:
    span = n + 2 * pad - dilation * (kernel - 1) - 1
    out = (math.ceil(span / stride) if ceil else span // stride) + 1
    if ceil and (out - 1) * stride >= n + pad:  # PyTorch: the last window must start inside the input or left pad
        out -= 1
    return out


def _conv_padding(m: nn.Conv2d) -> tuple[int, int]:
    if m.padding == "valid":
        return (0, 0)
    if m.padding == "same":  # stride 1 only (PyTorch's rule): the size is kept
        return (-1, -1)
    return _pair(m.padding)


def _step_size(step: Step, hw: Size) -> Size | None:
    m = step.module
    if step.kind == "conv" and getattr(m, "padding", None) == "same":  # stride 1 only: the size is kept
        return hw
    window = _window(step)
    if window is not None:
        k, s, p, d = window
        ceil = bool(getattr(m, "ceil_mode", False))
        return tuple(_window_out(hw[i], k[i], s[i], p[i], d[i], ceil) for i in range(2))  # type: ignore[return-value]
    if step.kind == "adaptive_avgpool":
        assert isinstance(m, nn.AdaptiveAvgPool2d)
        size = (m.output_size,) * 2 if isinstance(m.output_size, int) else tuple(m.output_size)
        return tuple(hw[i] if size[i] is None else int(size[i]) for i in range(2))  # type: ignore[return-value]
    if step.kind in ("flatten", "linear"):
        return None
    return hw


def output_sizes(model: nn.Module, size: int | Size) -> list[Size | None]:
    """The spatial size (h, w) of every step's output for one input of ``size``, in :func:`walk` order;
    ``None`` from the first step that flattens the maps."""
    hw: Size | None = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    out: list[Size | None] = []
    for step in walk(model):
        hw = None if hw is None else _step_size(step, hw)
        out.append(hw)
    return out


def spatial_size(model: nn.Module, index: int, size: int | Size) -> Size | None:
    """The spatial output size of step ``index`` (``None`` for a flattened output)."""
    return output_sizes(model, size)[index]


@dataclass(frozen=True)
class ReceptiveField:
    """The input window of the units of one layer, per axis (rows, columns): unit ``u`` sees input pixels
    ``start + u·jump … start + u·jump + size − 1`` (before clipping to the image; ``start`` may be negative
    where padding lies under the window)."""

    size: tuple[int, int]
    jump: tuple[int, int]
    start: tuple[int, int]

    def box(self, unit: tuple[int, int], image: tuple[int, int]) -> tuple[int, int, int, int]:
        """The window of unit (row, column) clipped to an ``image`` (H, W): (top, left, bottom, right),
        bottom and right exclusive."""
        top = self.start[0] + unit[0] * self.jump[0]
        left = self.start[1] + unit[1] * self.jump[1]
        return (max(top, 0), max(left, 0), min(top + self.size[0], image[0]), min(left + self.size[1], image[1]))


def _window(step: Step) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]] | None:
    """(kernel, stride, padding, dilation) of a windowed step; None for a step that keeps positions."""
    m = step.module
    if step.kind == "conv":
        assert isinstance(m, nn.Conv2d)
        k, d = _pair(m.kernel_size), _pair(m.dilation)
        pad = _conv_padding(m)
        if pad == (-1, -1):  # "same": stride 1, the padding centres the window (left part for even spans)
            pad = tuple(d[i] * (k[i] - 1) // 2 for i in range(2))  # type: ignore[assignment]
        return k, _pair(m.stride), pad, d
    if step.kind in ("maxpool", "avgpool"):
        assert isinstance(m, (nn.MaxPool2d, nn.AvgPool2d))
        k = _pair(m.kernel_size)
        d = _pair(m.dilation) if isinstance(m, nn.MaxPool2d) else (1, 1)
        return k, _pair(m.stride if m.stride is not None else m.kernel_size), _pair(m.padding), d
    return None


def receptive_field(model: nn.Module, layer: int) -> ReceptiveField:
    """The receptive field of the units of step ``layer`` (a :func:`walk` index), from the layer stack alone:
    through a window of kernel k, stride s, padding p and dilation d, ``size += (k − 1)·d·jump``,
    ``start −= p·jump`` and ``jump *= s``. An adaptive pool or a fully connected layer sees the whole image:
    those layers have no fixed window, so they get a clear error (use the whole image for them)."""
    size, jump, start = [1, 1], [1, 1], [0, 0]
    for step in walk(model)[: layer + 1]:
        if step.kind in ("adaptive_avgpool", "flatten", "linear"):
            raise ValueError(
                f"{step.name} has no fixed receptive field (an adaptive pool or fully connected layer sees the "
                f"whole image); ask for a layer before it"
            )
        window = _window(step)
        if window is None:
            continue
        k, s, p, d = window
        for i in range(2):
            size[i] += (k[i] - 1) * d[i] * jump[i]
            start[i] -= p[i] * jump[i]
            jump[i] *= s[i]
    return ReceptiveField(tuple(size), tuple(jump), tuple(start))  # type: ignore[arg-type]
