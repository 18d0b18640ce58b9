"""Builders: the an8Flower-scale VGG- and AlexNet-style networks, torchvision's ImageNet architectures, and
EfficientNet-Lite0 (:mod:`.efficientnet_lite`), each freshly initialised and deterministic."""

from __future__ import annotations

import torch
from torch import nn
from torchvision import models as tvm

from .efficientnet_lite import efficientnet_lite0

__all__ = ["ARCHS", "build"]

ARCHS = ("vgg", "alexnet", "vgg16", "alexnet-imagenet", "efficientnet-lite0")

# VGG-11 ("configuration A") layout with a quarter of the widths: five blocks, so the paper names
# conv1_1 … conv5_2 and pool5 exist; a 112×112 input gives 7×7 maps at conv5 and 3×3 at pool5.
_SMALL_VGG_CFG: list[int | str] = [16, "M", 32, "M", 64, 64, "M", 128, 128, "M", 128, 128, "M"]
_SMALL_HIDDEN = 256


def _small_vgg(num_classes: int) -> tvm.VGG:
    with torch.device("meta"):  # skip allocating and initialising the 120M-parameter ImageNet head
        model = tvm.VGG(nn.Sequential(), num_classes=num_classes, init_weights=False)
    model.features = tvm.vgg.make_layers(_SMALL_VGG_CFG, batch_norm=False)
    model.avgpool = nn.AdaptiveAvgPool2d((3, 3))
    model.classifier = _classifier(int(_SMALL_VGG_CFG[-2]) * 9, num_classes, dropout_first=False)
    for m in model.modules():  # torchvision's VGG initialisation
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
    return model


def _small_alexnet(num_classes: int) -> tvm.AlexNet:
    # AlexNet's structure (strided first conv, overlapping 3×3/2 max pooling, three stacked convs) with a
    # stride-2 first conv so that a 112×112 input keeps 6×6 maps at pool5, as AlexNet has at 224×224.
    with torch.device("meta"):
        model = tvm.AlexNet(num_classes=num_classes)
    model.features = nn.Sequential(
        nn.Conv2d(3, 32, kernel_size=7, stride=2, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(32, 64, kernel_size=5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 96, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(96, 64, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(64, 64, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )
    model.avgpool = nn.AdaptiveAvgPool2d((6, 6))
    model.classifier = _classifier(64 * 36, num_classes, dropout_first=True)
    return model


def _classifier(n_in: int, num_classes: int, dropout_first: bool) -> nn.Sequential:
    h = _SMALL_HIDDEN
    if dropout_first:  # torchvision AlexNet order
        layers = [nn.Dropout(0.5), nn.Linear(n_in, h), nn.ReLU(inplace=True), nn.Dropout(0.5)]
        layers += [nn.Linear(h, h), nn.ReLU(inplace=True), nn.Linear(h, num_classes)]
    else:  # torchvision VGG order
        layers = [nn.Linear(n_in, h), nn.ReLU(inplace=True), nn.Dropout(0.5)]
        layers += [nn.Linear(h, h), nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(h, num_classes)]
    return nn.Sequential(*layers)


def build(arch: str, num_classes: int) -> nn.Module:
    """A freshly initialised network (eval mode).

    ``"vgg"`` and ``"alexnet"`` are the an8Flower-scale networks (112×112 inputs); ``"vgg16"`` and
    ``"alexnet-imagenet"`` are torchvision's ImageNet architectures (224×224) and ``"efficientnet-lite0"`` is
    EfficientNet-Lite0 (224×224, TF "same" padding at any size), all without weights — use
    :func:`~dvehelpers.models.load` for the trained ones.
    """
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    builders = {
        "vgg": _small_vgg,
        "alexnet": _small_alexnet,
        "vgg16": lambda k: tvm.vgg16(weights=None, num_classes=k),
        "alexnet-imagenet": lambda k: tvm.alexnet(weights=None, num_classes=k),
        "efficientnet-lite0": efficientnet_lite0,
    }
    if arch not in builders:
        raise ValueError(f"unknown arch {arch!r}; valid: {', '.join(ARCHS)}")
    with torch.random.fork_rng(devices=[]):  # deterministic init, global RNG state left untouched
        torch.manual_seed(0)
        return builders[arch](num_classes).eval()
