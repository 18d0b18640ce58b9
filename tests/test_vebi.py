"""Oramas et al.'s interpretation stage: features against a slow loop, the μ-lasso against SPAMS and
scikit-learn, its KKT conditions, and the L1-ball projection against an independent bisection."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import dvehelpers as dh
from dvehelpers.methods import vebi

from .conftest import seeded_images, small

# ---------------------------------------------------------------- the L1-ball projection


def bisection_projection(v: np.ndarray, mu: float, nonneg: bool) -> np.ndarray:
    """The projection by bisection on θ (Σ max(|v| − θ, 0) = μ), one column at a time: no sorting."""
    a = np.clip(v, 0, None) if nonneg else np.abs(v)
    if a.sum() <= mu:
        return a if nonneg else v.copy()
    lo, hi = 0.0, float(a.max())
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.clip(a - mid, 0, None).sum() > mu else (lo, mid)
    shrunk = np.clip(a - (lo + hi) / 2, 0, None)
    return shrunk if nonneg else np.sign(v) * shrunk


@pytest.mark.parametrize("nonneg", [False, True])
@pytest.mark.parametrize("mu", [0.3, 2.0, 50.0])
def test_projection_equals_a_bisection_reference(mu: float, nonneg: bool) -> None:
    """Every column of a random matrix, inside and outside the ball, with ties and zeros."""
    g = torch.Generator().manual_seed(1)
    v = torch.randn(40, 7, generator=g, dtype=torch.float64) * 3
    v[:5, 0] = 1.5  # ties
    v[:, 1] = 0.0  # a zero column
    got = vebi.project_l1(v, mu, nonneg)
    ref = np.stack([bisection_projection(v[:, j].numpy(), mu, nonneg) for j in range(v.shape[1])], 1)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-12)
    assert (got.abs().sum(0) <= mu + 1e-12).all()
    if nonneg:
        assert (got >= 0).all()


def test_projection_is_the_closest_point_of_the_ball() -> None:
    """No random point of the ball is closer to v than its projection."""
    g = torch.Generator().manual_seed(2)
    v = torch.randn(6, 1, generator=g, dtype=torch.float64) * 2
    p = vebi.project_l1(v, 1.0)
    others = vebi.project_l1(torch.randn(6, 5000, generator=g, dtype=torch.float64), 1.0)
    assert (v - p).norm() <= (v - others).norm(dim=0).min() + 1e-12


# ---------------------------------------------------------------- μ-lasso


def problem(m: int = 30, n: int = 120, c: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random non-negative, L2-normalised features (like vebi.features) and one-hot labels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(m, n, generator=g, dtype=torch.float64) ** 3
    x = x / x.norm(dim=0, keepdim=True)
    y = torch.arange(n) % c
    return x, nn.functional.one_hot(y, c).T.double()


def spams_objective(x: torch.Tensor, lab: torch.Tensor, mu: float, nonneg: bool) -> np.ndarray:
    """SPAMS `lasso` mode 0 (min ‖x − Dα‖² s.t. ‖α‖₁ ≤ λ, its LARS), one class at a time: the objective per class."""
    import spams  # spams-bin, in the dev extra

    d, s = np.asfortranarray(x.T.numpy()), np.asfortranarray(lab.T.numpy())
    alpha = spams.lasso(s, D=d, lambda1=mu, mode=0, pos=nonneg, numThreads=1).toarray()
    return ((d @ alpha - s) ** 2).sum(0)


@pytest.mark.parametrize("solver", ["homotopy", "fista"])
@pytest.mark.parametrize("nonneg", [False, True])
@pytest.mark.parametrize("mu", [0.5, 3.0])
def test_mu_lasso_reaches_the_spams_objective(mu: float, nonneg: bool, solver: str) -> None:
    """Both solvers reach SPAMS's objective: the homotopy to 1e-10 relative (it is exact), FISTA to 1e-6."""
    x, lab = problem()
    res = vebi.mu_lasso(x, lab, mu, nonneg=nonneg, solver=solver)
    assert res.converged and res.solver == solver
    rtol = 1e-10 if solver == "homotopy" else 1e-6
    np.testing.assert_allclose(res.objective.numpy(), spams_objective(x, lab, mu, nonneg), rtol=rtol)
    torch.testing.assert_close(res.objective, vebi.lasso_objective(x, lab, res.W))


