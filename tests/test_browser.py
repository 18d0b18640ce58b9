"""The notebooks' widgets in a real browser: JupyterLab + headless Chromium, driven by Playwright.

Every ``notebooks/[0-9][0-9]_*.ipynb`` (found at run time) is copied into a temporary folder, opened in
JupyterLab with ``DVE_QUICK=1`` and run up to its last explorer / dataset-browser cell; each of those widgets
must display its dropdown labels ("top-1", "default", …), redraw its figure when a dropdown and a slider change,
and show no error. Screenshots go to ``build/browser/``. Negative controls prove that the checker fails on an
explorer whose redraw raises and on one that redraws nothing.

Needs Debian's Chromium and the playwright package (``apt-get install chromium; pip install playwright``);
skipped otherwise.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import dvehelpers as dh

from .browser_harness import (
    NotebookReport,
    browser_test_status,
    check_notebook,
    lab_and_browser,
    missing_requirements,
    widget_cells,
)

ROOT = Path(__file__).resolve().parent.parent
# DVE_BROWSER_NOTEBOOKS: another folder of notebooks to check (e.g. copies of the committed ones)
NOTEBOOKS = sorted(Path(os.environ.get("DVE_BROWSER_NOTEBOOKS", ROOT / "notebooks")).glob("[0-9][0-9]_*.ipynb"))
SHOTS = ROOT / "build" / "browser"
CONTROLS = "controls.ipynb"

_WHY_NOT = missing_requirements()
needs_browser = pytest.mark.skipif(_WHY_NOT is not None, reason=f"browser test: {_WHY_NOT}")

# A tiny notebook of deliberately broken widgets, to prove the checker fails on them (cell index: role).
_CONTROL_CELLS = {
    "setup": """%matplotlib inline
import ipywidgets as W
import torch
import dvehelpers as dh
model = dh.models.load("an8flower-vgg-single-6c")
x, y, m = dh.data.render("single-6c", 2, size=112, seed=0)""",
    "works": """dh.widgets.explorer(model, x, masks=m, method="gradcam").widget""",
    "raises": """broken = dh.widgets.explorer(model, x, masks=m, method="gradcam")
broken.masks = torch.zeros(0, 112, 112)  # deliberately broken: every later redraw raises IndexError
broken.widget""",
    "silent": """silent = dh.widgets.explorer(model, x, method="gradcam")
silent.output = W.Output()  # deliberately broken: redraws go to an output area that is not displayed
silent.widget""",
    "silent_browser": """browser = dh.widgets.dataset_browser(size=64)
browser.output = W.Output()  # deliberately broken, as above
browser.widget""",
    "photo": """lite = dh.models.load("efficientnet-lite0")
dh.widgets.photo_explorer(lite, method="gradcam").widget""",
    "fails_to_build": """# deliberately broken: a traceback
dh.widgets.explorer(model, x, method="no_such_method").widget""",
}
CONTROL = {role: i for i, role in enumerate(_CONTROL_CELLS)}


def _control_notebook(folder: Path) -> Path:
    cells = [
        {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": src}
        for src in _CONTROL_CELLS.values()
    ]
    kernel = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb = {"cells": cells, "metadata": {"kernelspec": kernel}, "nbformat": 4, "nbformat_minor": 5}
    path = folder / CONTROLS
    path.write_text(json.dumps(nb))
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    """One JupyterLab (serving copies of every notebook and the controls) and one Chromium for the module."""
    controls = _control_notebook(tmp_path_factory.mktemp("controls"))
    with lab_and_browser([*NOTEBOOKS, controls]) as (server, context):
        yield server, context


def photo_files(folder: Path) -> list[Path]:
    """What a reader might upload: a real photo as JPEG (the espresso of scikit-image's ``coffee``, as a phone would
    save it: 1200×800) and a JPEG cut off half-way."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(dh.images.photo_array("coffee")).resize((1200, 800)).save(buf, "JPEG")
    good, cut = folder / "my_coffee.jpg", folder / "broken.jpg"
    good.write_bytes(buf.getvalue())
    cut.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return [good, cut]


def _check(lab: tuple[Any, Any], name: str, cells: list[int]) -> NotebookReport:
    server, context = lab
    for old in SHOTS.glob(f"{Path(name).stem}-*.png"):  # no stale screenshots of cells that moved
        old.unlink()
    sources = [c["source"] for c in json.loads(server.root.joinpath(name).read_text())["cells"]]
    photo_cells = [k for k in cells if "photo_explorer(" in "".join(sources[k])]
    uploads = {k: photo_files(Path(tempfile.mkdtemp(prefix="dve-upload-"))) for k in photo_cells}
    report = check_notebook(context, server, name, cells, SHOTS, uploads=uploads)
    SHOTS.mkdir(parents=True, exist_ok=True)
    summary = {"seconds": round(report.seconds, 1), "widgets": len(report.widgets), "failures": report.failures()}
    (SHOTS / f"{Path(name).stem}.json").write_text(json.dumps(summary, indent=1))
    return report


