"""The captured graph, the recorded forward pass and the backward walk against torch.autograd, in float64."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import dvehelpers as dh
from dvehelpers.engine import (
    DECONVNET,
    GRADIENT,
    GUIDED,
    INPUT,
    capture,
    one_hot,
    propagate,
    record,
)

from .conftest import odd_sequential, seeded_images, small, split_at


def autograd_input_grad(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    out = model(x)
    (g,) = torch.autograd.grad(out.gather(1, targets[:, None]).sum(), x)
    return g


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("arch", ["vgg", "alexnet"])
def test_gradient_rules_equal_autograd(arch: str, seed: int) -> None:
    model = small(arch, seed=seed)
    x = seeded_images(seed, b=3)
    trace = record(model, x, rules=GRADIENT)
    targets = torch.tensor([0, 3, 5])
    ours = propagate(trace, one_hot(trace.logits, targets), GRADIENT)
    ref = autograd_input_grad(model, x, targets)
    assert ref.abs().max() > 0
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("seed", [0, 1])
def test_gradient_rules_on_every_layer_kind(seed: int) -> None:
    """Batch norm (folded), max and average pools with padding, dilation, groups, 'valid', nesting, adaptive pool."""
    model = odd_sequential()
    x = seeded_images(seed, b=2, size=37)
    trace = record(model, x, rules=GRADIENT)
    assert {n.kind for n in trace.nodes} == {
        "conv",
        "relu",
        "maxpool",
        "avgpool",
        "adaptive_avgpool",
        "reshape",
        "linear",
    }
    assert trace.nodes[0].weights.fold is model[0][1]  # the batch norm lives in the first convolution
    targets = torch.tensor([1, 4])
    ours = propagate(trace, one_hot(trace.logits, targets), GRADIENT)
    torch.testing.assert_close(ours, autograd_input_grad(model, x, targets), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("layer", ["relu3_1", "pool4", "relu5_2"])
def test_hidden_start_signal_equals_autograd(layer: str) -> None:
    # A channel's own forward map placed at a hidden layer (Oramas et al.'s start signal).
    model, x = small("vgg"), seeded_images(4, b=2)
    i = dh.models.resolve_layer(model, layer)
    trace = record(model, x, upto=i)
    a = trace.output(i)
    start = torch.zeros_like(a)
    start[:, 2] = a[:, 2]
    ours = propagate(trace, start, GRADIENT, start=i)
    xr = x.clone().requires_grad_(True)
    body, _ = split_at(model, i)
    (ref,) = torch.autograd.grad((body(xr) * start).sum(), xr)
    assert ref.abs().max() > 0
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-13)


def test_signal_at_a_hidden_layer_equals_autograd_of_the_head() -> None:
    """``to=``: the walk stops at a node's output, crossing only the nodes above it."""
    model, x = small("alexnet"), seeded_images(6, b=2)
    i = dh.models.resolve_layer(model, "relu4")
    trace = record(model, x, rules=GRADIENT, keep=[i], down_to=i)
    targets = torch.tensor([2, 5])
    ours = propagate(trace, one_hot(trace.logits, targets), GRADIENT, to=i)
    body, head = split_at(model, i)
    a = body(x).detach().requires_grad_(True)
    (ref,) = torch.autograd.grad(head(a).gather(1, targets[:, None]).sum(), a)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-13)
    assert set(trace.masks) == {j for j, n in enumerate(trace.nodes) if n.kind == "relu" and j > i}


def test_trace_matches_model_forward_and_keeps_outputs_with_inplace_relu(model: nn.Module) -> None:
    x = seeded_images(1)
    assert any(getattr(m, "inplace", False) for m in model.modules())
    trace = record(model, x)
    # equal to rounding: on the CPU the engine convolves channels-last (conv_layout), the model as it is
    torch.testing.assert_close(trace.logits, model(x), rtol=1e-12, atol=1e-12)
    for node in trace.nodes:
        if node.kind == "relu":  # the recorded input still holds negative values: not overwritten
            assert (trace.input(node.index) < 0).any(), node.name
            torch.testing.assert_close(trace.output(node.index), trace.input(node.index).clamp(min=0))


