"""Every method on every architecture: torchvision's VGG-16, AlexNet, ResNet-18 and -50, MobileNetV2, MobileNetV3-
small, EfficientNet-B0, DenseNet-121, EfficientNet-Lite0 and the four shipped an8Flower nets — the contract, the
exact gradient, the peers as oracles, and the refusals that replace the peers' silent gradients."""

from __future__ import annotations

import functools
import warnings

import pytest
import torch
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

import dvehelpers as dh
from dvehelpers.methods import vebi

from . import zoo
from .conftest import snapshot

ALL = sorted(dh.METHODS)


@functools.cache
def interpretation(name: str) -> vebi.Interpretation | None:
    """An interpretation of a torchvision net with 3 relevant features per class drawn at random (seeded) from
    all its features (the shipped nets carry fitted ones). The explanation stage is what runs here; fitting on
    1000 ImageNet classes is not (the μ-lasso is tested on its own, in test_vebi.py)."""
    if name in zoo.SHIPPED:
        return None
    model = zoo.model(name)
    layout = vebi.feature_layout(model, size=zoo.size(name))
    g = torch.Generator().manual_seed(0)
    w = torch.zeros(layout.size, 1000, dtype=torch.float64)
    for j in range(1000):
        w[torch.randperm(layout.size, generator=g)[:3], j] = torch.rand(3, generator=g, dtype=torch.float64) + 0.1
    return vebi.Interpretation(w, layout.layers, layout.channels, 5.0, False, "ground_truth", True, torch.zeros(1000))


def params_for(method: str, name: str) -> dict:
    """What a method needs besides its defaults on ``name``: a fitted interpretation (vebi), and smooth="gradient"
    for the backward-modifying methods on the nets with smooth activations (they refuse them by default)."""
    p: dict = {}
    if method == "vebi" and name not in zoo.SHIPPED:
        p["interpretation"] = interpretation(name)
    if name in zoo.SMOOTH_NETS and "smooth" in {q.name for q in dh.METHODS[method].params}:
        p["smooth"] = "gradient"
    return p


def explain(method: str, model: nn.Module, x: torch.Tensor, target: object, name: str) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # vebi's notice when a class has fewer relevant features than k
        return dh.explain(method, model, x, target, **params_for(method, name))


# ---------------------------------------------------------------- the contract, for every pair


@pytest.mark.parametrize("method", ALL)
@pytest.mark.parametrize("name", zoo.ARCHITECTURES)
def test_contract_on_every_architecture(name: str, method: str) -> None:
    """Shape, dtype, range and no NaN; a batch equals its images one by one (float64); and the call leaves no hook,
    gradient, mode change or weight change behind."""
    model, x = zoo.model(name), zoo.images(name, b=2)
    model.train()  # the engine must use eval semantics without changing the mode
    before = snapshot(model)
    targets = torch.tensor([1, 3])
    batch = explain(method, model, x, targets, name)
    after = snapshot(model)
    assert before[:4] == after[:4] and all(torch.equal(before[4][k], after[4][k]) for k in before[4])
    assert batch.shape == (2, *x.shape[-2:]) and batch.dtype == x.dtype
    assert torch.isfinite(batch).all() and batch.min() >= 0 and batch.max() <= 1
    single = torch.cat([explain(method, model, x[i : i + 1], int(targets[i]), name) for i in range(2)])
    torch.testing.assert_close(batch, single, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name", zoo.ARCHITECTURES)
def test_an_exception_leaves_no_trace(name: str) -> None:
    """A method that fails half-way (a class index out of range, found after the forward pass) leaves the model
    as it was."""
    model, x = zoo.model(name), zoo.images(name, b=1)
    before = snapshot(model)
    with pytest.raises(ValueError, match="out of range"):
        dh.explain("gradcam", model, x, target=10**6)
    after = snapshot(model)
    assert before[:4] == after[:4]


# ---------------------------------------------------------------- the exact gradient and the canonical forms


def autograd_input_grad(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(x).gather(1, targets[:, None]).sum(), x)
    return g


@pytest.mark.parametrize("name", zoo.ARCHITECTURES)
def test_gradient_equals_autograd_on_every_architecture(name: str) -> None:
    model, x = zoo.model(name), zoo.images(name, b=2, seed=1)
    targets = torch.tensor([0, 5])
    trace = dh.engine.record(model, x, rules=dh.engine.GRADIENT)
    ours = dh.engine.propagate(trace, dh.engine.one_hot(trace.logits, targets), dh.engine.GRADIENT)
    ref = autograd_input_grad(model, x, targets)
    assert ref.abs().max() > 0
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-12 * float(ref.abs().max()))