@pytest.mark.parametrize("nonneg", [False, True])
def test_homotopy_equals_spams_on_the_shipped_feature_shape(nonneg: bool) -> None:
    """The VGG single-6c feature matrix's shape (m = 1200 features, N = 1500 images, 6 classes; seeded, sparse,
    non-negative and L2-normalised like vebi.features), μ = 5: the objective equals SPAMS's to 1e-8 relative, and
    every class either has ‖w_j‖₁ = μ (the constraint active) or is the unconstrained optimum (gradient 0)."""
    x, lab = problem(m=1200, n=1500, c=6, seed=11)
    res = vebi.mu_lasso(x, lab, 5.0, nonneg=nonneg)
    np.testing.assert_allclose(res.objective.numpy(), spams_objective(x, lab, 5.0, nonneg), rtol=1e-8)
    grad = 2 * (x @ (x.T @ res.W - lab.T))
    for j in range(lab.shape[0]):
        l1 = float(res.W[:, j].abs().sum())
        optimum = float(grad[:, j].clamp(max=0).abs().max() if nonneg else grad[:, j].abs().max()) < 1e-9
        assert abs(l1 - 5.0) < 1e-9 or (l1 < 5.0 and optimum)
    assert min(res.breakpoints) > 0 and len(res.breakpoints) == 6


def test_homotopy_follows_a_feature_that_leaves_and_comes_back_with_the_other_sign() -> None:
    """Signed features (seed 37, μ = 15): on this path a feature leaves the active set at c_j = +λ and, within the
    next segment, reaches −λ. Treating the leaving feature's γ = 0 root as no root at all (not only that root)
    missed the crossing and stopped with a duality gap of 0.19 (the optimum: 0); the objective must be SPAMS's."""
    g = torch.Generator().manual_seed(37)
    x = torch.randn(60, 200, generator=g, dtype=torch.float64)
    x = x / x.norm(dim=0, keepdim=True)
    lab = nn.functional.one_hot(torch.arange(200) % 4, 4).T.double()
    res = vebi.mu_lasso(x, lab, 15.0)
    assert res.converged and (res.gap <= 1e-12 * res.objective).all()
    np.testing.assert_allclose(res.objective.numpy(), spams_objective(x, lab, 15.0, False), rtol=1e-10)


@pytest.mark.parametrize("nonneg", [False, True])
def test_homotopy_reaches_the_optimum_on_many_signed_problems(nonneg: bool) -> None:
    """Twenty seeded problems with signed features (where features leave and re-enter the active set often), three
    radii each, one path per problem: every class's duality gap is at rounding level (a certificate of optimality
    that needs no reference solver)."""
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(40, 150, generator=g, dtype=torch.float64)
        x = x / x.norm(dim=0, keepdim=True)
        lab = nn.functional.one_hot(torch.arange(150) % 3, 3).T.double()
        for res in vebi.lasso_path(x, lab, [2.0, 6.0, 15.0], nonneg=nonneg):
            assert (res.gap <= 1e-11 * res.objective.clamp(min=1)).all(), (seed, res.gap)


@pytest.mark.parametrize("nonneg", [False, True])
def test_homotopy_on_duplicated_and_dependent_features(nonneg: bool) -> None:
    """Each class's first feature duplicated, and a feature that is the mean of two others: G_AA would be singular
    with both twins active. A duplicate moves with its twin (its a_j is its twin's sign), so it never reaches ±λ
    first and stays out: at most one of each pair is non-zero, the duality gap is at rounding level, and the
    objective equals FISTA's (W itself is not unique). SPAMS 2.6 is no oracle here: on this dictionary it returns
    w = 0 for every class."""
    x, lab = problem(m=30, n=120, c=4, seed=3)
    first = (x @ lab.T).argmax(0)
    x = torch.cat([x, x[first], (x[first[0]] + x[first[1]])[None] / 2])
    res = vebi.mu_lasso(x, lab, 2.0, nonneg=nonneg)
    assert res.converged and torch.isfinite(res.W).all()
    for j, f in enumerate(first.tolist()):
        assert (res.W[[f, 30 + j], j] != 0).sum() <= 1
    assert (res.gap <= 1e-11 * res.objective).all()
    ref = vebi.mu_lasso(x, lab, 2.0, nonneg=nonneg, solver="fista", tol=1e-14, max_iter=200000)
    np.testing.assert_allclose(res.objective.numpy(), ref.objective.numpy(), rtol=1e-8)


