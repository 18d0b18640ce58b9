"""Command line: ``python -m dvehelpers methods | run | bench``."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cmd_methods(args: argparse.Namespace) -> int:
    from . import METHODS

    for m in METHODS.values():
        kind = "class-specific" if m.class_specific else "class-agnostic"
        print(f"{m.name:20s} {m.paper} ({kind}): {m.doc}")
        for p in m.params:
            valid = p.choices or p.range or p.kind
            print(f"    {p.name} = {p.default!r}  [{valid}]  {p.doc}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .run import run_all

    return run_all(Path(args.notebooks), Path(args.out))


def cmd_bench(args: argparse.Namespace) -> int:
    script = ROOT / "benchmarks" / "bench_baselines.py"
    if not script.exists():
        print(f"benchmark script not found at {script} (it lives in the repository, not the package)")
        return 2
    return subprocess.call([sys.executable, str(script), *args.rest])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dvehelpers", description="Deep Visual Explanation helpers")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("methods", help="list the registered methods and their parameters").set_defaults(fn=cmd_methods)
    run = sub.add_parser("run", help="execute every notebook into build/ and write the method gallery")
    run.add_argument("--notebooks", default=str(ROOT / "notebooks"))
    run.add_argument("--out", default=str(ROOT / "build"))
    run.set_defaults(fn=cmd_run)
    bench = sub.add_parser("bench", help="run benchmarks/bench_baselines.py (arguments are passed on)")
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    bench.set_defaults(fn=cmd_bench)
    args = ap.parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
