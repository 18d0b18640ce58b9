"""Layer names: the papers' Caffe-style names for VGG/AlexNet-style chains, call-site names for everything else.

Every notebook and shipped file speaks of ``conv5_3``, ``pool5`` and ``fc7``, so a torchvision ``VGG`` or
``AlexNet``, or an ``nn.Sequential``, whose captured graph is a plain chain of convolutions, ReLUs, pools and
fully connected layers keeps those names. Any other model gets call-site names in the style of torchvision's
feature extraction: the module path of a call (``layer4.2.relu``), with ``_1``, ``_2`` … for its second, third …
call (``layer4.2.relu_2``), and for a function the path of the module whose forward called it and the function
(``layer1.0.add``, ``flatten``).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn
from torchvision import models as tvm

from .graph import INPUT, Node

__all__ = ["paper_names", "paper_names_for", "call_site_names", "unique"]

#: Node kind -> the kind the paper names count (kinds outside this map make a net not VGG/AlexNet-style).
_PAPER_KINDS = {
    "conv": "conv",
    "relu": "relu",
    "maxpool": "pool",
    "avgpool": "pool",
    "adaptive_avgpool": "avgpool",
    "reshape": "flatten",
    "linear": "fc",
    "batchnorm": "bn",
}


def paper_names(kinds: Sequence[str], block_style: bool) -> list[str]:
    """Caffe-style names for a sequence of layer kinds (``conv``, ``relu``, ``pool``, ``fc`` …).

    Blocks (VGG): a pooling layer closes a block, convs are ``conv{block}_{i}``. Flat (AlexNet): convs
    are numbered globally and pooling/ReLU take the number of the last conv. Fully connected layers
    continue the numbering (``fc6`` after five blocks).
    """
    names: list[str] = []
    block, in_block, nconv, fc = 1, 0, 0, 0
    last = "0"  # the number of the last numbered layer, for relu/bn
    for kind in kinds:
        if kind == "conv":
            nconv += 1
            in_block += 1
            last = f"{block}_{in_block}" if block_style else str(nconv)
            names.append(f"conv{last}")
        elif kind in ("relu", "bn"):
            names.append(f"{kind}{last}")
        elif kind == "pool":
            num = block if block_style else nconv
            names.append(f"pool{num}")
            last = str(num)
            block, in_block = block + 1, 0
        elif kind == "fc":
            fc = fc + 1 if fc else (block - 1 if block_style else nconv) + 1
            last = str(fc)
            names.append(f"fc{last}")
        else:
            names.append(kind)
    return unique(names)


def unique(names: Sequence[str]) -> list[str]:
    """``names`` with the second, third … occurrence of a name suffixed ``_1``, ``_2`` … (torchvision's style)."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        k = seen.get(n, 0)
        seen[n] = k + 1
        out.append(n if k == 0 else f"{n}_{k}")
    return out


def _is_chain(nodes: Sequence[Node]) -> bool:
    return all(n.inputs == (n.index - 1 if n.index else INPUT,) for n in nodes)


def _has_multi_conv_block(kinds: Sequence[str]) -> bool:
    count = 0
    for k in kinds:
        if k == "conv":
            count += 1
            if count > 1:
                return True
        elif k == "pool":
            count = 0
    return False


def paper_names_for(model: nn.Module, nodes: Sequence[Node]) -> list[str] | None:
    """The paper names of a VGG/AlexNet-style model's nodes, or None when the model is not one: a torchvision
    ``VGG``/``AlexNet`` or an ``nn.Sequential`` whose graph is a chain of the kinds the names count."""
    if not isinstance(model, (tvm.VGG, tvm.AlexNet, nn.Sequential)) or not _is_chain(nodes):
        return None
    if any(n.kind not in _PAPER_KINDS for n in nodes):
        return None
    kinds = [_PAPER_KINDS[n.kind] for n in nodes]
    if isinstance(model, tvm.VGG):
        blocks = True
    elif isinstance(model, tvm.AlexNet):
        blocks = False
    else:
        blocks = _has_multi_conv_block(kinds)
    return paper_names(kinds, blocks)


def call_site_names(paths: Sequence[str]) -> list[str]:
    """Call-site names from the nodes' paths: a path called again gets ``_1``, ``_2`` …"""
    return unique(paths)
