"""The an8Flower evaluation, whole (METHODS.md §6 and beyond): every method × variant × model, scored, cached.

For every *job* (a registered method with its defaults, or a named parameter setting of it) and every reference
map (:data:`dvehelpers.evaluate.REFERENCES`), on the test split of each variant, with each shipped model, the
explained class being the model's top-1 prediction (Oramas et al.'s protocol):

* **localisation** — per-image IoU curves over the thresholds; mean IoU ×100 with a bootstrap 95 % interval over
  images; per class; the pointing game under both conventions (:data:`dvehelpers.metrics.POINTING`);
* **faithfulness** — deletion and insertion AUC (:func:`dvehelpers.metrics.deletion_insertion`) on a class-balanced
  subset;
* **sanity** — class sensitivity (:func:`dvehelpers.evaluate.class_sensitivity`, class-specific methods) and
  cascading model-parameter randomisation (:func:`dvehelpers.sanity.cascade`) on a smaller balanced subset.

Each (job, variant, model) entry is cached under a key of the method, its parameters, the model's weights, the
data's bytes and the protocol's sizes: written atomically with a checksum, so a re-run recomputes only what is
missing and a killed run resumes without trusting a half-written entry.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data import VARIANTS, An8Flower, MaskedImages, class_names, masked_folder, one_per_class
from ..devices import device as default_device
from ..models import default_cam_layer, layer_shape, load
from ..registry import METHODS
from ..train import model_name, predict
from ..viz import table
from . import distributed
from .cache import Cache, digest
from .iou import REFERENCES, THRESHOLDS, class_sensitivity, heatmaps, per_class, per_image_iou, reference_maps
from .metrics import POINTING, auc, deletion_insertion, dilate, max_on
from .report import write_all
from .sanity import CLASS_BLIND, SURVIVES, cascade

__all__ = [
    "ARCHS",
    "REFERENCE_ROWS",
    "CLASS_BLIND",
    "PAPER_TABLE",
    "PAPER_TOP",
    "SURVIVES",
    "Sizes",
    "default_jobs",
    "select_jobs",
    "Cache",
    "Evaluation",
    "run",
    "default_results",
    "classifier_stage",
    "bootstrap_interval",
]

ARCHS = ("vgg", "alexnet")
#: The methods of Oramas et al.'s an8Flower table (their "Deconv+GB" row is our deconvnet and guided_backprop),
#: and the order the paper reports at the top: theirs (vebi) best, guided Grad-CAM++ next.
PAPER_TABLE = (
    "activation",
    "deconvnet",
    "guided_backprop",
    "gradcam",
    "guided_gradcam",
    "gradcam_pp",
    "guided_gradcam_pp",
    "vebi",
)
PAPER_TOP = ("vebi", "guided_gradcam_pp")
#: Reference rows of the table (:func:`dvehelpers.evaluate.reference_maps`), in the order they are shown.
REFERENCE_ROWS = ("constant", "centre", "random", "mask_lowres", "mask")
#: Deletion and insertion baselines of the protocol (ours; see :func:`run`).
BASELINE = {"deletion": "zeros", "insertion": "zeros"}
#: Bump when what an entry holds or how it is computed changes: older cache entries are then not used.
PROTOCOL_VERSION = 3  # 3: streamed in batches (the batch size in the key); random reference maps seeded per image


@dataclass(frozen=True)
class Sizes:
    """How much of the test split each part of the protocol uses: ``per_class`` test images per class for the
    IoU and the pointing game (None: the split's default, 100, or 10 under ``DVE_QUICK=1``), ``faithfulness``
    images per class for deletion / insertion with ``steps`` steps, ``sanity`` per class for the class
    sensitivity and the randomisation cascade, ``bootstrap`` resamples for the interval."""

    per_class: int | None = None
    faithfulness: int = 2
    sanity: int = 2
    steps: int = 12
    bootstrap: int = 1000

    @classmethod
    def default(cls, quick: bool | None = None) -> Sizes:
        """The full protocol, or the small one (``quick``; None: ``DVE_QUICK=1`` in the environment)."""
        quick = os.environ.get("DVE_QUICK") == "1" if quick is None else quick
        return cls(per_class=10, faithfulness=1, sanity=1, steps=6, bootstrap=200) if quick else cls()


def default_jobs() -> dict[str, tuple[str, dict[str, Any]]]:
    """``label -> (method, parameters)``: every registered method with its defaults, plus the settings that the
    notebooks show to matter — the KL-DVE readings and FBI at a ten times denser mask."""

    jobs: dict[str, tuple[str, dict[str, Any]]] = {name: (name, {}) for name in sorted(METHODS)}
    for reading in ("gradient", "elementwise"):
        jobs[f"kl_dve (reading={reading})"] = ("kl_dve", {"reading": reading})
    jobs["fbi (keep_fraction=0.3)"] = ("fbi", {"keep_fraction": 0.3})
    return dict(sorted(jobs.items()))


def select_jobs(
    methods: Sequence[str] | Mapping[str, tuple[str, Mapping[str, Any]]] | None,
) -> dict[str, tuple[str, dict[str, Any]]]:
    """The jobs to run: all of :func:`default_jobs` (None); for names, the jobs with that label or of that method
    (``"kl_dve"`` brings its readings); a mapping ``label -> (method, parameters)`` is taken as it is."""

    if isinstance(methods, Mapping):
        unknown = sorted({m for m, _ in methods.values()} - set(METHODS))
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; registered: {', '.join(sorted(METHODS))}")
        return {label: (m, dict(p)) for label, (m, p) in methods.items()}
    jobs = default_jobs()
    if methods is None:
        return jobs
    if isinstance(methods, str):
        raise TypeError("methods must be a list of names, e.g. ['gradcam'], not a string")
    picked: dict[str, tuple[str, dict[str, Any]]] = {}
    for name in methods:
        found = {k: v for k, v in jobs.items() if k == name or v[0] == name}
        if not found:
            raise ValueError(f"unknown method {name!r}; valid: {', '.join(jobs)}")
        picked.update(found)
    return picked


def default_results() -> Path:
    """``$DVE_RESULTS`` if set, else ``results/`` in the repository."""
    env = os.environ.get("DVE_RESULTS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "results"


# ---------------------------------------------------------------- one batch of one entry


@dataclass
class _Model:
    """One shipped model with one variant's test set: what every batch of that set shares."""

    model: nn.Module
    grid: tuple[int, int]  # the default CAM layer's resolution (for mask_lowres)
    faithful: Tensor  # sorted indices of the faithfulness subset in the set
    sane: Tensor  # sorted indices of the sanity subset


@dataclass
class _Batch:
    """Images ``start … start + len`` of a test set on the model's device, their predictions, and which of them
    belong to the faithfulness subset (indices in the batch)."""

    start: int
    images: Tensor
    masks: Tensor
    predicted: Tensor
    regions: dict[str, Tensor]  # the masks grown by each pointing-game tolerance
    faithful: Tensor


def _balanced(labels: Tensor, per_class: int) -> Tensor:

    counts = torch.bincount(labels.cpu())
    n = min(per_class, int(counts[counts > 0].min()))
    return torch.cat([one_per_class(labels, k) for k in range(n)]).sort().values


@dataclass(frozen=True)
class _Settings:
    """What every entry of one run shares (all of it is in the cache key)."""

    sizes: Sizes
    thresholds: Tensor
    seed: int
    batch_size: int
    baseline: Mapping[str, str]


def _batch(m: _Model, start: int, images: Tensor, masks: Tensor, dev: torch.device, batch_size: int) -> _Batch:
    images, masks = images.to(dev), masks.to(dev)

    def local(subset: Tensor) -> Tensor:
        inside = subset[(subset >= start) & (subset < start + len(images))]
        return (inside - start).to(dev)

    return _Batch(
        start,
        images,
        masks,
        predict(m.model, images, batch_size).to(dev),
        {c: dilate(masks, tol) for c, tol in POINTING.items()},
        local(m.faithful),
    )


def _score(m: _Model, b: _Batch, maps: Tensor, cfg: _Settings) -> tuple[dict[str, Any], dict[str, float]]:
    """The localisation and faithfulness part of a batch's results, from its maps."""

    t0 = time.perf_counter()
    out: dict[str, Any] = {"iou": per_image_iou(maps, b.masks, cfg.thresholds).float().cpu()}
    out["pointing"] = {c: max_on(maps, b.regions[c]).cpu() for c in POINTING}
    t1 = time.perf_counter()
    f = b.faithful
    for mode in ("deletion", "insertion"):
        if len(f) == 0:
            out[mode] = torch.zeros(0, cfg.sizes.steps + 1)
            continue
        curves = deletion_insertion(
            m.model, b.images[f], maps[f], b.predicted[f], mode, cfg.sizes.steps, cfg.baseline[mode], cfg.batch_size
        )
        out[mode] = curves.probability.float().cpu()
    return out, {"scores": t1 - t0, "faithfulness": time.perf_counter() - t1}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Without vebi's notice that a class has fewer relevant features than k (notebook 03): it would repeat for
    every batch."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"k=\d+ is more than the number of relevant features")
        yield


def _method_part(m: _Model, b: _Batch, method: str, params: dict[str, Any], cfg: _Settings) -> dict[str, Any]:
    """One method's scores on one batch: localisation of every image, faithfulness of its faithfulness subset."""

    with _quiet():
        t0 = time.perf_counter()
        maps = heatmaps(m.model, b.images, method, params, b.predicted, cfg.batch_size)
    seconds = {"maps": time.perf_counter() - t0}
    out, more = _score(m, b, maps, cfg)
    out["seconds"] = {**seconds, **more}
    return out


def _sanity_part(m: _Model, images: Tensor, method: str, params: dict[str, Any], cfg: _Settings) -> dict[str, Any]:
    """One method's sanity checks on some images of the sanity subset (those of one batch): class sensitivity
    (class-specific methods) and the randomisation cascade, whose reference is the maps under the trained model.
    A unit of its own, so that no process gets every image's sanity checks with its batch."""

    with _quiet():
        t0 = time.perf_counter()
        out: dict[str, Any] = {}
        if METHODS[method].class_specific:
            sens = class_sensitivity(m.model, images, method, params, cfg.batch_size, progress=False)
            out["sensitivity"] = {"r": sens.r.float().cpu(), "empty": sens.empty.cpu()}
        t1 = time.perf_counter()
        targets = predict(m.model, images, cfg.batch_size).to(images.device)
        cas = cascade(m.model, images, method, params, targets, cfg.seed, cfg.batch_size)
    out["cascade"] = {"layers": cas.layers, "r": cas.r.float().cpu()}
    out["seconds"] = {"sensitivity": t1 - t0, "randomisation": time.perf_counter() - t1}
    return out


def _reference_part(m: _Model, b: _Batch, kind: str, cfg: _Settings) -> dict[str, Any]:

    t0 = time.perf_counter()
    index = torch.arange(b.start, b.start + len(b.masks))  # random maps seeded per image, whatever the batch
    maps = reference_maps(kind, b.masks, m.grid if kind == "mask_lowres" else None, cfg.seed, index)
    out, seconds = _score(m, b, maps, cfg)
    out["seconds"] = {"maps": time.perf_counter() - t0 - sum(seconds.values()), **seconds}
    return out


def _assemble(parts: Sequence[dict[str, Any]], sanity: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """An entry from its batches' scores and sanity checks, each in image order."""

    out: dict[str, Any] = {
        "iou": torch.cat([p["iou"] for p in parts]),
        "pointing": {c: torch.cat([p["pointing"][c] for p in parts]) for c in POINTING},
        "deletion": torch.cat([p["deletion"] for p in parts]),
        "insertion": torch.cat([p["insertion"] for p in parts]),
    }
    sens = [p["sensitivity"] for p in sanity if "sensitivity" in p]
    if sens:
        out["sensitivity"] = {k: torch.cat([x[k] for x in sens]) for k in ("r", "empty")}
    if sanity:
        out["cascade"] = {
            "layers": sanity[0]["cascade"]["layers"],
            "r": torch.cat([c["cascade"]["r"] for c in sanity], 1),
        }
    seconds: dict[str, float] = {}
    for p in [*parts, *sanity]:
        for k, v in p["seconds"].items():
            seconds[k] = seconds.get(k, 0.0) + v
    out["seconds"] = seconds
    return out


# ---------------------------------------------------------------- the results


def bootstrap_interval(scores: Tensor, n: int, seed: int) -> tuple[float, float]:
    """95 % percentile interval of the mean of ``scores`` (one per independent unit: an image, a grid) over ``n``
    resamples of them, seeded. The resamples are drawn in chunks of at most :data:`_RESAMPLED` indices, the same
    indices as in one draw, so memory stays bounded on large sets."""
    g = torch.Generator().manual_seed(seed)
    x = scores.double()
    rows = max(1, _RESAMPLED // max(len(x), 1))
    means = torch.cat(
        [x[torch.randint(len(x), (min(rows, n - i), len(x)), generator=g)].mean(1) for i in range(0, n, rows)]
    )
    lo, hi = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64))
    return float(lo), float(hi)


_RESAMPLED = 4_000_000  # indices per chunk of the bootstrap: 32 MB of int64 and 32 MB of resampled scores


@dataclass
class Evaluation:
    """What :func:`run` measured. ``entries[(label, variant, arch)]`` holds an entry's raw results (per-image IoU
    curves ``iou`` N×T, ``pointing`` hits, ``deletion`` / ``insertion`` probability curves, ``sensitivity``,
    ``cascade``, ``seconds``); ``labels[variant]`` the test labels; ``jobs`` the methods' settings (reference rows
    are labelled ``"reference: <kind>"``); ``computed`` the entries finished in this call and ``parts`` how many
    (entry, batch) results it computed, over all processes (the rest came from the cache)."""

    entries: dict[tuple[str, str, str], dict[str, Any]]
    labels: dict[str, Tensor]
    class_names: dict[str, list[str]]
    jobs: dict[str, tuple[str, dict[str, Any]]]
    sizes: Sizes
    thresholds: Tensor
    seed: int = 0
    computed: list[tuple[str, str, str]] = field(default_factory=list)
    parts: int = 0
    _rows: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict, repr=False)

    @property
    def variants(self) -> list[str]:
        return list(dict.fromkeys(v for _, v, _ in self.entries))

    @property
    def archs(self) -> list[str]:
        return list(dict.fromkeys(a for _, _, a in self.entries))

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(m for m, _, _ in self.entries))

    def is_reference(self, label: str) -> bool:
        return label.startswith("reference: ")

    def row(self, label: str, variant: str, arch: str) -> dict[str, Any]:
        """The table's numbers for one entry (NaN where a part does not apply); computed once (the bootstraps)."""
        key = (label, variant, arch)
        if key not in self._rows:
            self._rows[key] = self._row(*key)
        return dict(self._rows[key])

    def _row(self, label: str, variant: str, arch: str) -> dict[str, Any]:

        e = self.entries[(label, variant, arch)]
        scores = e["iou"].double().mean(1) * 100  # per image, mean over thresholds
        lo, hi = bootstrap_interval(scores, self.sizes.bootstrap, self.seed)
        deletion = auc(e["deletion"].double())
        del_lo, del_hi = bootstrap_interval(deletion, self.sizes.bootstrap, self.seed)
        sens = e.get("sensitivity")
        cas = e.get("cascade")
        class_r = float(sens["r"].median()) if sens is not None else math.nan
        random_r = float(cas["r"][-1].median()) if cas is not None else math.nan
        head = classifier_stage(cas["layers"]) if cas is not None else 0
        random_fc = float(cas["r"][head - 1].median()) if cas is not None else math.nan
        name = self.jobs[label][0] if label in self.jobs else None
        return {
            "method": label,
            "variant": variant,
            "model": arch,
            "mean_iou": float(scores.mean()),
            "ci_low": lo,
            "ci_high": hi,
            "pointing_quantus": float(e["pointing"]["quantus"].float().mean() * 100),
            "pointing_torchray": float(e["pointing"]["torchray"].float().mean() * 100),
            "deletion_auc": float(deletion.mean()),
            "deletion_ci_low": del_lo,
            "deletion_ci_high": del_hi,
            "faithfulness_images": len(deletion),
            "insertion_auc": float(auc(e["insertion"].double()).mean()),
            "class_r": class_r,
            "class_blind": bool(name is not None and sens is not None and class_r >= CLASS_BLIND),
            "random_r_classifier": random_fc,
            "random_r": random_r,
            "survives_randomisation": bool(cas is not None and random_fc >= SURVIVES),
            "seconds": float(sum(e["seconds"].values())),
        }

    def rows(self) -> list[dict[str, Any]]:
        """:meth:`row` for every entry: methods (best mean IoU first within each variant and model), then the
        reference rows in :data:`REFERENCE_ROWS` order."""
        out = []
        for variant in self.variants:
            for arch in self.archs:
                rs = [self.row(m, variant, arch) for m in self.methods if (m, variant, arch) in self.entries]
                methods = sorted((r for r in rs if not self.is_reference(r["method"])), key=lambda r: -r["mean_iou"])
                out += methods + [r for r in rs if self.is_reference(r["method"])]
        return out

    def mean_iou(self, variant: str, arch: str, thresholds: Sequence[float] | Tensor | None = None) -> dict[str, float]:
        """Mean IoU ×100 of every method and reference under another threshold grid, from the stored per-image
        curves: ``thresholds`` must be a subset of the evaluated grid (None: the whole grid)."""
        if thresholds is None:
            cols = torch.arange(len(self.thresholds))
        else:
            t = torch.as_tensor(thresholds, dtype=torch.float64).reshape(-1, 1)
            hit = (t - self.thresholds.reshape(1, -1)).abs() < 1e-9
            if not hit.any(1).all():
                missing = t[~hit.any(1), 0].tolist()
                raise ValueError(f"thresholds {missing} were not evaluated; choose from {self.thresholds.tolist()}")
            cols = hit.double().argmax(1)
        return {
            m: float(e["iou"][:, cols].double().mean() * 100)
            for (m, v, a), e in self.entries.items()
            if (v, a) == (variant, arch)
        }

    def peaks(self, variant: str, arch: str) -> dict[str, tuple[float, float]]:
        """``method -> (τ, mean IoU ×100)`` at the top of each IoU curve for one variant and model."""
        out = {}
        for (m, v, a), e in self.entries.items():
            if (v, a) == (variant, arch):
                curve = e["iou"].double().mean(0) * 100
                k = int(curve.argmax())
                out[m] = (float(self.thresholds[k]), float(curve[k]))
        return out

    def ranking(self, methods: Sequence[str] = PAPER_TABLE) -> dict[tuple[str, str], list[str]]:
        """``(variant, arch) -> methods`` ordered by mean IoU, best first (default: the paper's table's methods)."""
        return {
            (v, a): sorted(
                (m for m in methods if (m, v, a) in self.entries), key=lambda m: -self.row(m, v, a)["mean_iou"]
            )
            for v in self.variants
            for a in self.archs
        }

    def curves(self, variant: str, arch: str, references: bool = False) -> dict[str, Tensor]:
        """Per-image IoU curves (N×T) of the methods, or of the reference rows, for one variant and model."""
        return {
            m: self.entries[(m, variant, arch)]["iou"]
            for m in self.methods
            if (m, variant, arch) in self.entries and self.is_reference(m) == references
        }

    def per_class(self, variant: str, arch: str) -> dict[str, Tensor]:
        """Mean IoU ×100 per class (K) of every method and reference for one variant and model."""

        k = len(self.class_names[variant])
        return {
            m: per_class(e["iou"].double().mean(1) * 100, self.labels[variant], k)
            for (m, v, a), e in self.entries.items()
            if (v, a) == (variant, arch)
        }

    def faithfulness(self, variant: str, arch: str, methods: Sequence[str]) -> dict[str, dict[str, Tensor]]:
        """``method -> {"deletion": F×(S+1), "insertion": F×(S+1)}`` probability curves for one variant and model
        (for :func:`dvehelpers.viz.faithfulness_curves`)."""
        return {m: {k: self.entries[(m, variant, arch)][k] for k in ("deletion", "insertion")} for m in methods}

    def cascades(self, variant: str, arch: str) -> dict[str, Tensor]:
        """Median rank correlation after each stage of the randomisation cascade, per method (S)."""
        return {
            m: e["cascade"]["r"].median(1).values
            for (m, v, a), e in self.entries.items()
            if (v, a) == (variant, arch) and "cascade" in e
        }

    def layers(self, arch: str) -> list[str]:
        """The randomised layers of model ``arch``, top first."""
        for (_, _, a), e in self.entries.items():
            if a == arch and "cascade" in e:
                return list(e["cascade"]["layers"])
        return []

    def seconds(self, cached: bool = False) -> dict[str, dict[str, float]]:
        """Wall time per method and part (maps, scores, faithfulness, sensitivity, randomisation), summed over
        variants and models, for the entries computed in this call — or, with ``cached``, for every entry, as
        recorded when it was computed."""
        out: dict[str, dict[str, float]] = {}
        for key in self.entries if cached else self.computed:
            per = out.setdefault(key[0], {})
            for part, s in self.entries[key]["seconds"].items():
                per[part] = per.get(part, 0.0) + s
        return out

    HEADER = (
        "method",
        "variant",
        "model",
        "mIoU",
        "95% CI",
        "point (0 px)",
        "point (15 px)",
        "deletion AUC",
        "insertion AUC",
        "class r",
        "random r (fc)",
        "random r (all)",
        "flags",
    )

    def table(self, variant: str | None = None, arch: str | None = None) -> Any:
        """The results as a :class:`dvehelpers.viz.Table` (optionally for one variant and/or model)."""

        rows = [r for r in self.rows() if variant in (None, r["variant"]) and arch in (None, r["model"])]
        body = [_cells(r) for r in rows]
        fmts = ["s", "s", "s", ".1f", "s", ".0f", ".0f", ".3f", ".3f", "s", "s", "s", "s"]
        return table(body, self.HEADER, "an8Flower-synth test split, explained class = top-1 prediction", fmts)

    def sanity(self) -> Any:
        """The two sanity checks per method over every variant and model: the range (min–max) of the median class
        correlation and in how many sets it is flagged class-blind; the range of the median rank correlation with
        the classifier randomised and with every layer randomised, and in how many sets the map survives."""

        sets = [(v, a) for v in self.variants for a in self.archs]

        def span(xs: list[float]) -> str:
            xs = [x for x in xs if not math.isnan(x)]
            return f"{min(xs):.2f} – {max(xs):.2f}" if xs else "—"

        rows = []
        for m in self.methods:
            if self.is_reference(m):
                continue
            rs = [self.row(m, v, a) for v, a in sets if (m, v, a) in self.entries]
            rows.append(
                [
                    m,
                    span([r["class_r"] for r in rs]),
                    f"{sum(r['class_blind'] for r in rs)}/{len(rs)}",
                    span([r["random_r_classifier"] for r in rs]),
                    f"{sum(r['survives_randomisation'] for r in rs)}/{len(rs)}",
                    span([r["random_r"] for r in rs]),
                ]
            )
        header = ["method", "class r", "class-blind", "random r (fc)", "survives", "random r (all)"]
        per_class = "every" if self.sizes.sanity is None else str(self.sizes.sanity)
        title = (
            f"sanity checks over {len(sets)} variant × model sets ({per_class} test images per class each; medians per "
            f"set; flagged in a set when class r ≥ {CLASS_BLIND}, or random r (fc) ≥ {SURVIVES})"
        )
        return table(rows, header, title, "s")

    def summary(self) -> Any:
        """Mean IoU ×100 of every method and reference (rows) per variant and model (columns), best first by the
        average over columns. The sanity flags are not here: they rest on the small sanity subset and are counted per
        set by :meth:`sanity`."""

        cols = [(v, a) for v in self.variants for a in self.archs]
        rows = []
        for m in self.methods:
            ious = [self.row(m, v, a)["mean_iou"] if (m, v, a) in self.entries else math.nan for v, a in cols]
            rows.append([m, *ious, sum(ious) / len(ious)])
        ref = [r for r in rows if self.is_reference(r[0])]
        rows = sorted((r for r in rows if not self.is_reference(r[0])), key=lambda r: -r[-1]) + ref
        header = ["method", *(f"{a} {v}" for v, a in cols), "mean"]
        fmts = ["s", *([".1f"] * (len(cols) + 1))]
        return table(rows, header, "mean IoU ×100 on the an8Flower-synth test splits (top-1 class explained)", fmts)

    def write(self, out: str | Path | None = None) -> list[Path]:
        """Write ``evaluation.csv`` (every number), ``evaluation.md`` (the summary and the full table), ``summary.txt``,
        ``per_class.csv`` and the figures (IoU curves per variant and model, the randomisation cascade and the
        class sensitivity) to ``out`` (default :func:`default_results`); returns the paths."""

        return write_all(self, Path(out) if out is not None else default_results())


