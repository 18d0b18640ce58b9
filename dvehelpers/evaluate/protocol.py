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

import functools
import hashlib
import io
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..atomic import write_bytes
from ..data import VARIANTS, An8Flower, class_names, one_per_class
from ..devices import device as default_device
from ..models import default_cam_layer, layer_shape, load
from ..registry import METHODS
from ..train import model_name, predict
from ..viz import table
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
PROTOCOL_VERSION = 2  # 2: pointing-game ties count as the share of maxima on the mask


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


# ---------------------------------------------------------------- the cache


def _digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, Tensor):
            h.update(p.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            h.update(json.dumps(p, sort_keys=True, default=repr).encode())
    return h.hexdigest()


class Cache:
    """Entries ``<folder>/<key>.pt``: a SHA-256 line of the payload, then the payload (``torch.save`` of plain
    tensors, numbers, strings, lists and dicts, read back with ``weights_only=True``). Written to a temporary
    file and renamed; an entry whose checksum, key or format does not match is treated as missing."""

    def __init__(self, folder: str | Path | None) -> None:
        self.folder = None if folder is None else Path(folder)

    def _path(self, key: str) -> Path:
        assert self.folder is not None
        return self.folder / f"{key}.pt"

    def get(self, key: str) -> dict[str, Any] | None:
        if self.folder is None or not self._path(key).is_file():
            return None
        raw = self._path(key).read_bytes()
        head, _, body = raw.partition(b"\n")
        if head.decode(errors="replace") != hashlib.sha256(body).hexdigest():
            return None  # half-written or damaged
        try:
            entry = torch.load(io.BytesIO(body), weights_only=True)
        except Exception:  # noqa: BLE001 - any unreadable entry is recomputed, never trusted
            return None
        return entry["payload"] if isinstance(entry, dict) and entry.get("key") == key else None

    def put(self, key: str, payload: dict[str, Any]) -> None:
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        torch.save({"key": key, "payload": payload}, buf)
        body = buf.getvalue()
        write_bytes(self._path(key), hashlib.sha256(body).hexdigest().encode() + b"\n" + body)


# ---------------------------------------------------------------- one entry


@dataclass
class _Set:
    """One variant's test data with one model: images on the model's device, its predictions, the subsets."""

    variant: str
    arch: str
    model: nn.Module
    images: Tensor
    labels: Tensor
    masks: Tensor
    predicted: Tensor
    faithful: Tensor  # indices of the faithfulness subset
    sane: Tensor  # indices of the sanity subset
    key: str  # data + model identity
    grid: tuple[int, int]  # the default CAM layer's resolution (for mask_lowres)
    regions: dict[str, Tensor]  # the masks grown by each pointing-game tolerance, computed once


def _balanced(labels: Tensor, per_class: int) -> Tensor:

    counts = torch.bincount(labels.cpu())
    n = min(per_class, int(counts[counts > 0].min()))
    return torch.cat([one_per_class(labels, k) for k in range(n)])


@dataclass(frozen=True)
class _Settings:
    """What every entry of one run shares (all of it is in the cache key)."""

    sizes: Sizes
    thresholds: Tensor
    seed: int
    batch_size: int
    baseline: Mapping[str, str]


def _score(s: _Set, maps: Tensor, cfg: _Settings) -> tuple[dict[str, Any], dict[str, float]]:
    """The localisation and faithfulness part of an entry, from the maps of the whole test set."""

    t0 = time.perf_counter()
    masks = s.masks.to(maps.device)
    out: dict[str, Any] = {"iou": per_image_iou(maps, masks, cfg.thresholds).float().cpu()}
    out["pointing"] = {c: max_on(maps, s.regions[c]).cpu() for c in POINTING}
    t1 = time.perf_counter()
    f = s.faithful.to(maps.device)
    for mode in ("deletion", "insertion"):
        curves = deletion_insertion(
            s.model, s.images[f], maps[f], s.predicted[f], mode, cfg.sizes.steps, cfg.baseline[mode], cfg.batch_size
        )
        out[mode] = curves.probability.float().cpu()
    return out, {"scores": t1 - t0, "faithfulness": time.perf_counter() - t1}


def _method_entry(s: _Set, method: str, params: dict[str, Any], cfg: _Settings) -> dict[str, Any]:

    with warnings.catch_warnings():
        # vebi's notice that a class has fewer relevant features than k (notebook 03) would repeat for every batch
        warnings.filterwarnings("ignore", message=r"k=\d+ is more than the number of relevant features")
        t0 = time.perf_counter()
        maps = heatmaps(s.model, s.images, method, params, s.predicted, cfg.batch_size)
        seconds = {"maps": time.perf_counter() - t0}
        out, more = _score(s, maps, cfg)
        seconds.update(more)
        sane, targets = s.images[s.sane.to(s.images.device)], s.predicted[s.sane.to(s.predicted.device)]
        reference = maps[s.sane.to(maps.device)]
        del maps
        t1 = time.perf_counter()
        if METHODS[method].class_specific:
            sens = class_sensitivity(s.model, sane, method, params, cfg.batch_size, progress=False)
            out["sensitivity"] = {"r": sens.r.float().cpu(), "empty": sens.empty.cpu()}
        t2 = time.perf_counter()
        cas = cascade(s.model, sane, method, params, targets, cfg.seed, cfg.batch_size, reference=reference)
    out["cascade"] = {"layers": cas.layers, "r": cas.r.float().cpu()}
    seconds.update({"sensitivity": t2 - t1, "randomisation": time.perf_counter() - t2})
    out["seconds"] = seconds
    return out


def _reference_entry(s: _Set, kind: str, cfg: _Settings) -> dict[str, Any]:

    t0 = time.perf_counter()
    maps = reference_maps(kind, s.masks, s.grid if kind == "mask_lowres" else None, cfg.seed).to(s.images.device)
    out, seconds = _score(s, maps, cfg)
    out["seconds"] = {"maps": time.perf_counter() - t0 - sum(seconds.values()), **seconds}
    return out


# ---------------------------------------------------------------- the results


def bootstrap_interval(scores: Tensor, n: int, seed: int) -> tuple[float, float]:
    """95 % percentile interval of the mean of ``scores`` (one per independent unit: an image, a grid) over ``n``
    resamples of them, seeded."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(scores), (n, len(scores)), generator=g)
    means = scores.double()[idx].mean(1)
    lo, hi = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64))
    return float(lo), float(hi)


@dataclass
class Evaluation:
    """What :func:`run` measured. ``entries[(label, variant, arch)]`` holds an entry's raw results (per-image IoU
    curves ``iou`` N×T, ``pointing`` hits, ``deletion`` / ``insertion`` probability curves, ``sensitivity``,
    ``cascade``, ``seconds``); ``labels[variant]`` the test labels; ``jobs`` the methods' settings (reference rows
    are labelled ``"reference: <kind>"``)."""

    entries: dict[tuple[str, str, str], dict[str, Any]]
    labels: dict[str, Tensor]
    class_names: dict[str, list[str]]
    jobs: dict[str, tuple[str, dict[str, Any]]]
    sizes: Sizes
    thresholds: Tensor
    seed: int = 0
    computed: list[tuple[str, str, str]] = field(default_factory=list)
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


def _test_data(variant: str, size: int, sizes: Sizes, root: str | Path | None, seed: int) -> tuple[Tensor, ...]:
    """One variant's test split at one image size: images, labels, masks and the masks grown by each pointing-game
    tolerance (read once per variant, shared by the models)."""
    data = An8Flower(variant, "test", size=size, seed=seed, root=root, per_class=sizes.per_class, progress=False)
    images, labels, masks = data.tensors()
    return images, labels, masks, *(dilate(masks, tol) for tol in POINTING.values())


def _test_set(
    variant: str, arch: str, dev: torch.device, data: Callable[[int], tuple[Tensor, ...]], sizes: Sizes, batch_size: int
) -> _Set:
    """The test set of one variant with one model; ``data(size)`` gives :func:`_test_data` at the model's size."""
    model = load(model_name(arch, variant)).to(dev).eval()
    size = int(getattr(model, "meta", {}).get("image_size", 112))
    images, labels, masks, *grown = data(size)
    images = images.to(dev)
    model_id = _digest(*(p for p in model.state_dict().values()))
    _, h, w = layer_shape(model, default_cam_layer(model), size)
    return _Set(
        variant,
        arch,
        model,
        images,
        labels,
        masks,
        predict(model, images, batch_size).to(dev),
        _balanced(labels, sizes.faithfulness),
        _balanced(labels, sizes.sanity),
        _digest(images, masks, labels, model_id),
        (h, w),
        {c: g.to(dev) for c, g in zip(POINTING, grown, strict=True)},
    )


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
) -> Evaluation:
    """Run the an8Flower evaluation: every job of ``methods`` (see :func:`select_jobs`; None = all registered
    methods and the named settings of :func:`default_jobs`) and every reference row, on the test split of each
    variant (the official set under ``root`` when given), with the shipped VGG- and AlexNet-style models.

    ``sizes``: :meth:`Sizes.default` (quick under ``DVE_QUICK=1``). ``cache``: True = ``<results>/cache``, a folder,
    or False/None for none. ``device``: default :func:`dvehelpers.device`. ``baseline``: what deleted / not yet
    inserted pixels become (:data:`dvehelpers.metrics.BASELINES`), default :data:`BASELINE` — zeros for both,
    not RISE's blurred insertion start: blur keeps the colours, the only cue of an8Flower, so every map's
    insertion curve would start near 1. Returns an :class:`Evaluation`."""

    jobs = select_jobs(methods)
    bad = [v for v in variants if v not in VARIANTS] + [a for a in archs if a not in ARCHS]
    if bad:
        raise ValueError(f"unknown variant/model {bad}; variants: {', '.join(VARIANTS)}; models: {', '.join(ARCHS)}")
    unknown = [r for r in references if r not in REFERENCES]
    if unknown:
        raise ValueError(f"unknown reference(s) {unknown}; valid: {', '.join(REFERENCES)}")
    sizes = sizes or Sizes.default()
    t = (THRESHOLDS if thresholds is None else torch.as_tensor(thresholds, dtype=torch.float64)).sort().values
    folder = (default_results() / "cache") if cache is True else (cache or None)
    store = Cache(folder)
    dev = torch.device(device) if device is not None else default_device()
    baseline = {**BASELINE, **(baseline or {})}
    cfg = _Settings(sizes, t, seed, batch_size, baseline)
    protocol = {
        "version": PROTOCOL_VERSION,
        "sizes": asdict(sizes),
        "thresholds": t.tolist(),
        "seed": seed,
        "baseline": baseline,
    }
    todo = [(label, *job) for label, job in jobs.items()] + [(f"reference: {r}", None, {}) for r in references]
    result = Evaluation({}, {}, {}, dict(jobs), sizes, t, seed)
    bar = tqdm(total=len(todo) * len(variants) * len(archs), desc="evaluating", unit="entry", disable=not progress)
    for variant in variants:
        result.class_names[variant] = class_names(variant)
        data = functools.cache(lambda size, v=variant: _test_data(v, size, sizes, root, seed))
        for arch in archs:
            bar.set_description(f"loading {arch} · {variant}")
            s = _test_set(variant, arch, dev, data, sizes, batch_size)
            result.labels[variant] = s.labels
            for label, method, params in todo:
                bar.set_description(f"{label} · {arch} · {variant}")
                extra = None if method is None else METHODS[method].cache_identity(s.model, params)
                ident = {"method": method or label, "params": params, "extra": extra}
                key = _digest(ident, s.key, protocol)
                entry = store.get(key)
                if entry is None:
                    if method is None:
                        entry = _reference_entry(s, label.split(": ")[1], cfg)
                    else:
                        entry = _method_entry(s, method, params, cfg)
                    store.put(key, entry)
                    result.computed.append((label, variant, arch))
                result.entries[(label, variant, arch)] = entry
                bar.update()
    bar.close()
    return result
