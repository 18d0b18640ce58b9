"""Direct unit tests with hand-computed values: min-max normalisation, the three ReLU rules, CAM channel weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dvehelpers.engine import DECONVNET, GRADIENT, GUIDED, RuleSet, propagate, record
from dvehelpers.maps import normalize, saturate
from dvehelpers.methods.cam import cam_weights

DTYPES = [torch.float32, torch.float64]

# ---------------------------------------------------------------- normalize


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ([[-2.0, 0.0], [2.0, 6.0]], [[0.0, 0.25], [0.5, 1.0]]),  # negative minimum: (x + 2) / 8
        ([[1.0, 3.0], [5.0, 9.0]], [[0.0, 0.25], [0.5, 1.0]]),  # positive minimum: (x - 1) / 8
        ([[-8.0, -6.0], [-4.0, 0.0]], [[0.0, 0.25], [0.5, 1.0]]),  # maximum 0: (x + 8) / 8
        ([[-3.0, -1.0], [-2.0, -5.0]], [[0.5, 1.0], [0.75, 0.0]]),  # all negative: (x + 5) / 4
    ],
)
def test_normalize_divides_by_the_range(
    raw: list[list[float]], expected: list[list[float]], dtype: torch.dtype
) -> None:
    out = normalize(torch.tensor([raw], dtype=dtype))
    assert out.dtype == dtype
    torch.testing.assert_close(out, torch.tensor([expected], dtype=dtype), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_saturate_divides_each_map_by_its_own_quantile(dtype: torch.dtype) -> None:
    """Five values 0, 0.1, 0.2, 0.3, 1: the 0.75 quantile is 0.3 (linear interpolation between ranks), so the map
    becomes 0, 1/3, 2/3, 1, 1; a second map in the batch uses its own; an all-zero map stays zero."""
    maps = torch.tensor([[0.0, 0.1, 0.2, 0.3, 1.0], [0.0, 0.5, 0.5, 0.5, 0.5], [0.0] * 5], dtype=dtype)
    out = saturate(maps, 0.75)
    expected = torch.tensor([[0, 1 / 3, 2 / 3, 1, 1], [0, 1, 1, 1, 1], [0] * 5], dtype=dtype)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(saturate(maps, 1.0), maps / maps.amax(1, keepdim=True).clamp_min(1e-30))  # by the max
    with pytest.raises(ValueError, match=r"quantile must be in \(0, 1\], got 0"):
        saturate(maps, 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_normalize_each_image_of_a_batch_on_its_own(dtype: torch.dtype) -> None:
    maps = torch.tensor(
        [
            [[-2.0, 0.0], [2.0, 6.0]],  # range [-2, 6]
            [[1.0, 3.0], [5.0, 9.0]],  # range [1, 9]
            [[3.0, 3.0], [3.0, 3.0]],  # constant
            [[-4.0, 0.0], [-2.0, -1.0]],  # range [-4, 0]
            [[-5.0, -5.0], [-5.0, -5.0]],  # constant, negative
        ],
        dtype=dtype,
    )
    expected = torch.tensor(
        [
            [[0.0, 0.25], [0.5, 1.0]],
            [[0.0, 0.25], [0.5, 1.0]],
            [[0.0, 0.0], [0.0, 0.0]],
            [[0.0, 1.0], [0.5, 0.75]],
            [[0.0, 0.0], [0.0, 0.0]],
        ],
        dtype=dtype,
    )
    out = normalize(maps)
    assert out.shape == maps.shape and out.dtype == dtype
    assert not out.isnan().any()
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    for i in range(len(maps)):  # a batch changes nothing: no statistic is shared across images
        torch.testing.assert_close(normalize(maps[i : i + 1]), out[i : i + 1], rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("value", [0.0, 2.5, -7.0])
def test_normalize_constant_map_is_zeros(value: float, dtype: torch.dtype) -> None:
    out = normalize(torch.full((2, 3, 4), value, dtype=dtype))
    assert torch.equal(out, torch.zeros(2, 3, 4, dtype=dtype))


# ---------------------------------------------------------------- ReLU rules


def tiny_mlp(activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """x (2) -> Linear to h = (x0, x1, -x0, -x1) -> ReLU (or ReLU6) -> Linear to 2 logits."""
    model = nn.Sequential(nn.Linear(2, 4, bias=False), activation(), nn.Linear(4, 2, bias=False)).double()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]))
        model[2].weight.copy_(torch.tensor([[1.0, -2.0, 3.0, -4.0], [2.0, 1.0, -1.0, 1.0]]))
    return model.eval()


# x = (2, 3): ReLU input (2, 3, -2, -3); x = (-1, 1): ReLU input (-1, 1, 1, -1). The start signal (1, 0) at the
# logits reaches the ReLU's output as the first row of the last weight, (1, -2, 3, -4), for both images: positive
# and negative signal on both active and inactive units.
X = torch.tensor([[2.0, 3.0], [-1.0, 1.0]], dtype=torch.float64)
START = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
# At the ReLU's input, then at the network's input (r @ W1 = (r0 - r2, r1 - r3)).
EXPECTED = {
    # signal · [x_in > 0]
    "gradient": ([[1.0, -2.0, 0.0, 0.0], [0.0, -2.0, 3.0, 0.0]], [[1.0, -2.0], [-3.0, -2.0]]),
    # max(signal, 0) · [x_in > 0]
    "guided": ([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0]], [[1.0, 0.0], [-3.0, 0.0]]),
    # max(signal, 0), whatever x_in
    "deconvnet": ([[1.0, 0.0, 3.0, 0.0], [1.0, 0.0, 3.0, 0.0]], [[-2.0, 0.0], [-2.0, 0.0]]),
}


@pytest.mark.parametrize("rules", [GRADIENT, GUIDED, DECONVNET], ids=lambda r: r.name)
def test_relu_rules_by_hand(rules: RuleSet) -> None:
    trace = record(tiny_mlp(), X)
    assert [n.kind for n in trace.nodes] == ["linear", "relu", "linear"]
    torch.testing.assert_close(trace.input(1), torch.tensor([[2.0, 3.0, -2.0, -3.0], [-1.0, 1.0, 1.0, -1.0]]).double())
    at_relu, at_input = (torch.tensor(e, dtype=torch.float64) for e in EXPECTED[rules.name])
    torch.testing.assert_close(propagate(trace, START, rules, to=0), at_relu, rtol=0, atol=0)
    torch.testing.assert_close(propagate(trace, START, rules), at_input, rtol=0, atol=0)


# x = (2, 7): ReLU6 input (2, 7, -2, -7), saturated above 6 at the second unit; x = (-1, 1) as above. The signal at
# the ReLU6's output is again (1, -2, 3, -4).
X6 = torch.tensor([[2.0, 7.0], [-1.0, 1.0]], dtype=torch.float64)
EXPECTED6 = {
    # signal · [0 < x_in < 6]
    "gradient": ([[1.0, 0.0, 0.0, 0.0], [0.0, -2.0, 3.0, 0.0]], [[1.0, 0.0], [-3.0, -2.0]]),
    # max(signal, 0) · [0 < x_in < 6]
    "guided": ([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0]], [[1.0, 0.0], [-3.0, 0.0]]),
    # max(signal, 0), whatever x_in
    "deconvnet": ([[1.0, 0.0, 3.0, 0.0], [1.0, 0.0, 3.0, 0.0]], [[-2.0, 0.0], [-2.0, 0.0]]),
}


@pytest.mark.parametrize("rules", [GRADIENT, GUIDED, DECONVNET], ids=lambda r: r.name)
def test_relu6_rules_by_hand(rules: RuleSet) -> None:
    """ReLU6 has rules of its own in every rule set (never a silent gradient): the saturated unit passes nothing."""
    model = tiny_mlp(nn.ReLU6)
    trace = record(model, X6)
    assert [n.kind for n in trace.nodes] == ["linear", "relu6", "linear"]
    at_relu, at_input = (torch.tensor(e, dtype=torch.float64) for e in EXPECTED6[rules.name])
    torch.testing.assert_close(propagate(trace, START, rules, to=0), at_relu, rtol=0, atol=0)
    torch.testing.assert_close(propagate(trace, START, rules), at_input, rtol=0, atol=0)
    if rules is GRADIENT:
        x = X6.clone().requires_grad_(True)
        (ref,) = torch.autograd.grad((model(x) * START).sum(), x)
        torch.testing.assert_close(ref, at_input, rtol=0, atol=0)


def test_relu_rules_all_differ_and_gradient_is_autograd() -> None:
    model = tiny_mlp()
    trace = record(model, X)
    got = {r.name: propagate(trace, START, r) for r in (GRADIENT, GUIDED, DECONVNET)}
    names = list(got)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not torch.equal(got[a][0], got[b][0]), (a, b)  # the first image separates all three
    x = X.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad((model(x) * START).sum(), x)
    torch.testing.assert_close(got["gradient"], ref, rtol=0, atol=0)


# ---------------------------------------------------------------- CAM channel weights


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradcam_weights_are_spatial_means(dtype: torch.dtype) -> None:
    grads = torch.tensor([[[[1.0, 2.0], [3.0, -2.0]], [[-1.0, -3.0], [0.5, 0.5]]]], dtype=dtype)  # 1×2×2×2
    acts = torch.tensor([[[[5.0, 0.0], [1.0, 2.0]], [[0.0, 7.0], [3.0, 1.0]]]], dtype=dtype)
    expected = torch.tensor([[4.0 / 4, -3.0 / 4]], dtype=dtype)
    torch.testing.assert_close(cam_weights(acts, grads, plus=False), expected, rtol=0, atol=0)
    # Grad-CAM's weights ignore the activations
    torch.testing.assert_close(cam_weights(acts * 3 - 1, grads, plus=False), expected, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradcam_pp_weights_by_hand(dtype: torch.dtype) -> None:
    # α = g² / (2g² + S·g³) with S = Σ_ab A_ab (0 where the denominator is 0); w = Σ_ij α · relu(g).
    acts = torch.tensor(
        [
            [
                [[1.0, 0.0], [2.0, 1.0]],  # S = 4
                [[1.0, 1.0], [0.0, 0.0]],  # S = 2
                [[3.0, 1.0], [0.0, 2.0]],  # S = 6, gradients all 0
                [[-1.0, -1.0], [0.0, 0.0]],  # S = -2
            ]
        ],
        dtype=dtype,
    )
    grads = torch.tensor(
        [
            [
                # 1/(2+4) · 1;  g = -1 cut by relu;  .25/(.5+.5) · .5;  4/(8+32) · 2
                [[1.0, -1.0], [0.5, 2.0]],
                # g = -1: 2 - 2 = 0, α = 0;  zeros: 0/0, α = 0;  g = 3: 9/(18+54) · 3
                [[-1.0, 0.0], [0.0, 3.0]],
                # 0/0 everywhere: α = 0
                [[0.0, 0.0], [0.0, 0.0]],
                # g = 1 > 0 with denominator 2 - 2 = 0: α = 0, so no contribution (not inf, not NaN)
                [[1.0, 0.0], [0.0, 0.0]],
            ]
        ],
        dtype=dtype,
    )
    expected = torch.tensor([[1 / 6 + 1 / 8 + 1 / 5, 3 / 8, 0.0, 0.0]], dtype=dtype)
    out = cam_weights(acts, grads, plus=True)
    assert out.shape == (1, 4) and out.dtype == dtype
    assert out.isfinite().all()
    torch.testing.assert_close(out, expected)
