"""Pointing game (both conventions) and deletion / insertion: planted masks with hand values, Quantus as an oracle,
a written-out tolerance rule, and a slow one-image-one-step loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import distance_transform_edt

import dvehelpers as dh
from dvehelpers import metrics

from .conftest import seeded_images, small, snapshot


def planted(b: int = 3, size: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    masks = torch.zeros(b, size, size, dtype=torch.bool)
    masks[:, 10:20, 10:20] = True
    return torch.zeros(b, size, size), masks


def test_pointing_game_on_planted_maxima_by_hand() -> None:
    heat, masks = planted()
    heat[0, 15, 15] = 1.0  # on the object
    heat[1, 19, 29] = 1.0  # 10 px right of the mask's edge (column 19)
    heat[2, 19, 35] = 1.0  # 16 px right of it
    assert metrics.pointing_game(heat, masks, "quantus").tolist() == [True, False, False]
    assert metrics.pointing_game(heat, masks, "torchray").tolist() == [True, True, False]
    heat[2, 19, 35], heat[2, 19, 34] = 0.0, 1.0  # exactly 15 px away: inside the tolerance
    assert metrics.pointing_game(heat, masks, "torchray").tolist() == [True, True, True]


def test_a_constant_map_scores_the_masks_area_not_a_hit() -> None:
    heat, masks = planted(b=1)  # every pixel is a maximum; the mask is 10×10 of 40×40
    assert metrics.pointing_game(heat, masks).tolist() == [100 / 1600]
    assert metrics.pointing_game(heat, masks, ties="any").tolist() == [1.0]  # Quantus's rule: a hit
    heat[0, 0, :2] = 2.0  # two maxima, one of them... both off the mask
    heat[0, 15, 15] = 2.0  # ...and one on it: a third of a hit
    assert metrics.pointing_game(heat, masks).tolist() == [pytest.approx(1 / 3)]
    with pytest.raises(ValueError, match="ties must be one of 'share', 'any'"):
        metrics.pointing_game(heat, masks, ties="first")


def test_pointing_game_equals_quantus_without_tolerance() -> None:
    quantus = pytest.importorskip("quantus")
    g = torch.Generator().manual_seed(0)
    heat = (torch.rand(64, 24, 24, generator=g) * 200).floor()  # a few ties at the maximum
    masks = torch.rand(64, 24, 24, generator=g) > 0.8
    masks[:, 0, 0] = True
    expected = quantus.PointingGame(normalise=False, disable_warnings=True).evaluate_batch(
        a_batch=heat.numpy()[:, None], s_batch=masks.numpy()[:, None]
    )
    got = metrics.pointing_game(heat, masks, "quantus", ties="any")
    assert got.bool().tolist() == np.asarray(expected, dtype=bool).tolist()
    assert 0 < int(got.sum()) < 64
    shared = metrics.pointing_game(heat, masks, "quantus")  # ties as shares: between 0 and Quantus's hit
    assert bool((shared <= got).all()) and bool((shared[got == 0] == 0).all()) and bool((shared < got).any())


def test_torchray_convention_equals_a_written_out_distance_rule() -> None:
    g = torch.Generator().manual_seed(1)
    heat = (torch.rand(20, 30, 30, generator=g) * 50).floor()
    masks = torch.zeros(20, 30, 30, dtype=torch.bool)
    for i in range(20):
        y, x = torch.randint(0, 26, (2,), generator=g).tolist()
        masks[i, y : y + 4, x : x + 3] = True
    got = metrics.pointing_game(heat, masks, "torchray")
    for i in range(20):
        peaks = (heat[i] == heat[i].max()).nonzero().tolist()
        pixels = masks[i].nonzero().tolist()
        share = sum(any(math.dist(p, q) <= 15 for q in pixels) for p in peaks) / len(peaks)
        assert float(got[i]) == pytest.approx(share), i


def test_pointing_game_errors() -> None:
    heat, masks = planted()
    with pytest.raises(ValueError, match="'quantus', 'torchray'"):
        metrics.pointing_game(heat, masks, "tolerant")
    with pytest.raises(ValueError, match="is empty"):
        metrics.pointing_game(heat, torch.zeros_like(masks))
    with pytest.raises(ValueError, match="one shape"):
        metrics.pointing_game(heat[:, :5], masks)


def test_auc_by_hand() -> None:
    assert metrics.auc(torch.tensor([[1.0, 0.5, 0.0], [1.0, 1.0, 1.0]])).tolist() == [0.5, 1.0]


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
@pytest.mark.parametrize("baseline", [None, "zeros", "blur"])
def test_deletion_insertion_equals_a_slow_loop(mode: str, baseline: str | None) -> None:
    model, x = small("alexnet"), seeded_images(3, b=3, size=48)
    heat = torch.rand(3, 48, 48, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    heat[0] = 0.5  # all ties: the pixel index decides
    targets = torch.tensor([1, 4, 0])
    before = snapshot(model)
    curves = metrics.deletion_insertion(model, x, heat, targets, mode, steps=5, baseline=baseline, batch_size=7)
    after = snapshot(model)
    assert after[:4] == before[:4] and all(torch.equal(after[4][k], before[4][k]) for k in before[4])
    base_name = baseline or ("zeros" if mode == "deletion" else "blur")
    base = torch.zeros_like(x) if base_name == "zeros" else dh.experiments.gaussian_blur(x, 5.0)
    for i in range(3):
        order = sorted(range(48 * 48), key=lambda p: (-float(heat[i].flatten()[p]), p))
        for s in range(6):
            chosen = torch.zeros(48 * 48, dtype=torch.bool)
            chosen[order[: round(s / 5 * 48 * 48)]] = True
            chosen = chosen.view(1, 48, 48)
            img = torch.where(chosen, base[i], x[i]) if mode == "deletion" else torch.where(chosen, x[i], base[i])
            with torch.no_grad():
                p = model(img[None]).softmax(1)[0, targets[i]]
            assert float(curves.probability[i, s]) == pytest.approx(float(p), rel=1e-9, abs=1e-12), (i, s)
    assert torch.allclose(curves.auc, metrics.auc(curves.probability))


def test_deletion_of_the_planted_evidence_drops_the_probability_first() -> None:
    """A classifier that reads one square: deleting it first (a map on the square) ends the evidence at once, a map
    pointing elsewhere leaves it for the end — the faithful map has the lower deletion AUC."""
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 2)).double()
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.zero_()
        w = torch.zeros(3, 16, 16, dtype=torch.float64)
        w[:, 4:8, 4:8] = 1.0
        model[1].weight[0] = w.flatten()
    x = torch.ones(2, 3, 16, 16, dtype=torch.float64)
    on, off = torch.zeros(2, 16, 16, dtype=torch.float64), torch.zeros(2, 16, 16, dtype=torch.float64)
    on[:, 4:8, 4:8] = 1.0
    off[:, 10:14, 10:14] = 1.0
    faithful = metrics.deletion_insertion(model, x, on, 0, steps=16).auc
    unfaithful = metrics.deletion_insertion(model, x, off, 0, steps=16).auc
    assert (faithful < unfaithful).all()
    assert float(metrics.deletion_insertion(model, x, on, 0, steps=16).probability[0, 1]) == pytest.approx(0.5)


def test_deletion_insertion_errors() -> None:
    model, x = small("vgg"), seeded_images(0, b=2)
    heat = torch.rand(2, 112, 112)
    with pytest.raises(ValueError, match="'deletion' or 'insertion'"):
        metrics.deletion_insertion(model, x, heat, mode="both")
    with pytest.raises(ValueError, match="steps"):
        metrics.deletion_insertion(model, x, heat, steps=0)
    with pytest.raises(ValueError, match="'zeros', 'blur'"):
        metrics.deletion_insertion(model, x, heat, baseline="noise")
    with pytest.raises(ValueError, match="heatmaps must be"):
        metrics.deletion_insertion(model, x, heat[:1])


@pytest.mark.parametrize("radius", [0.0, 1.0, 2.5, 7.0, 15.0])
def test_dilate_grows_by_the_euclidean_disc_of_scipys_distance_transform(radius: float) -> None:
    """Every pixel within ``radius`` px (Euclidean, dx² + dy² ≤ r²) of a mask pixel, and no other: SciPy's exact
    distance transform of the complement as the reference; sparse random masks, several near the border."""
    g = torch.Generator().manual_seed(int(radius * 10))
    masks = torch.rand(4, 40, 33, generator=g) > 0.995
    masks[0, 0, 0] = masks[1, -1, 17] = True
    grown = metrics.dilate(masks, radius)
    for m, got in zip(masks.numpy(), grown.numpy(), strict=True):
        distance = distance_transform_edt(~m)
        np.testing.assert_array_equal(got, distance**2 <= radius**2 + 1e-9)