@pytest.mark.parametrize("nonneg", [False, True])
def test_homotopy_equals_fista_along_a_mu_path(nonneg: bool) -> None:
    """One homotopy read at several μ (unsorted) equals FISTA solved to a tight gap at each μ: W to 1e-6 and the
    objective to 1e-8 relative; the path's results come back in the order the μs were given."""
    x, lab = problem(m=40, n=160, c=3, seed=12)
    mus = [4.0, 0.3, 1.5]
    path = vebi.lasso_path(x, lab, mus, nonneg=nonneg)
    for mu, res in zip(mus, path, strict=True):
        ref = vebi.mu_lasso(x, lab, mu, nonneg=nonneg, solver="fista", tol=1e-14, max_iter=200000)
        torch.testing.assert_close(res.W, ref.W, atol=1e-6, rtol=0)
        np.testing.assert_allclose(res.objective.numpy(), ref.objective.numpy(), rtol=1e-8)
        assert res.converged
    with pytest.raises(ValueError, match="solver must be one of 'homotopy', 'fista'"):
        vebi.mu_lasso(x, lab, 1.0, solver="lars")


def test_mu_lasso_equals_scikit_learn_on_the_penalised_path() -> None:
    """scikit-learn's Lasso (penalised form) gives w_α; with μ = ‖w_α‖₁ the constrained problem has the same
    solution (full column rank: unique), so W must equal it."""
    from sklearn.linear_model import Lasso

    x, lab = problem(m=12, n=80, c=3, seed=3)
    for alpha in (1e-3, 1e-2):
        for j in range(lab.shape[0]):
            sk = Lasso(alpha=alpha, fit_intercept=False, tol=1e-14, max_iter=200000).fit(x.T.numpy(), lab[j].numpy())
            mu = float(np.abs(sk.coef_).sum())
            res = vebi.mu_lasso(x, lab[j : j + 1], mu, tol=1e-13, max_iter=200000)
            np.testing.assert_allclose(res.W[:, 0].numpy(), sk.coef_, atol=2e-6)


@pytest.mark.parametrize("solver", ["homotopy", "fista"])
@pytest.mark.parametrize("nonneg", [False, True])
def test_mu_lasso_satisfies_the_kkt_conditions(nonneg: bool, solver: str) -> None:
    """At the solution: where w ≠ 0 the gradient is −λ·sign(w) for one λ ≥ 0 per class (λ·1 for nonneg, on
    the support), elsewhere |∇| ≤ λ (∇ ≥ −λ for nonneg); λ > 0 only when the L1 constraint is active."""
    x, lab = problem(seed=4)
    mu = 1.5
    res = vebi.mu_lasso(x, lab, mu, nonneg=nonneg, tol=1e-12, max_iter=100000, solver=solver)
    grad = 2 * (x @ (x.T @ res.W - lab.T))
    for j in range(lab.shape[0]):
        w, gj = res.W[:, j], grad[:, j]
        support = w.abs() > 1e-10
        lam = float((-gj[support] * torch.sign(w[support])).mean())
        assert lam >= 0
        torch.testing.assert_close(
            -gj[support] * torch.sign(w[support]), torch.full_like(gj[support], lam), atol=1e-5, rtol=0
        )
        if nonneg:
            assert (gj[~support] >= -lam - 1e-5).all()
        else:
            assert (gj[~support].abs() <= lam + 1e-5).all()
        assert abs(float(w.abs().sum()) - mu) < 1e-8  # active at this μ
    assert (res.gap <= 1e-10 * res.objective.clamp(min=1)).all()


def test_large_mu_is_least_squares() -> None:
    """With μ above ‖w_LS‖₁ the constraint is inactive: W is the least-squares solution."""
    x, lab = problem(m=10, n=60, c=3, seed=5)
    ls = torch.linalg.lstsq(x.T, lab.T).solution
    res = vebi.mu_lasso(x, lab, float(ls.abs().sum(0).max()) * 2, tol=1e-13, max_iter=200000)
    torch.testing.assert_close(res.W, ls, atol=1e-6, rtol=0)


