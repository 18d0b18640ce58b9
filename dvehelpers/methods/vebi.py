"""Visual Explanation by Interpretation (Oramas, Wang & Tuytelaars, ICLR 2019): the interpretation stage.

Features (METHODS.md §3, step 1): for every image, layer ``l`` and channel ``f`` the squared L2 norm of the
channel's map, ``s_{l,f} = Σ_{h,w} A_{l,f}(h, w)²`` (a fully connected unit is a 1×1 map), normalised within the
layer, ``x_{l,f} = s_{l,f} / Σ_f' s_{l,f'}``, concatenated over layers into ``x ∈ R^m`` and, as in the authors'
code, L2-normalised as a whole (here at fit and at test time alike).

μ-lasso (step 3): with ``X ∈ R^{m×N}`` (one column per training image) and one-hot labels ``L ∈ {0,1}^{C×N}``,

    W* = argmin_W ‖XᵀW − Lᵀ‖²_F   s.t.  ‖w_j‖₁ ≤ μ  for every class j,

C independent constrained least-squares problems (:mod:`dvehelpers.methods.lasso`). The relevant features of class
j are the non-zero entries of ``w_j``.
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..atomic import save
from ..checks import check_images
from ..data import An8Flower
from ..engine import (
    GUIDED,
    GUIDED_STRIDED_FIX,
    RESIZE_MODES,
    RuleSet,
    Trace,
    capture,
    propagate,
    record,
    resolve,
    shapes,
)
from ..engine import strided_fix as fix_rule
from ..engine.geometry import receptive_field
from ..integrity import record as record_checksum
from ..integrity import recorded, verify
from ..maps import normalize, reduce_rgb, upsample
from ..models import checkpoints, load, num_classes
from ..registry import Param, register
from ..train import model_name, predict
from .base import SMOOTH, forward, rule_set
from .lasso import LassoResult, duality_gap, lasso_objective, lasso_path, mu_lasso, project_l1

__all__ = [
    "AverageImage",
    "average_image",
    "LABELS",
    "Interpretation",
    "fit",
    "FeatureLayout",
    "feature_layout",
    "default_feature_layers",
    "features",
    "project_l1",
    "LassoResult",
    "mu_lasso",
    "lasso_path",
    "lasso_objective",
    "duality_gap",
    "fingerprint",
    "shipped_path",
    "fit_shipped",
    "interpretation_of",
    "Selection",
    "responses",
    "select",
    "feature_heatmaps",
    "vebi",
    "MuPath",
    "mu_path",
    "feature_activations",
]


# ---------------------------------------------------------------- features


#: The activations whose outputs are features: every activation but the sigmoid gates of squeeze-excitation.
FEATURE_KINDS = ("relu", "relu6", "silu", "hardswish", "gelu", "tanh")


def default_feature_layers(model: nn.Module, conv_only: bool = False) -> list[str]:
    """Every activation output (each call of an activation: ReLU, ReLU6, SiLU …) from the first convolution to the
    last hidden fully connected layer (``conv_only``: only those before the first fully connected layer, for the
    paper's ablation with relevant features found in conv layers)."""
    nodes = capture(model).nodes
    linears = [n.index for n in nodes if n.kind == "linear"]
    end = (linears[0] if conv_only else linears[-1]) if linears else len(nodes)
    names = [n.name for n in nodes if n.kind in FEATURE_KINDS and n.index < end]
    if not names:
        raise ValueError("model has no activation before its output layer; pass layers=")
    return names


@dataclass(frozen=True)
class FeatureLayout:
    """Which (layer, channel) each feature index stands for: ``layers[k]`` has ``channels[k]`` features,
    starting at index ``offsets[k]``."""

    layers: tuple[str, ...]
    channels: tuple[int, ...]

    @property
    def offsets(self) -> tuple[int, ...]:
        out, total = [], 0
        for n in self.channels:
            out.append(total)
            total += n
        return tuple(out)

    @property
    def size(self) -> int:
        """``m``, the length of the feature vector."""
        return sum(self.channels)

    def locate(self, index: int) -> tuple[str, int]:
        """The (layer name, channel) of feature ``index``."""
        if not 0 <= index < self.size:
            raise IndexError(f"feature index {index} out of range: there are {self.size} features (0..{self.size - 1})")
        for name, start, n in zip(self.layers, self.offsets, self.channels, strict=True):
            if index < start + n:
                return name, index - start
        raise AssertionError("unreachable")

    def index(self, layer: str, channel: int) -> int:
        """The feature index of ``channel`` of ``layer`` (the inverse of :meth:`locate`)."""
        if layer not in self.layers:
            raise ValueError(f"layer {layer!r} holds no features; valid: {', '.join(self.layers)}")
        k = self.layers.index(layer)
        if not 0 <= channel < self.channels[k]:
            raise IndexError(f"channel {channel} out of range for {layer} with {self.channels[k]} channels")
        return self.offsets[k] + channel


def feature_layout(model: nn.Module, layers: Sequence[str] | None = None, size: int = 112) -> FeatureLayout:
    """The layout of :func:`features` for ``model`` (channel counts from one input of zeros, ``size`` × ``size``)."""
    names = list(default_feature_layers(model) if layers is None else layers)
    graph = capture(model)
    got = shapes(graph, (size, size))
    return FeatureLayout(tuple(names), tuple(int(got[resolve(graph, n)][1]) for n in names))


def _layer_energy(acts: Tensor) -> Tensor:
    """B×C energies ``Σ_hw A²`` of a B×C×h×w (or B×C, fully connected) output, L1-normalised over C."""
    s = acts.square().flatten(2).sum(2) if acts.ndim == 4 else acts.square()
    total = s.sum(1, keepdim=True)
    return torch.where(total > 0, s / torch.where(total > 0, total, 1), 0)


def _batch_features(model: nn.Module, images: Tensor, indices: list[int], l2_normalize: bool) -> Tensor:
    images = check_images(model, images)
    return _trace_features(record(model, images, rules=(), keep=indices, upto=max(indices)), indices, l2_normalize)


def _trace_features(trace: Trace, indices: list[int], l2_normalize: bool) -> Tensor:
    x = torch.cat([_layer_energy(trace.output(i)) for i in indices], 1)
    if l2_normalize:
        norm = x.norm(dim=1, keepdim=True)
        x = torch.where(norm > 0, x / torch.where(norm > 0, norm, 1), 0)
    return x


def _batches(images: Tensor | Iterable[Any], batch_size: int) -> tuple[Iterable[Tensor], int | None]:
    if isinstance(images, Tensor):
        return (images[i : i + batch_size] for i in range(0, len(images), batch_size)), -(-len(images) // batch_size)
    first = (b[0] if isinstance(b, (tuple, list)) else b for b in images)  # a DataLoader of (images, labels, …)
    return first, len(images) if hasattr(images, "__len__") else None  # type: ignore[arg-type]


def features(
    model: nn.Module,
    images: Tensor | Iterable[Any],
    layers: Sequence[str] | None = None,
    l2_normalize: bool = True,
    batch_size: int = 64,
    progress: bool = False,
) -> Tensor:
    """The B×m feature matrix of ``images`` (a B×3×H×W tensor, or a DataLoader yielding images or tuples whose
    first entry is the images), one row per image, in :func:`feature_layout` order, on the model's device."""
    names = list(default_feature_layers(model) if layers is None else layers)
    graph = capture(model)
    indices = [resolve(graph, n) for n in names]
    dev = next(model.parameters()).device
    batches, total = _batches(images, batch_size)
    rows = [
        _batch_features(model, b.to(dev), indices, l2_normalize)
        for b in tqdm(batches, total=total, desc="features", unit="batch", disable=not progress)
    ]
    if not rows:
        raise ValueError("no images to compute features of")
    return torch.cat(rows)


# ---------------------------------------------------------------- the interpretation

#: Which labels the μ-lasso fits: the ground truth (the paper) or the model's own predictions (later ports).
LABELS = ("ground_truth", "predicted")
_VERSION = 1


@dataclass(eq=False, repr=False)
class Interpretation:
    """A fitted interpretation: ``W`` (m×C, one column of feature weights per class), the feature ``layers``
    and their ``channels`` (:class:`FeatureLayout`), how it was fitted (``mu``, ``nonneg``, ``labels``,
    ``l2_normalize``), the solver's final duality ``gap`` per class, and a ``record`` of the model and data
    (plain strings and numbers)."""

    W: Tensor
    layers: tuple[str, ...]
    channels: tuple[int, ...]
    mu: float
    nonneg: bool
    labels: str
    l2_normalize: bool
    gap: Tensor
    record: dict[str, Any] = field(default_factory=dict)
    X: Tensor | None = field(default=None, repr=False)
    L: Tensor | None = field(default=None, repr=False)
    _path: dict[float, tuple[Tensor, Tensor]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def layout(self) -> FeatureLayout:
        return FeatureLayout(self.layers, self.channels)

    def __repr__(self) -> str:
        m, c = self.W.shape
        nonzero = int((self.W != 0).sum())
        return f"Interpretation(mu={self.mu:g}, {m} features, {c} classes, {nonzero} non-zero weights)"

    def at(self, mu: float) -> Interpretation:
        """The same interpretation refitted at another ``mu``, from the training features it holds (``X``, ``L``:
        :func:`fit` with ``keep_features=True``), by the homotopy; solutions are remembered, so moving a μ slider
        back and forth solves each μ once."""
        if mu == self.mu:
            return self
        if self.X is None or self.L is None:
            raise ValueError(
                f"this interpretation (fitted at mu={self.mu:g}) does not hold its training features, so it cannot "
                f"be refitted at mu={mu:g}; fit it with dh.methods.vebi.fit(model, train, keep_features=True)"
            )
        if mu not in self._path:
            res = mu_lasso(self.X, self.L, mu, self.nonneg)
            self._path[mu] = res.W.to(self.W), res.gap.to(self.W)
        W, gap = self._path[mu]
        fields = {k: getattr(self, k) for k in ("layers", "channels", "nonneg", "labels", "l2_normalize", "record")}
        return Interpretation(W, mu=mu, gap=gap, X=self.X, L=self.L, _path=self._path, **fields)

    def relevant(self, j: int, tol: float = 0.0) -> Tensor:
        """Indices of the relevant features of class ``j``: the entries of ``w_j`` with ``|w| > tol``,
        strongest first."""
        if not 0 <= j < self.W.shape[1]:
            raise IndexError(f"class {j} out of range: the interpretation has {self.W.shape[1]} classes")
        w = self.W[:, j]
        idx = (w.abs() > tol).nonzero()[:, 0]
        return idx[w[idx].abs().argsort(descending=True)]

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (temporary file, then rename) a file that :meth:`load` reads with
        ``torch.load(weights_only=True)``: tensors, strings, numbers, lists and dicts only."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        blob = {
            "version": _VERSION,
            "W": self.W.detach().cpu(),
            "gap": self.gap.detach().cpu(),
            "layers": list(self.layers),
            "channels": list(self.channels),
            "mu": float(self.mu),
            "nonneg": bool(self.nonneg),
            "labels": self.labels,
            "l2_normalize": bool(self.l2_normalize),
            "record": dict(self.record),
        }
        return save(blob, path)

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Interpretation:
        """Read a file written by :meth:`save`; a corrupt, unsafe or foreign file gets a clear error."""
        try:
            blob = torch.load(Path(path), map_location=map_location, weights_only=True)
        except Exception as err:  # pickle, zip and unsafe-global errors all mean "do not trust this file"
            raise ValueError(f"cannot read interpretation {path}: corrupt or not a weights-only file ({err})") from err
        keys = {"version", "W", "gap", "layers", "channels", "mu", "nonneg", "labels", "l2_normalize", "record"}
        if not isinstance(blob, dict) or set(blob) != keys or blob["version"] != _VERSION:
            raise ValueError(f"{path} is not an interpretation file of version {_VERSION}")
        if blob["W"].shape[0] != sum(blob["channels"]):
            raise ValueError(f"{path}: W has {blob['W'].shape[0]} rows for {sum(blob['channels'])} features")
        return cls(
            blob["W"],
            tuple(blob["layers"]),
            tuple(blob["channels"]),
            blob["mu"],
            blob["nonneg"],
            blob["labels"],
            blob["l2_normalize"],
            blob["gap"],
            blob["record"],
        )


def _labelled(dataset: Any) -> tuple[Tensor, Tensor]:
    if hasattr(dataset, "tensors"):  # dh.data.An8Flower
        images, labels, _ = dataset.tensors()
        return images, labels
    if isinstance(dataset, (tuple, list)) and len(dataset) >= 2:
        return dataset[0], dataset[1]
    raise TypeError("dataset must be an An8Flower dataset or an (images, labels, …) tuple of tensors")


def fit(
    model: nn.Module,
    dataset: Any,
    mu: float = 5.0,
    labels: str = "ground_truth",
    nonneg: bool = False,
    layers: Sequence[str] | None = None,
    l2_normalize: bool = True,
    batch_size: int = 64,
    progress: bool = True,
    record: Mapping[str, Any] | None = None,
    keep_features: bool = False,
    **solver: Any,
) -> Interpretation:
    """Fit the interpretation of ``model`` on a labelled training set (steps 1–4 of METHODS.md §3): the
    features of every image, then the μ-lasso against the one-hot ``labels`` (the ground truth, or the model's
    predictions with ``labels="predicted"``). ``mu`` = 5 is the authors' value for an8Flower; ``solver`` goes
    to :func:`mu_lasso` (``tol``, ``max_iter``). ``keep_features`` keeps the training features and labels in
    memory (not in saved files), so that :meth:`Interpretation.at` can refit at another μ."""
    if labels not in LABELS:
        raise ValueError(f"labels must be one of {', '.join(map(repr, LABELS))}, got {labels!r}")
    if not mu > 0:
        raise ValueError(f"mu must be a positive L1 radius, got {mu}")
    images, truth = _labelled(dataset)
    names = list(default_feature_layers(model) if layers is None else layers)
    x = features(model, images, names, l2_normalize, batch_size, progress)
    y = predict(model, images, batch_size) if labels == "predicted" else truth
    lab = torch.nn.functional.one_hot(y.to(x.device).long(), num_classes(model)).T.to(x.dtype)
    # A class no training image has (l_j = 0) has the exact solution w_j = 0 with gap 0: solve only the others
    # (an ImageNet model with a folder of a few classes solves a few problems, not 1 000).
    seen = lab.any(1)
    res = mu_lasso(x.T, lab[seen], mu, nonneg, **solver)
    W = res.W.new_zeros(x.shape[1], len(lab)).index_copy_(1, seen.nonzero()[:, 0], res.W)
    gap = res.gap.new_zeros(len(lab)).index_copy_(0, seen.nonzero()[:, 0], res.gap)
    layout = feature_layout(model, names, size=images.shape[-1])
    info = {
        "images": len(images),
        "classes": int(lab.shape[0]),
        "converged": res.converged,
        "fingerprint": fingerprint(model),
        **dict(record or {}),
    }
    kept = {"X": x.T, "L": lab} if keep_features else {}
    return Interpretation(W, layout.layers, layout.channels, mu, nonneg, labels, l2_normalize, gap, info, **kept)


def fingerprint(model: nn.Module) -> list[float]:
    """A cheap identity of the model's weights: the float64 sum and sum of squares of every parameter. An
    interpretation records it, so that one fitted on other weights (a retrained checkpoint) is refused."""
    with torch.no_grad():
        return [float(v) for p in model.parameters() for v in (p.double().sum(), p.double().square().sum())]


#: Shipped interpretations live here, one per shipped checkpoint, under the checkpoint's name.
def shipped_path(name: str) -> Path:
    return checkpoints.MODEL_DIR / "vebi" / f"{name}.pt"


def fit_shipped(variant: str, arch: str, seed: int = 0, mu: float = 5.0, progress: bool = True) -> Path:
    """Fit the interpretation of the shipped checkpoint ``an8flower-<arch>-<variant>`` on its training split
    (data seed ``seed``, the split it was trained on) and save it beside the checkpoint (``make models``)."""
    name = model_name(arch, variant)
    model = load(name)
    size = int(getattr(model, "meta", {}).get("image_size", 112))
    train = An8Flower(variant, "train", size=size, seed=seed, per_class=250, progress=progress)
    record = {"model": name, "variant": variant, "split": "train", "data_seed": seed, "per_class": 250}
    path = fit(model, train, mu=mu, progress=progress, record=record).save(shipped_path(name))
    record_checksum(checkpoints.MODEL_DIR / f"{name}.json", "interpretation_sha256", path)
    return path


def interpretation_of(model: nn.Module, interpretation: Interpretation | None = None) -> Interpretation:
    """The interpretation to explain ``model`` with: ``interpretation`` if given, else the one shipped beside
    the model's checkpoint; either must have been fitted on these very weights."""
    if interpretation is None:
        meta = getattr(model, "meta", {}) or {}
        name = f"an8flower-{meta.get('arch')}-{meta.get('variant')}"
        path = shipped_path(name)
        if "arch" not in meta or "variant" not in meta or not path.is_file():
            raise ValueError(
                "vebi explains with a fitted interpretation (which features are relevant to each class), and this "
                "model has none shipped: fit one with interp = dh.methods.vebi.fit(model, (train_images, "
                "train_labels)) and pass interpretation=interp (the four shipped an8Flower models carry theirs)"
            )
        expected = recorded(checkpoints.MODEL_DIR / f"{name}.json", "interpretation_sha256")
        if expected is not None:
            verify(path, expected, checkpoints.SHIPPED_REMEDY)
        interpretation = Interpretation.load(path)
    if not isinstance(interpretation, Interpretation):
        raise TypeError(f"interpretation must be a vebi.Interpretation, got {type(interpretation).__name__}")
    own = interpretation.record.get("fingerprint")
    if own is not None and not _same(own, fingerprint(model)):
        raise ValueError(
            f"the interpretation ({interpretation.record.get('model', 'fitted in this session')}) was fitted on other "
            f"weights than this model's; refit it (dh.methods.vebi.fit, or `make models` for the shipped ones)"
        )
    return interpretation


def _same(a: Sequence[float], b: Sequence[float]) -> bool:
    return len(a) == len(b) and all(math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-9) for x, y in zip(a, b, strict=True))


# ---------------------------------------------------------------- average-image interpretations


@dataclass
class AverageImage:
    """The interpretation image of one feature: the ``mean`` (3×S×S) of the crops of the ``top`` images
    (their indices, strongest first) by the feature's ``response`` (its value in :func:`features`), each
    cropped at the feature's receptive field around the unit of maximum response (``boxes``: top, left,
    bottom, right) and resized to S×S."""

    mean: Tensor
    top: Tensor
    response: Tensor
    boxes: list[tuple[int, int, int, int]]


def average_image(
    model: nn.Module,
    images: Tensor,
    layer: str,
    channel: int,
    top: int = 100,
    size: int = 64,
    batch_size: int = 64,
    progress: bool = False,
) -> AverageImage:
    """Oramas et al.'s average-image interpretation of feature (``layer``, ``channel``) over ``images``
    (e.g. the training split). The response is the feature value of :func:`features` (the channel's share of
    its layer's energy); a fully connected feature has no position, so its crop is the whole image."""
    graph = capture(model)
    index = resolve(graph, layer)
    dev = next(model.parameters()).device
    values, peaks = [], []
    for i in tqdm(range(0, len(images), batch_size), desc=f"{layer}:{channel}", disable=not progress):
        batch = check_images(model, images[i : i + batch_size].to(dev))
        acts = record(graph, batch, rules=(), keep=[index], upto=index).output(index)
        if not 0 <= channel < acts.shape[1]:
            raise ValueError(f"channel {channel} out of range for {layer} with {acts.shape[1]} channels")
        values.append(_layer_energy(acts)[:, channel])
        peaks.append(acts[:, channel].flatten(1).argmax(1) if acts.ndim == 4 else torch.zeros_like(values[-1]).long())
        width = acts.shape[-1] if acts.ndim == 4 else 1
    response, peak = torch.cat(values), torch.cat(peaks)
    order = response.argsort(descending=True)[:top]
    h, w = images.shape[-2:]
    rf = _field(graph, index, (h, w))  # FC features: the whole image
    crops, boxes = [], []
    for n in order.tolist():
        box = (0, 0, h, w) if rf is None else rf.box(divmod(int(peak[n]), width), (h, w))
        crop = images[n : n + 1, :, box[0] : box[2], box[1] : box[3]].to(dev)
        crops.append(torch.nn.functional.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False))
        boxes.append(box)
    return AverageImage(torch.cat(crops).mean(0), order, response[order], boxes)


