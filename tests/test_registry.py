"""The registry: every method's entry, registration, dispatch."""

from __future__ import annotations

import inspect

import pytest
import torch

import dvehelpers as dh
from dvehelpers import registry

from .conftest import seeded_images, small

DESIGN_NAMES = {
    "gradient",
    "deconvnet",
    "guided_backprop",
    "gradcam",
    "gradcam_pp",
    "guided_gradcam",
    "guided_gradcam_pp",
    "activation",
}


def test_baselines_are_registered_under_the_design_names() -> None:
    assert set(dh.METHODS) >= DESIGN_NAMES


@pytest.mark.parametrize("name", sorted(dh.METHODS))
def test_entry_is_complete_and_matches_the_function(name: str) -> None:
    m = dh.METHODS[name]
    assert m.paper and m.doc and isinstance(m.class_specific, bool)
    sig = inspect.signature(m.fn)
    assert list(sig.parameters)[:3] == ["model", "images", "target"]
    keyword = {k: v for k, v in sig.parameters.items() if v.kind is inspect.Parameter.KEYWORD_ONLY}
    assert set(keyword) == {p.name for p in m.params}
    for p in m.params:  # the spec's default is the function's default, and valid
        assert keyword[p.name].default == p.default
        assert p.doc and p.validate(p.default) == p.default


def test_register_adds_a_method_that_explain_dispatches_to(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))
    monkeypatch.setattr(dh, "METHODS", registry._METHODS)
    seen = {}

    @dh.register(
        "constant",
        params=[dh.Param("value", 0.5, "fill value", range=(0.0, 1.0))],
        paper="test",
        class_specific=False,
    )
    def constant(model, images, target=None, *, value=0.5):  # noqa: ANN001, ANN202
        """Fill the map with a value."""
        seen["value"] = value
        return torch.full(images.shape[:1] + images.shape[2:], value)

    x = seeded_images(0, b=2, dtype=torch.float32)
    assert dh.explain("constant", small("vgg", dtype=torch.float32), x, value=0.25).unique().item() == 0.25
    assert seen == {"value": 0.25}
    assert registry._METHODS["constant"].doc == "Fill the map with a value."
    with pytest.raises(ValueError, match="registered twice"):
        dh.register("constant", paper="test", class_specific=False)(constant)
    with pytest.raises(ValueError, match="outside its range"):
        dh.explain("constant", small("vgg", dtype=torch.float32), x, value=2.0)


def test_choice_spec_needs_choices() -> None:
    with pytest.raises(ValueError, match="needs choices"):
        dh.Param("mode", "a", "a mode", kind="choice")


def test_when_says_which_parameters_matter_and_is_checked_at_registration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tau = dh.METHODS["fbi"].param("tau")
    assert tau.applies({"mask": "tau"}) and not tau.applies({"mask": "keep_fraction"})
    merge = dh.METHODS["vebi"].param("merge")  # two conditions: both must hold
    assert merge.applies({"feature": None, "output": "heatmap"})
    assert not merge.applies({"feature": 0, "output": "heatmap"})
    assert not merge.applies({"feature": None, "output": "features"})
    assert hash(tau) == hash(dh.Param(**{**tau.__dict__, "when": {"mask": ("tau",)}}))  # hashable, order-free
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))
    mode = dh.Param("mode", "a", "a mode", kind="choice", choices=("a", "b"))

    def fn(model, images, target=None, **kw):  # noqa: ANN001, ANN003, ANN202
        return images[:, 0]

    with pytest.raises(ValueError, match="depends on 'missing'"):
        dh.register(
            "w1", params=[mode, dh.Param("x", 1.0, "x", when={"missing": ("a",)})], paper="t", class_specific=False
        )(fn)
    with pytest.raises(ValueError, match=r"depends on 'mode' being \['c'\]"):
        dh.register(
            "w2", params=[mode, dh.Param("x", 1.0, "x", when={"mode": ("c",)})], paper="t", class_specific=False
        )(fn)