def test_all_classes_at_once_equal_one_at_a_time_and_warm_starts_agree() -> None:
    """The batched solve is C independent problems; a warm start from another μ reaches the same solution."""
    x, lab = problem(seed=6)
    together = vebi.mu_lasso(x, lab, 2.0, tol=1e-12)
    alone = torch.cat([vebi.mu_lasso(x, lab[j : j + 1], 2.0, tol=1e-12).W for j in range(lab.shape[0])], 1)
    torch.testing.assert_close(together.W, alone, atol=1e-7, rtol=0)
    warm = vebi.mu_lasso(x, lab, 2.0, W0=vebi.mu_lasso(x, lab, 1.0).W, tol=1e-12, solver="fista")
    torch.testing.assert_close(warm.W, together.W, atol=1e-7, rtol=0)


def test_mu_lasso_keeps_dtype_and_device_and_rejects_bad_input() -> None:
    """float32 in, float32 out; μ ≤ 0, mismatched shapes and non-finite data are named."""
    x, lab = problem()
    assert vebi.mu_lasso(x.float(), lab.float(), 1.0).W.dtype == torch.float32
    with pytest.raises(ValueError, match="positive"):
        vebi.mu_lasso(x, lab, 0.0)
    with pytest.raises(ValueError, match="m×N"):
        vebi.mu_lasso(x, lab[:, :-1], 1.0)
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        vebi.mu_lasso(bad, lab, 1.0)
    with pytest.raises(ValueError, match="positive"):
        vebi.project_l1(x, -1.0)


# ---------------------------------------------------------------- features


def slow_features(model: nn.Module, images: torch.Tensor, layers: list[str], l2: bool) -> torch.Tensor:
    """Image by image, layer by layer, channel by channel, with explicit sums, from the model's own forward pass
    (forward hooks on its ReLU modules, removed after)."""
    nodes = dh.engine.capture(model).nodes
    modules = {name: model.get_submodule(nodes[dh.models.resolve_layer(model, name)].path) for name in layers}
    rows = []
    for b in range(images.shape[0]):
        seen: dict[str, torch.Tensor] = {}
        hooks = [
            m.register_forward_hook(
                lambda _m, _i, out, name=name, seen=seen: seen.__setitem__(name, out.detach().clone())
            )
            for name, m in modules.items()
        ]
        try:
            with torch.no_grad():
                model(images[b : b + 1])
        finally:
            for h in hooks:
                h.remove()
        parts = []
        for name in layers:
            acts = seen[name][0]
            energy = torch.stack([acts[c].square().sum() for c in range(acts.shape[0])])
            parts.append(energy / energy.sum() if energy.sum() > 0 else energy)
        row = torch.cat(parts)
        rows.append(row / row.norm() if l2 and row.norm() > 0 else row)
    return torch.stack(rows)


@pytest.mark.parametrize("l2", [True, False])
def test_features_equal_a_slow_loop(arch: str, l2: bool) -> None:
    """Squared L2 energy per channel, L1 over each layer, concatenated, optionally L2 over the whole."""
    model, x = small(arch), seeded_images(0, b=3)
    layers = vebi.default_feature_layers(model)
    torch.testing.assert_close(
        vebi.features(model, x, l2_normalize=l2, batch_size=2), slow_features(model, x, layers, l2)
    )


def test_default_layers_and_layout() -> None:
    """Every ReLU up to the last hidden FC layer; indices map back to (layer, channel) and forth."""
    model = small("vgg")
    layers = vebi.default_feature_layers(model)
    names = dh.models.layer_names(model)
    assert layers == [n for n in names if n.startswith("relu")]  # fc relus included, the output layer has none
    assert vebi.default_feature_layers(model, conv_only=True) == [n for n in layers if n not in ("relu6", "relu7")]
    alex = small("alexnet")
    assert vebi.default_feature_layers(alex, conv_only=True) == [f"relu{i}" for i in range(1, 6)]
    layout = vebi.feature_layout(model)
    assert layout.size == vebi.features(model, seeded_images(1, b=1)).shape[1]
    for i in (0, 17, layout.size - 1):
        assert layout.index(*layout.locate(i)) == i
    last, n_last = layout.layers[-1], layout.channels[-1]
    assert layout.locate(layout.size - 1) == (last, n_last - 1)
    with pytest.raises(IndexError, match="out of range"):
        layout.locate(layout.size)
    with pytest.raises(ValueError, match="valid"):
        layout.index("pool1", 0)


