"""The method contract of DESIGN.md for every registered method: shapes, range, batching, targets, no trace."""

from __future__ import annotations

import gc

import pytest
import torch
from torch import nn

import dvehelpers as dh

from .conftest import method_params, seeded_images, small, snapshot

ALL = sorted(dh.METHODS)


def trained_like(arch: str) -> nn.Module:
    # float32, as users run it; seed 0 gives non-degenerate maps on the images below
    return small(arch, seed=0, dtype=torch.float32)


@pytest.mark.parametrize("name", ALL)
def test_output_contract(arch: str, name: str) -> None:
    model, x = trained_like(arch), seeded_images(1, b=3, dtype=torch.float32)
    h = dh.explain(name, model, x, **method_params(name, model))
    assert h.shape == (3, 112, 112) and h.dtype == x.dtype and h.device == x.device
    assert torch.isfinite(h).all() and h.min() >= 0 and h.max() <= 1
    flat = h.flatten(1)
    assert ((flat.max(1).values == 1) & (flat.min(1).values == 0) | (flat.max(1).values == 0)).all()


@pytest.mark.parametrize("name", ALL)
def test_batch_equals_one_by_one_with_per_sample_targets(arch: str, name: str) -> None:
    # float64: FBI's masks and top-k maps and vebi's top-k features select by comparing values, and a batch sums a
    # convolution in another order than one image; in float32 a near-tie may fall either way (then a whole entry
    # differs), in float64 rounding sits ~1e-16 below any gap these random images produce
    model, x = small(arch, seed=0), seeded_images(2, b=4)
    targets, params = torch.tensor([5, 0, 3, 3]), method_params(name, model)
    batch = dh.explain(name, model, x, targets, **params)
    single = torch.cat([dh.explain(name, model, x[i : i + 1], int(targets[i]), **params) for i in range(4)])
    torch.testing.assert_close(batch, single, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name", [n for n in ALL if dh.METHODS[n].class_specific])
def test_class_specific_methods_depend_on_target(name: str) -> None:
    model, x = trained_like("vgg"), seeded_images(3, b=1, dtype=torch.float32)
    # KL-DVE's default (literal) reading is class-independent by construction; test its class-specific one
    params = {"reading": "gradient"} if name == "kl_dve" else method_params(name, model)
    maps = torch.stack([dh.explain(name, model, x, c, **params)[0] for c in range(6)])
    assert (maps[1:] - maps[0]).abs().amax() > 1e-2


def test_top1_is_the_default_target(arch: str) -> None:
    model, x = trained_like(arch), seeded_images(4, b=3, dtype=torch.float32)
    top1 = model(x).argmax(1)
    torch.testing.assert_close(dh.explain("gradcam", model, x), dh.explain("gradcam", model, x, top1))


@pytest.mark.parametrize("name", ["gradient", "guided_backprop", "guided_gradcam_pp"])
def test_raw_output_is_signed_input_space_signal(name: str) -> None:
    model, x = trained_like("alexnet"), seeded_images(5, b=2, dtype=torch.float32)
    raw = dh.explain(name, model, x, output="raw")
    assert raw.shape == x.shape
    heat = dh.explain(name, model, x)
    torch.testing.assert_close(heat, dh.maps.normalize(raw.clamp(min=0).norm(dim=1)))


def test_normalize_constant_maps_become_zeros_never_nan() -> None:
    maps = torch.stack([torch.full((4, 4), 3.0), torch.zeros(4, 4), torch.arange(16.0).view(4, 4)])
    out = dh.maps.normalize(maps)
    assert torch.equal(out[0], torch.zeros(4, 4)) and torch.equal(out[1], torch.zeros(4, 4))
    torch.testing.assert_close(out[2], torch.arange(16.0).view(4, 4) / 15)
    # rounding noise on a constant map is not a signal either
    noisy = torch.full((1, 8), 100.0) + torch.tensor([0, 1e-6] * 4)
    assert torch.equal(dh.maps.normalize(noisy), torch.zeros(1, 8))


# ---------------------------------------------------------------- no trace


def assert_same(a: tuple, b: tuple) -> None:
    assert a[:4] == b[:4]
    assert all(torch.equal(a[4][k], b[4][k]) for k in a[4])


@pytest.mark.parametrize("name", ALL)
def test_a_call_leaves_no_trace(name: str) -> None:
    model = trained_like("vgg").train()
    model.features[0].weight.requires_grad_(False)
    params = method_params(name, model)
    before = snapshot(model)
    dh.explain(name, model, seeded_images(6, b=2, dtype=torch.float32), **params)
    after = snapshot(model)
    assert_same(before, after)
    assert all(g is None for g in after[2])


@pytest.mark.parametrize("name", ALL)
def test_a_call_that_raises_leaves_no_trace(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = trained_like("alexnet")
    params = method_params(name, model)
    before = snapshot(model)
    with pytest.raises(ValueError, match="out of range"):
        dh.explain(name, model, seeded_images(6, b=2, dtype=torch.float32), target=99, **params)
    assert_same(before, snapshot(model))


def test_preserved_restores_what_a_misbehaving_method_changed() -> None:
    model = trained_like("vgg")
    before = snapshot(model)

    def rude(model: nn.Module, images: torch.Tensor, target: object = None) -> torch.Tensor:
        model.train()
        model.features[0].register_forward_hook(lambda *a: None)
        for p in model.parameters():
            p.requires_grad_(False)
        model(images).sum()
        raise RuntimeError("boom")

    method = dh.Method("rude", rude, (), "test", False, "")
    with pytest.raises(RuntimeError, match="boom"):
        method(model, seeded_images(0, b=1, dtype=torch.float32))
    assert_same(before, snapshot(model))


def _live_tensors() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


@pytest.mark.parametrize("name", ["gradcam", "guided_gradcam_pp"])
def test_memory_is_flat_over_200_calls(name: str) -> None:
    model, x = trained_like("alexnet"), seeded_images(7, b=2, dtype=torch.float32)
    for _ in range(10):
        dh.explain(name, model, x)
    tensors, rss = _live_tensors(), _rss_mib()
    for _ in range(200):
        dh.explain(name, model, x)
    assert _live_tensors() == tensors
    assert _rss_mib() - rss < 50


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ALL)
def test_cpu_and_cuda_agree(name: str) -> None:
    # float64: the same maps to rounding. Every method selects somewhere (a ReLU's sign, FBI's masks and top-k maps,
    # vebi's top-k features), and two devices sum in different orders (cuDNN may even use TF32 in float32), so
    # in float32 a near-tie may fall either way and move a whole entry; there only the maps' agreement as a whole
    # is checked
    targets = torch.tensor([0, 2, 5])
    model, x = small("vgg", seed=0), seeded_images(8, b=3)
    params = method_params(name, model)
    cpu = dh.explain(name, model, x, targets, **params)
    gpu = dh.explain(name, model.cuda(), x.cuda(), targets.cuda(), **params)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-7, atol=1e-8)
    model32, x32 = trained_like("vgg"), seeded_images(8, b=3, dtype=torch.float32)
    params = method_params(name, model32)
    cpu = dh.explain(name, model32, x32, targets, **params)
    gpu = dh.explain(name, model32.cuda(), x32.cuda(), targets.cuda(), **params).cpu()
    assert (dh.evaluate.correlation(gpu, cpu) > 0.95).all() and (gpu - cpu).abs().mean() < 1e-2
