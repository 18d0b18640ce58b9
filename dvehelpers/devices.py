"""Where computations run by default."""

from __future__ import annotations

import os

import torch
from torch import Tensor

__all__ = ["device", "conv_layout", "is_channels_last"]


def device() -> torch.device:
    """``cuda`` when a GPU is available, else ``cpu``; the ``DVE_DEVICE`` environment variable overrides."""
    name = os.environ.get("DVE_DEVICE")
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def conv_layout(t: Tensor) -> Tensor:
    """A 4-D tensor (images, activations, convolution weights) in the memory layout in which the device's
    convolutions run fastest, values and logical shape unchanged: channels-last on the CPU, where oneDNN classifies
    a batch of the an8Flower VGG in 0.53× the time and runs one forward+backward pass of VGG-16 in 0.86×
    (``benchmarks/``); as it is on other devices. A convolution follows its operands' layout, so a model is not
    touched: its input is."""
    if t.ndim == 4 and t.device.type == "cpu":
        return t.contiguous(memory_format=torch.channels_last)
    return t


def is_channels_last(t: Tensor) -> bool:
    """Whether ``t`` is a 4-D tensor in channels-last layout (and not also in the default one, as 1×1 maps are)."""
    return t.ndim == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)
