"""The figure conventions of dvehelpers.viz, checked on what matplotlib actually draws."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # tests only; notebooks keep the inline backend

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.layout_engine import ConstrainedLayoutEngine  # noqa: E402
from torch import nn  # noqa: E402

import dvehelpers as dh  # noqa: E402
from dvehelpers import viz  # noqa: E402
from dvehelpers.evaluate.experiments import BlurTest  # noqa: E402
from dvehelpers.methods.fourier import FourierSteps  # noqa: E402

from .conftest import seeded_images, small  # noqa: E402


def _pixels(fig: matplotlib.figure.Figure) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3] / 255


def _stem(width: float) -> np.ndarray:
    """A green 2-pixel stem on black, outlined, drawn at a notebook's scale (112 px shown 180 px wide)."""
    img = torch.zeros(3, 112, 112)
    img[1, 20:90, 55:57] = 1.0
    mask = torch.zeros(112, 112, dtype=torch.bool)
    mask[20:90, 55:57] = True
    fig = plt.figure(figsize=(1.8, 1.8), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(viz.to_rgb(img))
    viz.mask_outline(ax, mask, linewidth=width)
    ax.set_axis_off()
    px = _pixels(fig)[90]  # a row through the middle of the stem
    plt.close(fig)
    return px


def test_thin_outline_leaves_a_two_pixel_stem_visible() -> None:
    row = _stem(viz.OUTLINE_WIDTH)
    stem = np.nonzero(row[:, 1] > 0.05)[0]  # the screen columns the stem and its outline cover
    middle = slice((stem.min() + stem.max()) // 2, (stem.min() + stem.max()) // 2 + 2)
    assert (row[middle, 1] > 0.9).all() and (row[middle, 0] < 0.05).all()  # pure green: not covered
    thick = _stem(1.2)  # the old default width whitens the stem's middle: the check above can fail
    assert thick[middle, 0].max() > 0.1


def _boxes(fig: matplotlib.figure.Figure, texts: list) -> list:
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    return [t.get_window_extent(r) for t in texts if t.get_text()]


def test_image_grid_with_a_suptitle_has_no_overlapping_titles() -> None:
    fig = viz.image_grid(torch.rand(6, 3, 32, 32), torch.ones(6, 32, 32), ["red", "orange", "y", "c", "b", "m"])
    fig.suptitle("single-6c: every class from one scene; outline = ground truth")
    assert isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine)
    titles = _boxes(fig, [ax.title for ax in fig.axes])
    (sup,) = _boxes(fig, [fig._suptitle])
    assert len(titles) == 6 and not any(sup.overlaps(t) for t in titles)
    plt.close(fig)


def test_grid_labels_rows_and_columns_and_has_one_named_colour_bar() -> None:
    images = torch.rand(2, 3, 16, 16)
    fig = viz.grid(
        images,
        [torch.rand(2, 16, 16), torch.randn(2, 3, 16, 16)],
        row_titles=["true: a\npred: a (0.90)", "b"],
        col_titles=["image", "map", "raw"],
        masks=torch.zeros(2, 16, 16).index_fill_(1, torch.arange(4, 9), 1),
    )
    *panels, bar = fig.axes
    axes = np.array(panels).reshape(2, 3)
    assert [ax.get_title() for ax in axes[0]] == ["image", "map", "raw"]
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["true: a\npred: a (0.90)", "b"]
    assert bar.get_ylabel() == viz.HEAT_LABEL and bar.get_ylim() == (0.0, 1.0)
    assert len(axes[0, 1].images) == 2 and len(axes[0, 2].images) == 1  # overlay vs signed image
    assert axes[0, 1].collections[0].get_linewidths()[0] == pytest.approx(viz.OUTLINE_WIDTH)
    assert isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine)
    # the row labels and column titles of the first column do not collide
    boxes = _boxes(fig, [axes[0, 0].title, axes[0, 0].yaxis.label, axes[1, 0].yaxis.label])
    assert not boxes[0].overlaps(boxes[1]) and not boxes[1].overlaps(boxes[2])
    plt.close(fig)


def test_method_title_names_only_parameters_that_differ_from_the_defaults() -> None:
    assert viz.method_title("gradcam") == "gradcam"
    assert viz.method_title("gradcam", {"layer": None}) == "gradcam"  # the default itself is not news
    title = viz.method_title("kl_dve", {"reading": "gradient", "layer": "relu5_2", "temperature": 1.0})
    assert title == "kl_dve\nreading=gradient\nlayer=relu5_2"