def _field(graph: Any, index: int, size: tuple[int, int]) -> Any:
    """The receptive field of node ``index``, or None where it has none (after a global pool or a flatten)."""
    try:
        return receptive_field(graph, index, size)
    except ValueError:
        return None


# ---------------------------------------------------------------- the explanation (registered as "vebi")


@dataclass
class Selection:
    """The top-k features of every image for its explained class: ``index`` (B×k feature indices, strongest
    first), ``response`` (B×k values of ``r``), ``valid`` (False where a slot holds no feature: ``r ≤ 0``),
    ``targets`` (B) and the interpretation's ``layout`` (feature index -> layer, channel)."""

    index: Tensor
    response: Tensor
    valid: Tensor
    targets: Tensor
    layout: FeatureLayout

    def names(self, i: int) -> list[str]:
        """``"layer:channel"`` of image ``i``'s selected features, strongest first ("—" for an empty slot)."""
        out = []
        for n, ok in zip(self.index[i].tolist(), self.valid[i].tolist(), strict=True):
            out.append("{}:{}".format(*self.layout.locate(n)) if ok else "—")
        return out


def responses(x: Tensor, W: Tensor, targets: Tensor) -> Tensor:
    """``r = x ⊙ w_ĵ / |Σ w_ĵ|`` per image (B×m) for its class ``ĵ = targets``. The authors' code divides ``w_ĵ``
    by its sum; the absolute value keeps the sign of ``r`` (which features count, ``r > 0``) when the sum is
    negative, and equals their scaling otherwise."""
    w = W.to(x)[:, targets].T
    total = w.sum(1, keepdim=True).abs()
    return x * torch.where(total > 0, w / torch.where(total > 0, total, 1), w)