def classifier_stage(layers: Sequence[str]) -> int:
    """How many cascade stages (top first) it takes to randomise the classifier: the fully connected layers, named
    ``fc…`` by :func:`dvehelpers.models.layer_names` (all of them when there is none)."""
    return sum(name.startswith("fc") for name in layers) or len(layers)


def _flags(r: Mapping[str, Any]) -> list[str]:
    return [f for f, on in (("class-blind", r["class_blind"]), ("survives", r["survives_randomisation"])) if on]


def _cells(r: Mapping[str, Any]) -> list[Any]:
    def num(x: float) -> str:
        return "—" if math.isnan(x) else f"{x:.2f}"

    return [
        r["method"],
        r["variant"],
        r["model"],
        r["mean_iou"],
        f"{r['ci_low']:.1f}–{r['ci_high']:.1f}",
        r["pointing_quantus"],
        r["pointing_torchray"],
        r["deletion_auc"],
        r["insertion_auc"],
        num(r["class_r"]),
        num(r["random_r_classifier"]),
        num(r["random_r"]),
        ", ".join(_flags(r)),
    ]


# ---------------------------------------------------------------- the run


def _test_split(
    variant: str, size: int, root: str | Path | None, folder: str | Path | None, sizes: Sizes, seed: int
) -> MaskedImages | An8Flower:
    """One variant's test split at one image size, streamed from its files: a user's image folder with masks,
    the official layout under ``root``, or the rendered set (rendered into its cache first if need be)."""
    if folder is not None:
        data = masked_folder(folder, size)
        if len(data.classes) != VARIANTS[variant]:
            raise ValueError(
                f"{folder} holds {len(data.classes)} classes; the {variant} models have {VARIANTS[variant]}"
            )
        return data
    return An8Flower(
        variant, "test", size=size, seed=seed, root=root, per_class=sizes.per_class, progress=False, stream=True
    )


