"""Throughput of every method as ratios to one forward+backward pass, and beside peer libraries.

Model (``--model``): torchvision VGG-16 (default) or ResNet-50 with random weights (no download), 224×224 inputs,
batch 8. Every timed job runs
``--repeats`` times, the jobs interleaved round by round so that machine noise hits them alike; we report
medians and ratios to the baseline measured in the same run:

* ``fwd+bwd``: one forward pass and one backward pass to the input (``torch.autograd.grad`` of the target
  logits, weights frozen) — the practical floor of any gradient method;
* ``fwd+bwd (channels-last input)``: the same with the images in channels-last memory layout, the layout in which
  ``dvehelpers`` convolves on the CPU (:func:`dvehelpers.devices.conv_layout`): how much of a method's lead comes
  from the layout alone (Captum's ``GuidedBackprop`` is timed on such input too);
* ``forward``: one forward pass under ``torch.no_grad``;
* ``forward to pool5``: the convolutional part only (VGG-16's ``features``, up to and including pool5; ResNet-50 up
  to ``layer4``) under ``torch.no_grad`` — what Fourier DVE runs before its own work at 224² (its default layer).

``vebi`` runs with a synthetic interpretation (5 relevant features per class, drawn uniformly from all features).

Peers: Captum's ``LayerGradCam`` (+ bilinear ``interpolate``) and ``GuidedBackprop``; pytorch-grad-cam's
``GradCAM`` and ``GuidedBackpropReLUModel`` (which takes one image at a time), at the same layer (VGG-16's
``relu5_3``, ResNet-50's ``layer4``). Run from the repository root:
``python benchmarks/bench_methods.py [--model resnet50] [--device cuda] [--repeats 5] [--write]``; ``--write``
replaces this script's section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision.models as tvm
from captum.attr import GuidedBackprop, LayerAttribution, LayerGradCam
from pytorch_grad_cam import GradCAM, GuidedBackpropReLUModel
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

import dvehelpers as dh
from dvehelpers.atomic import write_text
from dvehelpers.methods import vebi

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## Methods on"
#: --model -> (label, builder, the peers' layer as a module path, the convolutional part before global pooling)
MODELS = {
    "vgg16": ("VGG-16", lambda: dh.models.build("vgg16", 1000), "features.29", lambda m: m.features),
    "resnet50": (
        "ResNet-50",
        lambda: tvm.resnet50(weights=None).eval(),
        "layer4",
        lambda m: nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3, m.layer4),
    ),
    # the real ImageNet weights; the peers' layer is the head's batch norm (the head's ReLU6 module is also the stem's,
    # and a hook on a module called twice is ambiguous), one elementwise step before our default layer
    "efficientnet-lite0": (
        "EfficientNet-Lite0",
        lambda: dh.models.load("efficientnet-lite0"),
        "_bn1",
        lambda m: LiteFeatures(m),
    ),
}


class LiteFeatures(nn.Module):
    """EfficientNet-Lite0 up to its last spatial map (before global pooling)."""

    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.m
        x = m._swish(m._bn0(m._conv_stem(x)))
        for block in m._blocks:
            x = block(x)
        return m._swish(m._bn1(m._conv_head(x)))


POOL5 = "forward to pool5"
#: Filled by :func:`jobs`: how far Captum's guided backprop is from the plain gradient on this model.
SILENT = [""]
#: The jobs every table's ratio columns divide by.
BASELINES = ("fwd+bwd", "forward", POOL5, "captum LayerGradCam")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def jobs(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, arch: str) -> dict[str, Callable[[], object]]:
    _, _, layer_path, convolutional = MODELS[arch]
    frozen = copy.deepcopy(model).requires_grad_(False)
    body = convolutional(frozen)
    peer = dh.models.without_inplace(model)  # hook-based peers need out-of-place ReLUs
    layer = peer.get_submodule(layer_path)
    captum_cam = LayerGradCam(peer, layer)
    captum_gb = GuidedBackprop(peer)
    pgc_cam = GradCAM(model=peer, target_layers=[layer])
    pgc_targets = [ClassifierOutputTarget(int(t)) for t in targets]
    pgc_gb = GuidedBackpropReLUModel(dh.models.without_inplace(model), device=x.device)

    def fwd_bwd() -> object:
        xi = x.detach().requires_grad_(True)
        return torch.autograd.grad(frozen(xi).gather(1, targets[:, None]).sum(), xi)

    x_last = x.contiguous(memory_format=torch.channels_last)

    def fwd_bwd_last() -> object:
        xi = x_last.detach().requires_grad_(True)
        return torch.autograd.grad(frozen(xi).gather(1, targets[:, None]).sum(), xi)

    def forward() -> object:
        with torch.no_grad():
            return frozen(x)

    def forward_to_pool5() -> object:
        with torch.no_grad():
            return body(x)

    def captum_gradcam() -> object:
        attr = captum_cam.attribute(x, target=targets, relu_attributions=True)
        return LayerAttribution.interpolate(attr, x.shape[-2:], "bilinear")

    out: dict[str, Callable[[], object]] = {"fwd+bwd": fwd_bwd, "forward": forward, POOL5: forward_to_pool5}
    if x.device.type == "cpu":
        out["fwd+bwd (channels-last input)"] = fwd_bwd_last
    fixed = {"vebi": {"interpretation": synthetic_interpretation(model, x.shape[-1])}}
    for name in sorted(dh.METHODS):
        out[name] = lambda name=name: dh.explain(name, model, x, targets, **fixed.get(name, {}))
    out["kl_dve (reading=gradient)"] = lambda: dh.explain("kl_dve", model, x, targets, reading="gradient")
    out["fourier_dve (targeted, image)"] = lambda: dh.explain(
        "fourier_dve", model, x, targets, targeted=True, targeted_on="image"
    )
    out["fbi (mask=tau)"] = lambda: dh.explain("fbi", model, x, targets, mask="tau")
    out["captum LayerGradCam"] = captum_gradcam
    out["pytorch-grad-cam GradCAM"] = lambda: pgc_cam(input_tensor=x, targets=pgc_targets)
    out["captum GuidedBackprop"] = lambda: captum_gb.attribute(x, target=targets)
    if x.device.type == "cpu":
        out["captum GuidedBackprop (channels-last input)"] = lambda: captum_gb.attribute(x_last, target=targets)
    silent = (captum_gb.attribute(x, target=targets) - fwd_bwd()[0]).abs().max()
    SILENT[0] = f"Captum's GuidedBackprop minus the plain gradient, max |difference|: {float(silent):.3g}"
    gradient = fwd_bwd()[0][0].permute(1, 2, 0).cpu().numpy()  # pytorch-grad-cam returns H×W×3 arrays
    pgc_silent = abs(pgc_gb(x[:1], int(targets[0])) - gradient).max()
    SILENT[0] += f"; pytorch-grad-cam's GuidedBackpropReLUModel minus it (first image): {float(pgc_silent):.3g}"
    print(SILENT[0], "(0: it returned the plain gradient)")
    out["pytorch-grad-cam GuidedBackprop (per image)"] = lambda: [
        pgc_gb(x[i : i + 1], int(targets[i])) for i in range(x.shape[0])
    ]
    return out


def synthetic_interpretation(model: nn.Module, size: int, per_class: int = 5) -> object:
    """vebi needs a fitted interpretation; ImageNet training data is not here, so time it with one whose W has
    ``per_class`` relevant features per class drawn uniformly from all features (the time depends on which layers
    the top-k features sit in, not on how they were found)."""
    layout = vebi.feature_layout(model, size=size)
    classes = dh.models.num_classes(model)
    g = torch.Generator().manual_seed(0)
    W = torch.zeros(layout.size, classes)
    for j in range(classes):
        W[torch.randperm(layout.size, generator=g)[:per_class], j] = torch.rand(per_class, generator=g) + 0.1
    gap = torch.zeros(classes)
    return vebi.Interpretation(
        W.to(next(model.parameters()).device),
        layout.layers,
        layout.channels,
        5.0,
        False,
        "ground_truth",
        True,
        gap,
        {"model": "synthetic (benchmark)"},
    )


def measure(fns: dict[str, Callable[[], object]], repeats: int, device: torch.device) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():  # warm-up round
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


def machine(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}), torch {torch.__version__}"
    return f"CPU {cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def table(times: dict[str, list[float]], batch: int) -> str:
    base = statistics.median(times["fwd+bwd"])
    fwd = statistics.median(times["forward"])
    pool5 = statistics.median(times[POOL5])
    cam_captum = statistics.median(times["captum LayerGradCam"])
    rows = [
        f"| job | median s / batch | images / s | × fwd+bwd | × forward | × {POOL5} | × Captum Grad-CAM |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, ts in times.items():
        m = statistics.median(ts)
        ratios = " | ".join(f"{m / t:.2f}" for t in (base, fwd, pool5, cam_captum))
        rows.append(f"| {name} | {m:.3f} | {batch / m:.1f} | {ratios} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vgg16", choices=list(MODELS))
    ap.add_argument("--device", default=str(dh.device()))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--write", action="store_true", help="write the table into benchmarks/RESULTS.md")
    ap.add_argument(
        "--only",
        nargs="+",
        metavar="PREFIX",
        help="time only jobs whose names start with a PREFIX (baselines always run), in a section of their own",
    )
    args = ap.parse_args()
    warnings.filterwarnings("ignore")  # peers' and KL-DVE's notices would interleave with the table
    device = torch.device(args.device)
    label, build, _, _ = MODELS[args.model]
    model = build().to(device)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, args.size, args.size, generator=g).to(device)
    targets = torch.randint(0, 1000, (args.batch,), generator=g).to(device)
    todo = jobs(model, x, targets, args.model)
    if args.only:
        todo = {k: f for k, f in todo.items() if k in BASELINES or k.startswith(tuple(args.only))}
    times = measure(todo, args.repeats, device)
    title = f"{SECTION} {label} ({device.type})" + (f": {', '.join(args.only)}" if args.only else "")
    head = (
        f"{title}\n\n{label}, {'its ImageNet weights' if args.model == 'efficientnet-lite0' else 'random weights'}, "
        f"batch {args.batch}, {args.size}², "
        f"{args.repeats} interleaved rounds, medians. Machine: {machine(device)}. "
        f"Date: {time.strftime('%Y-%m-%d')}.\n"
    )
    text = f"{head}\n{table(times, args.batch)}\n\n{SILENT[0]}.\n"
    print(text)
    if args.write:
        write_section(title, text)


def write_section(title: str, text: str) -> None:
    """Replace the section headed ``title`` in RESULTS.md (or append it), atomically."""
    old = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    parts = old.split("\n## ")
    kept = [p.rstrip("\n") for p in parts[:1] + [p for p in parts[1:] if not ("## " + p).startswith(title)]]
    body = "\n\n## ".join(kept) + "\n\n" + text  # sections kept whole, one blank line apart
    write_text(RESULTS, body)


if __name__ == "__main__":
    main()