def _check_layout(trace: Trace, interp: Interpretation) -> list[int]:
    model_steps = {n.name: n.index for n in trace.graph.nodes}
    indices = []
    for layer, n in zip(interp.layers, interp.channels, strict=True):
        if layer not in model_steps:
            raise ValueError(f"the interpretation's layer {layer!r} is not a layer of this model")
        i = model_steps[layer]
        if trace.output(i).shape[1] != n:
            raise ValueError(f"the interpretation has {n} channels at {layer}, the model {trace.output(i).shape[1]}")
        indices.append(i)
    return indices


def _select(trace: Trace, interp: Interpretation, targets: Tensor, k: int) -> Selection:
    x = _trace_features(trace, _check_layout(trace, interp), interp.l2_normalize)
    r = responses(x, interp.W, targets)
    k_ = min(k, r.shape[1])
    top = r.topk(k_, dim=1)
    index, response = top.indices, top.values
    if k_ < k:  # more slots than features: pad with empty slots
        pad = k - k_
        index = torch.cat([index, index.new_zeros(len(index), pad)], 1)
        response = torch.cat([response, response.new_zeros(len(response), pad)], 1)
    valid = response > 0
    _say_empty(interp, targets, k)
    return Selection(index, response, valid, targets, interp.layout)


def _say_empty(interp: Interpretation, targets: Tensor, k: int) -> None:
    """Allowed, but said: k above the number of relevant features of an explained class (slots with ``r ≤ 0``
    are empty maps too; :func:`select` shows which)."""
    counts = {int(j): int((interp.W[:, int(j)] != 0).sum()) for j in targets.unique()}
    short = ", ".join(f"class {j}: {n}" for j, n in sorted(counts.items()) if n < k)
    if short:
        warnings.warn(
            f"k={k} is more than the number of relevant features ({short}); the extra slots are empty maps",
            stacklevel=4,
        )