def test_trace_uses_eval_semantics_without_changing_mode() -> None:
    model = odd_sequential().train()
    x = seeded_images(2, b=2, size=37)
    trace = record(model, x)
    assert all(m.training for m in model.modules())
    model.eval()
    torch.testing.assert_close(trace.logits, model(x), rtol=1e-12, atol=1e-12)


def test_the_record_keeps_what_the_rules_need_and_nothing_else() -> None:
    """Guided backprop needs only where each ReLU passes (booleans) and max pooling's switches: no float activation
    is kept but the logits; FBI's masks need the ReLUs' outputs themselves."""
    model, x = small("vgg"), seeded_images(3, b=2)
    relus = [n.index for n in capture(model).nodes if n.kind == "relu"]
    pools = [n.index for n in capture(model).nodes if n.kind == "maxpool"]
    guided = record(model, x, rules=GUIDED)
    assert set(guided.values) == {INPUT, guided.graph.output}
    assert set(guided.masks) == set(relus) and all(m.dtype == torch.bool for m in guided.masks.values())
    assert set(guided.switches) == set(pools)
    defaults = {k: v for k, v in dh.METHODS["fbi"].defaults.items() if k not in ("start", "reduction", "output")}
    fbi = dh.methods.fbi.fbi_rules(**defaults)
    deep = record(model, x, rules=fbi)
    assert set(relus) <= set(deep.values) and not deep.masks
    with pytest.raises(RuntimeError, match="was not recorded"):
        guided.output(relus[0])


def test_deconvnet_and_guided_differ_from_gradient_only_at_relus() -> None:
    model, x = small("alexnet"), seeded_images(5, b=1)
    trace = record(model, x)
    start = one_hot(trace.logits, torch.tensor([2]))
    g, d, gb = (propagate(trace, start, r) for r in (GRADIENT, DECONVNET, GUIDED))
    assert not torch.allclose(g, gb) and not torch.allclose(d, gb) and not torch.allclose(g, d)
    # With every ReLU rule set to the gradient's, the three rule sets are one.
    same = GUIDED.with_rules("guided-as-gradient", relu=GRADIENT.rules["relu"])
    torch.testing.assert_close(propagate(trace, start, same), g, rtol=0, atol=0)


def test_deconvnet_sees_the_image_only_through_max_pool_switches() -> None:
    """DeconvNet's ReLU6 rule ignores the forward input, so without max pooling (EfficientNet-Lite0's case) two
    different images get the same map; with a max pool between the same layers they do not."""

    def net(pool: nn.Module) -> nn.Module:
        torch.manual_seed(0)
        layers = [nn.Conv2d(3, 6, 3, padding=1), nn.ReLU6(), pool, nn.Conv2d(6, 8, 3, padding=1), nn.ReLU6()]
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).double().eval()

    x = seeded_images(3, b=2, size=16)
    assert not torch.allclose(x[0], x[1])
    for pool, same in ((nn.AvgPool2d(2), True), (nn.MaxPool2d(2), False)):
        maps = dh.explain("deconvnet", net(pool), x, 1, output="raw")
        assert maps.abs().amax() > 0 and torch.allclose(maps[0], maps[1]) == same
        g = dh.explain("gradient", net(pool), x, 1, output="raw")  # the gradient does see the image
        assert not torch.allclose(g[0], g[1])