#: A unit of work: ``("scores", batch, entries)`` — the scores of those entries on one batch — or
#: ``("sanity", batch, (entry,))`` — one method's sanity checks on the batch's images of the sanity subset.
_Unit = tuple[str, int, tuple[int, ...]]


def _part_name(kind: str, batch: int) -> str:
    return f"{_PREFIX[kind]}{batch:07d}"


_PREFIX = {"scores": "b", "sanity": "c"}  # parts b0000003 (batch 3's scores), c0000000 (batch 0's sanity checks)


@dataclass
class _Plan:
    """What is left of one variant × model, decided by rank 0 from the cache and sent to every rank: the entries'
    keys and the units of work, in the order they are dealt (the sanity units, the costly ones, first)."""

    keys: list[str]
    units: list[_Unit]


def _plan(
    store: Cache, keys: list[str], methods: list[bool], checked: list[int], n: int, found: dict[int, dict[str, Any]]
) -> _Plan:
    """``methods[i]``: whether entry i has sanity checks; ``checked``: the batches holding sanity images; ``n``:
    the number of batches. Finished entries go to ``found``."""
    scores: dict[int, list[int]] = {}
    sanity: list[_Unit] = []
    for i, key in enumerate(keys):
        entry = store.get(key)
        if entry is not None:
            found[i] = entry
            continue
        for b in range(n):
            if store.get_part(key, _part_name("scores", b)) is None:
                scores.setdefault(b, []).append(i)
        if methods[i]:
            sanity += [("sanity", b, (i,)) for b in checked if store.get_part(key, _part_name("sanity", b)) is None]
    sanity.sort(key=lambda u: (u[1], u[2]))
    return _Plan(keys, sanity + [("scores", b, tuple(e)) for b, e in sorted(scores.items())])