def select(
    model: nn.Module,
    images: Tensor,
    target: Any = None,
    k: int = 3,
    interpretation: Interpretation | None = None,
    mu: float | None = None,
) -> Selection:
    """Which features :func:`vebi` visualises for each image: the top-k of ``r`` for the explained class."""
    interp = interpretation_of(model, interpretation)
    interp = interp if mu is None else interp.at(mu)
    trace, targets = forward(model, images, target, rules=(), keep=_feature_nodes(model, interp))
    return _select(trace, interp, targets, k)


def _feature_nodes(model: nn.Module, interp: Interpretation) -> list[int]:
    """The node indices of the interpretation's feature layers (an error names a layer the model lacks)."""
    graph = capture(model)
    out = []
    for layer in interp.layers:
        try:
            out.append(resolve(graph, layer))
        except ValueError:
            raise ValueError(f"the interpretation's layer {layer!r} is not a layer of this model") from None
    return out


def feature_heatmaps(trace: Trace, sel: Selection, rules: RuleSet) -> Tensor:
    """One input-level heatmap per selected feature (B×k×H×W, each min-max normalised; empty slots are 0):
    a backward pass under ``rules`` from the feature's own forward map (every other channel zero), all B·k
    passes batched into one walk (:func:`dvehelpers.engine.propagate` with a start per feature layer)."""
    b, k = sel.index.shape
    names = {n.name: n.index for n in trace.graph.nodes}
    where = [(names[layer], channel) for layer, channel in map(sel.layout.locate, sel.index.flatten().tolist())]
    node = torch.tensor([w[0] for w in where], device=sel.index.device)
    channel = torch.tensor([w[1] for w in where], device=sel.index.device)
    valid = sel.valid.flatten()
    rows = torch.arange(b, device=sel.index.device).repeat_interleave(k)
    starts = sorted({int(i) for i in node[valid]})
    images = trace.output(-1)
    if not starts:
        return images.new_zeros(b, k, *images.shape[-2:])
    sub = trace.select(rows)
    signals = {}
    for i in starts:
        acts = sub.output(i)
        mine = (valid & (node == i)).nonzero()[:, 0]
        start = torch.zeros_like(acts)
        start[mine, channel[mine]] = acts[mine, channel[mine]]
        signals[i] = start
    raw = propagate(sub, signals, rules)
    heat = normalize(reduce_rgb(raw, "pos_l2")) * valid[:, None, None]
    return heat.view(b, k, *heat.shape[-2:])