def test_features_from_a_dataloader_equal_the_tensor_path() -> None:
    """A DataLoader of (image, label, mask) tuples gives the same rows as the tensor."""
    model = small("alexnet")
    x = seeded_images(2, b=5)
    ds = torch.utils.data.TensorDataset(x, torch.zeros(5), torch.zeros(5))
    loader = torch.utils.data.DataLoader(ds, batch_size=2)
    torch.testing.assert_close(vebi.features(model, loader), vebi.features(model, x))


# ---------------------------------------------------------------- the interpretation


def test_fit_is_features_then_the_mu_lasso(tmp_path: object) -> None:
    """fit = features of every image, one-hot labels (ground truth or predicted), mu_lasso; saved and loaded
    back with weights_only, equal; relevant features are the non-zeros of w_j, strongest first."""
    model = small("alexnet", dtype=torch.float32)
    x = seeded_images(5, b=12, dtype=torch.float32)
    y = torch.arange(12) % 6
    interp = vebi.fit(model, (x, y), mu=0.8, progress=False, record={"model": "test"})
    feats = vebi.features(model, x)
    ref = vebi.mu_lasso(feats.T, nn.functional.one_hot(y, 6).T.float(), 0.8)
    torch.testing.assert_close(interp.W, ref.W)
    assert interp.layout.size == interp.W.shape[0] and interp.record["model"] == "test"
    predicted = vebi.fit(model, (x, y), mu=0.8, labels="predicted", progress=False)
    top1 = dh.train.predict(model, x)
    ref_pred = vebi.mu_lasso(feats.T, nn.functional.one_hot(top1, 6).T.float(), 0.8)
    torch.testing.assert_close(predicted.W, ref_pred.W)
    for j in range(6):
        rel = interp.relevant(j)
        assert set(rel.tolist()) == set(interp.W[:, j].nonzero()[:, 0].tolist())
        assert (interp.W[rel, j].abs().diff() <= 0).all()
    path = interp.save(tmp_path / "i.pt")  # type: ignore[operator]
    back = vebi.Interpretation.load(path)
    torch.testing.assert_close(back.W, interp.W)
    assert (back.layers, back.channels, back.mu, back.labels) == (interp.layers, interp.channels, 0.8, "ground_truth")


def test_classes_without_training_images_get_no_features_and_the_others_the_full_solution() -> None:
    """A training set of two of six classes (an ImageNet model fitted on a folder of a few classes): the absent
    classes' w_j = 0 with gap 0, and the present ones equal the μ-lasso solved over all six one-hot rows."""
    model = small("alexnet", dtype=torch.float32)
    x = seeded_images(7, b=8, dtype=torch.float32)
    y = torch.tensor([1, 4] * 4)
    interp = vebi.fit(model, (x, y), mu=0.8, progress=False)
    ref = vebi.mu_lasso(vebi.features(model, x).T, nn.functional.one_hot(y, 6).T.float(), 0.8)
    torch.testing.assert_close(interp.W, ref.W)
    absent = [0, 2, 3, 5]
    assert (interp.W[:, absent] == 0).all() and (interp.gap[absent] == 0).all()
    assert (interp.W[:, [1, 4]] != 0).any(0).all()


def test_interpretation_files_are_checked(tmp_path: object) -> None:
    """A corrupt file, a foreign dict and an unsafe pickle are refused with a clear error."""
    bad = tmp_path / "bad.pt"  # type: ignore[operator]
    bad.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="corrupt"):
        vebi.Interpretation.load(bad)
    torch.save({"W": torch.zeros(2, 2)}, bad)
    with pytest.raises(ValueError, match="not an interpretation"):
        vebi.Interpretation.load(bad)
    torch.save({"evil": object()}, bad)
    with pytest.raises(ValueError, match="weights-only"):
        vebi.Interpretation.load(bad)


