"""The project a newcomer meets: README commands, CI script, Makefile, conda file, command line."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import tomllib
import yaml

from dvehelpers import __main__ as cli
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


def test_run_evaluates_executes_notebooks_and_draws_the_galleries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dvehelpers import run as run_module

    monkeypatch.delenv("DVE_QUICK", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no ImageNet weights: only the sanity figure
    monkeypatch.setenv("DVE_RESULTS", str(tmp_path / "results"))
    calls: list[list[str]] = []
    real_call = run_module.subprocess.call
    monkeypatch.setattr(run_module.subprocess, "call", lambda cmd: calls.append(cmd) or real_call(cmd))
    nbdir = tmp_path / "nb"
    nbdir.mkdir()
    cell = {
        "cell_type": "code",
        "execution_count": None,
        "metadata": {},
        "outputs": [],
        "source": "import os\nimport dvehelpers as dh\nprint(len(dh.METHODS), os.environ.get('DVE_QUICK'))",
    }
    nb = {
        "cells": [cell],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (nbdir / "00_demo.ipynb").write_text(json.dumps(nb))
    build = tmp_path / "build"
    small = ["--quick", "--methods", "gradcam", "--variants", "single-6c", "--archs", "alexnet"]  # the wiring only
    assert run_module.run_all(nbdir, build, evaluate_args=small) == 0
    import os

    import dvehelpers as dh

    assert calls == [[sys.executable, "-m", "dvehelpers", "evaluate", *small]]  # in its own process
    assert (tmp_path / "results" / "evaluation.md").is_file()
    executed = json.loads((build / "00_demo.ipynb").read_text())
    # executed at DVE_QUICK sizes by default, and the variable is restored afterwards
    assert "".join(executed["cells"][0]["outputs"][0]["text"]).strip() == f"{len(dh.METHODS)} 1"
    assert "DVE_QUICK" not in os.environ
    assert (build / "00_demo.html").stat().st_size > 1000
    for variant in dh.data.VARIANTS:
        for arch in ("vgg", "alexnet"):
            assert (build / f"gallery_an8flower-{arch}-{variant}.png").read_bytes()[:4] == b"\x89PNG"
    # the real-photo gallery is the main figure, offline; VGG-16's only with its weights; no random-weight figure
    assert (build / "gallery_imagenet_efficientnet-lite0.png").read_bytes()[:4] == b"\x89PNG"
    assert not (build / "gallery_imagenet_vgg16.png").exists() and not (build / "sanity_random_vgg16.png").exists()
    out = capsys.readouterr().out
    assert out.rstrip().splitlines()[-1].startswith("done in")
    assert "mean IoU ×100 on the an8Flower-synth test splits" in out and "reference: mask" in out


def test_make_run_runs_the_full_evaluation(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    monkeypatch.setattr(cli, "run_all", lambda nb, out, full: seen.append((nb, out, full)) or 0)
    assert main(["run"]) == 0 and main(["run", "--full"]) == 0
    assert [s[2] for s in seen] == [False, True] and seen[0][1].name == "build"


def test_cli_interpret_fits_each_shipped_model(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = []  # the command's own reference to fit_shipped is replaced: nothing is fitted or written
    monkeypatch.setattr(cli, "fit_shipped", lambda v, a, seed, mu: calls.append((v, a, seed, mu)) or Path(f"{v}-{a}"))
    args = ["interpret", "--variant", "single-6c", "--variant", "double-12c", "--arch", "alexnet", "--mu", "2"]
    assert main(args) == 0
    assert calls == [("single-6c", "alexnet", 0, 2.0), ("double-12c", "alexnet", 0, 2.0)]
    assert "saved double-12c-alexnet" in capsys.readouterr().out


def test_cli_layers_lists_every_node_with_kind_and_shape(capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m dvehelpers layers MODEL``: a torchvision name (built without weights), a shipped model."""
    assert main(["layers", "resnet18", "--size", "64"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "ResNet: 49 layers for a 64×64 input (pass a name as layer=)"
    row = next(line for line in out if " layer4.1.relu_1 " in line)
    assert row.split()[2:4] == ["relu", "512×2×2"] and "(layer4.1.relu)" in row  # the module the call belongs to
    assert main(["layers", "an8flower-vgg-single-6c"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "for a 112×112 input" in out[0] and any(line.split()[1:4] == ["pool5", "maxpool", "128×3×3"] for line in out)
    with pytest.raises(SystemExit, match="no model named 'nonet'"):
        main(["layers", "nonet"])