@pytest.mark.parametrize("name", zoo.ARCHITECTURES)
def test_canonical_forms_keep_the_output_and_leave_the_model_alone(name: str) -> None:
    """Dropped no-ops, out-of-place calls, folded batch norms and explicit pads: in float32, the recorded logits equal
    the model's own to 1e-5, and the model (weights, modules, modes) is unchanged."""
    model, x = zoo.model(name, torch.float32), zoo.images(name, b=2, dtype=torch.float32)
    before = snapshot(model)
    modules = [id(m) for m in model.modules()]
    graph = dh.engine.capture(model)
    trace = dh.engine.record(model, x)
    with torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(trace.logits, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
    after = snapshot(model)
    assert before[:4] == after[:4] and all(torch.equal(before[4][k], after[4][k]) for k in before[4])
    assert [id(m) for m in model.modules()] == modules
    assert dh.engine.capture(model) is graph  # cached: captured once
    folded = sum(n.kind == "conv" and n.weights is not None and n.weights.fold is not None for n in graph.nodes)
    bns = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    unfolded = sum(n.kind == "batchnorm" for n in graph.nodes)
    assert folded + unfolded == bns  # every batch norm is folded or kept as an exact affine node
    assert not any(n.kind == "unknown" for n in graph.nodes)


def test_batch_norms_that_follow_no_convolution_stay_exact_nodes() -> None:
    """DenseNet normalises concatenations (nothing to fold into); ResNet's all follow a convolution."""
    dense, resnet = dh.engine.capture(zoo.model("densenet121")), dh.engine.capture(zoo.model("resnet18"))
    # norm1 of the 58 dense layers, the 3 transitions' norms and norm5 follow a concatenation or a pool
    assert sum(n.kind == "batchnorm" for n in dense.nodes) == 58 + 3 + 1
    assert not any(n.kind == "batchnorm" for n in resnet.nodes)


# ---------------------------------------------------------------- names and default layers

DEFAULT_CAM = {
    "vgg16": "relu5_3",
    "alexnet": "relu5",
    "resnet18": "layer4.1.relu_1",
    "resnet50": "layer4.2.relu_2",
    "mobilenet_v2": "features.18.2",
    "mobilenet_v3_small": "features.12.2",
    "efficientnet_b0": "features.8.2",
    "densenet121": "relu",
    "efficientnet_lite0": "_swish_1",
}


@pytest.mark.parametrize("name", list(DEFAULT_CAM))
def test_default_cam_layer_is_the_last_spatial_node_before_global_pooling(name: str) -> None:
    model = zoo.model(name)
    assert dh.models.default_cam_layer(model, 64) == DEFAULT_CAM[name]
    shape = dh.models.layer_shape(model, DEFAULT_CAM[name], 64)
    assert len(shape) == 3 and shape[1] * shape[2] > 1


def test_every_call_of_a_reused_module_is_its_own_node_with_a_call_site_name() -> None:
    """ResNet-50 calls each bottleneck's ReLU three times, EfficientNet-Lite0 each block's ReLU6 twice."""
    resnet = dh.models.layer_names(zoo.model("resnet50"))
    assert {"layer4.2.relu", "layer4.2.relu_1", "layer4.2.relu_2", "layer1.0.add", "flatten"} <= set(resnet)
    lite = dh.engine.capture(zoo.model("efficientnet_lite0"))
    swish = [n.name for n in lite.nodes if n.path == "_blocks.3._swish"]
    assert swish == ["_blocks.3._swish", "_blocks.3._swish_1"]
    assert len(set(lite.names)) == len(lite.names)
    assert dh.models.resolve_layer(zoo.model("resnet50"), "layer4") == resnet.index("layer4.2.relu_2")  # a container


def test_same_padding_of_efficientnet_lite_is_a_pad_node_before_each_convolution() -> None:
    """EfficientNet-Lite's convolutions pad inside their own forward (TF "same"): each becomes a pad node and an
    unpadded convolution, with asymmetric amounts where the total is odd (stride 2 on an even map)."""
    model, x = zoo.model("efficientnet_lite0"), zoo.images("efficientnet_lite0", b=1)
    graph = dh.engine.capture(model)
    convs = [n for n in graph.nodes if n.kind == "conv"]
    assert all(graph.nodes[n.inputs[0]].kind == "pad" and n.spec.padding == (0, 0) for n in convs)
    trace = dh.engine.record(model, x)
    stem_pad = graph.nodes[convs[0].inputs[0]].index
    assert trace.pads[stem_pad] == (0, 1, 0, 1)  # 3×3 stride 2 on 64²: one pixel, at the end


def test_vebi_features_cover_every_activation_call_site() -> None:
    model = zoo.model("efficientnet_lite0")
    graph = dh.engine.capture(model)
    relu6 = [n.name for n in graph.nodes if n.kind == "relu6"]
    assert vebi.default_feature_layers(model) == relu6 and len(relu6) == 2 + 2 * 15 + 1  # stem, blocks, head
    resnet = zoo.model("resnet18")
    assert len(vebi.default_feature_layers(resnet)) == 1 + 2 * 8  # stem and two per basic block


def test_receptive_fields_of_a_residual_network_hold_what_a_unit_sees() -> None:
    """The gradient of a unit of ResNet-18 with respect to the input lies inside the unit's field from the graph
    (both branches of every block counted), and reaches its edges on the interior of the image."""
    model = zoo.model("resnet18")
    size = 96
    for layer in ("layer1.1.relu_1", "layer2.0.relu_1", "layer3.1.relu_1"):
        index = dh.models.resolve_layer(model, layer)
        rf = dh.engine.geometry.receptive_field(model, index, size)
        x = torch.rand(1, 3, size, size, dtype=torch.float64, requires_grad=True)
        body = dh.engine.record(model, x.detach(), upto=index).output(index)
        u, v = body.shape[2] // 2, body.shape[3] // 2
        ref = torch.autograd.grad(_forward_to(model, x, index)[0, :, u, v].sum(), x)[0][0].abs().amax(0)
        rows, cols = (ref > 0).nonzero(as_tuple=True)
        top, left, bottom, right = rf.box((u, v), (size, size))
        assert (
            top <= int(rows.min()) and int(rows.max()) < bottom and left <= int(cols.min()) and int(cols.max()) < right
        )


def _forward_to(model: nn.Module, x: torch.Tensor, index: int) -> torch.Tensor:
    """The output of node ``index`` with autograd, by torchvision's own feature extraction (independent of the
    engine's record)."""
    name = dh.engine.capture(model).nodes[index].name
    return create_feature_extractor(model, return_nodes={name: "out"})(x)["out"]


# ---------------------------------------------------------------- refusals instead of silent gradients


@pytest.mark.parametrize("method", ["guided_backprop", "deconvnet", "guided_gradcam", "fbi"])
@pytest.mark.parametrize("name", zoo.SMOOTH_NETS)
def test_smooth_activations_are_refused_by_name_unless_asked(name: str, method: str) -> None:
    model, x = zoo.model(name), zoo.images(name, b=1)
    with pytest.raises(
        TypeError, match=r"'(features|classifier)\.[\d.]+' \((SiLU|Hardswish|Hardsigmoid|Sigmoid)\).*smooth='gradient'"
    ):
        dh.explain(method, model, x)
    assert dh.explain(method, model, x, smooth="gradient").shape == (1, 64, 64)


class _Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.conv(x).flatten(2).transpose(1, 2)
        return self.fc(self.attn(t, t, t)[0].mean(1))


class _Clip(torch.autograd.Function):
    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx: object, g: torch.Tensor) -> torch.Tensor:
        return g


