"""``make site``: the series as a static website, from the committed notebooks' outputs (nothing is executed).

Built with Sphinx and MyST-NB rather than Jupyter Book: Jupyter Book 1 is a layer over exactly these two (one more
configuration format and dependency for nothing we need), and Jupyter Book 2 builds with the Node-based ``mystmd``,
which cannot render an API reference from Python docstrings. Sphinx's autodoc does, and MyST-NB renders the
notebooks as they were committed.

The site mirrors the repository's layout — ``index`` (the README), ``notebooks/``, ``docs/`` and ``api`` — so that
the links the notebooks and docs use on GitHub work on the site unchanged. Mathematics is typeset by a local copy of
MathJax (from the ``jupyter-server-mathjax`` package), so the site works offline. Widgets are shown by their
``text/plain`` fallback (see :mod:`dvehelpers.nbclean`): the site has no kernel, and a picture of each explorer's first
state follows it. With a ``repository`` (a GitHub URL), each notebook page starts with Binder and Colab links.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import tomllib

from .atomic import write_text

__all__ = ["API_MODULES", "repository_url", "launch_links", "stage", "build"]

ROOT = Path(__file__).resolve().parents[1]
#: The modules of the API reference, in the order a reader meets them.
API_MODULES = (
    "dvehelpers.registry",
    "dvehelpers.models",
    "dvehelpers.images",
    "dvehelpers.data",
    "dvehelpers.methods.gradients",
    "dvehelpers.methods.cam",
    "dvehelpers.methods.activation",
    "dvehelpers.methods.kl",
    "dvehelpers.methods.fourier",
    "dvehelpers.methods.vebi",
    "dvehelpers.methods.lasso",
    "dvehelpers.methods.fbi",
    "dvehelpers.maps",
    "dvehelpers.evaluate.iou",
    "dvehelpers.evaluate.metrics",
    "dvehelpers.evaluate.grid",
    "dvehelpers.evaluate.sanity",
    "dvehelpers.evaluate.protocol",
    "dvehelpers.viz",
    "dvehelpers.diagrams",
    "dvehelpers.widgets",
    "dvehelpers.nbclean",
    "dvehelpers.devices",
)

CONF = """\
# Written by dvehelpers.site; the site's Sphinx configuration.
project = "Deep Visual Explanation, reproduced"
extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.mathjax"]
root_doc = "index"
exclude_patterns = ["_build"]
nb_execution_mode = "off"  # the committed outputs are the content
nb_mime_priority_overrides = [("html", "application/vnd.jupyter.widget-view+json", None)]
nb_ipywidgets_js = {{}}
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
mathjax_path = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"
# the local MathJax 2 ships the STIX-Web fonts only; MyST-NB marks pages "tex2jax_ignore" and the math "math"
mathjax2_config = {{
    "tex2jax": {{"processClass": "math|output_area", "ignoreClass": "tex2jax_ignore|mathjax_ignore"}},
    "HTML-CSS": {{"availableFonts": [], "preferredFont": None, "webFont": "STIX-Web", "imageFont": None}},
    "SVG": {{"font": "STIX-Web"}},
}}
html_static_path = ["_static"]
html_theme = "sphinx_book_theme"
html_title = project
html_theme_options = {{"use_download_button": True, "show_toc_level": 2}}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
suppress_warnings = ["myst.header", "mystnb.unknown_mime_type", "misc.highlighting_failure"]
"""


def repository_url(root: Path = ROOT) -> str | None:
    """The project's GitHub URL: ``[project.urls] Repository`` in ``pyproject.toml``, else git's ``origin`` remote
    when it is on GitHub, else None (the site then says how to run a notebook locally)."""
    urls = tomllib.loads((root / "pyproject.toml").read_text()).get("project", {}).get("urls", {})
    url = urls.get("Repository") or urls.get("repository")
    if url is None:
        try:
            url = subprocess.run(
                ["git", "remote", "get-url", "origin"], cwd=root, capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None
    match = re.match(r"^(?:https://github\.com/|git@github\.com:)([\w.-]+/[\w.-]+?)(?:\.git)?/?$", url or "")
    return f"https://github.com/{match.group(1)}" if match else None


def launch_links(repository: str | None, notebook: str, branch: str = "main") -> str:
    """The markdown line at the top of a notebook's page: Binder and Colab links to ``notebook`` (a path such as
    ``notebooks/01_kl_divergence_dve.ipynb``) in ``repository``, or how to run it locally when there is none."""
    local = "locally: `make lab` in a clone of the repository"
    if repository is None:
        return f"*Run this notebook {local}.*"
    slug = repository.removeprefix("https://github.com/")
    binder = f"https://mybinder.org/v2/gh/{slug}/{branch}?labpath={quote(notebook, safe='')}"
    colab = f"https://colab.research.google.com/github/{slug}/blob/{branch}/{notebook}"
    return f"*Run this notebook:* [on Binder]({binder}) · [on Colab]({colab}) · {local}."


def _index(readme: str, notebooks: list[str], docs: list[str]) -> str:
    """The front page: the README, with the site's table of contents (hidden: the sidebar shows it)."""

    def toctree(caption: str, entries: list[str]) -> str:
        return "\n".join(["```{toctree}", ":hidden:", f":caption: {caption}", "", *entries, "```", ""])

    return "\n".join([readme, toctree("Notebooks", notebooks), toctree("Notes", docs), toctree("Reference", ["api"])])


