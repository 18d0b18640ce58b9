"""Sanity checks for saliency maps: model-parameter randomisation (Adebayo et al., NeurIPS 2018, "Sanity Checks
for Saliency Maps", §3.1, cascading randomisation).

The learned weights are replaced by freshly initialised ones layer by layer, from the top (the logits) down, and
after every step each image's map is compared with its map under the trained model by Spearman's rank
correlation. A map that explains what the *model* learned must change once the model has forgotten it; one that
stays similar (e.g. an edge detector over the image) explains the image rather than the model.

Re-initialisation follows torchvision's own VGG/AlexNet init (Kaiming-normal, fan-out, for convolutions; normal
with σ = 0.01 for linear layers; zero biases), seeded. The trained model is never touched: every stage is a
deep copy.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["rank_correlation", "randomisable_layers", "randomised", "Cascade", "cascade"]


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
    from .evaluate import correlation

    if a.shape != b.shape:
        raise ValueError(f"maps must have one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    ra, rb = _average_ranks(a.flatten(1).double()), _average_ranks(b.flatten(1).double())
    same = (a.flatten(1) == b.flatten(1)).all(1)
    r = correlation(ra, rb)
    constant = (ra == ra[:, :1]).all(1) | (rb == rb[:, :1]).all(1)
    return torch.where(constant, same.double(), r)


def randomisable_layers(model: nn.Module) -> list[str]:
    """Paper names of the layers with learned weights (convolutions and linear layers), top (logits) first."""
    from .trace import walk

    return [s.name for s in reversed(walk(model)) if isinstance(s.module, (nn.Conv2d, nn.Linear))]


def _reinit(module: nn.Module, generator: torch.Generator) -> None:
    # drawn on the CPU so that a seed gives the same weights on every device
    w = torch.empty(module.weight.shape, dtype=module.weight.dtype)
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu", generator=generator)
    else:
        nn.init.normal_(w, 0.0, 0.01, generator=generator)
    with torch.no_grad():
        module.weight.copy_(w)
        if module.bias is not None:
            module.bias.zero_()


def randomised(model: nn.Module, layers: int, seed: int = 0) -> nn.Module:
    """A deep copy of ``model`` with its top ``layers`` learned layers (:func:`randomisable_layers` order)
    re-initialised; ``layers`` = 0 copies it unchanged. The original is left as it was."""
    from .trace import walk

    names = randomisable_layers(model)
    if not 0 <= layers <= len(names):
        raise ValueError(f"layers must be in 0..{len(names)} (the model's learned layers), got {layers}")
    copied = copy.deepcopy(model)
    steps = {s.name: s.module for s in walk(copied)}
    g = torch.Generator().manual_seed(seed)
    for name in names[:layers]:
        _reinit(steps[name], g)
    return copied


@dataclass
class Cascade:
    """:func:`cascade`'s result: ``r[s, i]`` is image i's rank correlation after the top ``s + 1`` learned layers
    (``layers[: s + 1]``) were randomised."""

    layers: list[str]
    r: Tensor

    def median(self) -> Tensor:
        """Median over images at every stage (S)."""
        return self.r.median(1).values


def _frozen(model: nn.Module, method: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` for explaining randomised copies of ``model``: vebi keeps the trained model's relevant features
    (its interpretation is part of the method, fitted once), with the weights check dropped."""
    params = dict(params)
    if method == "vebi":
        from .methods.vebi import interpretation_of

        interp = copy.copy(interpretation_of(model, params.get("interpretation")))
        interp.record = {k: v for k, v in interp.record.items() if k != "fingerprint"}
        params["interpretation"] = interp
    return params


def cascade(
    model: nn.Module,
    images: Tensor,
    method: str,
    params: Mapping[str, Any] | None = None,
    target: Tensor | int | None = None,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = False,
) -> Cascade:
    """Cascading randomisation (Adebayo et al. 2018, §3.1): the rank correlation of every image's map under the
    trained model with its map after randomising the top 1, 2, …, all learned layers. ``target``: the explained
    class, None = the trained model's top-1 class (kept fixed through the cascade, so only the weights change)."""
    from tqdm.auto import tqdm

    from .evaluate import heatmaps
    from .train import predict

    params = _frozen(model, method, params or {})
    dev = next(model.parameters()).device
    if target is None:
        target = predict(model, images.to(dev)).to(dev)
    reference = heatmaps(model, images, method, params, target, batch_size)
    layers = randomisable_layers(model)
    rs = []
    for s in tqdm(range(1, len(layers) + 1), desc=f"{method}: randomising", disable=not progress):
        maps = heatmaps(randomised(model, s, seed), images, method, params, target, batch_size)
        rs.append(rank_correlation(reference, maps))
    return Cascade(layers, torch.stack(rs))
