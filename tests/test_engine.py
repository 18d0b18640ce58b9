"""The recorded forward pass and the backward-rule engine against torch.autograd, in float64."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import dvehelpers as dh
from dvehelpers.backprop import DECONVNET, GRADIENT, GUIDED, one_hot, propagate
from dvehelpers.trace import record, walk

from .conftest import odd_sequential, seeded_images, small


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
    trace = record(model, x)
    targets = torch.tensor([0, 3, 5])
    ours = propagate(trace, one_hot(trace.logits, targets), GRADIENT)
    ref = autograd_input_grad(model, x, targets)
    assert ref.abs().max() > 0
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("seed", [0, 1])
def test_gradient_rules_on_every_layer_kind(seed: int) -> None:
    model = odd_sequential()
    x = seeded_images(seed, b=2, size=37)
    trace = record(model, x)
    assert {s.kind for s in trace.steps} >= {
        "conv",
        "batchnorm",
        "relu",
        "maxpool",
        "avgpool",
        "adaptive_avgpool",
        "flatten",
        "dropout",
        "identity",
        "linear",
    }
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
    ar = nn.Sequential(*[s.module for s in walk(model)[: i + 1]])(xr)
    (ref,) = torch.autograd.grad((ar * start).sum(), xr)
    assert ref.abs().max() > 0
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-13)


def test_trace_matches_model_forward_and_keeps_inputs_with_inplace_relu(model: nn.Module) -> None:
    x = seeded_images(1)
    assert any(getattr(m, "inplace", False) for m in model.modules())
    trace = record(model, x)
    torch.testing.assert_close(trace.logits, model(x), rtol=0, atol=0)
    for i, step in enumerate(trace.steps):
        if step.kind == "relu":  # the recorded input still holds negative values: not overwritten
            assert (trace.input(i) < 0).any(), step.name
            torch.testing.assert_close(trace.output(i), trace.input(i).clamp(min=0))


def test_trace_uses_eval_semantics_without_changing_mode() -> None:
    model = odd_sequential().train()
    x = seeded_images(2, b=2, size=37)
    trace = record(model, x)
    assert all(m.training for m in model.modules())
    model.eval()
    torch.testing.assert_close(trace.logits, model(x), rtol=0, atol=0)


def test_keep_from_drops_lower_activations() -> None:
    model, x = small("vgg"), seeded_images(0, b=1)
    trace = record(model, x, keep_from=10)
    assert all(a is None for a in trace.acts[:10]) and all(a is not None for a in trace.acts[10:])
    with pytest.raises(RuntimeError, match="was not kept"):
        trace.input(3)


def test_deconvnet_and_guided_differ_from_gradient_only_at_relus() -> None:
    model, x = small("alexnet"), seeded_images(5, b=1)
    trace = record(model, x)
    start = one_hot(trace.logits, torch.tensor([2]))
    g, d, gb = (propagate(trace, start, r) for r in (GRADIENT, DECONVNET, GUIDED))
    assert not torch.allclose(g, gb) and not torch.allclose(d, gb) and not torch.allclose(g, d)
    # With every ReLU rule set to the gradient's, the three rule sets are one.
    same = GUIDED.with_rules("guided-as-gradient", relu=GRADIENT.rules["relu"])
    torch.testing.assert_close(propagate(trace, start, same), g, rtol=0, atol=0)


def test_after_hook_sees_every_step_top_down() -> None:
    model, x = small("vgg"), seeded_images(0, b=1)
    trace = record(model, x)
    seen: list[str] = []

    def after(step, x_in, signal):  # noqa: ANN001
        seen.append(step.name)
        assert signal.shape == x_in.shape
        return signal

    propagate(trace, one_hot(trace.logits, torch.tensor([0])), GRADIENT.with_rules("spy", after=after))
    assert seen == [s.name for s in reversed(trace.steps)]


def test_walk_rejects_unsupported_module_by_name() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sequential(nn.ReLU(), nn.Tanh()), nn.Flatten())
    with pytest.raises(TypeError, match=r"'1\.1' of type Tanh.*supports"):
        walk(model)
    with pytest.raises(TypeError, match="ResNet"):
        from torchvision.models import resnet18

        walk(resnet18())


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