def _api() -> str:
    blocks = [f"```{{eval-rst}}\n.. automodule:: {m}\n   :members:\n```\n" for m in API_MODULES]
    return "# API reference\n\nThe package's public functions and classes, from their docstrings.\n\n" + "\n".join(
        blocks
    )


def stage(staging: Path, root: Path = ROOT, repository: str | None = None) -> Path:
    """Copy the site's sources into ``staging`` (emptied first): README as ``index.md``, the notebooks each with a
    launch line first, ``docs/*.md``, the API page, the configuration and MathJax. Returns ``staging``."""
    import jupyter_server_mathjax

    if staging.exists():
        shutil.rmtree(staging)
    (staging / "notebooks").mkdir(parents=True)
    notebooks = sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    for path in notebooks:
        nb = json.loads(path.read_text())
        line = launch_links(repository, f"notebooks/{path.name}")
        nb["cells"].insert(1, {"cell_type": "markdown", "metadata": {}, "source": line})  # under the title
        write_text(staging / "notebooks" / path.name, json.dumps(nb))
    docs = sorted((root / "docs").glob("*.md"))
    shutil.copytree(root / "docs", staging / "docs", ignore=shutil.ignore_patterns("conf.py", "_*"))
    readme = (root / "README.md").read_text()
    write_text(
        staging / "index.md",
        _index(readme, [f"notebooks/{p.stem}" for p in notebooks], [f"docs/{p.stem}" for p in docs]),
    )
    write_text(staging / "api.md", _api())
    write_text(staging / "conf.py", CONF.format())
    mathjax = Path(jupyter_server_mathjax.__file__).parent / "static"
    shutil.copytree(mathjax, staging / "_static" / "mathjax")
    return staging


def build(out: Path, root: Path = ROOT, repository: str | None = None, staging: Path | None = None) -> Path:
    """Build the site into ``out`` (HTML; ``out/index.html`` is the front page) and return ``out``. The pages are
    written next to ``out`` first and moved into place only when Sphinx succeeded, so a failed build never leaves a
    half-written site where the last good one was."""
    staging = stage(staging or out.with_name(out.name + "-src"), root, repository)
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-j", "auto", str(staging), str(partial)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"sphinx failed ({result.returncode}):\n{result.stderr[-4000:]}")
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)
    write_text(out / "WARNINGS.txt", result.stderr)  # what Sphinx had to say, for whoever edits the docs
    return out
