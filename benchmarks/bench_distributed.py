"""The evaluation on one and on several processes: images per second and the speed-up.

Runs the whole job list (every method and setting, every reference row) on one variant × model at the default
sizes, from an empty cache each time, as ``python -m dvehelpers evaluate`` in one process (with the machine's
threads, and with one thread) and under ``torchrun --nproc-per-node N`` (torchrun gives each rank one thread), and
reports test images per second (all jobs done on an image) with the speed-up over one process. The baseline,
measured in the same run: one forward+backward pass of the model over the same images, on the CPU. Where a GPU
is present, one process on it is timed too. Run from the repository root:
``python benchmarks/bench_distributed.py [--nproc 2] [--arch alexnet] [--write]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

import dvehelpers as dh

try:  # run as a script from the repository root
    from bench_methods import machine, write_section
except ImportError:  # pragma: no cover
    from benchmarks.bench_methods import machine, write_section

SECTION = "## The evaluation on several processes"


def wall(nproc: int, threads: int | None, device: str, args: argparse.Namespace) -> float:
    """Seconds of one evaluation run from an empty cache (launcher start-up included)."""
    cli = ["-m", "dvehelpers", "evaluate", "--variants", args.variant, "--archs", args.arch, "--workers", "2"]
    cli += ["--device", device]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    env = {k: v for k, v in os.environ.items() if k not in ("DVE_QUICK", "OMP_NUM_THREADS")}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    with tempfile.TemporaryDirectory() as out:
        cmd = [*(launcher if nproc > 1 else [sys.executable]), *cli, "--out", out]
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        return time.perf_counter() - t0


def baseline(args: argparse.Namespace, batch: int = 32) -> tuple[float, int]:
    """One forward+backward pass of the model over the test split (seconds, images)."""
    x, _, _ = dh.data.An8Flower(args.variant, "test", per_class=100, progress=False).tensors()
    model = dh.models.load(f"an8flower-{args.arch}-{args.variant}")
    t0 = time.perf_counter()
    for i in range(0, len(x), batch):
        model(x[i : i + batch].requires_grad_(True)).max(1).values.sum().backward()
    return time.perf_counter() - t0, len(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--variant", default="single-6c")
    ap.add_argument("--arch", default="alexnet")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    dh.data.An8Flower(args.variant, "test", per_class=100, progress=False)  # rendered before any timing
    runs = {
        f"1 process, {torch.get_num_threads()} threads": (1, None, "cpu"),
        "1 process, 1 thread": (1, 1, "cpu"),
        f"torchrun, {args.nproc} processes × 1 thread (gloo)": (args.nproc, None, "cpu"),
    }
    if torch.cuda.is_available():  # the GPU row: one process on one GPU
        runs[f"1 process on {torch.cuda.get_device_name()}"] = (1, None, "cuda")
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.repeats):  # interleaved
        for label, (nproc, threads, device) in runs.items():
            times[label].append(wall(nproc, threads, device, args))
    base, n = baseline(args)
    first = statistics.median(next(iter(times.values())))
    rows = ["| run | wall s | images / s | speed-up | × fwd+bwd |", "|---|---|---|---|---|"]
    for label, ts in times.items():
        t = statistics.median(ts)
        rows.append(f"| {label} | {t:.1f} | {n / t:.2f} | {first / t:.2f} | {t / base:.0f} |")
    head = (
        f"{args.arch} on {args.variant}: {n} test images, every job ({len(dh.evaluate.protocol.default_jobs())} "
        f"methods and settings) and {len(dh.evaluate.protocol.REFERENCE_ROWS)} reference rows, default sizes, from "
        f"an empty cache; wall time of the command (start-up included), median of {args.repeats}. Machine: "
        f"{machine(torch.device('cpu'))}, {os.cpu_count()} cores. Date: {time.strftime('%Y-%m-%d')}. Baseline, "
        f"measured in the same run: one forward+backward pass of the model over the {n} images, {base:.2f} s.\n\n"
    )
    text = f"{SECTION} (cpu)\n\n{head}" + "\n".join(rows) + "\n"
    print(text)
    if args.write:
        write_section(f"{SECTION} (cpu)", text)


if __name__ == "__main__":
    main()
