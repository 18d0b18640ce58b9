"""What an executed notebook shows a reader without a kernel (GitHub, nbviewer, the site): finalise it, then check it.

A widget output carries two representations: the live view, which needs the saved widget state and a widget manager,
and a ``text/plain`` fallback frozen at the moment it was displayed. For a tqdm bar that fallback is "0/N", for an
explorer a ``VBox(children=…)`` repr. :func:`finalize` rewrites both from the widget state saved at the end of the
run (the bar's final text; a sentence saying what the explorer is), and :func:`problems` lists what would still
look broken: frozen bars, an explorer with no static picture after it, absolute paths, tracebacks, stray
``Text(…)`` reprs and links to files that do not exist.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["EXPLORER_TEXT", "finalize", "problems", "links"]

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
#: The fallback text of an interactive widget (not a progress bar) in a finalised notebook.
EXPLORER_TEXT = "Interactive explorer: run the notebook to use it (a picture of its first state follows)."
_BAR = re.compile(r"\d+%\|.*\|\s*\d+/\d+")
_BAR_FROZEN = re.compile(r"\b0%\|.*\| 0/\d+")
_ABSOLUTE = re.compile(r"(?<![\w.])/(?:root|tmp|home|work|Users|private|var/folders)/")
_STRAY_REPR = re.compile(r"^(Text|Line2D|<matplotlib\.)[(\w. ]")
_LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_FILE_MENTION = re.compile(r"(?<![\w/.-])([\w-]+(?:/[\w-]+)*\.(?:md|ipynb))\b")


def _state(nb: Mapping[str, Any]) -> dict[str, Any]:
    return nb.get("metadata", {}).get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})


def _model(state: Mapping[str, Any], ref: str) -> Mapping[str, Any]:
    return state.get(ref.removeprefix("IPY_MODEL_"), {})


def _bar_text(state: Mapping[str, Any], model: Mapping[str, Any]) -> str | None:
    """The final text of a tqdm notebook bar (an HBox of HTML, FloatProgress, HTML), or None if it is not one."""
    children = [_model(state, c) for c in model.get("state", {}).get("children", [])]
    names = [c.get("model_name") for c in children]
    if model.get("model_name") != "HBoxModel" or names != ["HTMLModel", "FloatProgressModel", "HTMLModel"]:
        return None
    left, progress, right = (c.get("state", {}) for c in children)
    filled = round(10 * progress.get("value", 0) / max(progress.get("max", 1), 1e-12))
    text = f"{left.get('value', '')}|{'█' * filled}{' ' * (10 - filled)}|{right.get('value', '')}"
    return html.unescape(text).replace("\u2007", " ")


def _widget_outputs(nb: Mapping[str, Any]) -> Iterator[tuple[int, int, dict[str, Any]]]:
    for i, cell in enumerate(nb.get("cells", [])):
        for j, out in enumerate(cell.get("outputs", [])):
            if WIDGET_VIEW in out.get("data", {}):
                yield i, j, out


def finalize(nb: dict[str, Any]) -> dict[str, Any]:
    """Rewrite every widget output's ``text/plain`` from the saved widget state, in place (and return ``nb``):
    a tqdm bar shows its final text, any other widget :data:`EXPLORER_TEXT`. A widget whose state was not saved
    keeps its text (:func:`problems` then names it)."""
    state = _state(nb)
    for _, _, out in _widget_outputs(nb):
        model = state.get(out["data"][WIDGET_VIEW].get("model_id", ""))
        if not model:
            continue
        bar = _bar_text(state, model)
        out["data"]["text/plain"] = bar if bar is not None else EXPLORER_TEXT
    return nb


def _text(out: Mapping[str, Any]) -> str:
    data = out.get("data", {})
    return "".join(data.get("text/plain", "")) + "".join(out.get("text", "")) + "".join(out.get("traceback", []))


def links(source: str) -> list[str]:
    """The local targets of a markdown cell's links, without ``#anchors`` (web and mail links left out)."""
    targets = (t.split("#", 1)[0] for t in _LINK.findall(source))
    return [t for t in targets if t and not re.match(r"^[a-z][a-z+.-]*:", t)]


_UNPUBLISHED = "(name it as code, or link a doc or notebook)"


def _published(target: Path, folder: Path) -> bool:
    """Whether the site (:mod:`dvehelpers.site`) has a page for ``target``: a notebook beside this one, a file of
    ``docs/``, or the README (its front page). A link to anything else works in Jupyter and breaks on the site."""
    target, root = target.resolve(), folder.resolve().parent
    return (
        (target.suffix == ".ipynb" and target.parent == folder.resolve())
        or target.parent == root / "docs"
        or target == root / "README.md"
    )


def _cell_problems(cell: Mapping[str, Any], folder: Path) -> Iterator[str]:
    source = "".join(cell.get("source", ""))
    if cell.get("cell_type") == "markdown":
        for target in links(source):
            if not (folder / target).exists():
                yield f"link to {target!r}, which does not exist"
            elif not _published(folder / target, folder):
                yield f"link to {target!r}, which the site does not publish {_UNPUBLISHED}"
        for name in _FILE_MENTION.findall(re.sub(r"\]\([^)]*\)", "]", source)):
            if not any((base / name).exists() for base in (folder, folder.parent, folder.parent / "docs")):
                yield f"mentions {name!r}, which is not in the repository"
        return
    outputs = cell.get("outputs", [])
    for j, out in enumerate(outputs):
        text = _text(out)
        if out.get("output_type") == "error" or "Traceback (most recent call last)" in text:
            yield "shows a traceback"
        if _BAR_FROZEN.search(text):
            yield "shows a progress bar frozen at 0/N"
        if _ABSOLUTE.search(text):
            yield f"shows an absolute path: {_ABSOLUTE.search(text).group(0)}…"  # type: ignore[union-attr]
        if out.get("output_type") == "execute_result" and _STRAY_REPR.match(text):
            yield f"shows a stray repr: {text[:40]!r}"
        data = out.get("data", {})
        if WIDGET_VIEW in data and not _BAR.search(text):
            if not any("image/png" in o.get("data", {}) for o in outputs[j + 1 :]):
                yield "shows a widget with no static picture after it"
            elif "".join(data.get("text/plain", "")) != EXPLORER_TEXT:
                yield "shows a widget's repr instead of a sentence (run it through finalize)"


def problems(nb: Mapping[str, Any], path: Path) -> list[str]:
    """What a reader without a kernel would see broken in the notebook at ``path``: one line per problem,
    naming the cell (``c12``, counted from 0 as in the file)."""
    folder = path.parent
    return [
        f"{path.name} c{i}: {p}" for i, cell in enumerate(nb.get("cells", [])) for p in _cell_problems(cell, folder)
    ]