class _Custom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(_Clip.apply(self.conv(x)).mean((2, 3)))


def test_an_unsupported_node_is_named_with_what_the_rule_set_supports() -> None:
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(
        TypeError,
        match=r"cannot cross node 'getitem' \(an item of attn \(MultiheadAttention\)\).*It supports adaptive_avgpool",
    ):
        dh.explain("gradient", _Attention().eval(), x)
    # a custom autograd function is kept whole (its own backward is invisible to a rule set), never traced into
    with pytest.raises(TypeError, match=r"'clamp' \(custom autograd function _Clip\)|custom autograd function _Clip"):
        dh.explain("guided_backprop", _Custom().eval(), x)


class _Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if y.sum() > 0:  # data-dependent control flow: symbolic tracing cannot follow it
            y = y * 2
        return self.fc(y.mean((2, 3)))


def test_a_model_torch_fx_cannot_trace_gets_an_error_that_says_why_and_what_to_do() -> None:
    with pytest.raises(TypeError, match=r"torch.fx cannot trace _Branchy.*control flow.*traceable copy"):
        dh.explain("gradcam", _Branchy().eval(), torch.rand(1, 3, 8, 8))


def test_a_model_that_returns_a_tuple_is_refused() -> None:
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            y = self.fc(x.mean((2, 3)))
            return y, y

    with pytest.raises(TypeError, match="returns tuple; the engine explains a model that returns one B×K tensor"):
        dh.engine.capture(Two())