def _linear_model() -> nn.Module:
    """Logits = (x̄, 0, −x̄) for the image mean x̄: hand-computable probabilities."""
    lin = nn.Linear(3 * 4 * 4, 3, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([1.0, 0.0, -1.0])[:, None].expand(3, 48) / 48)
    return nn.Sequential(nn.Flatten(), lin).eval()


def test_prediction_labels_show_true_class_prediction_and_softmax_probability() -> None:
    images = torch.stack([torch.full((3, 4, 4), 2.0), torch.full((3, 4, 4), -1.0)])
    got = viz.prediction_labels(_linear_model(), images, labels=torch.tensor([0, 1]), class_names=["a", "b", "c"])
    p0 = float(torch.tensor([2.0, 0.0, -2.0]).softmax(0)[0])  # 0.867
    p1 = float(torch.tensor([-1.0, 0.0, 1.0]).softmax(0)[2])  # 0.665
    assert got == [f"true: a\npred: a ({p0:.2f})", f"true: b\npred: c ({p1:.2f})"]
    assert viz.prediction_labels(_linear_model(), images[:1]) == [f"pred: 0 ({p0:.2f})"]
    flipped = _linear_model()
    flipped[1].weight.data.neg_()  # logits (−x̄, 0, x̄)
    two = viz.prediction_labels({"A": _linear_model(), "B": flipped}, images[:1], [0], ["a", "b", "c"])
    assert two == [f"true: a\nA: a ({p0:.2f})\nB: c ({p0:.2f})"]


def test_compare_methods_shows_what_explain_computes_with_labelled_columns() -> None:
    model, x = small("vgg", dtype=torch.float32), seeded_images(0, b=2, dtype=torch.float32)
    fig = viz.compare_methods(
        model,
        x,
        ["gradcam", ("kl_dve", {"reading": "gradient"})],
        labels=torch.tensor([1, 2]),
        class_names=[f"c{i}" for i in range(6)],
    )
    panels = np.array(fig.axes[:-1]).reshape(2, 3)
    np.testing.assert_allclose(
        panels[1, 1].images[1].get_array(), dh.explain("gradcam", model, x)[1].numpy(), atol=1e-6
    )
    kl_map = dh.explain("kl_dve", model, x, reading="gradient")[0].numpy()
    np.testing.assert_allclose(panels[0, 2].images[1].get_array(), kl_map, atol=1e-6)
    assert [ax.get_title() for ax in panels[0]] == ["image", "gradcam", "kl_dve\nreading=gradient"]
    # long titles of neighbouring columns do not run into each other
    fig2 = viz.compare_methods(
        model, x, [("kl_dve", {"reading": r, "layer": "relu5_2"}) for r in ("gradient", "elementwise")]
    )
    boxes = _boxes(fig2, [ax.title for ax in fig2.axes[1:3]])
    assert not boxes[0].overlaps(boxes[1])
    plt.close(fig2)
    assert panels[1, 0].get_ylabel().startswith("true: c2\npred: c")
    plt.close(fig)


def test_iou_curves_keep_coinciding_curves_apart_and_only_references_grey() -> None:
    same = torch.full((3, 19), 0.5, dtype=torch.float64)
    methods = {f"m{k}": same.clone() for k in range(9)}
    ax = viz.iou_curves(methods, references={"mask": torch.ones(3, 19, dtype=torch.float64)})
    *lines, ref = ax.get_lines()
    np.testing.assert_allclose(lines[0].get_ydata(), 50.0)  # ×100, like the legend
    assert len({(ln.get_color(), ln.get_marker()) for ln in lines}) == 9
    assert len({str(ln.get_markevery()) for ln in lines[:3]}) == 3  # markers at staggered thresholds
    grey = {"0.15", "0.4", "0.6", "0.75"}
    assert ref.get_color() in grey and ref.get_linestyle() == "--"
    assert all(
        ln.get_linestyle() == "-" and len(set(np.round(matplotlib.colors.to_rgb(ln.get_color()), 3))) > 1
        for ln in lines
    )
    assert [t.get_text() for t in ax.get_legend().get_texts()][-2:] == ["m8 (50.0)", "mask (100.0)"]
    plt.close(ax.figure)


