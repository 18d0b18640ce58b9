"""Layers by name, and the default layer of each family of methods, found from the graph's shapes.

* The **CAM layer** (Grad-CAM and its kin, activation maps): the last node whose output still has a spatial map,
  before the classifier flattens or globally pools it. Walking back from the logits along each node's first
  input, skip everything without a spatial map (the classifier, a global pool's 1×1 output), then every pooling
  and reshaping node; the first other node is it: ``relu5_3`` of VGG-16, ``relu5`` of AlexNet, ``layer4.2.relu_2``
  of ResNet-50, the last SiLU of EfficientNet-B0.
* **pool5** (KL and Fourier DVE explain "the last pooling layer"): the last max or average pooling node on that
  walk (VGG's and AlexNet's pool5). Networks that end in global average pooling (ResNet, MobileNet, EfficientNet,
  DenseNet) have no such layer: the CAM layer stands in for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .capture import capture
from .graph import INPUT, Graph, Node
from .record import shapes

__all__ = [
    "LayerInfo",
    "layer_table",
    "resolve",
    "cam_layer",
    "pool5_layer",
    "head_chain",
    "activation_layers",
]

_PASS_THROUGH = ("maxpool", "avgpool", "adaptive_avgpool", "reshape", "mean")


@dataclass(frozen=True)
class LayerInfo:
    """One row of :func:`layer_table`: index, name, kind, the module path or call site, and the output shape
    (C, h, w or C) for one image of the probed size."""

    index: int
    name: str
    kind: str
    path: str
    shape: tuple[int, ...]


def layer_table(model: nn.Module | Graph, size: tuple[int, int] = (224, 224)) -> list[LayerInfo]:
    """Every node with its kind and output shape for one ``size`` image: what ``layer=`` accepts."""
    graph = model if isinstance(model, Graph) else capture(model)
    got = shapes(graph, size)
    return [LayerInfo(n.index, n.name, n.kind, n.path, tuple(got[n.index][1:])) for n in graph.nodes]


def resolve(graph: Graph, layer: str | int) -> int:
    """The index of a node from its name, a module path that names one call (or a container module: its last
    node), or an index into :attr:`Graph.nodes` (negative counts from the end)."""
    nodes = graph.nodes
    if isinstance(layer, bool) or not isinstance(layer, (str, int)):
        raise TypeError(f"layer must be a name (str) or an index (int), got {type(layer).__name__}")
    if isinstance(layer, int):
        if -len(nodes) <= layer < len(nodes):
            return layer % len(nodes)
        raise ValueError(f"layer index {layer} out of range for a model with {len(nodes)} layers")
    for n in nodes:
        if n.name == layer:
            return n.index
    calls = [n.index for n in nodes if n.path == layer]
    if len(calls) == 1:
        return calls[0]
    inside = [n.index for n in nodes if n.path.startswith(layer + ".")]
    if inside and not calls:  # a container module (e.g. ResNet's layer4): the node that gives its output
        return inside[-1]
    hint = f" ({layer!r} is called {len(calls)} times; name one call)" if calls else ""
    raise ValueError(f"unknown layer {layer!r}{hint}; valid names: {', '.join(graph.names)}")


def head_chain(graph: Graph, size: tuple[int, int], channels: int | None = None) -> list[Node]:
    """The nodes from the logits back to the CAM layer (both included), along each node's first input, for images
    of ``size`` (h, w) and ``channels``."""
    got = shapes(graph, size, channels)
    chain, i = [], graph.output
    while i != INPUT:
        node = graph.nodes[i]
        chain.append(node)
        shape = got[i]
        if len(shape) == 4 and shape[-2] * shape[-1] > 1 and node.kind not in _PASS_THROUGH:
            return chain
        i = node.inputs[0] if node.inputs else INPUT
    raise ValueError(
        f"{graph.model_type} has no layer with a spatial map before its classifier (at {size[0]}×{size[1]}); "
        f"pass layer= (see dvehelpers.models.layer_table)"
    )


def cam_layer(graph: Graph, size: tuple[int, int], channels: int | None = None) -> int:
    """The default layer of the CAM-style methods (see the module doc)."""
    return head_chain(graph, size, channels)[-1].index


def pool5_layer(graph: Graph, size: tuple[int, int], channels: int | None = None) -> int:
    """The last pooling node before the classifier (pool5), or the CAM layer when there is none."""
    chain = head_chain(graph, size, channels)
    pools = [n.index for n in chain if n.kind in ("maxpool", "avgpool")]
    return pools[0] if pools else chain[-1].index


def activation_layers(graph: Graph, kinds: tuple[str, ...]) -> list[int]:
    """The nodes of the given activation kinds, in forward order."""
    return [n.index for n in graph.nodes if n.kind in kinds]
