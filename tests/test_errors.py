"""Every bad input of DESIGN.md's contracts gets a clear error naming the problem and the valid choices."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import dvehelpers as dh

from .conftest import seeded_images, small


@pytest.fixture
def model() -> nn.Module:
    return small("vgg", dtype=torch.float32)


@pytest.fixture
def x() -> torch.Tensor:
    return seeded_images(0, b=2, dtype=torch.float32)


def test_images_not_a_tensor(model: nn.Module) -> None:
    with pytest.raises(TypeError, match="images must be a torch.Tensor"):
        dh.explain("gradcam", model, [[0.0]])


def test_images_wrong_rank(model: nn.Module, x: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"B×C×H×W.*unsqueeze\(0\)"):
        dh.explain("gradcam", model, x[0])


def test_images_wrong_channels(model: nn.Module, x: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="4 channels; the model's first convolution takes 3"):
        dh.explain("gradcam", model, torch.cat([x, x[:, :1]], 1))


def test_images_wrong_dtype(model: nn.Module, x: torch.Tensor) -> None:
    with pytest.raises(TypeError, match="floating-point"):
        dh.explain("gradient", model, (x * 255).to(torch.uint8))
    with pytest.raises(TypeError, match="float64 but the model's weights are torch.float32"):
        dh.explain("gradient", model, x.double())


def test_images_empty_batch(model: nn.Module, x: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="empty batch"):
        dh.explain("gradient", model, x[:0])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_images_not_finite(model: nn.Module, x: torch.Tensor, bad: float) -> None:
    x[1, 2, 3, 4] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        dh.explain("guided_backprop", model, x)


def test_images_on_another_device(model: nn.Module, x: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="images are on meta but the model is on cpu"):
        dh.explain("gradcam", model, x.to("meta"))


def test_images_too_small_names_the_layer(model: nn.Module) -> None:
    with pytest.raises(ValueError, match=r"forward pass failed at layer 'pool\d' \(MaxPool2d at features\.\d+\)"):
        dh.explain("gradcam", model, torch.rand(1, 3, 8, 8))


def test_unknown_layer_lists_valid_names(model: nn.Module, x: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"unknown layer 'conv9_9'; valid names: conv1_1, relu1_1"):
        dh.explain("gradcam", model, x, layer="conv9_9")


def test_cam_on_a_fully_connected_layer(model: nn.Module, x: torch.Tensor) -> None:
    with pytest.raises(
        ValueError, match=r"CAM needs a layer with spatial maps \(B×C×h×w\); fc6 gives shape \(2, 256\)"
    ):
        dh.explain("gradcam", model, x, layer="fc6")


def test_a_node_no_rule_crosses_is_named_with_the_supported_kinds(x: torch.Tensor) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.LeakyReLU(), nn.Flatten(), nn.Linear(4 * 110 * 110, 2))
    with pytest.raises(
        TypeError, match=r"rule set 'gradient' cannot cross node '1' \(LeakyReLU\).*supports adaptive_avgpool, add, "
    ):
        dh.explain("gradient", model, x)
    assert dh.explain("activation", model, x, layer="0").shape == (2, 112, 112)  # forward-only methods still run


def test_class_index_out_of_range(model: nn.Module, x: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"class index 6 out of range: the model has 6 classes \(0..5\)"):
        dh.explain("gradcam", model, x, target=6)
    with pytest.raises(ValueError, match="class index -1 out of range"):
        dh.explain("gradcam", model, x, target=torch.tensor([0, -1]))


def test_target_of_wrong_length_or_type(model: nn.Module, x: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="target has 3 entries for a batch of 2"):
        dh.explain("gradcam", model, x, target=torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="integer class indices"):
        dh.explain("gradcam", model, x, target=torch.tensor([0.0, 1.0]))
    with pytest.raises(TypeError, match="not a bool"):
        dh.explain("gradcam", model, x, target=True)


def test_unknown_method_lists_methods(model: nn.Module, x: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="unknown method 'gradcamm'; valid: activation, deconvnet"):
        dh.explain("gradcamm", model, x)


def test_unknown_parameter_lists_parameters(model: nn.Module, x: torch.Tensor) -> None:
    with pytest.raises(TypeError, match="unknown parameter.*sigma; valid: layer, smooth, reduction, output"):
        dh.explain("guided_gradcam", model, x, sigma=2)


def test_bad_choice_lists_choices(model: nn.Module, x: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="'reduction' got 'max'; valid: 'pos_l2', 'abs_max', 'l2'"):
        dh.explain("gradient", model, x, reduction="max")


def test_bad_channels(model: nn.Module, x: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"channels \[0, 500\] invalid for layer relu5_2 with 128"):
        dh.explain("activation", model, x, channels=[0, 500])
    with pytest.raises(TypeError, match="list of channel indices"):
        dh.explain("activation", model, x, channels="0,1")


def test_param_spec_ranges() -> None:
    p = dh.Param("perplexity", 30.0, "t-SNE perplexity", range=(1.0, 100.0))
    assert p.validate(5) == 5
    with pytest.raises(ValueError, match="outside its range 1.0..100.0"):
        p.validate(0.5)
    with pytest.raises(TypeError, match="must be a number"):
        p.validate("5")
    with pytest.raises(TypeError, match="True or False"):
        dh.Param("denoise", True, "", kind="bool").validate(1)