def test_a_conv_subclass_that_pads_in_its_own_forward_inside_a_sequential() -> None:
    """The case the sequential engine got wrong (it took the subclass for a plain Conv2d and died on a shape): the
    padding module becomes a pad node, the convolution a conv node, and the gradient is exact."""

    class StaticSame(nn.Conv2d):
        def __init__(self) -> None:
            super().__init__(3, 4, 3, stride=2, bias=False)
            self.static_padding = nn.ZeroPad2d((0, 1, 0, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return nn.functional.conv2d(self.static_padding(x), self.weight, None, self.stride, 0)

    model = nn.Sequential(StaticSame(), nn.ReLU6(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3)).double().eval()
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    assert [n.kind for n in dh.engine.capture(model).nodes] == ["pad", "conv", "relu6", "reshape", "linear"]
    trace = dh.engine.record(model, x, rules=dh.engine.GRADIENT)
    targets = torch.tensor([0, 2])
    ours = dh.engine.propagate(trace, dh.engine.one_hot(trace.logits, targets), dh.engine.GRADIENT)
    torch.testing.assert_close(ours, autograd_input_grad(model, x, targets), rtol=1e-10, atol=1e-13)


# ---------------------------------------------------------------- the peers as oracles

captum_attr = pytest.importorskip("captum.attr", reason="captum is in the dev extra")
zennit_attr = pytest.importorskip("zennit.attribution")
zennit_comp = pytest.importorskip("zennit.composites")
zennit_rules = pytest.importorskip("zennit.rules")
gradcam_lib = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_lite0"])
def test_on_relu6_nets_guided_backprop_is_not_the_gradient_though_the_peers_return_it(name: str) -> None:
    """The peers hook nn.ReLU only: on a ReLU6 network Captum's GuidedBackprop and Deconvolution return exactly the
    plain gradient. Ours applies the guided / DeconvNet rule at every ReLU6 and so differs from the gradient."""
    model, x = zoo.model(name), zoo.images(name, b=2)
    targets = torch.tensor([1, 3])
    peer = dh.models.without_inplace(model)
    grad = autograd_input_grad(model, x, targets)
    for cls in ("GuidedBackprop", "Deconvolution"):
        silent = getattr(captum_attr, cls)(peer).attribute(x, target=targets)
        assert (silent - grad).abs().max() == 0, cls  # the peers' silent failure, measured
    for method in ("guided_backprop", "deconvnet"):
        ours = dh.explain(method, model, x, targets, output="raw")
        assert (ours - grad).abs().max() > 1e-3 * float(grad.abs().max()), method


@pytest.mark.parametrize(("ours", "rule"), [("guided_backprop", "ReLUGuidedBackprop"), ("deconvnet", "ReLUDeconvNet")])
@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet18"])
def test_modified_rules_equal_zennit_with_its_relu_rules_mapped_onto_relu6(name: str, ours: str, rule: str) -> None:
    """Zennit's composites with their ReLU rule also mapped onto nn.ReLU6 (its ``layer_map``): the same signal."""
    model, x = zoo.model(name), zoo.images(name, b=2, seed=3)
    targets = torch.tensor([2, 7])
    peer = dh.models.without_inplace(model)
    hook = getattr(zennit_rules, rule)()
    comp = getattr(zennit_comp, "GuidedBackprop" if rule == "ReLUGuidedBackprop" else "DeconvNet")
    with zennit_attr.Gradient(model=peer, composite=comp(layer_map=[(nn.ReLU6, hook)])) as attributor:
        _, ref = attributor(x, torch.eye(1000, dtype=x.dtype)[targets])
    got = dh.explain(ours, model, x, targets, output="raw")
    assert ref.abs().max() > 0
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-12 * float(ref.abs().max()))


@pytest.mark.parametrize(("ours", "peer"), [("guided_backprop", "GuidedBackprop"), ("deconvnet", "Deconvolution")])
@pytest.mark.parametrize("name", ["vgg16", "alexnet"])
def test_modified_rules_equal_captum_on_relu_nets(name: str, ours: str, peer: str) -> None:
    model, x = zoo.model(name), zoo.images(name, b=2, seed=4)
    targets = torch.tensor([3, 9])
    ref = getattr(captum_attr, peer)(dh.models.without_inplace(model)).attribute(x, target=targets)
    got = dh.explain(ours, model, x, targets, output="raw")
    assert ref.abs().max() > 0
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-12 * float(ref.abs().max()))