def _model_id(model: nn.Module) -> str:
    return digest(*(p for p in model.state_dict().values()))


def _keys(todo: list[tuple[str, str | None, dict[str, Any]]], model: nn.Module, data: str, protocol: Any) -> list[str]:
    """The cache key of every entry: the method and its parameters (and what else it depends on, e.g. vebi's
    interpretation), the data and model, and the protocol's settings."""
    keys = []
    for label, method, params in todo:
        extra = None if method is None else METHODS[method].cache_identity(model, params)
        keys.append(digest({"method": method or label, "params": params, "extra": extra}, data, protocol))
    return keys


def run(
    methods: Sequence[str] | Mapping[str, tuple[str, Mapping[str, Any]]] | None = None,
    variants: Sequence[str] = ("single-6c", "double-12c"),
    archs: Sequence[str] = ARCHS,
    thresholds: Tensor | None = None,
    device: str | torch.device | None = None,
    root: str | Path | None = None,
    sizes: Sizes | None = None,
    references: Sequence[str] = REFERENCE_ROWS,
    cache: str | Path | None | bool = True,
    baseline: Mapping[str, str] | None = None,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = True,
    workers: int = 2,
    folders: Mapping[str, str | Path] | None = None,
) -> Evaluation | None:
    """Run the an8Flower evaluation: every job of ``methods`` (see :func:`select_jobs`; None = all registered
    methods and the named settings of :func:`default_jobs`) and every reference row, on the test split of each
    variant (the official set under ``root`` when given; ``folders[variant]``, an image folder with masks
    (:func:`dvehelpers.data.masked_folder`), when given), with the shipped VGG- and AlexNet-style models.

    The split is streamed through a ``DataLoader`` with ``workers`` reader processes in batches of ``batch_size``;
    each batch's results are appended to the cache as it finishes, so memory does not grow with the split and a
    killed run loses at most the batches in flight. Under ``torchrun`` (``WORLD_SIZE`` > 1) the batches are dealt
    round-robin to the processes, each on its own device; rank 0 gathers the results, alone reads and writes the
    cache, and returns the :class:`Evaluation` (the other ranks return None). Each batch is computed the same way
    whichever process takes it, so the results equal a one-process run's. The run holds ``<cache>/.lock``: a second
    run on the same folder waits for it, then reads what the first computed.

    ``sizes``: :meth:`Sizes.default` (quick under ``DVE_QUICK=1``). ``cache``: True = ``<results>/cache``, a folder,
    or False/None for none. ``device``: default :func:`dvehelpers.device` (``cuda:LOCAL_RANK`` under torchrun).
    ``baseline``: what deleted / not yet inserted pixels become (:data:`dvehelpers.metrics.BASELINES`), default
    :data:`BASELINE` — zeros for both, not RISE's blurred insertion start: blur keeps the colours, the only cue of
    an8Flower, so every map's insertion curve would start near 1."""

    jobs = select_jobs(methods)
    folders = dict(folders or {})
    bad = [v for v in [*variants, *folders] if v not in VARIANTS] + [a for a in archs if a not in ARCHS]
    if bad:
        raise ValueError(f"unknown variant/model {bad}; variants: {', '.join(VARIANTS)}; models: {', '.join(ARCHS)}")
    unknown = [r for r in references if r not in REFERENCES]
    if unknown:
        raise ValueError(f"unknown reference(s) {unknown}; valid: {', '.join(REFERENCES)}")
    if batch_size < 1 or workers < 0:
        raise ValueError(f"batch_size must be >= 1 and workers >= 0, got {batch_size} and {workers}")
    sizes = sizes or Sizes.default()
    t = (THRESHOLDS if thresholds is None else torch.as_tensor(thresholds, dtype=torch.float64)).sort().values
    folder = (default_results() / "cache") if cache is True else (cache or None)
    baseline = {**BASELINE, **(baseline or {})}
    cfg = _Settings(sizes, t, seed, batch_size, baseline)
    ctx = distributed.context(device, default_device())
    store = Cache(folder if ctx.leader else None)

    def waiting() -> None:
        print(f"another evaluation holds {store.folder}/.lock; waiting for it to finish", file=sys.stderr, flush=True)

    try:
        with store.lock(waiting) if ctx.leader else contextlib.nullcontext():
            return _run(jobs, variants, archs, root, folders, cfg, references, store, ctx, progress, workers)
    finally:
        distributed.close(ctx)