K = Param("k", 3, "number of top-responding features visualised (the paper's k = 3)", "int", range=(1, 20))
FEATURE = Param(
    "feature",
    None,
    "None: merge the k feature maps; i: the map of the i-th strongest alone (0 = strongest)",
    "int",
    range=(0, 19),
    when={"output": ("heatmap",)},
)
MERGE = Param(
    "merge",
    "max",
    "how the k feature maps combine: pixel-wise 'max' (our reading; the sources do not say) or 'mean'",
    "choice",
    ("max", "mean"),
    when={"feature": (None,), "output": ("heatmap",)},
)
STRIDED_FIX = Param(
    "strided_fix", True, "Oramas et al.'s fix for strided convolutions: resize, then a stride-1 transposed conv", "bool"
)
RESIZE = Param(
    "resize",
    "nearest",
    "how the fix resizes the backward map (ours: the paper does not name it)",
    "choice",
    RESIZE_MODES,
    when={"strided_fix": (True,)},
)
MU = Param(
    "mu",
    None,
    "None: the interpretation's own μ; another L1 radius refits W (needs fit(..., keep_features=True))",
    "float",
    range=(0.1, 100.0),
    log=True,
)
INTERPRETATION = Param(
    "interpretation", None, "a fitted vebi.Interpretation (None: the one shipped with the model)", "object"
)
OUTPUT = Param(
    "output",
    "heatmap",
    "'heatmap' (B×H×W in [0,1]) or 'features' (B×k×H×W, one map per selected feature)",
    "choice",
    ("heatmap", "features"),
)


