"""The grid pointing game: planted maps against a slow written-out reference, the grids' determinism, and the
whole game on EfficientNet-Lite0 with the offline photos."""

from __future__ import annotations

import pytest
import torch

import dvehelpers as dh
from dvehelpers.evaluate import grid


def slow_score(heat: torch.Tensor, cell: int) -> float:
    """Pixel by pixel: the heat in the right quarter over all heat (0 for an empty map)."""
    h, w = heat.shape
    inside = total = 0.0
    for y in range(h):
        for x in range(w):
            v = max(float(heat[y, x]), 0.0)
            total += v
            if cell == (0 if y < h // 2 else 2) + (0 if x < w // 2 else 1):
                inside += v
    return inside / total if total > 0 else 0.0


def test_planted_maps_score_as_the_definition_says() -> None:
    maps = torch.zeros(5, 8, 10)
    maps[0, :4, :5] = 1.0  # everything in cell 0
    maps[1] = 1.0  # uniform
    maps[2, :4, 5:] = 1.0  # everything in cell 1 ...
    maps[2, 4:, :5] = 1.0  # ... and as much in cell 2
    maps[3, 6, 8] = 1.0  # one pixel, in cell 3
    cells = torch.tensor([0, 0, 1, 3, 3])
    got = grid.grid_scores(maps, cells)
    assert got.tolist() == [1.0, 0.25, 0.5, 1.0, 0.0]  # the fifth map is empty: 0
    g = torch.Generator().manual_seed(0)
    rand = torch.rand(6, 9, 7, generator=g)  # odd sides: the cells split at ⌊h/2⌋, ⌊w/2⌋
    rc = torch.tensor([0, 1, 2, 3, 2, 1])
    torch.testing.assert_close(
        grid.grid_scores(rand, rc),
        torch.tensor([slow_score(m, int(c)) for m, c in zip(rand, rc, strict=True)], dtype=torch.float64),
    )
    # a uniform or empty map points nowhere; a tie between two cells counts for each of them
    assert grid.grid_pointing(maps, cells).tolist() == [True, False, True, True, False]
    assert grid.grid_scores(maps[3:4], torch.tensor([0])).item() == 0.0  # all heat in another cell


def test_grids_hold_four_classes_and_are_the_same_for_a_seed() -> None:
    photos = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    classes = torch.tensor([10, 11, 12, 13, 10, 14])
    a, b = grid.make_grids(photos, classes, 12, seed=3), grid.make_grids(photos, classes, 12, seed=3)
    assert torch.equal(a.sources, b.sources) and torch.equal(a.images, b.images)
    assert not torch.equal(a.sources, grid.make_grids(photos, classes, 12, seed=4).sources)
    assert a.images.shape == (12, 3, 16, 16) and len({tuple(s) for s in a.sources.tolist()}) == 12
    assert all(len(set(c)) == 4 for c in a.classes.tolist())
    first = a.sources[0]
    torch.testing.assert_close(a.images[0, :, 8:, :8], photos[first[2]])  # bottom left is cell 2
    with pytest.raises(ValueError, match="four different classes; these are of 3"):
        grid.make_grids(photos[:3], classes[:3], 1)


def test_the_game_on_efficientnet_lite0_and_the_offline_photos() -> None:
    """Grad-CAM on grids of four confidently classified photos: each map is scored in its own cell; a map spread
    evenly would score 0.25, Grad-CAM does far better on this model."""
    model = dh.models.load("efficientnet-lite0")
    names = ["chelsea", "camera", "rocket", "china"]
    tiles = dh.images.photos(names, size=112)
    with torch.no_grad():
        classes = model(dh.images.preprocess(model, tiles)).argmax(1)
    grids = grid.make_grids(tiles, classes, 2, seed=0)
    res = grid.grid_game(model, grids, "gradcam")
    assert res.score.shape == (2, 4) and not res.empty.any()
    assert float(res.score.mean()) > 0.5 and res.hit.float().mean() >= 0.5
    # the scores are those of explaining each grid for each class by hand
    heat = dh.explain("gradcam", model, dh.images.preprocess(model, grids.images[1:2]), int(grids.classes[1, 2]))
    assert float(res.score[1, 2]) == pytest.approx(float(grid.grid_scores(heat, torch.tensor([2]))[0]), rel=1e-6)
