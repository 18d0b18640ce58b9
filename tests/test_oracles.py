"""Baselines against peer libraries (Captum, Zennit, pytorch-grad-cam) and a written-out Grad-CAM++ reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dvehelpers as dh

from .conftest import seeded_images, small

captum_attr = pytest.importorskip("captum.attr", reason="captum is in the dev extra")
zennit_attr = pytest.importorskip("zennit.attribution")
zennit_comp = pytest.importorskip("zennit.composites")
gradcam_lib = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

TARGETS = torch.tensor([1, 4, 0])
# Seeds whose random weights give a non-zero CAM for every image and target above (checked in the tests).
CAM_SEED = {"vgg": 1, "alexnet": 0}


def layer_module(model: nn.Module, name: str) -> nn.Module:
    return model.get_submodule(next(n.path for n in dh.engine.capture(model).nodes if n.name == name))


def minmax(a: torch.Tensor) -> torch.Tensor:
    """Per-image min-max of a reference map; refuses constant maps (the test would be vacuous)."""
    lo = a.flatten(1).min(1).values.view(-1, 1, 1)
    hi = a.flatten(1).max(1).values.view(-1, 1, 1)
    assert (hi > lo).all(), "degenerate reference map: pick another seed"
    return (a - lo) / (hi - lo)


@pytest.mark.parametrize(("ours", "peer"), [("guided_backprop", "GuidedBackprop"), ("deconvnet", "Deconvolution")])
def test_input_space_methods_equal_captum(model: nn.Module, ours: str, peer: str) -> None:
    x = seeded_images(7, b=3)
    ref = getattr(captum_attr, peer)(dh.models.without_inplace(model)).attribute(x, target=TARGETS)
    got = dh.explain(ours, model, x, TARGETS, output="raw")
    assert ref.abs().max() > 0
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("ours", "peer"), [("guided_backprop", "GuidedBackprop"), ("deconvnet", "DeconvNet")])
def test_input_space_methods_equal_zennit(model: nn.Module, ours: str, peer: str) -> None:
    x = seeded_images(8, b=3)
    peer_model = dh.models.without_inplace(model)
    with zennit_attr.Gradient(model=peer_model, composite=getattr(zennit_comp, peer)()) as attributor:
        _, ref = attributor(x, torch.eye(6, dtype=x.dtype)[TARGETS])
    got = dh.explain(ours, model, x, TARGETS, output="raw")
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-12)


def test_gradient_equals_captum_saliency(model: nn.Module) -> None:
    x = seeded_images(9, b=3)
    ref = captum_attr.Saliency(dh.models.without_inplace(model)).attribute(x, target=TARGETS, abs=True)
    got = dh.explain("gradient", model, x, TARGETS, reduction="abs_max")
    torch.testing.assert_close(got, minmax(ref.amax(1)), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("layer", [None, "relu4_2"])
def test_gradcam_equals_captum_layergradcam(layer: str | None) -> None:
    model, x = small("vgg", seed=CAM_SEED["vgg"]), seeded_images(10, b=3)
    name = layer or dh.models.default_cam_layer(model)
    peer = dh.models.without_inplace(model)
    attr = captum_attr.LayerGradCam(peer, layer_module(peer, name)).attribute(x, target=TARGETS, relu_attributions=True)
    ref = captum_attr.LayerAttribution.interpolate(attr, x.shape[-2:], "bilinear")[:, 0]
    got = dh.explain("gradcam", model, x, TARGETS, layer=layer)
    torch.testing.assert_close(got, minmax(ref), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("ours", "peer"), [("gradcam", "GradCAM"), ("gradcam_pp", "GradCAMPlusPlus")])
def test_cams_agree_with_pytorch_grad_cam(arch: str, ours: str, peer: str) -> None:
    model, x = (
        small(arch, seed=CAM_SEED[arch], dtype=torch.float32),
        seeded_images(11, b=3, dtype=torch.float32),
    )
    name = dh.models.default_cam_layer(model)
    peer_model = dh.models.without_inplace(model)
    with getattr(gradcam_lib, peer)(model=peer_model, target_layers=[layer_module(peer_model, name)]) as cam:
        ref = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in TARGETS])
    got = dh.explain(ours, model, x, TARGETS).numpy()
    assert (ref.reshape(3, -1).max(1) > 0.99).all()
    # pytorch-grad-cam normalises before and after cv2's resize with 1e-7 guards, and adds 1e-6 to the
    # denominator of Grad-CAM++'s α (which is small in float32 where gradients are): close, not equal.
    assert np.abs(got - ref).max() < (2e-3 if ours == "gradcam" else 1e-2)
    assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.9999


def test_guided_gradcam_is_guided_backprop_times_captum_gradcam() -> None:
    model, x = small("alexnet", seed=CAM_SEED["alexnet"]), seeded_images(10, b=3)
    peer = dh.models.without_inplace(model)
    gb = captum_attr.GuidedBackprop(peer).attribute(x, target=TARGETS)
    attr = captum_attr.LayerGradCam(peer, layer_module(peer, "relu5")).attribute(
        x, target=TARGETS, relu_attributions=True
    )
    cam = minmax(captum_attr.LayerAttribution.interpolate(attr, x.shape[-2:], "bilinear")[:, 0])
    got = dh.explain("guided_gradcam", model, x, TARGETS, output="raw")
    torch.testing.assert_close(got, gb * cam[:, None], rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------- Grad-CAM++, written out from the paper


def _tiny() -> nn.Sequential:
    torch.manual_seed(5)
    return (
        nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(4, 5, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(45, 3),
        )
        .double()
        .eval()
    )


def gradcam_pp_reference(model: nn.Sequential, x: torch.Tensor, c: int, split: int) -> torch.Tensor:
    """Eq. 19 of Chattopadhyay et al. with Y = exp(S_c): the 2nd and 3rd derivatives taken by autograd,
    element by element, then α, w (eq. 10) and relu(Σ w A) — in float64 Python loops."""
    body, head = model[:split], model[split:]
    a = body(x).detach().requires_grad_(True)
    y = torch.exp(head(a)[0, c])
    (d1,) = torch.autograd.grad(y, a, create_graph=True)
    d2 = torch.zeros_like(a)
    d3 = torch.zeros_like(a)
    for idx in np.ndindex(*a.shape):
        (h,) = torch.autograd.grad(d1[idx], a, create_graph=True)
        d2[idx] = h[idx]
        (t,) = torch.autograd.grad(h[idx], a, retain_graph=True, allow_unused=True)
        d3[idx] = 0.0 if t is None else t[idx]
    a = a.detach()[0]
    d1, d2, d3 = d1.detach()[0], d2[0], d3[0]
    cam = torch.zeros(a.shape[1:], dtype=a.dtype)
    for k in range(a.shape[0]):
        w = 0.0
        for i, j in np.ndindex(*a.shape[1:]):
            den = 2 * d2[k, i, j] + a[k].sum() * d3[k, i, j]
            alpha = d2[k, i, j] / den if den != 0 else 0.0
            w += alpha * max(float(d1[k, i, j]), 0.0)
        cam += w * a[k]
    return cam.clamp(min=0)


@pytest.mark.parametrize("c", [0, 1, 2])
def test_gradcam_pp_equals_written_out_eq19(c: int) -> None:
    model = _tiny()
    x = seeded_images(c, b=1, size=12)
    ref = gradcam_pp_reference(model, x, c, split=4)
    assert ref.max() > 0
    ref_up = F.interpolate(ref[None, None], size=(12, 12), mode="bilinear", align_corners=False)[0]
    got = dh.explain("gradcam_pp", model, x, c, layer="3")
    torch.testing.assert_close(got, minmax(ref_up), rtol=1e-8, atol=1e-10)
    # …and differs from plain Grad-CAM, so the α weighting is really applied.
    assert not torch.allclose(got, dh.explain("gradcam", model, x, c, layer="3"), atol=1e-3)
