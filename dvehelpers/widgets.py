"""ipywidgets explorers built from the registry: method, image, target class and every method parameter; the same on
your own photo (a file upload) with an ImageNet classifier; and a browser of the rendered dataset.

Each parameter spec (:class:`dvehelpers.registry.Param`) becomes one control; changing any control
recomputes the map (``continuous_update=False`` on sliders, so a drag computes once, on release). The figure
says what it was drawn with (method, target with its probability, every parameter that differs from its
registry default). An error in a redraw is shown in the explorer's red error area, never only in the kernel log.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import ipywidgets as W
import matplotlib.pyplot as plt
import torch
import traitlets
from IPython.display import display
from matplotlib.figure import Figure
from torch import Tensor, nn

from .data import VARIANTS, class_names, rotation_sweep
from .images import PHOTOS, decode, photos, preprocess
from .models import default_size, layer_names, num_classes
from .registry import METHODS, Param, explain
from .train import probabilities
from .viz import HEAT_LABEL, heat_colorbar, mask_outline, output_kind, overlay, prediction_labels, show, to_rgb

__all__ = [
    "DEFAULT",
    "OptionalNumber",
    "param_widget",
    "widget_value",
    "Explorer",
    "explorer",
    "PhotoExplorer",
    "photo_explorer",
    "DatasetBrowser",
    "dataset_browser",
]


class _Default:
    """The option value that stands for ``None`` ("top-1", "default") in a dropdown.

    ipywidgets 8 treats a ``None`` value as "nothing selected" and shows an empty box, so dropdowns hold
    this sentinel instead and :func:`widget_value` / :class:`Explorer` turn it back into ``None``.
    """

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT = _Default()


def _option(value: Any) -> Any:
    return DEFAULT if value is None else value


def _unwrap(value: Any) -> Any:
    return None if value is DEFAULT else value


def _dropdown(options: Sequence[tuple[str, Any]], value: Any, **kwargs: Any) -> W.Dropdown:
    """A dropdown whose ``None`` option values are stored as :data:`DEFAULT` (so the label shows)."""
    return W.Dropdown(options=[(label, _option(v)) for label, v in options], value=_option(value), **kwargs)


class OptionalNumber(W.HBox):
    """A number that may also be ``None`` (the method's own default): an "auto" checkbox and a slider.

    ``value`` is ``None`` while "auto" is ticked (the slider is then disabled), else the slider's value;
    ``disabled`` greys out both.
    """

    value = traitlets.Any(None)
    description = traitlets.Unicode("")
    disabled = traitlets.Bool(False)

    def __init__(self, slider: W.ValueWidget, description: str, tooltip: str = "") -> None:
        self.auto = W.Checkbox(value=True, description=f"{description}: auto", tooltip=tooltip, indent=False)
        self.slider = slider
        slider.disabled = True
        super().__init__([self.auto, slider], description=description)
        self.auto.observe(self._sync, names="value")
        slider.observe(self._sync, names="value")
        self.observe(self._sync, names="disabled")

    def _sync(self, change: Any = None) -> None:
        self.auto.disabled = self.disabled
        self.slider.disabled = self.disabled or self.auto.value
        self.value = None if self.auto.value else self.slider.value


def _log_slider(spec: Param, common: dict[str, Any]) -> W.FloatLogSlider:
    """A base-10 log slider over ``spec.range`` (100 steps), starting at the default or the geometric middle."""
    lo, hi = (math.log10(v) for v in spec.range or (1.0, 10.0))
    value = spec.default if spec.default is not None else 10 ** ((lo + hi) / 2)
    return W.FloatLogSlider(
        value=value,
        base=10,
        min=lo,
        max=hi,
        step=(hi - lo) / 100,
        readout_format=".3g",
        continuous_update=False,
        **common,
    )


def _number_widget(spec: Param, common: dict[str, Any]) -> W.DOMWidget:
    """A control for a ``float`` / ``int`` spec: log slider, linear slider, or a text box."""
    if spec.log:
        slider = _log_slider(spec, common)
        return slider if spec.default is not None else OptionalNumber(slider, spec.name, spec.doc)
    if spec.default is None:  # an optional number: empty text = the method's own default
        return W.Text(value="", placeholder="default", continuous_update=False, **common)
    if spec.range is not None:
        lo, hi = spec.range
        slider = W.IntSlider if spec.kind == "int" else W.FloatSlider
        step = 1 if spec.kind == "int" else (hi - lo) / 100
        return slider(value=spec.default, min=lo, max=hi, step=step, continuous_update=False, **common)
    text = W.IntText if spec.kind == "int" else W.FloatText
    return text(value=spec.default, continuous_update=False, **common)


def param_widget(spec: Param, model: nn.Module | None = None) -> W.DOMWidget:
    """One control for a parameter spec, labelled with its name and described by its doc line."""
    common: dict[str, Any] = {
        "description": spec.name,
        "tooltip": spec.doc,
        "style": {"description_width": "initial"},
    }
    if spec.kind == "object":
        raise ValueError(f"parameter {spec.name!r} is a Python object and has no control; pass it with fixed=")
    if spec.kind == "choice":
        return _dropdown([(str(c), c) for c in spec.choices or ()], spec.default, **common)
    if spec.kind == "bool":
        return W.Checkbox(value=bool(spec.default), **common)
    if spec.kind == "layer":
        names = layer_names(model) if model is not None else []
        return _dropdown([("default", None), *[(n, n) for n in names]], spec.default, **common)
    if spec.kind == "channels":
        return W.Text(
            value="" if spec.default is None else ",".join(map(str, spec.default)),
            placeholder="all (or e.g. 3,17)",
            continuous_update=False,
            **common,
        )
    return _number_widget(spec, common)


def widget_value(spec: Param, widget: W.DOMWidget) -> Any:
    """The parameter value a control holds (channel text ``"3, 17"`` -> ``[3, 17]``, empty or "default" -> None)."""
    value = widget.value
    if isinstance(widget, W.FloatLogSlider) and spec.range is not None:
        return min(max(value, spec.range[0]), spec.range[1])  # 10**log10(x) may overshoot x by an ulp
    if isinstance(widget, W.Text):
        text = value.strip()
        if spec.kind == "channels":
            return None if not text else [int(t) for t in text.replace(" ", "").split(",") if t]
        if spec.kind in ("float", "int"):
            return None if not text else (int(text) if spec.kind == "int" else float(text))
    return _unwrap(value)


def _format(value: Any) -> str:
    """A parameter value as a title shows it: ``relu4_1``, ``0.5``, ``[3, 17]``."""
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


@contextmanager
def _reported(error: W.HTML) -> Iterator[None]:
    """Show any exception escaping the block in ``error`` (type and message), then re-raise it."""
    try:
        yield
    except Exception as err:
        error.value = _error_html(f"{type(err).__name__}: {err}")
        raise


def _error_html(message: str) -> str:
    return f"<span style='color:#b00'>{html.escape(message)}</span>"


def _show(output: W.Output, fig: Figure) -> None:
    """Replace what ``output`` shows with ``fig`` (inline backend: a PNG) and release the pyplot figure."""
    output.clear_output(wait=True)
    with output:
        plt.show()
    plt.close(fig)


def _method_names(methods: Sequence[str] | None, method: str | None) -> list[str]:
    """The explorer's methods (default: all registered), checked, with ``method`` among them."""
    names = list(methods or sorted(METHODS))
    unknown = [m for m in [*names, method] if m is not None and m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; valid: {', '.join(sorted(METHODS))}")
    if method is not None and method not in names:
        raise ValueError(f"method {method!r} is not among the explorer's methods: {', '.join(names)}")
    return names


class _Shown:
    """A widget with a figure: :meth:`show` displays both, so that a reader without a kernel sees a picture."""

    widget: W.Widget
    figure: Figure | None

    def show(self) -> None:
        """Display the widget, then a static picture of what it shows now (GitHub, nbviewer and the site render
        no live widget; a notebook run through :func:`dvehelpers.nbclean.finalize` names the picture)."""
        display(self.widget)
        if self.figure is not None:
            display(self.figure)


class Explorer(_Shown):
    """The explorer's state: controls, the output area, the last computed map (``result``) and ``figure``."""

    def __init__(
        self,
        model: nn.Module,
        images: Tensor,
        class_names: Sequence[str] | None = None,
        methods: Sequence[str] | None = None,
        display: Tensor | None = None,
        masks: Tensor | None = None,
        method: str | None = None,
        fixed: Mapping[str, Mapping[str, Any]] | None = None,
        labels: Tensor | Sequence[int] | None = None,
    ) -> None:
        self.model, self.images, self.masks, self.labels = model, images, masks, labels
        self.fixed = {name: dict(p) for name, p in (fixed or {}).items()}
        self.display = images if display is None else display
        names = _method_names(methods, method)
        self.class_names = list(class_names or [str(i) for i in range(num_classes(model))])
        self.method = W.Dropdown(options=names, value=method or names[0], description="method")
        self.index = W.IntSlider(value=0, min=0, max=images.shape[0] - 1, description="image", continuous_update=False)
        classes = [(f"{i}: {n}", i) for i, n in enumerate(self.class_names)]
        self.target = _dropdown([("top-1", None), *classes], None, description="target")
        self.params_box = W.VBox()
        self.output = W.Output()
        self.output.add_class("dve-figure")
        self.error = W.HTML()
        self.error.add_class("dve-error")
        self.result: Tensor | None = None
        self.figure: Figure | None = None
        self.controls: dict[str, W.DOMWidget] = {}
        self.method.observe(self._on_method, names="value")
        for w in (self.index, self.target):
            w.observe(self._redraw, names="value")
        self.widget = W.VBox([W.HBox([self.method, self.index, self.target]), self.params_box, self.error, self.output])
        self.widget.add_class("dve-explorer")
        self._on_method()

    def params(self) -> dict[str, Any]:
        """The method's parameters as the controls set them (``None`` where a control says "default")."""
        spec = METHODS[self.method.value]
        return {name: widget_value(spec.param(name), w) for name, w in self.controls.items()}

    def call_params(self) -> dict[str, Any]:
        """What the method is called with: the controls' values and the method's ``fixed`` parameters."""
        return {**self.fixed.get(self.method.value, {}), **self.params()}

    def target_value(self) -> int | None:
        """The class to explain: ``None`` for top-1."""
        return _unwrap(self.target.value)

    def title(self) -> str:
        """What the figure shows: method, target (with its softmax probability) and non-default parameters."""
        spec = METHODS[self.method.value]
        parts = [spec.name, f"target: {self._target_text()}" if spec.class_specific else "class-agnostic"]
        parts += [f"{k}={_format(v)}" for k, v in self.params().items() if v != spec.param(k).default]
        return " · ".join(parts)

    def _target_text(self) -> str:
        i, target = self.index.value, self.target_value()
        probs = probabilities(self.model, self.images[i : i + 1])[0]
        c = int(probs.argmax()) if target is None else int(target)
        text = f"{self.class_names[c]} (p={float(probs[c]):.2f})"
        return f"top-1 = {text}" if target is None else text

    def _on_method(self, change: Any = None) -> None:
        spec = METHODS[self.method.value]
        # an "object" parameter (a fitted interpretation) has no control: it comes from ``fixed``
        self.controls = {p.name: param_widget(p, self.model) for p in spec.params if p.kind != "object"}
        for w in self.controls.values():
            w.observe(self._redraw, names="value")
        self.params_box.children = tuple(self.controls.values())
        self.target.disabled = not spec.class_specific
        self._redraw()

    def _grey_out(self) -> None:
        """Disable the controls that do not apply under the current choices (e.g. FBI's τ under another mask)."""
        spec, values = METHODS[self.method.value], self.params()
        for name, w in self.controls.items():
            w.disabled = not spec.param(name).applies(values)

    def _redraw(self, change: Any = None) -> None:
        with _reported(self.error):
            self._grey_out()
            i = self.index.value
            try:
                params = self.call_params()
                self.result = explain(
                    self.method.value, self.model, self.images[i : i + 1], self.target_value(), **params
                )
            except (ValueError, TypeError) as err:  # a bad value typed into a control: say so, keep going
                self.error.value = _error_html(str(err))
                return
            self.error.value = ""
            self.figure = self._draw(i)
            _show(self.output, self.figure)

    def _draw(self, i: int) -> Figure:
        """The image and its map, titled with :meth:`title`; a heatmap gets a colour bar."""
        assert self.result is not None
        output = self.params().get("output")
        maps = self.result[0] if output == "features" else self.result[0][None]  # one panel per feature map
        fig, ax = plt.subplots(1, 1 + len(maps), figsize=(3.5 * (1 + len(maps)), 3.3), layout="constrained")
        ax[0].imshow(to_rgb(self.display[i]))
        true = None if self.labels is None else [self.labels[i]]
        ax[0].set_title(prediction_labels(self.model, self.images[i : i + 1], true, self.class_names)[0], fontsize=8)
        ax[0].set_axis_off()
        kind = "heatmap" if output == "features" else output_kind(self.result, output)
        if output == "features":
            for n, (a, m) in enumerate(zip(ax[1:], maps, strict=True)):
                overlay(a, self.display[i], m, title=f"feature {n}")
            heat_colorbar(fig, ax[-1], label=HEAT_LABEL.replace(": ", ":\n"))
        elif kind != "heatmap":
            show(ax[1], self.result[0], kind=kind, title="signed map (grey = 0)" if kind == "signed" else "output")
        else:
            overlay(ax[1], self.display[i], self.result[0], title="map")
            heat_colorbar(fig, ax[1], label=HEAT_LABEL.replace(": ", ":\n"))  # two lines fit the bar's height
        if self.masks is not None:
            for a in ax:
                mask_outline(a, self.masks[i])
        fig.suptitle(self.title(), fontsize=9, wrap=True)
        return fig


def explorer(model: nn.Module, images: Tensor, **options: Any) -> Explorer:
    """An interactive explorer on ``images``; show it with ``.show()``. Options as :class:`Explorer`
    (``class_names``, ``methods`` — default all registered —, ``display``, ``masks``, ``labels`` — true classes, shown
    above the image with the prediction —, ``method``, and ``fixed``:
    parameters per method that have no control, e.g. ``{"vebi": {"interpretation": interp}}``)."""
    return Explorer(model, images, **options)


class PhotoExplorer(_Shown):
    """Explain your own photo: a file upload (any JPEG, PNG … of any size, greyscale or with transparency) above an
    :class:`Explorer` over the offline photos of :data:`dvehelpers.images.PHOTOS`, with the model's top-5 classes of
    the photo shown; any class can be picked as the target. A file that cannot be used (empty, too large, not an
    image, truncated) is named with the reason in the upload's message, never as a traceback."""

    def __init__(
        self,
        model: nn.Module,
        methods: Sequence[str] | None = None,
        method: str | None = "gradcam",
        names: Sequence[str] | None = None,
        size: int | None = None,
        fixed: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.model, self.size = model, size or default_size(model)
        self.device = next(model.parameters()).device
        self.names = list(names or [n for n, p in PHOTOS.items() if p.expected])
        shown = photos(self.names, self.size).to(self.device)
        categories = (getattr(model, "meta", None) or {}).get("categories")
        if methods is None:  # vebi needs a fitted interpretation of ImageNet classes, which photos alone cannot give
            methods = [m for m in sorted(METHODS) if not any(p.kind == "object" for p in METHODS[m].params)]
        self.explorer = Explorer(
            model, preprocess(model, shown), categories, methods, shown, method=method, fixed=fixed
        )
        self.upload = W.FileUpload(accept="image/*", multiple=False, description="your photo")
        self.upload.add_class("dve-upload")
        self.message = W.HTML()
        self.message.add_class("dve-upload-message")
        self.top5 = W.HTML()
        self.top5.add_class("dve-top5")
        self.upload.observe(self._on_upload, names="value")
        self.explorer.index.observe(self._show_top5, names="value")
        self.widget = W.VBox([W.HBox([self.upload, self.message]), self.top5, self.explorer.widget])
        self.widget.add_class("dve-photo-explorer")
        self._show_top5()

    @property
    def figure(self) -> Figure | None:  # type: ignore[override]
        """The explorer's current figure."""
        return self.explorer.figure

    def add(self, data: bytes, name: str = "upload") -> None:
        """Decode a file's bytes (:func:`dvehelpers.images.decode`), add the photo and explain it; a bad file raises
        ``ValueError`` and changes nothing."""
        photo = decode(data, self.size).to(self.device)
        ex = self.explorer
        ex.display = torch.cat([ex.display, photo])
        ex.images = torch.cat([ex.images, preprocess(self.model, photo)])
        self.names.append(name)
        ex.index.max = len(ex.images) - 1
        ex.index.value = ex.index.max  # draws it, and its top-5

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        """The model's top-``k`` classes of the photo shown, with their softmax probabilities."""
        i = self.explorer.index.value
        probs = probabilities(self.model, self.explorer.images[i : i + 1])[0]
        values, idx = probs.topk(min(k, len(probs)))
        names = self.explorer.class_names
        return [(names[j], float(v)) for v, j in zip(values.tolist(), idx.tolist(), strict=True)]

    def _show_top5(self, change: Any = None) -> None:
        items = "".join(f"<li>{html.escape(c)}: {p:.2f}</li>" for c, p in self.top())
        name = html.escape(self.names[self.explorer.index.value])
        self.top5.value = f"<b>{name}</b> — top-5 classes: <ol style='margin:0'>{items}</ol>"

    def _on_upload(self, change: Any) -> None:
        files = change["new"]
        if not files:
            return
        f = files[-1] if isinstance(files, (tuple, list)) else next(iter(files.values()))  # ipywidgets 8 / 7
        name = str(f.get("name", "upload"))
        try:
            self.add(bytes(f["content"]), name)
        except Exception as err:  # any failure is a message in the widget, never a traceback
            reason = str(err) if isinstance(err, ValueError) else f"{type(err).__name__}: {err}"
            self.message.value = _error_html(f"{name}: {reason}")
            return
        self.message.value = html.escape(f"{name}: shown as image {self.explorer.index.value}")


def photo_explorer(model: nn.Module, **options: Any) -> PhotoExplorer:
    """Explain your own photo with an ImageNet classifier (e.g. ``dh.models.load("efficientnet-lite0")``); show it
    with ``.show()``. Options as :class:`PhotoExplorer` (``methods``, ``method``, ``names`` of offline photos, ``size``,
    ``fixed``)."""
    return PhotoExplorer(model, **options)


class DatasetBrowser(_Shown):
    """Browse an8Flower-synth: variant, class, angle and scene (seed); the render and its mask redraw on change."""

    def __init__(self, size: int = 112) -> None:

        self.size = size
        self.variant = W.Dropdown(options=list(VARIANTS), value="single-6c", description="variant")
        self.label = W.Dropdown(options=_class_options(class_names("single-6c")), value=0, description="class")
        self.angle = W.FloatSlider(value=0, min=0, max=359, step=1, description="angle °", continuous_update=False)
        self.scene = W.IntSlider(value=0, min=0, max=999, description="scene seed", continuous_update=False)
        self.output = W.Output()
        self.output.add_class("dve-figure")
        self.error = W.HTML()
        self.error.add_class("dve-error")
        self.image: Tensor | None = None
        self.mask: Tensor | None = None
        self.figure: Figure | None = None
        self.variant.observe(self._on_variant, names="value")
        for w in (self.label, self.angle, self.scene):
            w.observe(self._redraw, names="value")
        rows = [W.HBox([self.variant, self.label]), W.HBox([self.angle, self.scene]), self.error, self.output]
        self.widget = W.VBox(rows)
        self.widget.add_class("dve-browser")
        self._redraw()

    def _on_variant(self, change: Any = None) -> None:

        self.label.unobserve(self._redraw, names="value")
        self.label.options = _class_options(class_names(self.variant.value))
        self.label.value = 0
        self.label.observe(self._redraw, names="value")
        self._redraw()

    def _redraw(self, change: Any = None) -> None:

        with _reported(self.error):
            images, masks = rotation_sweep(
                self.variant.value, self.label.value, [self.angle.value], self.scene.value, self.size
            )
            self.image, self.mask = images[0], masks[0]
            self.error.value = ""
            self.figure = self._draw()
            _show(self.output, self.figure)

    def _draw(self) -> Figure:
        assert self.image is not None and self.mask is not None
        fig, ax = plt.subplots(1, 2, figsize=(5, 2.8), layout="constrained")
        ax[0].imshow(to_rgb(self.image))
        ax[1].imshow(to_rgb(self.image))
        mask_outline(ax[1], self.mask)
        for a, t in zip(ax, ("image", "ground-truth mask"), strict=True):
            a.set_axis_off()
            a.set_title(t, fontsize=9)
        fig.suptitle(
            f"{self.variant.value} · {self.label.label} · angle {self.angle.value:g}° · scene {self.scene.value}",
            fontsize=9,
        )
        return fig


def _class_options(names: Sequence[str]) -> list[tuple[str, int]]:
    return [(f"{i}: {n}", i) for i, n in enumerate(names)]


def dataset_browser(size: int = 112) -> DatasetBrowser:
    """An interactive browser of the rendered dataset; show it with ``.show()``."""
    return DatasetBrowser(size)
