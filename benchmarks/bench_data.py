"""an8Flower-synth renderer throughput and the shipped models' training times.

Renders ``--n`` images at 112² (anti-aliased, the dataset's setting) ``--repeats`` times and reports the median
images per second, beside the same render without anti-aliasing (the floor: one ray per pixel); training
times come from the shipped checkpoints' metadata. Run from the repository root:
``python benchmarks/bench_data.py [--device cuda] [--write]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import dvehelpers as dh
from dvehelpers.data.render import render_scenes, sample_scenes

try:  # run as a script from the repository root
    from bench_methods import machine, write_section
except ImportError:  # pragma: no cover
    from benchmarks.bench_methods import machine, write_section

SECTION = "## an8Flower-synth renderer and training"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=str(dh.device()))
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    device = torch.device(args.device)
    scenes = sample_scenes(args.n, 0)
    labels = torch.arange(args.n) % 12
    jobs = {"anti-aliased (2×2 on part boundaries)": 2, "one ray per pixel": 1}
    times: dict[str, list[float]] = {k: [] for k in jobs}
    render_scenes(scenes.index(slice(0, 8)), labels[:8], "double-12c", args.size, device=device)  # warm-up
    for _ in range(args.repeats):
        for name, ss in jobs.items():
            _sync(device)
            t0 = time.perf_counter()
            render_scenes(scenes, labels, "double-12c", args.size, supersample=ss, device=device)
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    rows = ["| job | median s | images / s |", "|---|---|---|"]
    for name, ts in times.items():
        m = statistics.median(ts)
        rows.append(f"| render {args.n} × {args.size}², {name} | {m:.2f} | {args.n / m:.0f} |")
    for variant in dh.data.VARIANTS:
        for arch in ("vgg", "alexnet"):
            try:
                meta = dh.models.load(dh.train.model_name(arch, variant)).meta
            except FileNotFoundError:
                continue
            rows.append(
                f"| train {arch} on {variant} ({meta['epochs']} epochs, {meta['device']}; from its metadata) "
                f"| {meta['train_seconds']:.0f} | — |"
            )
    text = (
        f"{SECTION} ({device.type})\n\n{args.repeats} interleaved rounds, medians. Machine: {machine(device)}. "
        f"Date: {time.strftime('%Y-%m-%d')}.\n\n" + "\n".join(rows) + "\n"
    )
    print(text)
    if args.write:
        write_section(f"{SECTION} ({device.type})", text)


if __name__ == "__main__":
    main()
