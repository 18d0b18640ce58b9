"""Layer geometry: ``output_sizes`` equals the spatial shapes of the model's own modules run one after the other,
and receptive fields equal what a perturbation probe sees."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn
from torchvision import models as tvm

import dvehelpers as dh

from .conftest import odd_sequential, small

Size = tuple[int, int]
SIZES: list[int | Size] = [97, 112, 131, (112, 128), (131, 97)]


def leaves(model: nn.Module) -> list[nn.Module]:
    """The layers of a VGG / AlexNet / nn.Sequential in forward order, as the captured graph has them: without the
    eval-mode no-ops (dropout, identity) and without a batch norm that follows a convolution (folded into it)."""
    if isinstance(model, (tvm.VGG, tvm.AlexNet)):
        mods = [*leaves(model.features), model.avgpool, nn.Flatten(), *leaves(model.classifier)]
    else:
        mods = [
            m for child in model.children() for m in (leaves(child) if isinstance(child, nn.Sequential) else [child])
        ]
    out: list[nn.Module] = []
    for m in mods:
        if isinstance(m, (nn.Dropout, nn.Identity)):
            continue
        if isinstance(m, nn.BatchNorm2d) and out and isinstance(out[-1], nn.Conv2d):
            continue
        out.append(m)
    return out


def recorded_sizes(model: nn.Module, size: int | Size) -> list[Size | None]:
    """The (h, w) of every layer's output from the model's own modules applied one after the other (None where
    the output is flat): a forward pass independent of the engine."""
    h, w = (size, size) if isinstance(size, int) else size
    ref = next(model.parameters())
    x = torch.zeros(1, 3, h, w, dtype=ref.dtype, device=ref.device)
    out = []
    with torch.no_grad():
        for m in leaves(model):
            x = m(x)
            out.append(tuple(x.shape[-2:]) if x.ndim == 4 else None)
    return out  # type: ignore[return-value]


@functools.cache
def model_named(name: str) -> nn.Module:
    if name == "odd":
        return odd_sequential(torch.float32)
    if name in ("vgg16", "alexnet-imagenet"):
        with torch.device("meta"):  # shapes only: no weights allocated, nothing computed
            return dh.models.build(name, 1000)
    return small(name, dtype=torch.float32)


def assert_matches(model: nn.Module, size: int | Size) -> list[Size | None]:
    """output_sizes equals the forward pass, and is None exactly from the flatten on."""
    got = dh.engine.geometry.output_sizes(model, size)
    assert got == recorded_sizes(model, size), size
    kinds = [n.kind for n in dh.engine.capture(model).nodes]
    if "reshape" in kinds:
        flat = kinds.index("reshape")
        assert all(hw is not None for hw in got[:flat]) and all(hw is None for hw in got[flat:])
    return got


@pytest.mark.parametrize("size", SIZES, ids=str)
@pytest.mark.parametrize("name", ["vgg", "alexnet", "odd"])
def test_output_sizes_equal_the_forward_pass(name: str, size: int | Size) -> None:
    """Small VGG, small AlexNet and the odd Sequential (BN, avg pool, dilation, groups, 'valid'), odd and
    non-square sizes."""
    assert_matches(model_named(name), size)


@pytest.mark.parametrize("size", [224, 227, (224, 256)], ids=str)
@pytest.mark.parametrize("name", ["vgg16", "alexnet-imagenet"])
def test_output_sizes_of_the_imagenet_networks(name: str, size: int | Size) -> None:
    """torchvision VGG-16 and AlexNet (strided 11×11 conv, overlapping pools, adaptive pool to 7×7 / 6×6)."""
    assert_matches(model_named(name), size)


def pool_zoo() -> nn.Sequential:
    """Ceil-mode and padded pools, 'same' (even kernel, dilated) and 'valid' convs, rectangular windows."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding="same"),
        nn.Conv2d(4, 4, 4, padding="same", dilation=2),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2, ceil_mode=True),
        nn.Conv2d(4, 4, (3, 5), stride=(2, 1), padding=(1, 2)),
        nn.Conv2d(4, 4, 3, padding="valid"),
        nn.MaxPool2d(2, stride=2, padding=1, ceil_mode=True),
        nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True),
        nn.MaxPool2d((2, 3), stride=(1, 2), dilation=(2, 1)),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, 3),
    ).eval()


@pytest.mark.parametrize("size", [*range(33, 50), (35, 48), (48, 37)], ids=str)
def test_output_sizes_of_ceil_mode_pools_and_string_paddings(size: int | Size) -> None:
    """Every size from 33 to 49 (both parities at every pool) and two rectangles."""
    assert_matches(pool_zoo(), size)


def test_ceil_mode_drops_a_window_that_starts_in_the_right_padding() -> None:
    """PyTorch's rule: with ceil_mode the last window must start inside the input or the left padding."""
    model = nn.Sequential(nn.Conv2d(3, 1, 1), nn.MaxPool2d(2, stride=2, padding=1, ceil_mode=True))
    # 5 + 2 − 2 = 5 spans ⌈5/2⌉ + 1 = 4 windows, but the 4th would start at 6 ≥ 5 + 1: 3 windows
    assert dh.engine.geometry.output_sizes(model, 5) == [(5, 5), (3, 3)] == recorded_sizes(model, 5)
    assert dh.engine.geometry.output_sizes(model, (4, 6)) == [(4, 6), (3, 4)] == recorded_sizes(model, (4, 6))


