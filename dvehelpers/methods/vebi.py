"""Visual Explanation by Interpretation (Oramas, Wang & Tuytelaars, ICLR 2019): the interpretation stage.

Features (METHODS.md §3, step 1): for every image, layer ``l`` and channel ``f`` the squared L2 norm of the
channel's map, ``s_{l,f} = Σ_{h,w} A_{l,f}(h, w)²`` (a fully connected unit is a 1×1 map), normalised within the
layer, ``x_{l,f} = s_{l,f} / Σ_f' s_{l,f'}``, concatenated over layers into ``x ∈ R^m`` and, as in the authors'
code, L2-normalised as a whole (here at fit and at test time alike).

μ-lasso (step 3): with ``X ∈ R^{m×N}`` (one column per training image) and one-hot labels ``L ∈ {0,1}^{C×N}``,

    W* = argmin_W ‖XᵀW − Lᵀ‖²_F   s.t.  ‖w_j‖₁ ≤ μ  for every class j,

C independent constrained least-squares problems, solved together by accelerated projected gradient (FISTA
with adaptive restart) with the exact sort-based projection onto the L1 ball (Duchi et al., ICML 2008). The
relevant features of class j are the non-zero entries of ``w_j``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..backprop import GUIDED, GUIDED_STRIDED_FIX, RESIZE_MODES, RuleSet, propagate_from
from ..backprop import strided_fix as _fix
from ..checks import check_images
from ..maps import normalize, reduce_rgb
from ..models import resolve_layer
from ..registry import Param, register
from ..trace import Trace, record, walk

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


def default_feature_layers(model: nn.Module, conv_only: bool = False) -> list[str]:
    """Every ReLU output from the first convolution to the last hidden fully connected layer (``conv_only``:
    only those that follow a convolution, for the paper's ablation with relevant features found in conv layers)."""
    steps = walk(model)
    last_linear = max((i for i, s in enumerate(steps) if s.kind == "linear"), default=len(steps))
    first_linear = min((i for i, s in enumerate(steps) if s.kind == "linear"), default=len(steps))
    end = first_linear if conv_only else last_linear
    names = [s.name for i, s in enumerate(steps) if s.kind == "relu" and i < end]
    if not names:
        raise ValueError("model has no ReLU before its output layer; pass layers=")
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
    """The layout of :func:`features` for ``model`` (channel counts from one ``size``² input of zeros)."""
    names = list(default_feature_layers(model) if layers is None else layers)
    indices = [resolve_layer(model, n) for n in names]
    ref = next(model.parameters())
    trace = record(model, torch.zeros(1, 3, size, size, dtype=ref.dtype, device=ref.device), upto=max(indices))
    return FeatureLayout(tuple(names), tuple(int(trace.output(i).shape[1]) for i in indices))


def _layer_energy(acts: Tensor) -> Tensor:
    """B×C energies ``Σ_hw A²`` of a B×C×h×w (or B×C, fully connected) output, L1-normalised over C."""
    s = acts.square().flatten(2).sum(2) if acts.ndim == 4 else acts.square()
    total = s.sum(1, keepdim=True)
    return torch.where(total > 0, s / torch.where(total > 0, total, 1), 0)


def _batch_features(model: nn.Module, images: Tensor, indices: list[int], l2_normalize: bool) -> Tensor:
    images = check_images(model, images)
    return _trace_features(record(model, images, upto=max(indices)), indices, l2_normalize)


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
    from tqdm.auto import tqdm

    names = list(default_feature_layers(model) if layers is None else layers)
    indices = [resolve_layer(model, n) for n in names]
    dev = next(model.parameters()).device
    batches, total = _batches(images, batch_size)
    rows = [
        _batch_features(model, b.to(dev), indices, l2_normalize)
        for b in tqdm(batches, total=total, desc="features", unit="batch", disable=not progress)
    ]
    if not rows:
        raise ValueError("no images to compute features of")
    return torch.cat(rows)


# ---------------------------------------------------------------- μ-lasso


def project_l1(v: Tensor, mu: float, nonneg: bool = False) -> Tensor:
    """Euclidean projection of every column of ``v`` (m×C) onto ``{w : ‖w‖₁ ≤ μ}`` (and ``w ≥ 0`` with
    ``nonneg``): ``sign(v) ⊙ max(|v| − θ, 0)`` with the θ ≥ 0 found by sorting (Duchi et al. 2008, Fig. 1)."""
    if not mu > 0:
        raise ValueError(f"mu must be a positive L1 radius, got {mu}")
    a = v.clamp(min=0) if nonneg else v.abs()
    u = a.sort(0, descending=True).values
    cssv = u.cumsum(0) - mu
    j = torch.arange(1, v.shape[0] + 1, dtype=v.dtype, device=v.device)[:, None]
    rho = (u - cssv / j > 0).sum(0, keepdim=True).clamp(min=1)  # the number of entries left non-zero
    theta = (cssv.gather(0, rho - 1) / rho).clamp(min=0)
    theta = torch.where(a.sum(0, keepdim=True) <= mu, 0, theta)  # inside the ball: unchanged
    shrunk = (a - theta).clamp(min=0)
    return shrunk if nonneg else torch.sign(v) * shrunk


def lasso_objective(X: Tensor, L: Tensor, W: Tensor) -> Tensor:
    """``‖Xᵀw_j − l_j‖²`` for every class j (C): the μ-lasso objective per class."""
    return (X.T @ W - L.T).square().sum(0)


def duality_gap(grad: Tensor, W: Tensor, mu: float, nonneg: bool = False) -> Tensor:
    """Frank–Wolfe duality gap per class, ``max_{s ∈ ball} ⟨∇f(w), w − s⟩`` (C): an upper bound on the
    objective's distance to the optimum, 0 exactly at a solution."""
    lowest = grad.amin(0).clamp(max=0) if nonneg else -grad.abs().amax(0)
    return (grad * W).sum(0) - mu * lowest


@dataclass
class LassoResult:
    """:func:`mu_lasso`'s answer: ``W`` (m×C), the ``objective`` and Frank–Wolfe ``gap`` per class at the
    last iterate, the ``iterations`` run and whether every class reached the tolerance (``converged``)."""

    W: Tensor
    objective: Tensor
    gap: Tensor
    iterations: int
    converged: bool


def _check_problem(X: Tensor, L: Tensor, mu: float) -> None:
    if X.ndim != 2 or L.ndim != 2 or X.shape[1] != L.shape[1]:
        raise ValueError(
            f"X must be m×N and L C×N (one column per training image), got {tuple(X.shape)} and {tuple(L.shape)}"
        )
    if not mu > 0 or math.isinf(mu):
        raise ValueError(f"mu must be a positive, finite L1 radius, got {mu}")
    if not (torch.isfinite(X).all() and torch.isfinite(L).all()):
        raise ValueError("X and L must be finite")


def _largest_eigenvalue(gram_times: Any, m: int, like: Tensor, max_iter: int = 1000) -> Tensor:
    """``σ_max(X)²`` = the largest eigenvalue of ``G = XXᵀ`` by power iteration (an SVD of a feature matrix
    takes seconds), times 1.02: the Rayleigh quotient approaches it from below, and the step must not exceed
    ``1/(2σ_max²)``. A fixed, non-constant start vector keeps it deterministic."""
    v = 1 + 0.1 * torch.cos(torch.arange(m, dtype=like.dtype, device=like.device))[:, None]
    v = v / v.norm()
    value = torch.zeros((), dtype=like.dtype, device=like.device)
    for _ in range(max_iter):
        gv = gram_times(v)
        new = (v * gv).sum()
        norm = gv.norm()
        if norm == 0:
            return new
        v = gv / norm
        if (new - value).abs() <= 1e-10 * new:
            value = new
            break
        value = new
    return value * 1.02


def mu_lasso(
    X: Tensor,
    L: Tensor,
    mu: float,
    nonneg: bool = False,
    W0: Tensor | None = None,
    tol: float = 1e-9,
    max_iter: int = 20000,
) -> LassoResult:
    """Solve ``min ‖XᵀW − Lᵀ‖²_F s.t. ‖w_j‖₁ ≤ μ`` (and ``W ≥ 0`` with ``nonneg``) for all C classes at once.

    ``X``: m×N features (one column per image), ``L``: C×N labels (one-hot), on any device; computed in float64
    there. FISTA on the Gram form ``f(w) = wᵀGw − 2wᵀXl + ‖l‖²`` (``G = XXᵀ``; products ``X(Xᵀw)`` when N < m)
    with step ``1/(2σ_max(X)²)`` (power iteration), the exact L1-ball projection and an adaptive restart of each
    class's momentum. It stops when every class's duality gap is at most ``tol · max(f, ‖l‖²)``. ``W0``
    warm-starts (a μ path reuses the previous ``W``).
    """
    _check_problem(X, L, mu)
    dtype = X.dtype
    x, lab = X.double(), L.to(X.device).double()
    xl = x @ lab.T
    # G·w with G = XXᵀ: through the m×m Gram matrix, or as X(Xᵀw) when there are fewer images than features
    if x.shape[1] < x.shape[0]:

        def gram_times(v: Tensor) -> Tensor:
            return x @ (x.T @ v)
    else:
        gram = x @ x.T

        def gram_times(v: Tensor) -> Tensor:
            return gram @ v

    l2 = lab.square().sum(1)
    step = 1 / (2 * _largest_eigenvalue(gram_times, x.shape[0], x).clamp_min(torch.finfo(torch.float64).tiny))
    w = project_l1(torch.zeros_like(xl) if W0 is None else W0.to(xl), mu, nonneg)
    y, t = w.clone(), torch.ones(1, xl.shape[1], dtype=xl.dtype, device=xl.device)
    scale = l2.clamp_min(torch.finfo(torch.float64).tiny)
    converged, it = False, 0
    for it in range(1, max_iter + 1):
        grad_y = 2 * (gram_times(y) - xl)
        w_next = project_l1(y - step * grad_y, mu, nonneg)
        restart = ((y - w_next) * (w_next - w)).sum(0, keepdim=True) > 0  # momentum points uphill: drop it
        t_next = torch.where(restart, 1.0, (1 + torch.sqrt(1 + 4 * t.square())) / 2)
        y = w_next + torch.where(restart, 0.0, (t - 1) / t_next) * (w_next - w)
        w, t = w_next, t_next
        if it % 10 == 0 or it == max_iter:
            gw = gram_times(w)
            grad = 2 * (gw - xl)
            f = (w * gw).sum(0) - 2 * (w * xl).sum(0) + l2
            if (duality_gap(grad, w, mu, nonneg) <= tol * torch.maximum(f, scale)).all():
                converged = True
                break
    grad = 2 * (gram_times(w) - xl)
    return LassoResult(
        w.to(dtype),
        lasso_objective(x, lab, w).to(dtype),
        duality_gap(grad, w, mu, nonneg).to(dtype),
        it,
        converged,
    )


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
        :func:`fit` with ``keep_features=True``), warm-started from this ``W``; solutions are remembered, so
        moving a μ slider back and forth solves each μ once."""
        if mu == self.mu:
            return self
        if self.X is None or self.L is None:
            raise ValueError(
                f"this interpretation (fitted at mu={self.mu:g}) does not hold its training features, so it cannot "
                f"be refitted at mu={mu:g}; fit it with dh.methods.vebi.fit(model, train, keep_features=True)"
            )
        if mu not in self._path:
            res = mu_lasso(self.X, self.L, mu, self.nonneg, W0=self.W.to(self.X))
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
        tmp = path.with_name(path.name + ".tmp")
        torch.save(blob, tmp)
        os.replace(tmp, path)
        return path

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
    from ..models import num_classes
    from ..train import predict

    if labels not in LABELS:
        raise ValueError(f"labels must be one of {', '.join(map(repr, LABELS))}, got {labels!r}")
    if not mu > 0:
        raise ValueError(f"mu must be a positive L1 radius, got {mu}")
    images, truth = _labelled(dataset)
    names = list(default_feature_layers(model) if layers is None else layers)
    x = features(model, images, names, l2_normalize, batch_size, progress)
    y = predict(model, images, batch_size) if labels == "predicted" else truth
    lab = torch.nn.functional.one_hot(y.to(x.device).long(), num_classes(model)).T.to(x.dtype)
    res = mu_lasso(x.T, lab, mu, nonneg, **solver)
    layout = feature_layout(model, names, size=images.shape[-1])
    info = {
        "images": len(images),
        "classes": int(lab.shape[0]),
        "converged": res.converged,
        "fingerprint": fingerprint(model),
        **dict(record or {}),
    }
    kept = {"X": x.T, "L": lab} if keep_features else {}
    return Interpretation(
        res.W, layout.layers, layout.channels, mu, nonneg, labels, l2_normalize, res.gap, info, **kept
    )


def fingerprint(model: nn.Module) -> list[float]:
    """A cheap identity of the model's weights: the float64 sum and sum of squares of every parameter. An
    interpretation records it, so that one fitted on other weights (a retrained checkpoint) is refused."""
    with torch.no_grad():
        return [float(v) for p in model.parameters() for v in (p.double().sum(), p.double().square().sum())]


#: Shipped interpretations live here, one per shipped checkpoint, under the checkpoint's name.
def shipped_path(name: str) -> Path:
    from ..models import MODEL_DIR

    return MODEL_DIR / "vebi" / f"{name}.pt"


def fit_shipped(variant: str, arch: str, seed: int = 0, mu: float = 5.0, progress: bool = True) -> Path:
    """Fit the interpretation of the shipped checkpoint ``an8flower-<arch>-<variant>`` on its training split
    (data seed ``seed``, the split it was trained on) and save it beside the checkpoint (``make models``)."""
    from ..data import An8Flower
    from ..models import load
    from ..train import model_name

    name = model_name(arch, variant)
    model = load(name)
    size = int(getattr(model, "meta", {}).get("image_size", 112))
    train = An8Flower(variant, "train", size=size, seed=seed, per_class=250, progress=progress)
    record = {"model": name, "variant": variant, "split": "train", "data_seed": seed, "per_class": 250}
    return fit(model, train, mu=mu, progress=progress, record=record).save(shipped_path(name))


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
    from tqdm.auto import tqdm

    from ..geometry import receptive_field

    index = resolve_layer(model, layer)
    dev = next(model.parameters()).device
    values, peaks = [], []
    for i in tqdm(range(0, len(images), batch_size), desc=f"{layer}:{channel}", disable=not progress):
        acts = record(model, check_images(model, images[i : i + batch_size].to(dev)), upto=index).output(index)
        if not 0 <= channel < acts.shape[1]:
            raise ValueError(f"channel {channel} out of range for {layer} with {acts.shape[1]} channels")
        values.append(_layer_energy(acts)[:, channel])
        peaks.append(acts[:, channel].flatten(1).argmax(1) if acts.ndim == 4 else torch.zeros_like(values[-1]).long())
        width = acts.shape[-1] if acts.ndim == 4 else 1
    response, peak = torch.cat(values), torch.cat(peaks)
    order = response.argsort(descending=True)[:top]
    h, w = images.shape[-2:]
    rf = receptive_field(model, index) if _spatial(model, index) else None  # FC features: the whole image
    crops, boxes = [], []
    for n in order.tolist():
        box = (0, 0, h, w) if rf is None else rf.box(divmod(int(peak[n]), width), (h, w))
        crop = images[n : n + 1, :, box[0] : box[2], box[1] : box[3]].to(dev)
        crops.append(torch.nn.functional.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False))
        boxes.append(box)
    return AverageImage(torch.cat(crops).mean(0), order, response[order], boxes)


def _spatial(model: nn.Module, index: int) -> bool:
    """Whether step ``index`` still has positions (before any adaptive pool, flatten or linear step)."""
    return all(s.kind not in ("adaptive_avgpool", "flatten", "linear") for s in walk(model)[: index + 1])


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
    model_steps = {s.name: i for i, s in enumerate(trace.steps)}
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
    import warnings

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
    from .base import forward

    interp = interpretation_of(model, interpretation)
    interp = interp if mu is None else interp.at(mu)
    trace, targets = forward(model, images, target)
    return _select(trace, interp, targets, k)


def feature_heatmaps(trace: Trace, sel: Selection, rules: RuleSet) -> Tensor:
    """One input-level heatmap per selected feature (B×k×H×W, each min-max normalised; empty slots are 0):
    a backward pass under ``rules`` from the feature's own forward map (every other channel zero), all B·k
    passes batched into one walk (:func:`dvehelpers.backprop.propagate_from`)."""
    b, k = sel.index.shape
    names = {s.name: i for i, s in enumerate(trace.steps)}
    where = [(names[layer], channel) for layer, channel in map(sel.layout.locate, sel.index.flatten().tolist())]
    step = torch.tensor([w[0] for w in where], device=sel.index.device)
    channel = torch.tensor([w[1] for w in where], device=sel.index.device)
    valid = sel.valid.flatten()
    rows = torch.arange(b, device=sel.index.device).repeat_interleave(k)
    starts = sorted({int(i) for i in step[valid]})
    if not starts:
        return trace.input(0).new_zeros(b, k, *trace.input(0).shape[-2:])
    sub = trace.select(rows, upto=starts[-1])
    signals = {}
    for i in starts:
        acts = sub.output(i)
        mine = (valid & (step == i)).nonzero()[:, 0]
        start = torch.zeros_like(acts)
        start[mine, channel[mine]] = acts[mine, channel[mine]]
        signals[i] = start
    raw = propagate_from(sub, signals, rules)
    heat = normalize(reduce_rgb(raw, "pos_l2")) * valid[:, None, None]
    return heat.view(b, k, *heat.shape[-2:])


K = Param("k", 3, "number of top-responding features visualised (the paper's k = 3)", "int", range=(1, 20))
FEATURE = Param(
    "feature",
    None,
    "None: merge the k feature maps; i: the map of the i-th strongest alone (0 = strongest)",
    "int",
    range=(0, 19),
)
MERGE = Param(
    "merge", "max", "how the k feature maps combine: pixel-wise 'max' (the paper) or 'mean'", "choice", ("max", "mean")
)
STRIDED_FIX = Param(
    "strided_fix", True, "Oramas et al.'s fix for strided convolutions: resize, then a stride-1 transposed conv", "bool"
)
RESIZE = Param("resize", "nearest", "how the fix resizes the backward map (the paper: nearest)", "choice", RESIZE_MODES)
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


@register(
    "vebi",
    params=[K, FEATURE, MERGE, STRIDED_FIX, RESIZE, MU, INTERPRETATION, OUTPUT],
    paper="Oramas et al. 2019",
    class_specific=True,
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
    mu: float | None = None,
    interpretation: Interpretation | None = None,
    output: str = "heatmap",
) -> Tensor:
    """Visual explanation by interpretation (Oramas et al. 2019): the top-k features of ``r = x ⊙ w_ĵ`` for class
    ĵ, each visualised by a guided backward pass from its own forward map (strided convolutions resized, then
    transposed at stride 1), kept positive, L2 over RGB and min-max normalised; the explanation is their
    pixel-wise max (METHODS.md §3, explanation stage)."""
    from .base import forward

    if feature is not None and feature >= k:
        raise ValueError(f"feature={feature} picks one of the k={k} selected features; valid: 0..{k - 1} or None")
    interp = interpretation_of(model, interpretation)
    interp = interp if mu is None else interp.at(mu)
    trace, targets = forward(model, images, target)
    sel = _select(trace, interp, targets, k)
    rules = GUIDED
    if strided_fix:
        rules = (
            GUIDED_STRIDED_FIX
            if resize == "nearest"
            else GUIDED.with_rules("guided_strided_fix_" + resize, conv=_fix(resize))
        )
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
    """Solve the μ-lasso at every μ of ``mus`` (sorted), each warm-started from the previous solution."""
    order = sorted(float(m) for m in mus)
    W, rel, obj, acc, gap = None, [], [], [], []
    truth = L.argmax(0)
    for mu in order:
        res = mu_lasso(X, L, mu, nonneg, W0=W, **solver)
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
    from ..maps import upsample

    images = check_images(model, images)
    steps = {s.name: i for i, s in enumerate(walk(model))}
    trace = record(model, images, upto=max(steps[layer] for layer in sel.layout.layers))
    b, k = sel.index.shape
    out = images.new_zeros(b, k, *images.shape[-2:])
    for i in range(b):
        for slot in range(k):
            if not sel.valid[i, slot]:
                continue
            layer, channel = sel.layout.locate(int(sel.index[i, slot]))
            acts = trace.output(steps[layer])
            if acts.ndim == 4:
                out[i, slot] = normalize(upsample(acts[i : i + 1, channel], images.shape[-2:]))[0]
    return out