def test_table_reads_as_aligned_text_and_as_escaped_html() -> None:
    t = viz.table(
        [("vgg", 0.99833, "2 of 600"), ("alexnet <s>", 1.0, "0 of 600")], ["model", "accuracy", "errors"], "T"
    )
    assert str(t).splitlines() == [
        "T",
        "model        accuracy  errors",
        "-----------  --------  --------",
        "vgg               1.0  2 of 600",
        "alexnet <s>       1.0  0 of 600",
    ]
    assert "<td>alexnet &lt;s&gt;</td>" in t._repr_html_() and "<caption" in t._repr_html_()
    assert str(viz.table([(0.12345,)], ["x"], floatfmt=".3f")).splitlines()[-1] == "0.123"
    assert str(viz.table([(0.12345, 0.12345)], ["x", "y"], floatfmt=[".1f", ".3f"])).splitlines()[-1] == "0.1  0.123"
    with pytest.raises(ValueError, match="one format per column"):
        viz.table([(1.0, 2.0)], ["a", "b"], floatfmt=[".1f"])
    with pytest.raises(ValueError, match="every row needs 2 cells"):
        viz.table([(1, 2, 3)], ["a", "b"])


def test_kl_steps_and_bar_panels_draw_the_values_given() -> None:
    from dvehelpers.methods import kl

    logits = torch.tensor([[3.0, -1.0, 0.5, -2.0]], dtype=torch.float64)
    steps = kl.kl_intermediates(logits, torch.tensor([0]), perplexity=2.5)
    names = ["w", "x", "y", "z"]
    fig = viz.kl_steps(steps, names)
    bars = [p.get_height() for p in fig.axes[3].patches]
    np.testing.assert_allclose(bars, steps.z[0].numpy())
    assert fig.axes[3].patches[0].get_facecolor() != fig.axes[3].patches[1].get_facecolor()  # the target stands out
    np.testing.assert_allclose(fig.axes[2].images[0].get_array(), steps.Q[0].numpy())
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == names
    plt.close(fig)
    fig = viz.bar_panels({"T=1": torch.tensor([1.0, -2.0]), "T=10": torch.tensor([0.5, 0.5])}, ["p", "q"], [1])
    assert [p.get_height() for p in fig.axes[0].patches] == [1.0, -2.0] and fig.axes[1].get_title() == "T=10"
    plt.close(fig)


# ---------------------------------------------------------------- output kinds, show, grid(kinds=)


def _full_axes(rows: int = 2, cols: int = 2) -> tuple[matplotlib.figure.Figure, matplotlib.axes.Axes]:
    """An axes filling a small figure, so a data cell's centre maps to a known pixel."""
    fig = plt.figure(figsize=(cols, rows), dpi=50)
    return fig, fig.add_axes((0, 0, 1, 1))


def _pixel_at(fig: matplotlib.figure.Figure, ax: matplotlib.axes.Axes, x: float, y: float) -> np.ndarray:
    """The rendered RGB (0..1) at data point (x, y)."""
    px = _pixels(fig)
    dx, dy = ax.transData.transform((x, y))
    return px[int(px.shape[0] - dy), int(dx)]


def test_output_kind_names_how_each_result_is_drawn() -> None:
    """masked → image; signed/raw or any channel axis → signed; a plain B×H×W map → heatmap."""
    maps, rgb = torch.rand(2, 4, 4), torch.rand(2, 3, 4, 4)
    assert viz.output_kind(rgb, "masked") == "image"
    assert viz.output_kind(maps, "signed") == viz.output_kind(maps, "raw") == "signed"
    assert viz.output_kind(rgb) == viz.output_kind(rgb, "raw") == viz.output_kind(rgb, "signed") == "signed"
    assert viz.output_kind(maps) == viz.output_kind(maps, "heatmap") == "heatmap"
    assert set(viz.KINDS) == {"heatmap", "image", "signed"}


