"""Layers of a model by name: what ``layer=`` accepts, the default layers, and the output shape of a layer."""

from __future__ import annotations

from torch import nn

from ..engine import LayerInfo, cam_layer, capture, resolve, shapes
from ..engine import layer_table as graph_table

__all__ = ["layer_names", "layer_table", "resolve_layer", "layer_shape", "default_cam_layer", "default_size"]


def default_size(model: nn.Module) -> int:
    """The input side the model was made for: its checkpoint's ``image_size`` (112 for the an8Flower models), else
    224 (ImageNet)."""
    return int((getattr(model, "meta", None) or {}).get("image_size", 224))


def _size(model: nn.Module, size: int | tuple[int, int] | None) -> tuple[int, int]:
    size = default_size(model) if size is None else size
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def layer_names(model: nn.Module) -> list[str]:
    """The name of every node of the model's captured graph, in forward order: paper names (``conv5_3``,
    ``pool5``, ``fc7``) for VGG/AlexNet-style nets, call-site names (``layer4.2.relu_2``) otherwise."""
    return capture(model).names


def layer_table(model: nn.Module, size: int | tuple[int, int] | None = None) -> list[LayerInfo]:
    """Every node with its index, name, kind, module path or call site and output shape for one input of ``size``
    (default: :func:`default_size`)."""
    return graph_table(model, _size(model, size))


def resolve_layer(model: nn.Module, layer: str | int) -> int:
    """The node index of a layer name, a module path (a container module: its last node) or an index."""
    return resolve(capture(model), layer)


def layer_shape(model: nn.Module, layer: str | int, size: int | tuple[int, int] = 112) -> tuple[int, ...]:
    """The output shape of ``layer`` (C, h, w for a conv layer) for one ``size`` input."""
    index = resolve_layer(model, layer)
    return tuple(shapes(model, _size(model, size))[index][1:])


def default_cam_layer(model: nn.Module, size: int | tuple[int, int] | None = None) -> str:
    """The last node with a spatial map before the classifier (``relu5_3`` of VGG-16, ``layer4.2.relu_2`` of
    ResNet-50): the default layer of Grad-CAM, Grad-CAM++ and activation maps."""
    graph = capture(model)
    return graph.nodes[cam_layer(graph, _size(model, size))].name
