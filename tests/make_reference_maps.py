"""Write ``tests/data/reference_maps.pt``: every method's maps on the shipped VGG and AlexNet, two rendered images.

Made once, with the sequential engine, before the engine moved to captured graphs (issue 18), and committed;
``test_reference_maps.py`` checks that the engine of today gives the same maps. Do not regenerate it to make that
test pass: a difference is a change of behaviour on the shipped nets, to be explained, not overwritten.

    .venv/bin/python -m tests.make_reference_maps
"""

from __future__ import annotations

from pathlib import Path

import torch

import dvehelpers as dh

PATH = Path(__file__).resolve().parent / "data" / "reference_maps.pt"
MODELS = {"an8flower-vgg-single-6c": "single-6c", "an8flower-alexnet-double-12c": "double-12c"}
#: Settings beyond every method's defaults whose code paths differ (other rules, other layers, signed outputs).
EXTRA = {
    "kl_dve reading=gradient": ("kl_dve", {"reading": "gradient"}),
    "kl_dve reading=elementwise": ("kl_dve", {"reading": "elementwise"}),
    "fourier_dve targeted": ("fourier_dve", {"targeted": True, "highpass": "spatial"}),
    "fbi tau one_hot": ("fbi", {"mask": "tau", "tau": 1e-3, "start": "one_hot"}),
    "fbi none switches subtract": ("fbi", {"mask": "none", "unpool": "switches", "conv_bias": "subtract"}),
    "fbi raw": ("fbi", {"output": "raw"}),
    "guided_backprop raw": ("guided_backprop", {"output": "raw"}),
    "vebi no fix": ("vebi", {"strided_fix": False}),
}
#: A layer other than each model's default, for the layer-reading methods.
OTHER_LAYER = {"an8flower-vgg-single-6c": "relu4_2", "an8flower-alexnet-double-12c": "relu4"}


def settings(model: str) -> dict[str, tuple[str, dict]]:
    other = {f"{m} layer={OTHER_LAYER[model]}": (m, {"layer": OTHER_LAYER[model]}) for m in ("gradcam", "kl_dve")}
    return {**{name: (name, {}) for name in sorted(dh.METHODS)}, **EXTRA, **other}


def inputs(variant: str) -> tuple[torch.Tensor, torch.Tensor]:
    images, _, _ = dh.data.render(variant, 2, size=112, seed=11)
    return images, torch.tensor([1, 4])


def main() -> None:
    out: dict[str, dict[str, torch.Tensor]] = {}
    for name, variant in MODELS.items():
        model = dh.models.load(name)
        images, targets = inputs(variant)
        out[name] = {label: dh.explain(m, model, images, targets, **p) for label, (m, p) in settings(name).items()}
        out[name]["top1"] = dh.train.predict(model, images)
    PATH.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, PATH)
    print(f"wrote {PATH} ({PATH.stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
