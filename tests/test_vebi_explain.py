"""Oramas et al.'s explanation stage (registered as ``vebi``) against a slow one-feature-at-a-time reference,
the batched engine pieces it rests on, its errors and notices, the shipped interpretations, and the ablation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import dvehelpers as dh
from dvehelpers.engine import GUIDED, GUIDED_STRIDED_FIX, propagate, record, strided_fix
from dvehelpers.methods import vebi

from .conftest import fitted_interpretation, seeded_images, small, snapshot

# ---------------------------------------------------------------- the engine pieces


def test_trace_select_equals_recording_the_selected_images() -> None:
    model, x = small("alexnet"), seeded_images(0, b=3)
    rows = torch.tensor([2, 0, 0, 1, 2])
    picked, direct = record(model, x).select(rows), record(model, x[rows])
    assert picked.values.keys() == direct.values.keys() and picked.switches.keys() == direct.switches.keys()
    for i in direct.values:
        torch.testing.assert_close(picked.values[i], direct.values[i])
        assert picked.shape(i) == direct.shape(i)
    assert all(torch.equal(picked.switches[i], direct.switches[i]) for i in direct.switches)


def test_several_starts_equal_separate_walks_when_rows_start_at_one_layer_each() -> None:
    model = small("alexnet")
    trace = record(model, seeded_images(1, b=4))
    names = [n.name for n in trace.nodes]
    lo, hi = names.index("relu2"), names.index("relu5")
    g = torch.Generator().manual_seed(0)
    s_lo = (
        torch.randn(trace.output(lo).shape, generator=g, dtype=torch.float64)
        * torch.tensor([1.0, 1, 0, 0]).view(-1, 1, 1, 1).double()
    )
    s_hi = (
        torch.randn(trace.output(hi).shape, generator=g, dtype=torch.float64)
        * torch.tensor([0.0, 0, 1, 1]).view(-1, 1, 1, 1).double()
    )
    rules = GUIDED_STRIDED_FIX
    together = propagate(trace, {lo: s_lo, hi: s_hi}, rules)
    apart = propagate(trace, s_lo, rules, start=lo) + propagate(trace, s_hi, rules, start=hi)
    torch.testing.assert_close(together, apart)
    assert together[:2].abs().sum() > 0 and together[2:].abs().sum() > 0
    with pytest.raises(ValueError, match="lies below relu2"):
        propagate(trace, {lo - 1: trace.output(lo - 1)}, rules, to=lo)
    with pytest.raises(ValueError, match="no start"):
        propagate(trace, {}, rules)


# ---------------------------------------------------------------- the explanation against a slow reference


def slow_vebi(
    model: nn.Module, x: torch.Tensor, targets: list[int], interp: vebi.Interpretation, k: int, rules: object
) -> torch.Tensor:
    """One image and one feature at a time: features by the public path, r in NumPy, one walk per feature."""
    out = torch.zeros(len(x), k, *x.shape[-2:], dtype=x.dtype)
    names = [n.name for n in record(model, x[:1]).nodes]
    for i, j in enumerate(targets):
        feats = vebi.features(model, x[i : i + 1], interp.layers, interp.l2_normalize)[0].numpy()
        w = interp.W[:, j].numpy()
        r = feats * w / abs(w.sum())
        order = [n for n in np.argsort(-r, kind="stable")[:k] if r[n] > 0]
        trace = record(model, x[i : i + 1])
        for slot, n in enumerate(order):
            layer, channel = interp.layout.locate(int(n))
            idx = names.index(layer)
            start = torch.zeros_like(trace.output(idx))
            start[:, channel] = trace.output(idx)[:, channel]
            raw = propagate(trace, start, rules, start=idx)[0]
            heat = raw.clamp(min=0).square().sum(0).sqrt()
            span = heat.max() - heat.min()
            out[i, slot] = (heat - heat.min()) / span if span > 0 else 0
    return out


@pytest.mark.parametrize("fix", [True, False])
def test_vebi_equals_a_slow_reference(arch: str, fix: bool) -> None:
    model, x = small(arch), seeded_images(2, b=3)
    interp, targets = fitted_interpretation(model), [0, 4, 2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = dh.explain("vebi", model, x, targets, interpretation=interp, strided_fix=fix, output="features")
        merged = dh.explain("vebi", model, x, targets, interpretation=interp, strided_fix=fix)
    want = slow_vebi(model, x, targets, interp, 3, GUIDED_STRIDED_FIX if fix else GUIDED)
    assert (want.flatten(2).amax(2) > 0).sum() >= 4  # enough non-empty feature maps to test something
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(merged, dh.maps.normalize(want.amax(1)), rtol=1e-9, atol=1e-9)


def test_the_fix_changes_alexnet_maps_and_bilinear_differs_from_nearest() -> None:
    model, x = small("alexnet"), seeded_images(3, b=2)
    interp = fitted_interpretation(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        maps = {
            (fix, mode): dh.explain("vebi", model, x, 0, interpretation=interp, strided_fix=fix, resize=mode)
            for fix, mode in [(True, "nearest"), (True, "bilinear"), (False, "nearest")]
        }
        bilinear = GUIDED.with_rules("b", conv=strided_fix("bilinear"))
        want = slow_vebi(model, x, [0, 0], interp, 3, bilinear)
    torch.testing.assert_close(maps[True, "bilinear"], dh.maps.normalize(want.amax(1)), rtol=1e-9, atol=1e-9)
    assert (maps[True, "nearest"] - maps[False, "nearest"]).abs().amax() > 0.05
    assert (maps[True, "nearest"] - maps[True, "bilinear"]).abs().amax() > 0.01


def test_feature_pick_merge_mean_and_target_column() -> None:
    model, x = small("vgg"), seeded_images(4, b=2)
    interp = fitted_interpretation(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        feats = dh.explain("vebi", model, x, 1, interpretation=interp, k=4, output="features")
        assert feats.shape == (2, 4, 112, 112)
        for f in range(4):
            torch.testing.assert_close(
                dh.explain("vebi", model, x, 1, interpretation=interp, k=4, feature=f), feats[:, f]
            )
        mean = dh.explain("vebi", model, x, 1, interpretation=interp, k=4, merge="mean")
        torch.testing.assert_close(mean, dh.maps.normalize(feats.mean(1)))
        # the target picks the column of W: swapping columns 1 and 3 swaps the explanations of classes 1 and 3
        swapped = vebi.Interpretation(**{**_fields(interp), "W": interp.W[:, [0, 3, 2, 1, 4, 5]]})
        torch.testing.assert_close(
            dh.explain("vebi", model, x, 3, interpretation=swapped),
            dh.explain("vebi", model, x, 1, interpretation=interp),
        )
    sel = vebi.select(model, x, 1, k=4, interpretation=interp)
    assert sel.index.shape == (2, 4) and (sel.response[:, :-1] >= sel.response[:, 1:]).all()
    assert all(len(sel.names(i)) == 4 for i in range(2))


def _fields(interp: vebi.Interpretation) -> dict:
    keys = ("W", "layers", "channels", "mu", "nonneg", "labels", "l2_normalize", "gap", "record")
    return {k: getattr(interp, k) for k in keys}


def test_k_beyond_the_relevant_features_is_allowed_and_said() -> None:
    model, x = small("vgg"), seeded_images(5, b=2)
    interp = fitted_interpretation(model)
    W = torch.zeros_like(interp.W)
    W[7, 0] = 1.0  # class 0: exactly one relevant feature
    one = vebi.Interpretation(**{**_fields(interp), "W": W})
    with pytest.warns(UserWarning, match=r"k=3 is more than the number of relevant features \(class 0: 1\)"):
        feats = dh.explain("vebi", model, x, 0, interpretation=one, output="features")
    assert (feats[:, 0].flatten(1).amax(1) == 1).all() and (feats[:, 1:] == 0).all()
    assert vebi.select(model, x, 0, interpretation=one).names(0) == ["{}:{}".format(*one.layout.locate(7)), "—", "—"]


def test_refit_at_another_mu_equals_fitting_there(tmp_path: object) -> None:
    model, x = small("alexnet", dtype=torch.float32), seeded_images(6, b=2, dtype=torch.float32)
    train = (seeded_images(100, b=24, dtype=torch.float32), torch.arange(24) % 6)
    kept = vebi.fit(model, train, mu=5.0, progress=False, keep_features=True)
    there = vebi.fit(model, train, mu=2.0, progress=False)
    torch.testing.assert_close(kept.at(2.0).W, there.W, rtol=0, atol=1e-5)
    assert kept.at(2.0).mu == 2.0 and kept.at(5.0) is kept and kept.at(2.0).X is kept.X
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.testing.assert_close(
            dh.explain("vebi", model, x, interpretation=kept, mu=2.0),
            dh.explain("vebi", model, x, interpretation=there),
            rtol=1e-4,
            atol=1e-4,
        )
    saved = vebi.Interpretation.load(kept.save(tmp_path / "i.pt"))  # type: ignore[operator]
    assert saved.X is None
    with pytest.raises(ValueError, match="does not hold its training features"):
        saved.at(2.0)


def test_errors_name_what_is_wrong() -> None:
    model, x = small("vgg", dtype=torch.float32), seeded_images(7, b=1, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"fit one with .*vebi.fit.*interpretation="):
        dh.explain("vebi", model, x)
    interp = fitted_interpretation(model)
    with pytest.raises(TypeError, match="must be a vebi.Interpretation"):
        dh.explain("vebi", model, x, interpretation="shipped")
    with pytest.raises(ValueError, match=r"feature=3 picks one of the k=3"):
        dh.explain("vebi", model, x, interpretation=interp, feature=3)
    with pytest.raises(ValueError, match="outside its range"):
        dh.explain("vebi", model, x, interpretation=interp, mu=0.0)
    with pytest.raises(ValueError, match="outside its range"):
        dh.explain("vebi", model, x, interpretation=interp, k=0)
    other = small("vgg", seed=1, dtype=torch.float32)
    with pytest.raises(ValueError, match="fitted on other weights"):
        dh.explain("vebi", other, x, interpretation=interp)
    alex = small("alexnet", dtype=torch.float32)
    foreign = vebi.Interpretation(**{**_fields(interp), "record": {}})
    with pytest.raises(ValueError, match="is not a layer of this model"):
        dh.explain("vebi", alex, x, interpretation=foreign)


def test_a_failing_call_leaves_no_trace() -> None:
    model = small("vgg", dtype=torch.float32).train()
    interp = fitted_interpretation(model)
    before = snapshot(model)
    with pytest.raises(ValueError):
        dh.explain("vebi", model, seeded_images(8, b=2, dtype=torch.float32), interpretation=interp, feature=5)
    after = snapshot(model)
    assert before[:4] == after[:4] and all(torch.equal(before[4][k], after[4][k]) for k in before[4])


# ---------------------------------------------------------------- shipped interpretations


@pytest.mark.parametrize("name", ["an8flower-vgg-single-6c", "an8flower-alexnet-double-12c"])
def test_shipped_models_explain_with_no_other_step(name: str) -> None:
    model = dh.models.load(name)
    interp = vebi.interpretation_of(model)
    assert interp.record["model"] == name and interp.record["converged"] and interp.mu == 5.0
    assert interp.layers == tuple(vebi.default_feature_layers(model))
    x = dh.data.rotation_sweep(model.meta["variant"], 1, [0.0], 0, 112)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        heat = dh.explain("vebi", model, x)
    assert heat.shape == (1, 112, 112) and heat.amax() == 1
    with torch.no_grad():
        model.features[0].bias[0] += 1.0  # another model now: the shipped interpretation no longer applies
    with pytest.raises(ValueError, match="fitted on other weights"):
        dh.explain("vebi", model, x)


# ---------------------------------------------------------------- the ablation


def test_ablate_zeroes_exactly_the_named_units_on_a_copy() -> None:
    model, x = small("alexnet"), seeded_images(9, b=2)
    before = snapshot(model)
    units = [("relu2", 3), ("relu2", 10), ("relu6", 5)]
    cut = dh.experiments.ablate(model, units)
    after = snapshot(model)
    assert all(torch.equal(before[4][k], after[4][k]) for k in before[4])  # the original is unchanged
    names = [n.name for n in record(model, x).nodes]
    full, ablated = record(model, x), record(cut, x)
    for layer, channels in (("relu2", [3, 10]), ("relu6", [5])):
        out = ablated.output(names.index(layer))
        assert (out[:, channels] == 0).all()
        keep = [c for c in range(out.shape[1]) if c not in channels]
    relu1 = names.index("relu1")
    torch.testing.assert_close(ablated.output(relu1), full.output(relu1))  # below the first cut: untouched
    r2 = names.index("relu2")
    keep = [c for c in range(64) if c not in (3, 10)]
    torch.testing.assert_close(ablated.output(r2)[:, keep], full.output(r2)[:, keep])
    with pytest.raises(ValueError, match="not a ReLU right after"):
        dh.experiments.ablate(model, [("pool2", 0)])
    with pytest.raises(ValueError, match="out of range"):
        dh.experiments.ablate(model, [("relu2", 64)])


def test_balanced_accuracy_is_the_mean_of_per_class_accuracies() -> None:
    model, x = small("vgg", dtype=torch.float32), seeded_images(10, b=12, dtype=torch.float32)
    pred = dh.train.predict(model, x)
    labels = pred.clone()
    labels[:3] = (pred[:3] + 1) % 6  # three wrong
    per = [(pred[labels == c] == c).float().mean().item() for c in labels.unique()]
    assert dh.experiments.balanced_accuracy(model, x, labels) == pytest.approx(sum(per) / len(per))


def test_ablation_test_zeroes_the_relevant_filters_and_random_ones_over_seeds() -> None:
    model = small("vgg", dtype=torch.float32)
    interp = fitted_interpretation(model)
    x = seeded_images(11, b=12, dtype=torch.float32)
    labels = dh.train.predict(model, x)
    before = snapshot(model)
    res = dh.experiments.ablation_test(model, x, labels, interp, seeds=3)
    assert all(torch.equal(before[4][k], snapshot(model)[4][k]) for k in before[4])
    relevant = (interp.W != 0).any(1).nonzero()[:, 0].tolist()
    conv = [n for n in relevant if not interp.layout.locate(n)[0].startswith("relu6")]
    conv = [n for n in conv if not interp.layout.locate(n)[0].startswith("relu7")]
    assert res["all"].n == len(relevant) and res["conv"].n == len(conv)
    assert res["all"].baseline == 1.0  # labels are the model's own predictions
    by_hand = 1.0 - dh.experiments.balanced_accuracy(
        dh.experiments.ablate(model, [interp.layout.locate(n) for n in relevant]), x, labels
    )
    assert res["all"].relevant == pytest.approx(by_hand)
    assert res["all"].random.shape == (3,) and res["all"].random_std >= 0
    with pytest.raises(ValueError, match="scope must be"):
        dh.experiments.ablation_test(model, x, labels, interp, seeds=1, scopes=("fc",))


# ---------------------------------------------------------------- μ path, activations, the grid measure, figures


def test_stride_grid_on_planted_patterns() -> None:
    tile = torch.tensor([[1.0, 0.0], [0.0, 0.0]]).repeat(20, 20)  # 40×40, period 2: phase means 1, 0, 0, 0
    ramp = torch.linspace(0, 1, 40).expand(40, 40)
    maps = torch.stack([tile, torch.full((40, 40), 0.3), ramp, torch.zeros(40, 40)])
    g = dh.experiments.stride_grid(maps, stride=2, border=4)
    # std of (1, 0, 0, 0) = 0.5 (unbiased), mean magnitude 0.25
    assert g[0].item() == pytest.approx(2.0) and g[1].item() == 0.0
    assert 0 < g[2].item() < 0.05 and torch.isnan(g[3])
    with pytest.raises(ValueError, match="stride >= 2"):
        dh.experiments.stride_grid(maps, stride=1)


def test_mu_path_solves_each_mu() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(20, 60, generator=g, dtype=torch.float64) ** 3
    lab = nn.functional.one_hot(torch.arange(60) % 3, 3).T.double()
    path = vebi.mu_path(x, lab, [2.0, 0.5, 1.0])
    assert path.mus.tolist() == [0.5, 1.0, 2.0]
    for i, mu in enumerate(path.mus.tolist()):
        ref = vebi.mu_lasso(x, lab, mu)
        torch.testing.assert_close(path.objective[i], ref.objective, rtol=1e-6, atol=1e-9)
        assert path.accuracy[i] == ((x.T @ ref.W).argmax(1) == lab.argmax(0)).double().mean()
        assert 0 <= path.gap[i] < 1e-6  # converged (warm starts stop at another point below the tolerance)
    assert (vebi.mu_path(x, lab, [0.5, 2.0], max_iter=2).gap > 1e-6).any()  # a stopped solve says so
    assert path.relevant.shape == (3, 3) and (path.relevant > 0).all()


def test_feature_activations_are_the_upsampled_channel_maps() -> None:
    model, x = small("vgg"), seeded_images(12, b=2)
    interp = fitted_interpretation(model)
    layout = interp.layout
    conv, fc = layout.index("relu3_1", 5), layout.index("relu6", 7)
    sel = vebi.Selection(
        torch.tensor([[conv, fc], [conv, conv]]),
        torch.ones(2, 2),
        torch.tensor([[True, True], [True, False]]),
        torch.zeros(2, dtype=torch.long),
        layout,
    )
    out = vebi.feature_activations(model, x, sel)
    trace = record(model, x)
    acts = trace.output([n.name for n in trace.nodes].index("relu3_1"))[:, 5]
    up = nn.functional.interpolate(acts[:, None], size=(112, 112), mode="bilinear", align_corners=False)[:, 0]
    want = (up - up.amin((1, 2), keepdim=True)) / (up.amax((1, 2), keepdim=True) - up.amin((1, 2), keepdim=True))
    torch.testing.assert_close(out[0, 0], want[0])
    torch.testing.assert_close(out[1, 0], want[1])
    assert (out[0, 1] == 0).all() and (out[1, 1] == 0).all()  # a fully connected feature; an empty slot


def test_mu_path_and_ablation_figures_show_the_numbers() -> None:
    import matplotlib.pyplot as plt

    path = vebi.MuPath(
        torch.tensor([1.0, 5.0]), torch.tensor([[1, 2], [3, 4]]), torch.ones(2, 2), torch.tensor([0.5, 1.0])
    )
    fig = dh.viz.mu_path(path, ["a", "b"], mark=5.0)
    lines = fig.axes[0].get_lines()
    assert [list(line.get_ydata()) for line in lines[:2]] == [[1, 3], [2, 4]]
    assert list(fig.axes[2].get_lines()[0].get_ydata()) == [50.0, 100.0]
    assert lines[0].get_color() != lines[1].get_color()
    plt.close(fig)
    fig = dh.viz.mu_path(path, ["red", "blue"])  # classes named by colours are drawn in them
    assert [line.get_color() for line in fig.axes[0].get_lines()[:2]] == ["red", "blue"]
    plt.close(fig)
    ab = dh.experiments.Ablation("all", 4, 1.0, 0.3, torch.tensor([0.01, 0.03]))
    fig = dh.viz.ablation_bars({"vgg": {"all": ab}})
    heights = sorted(round(p.get_height(), 6) for p in fig.axes[0].patches)
    assert heights == [2.0, 30.0]
    dots = [line for line in fig.axes[0].get_lines() if line.get_marker() == "o"]
    assert [round(v, 6) for v in dots[0].get_ydata()] == [1.0, 3.0]  # every random draw is shown
    assert "vgg\nall (4 filters)" in [t.get_text() for t in fig.axes[0].get_xticklabels()]
    plt.close(fig)
