"""``make run``: execute every notebook in order into ``build/`` and draw the method gallery.

Each notebook gets a progress bar over its code cells whose description names the section being run (the
latest markdown heading), and the time it took is printed when it is done.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

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
        from tqdm.auto import tqdm

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
    write the executed copy and an HTML page to ``out`` (atomically)."""
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
    out.mkdir(parents=True, exist_ok=True)
    executed = out / path.name
    _atomic_write(executed, nbformat.writes(nb))
    html, _ = HTMLExporter().from_notebook_node(nb)
    _atomic_write(executed.with_suffix(".html"), html)
    print(f"executed {path.name} in {_duration(seconds)} -> {executed}", flush=True)
    return executed


def _duration(seconds: float) -> str:
    """``12.3 s`` or ``6 min 48 s``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def gallery(out: Path, size: int = 224) -> Path:
    """Every registered method on the scikit-image photos with VGG-16 (ImageNet weights when present)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import METHODS, device, images, models, viz

    try:
        model, note = models.load("vgg16"), "VGG-16, ImageNet weights"
    except FileNotFoundError as err:
        print(f"note: {str(err).splitlines()[0]}\n      the gallery uses random weights instead.")
        model, note = models.build("vgg16", 1000), "VGG-16 with RANDOM weights (no ImageNet weights found)"
    dev = device()
    model = model.to(dev)
    shown = images.photos(size=size).to(dev)
    # vebi explains with an interpretation fitted on a labelled training set, which ImageNet photos lack here
    names = [n for n in sorted(METHODS) if not any(p.kind == "object" for p in METHODS[n].params)]
    skipped = sorted(set(METHODS) - set(names))
    if skipped:
        print(f"note: the gallery leaves out {', '.join(skipped)} (needs a fitted interpretation; see notebook 03)")
    fig = viz.compare_methods(model, images.imagenet_normalize(shown), names, display=shown)
    fig.suptitle(f"{note}; top-1 class explained", y=1.0, fontsize=10)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "gallery.png"
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return path


def run_all(notebooks: Path, out: Path) -> int:
    """Execute every ``notebooks/[0-9][0-9]_*.ipynb`` in order into ``out``, then draw the method gallery."""
    paths = sorted(notebooks.glob("[0-9][0-9]_*.ipynb"))
    start = time.monotonic()
    for k, path in enumerate(paths, start=1):
        print(f"[{k}/{len(paths)}] executing {path.name}", flush=True)
        execute_notebook(path, out)
    if not paths:
        print(f"no notebooks in {notebooks} yet")
    size = 64 if os.environ.get("DVE_QUICK") == "1" else 224
    print("drawing the method gallery …", flush=True)
    print(f"method gallery -> {gallery(out, size)}")
    print(
        f"done in {_duration(time.monotonic() - start)}; results are in {out}/ (executed notebooks, HTML, gallery.png)"
    )
    return 0
