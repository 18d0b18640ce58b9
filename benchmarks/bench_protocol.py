"""The whole an8Flower evaluation (all methods × both variants × both models, default sizes): wall time per method.

Runs :func:`dvehelpers.protocol.run` with an empty cache (a fresh temporary folder, unless ``--cache`` names one
whose entries were computed by a timed run: each entry records the seconds its parts took when it was computed),
and reports the total wall time, the time per job broken into its parts (maps of the whole test set, IoU and
pointing scores, deletion / insertion, class sensitivity, randomisation cascade), and, as the baseline measured
in the same run, one forward+backward pass of each model over its test set. Run from the repository root:
``python benchmarks/bench_protocol.py [--device cuda] [--write]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

import dvehelpers as dh
from dvehelpers import protocol

try:  # run as a script from the repository root
    from bench_methods import machine, write_section
except ImportError:  # pragma: no cover
    from benchmarks.bench_methods import machine, write_section

SECTION = "## The whole an8Flower evaluation"
PARTS = ("maps", "scores", "faithfulness", "sensitivity", "randomisation")


def baseline_seconds(device: torch.device, sizes: protocol.Sizes, batch: int = 32) -> float:
    """One forward+backward pass of every shipped model over its test split, in batches, summed."""
    total = 0.0
    for variant in dh.data.VARIANTS:
        x, _, _ = dh.data.An8Flower(variant, "test", per_class=sizes.per_class, progress=False).tensors()
        for arch in protocol.ARCHS:
            model = dh.models.load(f"an8flower-{arch}-{variant}").to(device)
            t0 = time.perf_counter()
            for i in range(0, len(x), batch):
                xb = x[i : i + batch].to(device).requires_grad_(True)
                model(xb).max(1).values.sum().backward()
            if device.type == "cuda":
                torch.cuda.synchronize()
            total += time.perf_counter() - t0
            model.zero_grad(set_to_none=True)
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=str(dh.device()))
    ap.add_argument("--cache", default=None, help="reuse this cache's recorded times (default: a fresh one)")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    device = torch.device(args.device)
    sizes = protocol.Sizes.default(quick=False)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ev = protocol.run(device=device, sizes=sizes, cache=args.cache or tmp)
        wall = time.perf_counter() - t0
    base = baseline_seconds(device, sizes)
    recorded = {label: {**dict.fromkeys(PARTS, 0.0), **parts} for label, parts in ev.seconds(cached=True).items()}
    total = sum(sum(p.values()) for p in recorded.values())
    rows = [
        "| job | " + " | ".join(PARTS) + " | total s | share | × baseline |",
        "|---|" + "---|" * (len(PARTS) + 3),
    ]
    for label, per in sorted(recorded.items(), key=lambda kv: -sum(kv[1].values())):
        t = sum(per.values())
        cells = " | ".join(f"{per[p]:.1f}" for p in PARTS)
        rows.append(f"| {label} | {cells} | {t:.1f} | {t / total:.0%} | {t / base:.1f} |")
    head = (
        f"Default sizes {protocol.asdict(sizes)}, {len(ev.entries)} entries (jobs and references × 2 variants × 2 "
        f"models), device {device}. Machine: {machine(device)}. Date: {time.strftime('%Y-%m-%d')}.\n\n"
        f"Wall time of this call: {wall:.0f} s ({len(ev.computed)} entries computed"
        f"{'' if args.cache is None else ', the others read from ' + args.cache + ' with the seconds they took'}); "
        f"sum of the entries' recorded parts: {total:.0f} s. Baseline, measured in the same run: one "
        f"forward+backward pass of each model over its test split, {base:.1f} s in all; the protocol is "
        f"{total / base:.0f}× that.\n\n"
    )
    title = f"{SECTION} ({device.type})"
    text = f"{title}\n\n{head}" + "\n".join(rows) + "\n"
    print(text)
    if args.write:
        write_section(title, text)


if __name__ == "__main__":
    main()
