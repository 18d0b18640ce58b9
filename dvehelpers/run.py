"""``make run``: execute every notebook in order into ``build/`` and draw the method gallery.

Each notebook gets a progress bar over its code cells whose description names the section being run (the
latest markdown heading), and the time it took is printed when it is done.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from . import images, models, nbclean, viz
from .atomic import write_text
from .data import VARIANTS, An8Flower, one_per_class
from .devices import device
from .evaluate.protocol import default_results
from .registry import METHODS
from .train import model_name

__all__ = ["run_all", "execute_notebook", "gallery", "sections", "CellProgress"]

_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def sections(cells: list[Any]) -> list[str]:
    """For every cell, the latest markdown heading at or above it ('' before the first heading)."""
    current, out = "", []
    for cell in cells:
        if cell["cell_type"] == "markdown":
            headings = _HEADING.findall(cell["source"])
            current = headings[-1] if headings else current
        out.append(current)
    return out


class CellProgress:
    """nbclient hooks that drive a tqdm bar: one step per code cell, the current section as description."""

    def __init__(self, nb: Any, name: str, width: int = 48) -> None:
        self.name, self.width = name, width
        self.sections = sections(nb.cells)
        total = sum(c.cell_type == "code" and bool(c.source.strip()) for c in nb.cells)
        self.bar = tqdm(total=total, desc=name, unit="cell")

    def on_cell_start(self, cell: Any, cell_index: int) -> None:
        section = self.sections[cell_index]
        if len(section) > self.width:
            section = section[: self.width - 1] + "…"
        self.bar.set_description(f"{self.name} · {section}" if section else self.name, refresh=True)

    def on_cell_executed(self, cell: Any, cell_index: int, execute_reply: Any) -> None:
        self.bar.update(1)

    def close(self) -> None:
        """Close the bar, named by the notebook alone (its last section may be prose only)."""
        self.bar.set_description(self.name, refresh=False)
        self.bar.close()


def execute_notebook(path: Path, out: Path, timeout: int = 3600) -> Path:
    """Execute ``path`` top to bottom in its own folder, showing per-cell progress and the time it took;
    finalise its widget outputs for readers without a kernel (:func:`dvehelpers.nbclean.finalize`) and write the
    executed copy and an HTML page to ``out`` (atomically)."""
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import ExecutePreprocessor

    nb = nbformat.read(path, as_version=4)
    progress = CellProgress(nb, path.stem)
    ep = ExecutePreprocessor(
        timeout=timeout,
        kernel_name="python3",
        on_cell_start=progress.on_cell_start,
        on_cell_executed=progress.on_cell_executed,
    )
    start = time.monotonic()
    try:
        ep.preprocess(nb, {"metadata": {"path": str(path.parent)}})
    finally:
        progress.close()
    seconds = time.monotonic() - start
    nbclean.finalize(nb)
    out.mkdir(parents=True, exist_ok=True)
    executed = out / path.name
    write_text(executed, nbformat.writes(nb))
    html, _ = HTMLExporter().from_notebook_node(nb)
    write_text(executed.with_suffix(".html"), html)
    print(f"executed {path.name} in {_duration(seconds)} -> {executed}", flush=True)
    return executed


def _duration(seconds: float) -> str:
    """``12.3 s`` or ``6 min 48 s``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"


def gallery(out: Path, size: int = 224) -> list[Path]:
    """The method galleries: every registered method on real photos explained by EfficientNet-Lite0 with its ImageNet
    weights (``gallery_imagenet_efficientnet-lite0.png``, the main figure: always there, offline), on each shipped
    an8Flower model (three test images of different classes, mask outlined), and on ImageNet VGG-16 when its
    weights are present."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dev, paths = device(), []
    out.mkdir(parents=True, exist_ok=True)

    def save(fig: Any, name: str) -> None:
        paths.append(out / name)
        fig.savefig(paths[-1], dpi=80, bbox_inches="tight")
        plt.close(fig)

    shown = images.photos(["chelsea", "coffee", "camera", "motorcycle"], size=size).to(dev)
    # vebi explains with an interpretation fitted on a labelled training set of the explained classes, which
    # four photos are not
    names = [n for n in sorted(METHODS) if not any(p.kind == "object" for p in METHODS[n].params)]
    imagenet = {"efficientnet-lite0": models.load("efficientnet-lite0").to(dev)}
    if models.has_weights("vgg16"):
        imagenet["vgg16"] = models.load("vgg16").to(dev)
    for name, model in imagenet.items():
        fig = viz.compare_methods(model, images.preprocess(model, shown), names, display=shown)
        fig.suptitle(
            f"{name}, ImageNet weights; top-1 class explained (vebi needs a fitted interpretation)", fontsize=10
        )
        save(fig, f"gallery_imagenet_{name}.png")
    for variant in VARIANTS:
        data = An8Flower(variant, "test", progress=False)
        x, labels, masks = data.tensors()
        first = one_per_class(labels)
        pick = first[[0, len(first) // 2, len(first) - 1]]
        for arch in ("vgg", "alexnet"):
            model = models.load(model_name(arch, variant)).to(dev)
            fig = viz.compare_methods(
                model,
                x[pick].to(dev),
                sorted(METHODS),
                masks=masks[pick],
                labels=labels[pick],
                class_names=data.classes,
            )
            fig.suptitle(f"{model_name(arch, variant)} (shipped, trained here); top-1 class explained", fontsize=10)
            save(fig, f"gallery_{model_name(arch, variant)}.png")
    return paths


def run_all(notebooks: Path, out: Path, full: bool = False, evaluate_args: Sequence[str] = ()) -> int:
    """The main job: the an8Flower evaluation (``python -m dvehelpers evaluate [evaluate_args]`` in its own process;
    table and figures to ``results/``), every ``notebooks/[0-9][0-9]_*.ipynb`` executed in order into ``out`` (at
    ``DVE_QUICK`` sizes unless ``full``: the committed notebooks already hold a full run), the method galleries, and
    the evaluation's summary table."""
    start = time.monotonic()
    print("[1/3] the an8Flower evaluation (cached in results/cache; a re-run is incremental)", flush=True)
    # its own process: a kernel started from a process that has just run ten minutes of torch work was seen to hang
    code = subprocess.call([sys.executable, "-m", "dvehelpers", "evaluate", *evaluate_args])
    if code:
        return code
    paths = sorted(notebooks.glob("[0-9][0-9]_*.ipynb"))
    quick = os.environ.get("DVE_QUICK")
    if not full:
        os.environ["DVE_QUICK"] = "1"  # the kernels inherit it
    try:
        for k, path in enumerate(paths, start=1):
            print(f"[2/3] notebook {k}/{len(paths)}: {path.name}{'' if full else ' (DVE_QUICK sizes)'}", flush=True)
            execute_notebook(path, out)
    finally:
        if quick is None:
            os.environ.pop("DVE_QUICK", None)
        else:
            os.environ["DVE_QUICK"] = quick
    if not paths:
        print(f"no notebooks in {notebooks} yet")
    print("[3/3] drawing the method galleries …", flush=True)
    size = 64 if os.environ.get("DVE_QUICK") == "1" else 224
    figures = gallery(out, size)
    print(f"galleries -> {', '.join(p.name for p in figures)} in {out}/")
    results = default_results()
    print(f"\n{(results / 'summary.txt').read_text()}\n")
    print(f"evaluation -> {results}/ (evaluation.md, evaluation.csv, per_class.csv, figures)")
    print(f"done in {_duration(time.monotonic() - start)}; executed notebooks and HTML in {out}/")
    return 0