@needs_browser
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_widget_shows_its_labels_and_redraws_without_error(lab: tuple[Any, Any], notebook: Path) -> None:
    cells = widget_cells(notebook)
    if not cells:
        pytest.skip(f"{notebook.name} has no dh.widgets.explorer( / dataset_browser( cell")
    report = _check(lab, notebook.name, cells)
    assert not report.failures(), "\n".join(report.failures())
    assert [w.cell for w in report.widgets] == cells
    for w in report.widgets:  # each widget was exercised: start, dropdown, slider
        assert len(w.screenshots) == 3 and all(p.stat().st_size > 1000 for p in w.screenshots)
        if w.kind == "explorer":
            assert (w.labels["target"], w.labels.get("layer", "default")) == ("top-1", "default")
        if w.uploads:  # a photo explorer: a photo chosen in its upload control is explained
            assert_uploads_explained(w)


@pytest.fixture(scope="module")
def controls(lab: tuple[Any, Any]) -> NotebookReport:
    """The negative-control notebook, run and checked once."""
    start = time.monotonic()
    report = _check(lab, CONTROLS, list(CONTROL.values())[1:])
    assert time.monotonic() - start < 300
    return report


def _problems(report: NotebookReport, role: str) -> list[str]:
    (widget,) = [w for w in report.widgets if w.cell == CONTROL[role]]
    return widget.problems


@needs_browser
def test_checker_passes_a_working_explorer(controls: NotebookReport) -> None:
    assert _problems(controls, "works") == []


@needs_browser
def test_checker_fails_a_traceback_in_the_notebook(controls: NotebookReport) -> None:
    (problem,) = _problems(controls, "fails_to_build")
    assert problem.startswith("no explorer or dataset browser displayed") and "no_such_method" in problem
    assert controls.problems[0] == "a cell failed while running the notebook"
    assert len(controls.problems) == 2 and "ValueError: unknown method(s) ['no_such_method']" in controls.problems[1]


@needs_browser
def test_checker_fails_an_explorer_whose_redraw_raises(controls: NotebookReport) -> None:
    problems = _problems(controls, "raises")
    assert any("error area says: IndexError" in p for p in problems), problems
    assert any("dropdown 'target'" in p and "did not change" in p for p in problems), problems
    assert any("slider 'image'" in p and "did not change" in p for p in problems), problems


@needs_browser
@pytest.mark.parametrize("role", ["silent", "silent_browser"])
def test_checker_fails_a_widget_that_redraws_nothing(controls: NotebookReport, role: str) -> None:
    problems = _problems(controls, role)
    assert len(problems) == 2 and all("no new figure" in p for p in problems), problems


def test_widget_cells_are_found_by_their_call(tmp_path: Path) -> None:
    path = _control_notebook(tmp_path)
    roles = ("works", "raises", "silent", "silent_browser", "photo", "fails_to_build")
    assert widget_cells(path) == [CONTROL[r] for r in roles]


@needs_browser
def test_a_photo_chosen_in_the_real_upload_control_is_explained_and_a_broken_one_named(
    controls: NotebookReport,
) -> None:
    """The photo explorer in Chromium: a 1200×800 JPEG chosen in its file input is added, explained (the figure
    redraws) and its top-5 classes are shown, espresso first; a truncated JPEG gets the reason in the widget."""
    assert _problems(controls, "photo") == []  # its dropdowns and slider work like any explorer's
    (widget,) = [w for w in controls.widgets if w.cell == CONTROL["photo"]]
    assert_uploads_explained(widget)


def assert_uploads_explained(widget: Any) -> None:
    """:func:`photo_files` chosen in a photo explorer showing the eight offline photos with a class."""
    good, cut = widget.uploads
    assert good["redrawn"] and not good["errors"], good
    assert good["top5"].startswith("my_coffee.jpg — top-5 classes:"), good
    assert good["top5"].split("classes:")[1].strip().startswith("espresso"), good["top5"]
    assert good["message"] == "my_coffee.jpg: shown as image 8"
    assert "broken.jpg: the image data is truncated or damaged" in cut["message"] and not cut["redrawn"], cut
    assert cut["top5"] == good["top5"]  # nothing added: the uploaded photo is still the one shown


def test_ci_installs_chromium_before_the_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.index("apt-get install -y -q chromium") < ci.index("install_chromium\nmake test\n")
    assert browser_test_status().startswith("browser test: ")
    makefile = (ROOT / "Makefile").read_text()
    assert "print(browser_test_status())" in makefile.split("\ntest:")[1].split("\n\n")[0]


def test_missing_chromium_gives_a_skip_reason_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from . import browser_harness

    monkeypatch.setattr(browser_harness, "CHROMIUM", "/nonexistent/chromium")
    why = browser_harness.missing_requirements()
    assert why is not None and why.startswith("Chromium (/nonexistent/chromium) not installed")
    assert why.endswith("install with: apt-get install chromium; pip install playwright")
    assert browser_harness.browser_test_status() == f"browser test: SKIPPED, {why}"
