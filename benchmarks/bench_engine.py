"""The engine on any classifier: what capturing a model costs (first call and cached), and how much memory a
recorded forward pass keeps for the backward walk, against what autograd saves for its backward pass.

* **capture**: :func:`dvehelpers.engine.capture` on a fresh model (``torch.fx`` tracing, classification,
  canonical forms, names), and the cached call every method makes afterwards (it checks that the module tree and
  the parameter objects are the same), medians.
* **kept per image**: the bytes a trace holds between the forward pass and the walk (kept outputs, boolean masks,
  max-pooling switches; not the images, not the weights) for each rule set, against the bytes of the tensors
  autograd saves for backward in one forward pass with the input requiring grad and the weights frozen (counted
  with ``torch.autograd.graph.saved_tensors_hooks``, each storage once) — the memory between forward and backward
  that a method needs, measured on the CPU. On a GPU the peak allocated memory of the whole call is reported too.

Run from the repository root: ``python benchmarks/bench_engine.py [--device cuda] [--write]``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings

import torch
import torchvision.models as tvm
from bench_methods import machine, write_section  # the script beside this one (benchmarks/ is on sys.path)
from torch import Tensor, nn

import dvehelpers as dh
from dvehelpers.methods.fbi import fbi_rules

SECTION = "## Engine: capture and memory"
NETS = {
    "VGG-16": lambda: dh.models.build("vgg16", 1000),
    "ResNet-50": lambda: tvm.resnet50(weights=None).eval(),
    "DenseNet-121": lambda: tvm.densenet121(weights=None).eval(),
    "EfficientNet-B0": lambda: tvm.efficientnet_b0(weights=None).eval(),
    "EfficientNet-Lite0": lambda: dh.models.build("efficientnet-lite0", 1000),
}


def capture_cost(net: nn.Module, repeats: int = 50) -> tuple[float, float, int]:
    """(seconds of the first capture, median seconds of a cached call, nodes)."""
    fresh = copy.deepcopy(net)
    t0 = time.perf_counter()
    graph = dh.engine.capture(fresh)
    first = time.perf_counter() - t0
    cached = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        dh.engine.capture(fresh)
        cached.append(time.perf_counter() - t0)
    return first, statistics.median(cached), len(graph.nodes)


def _nbytes(tensors: list[Tensor]) -> int:
    seen, total = set(), 0
    for t in tensors:
        key = (t.untyped_storage().data_ptr(), t.dtype)
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


def autograd_saved(net: nn.Module, x: Tensor) -> int:
    """Bytes autograd saves for backward in one forward pass (input requiring grad, weights frozen)."""
    frozen = copy.deepcopy(net).requires_grad_(False)
    saved: list[Tensor] = []
    weights = {p.data_ptr() for p in frozen.parameters()} | {b.data_ptr() for b in frozen.buffers()}

    def pack(t: Tensor) -> Tensor:
        if t.data_ptr() not in weights and t.data_ptr() != x.data_ptr():
            saved.append(t)
        return t

    xi = x.detach().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        frozen(xi)
    return _nbytes(saved)


def trace_kept(net: nn.Module, x: Tensor, rules: object) -> int:
    """Bytes a trace keeps for ``rules``, images and weights excluded."""
    trace = dh.engine.record(net, x, rules=rules)
    kept = [t for i, t in trace.values.items() if i != dh.engine.INPUT]
    return _nbytes(kept + list(trace.masks.values()) + list(trace.switches.values()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=str(dh.device()))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    device = torch.device(args.device)
    x = torch.rand(args.batch, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(device)
    fbi_defaults = {k: v for k, v in dh.METHODS["fbi"].defaults.items() if k not in ("start", "reduction", "output")}
    rows = []
    for label, build in NETS.items():
        net = build().to(device)
        first, cached, nodes = capture_cost(net)
        smooth = "gradient" if label == "EfficientNet-B0" else "refuse"
        guided = dh.engine.with_smooth(dh.engine.GUIDED, smooth)
        fbi = fbi_rules(**{**fbi_defaults, "smooth": smooth})
        mib = 2**20 * args.batch
        autograd = autograd_saved(net, x) / mib
        kept = {
            name: trace_kept(net, x, r) / mib
            for name, r in (("gradient", dh.engine.GRADIENT), ("guided", guided), ("fbi", fbi))
        }
        rows.append(
            f"| {label} | {nodes} | {first:.3f} | {cached * 1e3:.2f} | {autograd:.1f} | "
            + " | ".join(f"{v:.1f} ({v / autograd:.2f}×)" for v in kept.values())
            + " |"
        )
    head = (
        f"{SECTION} ({device.type})\n\nRandom weights, 224², batch {args.batch} (memory per image). "
        f"Machine: {machine(device)}. Date: {time.strftime('%Y-%m-%d')}.\n\n"
        "| model | nodes | first capture, s | cached capture, ms | autograd saves, MiB / image | "
        "trace keeps: gradient | guided | fbi |\n|---|---|---|---|---|---|---|---|"
    )
    text = head + "\n" + "\n".join(rows) + "\n"
    print(text)
    if args.write:
        write_section(f"{SECTION} ({device.type})", text)


if __name__ == "__main__":
    main()
