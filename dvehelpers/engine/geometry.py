"""Layer geometry from the graph: every node's spatial output size, and the input window its units see.

``receptive_field`` follows every path from the images to a node: through a window of kernel k, stride s,
padding p and dilation d, ``size += (k − 1)·d·jump``, ``start −= p·jump``, ``jump *= s``; a pad node moves
``start`` back by what it pads; where branches meet (add, cat), the field is the union of theirs. A squeeze-
excitation gate is a per-channel scale computed from the whole image: the gated map keeps the field of the map.
A global pool, a flatten or a fully connected layer sees the whole image: such nodes have no fixed field (Oramas
et al.'s average images then use the whole image).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .capture import capture
from .graph import INPUT, Graph, Node
from .record import shapes

__all__ = ["output_sizes", "spatial_size", "ReceptiveField", "receptive_field"]

Size = tuple[int, int]


def output_sizes(model: nn.Module | Graph, size: int | Size) -> list[Size | None]:
    """The spatial size (h, w) of every node's output for one input of ``size``, in node order; ``None`` where
    the output has no spatial map (after a flatten or a fully connected layer)."""
    hw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    graph = model if isinstance(model, Graph) else capture(model)
    got = shapes(graph, hw)
    return [(int(got[i][-2]), int(got[i][-1])) if len(got[i]) == 4 else None for i in range(len(graph.nodes))]


def spatial_size(model: nn.Module | Graph, index: int, size: int | Size) -> Size | None:
    """The spatial output size of node ``index`` (``None`` for an output without a spatial map)."""
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


_KEEP = ("relu", "relu6", "silu", "hardswish", "gelu", "tanh", "sigmoid", "hardsigmoid", "batchnorm", "scale", "shift")


def _window(node: Node, rf: ReceptiveField) -> ReceptiveField:
    s = node.spec
    k = s.kernel if node.kind != "conv" else tuple(int(v) for v in node.weights.tensors()[0].shape[-2:])  # type: ignore[union-attr]
    size = tuple(rf.size[i] + (k[i] - 1) * s.dilation[i] * rf.jump[i] for i in range(2))
    start = tuple(rf.start[i] - s.padding[i] * rf.jump[i] for i in range(2))
    jump = tuple(rf.jump[i] * s.stride[i] for i in range(2))
    return ReceptiveField(size, jump, start)  # type: ignore[arg-type]


def _union(fields: list[ReceptiveField]) -> ReceptiveField:
    start = tuple(min(f.start[i] for f in fields) for i in range(2))
    end = tuple(max(f.start[i] + f.size[i] for f in fields) for i in range(2))
    jump = tuple(max(f.jump[i] for f in fields) for i in range(2))
    return ReceptiveField(tuple(end[i] - start[i] for i in range(2)), jump, start)  # type: ignore[arg-type]


def receptive_field(model: nn.Module | Graph, layer: int, size: int | Size = 224) -> ReceptiveField:
    """The receptive field of the units of node ``layer`` (an index; see :func:`~dvehelpers.engine.layers.resolve`).
    ``size`` (an input size) only tells spatial nodes from global ones; the field itself does not depend on it."""
    graph = model if isinstance(model, Graph) else capture(model)
    sizes = output_sizes(graph, size)
    fields: dict[int, ReceptiveField | None] = {INPUT: ReceptiveField((1, 1), (1, 1), (0, 0))}
    for node in graph.nodes[: layer + 1]:
        ins = [fields[j] for j in node.inputs]
        spatial = [f for f, j in zip(ins, node.inputs, strict=True) if f is not None and (j == INPUT or sizes[j])]
        rf: ReceptiveField | None
        if sizes[node.index] is None or not spatial:
            rf = None
        elif node.kind in ("conv", "maxpool", "avgpool"):
            rf = _window(node, spatial[0])
        elif node.kind == "pad":
            left, _, top, _ = graph_pad(node)
            f = spatial[0]
            rf = ReceptiveField(f.size, f.jump, (f.start[0] - top * f.jump[0], f.start[1] - left * f.jump[1]))
        elif node.kind == "adaptive_avgpool" and node.inputs and sizes[node.inputs[0]] == sizes[node.index]:
            rf = spatial[0]
        elif node.kind in _KEEP or node.kind in ("add", "mul", "cat", "reshape"):
            rf = _union(spatial)
        else:
            rf = None
        fields[node.index] = rf
    out = fields[layer]
    if out is None:
        raise ValueError(
            f"{graph.nodes[layer].name} has no fixed receptive field (a global pool, flatten or fully connected "
            f"layer sees the whole image); ask for a layer before it"
        )
    return out


def graph_pad(node: Node) -> tuple[int, ...]:
    """(left, right, top, bottom) a pad node pads; TF "same" padding's amounts depend on the input size, so its
    field uses the amounts of an input whose size the stride divides (the left/top amount, which moves the
    field, is ``⌊total/2⌋`` and the same for every such size)."""
    s = node.spec
    if s.same is None:
        return tuple(s.pad) + (0,) * (4 - len(s.pad))
    (kh, kw), (sh, sw), (dh, dw) = s.same
    th, tw = max((kh - 1) * dh + 1 - sh, 0), max((kw - 1) * dw + 1 - sw, 0)
    return (tw // 2, tw - tw // 2, th // 2, th - th // 2)
