"""FBI (Balu et al. 2017): each adjoint against hand-computed values, the whole walk against a slow written-out
float64 reference, the DeconvNet limit, monotonicity in τ, and errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import dvehelpers as dh
from dvehelpers.engine import DECONVNET, propagate, record
from dvehelpers.methods import fbi as F

from .conftest import seeded_images, small

DEFAULTS = {p.name: p.default for p in F.PARAMS}


def apply_rule(rule: object, module: nn.Module, x: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:
    """``rule`` at the one node of ``module``'s graph, recorded on ``x``."""
    trace = record(nn.Sequential(module), x)
    return rule(trace.nodes[0], trace, signal)  # type: ignore[operator]


# ---------------------------------------------------------------- each adjoint by hand


def test_softmax_adjoint_by_hand() -> None:
    z = torch.tensor([[1.0, 3.0, -2.0], [0.5, -1.0, 4.0]])
    got = F.softmax_adjoint(z, torch.tensor([0, 2]))
    assert torch.equal(got, torch.tensor([[3.0, -2.0, -2.0], [-1.0, -1.0, 4.0]]))


def test_dense_adjoint_subtracts_the_bias_by_hand() -> None:
    lin = nn.Linear(2, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        lin.bias.copy_(torch.tensor([1.0, -1.0]))
    # Wᵀ(ẑ − b) = Wᵀ [1, 1] = [1 + 3, 2 + 4]
    got = apply_rule(F.dense_adjoint, lin, torch.zeros(1, 2), torch.tensor([[2.0, 0.0]]))
    assert torch.equal(got, torch.tensor([[4.0, 6.0]]))


def tiny_dense() -> nn.Sequential:
    """x (3 inputs) -> Linear(3, 3) -> ReLU -> Linear(3, 2), with hand-picked weights (see the tests' comments)."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2)).double()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, -1.0, 0.0]]))
        model[1].bias.copy_(torch.tensor([0.0, 0.0, 1.0]))
        model[3].weight.copy_(torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]]))
        model[3].bias.copy_(torch.tensor([0.5, -0.5]))
    return model


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        # z1 = [1, 2, 0], a1 = [1, 2, 0]; z2 = [3.5, 1.5]; ẑ2 = [3.5, 1.5]; â1 = W2ᵀ(ẑ2 − b2) = W2ᵀ[3, 2] = [3, 5, 2];
        # â1 ⊙ a1 = [3, 10, 0].
        ({"mask": "tau", "tau": 5.0}, [-1.0, 6.0, 0.0]),  # keeps [0, 5, 0]; W1ᵀ([0, 5, 0] − b1) = W1ᵀ[0, 5, −1]
        ({"mask": "tau", "tau": 2.0}, [2.0, 6.0, 0.0]),  # keeps [3, 5, 0]; W1ᵀ[3, 5, −1]
        ({"mask": "keep_fraction", "keep_fraction": 1 / 3}, [-1.0, 6.0, 0.0]),  # ceil(1) largest product: 10
        ({"mask": "keep_fraction", "keep_fraction": 0.5}, [2.0, 6.0, 0.0]),  # ceil(1.5) = 2 largest: 10, 3
        ({"mask": "keep_fraction", "keep_fraction": 1.0}, [2.0, 6.0, 0.0]),  # the 0 product is never kept
        ({"mask": "none"}, [4.0, 4.0, 0.0]),  # ReLU alone: [3, 5, 2]; W1ᵀ[3, 5, 1]
        # ŷ = [1, 0]: ŷ − b2 = [0.5, 0.5]; â1 = [0.5, 1, 0.5]; ReLU; minus b1: [0.5, 1, −0.5]; W1ᵀ: [0, 1.5, 0]
        ({"mask": "none", "start": "one_hot"}, [0.0, 1.5, 0.0]),
    ],
)
def test_masked_walk_through_a_tiny_dense_net_by_hand(params: dict, expected: list[float]) -> None:
    # W1ᵀ = [[1, 0, 1], [0, 1, −1], [0, 0, 0]]
    x = torch.tensor([[[[1.0]], [[2.0]], [[7.0]]]], dtype=torch.float64)
    raw = dh.explain("fbi", tiny_dense(), x, target=0, output="raw", **params)
    assert raw.flatten().tolist() == expected


def test_relu_adjoint_is_relu_without_mask() -> None:
    model = nn.Sequential(nn.Flatten(), nn.ReLU(), nn.Linear(2, 2, bias=False)).double()
    with torch.no_grad():
        model[2].weight.copy_(torch.tensor([[1.0, -1.0], [0.0, 0.0]]))
    x = torch.tensor([[[[1.0]], [[1.0]]]], dtype=torch.float64)
    # logits [0, 0] -> ẑ = [0, 0]: use target logits that differ
    with torch.no_grad():
        model[2].weight.copy_(torch.tensor([[2.0, -1.0], [0.0, 0.0]]))  # z = [1, 0]; ẑ = [1, 0]; Wᵀẑ = [2, −1]
    raw = dh.explain("fbi", model, x, target=0, output="raw", mask="none")
    assert raw.flatten().tolist() == [2.0, 0.0]


def test_unpool_2x2_by_hand() -> None:
    pool = nn.MaxPool2d(2)
    a = torch.tensor([[[[1.0, 7.0, 0.0, 2.0], [3.0, 9.0, 4.0, 6.0]]]])
    back = torch.tensor([[[[5.0, 3.0]]]])
    got = apply_rule(F.unpool_replicate_min, pool, a, back)
    assert torch.equal(got, torch.tensor([[[[1.0, 5.0, 0.0, 2.0], [3.0, 5.0, 3.0, 3.0]]]]))


def test_unpool_overlapping_3x3_stride_2_by_hand() -> None:
    pool = nn.MaxPool2d(3, 2)
    a = torch.full((1, 1, 4, 5), 10.0)
    a[0, 0, 0, 0], a[0, 0, 1, 2] = 1.0, 5.0
    back = torch.tensor([[[[4.0, 8.0]]]])  # windows: rows 0–2, columns 0–2 and 2–4; row 3 is in no window
    got = apply_rule(F.unpool_replicate_min, pool, a, back)
    replicated = torch.tensor([4.0, 4.0, 6.0, 8.0, 8.0])  # column 2 is in both windows: (4 + 8) / 2
    expected = torch.zeros(4, 5)
    expected[:3] = torch.minimum(a[0, 0, :3], replicated)
    assert expected[0, 0] == 1.0 and expected[1, 2] == 5.0 and expected[2, 2] == 6.0
    assert torch.equal(got[0, 0], expected)


def test_top_k_maps_by_hand() -> None:
    signal = torch.tensor([1.0, 5.0, 3.0, -2.0]).view(1, 4, 1, 1).expand(1, 4, 2, 2)
    acts = torch.tensor([9.0, 0.0, 1.0, 8.0]).view(1, 4, 1, 1).expand(1, 4, 2, 2)
    kept = F.top_k_maps(signal, acts, 0.5, "backward").amax((2, 3)).flatten()
    assert kept.tolist() == [0.0, 5.0, 3.0, 0.0]
    kept = F.top_k_maps(signal, acts, 0.5, "forward").amax((2, 3)).flatten()
    assert kept.tolist() == [1.0, 0.0, 0.0, -2.0]
    assert F.top_k_maps(signal, acts, 0.3, "backward").amax((2, 3)).flatten().tolist() == [0.0, 5.0, 3.0, 0.0]


@pytest.mark.parametrize("subtract", [False, True])
def test_conv_adjoint_is_the_transposed_convolution_of_the_signal_minus_bias(subtract: bool) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1).double()
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64, requires_grad=True)
    signal = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    start = signal - conv.bias.detach().view(1, -1, 1, 1) if subtract else signal
    (expected,) = torch.autograd.grad(conv(x), x, start)  # the transposed convolution is the VJP of the conv
    got = apply_rule(F.conv_adjoint(subtract), conv, x.detach(), signal)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- the whole walk against a slow reference


def vgg_like() -> nn.Sequential:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(6 * 3 * 3, 8), nn.ReLU(), nn.Linear(8, 3),
    ).double()  # fmt: skip


def alexnet_like() -> nn.Sequential:
    torch.manual_seed(2)
    return nn.Sequential(
        nn.Conv2d(3, 4, 5, stride=2, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, padding=1, ceil_mode=True),
        nn.Flatten(), nn.Linear(5 * 2 * 2, 6), nn.ReLU(), nn.Linear(6, 3),
    ).double()  # fmt: skip


def reference(model: nn.Sequential, x: torch.Tensor, c: int, p: dict) -> torch.Tensor:
    """FBI written out for one image with explicit loops (the paper's §2 step by step), float64."""
    layers, acts = list(model), [x[0]]
    with torch.no_grad():
        for layer in layers:
            acts.append(layer(acts[-1][None])[0])
    z = acts[-1]
    s = torch.full_like(z, float(z.min()) if p["start"] == "softmax_adjoint" else 0.0)
    s[c] = z.max() if p["start"] == "softmax_adjoint" else 1.0
    top = max(i for i, layer in enumerate(layers) if isinstance(layer, nn.ReLU) and acts[i + 1].dim() == 3)
    for i in range(len(layers) - 1, -1, -1):
        layer, a_in, a_out = layers[i], acts[i], acts[i + 1]
        if isinstance(layer, nn.Linear):
            s = layer.weight.detach().T @ (s - layer.bias.detach())
        elif isinstance(layer, nn.Flatten):
            s = s.reshape(a_in.shape)
        elif isinstance(layer, nn.ReLU):
            s = ref_mask(s, a_out, p)
            if s.dim() == 3 and (p["topk_scope"] == "every" or i == top):
                ranked = s if p["ranking"] == "backward" else a_out
                totals = [float(ranked[ch].sum()) for ch in range(s.shape[0])]
                k = math.ceil(p["k_fraction"] * s.shape[0])
                keep = sorted(range(s.shape[0]), key=lambda ch: -totals[ch])[:k]
                s = torch.stack([s[ch] if ch in keep else torch.zeros_like(s[ch]) for ch in range(s.shape[0])])
            s = s.clamp(min=0)
        elif isinstance(layer, nn.MaxPool2d):
            s = ref_unpool(layer, a_in, s, p["unpool"])
        elif isinstance(layer, nn.Conv2d):
            s = ref_deconv(layer, a_in, s, p["conv_bias"] == "subtract")
    return s


def ref_mask(s: torch.Tensor, a: torch.Tensor, p: dict) -> torch.Tensor:
    prod = (s * a).flatten()
    if p["mask"] == "none":
        return s
    if p["mask"] == "tau":
        keep = prod > p["tau"]
    else:
        k = math.ceil(p["keep_fraction"] * len(prod))
        cut = sorted(prod.tolist(), reverse=True)[k - 1]
        keep = (prod >= cut) & (prod > 0)
    return torch.where(keep.view_as(s), s, 0)


def windows(pool: nn.MaxPool2d, h: int, w: int, oh: int, ow: int) -> dict:
    k, st, pad = pool.kernel_size, pool.stride, pool.padding
    out = {}
    for oy in range(oh):
        for ox in range(ow):
            out[oy, ox] = [
                (y, xx)
                for y in range(oy * st - pad, oy * st - pad + k)
                for xx in range(ox * st - pad, ox * st - pad + k)
                if 0 <= y < h and 0 <= xx < w
            ]
    return out


def ref_unpool(pool: nn.MaxPool2d, a_in: torch.Tensor, s: torch.Tensor, mode: str) -> torch.Tensor:
    c, h, w = a_in.shape
    total, count = torch.zeros_like(a_in), torch.zeros_like(a_in)
    for (oy, ox), where in windows(pool, h, w, *s.shape[1:]).items():
        for ch in range(c):
            if mode == "switches":
                best = max(where, key=lambda yx: (float(a_in[ch, yx[0], yx[1]]), -yx[0] * w - yx[1]))
                total[ch, best[0], best[1]] += s[ch, oy, ox]
            else:
                for y, xx in where:
                    total[ch, y, xx] += s[ch, oy, ox]
                    count[ch, y, xx] += 1
    if mode == "switches":
        return total
    return torch.where(count > 0, torch.minimum(a_in, total / count.clamp(min=1)), 0)


def ref_deconv(conv: nn.Conv2d, a_in: torch.Tensor, s: torch.Tensor, subtract: bool) -> torch.Tensor:
    weight, bias = conv.weight.detach(), conv.bias.detach()
    (st, _), (pad, _) = conv.stride, conv.padding
    out = torch.zeros_like(a_in)
    c_out, kh, kw = weight.shape[0], weight.shape[2], weight.shape[3]
    for o in range(c_out):
        sig = s[o] - bias[o] if subtract else s[o]
        for oy in range(s.shape[1]):
            for ox in range(s.shape[2]):
                for ky in range(kh):
                    for kx in range(kw):
                        y, xx = oy * st - pad + ky, ox * st - pad + kx
                        if 0 <= y < a_in.shape[1] and 0 <= xx < a_in.shape[2]:
                            out[:, y, xx] += weight[o, :, ky, kx] * sig[oy, ox]
    return out


CASES = [
    {},
    {"mask": "tau", "tau": 1e-3, "start": "one_hot"},
    {"mask": "none", "k_fraction": 1.0},
    {"keep_fraction": 0.3, "k_fraction": 0.25, "topk_scope": "top", "ranking": "forward"},
    {"mask": "none", "unpool": "switches", "conv_bias": "subtract", "k_fraction": 0.75},
]


@pytest.mark.parametrize("build", [vgg_like, alexnet_like])
@pytest.mark.parametrize("params", CASES, ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()) or "defaults")
def test_fbi_equals_a_slow_written_out_reference_per_image(build, params: dict) -> None:
    model, x = build(), seeded_images(7, b=2, size=12 if build is vgg_like else 15)
    x = x - 0.5
    targets = torch.tensor([2, 0])
    raw = dh.explain("fbi", model, x, targets, output="raw", **params)
    p = {**DEFAULTS, **params}
    for i in range(len(x)):
        expected = reference(model, x[i : i + 1], int(targets[i]), p)
        torch.testing.assert_close(raw[i], expected, rtol=1e-10, atol=1e-12)
    assert raw.abs().sum() > 0


# ---------------------------------------------------------------- the DeconvNet limit, monotonicity


def zero_dense_biases(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.bias.zero_()
    return model


@pytest.mark.parametrize("arch", ["vgg", "alexnet"])
def test_all_maps_no_mask_and_switches_is_deconvnet_from_the_softmax_adjoint(arch: str) -> None:
    model, x = zero_dense_biases(small(arch)), seeded_images(3, b=2)
    params = {"mask": "none", "k_fraction": 1.0, "unpool": "switches"}
    trace = record(model, x)
    start = F.softmax_adjoint(trace.logits, trace.logits.argmax(1))
    expected = propagate(trace, start, DECONVNET)
    torch.testing.assert_close(dh.explain("fbi", model, x, output="raw", **params), expected, rtol=1e-12, atol=1e-14)
    # What remains between the two: FBI's unpooling, and the dense biases (DeconvNet ignores them).
    assert not torch.allclose(dh.explain("fbi", model, x, output="raw", mask="none", k_fraction=1.0), expected)
    with_bias = small(arch)
    assert not torch.allclose(dh.explain("fbi", with_bias, x, output="raw", **params), expected)


@pytest.mark.parametrize("arch", ["vgg", "alexnet"])
def test_without_dense_biases_from_the_class_indicator_fbi_is_deconvnet(arch: str) -> None:
    model, x = small(arch), seeded_images(3, b=2)  # biases as trained: dense_bias="ignore" must remove them
    params = {"mask": "none", "k_fraction": 1.0, "unpool": "switches", "start": "one_hot", "dense_bias": "ignore"}
    expected = dh.explain("deconvnet", model, x, output="raw")
    torch.testing.assert_close(dh.explain("fbi", model, x, output="raw", **params), expected, rtol=1e-12, atol=1e-14)
    subtracted = {**params, "dense_bias": "subtract"}  # the paper's Wᵀ(ẑ − b): a different walk
    assert not torch.allclose(dh.explain("fbi", model, x, output="raw", **subtracted), expected)


def nonnegative(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
    return model


@pytest.mark.parametrize("arch", ["vgg", "alexnet"])
def test_a_larger_tau_never_grows_the_support_with_nonnegative_weights(arch: str) -> None:
    model, x = nonnegative(small(arch)), seeded_images(4, b=2)
    previous, sizes = None, []
    for tau in [1e-6, 1e-4, 1e-2, 1.0, 1e2, 1e4]:
        current = F.supports(model, x, mask="tau", tau=tau, k_fraction=1.0)
        current["input"] = dh.explain("fbi", model, x, output="raw", mask="tau", tau=tau, k_fraction=1.0) != 0
        if previous is not None:
            for name, now in current.items():
                assert not (now & ~previous[name]).any(), f"the support at {name} grew at τ = {tau}"
        sizes.append(sum(int(v.sum()) for v in current.values()))
        previous = current
    assert sizes[0] > sizes[-1], "the τ grid should shrink the support"


def test_the_mask_itself_is_monotone_in_tau_and_keep_fraction() -> None:
    g = torch.Generator().manual_seed(0)
    s, a = torch.randn(3, 4, 5, 5, generator=g), torch.rand(3, 4, 5, 5, generator=g)
    kept = [F.forward_backward_mask(s, a, "tau", t, 0.0) != 0 for t in (0.0, 0.1, 0.5, 1.0)]
    kept += [F.forward_backward_mask(s, a, "keep_fraction", 0.0, f) != 0 for f in (1.0, 0.5, 0.1, 0.01)]
    for wide, narrow in zip(kept[:3] + kept[4:7], kept[1:4] + kept[5:8], strict=True):
        assert not (narrow & ~wide).any()
    assert kept[7].flatten(1).sum(1).tolist() == [1, 1, 1]  # ceil(0.01 · 100) = 1 per image


def test_through_mixed_sign_weights_a_larger_tau_can_grow_the_support() -> None:
    """Why the monotonicity above needs nonnegative weights: masking an entry that reached the layer below through
    a negative weight removes its cancellation there, so a larger τ can let a lower entry through. The paper's
    "sparsity grows with τ" holds on average (notebook 04 measures it), not entry by entry."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(1, 2), nn.ReLU(), nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
    model = model.double()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.bias.zero_()
        model[1].weight.copy_(torch.tensor([[1.0], [1.0]]))  # a1 = [1, 1]
        model[3].weight.copy_(torch.tensor([[1.0, 0.0], [-2.0, 3.0]]))  # a3 = [1, 1]
        model[5].weight.copy_(torch.tensor([[2.0, 1.0], [0.0, 0.0]]))  # z = [3, 0]: ẑ = [3, 0] for class 0
    x = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    # â3 = W5ᵀẑ = [6, 3], products with a3: [6, 3].
    # τ = 1 keeps both; â1 = W3ᵀ[6, 3] = [6 − 6, 9] = [0, 9]: entry 0 fails.
    # τ = 4 keeps [6, 0]; â1 = W3ᵀ[6, 0] = [6, 0]: entry 0 passes — the support at relu1 moved from {1} to {0}.
    small_tau = F.supports(model, x, target=0, mask="tau", tau=1.0)
    big_tau = F.supports(model, x, target=0, mask="tau", tau=4.0)
    names = list(small_tau)
    assert small_tau[names[0]].tolist() == [[True, True]] and big_tau[names[0]].tolist() == [[True, False]]
    assert small_tau[names[1]].tolist() == [[False, True]] and big_tau[names[1]].tolist() == [[True, False]]


# ---------------------------------------------------------------- supports, errors


def test_supports_are_the_kept_entries_of_every_relu_within_the_keep_fraction() -> None:
    model, x = small("vgg"), seeded_images(5, b=2)
    sup = F.supports(model, x, keep_fraction=0.2, k_fraction=1.0)
    relus = [n.name for n in dh.engine.capture(model).nodes if n.kind == "relu"]
    assert list(sup) == relus[::-1]  # top layer first, as the signal descends
    for name, kept in sup.items():
        share = kept.flatten(1).float().mean(1)
        n = kept[0].numel()
        assert (share <= math.ceil(0.2 * n) / n).all(), name
        assert (share > 0).all(), name
    halved = F.supports(model, x, keep_fraction=0.2, k_fraction=0.5)
    for name, kept in halved.items():
        if kept.ndim == 4:  # conv layers keep at most half of their maps
            assert (kept.any((2, 3)).sum(1) <= kept.shape[1] // 2).all(), name


@pytest.mark.parametrize(
    ("params", "error", "words"),
    [
        ({"mask": "threshold"}, ValueError, "'keep_fraction', 'tau', 'none'"),
        ({"keep_fraction": 0.0}, ValueError, "keep_fraction"),
        ({"keep_fraction": 1.5}, ValueError, "range"),
        ({"k_fraction": 0.0}, ValueError, "k_fraction"),
        ({"tau": -1.0}, ValueError, "tau"),
        ({"topk_scope": "all"}, ValueError, "'every', 'top'"),
        ({"ranking": "total"}, ValueError, "'backward', 'forward'"),
        ({"unpool": "max"}, ValueError, "'replicate_min', 'switches'"),
        ({"conv_bias": True}, ValueError, "'ignore', 'subtract'"),
        ({"start": "indicator"}, ValueError, "'softmax_adjoint', 'one_hot'"),
        ({"tau": "10"}, TypeError, "number"),
    ],
)
def test_bad_parameters_get_clear_errors(params: dict, error: type, words: str) -> None:
    with pytest.raises(error, match=words.replace("(", r"\(")):
        dh.explain("fbi", small("vgg"), seeded_images(0, b=1), **params)
    with pytest.raises(error):
        F.supports(small("vgg"), seeded_images(0, b=1), **params)


def test_dilated_max_pooling_is_refused_by_name() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 2, 3), nn.ReLU(), nn.MaxPool2d(2, dilation=2), nn.Flatten(), nn.Linear(2 * 6 * 6, 3)
    )
    with pytest.raises(ValueError, match="pool1 has dilation"):
        dh.explain("fbi", model, torch.rand(1, 3, 16, 16))
    assert dh.explain("fbi", model, torch.rand(1, 3, 16, 16), unpool="switches").shape == (1, 16, 16)


def test_sparsity_sweep_equals_explaining_at_every_grid_point() -> None:
    model, x = small("alexnet"), seeded_images(6, b=5)
    masks = torch.zeros(5, 112, 112, dtype=torch.bool)
    masks[:, 30:80, 20:70] = True
    fractions, ks = [0.05, 0.5], [0.25, 1.0]
    sweep = F.sparsity_sweep(model, x, masks, fractions, ks, batch_size=2, ranking="forward")
    for a, f in enumerate(fractions):
        for b, k in enumerate(ks):
            heat = dh.explain("fbi", model, x, keep_fraction=f, k_fraction=k, ranking="forward")
            assert sweep.iou[a, b].item() == pytest.approx(dh.evaluate.mean_iou(heat, masks), rel=1e-9)
            assert sweep.support[a, b].item() == pytest.approx((heat > 0).double().mean().item(), rel=1e-9)
    none = F.sparsity_sweep(model, x, masks, [], ks, mask="none")
    assert none.iou.shape == (1, 2) and math.isnan(none.values[0])
    with pytest.raises(ValueError, match="'keep_fraction', 'tau', 'none'"):
        F.sparsity_sweep(model, x, masks, [0.1], ks, mask="threshold")


def test_kth_largest_on_long_rows_is_exact_whether_or_not_the_sample_brackets_it() -> None:
    g = torch.Generator().manual_seed(0)
    n = 5 * F._SAMPLE
    flat = torch.randn(4, n, generator=g).clamp(min=0) * torch.rand(4, n, generator=g)
    flat[2] = 0.0  # ties everywhere: the bracket holds every entry
    flat[3, : n - 100] = -1.0  # only 100 entries above -1: the sample misses them, the row falls back
    flat[3, n - 100 :] = torch.arange(100.0)
    for k in (1, 3, 1000, n // 10):
        expected = flat.sort(dim=1, descending=True).values[:, k - 1 : k]
        assert torch.equal(F._kth_largest(flat, k), expected), k
