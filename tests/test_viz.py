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