def test_fit_rejects_bad_options() -> None:
    """An unknown labels option and μ ≤ 0 are named."""
    model, x = small("alexnet", dtype=torch.float32), seeded_images(0, b=2, dtype=torch.float32)
    with pytest.raises(ValueError, match="'ground_truth', 'predicted'"):
        vebi.fit(model, (x, torch.tensor([0, 1])), labels="truth", progress=False)
    with pytest.raises(ValueError, match="positive"):
        vebi.fit(model, (x, torch.tensor([0, 1])), mu=0, progress=False)


# ---------------------------------------------------------------- average images


def planted() -> tuple[nn.Sequential, torch.Tensor]:
    """A 3×3 box-filter conv whose channel 0 sums the input and channel 1 is a constant 1 (so channel 0's share
    of the energy grows with brightness), ReLU and a 2×2 pool (receptive field 4×4, jump 2, start −1); images
    are black with one bright 2×2 square each, of growing brightness, at varied places."""
    conv = nn.Conv2d(3, 2, 3, padding=1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0] = 1.0
        conv.bias.copy_(torch.tensor([0.0, 1.0]))
    model = nn.Sequential(conv, nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2 * 16 * 16, 3)).eval()
    images = torch.zeros(6, 3, 32, 32)
    for n, (r, c) in enumerate([(2, 3), (20, 8), (11, 24), (26, 27), (5, 14), (14, 2)]):
        images[n, :, r : r + 2, c : c + 2] = 0.3 + 0.1 * n
    return model, images


def test_average_image_ranks_by_response_and_crops_the_planted_squares() -> None:
    """The top images are those of largest response; each crop is the 4×4 window [2u − 1, 2u + 3) of the strongest
    pool unit u, which holds the whole square; the mean is the mean of those crops resized."""
    model, images = planted()
    avg = vebi.average_image(model, images, "pool1", 0, top=3, size=8, batch_size=4)
    share = vebi.features(model, images, ["pool1"], l2_normalize=False)[:, 0]  # channel 0's share at pool1
    assert avg.top.tolist() == share.argsort(descending=True)[:3].tolist()
    assert len(set(share.tolist())) == len(share)  # no ties: the ranking is defined
    pooled = model[:3](images)[:, 0]
    crops = []
    for n, box in zip(avg.top.tolist(), avg.boxes, strict=True):
        u, v = divmod(int(pooled[n].flatten().argmax()), pooled.shape[-1])
        assert box == (max(2 * u - 1, 0), max(2 * v - 1, 0), min(2 * u + 3, 32), min(2 * v + 3, 32))
        top, left, bottom, right = box
        assert images[n, 0, top:bottom, left:right].sum() == images[n, 0].sum()  # the whole square is in the crop
        crops.append(F_interp(images[n : n + 1, :, top:bottom, left:right], 8))
    torch.testing.assert_close(avg.mean, torch.cat(crops).mean(0))


def test_average_image_of_a_fully_connected_feature_is_the_whole_image() -> None:
    """An FC unit has no position: the crops are whole images; a bad channel is named."""
    model = small("alexnet", dtype=torch.float32)
    x = seeded_images(7, b=4, dtype=torch.float32)
    avg = vebi.average_image(model, x, "relu6", 3, top=2, size=16)
    assert avg.boxes == [(0, 0, 112, 112)] * 2
    expected = F_interp(x[avg.top], 16).mean(0)
    torch.testing.assert_close(avg.mean, expected)
    with pytest.raises(ValueError, match="out of range"):
        vebi.average_image(model, x, "relu6", 10**6)


def F_interp(x: torch.Tensor, size: int) -> torch.Tensor:
    return nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def test_step_size_is_the_largest_eigenvalue_of_the_gram_matrix() -> None:
    from dvehelpers.methods.lasso import _largest_eigenvalue

    g = torch.Generator().manual_seed(4)
    for x in (
        torch.rand(40, 70, generator=g, dtype=torch.float64),
        torch.randn(25, 10, generator=g, dtype=torch.float64),
    ):
        gram = x @ x.T
        top = torch.linalg.eigvalsh(gram)[-1]
        got = _largest_eigenvalue(lambda v, gram=gram: gram @ v, x.shape[0], x)
        assert float(got) == pytest.approx(1.02 * float(top), rel=1e-6)
