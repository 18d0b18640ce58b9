"""Writing the evaluation's results: the table as CSV and Markdown, the per-class scores, and the figures."""

from __future__ import annotations

import csv
import io
from dataclasses import asdict
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from .. import viz
from ..atomic import locked, write_bytes, write_text
from .sanity import CLASS_BLIND, SURVIVES

__all__ = ["write_all", "write_csv", "markdown", "evaluation_figures"]


def write_all(ev: Any, out: Path) -> list[Path]:
    """Write ``evaluation.csv`` (every number), ``evaluation.md`` (the summary and the full table), ``summary.txt``,
    ``per_class.csv``, the figures of :func:`evaluation_figures` and ``timing.csv`` (wall seconds per entry as
    computed: the one file that differs between runs) of the evaluation ``ev`` to ``out``; returns the paths.

    Every file is written atomically, and the whole set under ``<out>/.lock``: two runs writing one folder at once
    leave the complete set of one of them, never a mix."""
    with locked(out / ".lock"):
        return _write_all(ev, out)


def _write_all(ev: Any, out: Path) -> list[Path]:
    rows = ev.rows()
    paths = [write_csv(out / "evaluation.csv", [{k: v for k, v in r.items() if k != "seconds"} for r in rows])]
    per_class_rows = [
        {"method": m, "variant": v, "model": a, "class": ev.class_names[v][c], "mean_iou": float(x)}
        for v in ev.variants
        for a in ev.archs
        for m, vals in ev.per_class(v, a).items()
        for c, x in enumerate(vals.tolist())
    ]
    paths.append(write_csv(out / "per_class.csv", per_class_rows))
    md = [
        "# an8Flower evaluation",
        "",
        f"Sizes: {asdict(ev.sizes)}; thresholds {len(ev.thresholds)} from {float(ev.thresholds.min()):.2f} "
        f"to {float(ev.thresholds.max()):.2f}. Flags: class-blind = median class r ≥ {CLASS_BLIND}; survives = "
        f"median rank r ≥ {SURVIVES} with the classifier (every fully connected layer) randomised (both "
        "thresholds ours). random r (all): with every learned layer randomised.",
        "",
        markdown(ev.summary()),
        "",
        markdown(ev.table()),
        "",
    ]
    paths.append(write_text(out / "evaluation.md", "\n".join(md)))
    paths.append(write_text(out / "summary.txt", str(ev.summary())))
    for name, fig in evaluation_figures(ev).items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        paths.append(write_bytes(out / f"{name}.png", buf.getvalue()))
    timing = [{k: r[k] for k in ("method", "variant", "model", "seconds")} for r in rows]
    paths.append(write_csv(out / "timing.csv", timing))
    return paths


def markdown(t: Any) -> str:
    """A :class:`~dvehelpers.viz.Table` as a Markdown table (its title in bold above)."""
    lines = [f"**{t.title}**", ""] if t.title else []
    lines.append("| " + " | ".join(t.header) + " |")
    lines.append("|" + "---|" * len(t.header))
    lines += ["| " + " | ".join(r) + " |" for r in t.rows]
    return "\n".join(lines)


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    """``rows`` (dicts with the same keys) as a CSV file with a header, written atomically."""
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return write_text(path, buf.getvalue())


def evaluation_figures(ev: Any) -> dict[str, Figure]:
    """The figures of an :class:`~dvehelpers.evaluate.protocol.Evaluation`, by file stem: the ranking, the IoU
    curves of every variant and model, the randomisation cascade of every model (first variant) and the class
    sensitivity."""
    figs = {"ranking": viz.ranking(ev.rows())}
    for v in ev.variants:
        for a in ev.archs:
            fig, ax = plt.subplots(figsize=(7, 3.8), layout="constrained")
            viz.iou_curves(ev.curves(v, a), ev.thresholds, ax, references=ev.curves(v, a, references=True))
            ax.set_title(f"{a} on {v}: IoU with the mask against the threshold", fontsize=9)
            figs[f"iou_curves_{a}_{v}"] = fig
    for a in ev.archs:
        fig, ax = plt.subplots(figsize=(7.5, 3.8), layout="constrained")
        viz.randomisation_curves(ev.cascades(ev.variants[0], a), ev.layers(a), ax, SURVIVES)
        ax.set_title(f"cascading randomisation, {a} on {ev.variants[0]}", fontsize=9)
        figs[f"randomisation_{a}"] = fig
    figs["class_sensitivity"] = viz.class_sensitivity(ev.rows(), CLASS_BLIND)
    return figs