def test_show_draws_an_image_as_is_and_a_signed_map_centred_on_grey() -> None:
    """Read back what is drawn and rendered: RGB unchanged; signed 0 → mid-grey, −peak → black, on a grey scale."""
    img = torch.zeros(3, 2, 2)
    img[0, 0, 0], img[1, 0, 1], img[2, 1, 0], img[:, 1, 1] = 1.0, 0.6, 0.8, 0.3
    fig, ax = _full_axes()
    viz.show(ax, img, kind="image", title="out")
    np.testing.assert_allclose(ax.images[0].get_array(), img.permute(1, 2, 0).numpy())
    assert ax.get_title() == "out" and len(ax.images) == 1
    np.testing.assert_allclose(_pixel_at(fig, ax, 0, 0), [1, 0, 0], atol=2 / 255)  # red, not colour-mapped
    np.testing.assert_allclose(_pixel_at(fig, ax, 0, 1), [0, 0, 0.8], atol=2 / 255)
    plt.close(fig)

    signed = torch.tensor([[-2.0, 0.0], [1.0, 0.5]], dtype=torch.float64)
    fig, ax = _full_axes()
    viz.show(ax, signed, kind="signed")
    np.testing.assert_allclose(ax.images[0].get_array(), [[0.0, 0.5], [0.75, 0.625]])  # 0.5 + v / (2·2)
    assert ax.images[0].get_cmap().name == "gray" and ax.images[0].get_clim() == (0, 1)
    np.testing.assert_allclose(_pixel_at(fig, ax, 1, 0), [0.5, 0.5, 0.5], atol=2 / 255)  # zero is mid-grey
    np.testing.assert_allclose(_pixel_at(fig, ax, 0, 0), [0, 0, 0], atol=2 / 255)
    np.testing.assert_allclose(_pixel_at(fig, ax, 0, 1), [0.75, 0.75, 0.75], atol=2 / 255)
    plt.close(fig)

    rgb = torch.zeros(3, 2, 2)
    rgb[0, 0, 0], rgb[2, 1, 1] = 4.0, -1.0  # one peak over all channels
    fig, ax = _full_axes()
    viz.show(ax, rgb, kind="signed")
    expected = 0.5 + rgb.permute(1, 2, 0).numpy() / 8
    np.testing.assert_allclose(ax.images[0].get_array(), expected)
    plt.close(fig)


def test_show_heatmap_overlays_and_an_unknown_kind_is_an_error() -> None:
    """The heatmap kind is the overlay (image, then the jet map at α = 0.5); other kinds are refused by name."""
    image, heat = torch.rand(3, 4, 4), torch.rand(4, 4)
    fig, ax = plt.subplots()
    viz.show(ax, heat, image, kind="heatmap", title="map")
    assert len(ax.images) == 2 and ax.get_title() == "map"
    np.testing.assert_allclose(ax.images[1].get_array(), heat.numpy())
    assert ax.images[1].get_cmap().name == viz.HEAT_CMAP and ax.images[1].get_alpha() == 0.5
    with pytest.raises(ValueError, match="unknown kind 'masked'; valid: heatmap, image, signed"):
        viz.show(ax, heat, kind="masked")
    plt.close(fig)


def test_grid_kinds_override_the_guess_and_need_one_entry_per_map() -> None:
    """A B×H×W signed map drawn grey-centred with its own per-image peak, an image as is; no heatmap, no bar."""
    images = torch.rand(2, 3, 6, 6)
    signed = torch.zeros(2, 6, 6)
    signed[0, 0, 0], signed[1, 0, 0], signed[1, 2, 2] = 1.0, -4.0, 2.0
    masked = images * 0.5
    fig = viz.grid(images, [signed, masked], kinds=["signed", "image"])
    axes = np.array(fig.axes).reshape(2, 3)  # no colour bar: nothing is a heatmap
    for r in range(2):
        peak = float(signed[r].abs().max())
        np.testing.assert_allclose(axes[r, 1].images[0].get_array(), 0.5 + signed[r].numpy() / (2 * peak))
        np.testing.assert_allclose(axes[r, 2].images[0].get_array(), masked[r].permute(1, 2, 0).numpy())
        assert len(axes[r, 1].images) == len(axes[r, 2].images) == 1
    plt.close(fig)
    default = viz.grid(images, [signed.abs() / 4])  # guessed: a heatmap, overlaid, with the colour bar
    assert len(default.axes) == 5 and len(default.axes[1].images) == 2
    plt.close(default)
    with pytest.raises(ValueError, match=r"kinds needs one entry per map \(1\), got 2"):
        viz.grid(images, [signed], kinds=["signed", "image"])
    with pytest.raises(ValueError, match="unknown kind 'overlay'"):
        viz.grid(images, [signed], kinds=["overlay"])
    plt.close("all")


def test_compare_methods_saturates_heatmaps_only_and_says_so() -> None:
    """saturate=q shows every heatmap divided by its own q-quantile and clipped, leaves a masked image as it is, and
    labels the colour bar and the figure; the maps themselves are not changed."""
    model, x = small("vgg", dtype=torch.float32), seeded_images(0, b=2, dtype=torch.float32)
    fig = viz.compare_methods(model, x, ["gradient", ("fourier_dve", {"output": "masked"})], saturate=0.9)
    *panels, bar = fig.axes
    panels = np.array(panels).reshape(2, 3)
    heat = dh.explain("gradient", model, x)
    top = torch.quantile(heat.flatten(1), 0.9, dim=1)
    for r in range(2):
        np.testing.assert_allclose(
            panels[r, 1].images[1].get_array(), (heat[r] / top[r]).clamp(0, 1).numpy(), atol=1e-6
        )
        masked = dh.explain("fourier_dve", model, x, output="masked")[r].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(panels[r, 2].images[0].get_array(), masked, atol=1e-6)
    assert bar.get_ylabel() == viz.saturated_label(0.9) and "0.9 quantile" in fig.get_supxlabel()
    plt.close(fig)


