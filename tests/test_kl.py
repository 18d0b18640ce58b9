"""KL-divergence DVE: eqs. 1–3 against autograd and hand computations, the perplexity search, the readings."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch

import dvehelpers as dh
from dvehelpers.methods import kl

from .conftest import seeded_images, small, split_at


def test_q_is_eq1() -> None:
    k = torch.tensor([[0.0, 1.0, 3.0]], dtype=torch.float64)
    q = kl.student_t_q(k)[0]
    w = {(0, 1): 1 / 2, (0, 2): 1 / 10, (1, 2): 1 / 5}  # (1 + (k_i − k_j)²)⁻¹
    total = 2 * sum(w.values())
    for (i, j), v in w.items():
        assert q[i, j] == pytest.approx(v / total) and q[j, i] == pytest.approx(v / total)
    assert torch.equal(q.diagonal(), torch.zeros(3, dtype=torch.float64))


def test_closed_form_z_equals_autograd_of_kl() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 9, generator=g, dtype=torch.float64) * 3
    gt = torch.rand(3, 9, generator=g, dtype=torch.float64)
    p, _ = kl.tsne_p(gt, 4.0)
    k = logits.clone().requires_grad_(True)
    q = kl.student_t_q(k)
    off = ~torch.eye(9, dtype=torch.bool)
    loss = (p[:, off] * (p[:, off] / q[:, off]).log()).sum()
    (ref,) = torch.autograd.grad(loss, k)
    torch.testing.assert_close(kl.kl_gradient(p, logits), ref, rtol=1e-10, atol=1e-12)  # the constant is 1


def test_p_rows_reach_a_reachable_perplexity() -> None:
    g = torch.rand(2, 40, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    p, search = kl.tsne_p(g, 10.0)
    assert search.converged.all() and search.iterations < kl.BISECTION_CAP
    torch.testing.assert_close(search.perplexity, torch.full((2, 40), 10.0, dtype=torch.float64), rtol=1e-4, atol=0)
    # each conditional row's perplexity, recomputed from scratch in float64
    d = (g[0, 5] - g[0]).square()
    pc = torch.exp(-search.beta[0, 5] * d)
    pc[5] = 0
    pc = pc / pc.sum()
    h = -(pc[pc > 0] * pc[pc > 0].log()).sum()
    assert math.exp(h) == pytest.approx(10.0, rel=1e-4)
    torch.testing.assert_close(p, p.transpose(1, 2))
    torch.testing.assert_close(p.sum((1, 2)), torch.ones(2, dtype=torch.float64))


def test_one_hot_target_with_1000_classes_stops_at_the_cap_and_says_so() -> None:
    g = torch.zeros(1, 1000, dtype=torch.float64)
    g[0, 7] = 1
    p, search = kl.tsne_p(g, 30.0)
    assert not search.converged.any()
    assert (search.beta == 2.0**kl.BISECTION_CAP).all()  # where the capped doubling ends
    assert (search.perplexity >= 998 - 1e-6).all()  # what a one-hot vector allows
    assert torch.isfinite(p).all()
    # at β = 2⁵⁰ the rows must still be exact distributions, in float64 and float32 alike
    for dtype in (torch.float64, torch.float32):
        p, _ = kl.tsne_p(g.to(dtype), 30.0)
        torch.testing.assert_close(p.sum((1, 2)), torch.ones(1, dtype=dtype))
        row = p[0, 0] * 2000  # (p_{j|0} + p_{0|j}) for j ≠ 0, 7: 2 / 998
        torch.testing.assert_close(row[1], torch.tensor(2 / 998, dtype=dtype))
    model = small("vgg", num_classes=1000, dtype=torch.float32)
    with pytest.warns(UserWarning, match="perplexity 30.0 is unreachable for 1000 of 1000 rows"):
        dh.explain("kl_dve", model, seeded_images(0, b=1, dtype=torch.float32), perplexity=30.0)
    small6 = small("vgg", dtype=torch.float32)
    with warnings.catch_warnings():  # the default (K/2) is unreachable by design and documented: no warning
        warnings.simplefilter("error")
        dh.explain("kl_dve", small6, seeded_images(0, b=1, dtype=torch.float32))


def test_capped_bisection_matches_a_plain_loop() -> None:
    # the reference algorithm written out for one row, no shortcuts: start at 1, double/halve, bisect
    g = torch.tensor([[0.0, 0.2, 0.25, 0.9, 1.0, 0.4]], dtype=torch.float64)
    for perp in (2.0, 4.9, 1.0):
        _, search = kl.tsne_p(g, perp)
        for i in range(6):
            d = [(float(g[0, i]) - float(g[0, j])) ** 2 for j in range(6) if j != i]
            beta, lo, hi = 1.0, -math.inf, math.inf
            for _ in range(kl.BISECTION_CAP):
                w = [math.exp(-beta * x) for x in d]
                s = sum(w)
                h = -sum(v / s * math.log(v / s) for v in w if v > 0)
                if abs(h - math.log(perp)) < 1e-5:
                    break
                if h > math.log(perp):
                    lo, beta = beta, beta * 2 if hi == math.inf else (beta + hi) / 2
                else:
                    hi, beta = beta, beta / 2 if lo == -math.inf else (beta + lo) / 2
            assert float(search.beta[0, i]) == pytest.approx(beta, rel=1e-6), (perp, i)


def test_literal_reading_is_the_normalised_channel_sum_for_every_class() -> None:
    model, x = small("alexnet", dtype=torch.float64), seeded_images(2, b=2)
    index = dh.models.resolve_layer(model, "pool5")
    acts = dh.engine.record(model, x, upto=index).output(index)
    expected = dh.maps.normalize(dh.maps.upsample(acts.sum(1), x.shape[-2:]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for c in range(6):
            torch.testing.assert_close(dh.explain("kl_dve", model, x, c), expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("reading", ["gradient", "elementwise"])
def test_class_specific_readings_differ_between_targets(reading: str) -> None:
    model, x = small("vgg", dtype=torch.float64), seeded_images(3, b=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        maps = torch.stack([dh.explain("kl_dve", model, x, c, reading=reading, layer="relu5_2")[0] for c in range(6)])
    assert (maps[1:] - maps[0]).abs().amax() > 1e-2


def test_gradient_reading_equals_autograd_of_the_kl_loss() -> None:
    model, x = small("vgg", dtype=torch.float64), seeded_images(4, b=2)
    index = dh.models.resolve_layer(model, "relu5_2")
    body, head = split_at(model, index)
    a = body(x).detach().requires_grad_(True)
    logits = head(a)
    targets = logits.argmax(1)
    inter = kl.kl_intermediates(logits.detach(), targets)
    q = kl.student_t_q(logits)
    off = ~torch.eye(6, dtype=torch.bool)
    loss = (inter.P[:, off] * (inter.P[:, off] / q[:, off]).log()).sum()
    (z,) = torch.autograd.grad(loss, a)
    z = (z - z.mean((1, 2, 3), keepdim=True)) / z.std((1, 2, 3), unbiased=False, keepdim=True)
    ref = (z.abs().mean((2, 3))[:, :, None, None] * a.detach()).sum(1)
    ref = dh.maps.normalize(dh.maps.upsample(ref, x.shape[-2:]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = dh.explain("kl_dve", model, x, layer="relu5_2", reading="gradient")
    torch.testing.assert_close(got, ref, rtol=1e-8, atol=1e-10)


def test_bad_parameters_are_named() -> None:
    model, x = small("vgg", dtype=torch.float32), seeded_images(0, b=1, dtype=torch.float32)
    with pytest.raises(ValueError, match="'reading' got 'exact'; valid: 'literal', 'gradient', 'elementwise'"):
        dh.explain("kl_dve", model, x, reading="exact")
    with pytest.raises(ValueError, match=r"perplexity must be in \(0, K\) = \(0, 6\)"):
        dh.explain("kl_dve", model, x, perplexity=6.0)
    with pytest.raises(ValueError, match="outside its range"):
        dh.explain("kl_dve", model, x, perplexity=0.0)
    with pytest.raises(ValueError, match="unknown layer 'pool9'"):
        dh.explain("kl_dve", model, x, layer="pool9")
    with pytest.raises(ValueError, match="needs a layer with spatial maps"):
        dh.explain("kl_dve", model, x, layer="fc7")


def test_row_perplexity_spans_what_a_one_hot_row_allows() -> None:
    g = torch.zeros(10, dtype=torch.float64)
    g[3] = 1
    perp = kl.row_perplexity(g, 0, torch.tensor([0.0, 1.0, 1e3]))
    assert perp[0] == pytest.approx(9) and perp[2] == pytest.approx(8) and 8 < perp[1] < 9
    assert kl.row_perplexity(g, 3, torch.tensor([0.0, 5.0])).tolist() == pytest.approx([9, 9])


def test_z_lives_on_the_closest_pair_of_widely_spread_logits_whatever_the_target() -> None:
    logits = torch.tensor([[0.0, 50.0, 100.0, 103.0, 200.0, 300.0]], dtype=torch.float64).expand(6, 6)
    targets = torch.arange(6)
    steps = kl.kl_intermediates(logits, targets)
    shares = kl.z_shares(steps)
    assert shares.closest.sort(1).values.tolist() == [[2, 3]] * 6
    assert (shares.pair > 0.9).all()  # Q's width-1 kernel sees only the pair 3 apart
    assert (steps.z[:, [2, 3]].sign() == torch.tensor([1.0, -1.0], dtype=torch.float64)).all()  # pulled apart
    # the explained class barely moves z: the rows differ by little next to the pair's weight
    assert (steps.z - steps.z[0]).abs().max() < 0.1 * steps.z[0, 2].abs()
    soft = kl.z_shares(kl.kl_intermediates(logits / 100, targets))  # logits spread over 3 units, not 300
    outside = [0, 1, 4, 5]  # targets that are not in the closest pair gain weight once the logits are soft
    assert (soft.pair < shares.pair).all() and (soft.target[outside] > shares.target[outside]).all()
    hand = steps.z[0].abs()  # the shares by hand for target 0
    assert shares.pair[0].item() == pytest.approx(float((hand[2] + hand[3]) / hand.sum()))
    assert shares.target[0].item() == pytest.approx(float(hand[0] / hand.sum()))


@pytest.mark.parametrize("reading", ["gradient", "elementwise"])
def test_temperature_equals_a_network_whose_logits_are_divided_by_it(reading: str) -> None:
    model, x = small("vgg", dtype=torch.float64), seeded_images(5, b=2)
    cooled = copy.deepcopy(model)
    last = [m for m in cooled.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.div_(7.0)
        last.bias.div_(7.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = dh.explain("kl_dve", model, x, 2, reading=reading, layer="relu5_2", temperature=7.0)
        ref = dh.explain("kl_dve", cooled, x, 2, reading=reading, layer="relu5_2")
        plain = dh.explain("kl_dve", model, x, 2, reading=reading, layer="relu5_2")
    torch.testing.assert_close(got, ref, rtol=1e-8, atol=1e-10)
    assert (got - plain).abs().max() > 1e-3  # the temperature does change the map
