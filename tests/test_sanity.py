"""Model-parameter randomisation (Adebayo et al.): Spearman against SciPy, the cascade's order, the model untouched."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import spearmanr

import dvehelpers as dh
from dvehelpers.evaluate.sanity import cascade, randomisable_layers, randomised, rank_correlation

from .conftest import seeded_images, small, snapshot


def test_rank_correlation_equals_scipy_with_ties() -> None:
    g = torch.Generator().manual_seed(0)
    a = (torch.rand(12, 9, 7, generator=g) * 5).floor()  # many ties
    b = a + (torch.rand(12, 9, 7, generator=g) * 4).floor() * torch.randn(12, 1, 1, generator=g).sign()
    b[3] = torch.rand(9, 7, generator=g)
    r = rank_correlation(a, b)
    for i in range(12):
        assert r[i].item() == pytest.approx(spearmanr(a[i].flatten(), b[i].flatten()).statistic, abs=1e-12)


def test_rank_correlation_of_monotone_maps_and_constant_maps() -> None:
    x = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(rank_correlation(x, x.exp()), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(rank_correlation(x, -x), -torch.ones(3, dtype=torch.float64))
    zero = torch.zeros(3, 8, 8)
    assert rank_correlation(zero, zero).tolist() == [1.0] * 3  # nothing changed
    assert rank_correlation(x, zero).tolist() == [0.0] * 3  # the map vanished
    with pytest.raises(ValueError, match="one shape"):
        rank_correlation(x, x[:2])


def test_randomised_reinitialises_the_top_layers_of_a_copy_only() -> None:
    model = small("vgg")
    before = snapshot(model)
    names = randomisable_layers(model)
    assert names[0] == dh.models.layer_names(model)[-1] and names[-1] == "conv1_1"  # top (logits) first
    steps = {n.name: n.weights.module for n in dh.engine.capture(model).nodes if n.weights is not None}
    copy = randomised(model, 3, seed=5)
    moved = {n.name: n.weights.module for n in dh.engine.capture(copy).nodes if n.weights is not None}
    for k, name in enumerate(names):
        same = torch.equal(steps[name].weight, moved[name].weight)
        assert same == (k >= 3), name
    assert all(moved[n].bias.abs().sum() == 0 for n in names[:3])  # torchvision's init: zero biases
    assert all(
        torch.equal(a, b)
        for a, b in zip(randomised(model, 3, seed=5).state_dict().values(), copy.state_dict().values(), strict=True)
    )  # seeded
    assert not torch.equal(
        randomised(model, 3, seed=6).state_dict()[f"{_path(model, names[0])}.weight"],
        copy.state_dict()[f"{_path(model, names[0])}.weight"],
    )
    _same(snapshot(model), before)
    assert all(
        torch.equal(a, b)
        for a, b in zip(randomised(model, 0).state_dict().values(), model.state_dict().values(), strict=True)
    )
    with pytest.raises(ValueError, match="learned layers"):
        randomised(model, len(names) + 1)


def _path(model: torch.nn.Module, name: str) -> str:
    return next(n.path for n in dh.engine.capture(model).nodes if n.name == name)


def _same(a: tuple, b: tuple) -> None:
    assert a[:4] == b[:4]
    assert all(torch.equal(a[4][k], b[4][k]) for k in b[4])


def test_cascade_keeps_a_layer_map_until_a_layer_below_it_is_randomised() -> None:
    # the activation map of the last conv ReLU does not depend on the layers above it: exactly 1 while only the
    # classifier is randomised, then it changes once the convolutions feeding it are
    model = small("vgg")
    before = snapshot(model)
    images = seeded_images(0, b=3)
    result = cascade(model, images, "activation")
    names = result.layers
    n_fc = sum(n.startswith("fc") for n in names)
    assert result.r.shape == (len(names), 3)
    assert torch.equal(result.r[:n_fc], torch.ones(n_fc, 3, dtype=torch.float64))
    assert (result.r[n_fc:].median(1).values < 0.99).all()
    assert result.median().shape == (len(names),)
    _same(snapshot(model), before)  # the trained model is untouched


def test_cascade_of_a_class_specific_method_changes_at_the_top_layer() -> None:
    model = small("alexnet")
    images = seeded_images(1, b=2)
    result = cascade(model, images, "gradcam", target=torch.tensor([0, 1]))
    assert result.layers[0].startswith("fc")
    assert (result.r[0] < 0.999).all()  # the logits' weights set Grad-CAM's channel weights


def test_a_cascade_at_chosen_stages_equals_those_rows_of_the_whole_cascade() -> None:
    model, x = small("alexnet"), seeded_images(2, b=2)
    whole = cascade(model, x, "gradcam", {"layer": "relu4"})
    some = cascade(model, x, "gradcam", {"layer": "relu4"}, stages=[1, 3, len(whole.layers)])
    assert some.stages == [1, 3, len(whole.layers)] and whole.stages == list(range(1, len(whole.layers) + 1))
    torch.testing.assert_close(some.r, whole.r[[0, 2, -1]])
    with pytest.raises(ValueError, match="stages must be in 1.."):
        cascade(model, x, "gradcam", stages=[0])


def test_a_cascade_given_the_trained_maps_equals_one_that_computes_them() -> None:
    """``reference=``: the trained model's maps, when the caller has them, give the same correlations as the
    cascade's own; the maps of other (mirrored) images give other ones; a reference of the wrong size is refused."""
    model, x = small("alexnet"), seeded_images(4, b=3)
    targets = torch.tensor([0, 2, 5])
    own = cascade(model, x, "guided_backprop", target=targets, stages=[1, 4])
    trained = dh.evaluate.heatmaps(model, x, "guided_backprop", target=targets)
    given = cascade(model, x, "guided_backprop", target=targets, stages=[1, 4], reference=trained)
    torch.testing.assert_close(given.r, own.r)
    other = dh.evaluate.heatmaps(model, x.flip(-1), "guided_backprop", target=targets)
    assert not torch.allclose(
        cascade(model, x, "guided_backprop", target=targets, stages=[1], reference=other).r, own.r[:1]
    )
    with pytest.raises(ValueError, match="one map per image"):
        cascade(model, x, "guided_backprop", target=targets, stages=[1], reference=trained[:2])