def test_compare_methods_draws_a_masked_output_as_the_image_itself() -> None:
    """Fourier DVE with output="masked" is the masked image, not grey-centred; gradcam beside it keeps the bar."""
    model, x = small("vgg", dtype=torch.float32), seeded_images(0, b=2, dtype=torch.float32)
    fig = viz.compare_methods(model, x, ["gradcam", ("fourier_dve", {"output": "masked"})])
    *panels, bar = fig.axes
    panels = np.array(panels).reshape(2, 3)
    masked = dh.explain("fourier_dve", model, x, output="masked")
    for r in range(2):
        shown = panels[r, 2].images[0].get_array()
        np.testing.assert_allclose(shown, masked[r].permute(1, 2, 0).numpy(), atol=1e-6)
        grey = viz.signed_image(masked[r : r + 1])[0].permute(1, 2, 0).numpy()
        assert np.abs(shown - grey).max() > 0.1  # the grey-centred version would look different
        assert len(panels[r, 2].images) == 1
    assert panels[0, 2].get_title() == "fourier_dve\noutput=masked"
    assert bar.get_ylabel() == viz.HEAT_LABEL
    plt.close(fig)
    alone = viz.compare_methods(model, x, [("fourier_dve", {"output": "masked"})])
    assert len(alone.axes) == 4  # 2×2 panels and no colour bar for an image
    plt.close(alone)


# ---------------------------------------------------------------- fourier_steps, score_matrix, blur_curves


def _steps() -> FourierSteps:
    """Hand-built FourierSteps (2 images, 3 maps of 5×5), every field different, with planted extremes."""
    g = torch.Generator().manual_seed(0)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    low = r(2, 3, 5, 5).clamp(-0.9, 0.9)
    low[1, 2, 0, 0], low[1, 2, 4, 4] = 3.0, -1.0  # asymmetric: the scale is still ±3
    summed = r(2, 5, 5)
    summed[1] = 0.0  # an all-zero panel keeps a usable scale
    g_low, g_high = torch.rand(5, 5, generator=g, dtype=torch.float64), torch.rand(5, 5, generator=g).double()
    return FourierSteps("pool4", r(2, 3, 5, 5), g_low, g_high, low, r(2, 3, 5, 5), r(2, 3, 5, 5), summed, r(2, 5, 5))


def test_fourier_steps_panels_show_the_chosen_map_on_symmetric_scales() -> None:
    """Every panel draws its own step for image i and the chosen channel; signed scales are ±max|v|."""
    steps = _steps()
    fig = viz.fourier_steps(steps, i=1, channel=2)
    panels = fig.axes[:8]
    expected = {
        0: steps.maps[1, 2],
        2: steps.g_low,
        3: steps.g_high,
        4: steps.low[1, 2],
        5: steps.high[1, 2],
        6: steps.product[1, 2],
        7: steps.summed[1],
    }
    for k, want in expected.items():
        np.testing.assert_allclose(panels[k].images[0].get_array(), want.numpy(), err_msg=panels[k].get_title())
    spectrum = np.fft.fftshift(np.abs(np.fft.fft2(steps.maps[1, 2].numpy())))
    np.testing.assert_allclose(panels[1].images[0].get_array(), spectrum, atol=1e-12)
    assert panels[4].images[0].get_clim() == (-3.0, 3.0)
    assert panels[7].images[0].get_clim() == (-1.0, 1.0)  # all zero: ±1, not a singular scale
    for k in (0, 5, 6):
        peak = float(np.abs(expected[k].numpy()).max())
        assert panels[k].images[0].get_clim() == (-peak, peak)
        assert panels[k].images[0].get_cmap().name == "RdBu_r"
    assert panels[2].images[0].get_clim() == (0, 1)
    assert fig.get_suptitle() == "eq. 3 on one map of pool4 (5×5)" and panels[7].get_title() == "S = Σ over 3 maps"
    assert len(fig.axes) == 16  # one colour bar per panel
    plt.close(fig)