def _cache_identity(model: nn.Module, params: Mapping[str, Any]) -> str | None:
    """What a vebi result depends on beyond its parameters and the weights: the shipped interpretation file's bytes
    (a registry hook that the evaluation's cache keys read)."""
    if params.get("interpretation") is not None:
        return None
    meta = getattr(model, "meta", {}) or {}
    path = shipped_path(f"an8flower-{meta.get('arch')}-{meta.get('variant')}")
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _for_randomised(model: nn.Module, params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters for explaining randomised copies of ``model`` (the sanity check): the trained model's relevant
    features are part of the method, fitted once, so they are kept, with the check of the weights dropped."""
    interp = copy.copy(interpretation_of(model, params.get("interpretation")))
    interp.record = {k: v for k, v in interp.record.items() if k != "fingerprint"}
    return {**params, "interpretation": interp}


@register(
    "vebi",
    params=[K, FEATURE, MERGE, STRIDED_FIX, RESIZE, SMOOTH, MU, INTERPRETATION, OUTPUT],
    paper="Oramas et al. 2019",
    class_specific=True,
    identity=_cache_identity,
    randomised=_for_randomised,
)
def vebi(
    model: nn.Module,
    images: Tensor,
    target: Any = None,
    *,
    k: int = 3,
    feature: int | None = None,
    merge: str = "max",
    strided_fix: bool = True,
    resize: str = "nearest",
    smooth: str = "refuse",
    mu: float | None = None,
    interpretation: Interpretation | None = None,
    output: str = "heatmap",
) -> Tensor:
    """Visual explanation by interpretation (Oramas et al. 2019): the top-k features of ``r = x ⊙ w_ĵ`` for class
    ĵ, each visualised by a guided backward pass from its own forward map (strided convolutions resized, then
    transposed at stride 1), kept positive, L2 over RGB and min-max normalised; the explanation is their
    pixel-wise max (METHODS.md §3, explanation stage)."""
    if feature is not None and feature >= k:
        raise ValueError(f"feature={feature} picks one of the k={k} selected features; valid: 0..{k - 1} or None")
    interp = interpretation_of(model, interpretation)
    interp = interp if mu is None else interp.at(mu)
    rules = GUIDED
    if strided_fix:
        rules = (
            GUIDED_STRIDED_FIX
            if resize == "nearest"
            else GUIDED.with_rules(f"guided_strided_fix_{resize}", conv=fix_rule(resize))
        )
    rules = rule_set(rules, smooth)
    trace, targets = forward(model, images, target, rules=rules, keep=_feature_nodes(model, interp))
    sel = _select(trace, interp, targets, k)
    heat = feature_heatmaps(trace, sel, rules)
    if output == "features":
        return heat
    if feature is not None:
        return heat[:, feature]
    return normalize(heat.amax(1) if merge == "max" else heat.mean(1))


# ---------------------------------------------------------------- what μ does, and what a feature's map shows


@dataclass
class MuPath:
    """The μ-lasso along increasing ``mus``: per μ and class the number of ``relevant`` features (non-zero
    weights), the ``objective`` ‖Xᵀw_j − l_j‖², the training ``accuracy`` of ``argmax_j xᵀw_j``, and per μ the
    largest duality ``gap`` relative to the objective (how far from optimal the solver stopped)."""

    mus: Tensor
    relevant: Tensor
    objective: Tensor
    accuracy: Tensor
    gap: Tensor | None = None


def mu_path(X: Tensor, L: Tensor, mus: Sequence[float], nonneg: bool = False, **solver: Any) -> MuPath:
    """Solve the μ-lasso at every μ of ``mus`` (sorted): by default one homotopy per class, read at every μ
    (:func:`lasso_path`; ``max_iter`` caps its breakpoints); with ``solver="fista"`` one solve per μ, each
    warm-started from the previous solution."""
    order = sorted(float(m) for m in mus)
    if solver.get("solver", "homotopy") == "homotopy":
        opts = {"tol": solver.get("tol", 1e-9), "max_steps": solver.get("max_iter")}
        results = iter(lasso_path(X, L, order, nonneg, **opts))
    else:
        results = None
    W, rel, obj, acc, gap = None, [], [], [], []
    truth = L.argmax(0)
    for mu in order:
        res = next(results) if results is not None else mu_lasso(X, L, mu, nonneg, W0=W, **solver)
        W = res.W
        rel.append((W != 0).sum(0))
        obj.append(res.objective)
        acc.append(((X.T @ W).argmax(1) == truth).double().mean())
        gap.append((res.gap / res.objective.clamp_min(torch.finfo(res.gap.dtype).tiny)).max())
    stacked = (torch.stack(v).cpu() for v in (rel, obj, acc, gap))
    return MuPath(torch.tensor(order, dtype=torch.float64), *stacked)


def feature_activations(model: nn.Module, images: Tensor, sel: Selection) -> Tensor:
    """The forward maps of the selected features (B×k×H×W): each channel's map upsampled bilinearly to the image
    and min-max normalised — the "upsampled activation" that Oramas et al. (blog post, Figure 7) set against the
    backward visualisation. A fully connected feature has no map: its slot is 0, as are empty slots."""
    images = check_images(model, images)
    graph = capture(model)
    nodes = {layer: resolve(graph, layer) for layer in sel.layout.layers}
    trace = record(graph, images, rules=(), keep=nodes.values(), upto=max(nodes.values()))
    b, k = sel.index.shape
    out = images.new_zeros(b, k, *images.shape[-2:])
    for i in range(b):
        for slot in range(k):
            if not sel.valid[i, slot]:
                continue
            layer, channel = sel.layout.locate(int(sel.index[i, slot]))
            acts = trace.output(nodes[layer])
            if acts.ndim == 4:
                out[i, slot] = normalize(upsample(acts[i : i + 1, channel], images.shape[-2:]))[0]
    return out