def _run(
    jobs: dict[str, tuple[str, dict[str, Any]]],
    variants: Sequence[str],
    archs: Sequence[str],
    root: str | Path | None,
    folders: Mapping[str, str | Path],
    cfg: _Settings,
    references: Sequence[str],
    store: Cache,
    ctx: distributed.Context,
    progress: bool,
    workers: int,
) -> Evaluation | None:
    protocol = {
        "version": PROTOCOL_VERSION,
        "sizes": asdict(cfg.sizes),
        "thresholds": cfg.thresholds.tolist(),
        "seed": cfg.seed,
        "baseline": cfg.baseline,
        "batch_size": cfg.batch_size,
        "device": ctx.device.type,  # parts computed on another kind of device differ in rounding
    }
    todo = [(label, *job) for label, job in jobs.items()] + [(f"reference: {r}", None, {}) for r in references]
    result = Evaluation({}, {}, {}, dict(jobs), cfg.sizes, cfg.thresholds, cfg.seed)
    bar = tqdm(desc="evaluating", unit="unit", disable=not (progress and ctx.leader))
    for variant in variants:
        result.class_names[variant] = class_names(variant)
        for arch in archs:
            bar.set_description(f"loading {arch} · {variant}")
            model = load(model_name(arch, variant)).to(ctx.device).eval()
            size = int(getattr(model, "meta", {}).get("image_size", 112))
            if ctx.local_rank == 0:  # renders the split into its machine's cache if need be, before the others
                data = _test_split(variant, size, root, folders.get(variant), cfg.sizes, cfg.seed)
            distributed.barrier(ctx)
            if ctx.local_rank != 0:
                data = _test_split(variant, size, root, folders.get(variant), cfg.sizes, cfg.seed)
            labels = data.labels
            result.labels[variant] = labels
            _, h, w = layer_shape(model, default_cam_layer(model), size)
            m = _Model(model, (h, w), _balanced(labels, cfg.sizes.faithfulness), _balanced(labels, cfg.sizes.sanity))
            n_batches = -(-len(labels) // cfg.batch_size)
            checked = sorted({int(i) // cfg.batch_size for i in m.sane})
            found: dict[int, dict[str, Any]] = {}
            plan: _Plan | str | None = None
            seen = distributed.gather((digest(labels), len(data)), ctx)  # every rank must read the same split
            if ctx.leader and seen and len(set(seen)) > 1:
                plan = f"the processes read different {variant} test splits (labels digest, size by rank: {seen})"
            elif ctx.leader:
                keys = _keys(todo, model, digest(data.identity(), _model_id(model)), protocol)
                plan = _plan(store, keys, [method is not None for _, method, _ in todo], checked, n_batches, found)
            plan = distributed.broadcast(plan, ctx)
            if isinstance(plan, str):
                raise RuntimeError(plan)
            bar.reset(total=len(plan.units))
            bar.set_description(f"{arch} · {variant}")
            result.parts += _compute(plan, data, m, todo, cfg, store, ctx, workers, bar)
            if ctx.leader:
                finished = set()
                for i, (label, _, _) in enumerate(todo):
                    if i not in found:
                        scores = [store.get_part(plan.keys[i], _part_name("scores", b)) for b in range(n_batches)]
                        checks = checked if todo[i][1] is not None else []  # reference rows have no sanity checks
                        sanity = [store.get_part(plan.keys[i], _part_name("sanity", b)) for b in checks]
                        found[i] = _assemble(scores, sanity)  # type: ignore[arg-type]
                        store.put(plan.keys[i], found[i])
                        finished.add(plan.keys[i])
                        result.computed.append((label, variant, arch))
                    result.entries[(label, variant, arch)] = found[i]
                for key in finished:  # after all: two labels of one setting share a key, and its parts
                    store.drop_parts(key)
    bar.close()
    return result if ctx.leader else None


def _compute(
    plan: _Plan,
    data: Any,
    m: _Model,
    todo: list[tuple[str, str | None, dict[str, Any]]],
    cfg: _Settings,
    store: Cache,
    ctx: distributed.Context,
    workers: int,
    bar: Any,
) -> int:
    """Compute the planned units, dealt round-robin to the ranks, one unit per rank per round; rank 0 writes each of
    its own parts as it is computed and the others' after each round's gather. Returns (on rank 0) how many parts
    were computed over all ranks."""

    mine = plan.units[ctx.rank :: ctx.world]
    sampler = [_indices(u, m, cfg, len(data)) for u in mine]
    stream = iter(DataLoader(data, batch_sampler=sampler, num_workers=min(workers, len(mine))))
    count = 0
    for r in range(-(-len(plan.units) // ctx.world)):
        done: list[tuple[str, str, dict[str, Any]]] = []
        if r < len(mine):
            kind, batch, entries = mine[r]
            images, _, masks = next(stream)
            for i, part in _unit(kind, batch, entries, images, masks, m, todo, cfg, ctx.device):
                done.append((plan.keys[i], _part_name(kind, batch), part))
                if ctx.leader:  # kept at once: a crash now loses nothing finished
                    store.put_part(*done[-1])
        gathered = distributed.gather(None if ctx.leader else done, ctx)
        if ctx.leader:
            others = [x for x in (gathered or [])[1:] if x]
            for parts in others:
                for key, name, part in parts:
                    store.put_part(key, name, part)
            count += len(done) + sum(len(x) for x in others)
            bar.update(bool(done) + len(others))
    if ctx.distributed and mine:
        sys.stderr.write(f"rank {ctx.rank} of {ctx.world} ({ctx.device}): {len(mine)} units\n")  # one write: one line
        sys.stderr.flush()
    return count


def _indices(unit: _Unit, m: _Model, cfg: _Settings, n: int) -> list[int]:
    """The images a unit reads: its whole batch, or the batch's images of the sanity subset."""
    kind, batch, _ = unit
    lo, hi = batch * cfg.batch_size, min((batch + 1) * cfg.batch_size, n)
    return list(range(lo, hi)) if kind == "scores" else [int(i) for i in m.sane if lo <= i < hi]


def _unit(
    kind: str,
    batch: int,
    entries: tuple[int, ...],
    images: Tensor,
    masks: Tensor,
    m: _Model,
    todo: list[tuple[str, str | None, dict[str, Any]]],
    cfg: _Settings,
    dev: torch.device,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(entry, part)`` for each entry of one unit, as each is computed."""
    if kind == "sanity":
        _, method, params = todo[entries[0]]
        assert method is not None  # reference rows have no sanity units
        yield entries[0], _sanity_part(m, images.to(dev), method, params, cfg)
        return
    b = _batch(m, batch * cfg.batch_size, images, masks, dev, cfg.batch_size)
    for i in entries:
        label, method, params = todo[i]
        if method is None:
            yield i, _reference_part(m, b, label.split(": ")[1], cfg)
        else:
            yield i, _method_part(m, b, method, params, cfg)
