"""The project a newcomer meets: README commands, CI script, Makefile, conda file, command line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import tomllib
import yaml

from dvehelpers.__main__ import main

ROOT = Path(__file__).resolve().parent.parent


def _split(req: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", req)
    assert m, req
    name = m.group(1).lower().replace("_", "-")
    return {"pytorch": "torch", "python": "python"}.get(name, name), m.group(2).replace(" ", "")


def test_environment_yml_lists_the_same_dependencies_as_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = dict(map(_split, project["dependencies"] + project["optional-dependencies"]["dev"]))
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    listed: dict[str, str] = {}
    for dep in env["dependencies"]:
        for item in dep["pip"] if isinstance(dep, dict) else [dep]:
            if item not in ("pip", "-e ."):
                name, spec = _split(item)
                listed[name] = spec
    assert listed.pop("python") == project["requires-python"]
    assert listed == wanted


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"`(make [a-z]+)`", readme)
    assert "make run" in commands and "make test" in commands
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M) and "set -euo pipefail" in ci


def test_make_test_runs_the_suite_and_the_notebooks_quickly() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\ntest:")[1].split("\n\n")[0]
    assert "DVE_QUICK=1 $(BIN)/python -m pytest -q tests" in recipe
    assert "--nbval-lax notebooks" in recipe
    assert "MPLBACKEND" not in makefile  # figure outputs would vanish under nbval
    assert "$(STAMP): pyproject.toml" in makefile  # installs once, again only when dependencies change


def test_cli_lists_every_method_with_its_parameters(capsys: pytest.CaptureFixture[str]) -> None:
    import dvehelpers as dh

    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for m in dh.METHODS.values():
        assert re.search(rf"^{m.name}\s+{re.escape(m.paper)}", out, re.M)
    assert "reduction = 'pos_l2'" in out


def test_run_executes_notebooks_and_draws_the_gallery(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DVE_QUICK", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no ImageNet weights: random-weight gallery
    nbdir = tmp_path / "nb"
    nbdir.mkdir()
    cell = {
        "cell_type": "code",
        "execution_count": None,
        "metadata": {},
        "outputs": [],
        "source": "import dvehelpers as dh\nprint(len(dh.METHODS))",
    }
    nb = {
        "cells": [cell],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (nbdir / "00_demo.ipynb").write_text(json.dumps(nb))
    assert main(["run", "--notebooks", str(nbdir), "--out", str(tmp_path / "build")]) == 0
    executed = json.loads((tmp_path / "build" / "00_demo.ipynb").read_text())
    import dvehelpers as dh

    assert "".join(executed["cells"][0]["outputs"][0]["text"]).strip() == str(len(dh.METHODS))
    assert (tmp_path / "build" / "00_demo.html").stat().st_size > 1000
    assert (tmp_path / "build" / "gallery.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_interpret_fits_each_shipped_model(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dvehelpers.methods import vebi

    calls = []
    monkeypatch.setattr(vebi, "fit_shipped", lambda v, a, seed, mu: calls.append((v, a, seed, mu)) or Path(f"{v}-{a}"))
    args = ["interpret", "--variant", "single-6c", "--variant", "double-12c", "--arch", "alexnet", "--mu", "2"]
    assert main(args) == 0
    assert calls == [("single-6c", "alexnet", 0, 2.0), ("double-12c", "alexnet", 0, 2.0)]
    assert "saved double-12c-alexnet" in capsys.readouterr().out
