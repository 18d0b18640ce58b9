"""Sanity checks for saliency maps: model-parameter randomisation (Adebayo et al., NeurIPS 2018, "Sanity Checks
for Saliency Maps", §3.1, cascading randomisation).

The learned weights are replaced by freshly initialised ones layer by layer, from the top (the logits) down, and
after every step each image's map is compared with its map under the trained model by Spearman's rank
correlation. A map that explains what the *model* learned must change once the model has forgotten it; one that
stays similar (e.g. an edge detector over the image) explains the image rather than the model.

Re-initialisation follows torchvision's own VGG/AlexNet init (Kaiming-normal, fan-out, for convolutions; normal
with σ = 0.01 for linear layers; zero biases), seeded. The trained model is never touched: every stage is a
deep copy. A batch norm folded into a convolution keeps its statistics (the convolution's weights are what is
learned and randomised).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..engine import Node, capture
from ..registry import METHODS
from ..train import predict
from .iou import correlation, heatmaps

__all__ = ["CLASS_BLIND", "SURVIVES", "rank_correlation", "randomisable_layers", "randomised", "Cascade", "cascade"]

#: A class-specific method whose median correlation between the maps of two classes is at least this is flagged
#: *class-blind* (ours: "barely changes with the class").
CLASS_BLIND = 0.9
#: A method whose median rank correlation with its trained-model map stays at least this once the whole classifier
#: (every fully connected layer, from the logits down) is randomised is flagged *survives randomisation* (ours): the
#: decision was made there, so a map that explains it must change.
SURVIVES = 0.5


def _average_ranks(x: Tensor) -> Tensor:
    """Ranks 0…n−1 of every row of ``x`` (B×n), ties sharing the mean of their ranks (Spearman's convention)."""
    b, n = x.shape
    values, order = x.sort(dim=1, stable=True)
    new = torch.ones_like(values, dtype=torch.bool)
    new[:, 1:] = values[:, 1:] != values[:, :-1]
    group = new.cumsum(1) - 1 + torch.arange(b, device=x.device)[:, None] * n  # tie groups, unique across rows
    pos = torch.arange(n, device=x.device, dtype=torch.float64).expand(b, n).reshape(-1)
    first = torch.full((b * n,), float(n), dtype=torch.float64, device=x.device).scatter_reduce(
        0, group.reshape(-1), pos, "amin"
    )
    last = torch.zeros(b * n, dtype=torch.float64, device=x.device).scatter_reduce(0, group.reshape(-1), pos, "amax")
    mean_rank = ((first + last) / 2)[group.reshape(-1)].view(b, n)
    return torch.empty_like(mean_rank).scatter_(1, order, mean_rank)


def rank_correlation(a: Tensor, b: Tensor) -> Tensor:
    """Spearman's rank correlation of each pair of maps ``a[i]``, ``b[i]`` (B×…) → B: the Pearson correlation of
    their tie-averaged ranks. A constant map has no ranking; it counts as 1 against an identical map, else 0."""
    if a.shape != b.shape:
        raise ValueError(f"maps must have one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    ra, rb = _average_ranks(a.flatten(1).double()), _average_ranks(b.flatten(1).double())
    same = (a.flatten(1) == b.flatten(1)).all(1)
    r = correlation(ra, rb)
    constant = (ra == ra[:, :1]).all(1) | (rb == rb[:, :1]).all(1)
    return torch.where(constant, same.double(), r)


def _learned(model: nn.Module) -> list[Node]:
    """The convolution and linear nodes (the layers with learned weights), top (logits) first."""
    return [n for n in reversed(capture(model).nodes) if n.kind in ("conv", "linear") and n.weights is not None]


def randomisable_layers(model: nn.Module) -> list[str]:
    """Names of the layers with learned weights (convolutions and linear layers), top (logits) first."""
    return [n.name for n in _learned(model)]


def _reinit(node: Node, generator: torch.Generator) -> None:
    assert node.weights is not None
    weight = getattr(node.weights.module, node.weights.weight)
    # drawn on the CPU so that a seed gives the same weights on every device
    w = torch.empty(weight.shape, dtype=weight.dtype)
    if node.kind == "conv":
        nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu", generator=generator)
    else:
        nn.init.normal_(w, 0.0, 0.01, generator=generator)
    with torch.no_grad():
        weight.copy_(w)
        if node.weights.bias is not None:
            getattr(node.weights.module, node.weights.bias).zero_()


def randomised(model: nn.Module, layers: int, seed: int = 0) -> nn.Module:
    """A deep copy of ``model`` with its top ``layers`` learned layers (:func:`randomisable_layers` order)
    re-initialised; ``layers`` = 0 copies it unchanged. The original is left as it was."""
    n = len(randomisable_layers(model))
    if not 0 <= layers <= n:
        raise ValueError(f"layers must be in 0..{n} (the model's learned layers), got {layers}")
    copied = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    for node in _learned(copied)[:layers]:
        _reinit(node, g)
    return copied


@dataclass
class Cascade:
    """:func:`cascade`'s result: ``r[k, i]`` is image i's rank correlation after the top ``stages[k]`` learned layers
    (``layers[: stages[k]]``) were randomised (every stage 1, 2, … unless fewer were asked for)."""

    layers: list[str]
    r: Tensor
    stages: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.stages:
            self.stages = list(range(1, len(self.r) + 1))

    def median(self) -> Tensor:
        """Median over images at every stage (S)."""
        return self.r.median(1).values


def cascade(
    model: nn.Module,
    images: Tensor,
    method: str,
    params: Mapping[str, Any] | None = None,
    target: Tensor | int | None = None,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = False,
    stages: Sequence[int] | None = None,
    reference: Tensor | None = None,
) -> Cascade:
    """Cascading randomisation (Adebayo et al. 2018, §3.1): the rank correlation of every image's map under the
    trained model with its map after randomising the top 1, 2, …, all learned layers (or only the top ``stages``
    of them, e.g. ``[1, 10, 50]`` on a deep network). ``target``: the explained class, None = the trained model's
    top-1 class (kept fixed through the cascade, so only the weights change).
    A method that carries state fitted on the trained model (vebi's interpretation) keeps it through the cascade
    (its registry entry's ``randomised`` hook). ``reference``: the images' maps under the trained model, when they
    were already computed (the evaluation has them), else they are."""
    params = METHODS[method].params_for_randomised(model, params or {})
    dev = next(model.parameters()).device
    if target is None:
        target = predict(model, images.to(dev)).to(dev)
    if reference is None:
        reference = heatmaps(model, images, method, params, target, batch_size)
    elif reference.shape[0] != len(images):
        raise ValueError(f"reference must hold one map per image ({len(images)}), got {tuple(reference.shape)}")
    layers = randomisable_layers(model)
    todo = list(range(1, len(layers) + 1)) if stages is None else [int(k) for k in stages]
    if not todo or any(not 1 <= k <= len(layers) for k in todo):
        raise ValueError(f"stages must be in 1..{len(layers)} (the model's learned layers), got {list(todo)}")
    rs = []
    for s in tqdm(todo, desc=f"{method}: randomising", disable=not progress):
        maps = heatmaps(randomised(model, s, seed), images, method, params, target, batch_size)
        rs.append(rank_correlation(reference, maps))
    return Cascade(layers, torch.stack(rs), todo)