def _minmax(a: torch.Tensor) -> torch.Tensor:
    lo = a.flatten(1).min(1).values.view(-1, 1, 1)
    hi = a.flatten(1).max(1).values.view(-1, 1, 1)
    assert (hi > lo).all(), "degenerate reference map"
    return (a - lo) / (hi - lo)


@pytest.mark.parametrize(
    ("name", "module", "targets"),
    [("resnet50", "layer4", [4, 11]), ("densenet121", "features", [7, 3]), ("mobilenet_v2", "features", [1, 2])],
)
def test_gradcam_equals_captum_layergradcam_at_the_same_module(name: str, module: str, targets: list[int]) -> None:
    """Captum's LayerGradCam at a container module (its output) and ours at the node that gives that output (the
    targets: classes whose CAM is not empty on these random nets)."""
    model, x = zoo.model(name), zoo.images(name, b=2, seed=5)
    target = torch.tensor(targets)
    peer = dh.models.without_inplace(model)
    layer_module = peer.get_submodule(module)
    attr = captum_attr.LayerGradCam(peer, layer_module).attribute(x, target=target, relu_attributions=True)
    ref = captum_attr.LayerAttribution.interpolate(attr, x.shape[-2:], "bilinear")[:, 0]
    layer = module if name != "densenet121" else "features.norm5"  # DenseNet's features end in norm5 (F.relu after)
    got = dh.explain("gradcam", model, x, target, layer=layer)
    torch.testing.assert_close(got, _minmax(ref), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("ours", "peer"), [("gradcam", "GradCAM"), ("gradcam_pp", "GradCAMPlusPlus")])
def test_cams_agree_with_pytorch_grad_cam_on_resnet18(ours: str, peer: str) -> None:
    model, x = zoo.model("resnet18", torch.float32), zoo.images("resnet18", b=2, seed=6, dtype=torch.float32)
    targets = [1, 2]  # classes whose CAM is not empty on this random net
    peer_model = dh.models.without_inplace(model)
    with getattr(gradcam_lib, peer)(model=peer_model, target_layers=[peer_model.layer4[-1]]) as cam:
        ref = cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
    got = dh.explain(ours, model, x, torch.tensor(targets), layer="layer4").numpy()
    assert (ref.reshape(2, -1).max(1) > 0.99).all()
    # pytorch-grad-cam normalises around cv2's resize with 1e-7 guards: close, not equal (see test_oracles)
    assert abs(got - ref).max() < (2e-3 if ours == "gradcam" else 1e-2)


def test_fbi_with_all_maps_no_mask_switches_and_zero_biases_is_deconvnet_on_resnet18() -> None:
    """The paper's remark, on a residual network: with 100 % of the maps, no mask, DeconvNet's unpooling, the
    class indicator as start and zero dense biases, FBI's walk is DeconvNet's (adds copy, batch norms folded)."""
    model, x = zoo.model("resnet18"), zoo.images("resnet18", b=2, seed=7)
    with torch.no_grad():
        model.fc.bias.zero_()
    targets = torch.tensor([6, 1])
    params = {"mask": "none", "k_fraction": 1.0, "unpool": "switches", "start": "one_hot"}
    fbi = dh.explain("fbi", model, x, targets, output="raw", **params)
    deconv = dh.explain("deconvnet", model, x, targets, output="raw")
    assert deconv.abs().max() > 0
    torch.testing.assert_close(fbi, deconv, rtol=1e-10, atol=1e-12 * float(deconv.abs().max()))
    # the proportional split of the residual adds is another walk
    split = dh.explain("fbi", model, x, targets, output="raw", add="proportional", **params)
    assert not torch.allclose(split, deconv)
