"""The grid pointing game on real photos (Böhle, Fritz & Schiele, CVPR 2021, "Convolutional Dynamic Alignment
Networks", §5; Rao, Böhle & Schiele, CVPR 2022, "Towards Better Understanding Attribution Methods").

Without masks, a photo cannot say where an explanation should be; a grid can. Four photos of different classes,
each classified confidently on its own at the size of one tile, are put into a 2×2 grid; the grid is explained
once for the class of each cell. A map that explains the class must put its heat into that class's cell: the
**localisation score** is the share of the map's (positive) heat that lies in the right cell — 1 when all of it
does, 0.25 for a map spread evenly, 0 when none — and the grid's **pointing game** asks whether the map's maximum
lies in the right cell. Our maps are min-max normalised to [0, 1] (every method has that form), so "positive
heat" is the map itself; an empty map (nothing salient for the class) scores 0 and is counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..images import preprocess
from .iou import heatmaps

__all__ = ["Grids", "make_grids", "cell_masks", "grid_scores", "grid_pointing", "GridResult", "grid_game"]


@dataclass
class Grids:
    """2×2 grids of photos: ``images`` (G×3×2s×2s in [0, 1]), and per grid and cell (row-major: top left, top right,
    bottom left, bottom right) the index of the source photo (``sources``, G×4) and its class (``classes``, G×4)."""

    images: Tensor
    sources: Tensor
    classes: Tensor


def make_grids(photos: Tensor, classes: Tensor, n: int, seed: int = 0) -> Grids:
    """``n`` different 2×2 grids of ``photos`` (P×3×s×s, one tile each) whose four cells hold four different classes
    (``classes``: P), drawn with a seeded generator: the same seed gives the same grids. Fewer possible grids than
    ``n`` is an error that says how many there are."""
    if photos.ndim != 4 or len(photos) != len(classes):
        raise ValueError(f"photos must be P×3×s×s with one class each, got {tuple(photos.shape)} and {len(classes)}")
    distinct = len(set(classes.tolist()))
    if distinct < 4:
        raise ValueError(f"a grid needs photos of four different classes; these are of {distinct}")
    g = torch.Generator().manual_seed(seed)
    picked: list[tuple[int, ...]] = []
    seen: set[tuple[int, ...]] = set()
    tries = 0
    while len(picked) < n:
        tries += 1
        if tries > 200 * n + 1000:
            raise ValueError(f"only {len(picked)} different grids of four classes could be drawn from these photos")
        order = torch.randperm(len(photos), generator=g).tolist()
        cells: list[int] = []
        for i in order:
            if all(int(classes[i]) != int(classes[j]) for j in cells):
                cells.append(i)
            if len(cells) == 4:
                break
        key = tuple(cells)
        if key not in seen:
            seen.add(key)
            picked.append(key)
    sources = torch.tensor(picked, dtype=torch.long)
    tiles = photos[sources]  # G×4×3×s×s
    top = torch.cat([tiles[:, 0], tiles[:, 1]], dim=-1)
    bottom = torch.cat([tiles[:, 2], tiles[:, 3]], dim=-1)
    return Grids(torch.cat([top, bottom], dim=-2), sources, classes[sources])


def cell_masks(height: int, width: int, device: Any = None) -> Tensor:
    """The four cells of a 2×2 grid as 4×H×W booleans (row-major)."""
    rows = torch.arange(height, device=device)[:, None] < height // 2
    cols = torch.arange(width, device=device)[None, :] < width // 2
    return torch.stack([rows & cols, rows & ~cols, ~rows & cols, ~rows & ~cols])


def grid_scores(maps: Tensor, cells: Tensor) -> Tensor:
    """The localisation score of each map (N×H×W, non-negative): the share of its heat inside its cell (N, 0..3);
    0 for an empty map."""
    if maps.ndim != 3 or len(maps) != len(cells):
        raise ValueError(f"maps must be N×H×W with one cell each, got {tuple(maps.shape)} and {len(cells)}")
    heat = maps.clamp(min=0).double()
    inside = (heat * cell_masks(*maps.shape[-2:], device=maps.device)[cells.to(maps.device)]).flatten(1).sum(1)
    total = heat.flatten(1).sum(1)
    return torch.where(total > 0, inside / torch.where(total > 0, total, 1), 0.0)


def grid_pointing(maps: Tensor, cells: Tensor) -> Tensor:
    """Per map, whether a pixel where it reaches its maximum lies in its cell (an empty map hits nowhere)."""
    flat = maps.flatten(1)
    at_max = (flat == flat.amax(1, keepdim=True)).view_as(maps)
    inside = (at_max & cell_masks(*maps.shape[-2:], device=maps.device)[cells.to(maps.device)]).flatten(1).any(1)
    return inside & (flat.amax(1) > flat.amin(1))


@dataclass
class GridResult:
    """:func:`grid_game`'s answer, G×4 each (grid, cell): the localisation ``score``, the pointing ``hit``, and
    whether the map was ``empty``."""

    score: Tensor
    hit: Tensor
    empty: Tensor


def grid_game(
    model: nn.Module,
    grids: Grids,
    method: str,
    params: Mapping[str, Any] | None = None,
    batch_size: int = 16,
    progress: bool = False,
) -> GridResult:
    """Explain every grid once per cell, for that cell's class, with ``method`` (the grids preprocessed as the model
    takes its input, :func:`dvehelpers.images.preprocess`), and score each map against its cell."""
    g = len(grids.images)
    dev = next(model.parameters()).device
    x = grids.images.to(dev).repeat_interleave(4, dim=0)  # G·4 copies: grid 0 for cells 0..3, grid 1 …
    cells = torch.arange(4).repeat(g)
    targets = grids.classes.flatten().to(dev)
    maps = heatmaps(model, preprocess(model, x), method, params, targets, batch_size, progress=progress)
    flat = maps.flatten(1)
    empty = flat.amax(1) == flat.amin(1)
    return GridResult(
        grid_scores(maps, cells).view(g, 4).cpu(), grid_pointing(maps, cells).view(g, 4).cpu(), empty.view(g, 4).cpu()
    )
