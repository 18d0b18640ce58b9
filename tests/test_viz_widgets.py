"""Display helpers and the registry-driven explorer."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # tests only; notebooks keep the inline backend

import ipywidgets as W  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import dvehelpers as dh  # noqa: E402
from dvehelpers import viz, widgets  # noqa: E402

from .conftest import seeded_images, small  # noqa: E402


def test_signed_image_centres_zero_on_grey() -> None:
    raw = torch.zeros(2, 3, 4, 4)
    raw[0, 0, 0, 0], raw[0, 1, 1, 1] = 2.0, -1.0
    img = viz.signed_image(raw)
    assert img[0, 0, 0, 0] == 1.0 and img[0, 1, 1, 1] == 0.25 and img[0, 2, 2, 2] == 0.5
    assert torch.equal(img[1], torch.full((3, 4, 4), 0.5))  # all-zero stays grey, no NaN


def test_mask_outline_traces_the_planted_square() -> None:
    mask = torch.zeros(32, 32)
    mask[8:24, 10:20] = 1
    fig, ax = plt.subplots()
    viz.mask_outline(ax, mask)
    verts = np.concatenate([p.vertices for c in ax.collections for p in c.get_paths()])
    assert verts[:, 0].min() >= 9 and verts[:, 0].max() <= 20 and verts[:, 1].min() >= 7 and verts[:, 1].max() <= 24
    assert verts[:, 0].min() < 10 and verts[:, 1].max() > 23
    plt.close(fig)


def test_grid_lays_out_images_maps_and_titles() -> None:
    images = torch.rand(2, 3, 16, 16)
    fig = viz.grid(
        images,
        [torch.rand(2, 16, 16), torch.randn(2, 3, 16, 16)],
        row_titles=["a", "b"],
        col_titles=["image", "map", "raw"],
        masks=torch.ones(2, 16, 16),
    )
    axes = np.array(fig.axes).reshape(2, 3)
    assert [ax.get_title() for ax in axes[0]] == ["image", "map", "raw"]
    assert axes[1, 0].get_title(loc="left") == "b"
    assert len(axes[0, 1].images) == 2 and len(axes[0, 2].images) == 1  # overlay vs signed image
    plt.close(fig)


def test_compare_methods_shows_what_explain_computes() -> None:
    model, x = small("vgg", dtype=torch.float32), seeded_images(0, b=1, dtype=torch.float32)
    fig = viz.compare_methods(model, x, ["gradcam", "gradient"])
    heat = fig.axes[1].images[1].get_array()
    np.testing.assert_allclose(heat, dh.explain("gradcam", model, x)[0].numpy(), atol=1e-6)
    plt.close(fig)


@pytest.mark.parametrize("name", sorted(dh.METHODS))
def test_every_parameter_spec_gets_a_control(name: str) -> None:
    model = small("alexnet", dtype=torch.float32)
    for spec in dh.METHODS[name].params:
        w = widgets.param_widget(spec, model)
        assert w.description == spec.name
        assert widgets.widget_value(spec, w) == spec.default
        if hasattr(w, "continuous_update"):
            assert w.continuous_update is False


def test_numeric_specs_become_bounded_sliders() -> None:
    w = widgets.param_widget(dh.Param("perplexity", 30.0, "t-SNE perplexity", range=(2.0, 50.0)))
    assert isinstance(w, W.FloatSlider) and (w.min, w.max, w.value) == (2.0, 50.0, 30.0)
    w = widgets.param_widget(dh.Param("k", 3, "top-k", kind="int", range=(1, 10)))
    assert isinstance(w, W.IntSlider) and w.continuous_update is False
    spec = dh.Param("channels", None, "channels", kind="channels")
    w = widgets.param_widget(spec)
    w.value = "3, 17"
    assert widgets.widget_value(spec, w) == [3, 17]


def test_explorer_recomputes_on_every_control() -> None:
    model, x = small("vgg", dtype=torch.float32), seeded_images(1, b=3, dtype=torch.float32)
    ex = widgets.explorer(model, x, class_names=[f"c{i}" for i in range(6)], method="gradcam")
    torch.testing.assert_close(ex.result, dh.explain("gradcam", model, x[:1]))
    ex.index.value = 2
    torch.testing.assert_close(ex.result, dh.explain("gradcam", model, x[2:3]))
    ex.target.value = 4
    torch.testing.assert_close(ex.result, dh.explain("gradcam", model, x[2:3], 4))
    ex.controls["layer"].value = "relu4_1"
    torch.testing.assert_close(ex.result, dh.explain("gradcam", model, x[2:3], 4, layer="relu4_1"))
    ex.method.value = "guided_backprop"  # the parameter controls follow the method
    assert set(ex.controls) == {"reduction", "output"}
    ex.controls["output"].value = "raw"
    assert ex.result.shape == (1, 3, 112, 112)
    ex.method.value = "activation"
    assert ex.target.disabled
    ex.controls["channels"].value = "999"  # a bad value is reported, not raised
    assert "invalid for layer" in ex.error.value


def test_image_grid_and_iou_curves() -> None:
    images = torch.rand(7, 3, 16, 16)
    fig = viz.image_grid(images, masks=torch.ones(7, 16, 16), titles=[str(i) for i in range(7)], ncols=4)
    assert len(fig.axes) == 8 and fig.axes[6].get_title() == "6" and not fig.axes[7].images
    plt.close(fig)
    ax = viz.iou_curves({"a": torch.full((3, 19), 0.5, dtype=torch.float64)})
    assert ax.get_legend().get_texts()[0].get_text() == "a (50.0)"
    plt.close(ax.figure)


def test_dataset_browser_renders_what_it_shows() -> None:
    b = widgets.dataset_browser(size=48)
    b.variant.value = "double-12c"
    b.label.value = 7
    b.angle.value = 90
    images, masks = dh.data.rotation_sweep("double-12c", 7, [90], 0, 48)
    assert torch.equal(b.image, images[0]) and torch.equal(b.mask, masks[0])
    assert len(b.label.options) == 12
