"""Oramas et al.'s strided-convolution fix as a rule set of the engine: against a slow reference, sizes, and the
grid artefact it removes (a periodic component at the stride's frequency)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dvehelpers as dh
from dvehelpers.engine import GUIDED, GUIDED_STRIDED_FIX, propagate, record, strided_fix
from dvehelpers.models.efficientnet_lite import SameConv2d

from .conftest import seeded_images, small


def nearest_resize(signal: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest neighbour by explicit index arithmetic: target pixel i takes source floor(i · in / out)."""
    h, w = signal.shape[-2:]
    rows = [min(int(i * h / size[0]), h - 1) for i in range(size[0])]
    cols = [min(int(j * w / size[1]), w - 1) for j in range(size[1])]
    return signal[..., rows, :][..., cols]


def reference(conv: nn.Conv2d, x_in: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:
    """Resize to n' = H + 2p − d(k − 1), then the adjoint of the stride-1 convolution, by autograd."""
    k, p, d = conv.kernel_size, conv.padding, conv.dilation
    size = tuple(x_in.shape[2 + i] + 2 * p[i] - d[i] * (k[i] - 1) for i in range(2))
    resized = nearest_resize(signal, size)
    x = torch.zeros_like(x_in, requires_grad=True)
    out = F.conv2d(x, conv.weight, None, 1, p, d, conv.groups)
    assert out.shape == resized.shape
    (g,) = torch.autograd.grad(out, x, resized)
    return g


def fixed(conv: nn.Conv2d, x: torch.Tensor, signal: torch.Tensor, resize: str = "nearest") -> torch.Tensor:
    """The fix's rule applied to the one convolution node of ``conv``'s graph."""
    trace = record(nn.Sequential(conv), x)
    return strided_fix(resize)(trace.nodes[0], trace, signal)


@pytest.mark.parametrize(
    ("k", "s", "p", "d", "size"), [(7, 2, 2, 1, 112), (11, 4, 2, 1, 67), (3, 2, 1, 1, 33), (5, 3, 3, 2, 50)]
)
def test_rule_equals_the_slow_reference_and_keeps_the_input_size(k: int, s: int, p: int, d: int, size: int) -> None:
    """Resize (nearest) then a stride-1 transposed convolution: the input's size, and the reference's values."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, k, stride=s, padding=p, dilation=d).double()
    x = torch.rand(2, 3, size, size, dtype=torch.float64)
    signal = torch.randn_like(conv(x))
    got = fixed(conv, x, signal)
    assert got.shape == x.shape
    torch.testing.assert_close(got, reference(conv, x, signal))


@pytest.mark.parametrize(
    ("c_in", "c_out", "groups", "k", "s", "p", "d", "size"),
    [(4, 6, 2, 5, 2, 2, 1, 40), (3, 5, 1, 4, 2, 1, 1, 31), (6, 6, 6, 3, 3, 3, 2, 43), (3, 4, 1, 3, 2, 1, 1, 41)],
)
def test_the_stride_s_form_when_the_resize_is_an_exact_block_replication(
    c_in: int, c_out: int, groups: int, k: int, s: int, p: int, d: int, size: int
) -> None:
    """Where n' is s times the signal's size (the first three cases; the last is not, 2·21 ≠ 41), the rule runs as
    one stride-s transposed convolution with a box-summed kernel: grouped, even-sized, depthwise and dilated
    kernels equal the resize-then-transpose reference all the same."""
    torch.manual_seed(4)
    conv = nn.Conv2d(c_in, c_out, k, stride=s, padding=p, dilation=d, groups=groups).double()
    x = torch.rand(2, c_in, size, size, dtype=torch.float64)
    signal = torch.randn_like(conv(x))
    n_prime = size + 2 * p - d * (k - 1)
    assert (n_prime == s * signal.shape[-1]) == (size != 41)
    got = fixed(conv, x, signal)
    assert got.shape == x.shape
    torch.testing.assert_close(got, reference(conv, x, signal))


def test_stride_one_convolutions_keep_the_exact_rule() -> None:
    """On a network without strided convolutions (our VGG) the rule set is guided backprop itself."""
    model, x = small("vgg"), seeded_images(1, b=2)
    trace = record(model, x)
    start = torch.zeros_like(trace.logits)
    start[:, 2] = 1
    torch.testing.assert_close(propagate(trace, start, GUIDED_STRIDED_FIX), propagate(trace, start, GUIDED))


def phase_spread(signal: torch.Tensor, stride: int, border: int) -> float:
    """How periodic with the stride a B×C×H×W signal is: the spread of its stride×stride phase means (interior
    only, channels summed) relative to their mean magnitude. 0 for a signal without the stride's grid."""
    inner = signal.sum(1)[:, border:-border, border:-border]
    h = (inner.shape[1] // stride) * stride
    w = (inner.shape[2] // stride) * stride
    phases = inner[:, :h, :w].reshape(inner.shape[0], h // stride, stride, w // stride, stride).mean((1, 3))
    return float(phases.flatten(1).std(1).mean() / phases.abs().flatten(1).mean(1).mean())


def test_the_grid_artefact_is_a_periodic_component_that_the_fix_removes() -> None:
    """A constant signal back through a stride-2, 7×7 convolution with positive filters: the exact rule leaves a
    grid at the stride's period, the fix none (away from the borders)."""
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 4, 7, stride=2, padding=2).double()
    with torch.no_grad():
        conv.weight.uniform_(0.5, 1.0)
    x = torch.rand(1, 3, 64, 64, dtype=torch.float64)
    trace = record(nn.Sequential(conv), x)
    ones = torch.ones_like(trace.logits)
    exact = propagate(trace, ones, GUIDED)
    fixed = propagate(trace, ones, GUIDED_STRIDED_FIX)
    assert phase_spread(exact, 2, 8) > 0.05
    assert phase_spread(fixed, 2, 8) < 1e-12


def test_the_fix_removes_most_of_the_grid_on_the_alexnet_style_net() -> None:
    """Guided backprop of conv1's own response (the AlexNet-style net's stride-2 conv1) to the input: the
    periodic component at the stride falls several-fold with the fix."""
    model = small("alexnet")
    x = seeded_images(3, b=2)
    relu1 = dh.models.resolve_layer(model, "relu1")
    trace = record(model, x, upto=relu1)
    start = trace.output(relu1)
    exact = phase_spread(propagate(trace, start, GUIDED, start=relu1), 2, 8)
    fixed = phase_spread(propagate(trace, start, GUIDED_STRIDED_FIX, start=relu1), 2, 8)
    assert fixed < exact / 4, (exact, fixed)


def test_bilinear_resize_and_bad_modes() -> None:
    """resize='bilinear' keeps the input's size; an unknown mode names the valid ones."""
    conv = nn.Conv2d(3, 4, 7, stride=2, padding=2).double()
    x = torch.rand(1, 3, 40, 40, dtype=torch.float64)
    out = fixed(conv, x, torch.ones_like(conv(x)), "bilinear")
    assert out.shape == x.shape
    with pytest.raises(ValueError, match="'nearest', 'bilinear'"):
        strided_fix("cubic")


def slow_depthwise_fix(
    weight: torch.Tensor, signal: torch.Tensor, size: tuple[int, int], pad: tuple[int, ...]
) -> torch.Tensor:
    """The fix on a depthwise convolution after TF "same" padding, written out: resize (nearest, index arithmetic)
    to n' = H_padded − (k − 1), transpose at stride 1 channel by channel with explicit sums, crop the padding."""
    c, _, kh, kw = weight.shape
    left, right, top, bottom = pad
    hp, wp = size[0] + top + bottom, size[1] + left + right
    r = nearest_resize(signal, (hp - kh + 1, wp - kw + 1))
    out = torch.zeros(signal.shape[0], c, hp, wp, dtype=signal.dtype)
    for ch in range(c):
        for i in range(hp):
            for j in range(wp):
                total = 0.0
                for a in range(kh):
                    for b in range(kw):
                        if 0 <= i - a < r.shape[2] and 0 <= j - b < r.shape[3]:
                            total = total + weight[ch, 0, a, b] * r[:, ch, i - a, j - b]
                out[:, ch, i, j] = total
    return out[:, :, top : top + size[0], left : left + size[1]]


@pytest.mark.parametrize(("k", "size"), [(3, 10), (5, 10), (3, 9), (5, 11)])
def test_the_fix_on_a_depthwise_stride_two_same_padded_convolution(k: int, size: int) -> None:
    """EfficientNet-Lite's depthwise stride-2 convolution with TF "same" padding (asymmetric when the total is odd):
    the graph holds a pad node and an unpadded convolution, and the walk through both equals the written-out fix."""
    torch.manual_seed(2)
    conv = SameConv2d(3, 3, k, stride=2, groups=3).double()
    model = nn.Sequential(conv)
    x = torch.rand(2, 3, size, size, dtype=torch.float64)
    trace = record(model, x)
    assert [n.kind for n in trace.nodes] == ["pad", "conv"] and trace.nodes[1].spec.groups == 3
    signal = torch.randn_like(trace.logits)
    got = propagate(trace, signal, GUIDED_STRIDED_FIX)
    pad = dh.engine.same_amounts((size, size), (k, k), (2, 2), (1, 1))
    assert got.shape == x.shape
    if (k, size) == (5, 10):  # the case with an odd total: one pixel more on the right and bottom
        assert pad == (1, 2, 1, 2)
    torch.testing.assert_close(got, slow_depthwise_fix(conv.weight.detach(), signal, (size, size), pad))
    assert not torch.allclose(got, propagate(trace, signal, GUIDED))  # the exact rule differs
