"""``make run``: execute every notebook in order into ``build/`` and draw the method gallery."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["run_all", "execute_notebook", "gallery"]


def execute_notebook(path: Path, out: Path, timeout: int = 3600) -> Path:
    """Execute ``path`` top to bottom in its own folder; write the executed copy and an HTML page to ``out``."""
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import ExecutePreprocessor

    nb = nbformat.read(path, as_version=4)
    ExecutePreprocessor(timeout=timeout, kernel_name="python3").preprocess(nb, {"metadata": {"path": str(path.parent)}})
    out.mkdir(parents=True, exist_ok=True)
    executed = out / path.name
    _atomic_write(executed, nbformat.writes(nb))
    html, _ = HTMLExporter().from_notebook_node(nb)
    _atomic_write(executed.with_suffix(".html"), html)
    return executed


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
    fig = viz.compare_methods(model, images.imagenet_normalize(shown), sorted(METHODS), display=shown)
    fig.suptitle(f"{note}; top-1 class explained", y=1.0, fontsize=10)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "gallery.png"
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return path


def run_all(notebooks: Path, out: Path) -> int:
    from tqdm.auto import tqdm

    paths = sorted(notebooks.glob("[0-9][0-9]_*.ipynb"))
    for path in tqdm(paths, desc="notebooks", unit="nb"):
        print(f"executed {path.name} -> {execute_notebook(path, out)}")
    if not paths:
        print(f"no notebooks in {notebooks} yet")
    size = 64 if os.environ.get("DVE_QUICK") == "1" else 224
    print(f"method gallery -> {gallery(out, size)}")
    print(f"results are in {out}/ (executed notebooks, HTML pages, gallery.png)")
    return 0
