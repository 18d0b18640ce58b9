"""``make run``'s notebook execution: per-cell progress named by section, the time taken, atomic outputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dvehelpers.run import execute_notebook, sections


def _cell(kind: str, source: str) -> dict:
    cell = {"cell_type": kind, "metadata": {}, "source": source}
    return cell | ({"execution_count": None, "outputs": []} if kind == "code" else {})


def _notebook(path: Path) -> Path:
    cells = [
        _cell("markdown", "# Demo\n\n## Part one: setting up"),
        _cell("code", "import time\nx = 20"),
        _cell("markdown", "Some prose, no heading.\n\n### Part two: waiting ###"),
        _cell("code", "time.sleep(1.0)\nprint(x + 1)"),
        _cell("code", "   "),  # empty: not executed, not counted
    ]
    for i, cell in enumerate(cells):
        cell["id"] = f"cell-{i}"
    kernel = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.write_text(
        json.dumps({"cells": cells, "metadata": {"kernelspec": kernel}, "nbformat": 4, "nbformat_minor": 5})
    )
    return path


def test_sections_follow_the_latest_heading() -> None:
    cells = [_cell("code", "1"), _cell("markdown", "# A\ntext\n## B"), _cell("code", "2"), _cell("markdown", "no")]
    assert sections(cells) == ["", "B", "B", "B"]


def test_execute_notebook_reports_cells_sections_and_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nb = _notebook(tmp_path / "00_demo.ipynb")
    executed = execute_notebook(nb, tmp_path / "build")
    out, err = capsys.readouterr()
    assert executed == tmp_path / "build" / "00_demo.ipynb"
    cells = json.loads(executed.read_text())["cells"]
    assert "".join(cells[3]["outputs"][0]["text"]).strip() == "21"
    assert (tmp_path / "build" / "00_demo.html").stat().st_size > 1000
    assert not list((tmp_path / "build").glob("*.tmp"))  # written atomically, nothing left behind
    # one tqdm bar over the 2 code cells, its description the section being run
    assert "00_demo · Part one: setting up" in err and "00_demo · Part two: waiting" in err
    assert re.search(r"00_demo · Part two: waiting: +50%\|[^|]*\| 1/2", err), err  # while the second cell ran
    assert re.search(r"00_demo: 100%\|[^|]*\| 2/2", err), err  # the bar when the notebook is done
    seconds = float(re.fullmatch(rf"executed 00_demo.ipynb in ([\d.]+) s -> {re.escape(str(executed))}\n", out)[1])
    assert 1.0 <= seconds < 60  # the cell slept for one second
