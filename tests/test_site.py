"""``make site``: the static website of the series, built from the committed notebooks and opened in headless Chromium.

Built once per session (about half a minute). Without a browser the static checks still run: every notebook and doc
has a page, every internal link and anchor resolves, the Binder and Colab links point at the right notebook; with
Chromium and Playwright every page is opened: everything it loads loads, every image has pixels, the mathematics is
typeset, and no page shows a traceback, a frozen progress bar or a widget repr.
"""

from __future__ import annotations

import functools
import http.server
import re
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

import pytest

from dvehelpers import site

from .browser_harness import CHROMIUM, CHROMIUM_ARGS, missing_requirements

ROOT = Path(__file__).resolve().parents[1]
REPO = "https://github.com/example-org/deep-visual-explanation"
NOTEBOOKS = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
DOCS = sorted(p.stem for p in (ROOT / "docs").glob("*.md"))
_WHY_NOT = missing_requirements()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return site.build(tmp_path_factory.mktemp("site") / "site", repository=REPO)


class _Refs(HTMLParser):
    """The ``href``/``src`` of a page and the ids it defines."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.ids.update(v for k, v in attrs if k == "id" and v)
        self.refs += [v for k, v in a.items() if k in ("href", "src") and v]


@functools.cache
def _parse(path: Path) -> _Refs:
    parser = _Refs()
    parser.feed(path.read_text(errors="replace"))
    return parser


def _pages(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*.html") if "_static" not in p.parts)


def _internal_links(out: Path) -> Iterator[tuple[Path, str, Path, str]]:
    """(page, link, target file, anchor) for every link of every page that stays on the site."""
    for page in _pages(out):
        for ref in _parse(page).refs:
            if urlparse(ref).scheme or ref.startswith(("//", "mailto:", "javascript:")):
                continue
            target, anchor = urldefrag(ref)
            path = (page.parent / unquote(target.split("?")[0])).resolve() if target else page
            yield page, ref, path, anchor


def test_every_notebook_doc_and_the_api_have_a_page(built: Path) -> None:
    assert (built / "index.html").exists()
    for name in NOTEBOOKS:
        assert (built / "notebooks" / f"{name}.html").exists(), name
    for name in DOCS:
        assert (built / "docs" / f"{name}.html").exists(), name
    front = (built / "index.html").read_text()
    assert "Deep Visual Explanation, reproduced" in front  # the README's title
    assert all(f"notebooks/{name}.html" in front for name in NOTEBOOKS)  # the table of contents, in order
    assert [front.index(f"notebooks/{n}.html") for n in NOTEBOOKS] == sorted(
        front.index(f"notebooks/{n}.html") for n in NOTEBOOKS
    )
    api = (built / "api.html").read_text()
    for name in ("dvehelpers.registry.explain", "dvehelpers.methods.fbi.fbi", "dvehelpers.nbclean.problems"):
        assert f'id="{name}"' in api, name  # an entry from the docstring


def test_no_internal_link_or_anchor_is_broken(built: Path) -> None:
    broken = []
    for page, ref, path, anchor in _internal_links(built):
        if path.is_dir():
            path = path / "index.html"
        if not path.exists():
            broken.append(f"{page.relative_to(built)}: {ref} (no such file)")
        elif anchor and path.suffix == ".html" and anchor not in _parse(path).ids:
            broken.append(f"{page.relative_to(built)}: {ref} (no #{anchor} there)")
    assert broken == []
    links = [ref for page in _pages(built) for ref in _parse(page).refs]
    assert any("docs/methods.html#kl-divergence-dve" in r for r in links)  # the notebooks' links to the notes


def test_each_notebook_page_opens_on_binder_and_colab(built: Path) -> None:
    for name in NOTEBOOKS:
        refs = _parse(built / "notebooks" / f"{name}.html").refs
        colab = f"https://colab.research.google.com/github/example-org/deep-visual-explanation/blob/main/notebooks/{name}.ipynb"
        binder = f"https://mybinder.org/v2/gh/example-org/deep-visual-explanation/main?labpath=notebooks%2F{name}.ipynb"
        assert colab in refs and binder in refs, name


def test_repository_url_and_launch_links_without_one(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n[project.urls]\nRepository = "git@github.com:a/b.git"\n'
    )
    assert site.repository_url(tmp_path) == "https://github.com/a/b"
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert site.repository_url(tmp_path) is None  # no urls and not a git checkout
    assert "make lab" in site.launch_links(None, "notebooks/01.ipynb")
    assert "colab" not in site.launch_links(None, "notebooks/01.ipynb")


@pytest.mark.skipif(_WHY_NOT is not None, reason=f"site browser test: {_WHY_NOT}")
def test_every_page_loads_with_images_and_typeset_math_in_chromium(built: Path) -> None:
    from playwright.sync_api import sync_playwright

    handler = functools.partial(_QuietHandler, directory=str(built))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}/"
    problems: list[str] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page()
            failed: list[str] = []
            # fonts are left out: MathJax probes for optional local fonts and falls back by design
            page.on(
                "response",
                lambda r: (
                    failed.append(f"{r.status} {r.url}")
                    if r.status >= 400 and r.request.resource_type in ("document", "image", "script", "stylesheet")
                    else None
                ),
            )
            for path in _pages(built):
                name = str(path.relative_to(built))
                failed.clear()
                page.goto(base + name, wait_until="load")
                math = page.locator("span.math, div.math").count()
                if math:  # typeset: MathJax replaces each TeX source with its own rendering
                    page.wait_for_function("document.querySelectorAll('.MathJax, .MathJax_Display').length > 0")
                    page.wait_for_function("!document.body.innerText.includes('\\\\(')", timeout=30_000)
                text = page.inner_text("body")
                outputs = "\n".join(page.locator(".cell_output").all_inner_texts())  # what the notebooks printed
                broken = page.evaluate(
                    "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"
                )
                problems += [f"{name}: failed to load {f}" for f in failed]
                problems += [f"{name}: image without pixels {b}" for b in broken]
                for what, pattern in _BROKEN_OUTPUT.items():
                    if re.search(pattern, outputs):
                        problems.append(f"{name}: shows {what}")
                if re.search(r"\\\(|\\\[", text):
                    problems.append(f"{name}: shows untypeset TeX")
            browser.close()
    finally:
        server.shutdown()
    assert problems == [], "\n".join(problems)


_BROKEN_OUTPUT = {
    "a traceback": r"Traceback \(most recent call last\)",
    "a progress bar frozen at 0/N": r"\b0%\|.*\| 0/\d+",
    "a widget repr": r"\b[VH]Box\(children=",
}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass
