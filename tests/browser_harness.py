"""Drive the notebooks' widgets in a real browser: JupyterLab (from this environment) and headless Chromium.

Used by ``tests/test_browser.py``. :class:`LabServer` starts JupyterLab on a free localhost port, offline and
quiet, with ``DVE_QUICK=1``, in a folder of notebook copies; :func:`check_notebook` opens one notebook in a
Playwright page, runs it up to and including its last widget cell (the cells that call
``dh.widgets.explorer(`` or ``dh.widgets.dataset_browser(``), and exercises every widget: the dropdowns must
*display* a label, changing one dropdown and one slider must redraw the figure (the PNG changes), and no
error may appear (stderr or a traceback in the notebook, text in the widget's red error area).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
INSTALL_HINT = "install with: apt-get install chromium; pip install playwright"
WIDGET_CALL = re.compile(r"\bdh\.widgets\.(explorer|dataset_browser|photo_explorer)\(")
#: A photo explorer's upload button (it opens the file chooser), and the texts it fills.
UPLOAD, TOP5, UPLOAD_MESSAGE = ".dve-upload", ".dve-top5", ".dve-upload-message"
#: CSS classes that dvehelpers.widgets puts on its widgets, their error area and their figure area.
ROOTS, ERROR, FIGURE = ".dve-explorer, .dve-browser", ".dve-error", ".dve-figure"
STDERR = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'


def missing_requirements() -> str | None:
    """Why the browser test cannot run here, or None when Chromium and Playwright are both present."""
    missing = []
    if shutil.which(CHROMIUM) is None:
        missing.append(f"Chromium ({CHROMIUM})")
    if importlib.util.find_spec("playwright") is None:
        missing.append("the playwright package")
    return f"{' and '.join(missing)} not installed; {INSTALL_HINT}" if missing else None


def browser_test_status() -> str:
    """One line for ``make test``: whether the browser test will run, and how to enable it if not."""
    why = missing_requirements()
    if why is None:
        return "browser test: Chromium and Playwright found; it runs (screenshots in build/browser/)"
    return f"browser test: SKIPPED, {why}"


def widget_cells(notebook: Path) -> list[int]:
    """Indices (among all cells) of the code cells that build an explorer or a dataset browser."""
    cells = json.loads(notebook.read_text())["cells"]
    return [i for i, c in enumerate(cells) if c["cell_type"] == "code" and WIDGET_CALL.search(_source(c))]


def _source(cell: dict[str, Any]) -> str:
    src = cell.get("source", "")
    return src if isinstance(src, str) else "".join(src)


def copy_without_outputs(notebook: Path, folder: Path) -> Path:
    """A copy of ``notebook`` in ``folder`` with outputs and execution counts removed (faster to open)."""
    nb = json.loads(notebook.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    out = folder / notebook.name
    out.write_text(json.dumps(nb))
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _lab_config(home: Path) -> dict[str, Path]:
    """Config, settings and runtime folders of a throw-away JupyterLab: offline, quiet, no windowing."""
    dirs = {k: home / k for k in ("config", "data", "settings", "workspaces", "runtime", "ipython")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    server = {
        "ServerApp": {
            "jpserver_extensions": {"jupyter_lsp": False},  # no scan for language servers
            "open_browser": False,
            "allow_root": True,
            "password": "",
        },
        "IdentityProvider": {"token": ""},
        "LabApp": {
            "news_url": None,  # no announcements fetch, no "receive news?" prompt
            "check_for_updates_class": "jupyterlab.handlers.announcements.NeverCheckForUpdate",
            "extension_manager": "readonly",  # no PyPI queries from the extension manager
            "expose_app_in_browser": True,  # window.jupyterapp: run cells and watch the kernel from the test
        },
    }
    (dirs["config"] / "jupyter_server_config.json").write_text(json.dumps(server))
    tracker = dirs["settings"] / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True, exist_ok=True)
    tracker.write_text(json.dumps({"windowingMode": "none"}))  # every cell stays in the DOM
    news = dirs["settings"] / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True, exist_ok=True)
    news.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))  # no "get news?" toast
    return dirs


class LabServer:
    """JupyterLab on a free localhost port, no token or password, serving ``root``; ``DVE_QUICK=1``."""

    def __init__(self, root: Path, home: Path) -> None:
        self.root, self.port = root, _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = home / "jupyterlab.log"
        dirs = _lab_config(home)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "MPLBACKEND"))}
        env.update(
            DVE_QUICK="1",
            JUPYTER_CONFIG_DIR=str(dirs["config"]),
            JUPYTER_DATA_DIR=str(dirs["data"]),
            JUPYTERLAB_SETTINGS_DIR=str(dirs["settings"]),
            JUPYTERLAB_WORKSPACES_DIR=str(dirs["workspaces"]),
            JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
            IPYTHONDIR=str(dirs["ipython"]),
            JUPYTER_PLATFORM_DIRS="1",
        )
        cmd = [sys.executable, "-m", "jupyterlab", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0"]
        cmd += ["--ServerApp.ip=127.0.0.1", f"--ServerApp.root_dir={root}"]
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(cmd, cwd=root, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 90) -> None:
        """Block until the server answers its status API (or raise with the end of its log)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/status", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"JupyterLab did not answer within {timeout} s:\n{self.log_tail()}")

    def log_tail(self, n: int = 3000) -> str:
        return self.log_path.read_text()[-n:]

    def stop(self) -> None:
        """Terminate the server (its kernels go with it) and close its log."""
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


@contextmanager
def lab_and_browser(notebooks: list[Path], home: Path | None = None) -> Iterator[tuple[LabServer, Any]]:
    """A JupyterLab serving output-free copies of ``notebooks`` and a Chromium context (fresh profile)."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="dve-browser-") as tmp:
        base = Path(home or tmp)
        root = base / "notebooks"
        root.mkdir(parents=True, exist_ok=True)
        for nb in notebooks:
            copy_without_outputs(nb, root)
        server = LabServer(root, base)
        try:
            server.wait_ready()
            with sync_playwright() as pw:
                context = pw.chromium.launch_persistent_context(
                    str(base / "chromium-profile"),
                    executable_path=CHROMIUM,
                    headless=True,
                    args=CHROMIUM_ARGS,
                    viewport={"width": 1400, "height": 1000},
                )
                try:
                    yield server, context
                finally:
                    context.close()
        finally:
            server.stop()


@dataclass
class WidgetReport:
    """What one widget cell did in the browser; ``problems`` is empty when it behaved."""

    cell: int
    kind: str
    labels: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    screenshots: list[Path] = field(default_factory=list)
    uploads: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class NotebookReport:
    """A notebook's run: its widget reports, any stderr / traceback text, and the seconds it took."""

    name: str
    widgets: list[WidgetReport] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def failures(self) -> list[str]:
        """Every problem, prefixed with where it happened."""
        out = [f"{self.name}: {p}" for p in self.problems]
        out += [f"{self.name} cell {w.cell} ({w.kind}): {p}" for w in self.widgets for p in w.problems]
        return out


_OPEN_JS = """async () => {
  const panel = window.jupyterapp.shell.currentWidget;
  await panel.context.ready;
  await panel.sessionContext.ready;
  window.__dve = {busy: 0, status: panel.sessionContext.kernelDisplayStatus};
  panel.sessionContext.statusChanged.connect((_, s) => {
    window.__dve.status = s;
    if (s === 'busy') window.__dve.busy += 1;
  });
  return panel.id;
}"""

_IS_OPEN_JS = """(name) => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  return !!(w && w.context && w.context.path === name && w.sessionContext);
}"""

_RUN_JS = """(k) => {
  const app = window.jupyterapp;
  app.shell.currentWidget.content.activeCellIndex = k;
  const above = k > 0 ? app.commands.execute('notebook:run-all-above') : Promise.resolve(true);
  above.then(ok => app.commands.execute('notebook:run-cell').then(cell => { window.__dve.ran = [ok, cell]; }))
    .catch(() => { window.__dve.ran = [false, false]; });
}"""

_SHUTDOWN_JS = """async () => {
  const panel = window.jupyterapp.shell.currentWidget;
  await panel.sessionContext.shutdown();
}"""


def check_notebook(
    context: Any,
    server: LabServer,
    name: str,
    cells: list[int],
    shots: Path,
    timeout: float = 600,
    uploads: dict[int, list[Path]] | None = None,
) -> NotebookReport:
    """Run notebook ``name`` up to its last widget cell (within ``timeout`` s) and exercise the widgets of ``cells``;
    for the photo explorers among them, choose each file of ``uploads[cell]`` in the real upload control."""
    start = time.monotonic()
    report = NotebookReport(name)
    page = context.new_page()
    try:
        page.goto(f"{server.url}/lab/tree/{name}?reset", wait_until="domcontentloaded")  # reset: no other tabs
        page.wait_for_function(_IS_OPEN_JS, arg=name, timeout=60_000)
        panel = "#" + page.evaluate(_OPEN_JS)
        page.wait_for_selector(f"{panel} .jp-Cell", timeout=60_000)
        page.evaluate(_RUN_JS, max(cells))
        page.wait_for_function("() => window.__dve.ran !== undefined", timeout=timeout * 1000, polling=500)
        if not all(page.evaluate("() => window.__dve.ran")):
            report.problems.append("a cell failed while running the notebook")
        report.problems += _stderr(page.locator(panel))
        for k in cells:
            report.widgets.append(check_widget(page.locator(panel), k, shots / f"{Path(name).stem}-cell{k}"))
            for n, photo in enumerate((uploads or {}).get(k, [])):
                shot = shots / f"{Path(name).stem}-cell{k}-upload{n}.png"
                report.widgets[-1].uploads.append(upload_photo(page.locator(panel), k, photo, shot))
        report.problems += [p for p in _stderr(page.locator(panel)) if p not in report.problems]
        page.evaluate(_SHUTDOWN_JS)
    finally:
        page.close()
    report.seconds = time.monotonic() - start
    return report


def _stderr(panel: Any) -> list[str]:
    """The text of every stderr / traceback output in notebook ``panel`` (a locator)."""
    texts = panel.locator(STDERR).all_inner_texts()
    return [f"stderr/traceback output: …{t.strip()[-400:]}" for t in texts]  # the end names the exception


def check_widget(panel: Any, k: int, shots: str) -> WidgetReport:
    """In notebook ``panel`` (a locator), cell ``k``'s widget: labels shown, one dropdown and one slider changed
    (each must redraw), no error text."""
    page = panel.page
    cell = panel.locator(".jp-Cell").nth(k)
    cell.scroll_into_view_if_needed()
    root = cell.locator(ROOTS).first
    try:  # a cell that failed shows a traceback at once; a widget view may take a moment to render
        root.or_(cell.locator(STDERR)).first.wait_for(state="visible", timeout=30_000)
        root.wait_for(state="visible", timeout=1_000)
    except Exception:  # playwright's TimeoutError
        text = " ".join(cell.locator(".jp-OutputArea").all_inner_texts()).strip()
        return WidgetReport(k, "?", problems=[f"no explorer or dataset browser displayed (output: …{text[-300:]!r})"])
    kind = "explorer" if "dve-explorer" in (root.get_attribute("class") or "") else "dataset browser"
    report = WidgetReport(k, kind, labels=_dropdown_labels(root))
    report.problems += _label_problems(kind, report.labels)
    report.problems += _error_text(root)
    report.screenshots.append(_shot(root, f"{shots}-0-start.png"))
    if not _figure(root):
        report.problems.append("no figure drawn at start")
    for control, change in (("dropdown", _change_dropdown), ("slider", _change_slider)):
        report.problems += _redraws(page, root, change, control)
        report.screenshots.append(_shot(root, f"{shots}-{len(report.screenshots)}-{control}.png"))
    return report


def _dropdown_labels(root: Any) -> dict[str, str]:
    """description -> the label the dropdown displays ('' when it shows an empty box)."""
    js = """el => [...el.querySelectorAll('.widget-dropdown')].map(d => [
        (d.querySelector('label') || {}).textContent || '',
        (s => s && s.selectedIndex >= 0 ? s.options[s.selectedIndex].textContent : '')(d.querySelector('select'))])"""
    return {desc.strip(): label.strip() for desc, label in root.evaluate(js)}


def _label_problems(kind: str, labels: dict[str, str]) -> list[str]:
    problems = [f"dropdown {d!r} displays an empty box" for d, label in labels.items() if not label]
    if not labels:
        problems.append("no dropdown found")
    expected = {"target": "top-1", "layer": "default"} if kind == "explorer" else {}
    problems += [
        f"dropdown {d!r} displays {labels[d]!r}, expected {want!r}"
        for d, want in expected.items()
        if d in labels and labels[d] and labels[d] != want
    ]
    return problems


def _error_text(root: Any) -> list[str]:
    texts = [t.strip() for t in root.locator(ERROR).all_inner_texts() if t.strip()]
    return [f"error area says: {t[:500]}" for t in texts]


def _figure(root: Any) -> str:
    """The data URL of the figure the widget shows ('' when none)."""
    imgs = root.locator(f"{FIGURE} img")
    return imgs.first.get_attribute("src") or "" if imgs.count() else ""


def _shot(root: Any, path: str) -> Path:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    root.screenshot(path=path)
    return Path(path)


def _change_dropdown(root: Any) -> str | None:
    """Pick the next option of the target / class dropdown (else the first enabled one with a choice); say which
    (None: none)."""
    selects = root.locator(".widget-dropdown")
    order = sorted(range(selects.count()), key=lambda i: _description(selects.nth(i)) not in ("target", "class"))
    for i in order:
        box = selects.nth(i)
        select = box.locator("select")
        if select.is_enabled():
            n, cur = select.evaluate("s => [s.options.length, s.selectedIndex]")
            if n < 2:  # one option (e.g. an explorer on a single method): choosing it again changes nothing
                continue
            select.select_option(index=(cur + 1) % n)
            return f"dropdown {_description(box)!r}"
    return None


def _change_slider(root: Any) -> str | None:
    """Move the first enabled slider one step with the keyboard (left when at its maximum); say which (None: none)."""
    sliders = root.locator(".widget-slider")
    for i in range(sliders.count()):
        box = sliders.nth(i)
        handle = box.locator(".noUi-handle").first
        if handle.count() and box.locator(".noUi-target[disabled]").count() == 0:
            now, top = (float(handle.get_attribute(a) or 0) for a in ("aria-valuenow", "aria-valuemax"))
            handle.focus()
            handle.press("ArrowLeft" if now >= top else "ArrowRight")
            return f"slider {_description(box)!r}"
    return None


def _description(box: Any) -> str:
    return (box.locator("label").first.text_content() or "").strip()


def _redraws(page: Any, root: Any, change: Any, control: str, timeout: float = 60) -> list[str]:
    """Apply ``change`` (to a ``control``), wait for the kernel to handle it, and list what went wrong (empty:
    it redrew)."""
    before, busy = _figure(root), page.evaluate("() => window.__dve.busy")
    what = change(root)
    if what is None:
        return [f"no enabled {control} to change"]
    try:
        page.wait_for_function(
            "b => window.__dve.busy > b && window.__dve.status === 'idle'", arg=busy, timeout=timeout * 1000
        )
    except Exception:  # playwright's TimeoutError
        return [f"after changing {what}: the kernel did not handle it within {timeout:g} s"]
    deadline = time.monotonic() + 1.5  # the display message is in (before "idle"); let the DOM show it
    while _figure(root) == before and time.monotonic() < deadline and not _error_text(root):
        time.sleep(0.1)
    problems = _error_text(root)
    if _figure(root) == before:
        problems.append("no new figure: the drawn image did not change")
    return [f"after changing {what}: {p}" for p in problems]


def upload_photo(panel: Any, k: int, photo: Path, shot: Path, timeout: float = 60) -> dict[str, Any]:
    """In cell ``k``'s photo explorer, click the upload button and choose ``photo`` in the file chooser it opens (as
    a reader does), and wait for the kernel to handle it; say what the widget shows then: the ``top5`` and
    ``message`` texts, whether the figure was ``redrawn``, any ``errors`` in its error area, and a screenshot."""
    page = panel.page
    root = panel.locator(".jp-Cell").nth(k).locator(".dve-photo-explorer").first
    root.wait_for(state="visible", timeout=30_000)
    before = _figure(root)
    with page.expect_file_chooser(timeout=30_000) as chooser:  # ipywidgets keeps its <input type=file> off the page
        root.locator(UPLOAD).click()
    chooser.value.set_files(str(photo))
    message = root.locator(UPLOAD_MESSAGE)
    deadline = time.monotonic() + timeout  # the widget names the file in its message once the kernel handled it
    while photo.name not in message.inner_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    page.wait_for_function("() => window.__dve.status === 'idle'", timeout=timeout * 1000)
    deadline = time.monotonic() + 1.5  # as in _redraws: let the DOM show the last display message
    while _figure(root) == before and time.monotonic() < deadline:
        time.sleep(0.1)
    return {
        "file": photo.name,
        "top5": root.locator(TOP5).inner_text(),
        "message": root.locator(UPLOAD_MESSAGE).inner_text(),
        "redrawn": _figure(root) != before,
        "errors": _error_text(root),
        "screenshot": _shot(root, str(shot)),
    }
