"""Command line: ``python -m dvehelpers methods | layers | run | evaluate | render | train | interpret | bench |
site``."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path

import torchvision.models as tvm
from torch import nn

from .data import SPLITS, VARIANTS, An8Flower
from .evaluate.protocol import ARCHS, REFERENCE_ROWS, Sizes, run
from .methods.vebi import fit_shipped
from .models import ARCHS as BUILT
from .models import build, default_size, layer_table, load
from .registry import METHODS
from .run import run_all
from .site import build as build_site
from .site import repository_url
from .train import train_and_save

ROOT = Path(__file__).resolve().parent.parent


def cmd_methods(args: argparse.Namespace) -> int:
    for m in METHODS.values():
        kind = "class-specific" if m.class_specific else "class-agnostic"
        print(f"{m.name:20s} {m.paper} ({kind}): {m.doc}")
        for p in m.params:
            valid = p.choices or p.range or p.kind
            print(f"    {p.name} = {p.default!r}  [{valid}]  {p.doc}")
    return 0


def model_for(name: str) -> nn.Module:
    """A model to inspect by name: a shipped or ImageNet checkpoint or a file (:func:`dvehelpers.models.load`), an
    architecture of :func:`dvehelpers.models.build` or any torchvision classifier (``resnet50``), the last two
    without weights (the layers do not depend on them)."""
    if name in BUILT:
        return build(name, 1000)
    if name in tvm.list_models(tvm):
        return tvm.get_model(name, weights=None).eval()
    try:
        return load(name)
    except FileNotFoundError as err:
        raise SystemExit(
            f"{err}\nor an architecture: {', '.join(BUILT)}, or a torchvision classifier: "
            f"{', '.join(tvm.list_models(tvm)[:8])}, …"
        ) from None


def cmd_layers(args: argparse.Namespace) -> int:
    model = model_for(args.model)
    size = args.size or default_size(model)
    rows = layer_table(model, size)
    print(f"{type(model).__name__}: {len(rows)} layers for a {size}×{size} input (pass a name as layer=)")
    width = max(len(r.name) for r in rows)
    for r in rows:
        shape = "×".join(map(str, r.shape))
        where = "" if r.path == r.name else f"  ({r.path})"
        print(f"{r.index:4d}  {r.name:{width}s}  {r.kind:16s} {shape:>14s}{where}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    return run_all(Path(args.notebooks), Path(args.out), full=args.full)


def _names(values: list[str] | None) -> list[str] | None:
    """``--methods a,b --methods c`` -> ``[a, b, c]`` (None when not given)."""
    return [n.strip() for v in values for n in v.split(",") if n.strip()] if values else None


def cmd_evaluate(args: argparse.Namespace) -> int:
    sizes = Sizes.default(args.quick or None)
    if args.per_class is not None:
        sizes = dataclasses.replace(sizes, per_class=args.per_class)
    ev = run(
        methods=_names(args.methods),
        variants=_names(args.variants) or ("single-6c", "double-12c"),
        archs=_names(args.archs) or ARCHS,
        device=args.device,
        root=args.root,
        sizes=sizes,
        cache=False if args.no_cache else (args.cache or (Path(args.out) / "cache" if args.out else True)),
        references=REFERENCE_ROWS if args.references is None else (_names(args.references) or []),
        batch_size=args.batch_size,
        workers=args.workers,
        folders=dict(_pair(f) for f in args.folder or []),
    )
    if ev is None:  # a torchrun rank other than 0: rank 0 writes the results
        return 0
    paths = ev.write(args.out)
    print(ev.summary())
    print(f"\n{len(ev.computed)} of {len(ev.entries)} entries computed ({ev.parts} parts of them now), the rest cached")
    tables = ", ".join(p.name for p in paths[:4])
    print(f"results -> {paths[0].parent}/ ({tables}, {len(paths) - 5} figures, timing.csv)")
    return 0


def _pair(text: str) -> tuple[str, str]:
    variant, sep, folder = text.partition("=")
    if not sep or not folder:
        raise SystemExit(f"--folder takes VARIANT=PATH (e.g. single-6c=~/my_set), got {text!r}")
    return variant, folder


def cmd_render(args: argparse.Namespace) -> int:
    for variant in args.variant or list(VARIANTS):
        for split in SPLITS:
            ds = An8Flower(variant, split, size=args.size, seed=args.seed, cache=args.cache)
            print(f"{variant}/{split}: {len(ds)} images in {ds.dir}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    for variant in args.variant:
        for arch in args.arch:
            path = train_and_save(variant, arch, seed=args.seed, size=args.size, out=args.out)
            print(f"saved {path}")
    return 0


def cmd_interpret(args: argparse.Namespace) -> int:
    for variant in args.variant:
        for arch in args.arch:
            print(f"saved {fit_shipped(variant, arch, seed=args.seed, mu=args.mu)}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    script = ROOT / "benchmarks" / "bench_methods.py"
    if not script.exists():
        print(f"benchmark script not found at {script} (it lives in the repository, not the package)")
        return 2
    return subprocess.call([sys.executable, str(script), *args.rest])


def cmd_site(args: argparse.Namespace) -> int:
    repository = args.repository or repository_url()
    out = build_site(Path(args.out), repository=repository)
    links = f"Binder and Colab links to {repository}" if repository else "no repository URL, so no Binder/Colab links"
    print(f"site: {out / 'index.html'} ({links}; Sphinx's warnings in {out / 'WARNINGS.txt'})")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dvehelpers", description="Deep Visual Explanation helpers")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("methods", help="list the registered methods and their parameters").set_defaults(fn=cmd_methods)
    layers = sub.add_parser("layers", help="list a model's layers: name, kind, output shape (what layer= accepts)")
    layers.add_argument(
        "model", help="a shipped model, vgg16, efficientnet-lite0, a torchvision name (resnet50), a file"
    )
    layers.add_argument("--size", type=int, default=None, help="input side (default: the model's, 112 or 224)")
    layers.set_defaults(fn=cmd_layers)
    run = sub.add_parser(
        "run", help="the evaluation (results/), every notebook executed into build/, the galleries, the table"
    )
    run.add_argument("--full", action="store_true", help="execute the notebooks at full size (default: DVE_QUICK)")
    run.add_argument("--notebooks", default=str(ROOT / "notebooks"))
    run.add_argument("--out", default=str(ROOT / "build"))
    run.set_defaults(fn=cmd_run)
    ev = sub.add_parser("evaluate", help="the an8Flower evaluation of every method; table and figures to results/")
    ev.add_argument("--quick", action="store_true", help="the small sizes (also under DVE_QUICK=1)")
    ev.add_argument("--methods", action="append", help="comma-separated methods or job labels (default: all)")
    ev.add_argument("--variants", action="append", help="comma-separated: single-6c, double-12c (default: both)")
    ev.add_argument("--archs", action="append", help="comma-separated: vgg, alexnet (default: both)")
    ev.add_argument("--root", default=None, help="the official an8Flower set's folder (default: an8Flower-synth)")
    ev.add_argument("--device", default=None, help="cpu, cuda, … (default: cuda when available)")
    ev.add_argument("--out", default=None, help="output folder (default $DVE_RESULTS or results/)")
    ev.add_argument("--cache", default=None, help="cache folder (default <out>/cache)")
    ev.add_argument("--no-cache", action="store_true", help="recompute everything, store nothing")
    ev.add_argument("--folder", action="append", help="VARIANT=PATH: an image folder with masks as that test split")
    ev.add_argument("--per-class", type=int, default=None, help="test images per class (default: the split's)")
    ev.add_argument("--references", action="append", help="comma-separated reference rows ('' for none; default: all)")
    ev.add_argument("--batch-size", type=int, default=32, help="images per batch (part of the cache key)")
    ev.add_argument("--workers", type=int, default=2, help="DataLoader reader processes per rank (default 2)")
    ev.set_defaults(fn=cmd_evaluate)
    render = sub.add_parser("render", help="render the an8Flower-synth splits into the cache")
    render.add_argument("--variant", action="append", choices=["single-6c", "double-12c"])
    render.add_argument("--size", type=int, default=112)
    render.add_argument("--seed", type=int, default=0)
    render.add_argument("--cache", default=None, help="cache folder (default $DVE_DATA or data/cache)")
    render.set_defaults(fn=cmd_render)
    train = sub.add_parser("train", help="train an8Flower classifiers and save them to data/models/")
    train.add_argument("--variant", action="append", choices=["single-6c", "double-12c"], required=True)
    train.add_argument("--arch", action="append", choices=["vgg", "alexnet"], required=True)
    train.add_argument("--size", type=int, default=112)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", default=None, help="output folder (default data/models)")
    train.set_defaults(fn=cmd_train)
    interp = sub.add_parser("interpret", help="fit the vebi interpretation of shipped models (data/models/vebi/)")
    interp.add_argument("--variant", action="append", choices=["single-6c", "double-12c"], required=True)
    interp.add_argument("--arch", action="append", choices=["vgg", "alexnet"], required=True)
    interp.add_argument("--seed", type=int, default=0, help="data seed of the training split (the models' own)")
    interp.add_argument(
        "--mu", type=float, default=5.0, help="L1 radius of the mu-lasso (the authors' an8Flower value)"
    )
    interp.set_defaults(fn=cmd_interpret)
    bench = sub.add_parser("bench", help="run benchmarks/bench_methods.py (arguments are passed on)")
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    bench.set_defaults(fn=cmd_bench)
    site = sub.add_parser("site", help="the static website of the series (Sphinx + MyST-NB) into build/site/")
    site.add_argument("--out", default=str(ROOT / "build" / "site"))
    site.add_argument(
        "--repository", default=None, help="GitHub URL for the Binder/Colab links (default: pyproject or git origin)"
    )
    site.set_defaults(fn=cmd_site)
    args = ap.parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
