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


@pytest.mark.parametrize("name", sorted(dh.METHODS))
def test_every_parameter_spec_gets_a_control(name: str) -> None:
    model = small("alexnet", dtype=torch.float32)
    for spec in dh.METHODS[name].params:
        if spec.kind == "object":  # a fitted interpretation: passed with explorer(fixed=), no control
            with pytest.raises(ValueError, match="no control"):
                widgets.param_widget(spec, model)
            continue
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
    assert set(ex.controls) == {"smooth", "reduction", "output"}
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


def _spy_explain(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, object, dict]]:
    """Record every (method, target, params) the explorer passes to ``explain``."""
    calls: list[tuple[str, object, dict]] = []

    def spy(name: str, model: torch.nn.Module, images: torch.Tensor, target: object = None, **params: object):
        calls.append((name, target, params))
        return dh.explain(name, model, images, target, **params)

    monkeypatch.setattr(widgets, "explain", spy)
    return calls


def test_explorer_dropdowns_show_top1_and_default_and_pass_none(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _spy_explain(monkeypatch)
    model, x = small("vgg", dtype=torch.float32), seeded_images(1, b=2, dtype=torch.float32)
    ex = widgets.explorer(model, x, method="gradcam")
    assert (ex.target.label, ex.target.index) == ("top-1", 0)  # ipywidgets 8 shows a None value as empty
    assert (ex.controls["layer"].label, ex.controls["layer"].index) == ("default", 0)
    assert calls[-1] == ("gradcam", None, {"layer": None})
    ex.controls["layer"].value = "relu4_1"
    ex.target.value = 3
    assert calls[-1] == ("gradcam", 3, {"layer": "relu4_1"})
    ex.controls["layer"].index = 0  # back to "default": None again
    ex.target.index = 0
    assert calls[-1] == ("gradcam", None, {"layer": None})


def test_explorer_picture_names_the_true_class_and_the_prediction() -> None:
    """The static picture a reader without a kernel sees says which image it is: its true class (``labels``) and
    the model's top-1 class with its probability, with the mask outlined on the image too."""
    model, x = small("vgg", dtype=torch.float32), seeded_images(1, b=3, dtype=torch.float32)
    names = [f"c{i}" for i in range(6)]
    masks = torch.zeros(3, *x.shape[-2:], dtype=torch.bool)
    masks[:, 8:20, 8:20] = True
    ex = widgets.explorer(model, x, class_names=names, labels=torch.tensor([4, 1, 2]), masks=masks, method="gradcam")
    with torch.no_grad():
        probs = torch.softmax(model(x[:1]), 1)[0]
    top = int(probs.argmax())
    image = ex.figure.axes[0]
    assert image.get_title() == f"true: c4\npred: c{top} ({float(probs[top]):.2f})"
    assert len(image.collections) == 1  # the mask's outline
    ex.index.value = 1
    assert ex.figure.axes[0].get_title().startswith("true: c1\n")
    unlabelled = widgets.explorer(model, x, class_names=names, method="gradcam")
    assert unlabelled.figure.axes[0].get_title().startswith("pred: ")


def test_explorer_title_names_method_target_probability_and_changed_params() -> None:
    model, x = small("vgg", dtype=torch.float32), seeded_images(1, b=3, dtype=torch.float32)
    names = [f"c{i}" for i in range(6)]
    ex = widgets.explorer(model, x, class_names=names, method="gradcam")
    with torch.no_grad():
        probs = torch.softmax(model(x[:1]), 1)[0]
    top = int(probs.argmax())
    assert ex.figure.get_suptitle() == f"gradcam · target: top-1 = c{top} (p={float(probs[top]):.2f})"
    assert ex.figure.get_layout_engine().__class__.__name__ == "ConstrainedLayoutEngine"
    bar = ex.figure.axes[-1]  # the colour bar: 0 = least, 1 = most salient
    assert (
        len(ex.figure.axes) == 3 and bar.get_ylabel().replace("\n", " ") == viz.HEAT_LABEL and bar.get_ylim() == (0, 1)
    )
    ex.index.value = 2
    ex.target.value = 4
    ex.controls["layer"].value = "relu4_1"
    with torch.no_grad():
        p4 = float(torch.softmax(model(x[2:3]), 1)[0, 4])
    assert ex.figure.get_suptitle() == f"gradcam · target: c4 (p={p4:.2f}) · layer=relu4_1"
    ex.method.value = "guided_backprop"
    ex.controls["output"].value = "raw"  # a signed image: no colour bar
    assert ex.figure.get_suptitle() == f"guided_backprop · target: c4 (p={p4:.2f}) · output=raw"
    assert len(ex.figure.axes) == 2
    ex.method.value = "activation"
    ex.controls["channels"].value = "3, 17"
    assert ex.figure.get_suptitle() == "activation · class-agnostic · channels=[3, 17]"


def test_log_specs_become_log_sliders() -> None:
    spec = dh.Param("lam", 0.01, "sparsity weight", range=(1e-4, 1.0), log=True)
    w = widgets.param_widget(spec)
    assert isinstance(w, W.FloatLogSlider) and w.continuous_update is False
    assert (w.base, w.min, w.max, w.value) == (10, -4.0, 0.0, 0.01)
    w.value = 1.0
    assert widgets.widget_value(spec, w) <= 1.0  # never an ulp outside the range the spec validates
    optional = dh.Param("perplexity", None, "perplexity (None: K/2)", range=(0.5, 999), log=True)
    w = widgets.param_widget(optional)
    assert isinstance(w.slider, W.FloatLogSlider) and w.slider.continuous_update is False
    assert widgets.widget_value(optional, w) is None and w.slider.disabled
    w.auto.value = False
    w.slider.value = 10.0
    assert widgets.widget_value(optional, w) == pytest.approx(10.0) and not w.slider.disabled
    w.auto.value = True
    assert widgets.widget_value(optional, w) is None


def test_explorer_shows_an_unexpected_error_and_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    model, x = small("vgg", dtype=torch.float32), seeded_images(1, b=2, dtype=torch.float32)
    ex = widgets.explorer(model, x, method="gradcam")
    assert ex.error.value == "" and "dve-error" in ex.error._dom_classes

    def broken(*args: object, **kwargs: object) -> torch.Tensor:
        raise RuntimeError("CUDA <out of memory>")

    monkeypatch.setattr(widgets, "explain", broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        ex.index.value = 1
    assert "RuntimeError: CUDA &lt;out of memory&gt;" in ex.error.value  # shown, escaped
    with pytest.raises(RuntimeError):  # a broken first draw fails the cell that builds the explorer
        widgets.explorer(model, x, method="gradcam")


def test_dataset_browser_shows_an_unexpected_error(monkeypatch: pytest.MonkeyPatch) -> None:
    b = widgets.dataset_browser(size=32)
    assert b.figure is not None and "single-6c" in b.figure.get_suptitle()

    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("no such scene")

    monkeypatch.setattr(widgets, "rotation_sweep", broken)  # the name the browser calls
    with pytest.raises(KeyError):
        b.scene.value = 5
    assert "KeyError: &#x27;no such scene&#x27;" in b.error.value


def test_explorer_rejects_a_method_it_does_not_offer() -> None:
    model, x = small("vgg", dtype=torch.float32), seeded_images(1, b=1, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"unknown method\(s\) \['nope'\]; valid: activation"):
        widgets.explorer(model, x, method="nope")
    with pytest.raises(ValueError, match="'gradient' is not among the explorer's methods: gradcam, kl_dve"):
        widgets.explorer(model, x, methods=["gradcam", "kl_dve"], method="gradient")


def test_explorer_draws_fourier_outputs_as_image_grey_centred_signal_or_heatmap() -> None:
    """output="masked" shows the masked image itself, "signed" the map centred on grey (no colour bar), and
    "heatmap" the overlay with its colour bar; the mask is outlined on each."""
    model, x = small("vgg", dtype=torch.float32), seeded_images(2, b=2, dtype=torch.float32)
    masks = torch.zeros(2, 112, 112, dtype=torch.bool)
    masks[:, 30:80, 40:70] = True
    ex = widgets.explorer(model, x, method="fourier_dve", masks=masks)
    ex.index.value = 1
    assert len(ex.figure.axes) == 3 and len(ex.figure.axes[1].images) == 2  # heatmap: overlay and colour bar

    ex.controls["output"].value = "masked"
    masked = dh.explain("fourier_dve", model, x[1:2], output="masked")[0]
    torch.testing.assert_close(ex.result[0], masked)
    (shown,) = ex.figure.axes[1].images
    np.testing.assert_allclose(shown.get_array(), masked.permute(1, 2, 0).numpy(), atol=1e-6)
    assert np.abs(shown.get_array() - viz.signed_image(masked[None])[0].permute(1, 2, 0).numpy()).max() > 0.1
    assert len(ex.figure.axes) == 2 and ex.figure.axes[1].get_title() == "output"
    assert ex.figure.axes[1].collections  # the mask outline

    ex.controls["output"].value = "signed"
    signal = dh.explain("fourier_dve", model, x[1:2], output="signed")[0]
    (shown,) = ex.figure.axes[1].images
    peak = float(signal.abs().max())
    np.testing.assert_allclose(shown.get_array(), (0.5 + signal / (2 * peak)).numpy(), atol=1e-6)
    assert shown.get_cmap().name == "gray" and shown.get_clim() == (0, 1)
    assert len(ex.figure.axes) == 2 and ex.figure.axes[1].get_title() == "signed map (grey = 0)"
    assert ex.figure.axes[1].collections


def test_explorer_greys_out_controls_that_do_not_apply() -> None:
    model, x = small("vgg", dtype=torch.float32), seeded_images(1, b=1, dtype=torch.float32)
    ex = widgets.explorer(model, x, method="fbi")
    tau, keep = ex.controls["tau"], ex.controls["keep_fraction"]
    assert ex.controls["mask"].value == "keep_fraction" and tau.disabled and not keep.disabled
    ex.controls["mask"].value = "tau"
    assert not tau.disabled and keep.disabled
    ex.controls["mask"].value = "none"
    assert tau.disabled and keep.disabled
    ex.controls["output"].value = "raw"  # the RGB reduction only makes a heatmap
    assert ex.controls["reduction"].disabled
    ex.method.value = "fourier_dve"
    assert ex.controls["targeted_on"].disabled and not ex.controls["v_sums"].disabled
    ex.controls["targeted"].value = True
    ex.controls["denoise"].value = False
    assert not ex.controls["targeted_on"].disabled and ex.controls["v_sums"].disabled


def test_optional_number_greys_out_both_parts() -> None:
    w = widgets.OptionalNumber(W.FloatLogSlider(value=1.0, min=-1, max=1), "mu")
    w.auto.value = False
    assert not w.slider.disabled
    w.disabled = True
    assert w.auto.disabled and w.slider.disabled
    w.disabled = False
    assert not w.auto.disabled and not w.slider.disabled


def test_overlay_draws_heat_over_a_grey_copy_of_the_image() -> None:
    red = torch.zeros(3, 8, 8)
    red[0] = 1.0  # a pure red petal: heat of a red hue would vanish on it in colour
    fig, ax = plt.subplots()
    viz.overlay(ax, red, torch.linspace(0, 1, 64).view(8, 8))
    background, heat = ax.get_images()
    np.testing.assert_allclose(background.get_array(), np.full((8, 8), 0.299), rtol=1e-6)  # luma of red
    assert background.get_cmap().name == "gray" and heat.get_cmap().name == viz.HEAT_CMAP != "jet"
    assert torch.allclose(viz.luminance(torch.stack([red, 1 - red])), torch.tensor([0.299, 0.701]).view(2, 1, 1))
    plt.close(fig)


def test_a_missing_map_is_labelled_not_drawn_as_zero_heat() -> None:
    fig, ax = plt.subplots()
    viz.overlay(ax, torch.rand(3, 8, 8), torch.full((8, 8), float("nan")))
    assert len(ax.get_images()) == 1 and ax.get_images()[0].get_cmap().name == "gray"  # no heat layer
    assert [t.get_text() for t in ax.texts] == ["no map"]
    plt.close(fig)


def test_show_displays_the_widget_then_a_picture_of_its_first_state(monkeypatch: pytest.MonkeyPatch) -> None:
    shown: list[object] = []
    monkeypatch.setattr(widgets, "display", shown.append)
    model, x = small("vgg", dtype=torch.float32), seeded_images(1, b=2, dtype=torch.float32)
    ex = widgets.explorer(model, x, method="gradcam")
    ex.show()
    assert shown == [ex.widget, ex.figure] and isinstance(ex.figure, matplotlib.figure.Figure)
    browser = widgets.dataset_browser(size=32)
    browser.show()
    assert shown[2:] == [browser.widget, browser.figure]