def test_score_matrix_annotates_every_cell_and_boxes_the_best() -> None:
    """Texts read the formatted values at their cells; the red box lies on the best cell, whose rendered colour
    is the top of the colour map (NaN cells are skipped)."""
    values = torch.tensor([[10.0, 20.0, 30.0, 40.0], [55.5, 91.25, 12.0, 33.0], [float("nan"), 70.0, 5.0, 60.0]])
    ax = viz.score_matrix(values, rows=[0.5, 1, 2], cols=["a", "b", "c", "d"], row_label="σ₁", col_label="σ₂")
    fig = ax.figure
    texts = {(t.get_position()[0], t.get_position()[1]): t for t in ax.texts}
    assert len(texts) == 12
    for (r, c), v in np.ndenumerate(values.numpy()):
        assert texts[(c, r)].get_text() == format(v, ".1f")
    assert texts[(1, 1)].get_text() == "91.2" and texts[(0, 2)].get_text() == "nan"
    (box,) = [p for p in ax.patches if isinstance(p, matplotlib.patches.Rectangle)]
    assert box.get_xy() == (0.5, 0.5) and (box.get_width(), box.get_height()) == (1, 1)  # cell (row 1, col 1)
    assert box.get_edgecolor()[:3] == matplotlib.colors.to_rgb("red") and not box.get_fill()
    top = np.array(matplotlib.colormaps["viridis"](1.0)[:3])
    np.testing.assert_allclose(_pixel_at(fig, ax, 0.7, 0.7), top, atol=3 / 255)  # inside the box, off its text
    assert np.abs(_pixel_at(fig, ax, 2.7, 0.7) - top).max() > 0.3  # a low cell is not
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c", "d"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0.5", "1", "2"]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("σ₂", "σ₁")
    assert not ax.yaxis_inverted()  # the first row at the bottom, like a plot's y axis
    plt.close(fig)
    with pytest.raises(ValueError, match=r"values has shape \(3, 4\); rows × cols is \(4, 3\)"):
        viz.score_matrix(values, rows=[1, 2, 3, 4], cols=[1, 2, 3], row_label="r", col_label="c")


def test_blur_curves_plot_accuracy_median_agreement_band_and_mask_iou() -> None:
    """Per panel, against σ: accuracy ×100, the median map agreement ×100 in its quartile band, mean mask IoU ×100."""
    same = torch.tensor([[1.0] * 5, [0.9, 0.1, 0.5, 0.7, 0.3]], dtype=torch.float64)  # quartiles 0.3, 0.5, 0.7
    correct = torch.tensor([[True] * 5, [True, False, False, True, False]])
    mask_iou = torch.tensor([[0.5, 0.4, 0.3, 0.2, 0.1], [0.0, 0.1, 0.2, 0.1, 0.1]], dtype=torch.float64)
    r = BlurTest(torch.tensor([0.0, 2.0], dtype=torch.float64), correct, same, mask_iou)
    fig = viz.blur_curves({"A": r, "B": BlurTest(r.sigmas, ~correct, same.flip(0), mask_iou)})
    a, b = fig.axes
    acc, median, iou = a.get_lines()
    np.testing.assert_allclose(acc.get_xdata(), [0.0, 2.0])
    np.testing.assert_allclose(acc.get_ydata(), [100.0, 40.0])
    np.testing.assert_allclose(median.get_ydata(), [100.0, 50.0])
    np.testing.assert_allclose(iou.get_ydata(), [30.0, 10.0])
    ys = a.collections[0].get_paths()[0].vertices
    assert {round(float(y), 9) for x, y in ys if x == 2.0} == {30.0, 70.0}  # the interquartile band
    np.testing.assert_allclose(b.get_lines()[0].get_ydata(), [0.0, 60.0])
    np.testing.assert_allclose(b.get_lines()[1].get_ydata(), [50.0, 100.0])
    assert (a.get_title(), b.get_title()) == ("A", "B") and a.get_ylim() == (0, 102)
    assert [t.get_text() for t in b.get_legend().get_texts()] == [
        "accuracy",
        "same map as unblurred (median IoU)",
        "mean IoU with mask",
    ]
    plt.close(fig)


