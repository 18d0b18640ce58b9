"""What the committed notebooks show a reader without a kernel, and the finaliser that makes it readable."""

from __future__ import annotations

import copy
from pathlib import Path

import nbformat
import pytest

from dvehelpers import nbclean

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
VIEW = nbclean.WIDGET_VIEW


def _model(name: str, **state: object) -> dict:
    return {"model_name": name, "model_module": "@jupyter-widgets/controls", "state": state}


def _executed() -> dict:
    """A notebook as nbclient leaves it: a tqdm bar and an explorer whose fallbacks are frozen reprs."""
    state = {
        "bar": _model("HBoxModel", children=["IPY_MODEL_l", "IPY_MODEL_p", "IPY_MODEL_r"]),
        "l": _model("HTMLModel", value="explaining:\u2007100%"),
        "p": _model("FloatProgressModel", value=95.0, max=95.0),
        "r": _model("HTMLModel", value="\u200795/95\u2007[00:08&lt;00:00,\u2007\u20075.33batch/s]"),
        "ex": _model("VBoxModel", children=["IPY_MODEL_l"]),
    }

    def view(model_id: str, text: str) -> dict:
        data = {VIEW: {"model_id": model_id, "version_major": 2}, "text/plain": text}
        return {"output_type": "display_data", "data": data, "metadata": {}}

    png = {"output_type": "display_data", "data": {"image/png": "iVBOR", "text/plain": "<Figure>"}, "metadata": {}}
    cells = [
        {
            "cell_type": "code",
            "source": "run()",
            "outputs": [view("bar", "explaining:   0%|          | 0/95 [00:00<?]")],
        },
        {"cell_type": "code", "source": "ex.show()", "outputs": [view("ex", "VBox(children=(HBox(…),))"), png]},
    ]
    return {"cells": cells, "metadata": {"widgets": {nbclean.WIDGET_STATE: {"state": state}}}}


def test_finalize_writes_the_bars_final_text_and_names_the_explorer(tmp_path: Path) -> None:
    nb = _executed()
    before = nbclean.problems(nb, tmp_path / "x.ipynb")
    assert before == ["x.ipynb c0: shows a progress bar frozen at 0/N", "x.ipynb c1: " + _REPR]
    nbclean.finalize(nb)
    assert (
        nb["cells"][0]["outputs"][0]["data"]["text/plain"]
        == "explaining: 100%|██████████| 95/95 [00:08<00:00,  5.33batch/s]"
    )
    assert nb["cells"][1]["outputs"][0]["data"]["text/plain"] == nbclean.EXPLORER_TEXT
    assert nbclean.problems(nb, tmp_path / "x.ipynb") == []


_REPR = "shows a widget's repr instead of a sentence (run it through finalize)"


def test_finalize_draws_a_half_done_bar_half_full_and_leaves_unsaved_widgets_alone() -> None:
    nb = _executed()
    nb["metadata"]["widgets"][nbclean.WIDGET_STATE]["state"]["p"]["state"]["value"] = 47.5
    del nb["metadata"]["widgets"][nbclean.WIDGET_STATE]["state"]["ex"]
    nbclean.finalize(nb)
    assert "|█████     |" in nb["cells"][0]["outputs"][0]["data"]["text/plain"]
    assert nb["cells"][1]["outputs"][0]["data"]["text/plain"].startswith("VBox(")


@pytest.mark.parametrize(
    ("output", "problem"),
    [
        ({"output_type": "stream", "name": "stdout", "text": "wrote /work/main/results\n"}, "absolute path: /work/"),
        ({"output_type": "stream", "name": "stdout", "text": "saved to /tmp/x.png\n"}, "absolute path: /tmp/"),
        ({"output_type": "error", "ename": "E", "evalue": "", "traceback": ["boom"]}, "traceback"),
        ({"output_type": "stream", "name": "stderr", "text": "Traceback (most recent call last):\n"}, "traceback"),
        ({"output_type": "execute_result", "data": {"text/plain": "Text(0.5, 0.98, 'title')"}}, "stray repr"),
    ],
)
def test_problems_names_what_a_reader_would_see_broken(output: dict, problem: str, tmp_path: Path) -> None:
    nb = {"cells": [{"cell_type": "code", "source": "", "outputs": [output]}]}
    found = nbclean.problems(nb, tmp_path / "n.ipynb")
    assert len(found) == 1 and problem in found[0] and found[0].startswith("n.ipynb c0:")


def test_a_widget_needs_a_picture_after_it(tmp_path: Path) -> None:
    nb = nbclean.finalize(_executed())
    explorer = copy.deepcopy(nb["cells"][1])
    explorer["outputs"] = explorer["outputs"][::-1]  # the picture before the widget does not count
    assert nbclean.problems({"cells": [explorer]}, tmp_path / "n.ipynb") == [
        "n.ipynb c0: shows a widget with no static picture after it"
    ]


def test_links_and_file_mentions_must_resolve(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "methods.md").write_text("# m\n")
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "01_a.ipynb").write_text("{}")
    source = (
        "See [the notes](../docs/methods.md#kl), [next](01_a.ipynb), [paper](https://arxiv.org/abs/1.2), "
        "[gone](02_b.ipynb), [front page](../README.md), [results](../benchmarks/RESULTS.md) and `DESIGN.md`; "
        "01_a.ipynb and methods.md are fine."
    )
    (tmp_path / "README.md").write_text("# r\n")
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "RESULTS.md").write_text("# r\n")
    assert nbclean.links(source) == [
        "../docs/methods.md",
        "01_a.ipynb",
        "02_b.ipynb",
        "../README.md",
        "../benchmarks/RESULTS.md",
    ]
    nb = {"cells": [{"cell_type": "markdown", "source": source}]}
    assert nbclean.problems(nb, tmp_path / "notebooks" / "00.ipynb") == [
        "00.ipynb c0: link to '02_b.ipynb', which does not exist",
        "00.ipynb c0: link to '../benchmarks/RESULTS.md', which the site does not publish (name it as code, or link "
        "a doc or notebook)",
        "00.ipynb c0: mentions 'DESIGN.md', which is not in the repository",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebook_reads_without_a_kernel(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    assert nbclean.problems(nb, path) == []
