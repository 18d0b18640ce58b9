"""An ipywidgets explorer built from the registry: method, image, target class and every method parameter.

Each parameter spec (:class:`dvehelpers.registry.Param`) becomes one control; changing any control
recomputes the map (``continuous_update=False`` on sliders, so a drag computes once, on release).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ipywidgets as W
import matplotlib.pyplot as plt
from torch import Tensor, nn

from .models import layer_names, num_classes
from .registry import METHODS, Param, explain
from .viz import mask_outline, overlay, signed_image, to_rgb

__all__ = ["param_widget", "widget_value", "Explorer", "explorer", "DatasetBrowser", "dataset_browser"]


def param_widget(spec: Param, model: nn.Module | None = None) -> W.ValueWidget:
    """One control for a parameter spec, labelled with its name and described by its doc line."""
    common: dict[str, Any] = {
        "description": spec.name,
        "tooltip": spec.doc,
        "style": {"description_width": "initial"},
    }
    if spec.kind == "choice":
        return W.Dropdown(options=list(spec.choices or ()), value=spec.default, **common)
    if spec.kind == "bool":
        return W.Checkbox(value=bool(spec.default), **common)
    if spec.kind == "layer":
        names = layer_names(model) if model is not None else []
        return W.Dropdown(options=[("default", None), *[(n, n) for n in names]], value=spec.default, **common)
    if spec.kind == "channels":
        return W.Text(
            value="" if spec.default is None else ",".join(map(str, spec.default)),
            placeholder="all (or e.g. 3,17)",
            continuous_update=False,
            **common,
        )
    if spec.default is None:  # an optional number: empty text = the method's own default
        return W.Text(value="", placeholder="default", continuous_update=False, **common)
    slider = W.IntSlider if spec.kind == "int" else W.FloatSlider
    if spec.range is not None:
        lo, hi = spec.range
        step = 1 if spec.kind == "int" else (hi - lo) / 100
        return slider(value=spec.default, min=lo, max=hi, step=step, continuous_update=False, **common)
    text = W.IntText if spec.kind == "int" else W.FloatText
    return text(value=spec.default, continuous_update=False, **common)


def widget_value(spec: Param, widget: W.ValueWidget) -> Any:
    """The parameter value a control holds (channel text ``"3, 17"`` -> ``[3, 17]``, empty -> None)."""
    if spec.kind == "channels":
        text = widget.value.strip()
        return None if not text else [int(t) for t in text.replace(" ", "").split(",") if t]
    if spec.kind in ("float", "int") and spec.default is None:
        text = widget.value.strip()
        return None if not text else (int(text) if spec.kind == "int" else float(text))
    return widget.value


class Explorer:
    """The explorer's state: controls, the output area and the last computed map (``result``)."""

    def __init__(
        self,
        model: nn.Module,
        images: Tensor,
        class_names: Sequence[str] | None = None,
        methods: Sequence[str] | None = None,
        display: Tensor | None = None,
        masks: Tensor | None = None,
        method: str | None = None,
    ) -> None:
        self.model, self.images, self.masks = model, images, masks
        self.display = images if display is None else display
        names = list(methods or sorted(METHODS))
        unknown = [m for m in names if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; valid: {', '.join(sorted(METHODS))}")
        k = class_names if class_names is not None else [str(i) for i in range(num_classes(model))]
        self.method = W.Dropdown(options=names, value=method or names[0], description="method")
        self.index = W.IntSlider(value=0, min=0, max=images.shape[0] - 1, description="image", continuous_update=False)
        self.target = W.Dropdown(
            options=[("top-1", None), *[(f"{i}: {n}", i) for i, n in enumerate(k)]],
            value=None,
            description="target",
        )
        self.params_box = W.VBox()
        self.output = W.Output()
        self.error = W.HTML()
        self.result: Tensor | None = None
        self.controls: dict[str, W.ValueWidget] = {}
        self.method.observe(self._on_method, names="value")
        for w in (self.index, self.target):
            w.observe(self._redraw, names="value")
        self.widget = W.VBox([W.HBox([self.method, self.index, self.target]), self.params_box, self.error, self.output])
        self._on_method()

    def params(self) -> dict[str, Any]:
        spec = METHODS[self.method.value]
        return {name: widget_value(spec.param(name), w) for name, w in self.controls.items()}

    def _on_method(self, change: Any = None) -> None:
        spec = METHODS[self.method.value]
        self.controls = {p.name: param_widget(p, self.model) for p in spec.params}
        for w in self.controls.values():
            w.observe(self._redraw, names="value")
        self.params_box.children = tuple(self.controls.values())
        self.target.disabled = not spec.class_specific
        self._redraw()

    def _redraw(self, change: Any = None) -> None:
        i = self.index.value
        try:
            params = self.params()
            self.result = explain(self.method.value, self.model, self.images[i : i + 1], self.target.value, **params)
            self.error.value = ""
        except (ValueError, TypeError) as err:  # a bad value typed into a control: say so, keep going
            self.error.value = f"<span style='color:#b00'>{err}</span>"
            return
        self.output.clear_output(wait=True)
        with self.output:
            fig, ax = plt.subplots(1, 2, figsize=(6, 3))
            ax[0].imshow(to_rgb(self.display[i]))
            ax[0].set_axis_off()
            if self.result.ndim == 4:
                ax[1].imshow(to_rgb(signed_image(self.result)[0]))
                ax[1].set_axis_off()
            else:
                overlay(ax[1], self.display[i], self.result[0])
            if self.masks is not None:
                mask_outline(ax[1], self.masks[i])
            ax[1].set_title(self.method.value, fontsize=9)
            plt.show()


def explorer(model: nn.Module, images: Tensor, **options: Any) -> Explorer:
    """An interactive explorer on ``images``; show its ``.widget``. Options as :class:`Explorer`
    (``class_names``, ``methods`` — default all registered —, ``display``, ``masks``, ``method``)."""
    return Explorer(model, images, **options)


class DatasetBrowser:
    """Browse an8Flower-synth: variant, class, angle and scene (seed); the render and its mask redraw on change."""

    def __init__(self, size: int = 112) -> None:
        from .data import VARIANTS, class_names

        self.size = size
        self.variant = W.Dropdown(options=list(VARIANTS), value="single-6c", description="variant")
        self.label = W.Dropdown(options=_class_options(class_names("single-6c")), value=0, description="class")
        self.angle = W.FloatSlider(value=0, min=0, max=359, step=1, description="angle °", continuous_update=False)
        self.scene = W.IntSlider(value=0, min=0, max=999, description="scene seed", continuous_update=False)
        self.output = W.Output()
        self.image: Tensor | None = None
        self.mask: Tensor | None = None
        self.variant.observe(self._on_variant, names="value")
        for w in (self.label, self.angle, self.scene):
            w.observe(self._redraw, names="value")
        self.widget = W.VBox([W.HBox([self.variant, self.label]), W.HBox([self.angle, self.scene]), self.output])
        self._redraw()

    def _on_variant(self, change: Any = None) -> None:
        from .data import class_names

        self.label.unobserve(self._redraw, names="value")
        self.label.options = _class_options(class_names(self.variant.value))
        self.label.value = 0
        self.label.observe(self._redraw, names="value")
        self._redraw()

    def _redraw(self, change: Any = None) -> None:
        from .data import rotation_sweep

        images, masks = rotation_sweep(
            self.variant.value, self.label.value, [self.angle.value], self.scene.value, self.size
        )
        self.image, self.mask = images[0], masks[0]
        self.output.clear_output(wait=True)
        with self.output:
            fig, ax = plt.subplots(1, 2, figsize=(5, 2.6))
            ax[0].imshow(to_rgb(self.image))
            ax[1].imshow(to_rgb(self.image))
            mask_outline(ax[1], self.mask)
            for a, t in zip(ax, ("image", "ground-truth mask"), strict=True):
                a.set_axis_off()
                a.set_title(t, fontsize=9)
            plt.show()


def _class_options(names: Sequence[str]) -> list[tuple[str, int]]:
    return [(f"{i}: {n}", i) for i, n in enumerate(names)]


def dataset_browser(size: int = 112) -> DatasetBrowser:
    """An interactive browser of the rendered dataset; show its ``.widget``."""
    return DatasetBrowser(size)