def test_score_matrix_marks_a_chosen_cell_apart_from_the_best() -> None:
    """``mark`` adds a white dashed box on that (row, column) cell, named in the title; the red box stays."""
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 9.0, 5.0]])
    ax = viz.score_matrix(values, [1, 2], [1, 2, 3], "r", "c", title="T", mark=(0, 2), mark_label="ours")
    best, marked = [p for p in ax.patches if isinstance(p, matplotlib.patches.Rectangle)]
    assert best.get_xy() == (0.5, 0.5) and best.get_edgecolor()[:3] == matplotlib.colors.to_rgb("red")
    x, y = marked.get_xy()
    assert x + marked.get_width() / 2 == pytest.approx(2) and y + marked.get_height() / 2 == pytest.approx(0)
    assert marked.get_edgecolor()[:3] == (1.0, 1.0, 1.0) and marked.get_linestyle() == "--"
    assert ax.get_title() == "T\nred: best; white dashed: ours"
    plt.close(ax.figure)
    ax = viz.score_matrix(values, [1, 2], [1, 2, 3], "r", "c", mark=(1, 0))
    assert ax.get_title() == "red: best; white dashed: default"
    plt.close(ax.figure)
    ax = viz.score_matrix(values, [1, 2], [1, 2, 3], "r", "c", mark=(1, 0), best=False)
    (marked,) = [p for p in ax.patches if isinstance(p, matplotlib.patches.Rectangle)]
    assert marked.get_linestyle() == "--" and ax.get_title() == "white dashed: default"
    plt.close(ax.figure)


def test_strip_shows_each_step_above_its_heatmap_with_one_colour_bar() -> None:
    """Top row the images, bottom row each map over its image, titles on top, outlines below, one named bar."""
    images, maps = torch.rand(3, 3, 8, 8), torch.rand(3, 8, 8)
    masks = torch.zeros(3, 8, 8)
    masks[:, 2:6, 2:6] = 1
    fig = viz.strip(images, maps, ["σ=0", "σ=1", "σ=2"], masks=masks)
    *panels, bar = fig.axes
    axes = np.array(panels).reshape(2, 3)
    for k in range(3):
        np.testing.assert_allclose(axes[0, k].images[0].get_array(), images[k].permute(1, 2, 0).numpy())
        np.testing.assert_allclose(axes[1, k].images[1].get_array(), maps[k].numpy())
        assert axes[1, k].collections and not axes[0, k].collections  # the mask is outlined on the maps only
    assert [ax.get_title() for ax in axes[0]] == ["σ=0", "σ=1", "σ=2"]
    assert bar.get_ylabel() == viz.HEAT_LABEL.replace(": ", ":\n")  # two lines fit the row's height
    plt.close(fig)


def test_blur_curves_draw_a_result_left_on_the_models_device() -> None:
    """blur_test returns correct/same_map/mask_iou on the model's device (sigmas on the CPU): blur_curves must draw
    that as it is. On a CUDA machine this runs on the GPU, where a CPU ``q`` for torch.quantile is an error."""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    same = torch.tensor([[1.0, 1.0, 1.0], [0.2, 0.8, 0.4]], dtype=torch.float64, device=dev)
    correct = torch.tensor([[True, True, True], [False, True, False]], device=dev)
    r = BlurTest(torch.tensor([0.0, 1.0], dtype=torch.float64), correct, same, same / 2)
    fig = viz.blur_curves({"on the model's device": r})
    acc, median, iou = fig.axes[0].get_lines()
    np.testing.assert_allclose(acc.get_ydata(), [100.0, 100 / 3])
    np.testing.assert_allclose(median.get_ydata(), [100.0, 40.0])
    np.testing.assert_allclose(iou.get_ydata(), [50.0, 700 / 30])
    plt.close(fig)
    photos = BlurTest(r.sigmas, correct, same, torch.full_like(same, float("nan")))  # no masks: no IoU curve
    fig = viz.blur_curves({"photos": photos})
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["accuracy", "same map as unblurred (median IoU)"]
    plt.close(fig)


def test_layer_supports_draws_where_any_map_kept_an_entry() -> None:
    kept = torch.zeros(2, 4, 3, 5, dtype=torch.bool)
    kept[1, :2, 0, 0] = True  # image 1: two maps at the top-left position
    kept[1, :, 2, 4] = True  # all four maps at the bottom-right
    sup = {"relu2": kept, "relu1": torch.ones(2, 2, 6, 6, dtype=torch.bool), "fc": torch.ones(2, 7, dtype=torch.bool)}
    fig = dh.viz.layer_supports(sup, i=1)
    axes = [ax for ax in fig.axes if ax.get_images()]
    assert len(axes) == 2  # the fully connected support has no map
    shown = np.asarray(axes[0].get_images()[0].get_array(), dtype=float)
    assert shown.shape == (3, 5) and shown[0, 0] == 1 and shown[2, 4] == 1 and shown.sum() == 2
    assert axes[0].get_title() == "relu2 (3×5)\n13 % of positions\n10.0 % of entries"  # 2 of 15; 6 of 60
    assert "at least one feature map" in fig.get_supxlabel()
    with pytest.raises(ValueError, match="valid: relu2, relu1"):
        dh.viz.layer_supports(sup, layers=["fc"])
    plt.close(fig)
    image, mask = torch.full((3, 6, 10), 0.5), torch.zeros(6, 10)
    mask[2:4, 3:7] = 1
    fig = dh.viz.layer_supports(sup, i=1, layers=["relu2"], image=image, mask=mask)
    (ax,) = [ax for ax in fig.axes if ax.get_images()]
    shade = ax.get_images()[1].get_array()  # the darkening: nearest-upsampled to the image, masked where kept
    assert shade.shape == (6, 10) and shade.mask[0:2, 0:2].all() and shade.mask[4:6, 8:10].all()
    assert int((~shade.mask).sum()) == 60 - 8
    assert ax.collections  # the mask outline
    assert "shows through" in fig.get_supxlabel()
    plt.close(fig)