def test_fan_out_sums_the_signals_of_both_branches() -> None:
    """A residual block: the input feeds a convolution branch and the add; its signal is the sum of both."""

    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.relu = nn.ReLU()
            self.fc = nn.Linear(3 * 8 * 8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.relu(self.conv(x))
            return self.fc(self.relu(h + x).flatten(1))  # the ReLU module called twice

    model = Residual().double().eval()
    graph = capture(model)
    assert [n.name for n in graph.nodes] == ["conv", "relu", "add", "relu_1", "flatten", "fc"]
    assert graph.nodes[2].inputs == (1, INPUT) and graph.users(1) == (2,)
    x = seeded_images(0, b=2, size=8) - 0.5
    trace = record(model, x, rules=GRADIENT)
    targets = torch.tensor([0, 1])
    ours = propagate(trace, one_hot(trace.logits, targets), GRADIENT)
    torch.testing.assert_close(ours, autograd_input_grad(model, x, targets), rtol=1e-12, atol=1e-14)


def test_capture_is_cached_and_redone_when_the_model_changes() -> None:
    model = small("vgg")
    graph = capture(model)
    assert capture(model) is graph
    model.classifier[6] = nn.Linear(256, 4).double()  # a new output layer: a new graph
    again = capture(model)
    assert again is not graph and again.nodes[-1].weights.module is model.classifier[6]
    with torch.no_grad():  # new values in the same parameters: the graph reads them live
        model.classifier[6].weight.mul_(2)
    x = seeded_images(0, b=1)
    torch.testing.assert_close(record(model, x).logits, model(x), rtol=1e-12, atol=1e-12)


def test_propagate_checks_signal_shape() -> None:
    model, x = small("vgg"), seeded_images(0, b=2)
    trace = record(model, x)
    with pytest.raises(ValueError, match="start signal has shape"):
        propagate(trace, torch.zeros(2, 7, dtype=x.dtype), GRADIENT)


def test_nothing_is_registered_on_the_model(model: nn.Module) -> None:
    record(model, seeded_images(0))
    for m in model.modules():
        assert not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks)
    assert all(p.grad is None for p in model.parameters())


def test_user_hooks_do_not_run_and_stay() -> None:
    """The engine never calls the user's modules, so their hooks neither run nor are removed."""
    model, calls = small("vgg"), []
    handle = model.features[0].register_forward_hook(lambda *a: calls.append(1))
    dh.explain("guided_backprop", model, seeded_images(0, b=1))
    assert calls == [] and len(model.features[0]._forward_hooks) == 1
    handle.remove()


def test_an_in_place_activation_never_writes_through_a_view_into_a_kept_tensor() -> None:
    """conv → flatten (a view of the conv's output) → ReLU: with the conv's output kept, the ReLU must not run in
    place on the view (it would overwrite the kept map). The conv's output is 1×1, so that the flatten is a view in
    either memory layout (conv_layout)."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.ReLU(inplace=True), nn.Linear(8, 2)).double()
    x = seeded_images(0, b=2, size=3) - 0.5
    trace = record(model.eval(), x, rules=GUIDED, keep=[0])
    with torch.no_grad():
        conv = model[0](x)
    assert (conv < 0).any()
    torch.testing.assert_close(trace.output(0), conv, rtol=1e-12, atol=1e-12)


def test_on_the_cpu_the_trace_is_channels_last_and_selecting_rows_keeps_it() -> None:
    """conv_layout: the recorded convolution outputs are channels-last on the CPU (where oneDNN is fastest on them);
    select (vebi's k walks per image) returns the same values as index_select in that layout, and the max-pooling
    rule answers a channels-last signal in that layout (a layout change would copy at every rule)."""
    model, x = small("vgg"), seeded_images(5, b=2)
    trace = record(model, x, rules=GUIDED, keep=[0])
    first = trace.output(0)
    assert first.is_contiguous(memory_format=torch.channels_last) and not first.is_contiguous()
    rows = torch.tensor([1, 0, 1])
    picked = trace.select(rows).output(0)
    assert torch.equal(picked, first.index_select(0, rows))
    assert picked.is_contiguous(memory_format=torch.channels_last)
    pool = next(n for n in trace.nodes if n.kind == "maxpool")
    signal = torch.randn(trace.shape(pool.index), dtype=x.dtype).contiguous(memory_format=torch.channels_last)
    back = GUIDED.rule(pool)(pool, trace, signal)
    assert back.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(back, GUIDED.rule(pool)(pool, trace, signal.contiguous()), rtol=0, atol=0)