@pytest.mark.parametrize("output_size", [(None, 2), (3, None)], ids=str)
def test_adaptive_pool_with_none_keeps_that_side(output_size: tuple[int | None, int | None]) -> None:
    """AdaptiveAvgPool2d((None, k)) keeps the input's size on the None side (walk supports the layer)."""
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(output_size), nn.Flatten()).eval()
    assert_matches(model, (11, 14))


def test_spatial_size_is_one_entry_of_output_sizes() -> None:
    """spatial_size(model, i, size) is output_sizes(model, size)[i], a flattened step included."""
    model = model_named("vgg")
    sizes = dh.engine.geometry.output_sizes(model, (97, 131))
    for name in ("conv1_1", "pool2", "pool5", "avgpool", "fc6"):
        i = dh.models.resolve_layer(model, name)
        assert dh.engine.geometry.spatial_size(model, i, (97, 131)) == sizes[i]
    assert sizes[dh.models.resolve_layer(model, "pool2")] == (24, 32)
    assert sizes[dh.models.resolve_layer(model, "fc6")] is None


# ---------------------------------------------------------------- receptive fields


def linearised(model: nn.Module) -> nn.Sequential:
    """The model's convolutions and pools up to its first adaptive pool or flatten, max pools made average pools of
    the same window, ReLUs and batch norms left out: every path is linear with non-zero weights, so a pixel changes
    exactly the units that see it (a batch norm scales a channel and moves no window)."""
    layers: list[nn.Module] = []
    for m in leaves(model):
        if isinstance(m, (nn.AdaptiveAvgPool2d, nn.Flatten, nn.Linear)):
            break
        if isinstance(m, nn.MaxPool2d):
            assert m.dilation in (1, (1, 1))  # an average pool has no dilation
            m = nn.AvgPool2d(m.kernel_size, m.stride, m.padding, ceil_mode=m.ceil_mode)
        if isinstance(m, (nn.Conv2d, nn.AvgPool2d)):
            layers.append(m)
    return nn.Sequential(*layers).double().eval()


@pytest.mark.parametrize(("arch", "size"), [("vgg", 64), ("alexnet", 67), ("odd", 61)])
def test_receptive_fields_equal_a_perturbation_probe(arch: str, size: int) -> None:
    """Change one input pixel: the units of each layer that change are exactly those whose analytic window
    (clipped to the image) contains the pixel — at the corners, the centre and an off-grid pixel."""
    torch.manual_seed(0)
    probe = linearised(odd_sequential() if arch == "odd" else dh.models.build(arch, 6))  # odd: dilation, groups
    x = torch.rand(1, 3, size, size, dtype=torch.float64)
    steps = dh.engine.capture(probe).nodes  # one node per layer of the probe
    assert len(steps) == len(probe)
    with torch.no_grad():
        for index in range(len(probe)):
            sub = probe[: index + 1]
            base = sub(x)
            rf = dh.engine.geometry.receptive_field(probe, index)
            for py, px in [(0, 0), (size - 1, size - 1), (size // 2, size // 3), (5, size - 2)]:
                bumped = x.clone()
                bumped[0, :, py, px] += 1.0
                changed = (sub(bumped) - base).abs().amax(1)[0] > 1e-9
                expected = torch.zeros_like(changed)
                for u in range(changed.shape[0]):
                    for v in range(changed.shape[1]):
                        top, left, bottom, right = rf.box((u, v), (size, size))
                        expected[u, v] = top <= py < bottom and left <= px < right
                if arch == "odd":  # a dilated window has holes: never outside it, but not all of it
                    assert not (changed & ~expected).any(), (steps[index].name, py, px)
                else:
                    assert torch.equal(changed, expected), (steps[index].name, py, px)


def test_receptive_field_is_the_bounding_box_of_what_a_unit_sees() -> None:
    """With dilation, groups, batch norm, average and max pools: the pixels a unit's value depends on (its
    gradient's support on the linearised stack) span exactly its clipped window."""
    probe = linearised(odd_sequential())
    steps = dh.engine.capture(probe).nodes
    size = 61
    for index in range(len(probe)):
        rf = dh.engine.geometry.receptive_field(probe, index)
        out = probe[: index + 1](torch.zeros(1, 3, size, size, dtype=torch.float64))
        for u, v in [(0, 0), (out.shape[2] // 2, out.shape[3] - 1)]:
            x = torch.rand(1, 3, size, size, dtype=torch.float64, requires_grad=True)
            probe[: index + 1](x)[0, :, u, v].sum().backward()
            rows, cols = (x.grad[0].abs().amax(0) > 0).nonzero(as_tuple=True)
            top, left, bottom, right = rf.box((u, v), (size, size))
            assert (int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1) == (
                top,
                left,
                bottom,
                right,
            ), (steps[index].name, u, v)


def test_receptive_field_of_a_fully_connected_layer_is_an_error() -> None:
    """An FC unit sees the whole image: no fixed window, a clear error."""
    model = dh.models.build("vgg", 6)
    with pytest.raises(ValueError, match="whole image"):
        dh.engine.geometry.receptive_field(model, dh.models.resolve_layer(model, "fc6"))
