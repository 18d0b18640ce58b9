"""Oramas et al.'s strided-convolution fix as a rule set of the engine: against a slow reference, sizes, and the
grid artefact it removes (a periodic component at the stride's frequency)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dvehelpers as dh
from dvehelpers.backprop import GUIDED, GUIDED_STRIDED_FIX, propagate, strided_fix

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


def step_of(conv: nn.Conv2d) -> dh.trace.Step:
    return dh.trace.walk(nn.Sequential(conv))[0]


@pytest.mark.parametrize(
    ("k", "s", "p", "d", "size"), [(7, 2, 2, 1, 112), (11, 4, 2, 1, 67), (3, 2, 1, 1, 33), (5, 3, 3, 2, 50)]
)
def test_rule_equals_the_slow_reference_and_keeps_the_input_size(k: int, s: int, p: int, d: int, size: int) -> None:
    """Resize (nearest) then a stride-1 transposed convolution: the input's size, and the reference's values."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, k, stride=s, padding=p, dilation=d).double()
    x = torch.rand(2, 3, size, size, dtype=torch.float64)
    signal = torch.randn_like(conv(x))
    got = strided_fix("nearest")(step_of(conv), x, conv(x), signal, None)
    assert got.shape == x.shape
    torch.testing.assert_close(got, reference(conv, x, signal))


def test_stride_one_convolutions_keep_the_exact_rule() -> None:
    """On a network without strided convolutions (our VGG) the rule set is guided backprop itself."""
    model, x = small("vgg"), seeded_images(1, b=2)
    trace = dh.trace.record(model, x)
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
    trace = dh.trace.record(nn.Sequential(conv), x)
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
    trace = dh.trace.record(model, x, upto=relu1)
    start = trace.output(relu1)
    exact = phase_spread(propagate(trace, start, GUIDED, start=relu1), 2, 8)
    fixed = phase_spread(propagate(trace, start, GUIDED_STRIDED_FIX, start=relu1), 2, 8)
    assert fixed < exact / 4, (exact, fixed)


def test_bilinear_resize_and_bad_modes() -> None:
    """resize='bilinear' keeps the input's size; an unknown mode names the valid ones."""
    conv = nn.Conv2d(3, 4, 7, stride=2, padding=2).double()
    x = torch.rand(1, 3, 40, 40, dtype=torch.float64)
    out = strided_fix("bilinear")(step_of(conv), x, conv(x), torch.ones_like(conv(x)), None)
    assert out.shape == x.shape
    with pytest.raises(ValueError, match="'nearest', 'bilinear'"):
        strided_fix("cubic")