# ---------------------------------------------------------------- the evaluation's figures


def _row(method: str, model: str, iou: float, class_r: float = float("nan")) -> dict:
    return {
        "method": method,
        "variant": "single-6c",
        "model": model,
        "mean_iou": iou,
        "ci_low": iou - 1,
        "ci_high": iou + 1,
        "class_r": class_r,
    }


def test_ranking_puts_the_best_method_on_top_and_references_below() -> None:
    rows = [
        _row(m, a, v + (a == "alexnet"))
        for m, v in (("a", 10.0), ("b", 30.0), ("reference: mask", 100.0))
        for a in ("vgg", "alexnet")
    ]
    fig = dh.viz.ranking(rows)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["reference: mask", "a", "b"]  # bottom to top: references, then methods ascending
    ax = fig.axes[0]
    xs = {round(line.get_xdata()[0], 3) for line in ax.lines if len(line.get_xdata()) == 1}
    assert {10.0, 11.0, 30.0, 31.0} <= xs
    # the mask's 100 would squash the methods into the left third: it sits at the axis's edge, its value written
    assert ax.get_xlim()[1] < 50 and not {100.0, 101.0} & xs
    assert sorted(t.get_text().strip() for t in ax.texts) == ["100", "101"]


def test_randomisation_curves_start_at_one_and_thicken_survivors() -> None:
    fig, ax = plt.subplots()
    dh.viz.randomisation_curves(
        {"keeps": torch.tensor([0.9, 0.8]), "drops": torch.tensor([0.2, 0.0])}, ["fc8", "fc7"], ax, 0.5
    )
    keeps, drops = ax.lines[:2]
    assert list(keeps.get_ydata()) == pytest.approx([1.0, 0.9, 0.8]) and drops.get_ydata()[0] == 1.0
    assert keeps.get_linewidth() > drops.get_linewidth()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["trained", "+fc8", "+fc7"]


def test_class_sensitivity_leaves_out_class_agnostic_rows() -> None:
    rows = [_row("gradcam", "vgg", 1, 0.1), _row("guided", "vgg", 1, 0.99), _row("activation", "vgg", 1)]
    fig = dh.viz.class_sensitivity(rows, 0.9)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["gradcam", "guided"]


def test_faithfulness_curves_show_each_auc() -> None:
    p = torch.tensor([[1.0, 0.5, 0.0], [1.0, 1.0, 0.0]])
    fig = dh.viz.faithfulness_curves({"m": {"deletion": p, "insertion": p.flip(1)}})
    label = (
        fig.axes[0].get_legend_handles_labels()[1][0]
        if fig.axes[0].get_legend()
        else fig.axes[1].get_legend_handles_labels()[1][0]
    )
    assert label == f"m ({float(dh.metrics.auc(p).mean()):.3f})" == "m (0.625)"


def test_faithfulness_curves_tell_references_apart_by_dash_and_fit_the_axis_to_the_curves() -> None:
    p = torch.tensor([[0.5, 0.25, 0.0], [0.4, 0.2, 0.0]])
    refs = {f"reference: {n}": {"deletion": p * s} for n, s in (("mask", 0.5), ("random", 0.9), ("centre", 0.8))}
    fig = dh.viz.faithfulness_curves({"m": {"deletion": p}, **refs})
    lines = fig.axes[0].get_lines()
    assert lines[0].get_linestyle() == "-"
    assert [line.get_linestyle() for line in lines[1:]] == ["--"] * 3  # dashed, each its own pattern and grey:
    assert [line.get_color() for line in lines[1:]] == [grey for grey, _ in dh.viz.REFERENCE_STYLES[:3]]
    assert fig.axes[0].get_ylim() == pytest.approx((0.0, 0.45 * 1.1 + 0.01))  # the highest mean curve starts at 0.45
