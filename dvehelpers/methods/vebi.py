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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..checks import check_images
from ..models import resolve_layer
from ..trace import record, walk

__all__ = [
    "FeatureLayout",
    "feature_layout",
    "default_feature_layers",
    "features",
    "project_l1",
    "LassoResult",
    "mu_lasso",
    "lasso_objective",
    "duality_gap",
]


# ---------------------------------------------------------------- features


def default_feature_layers(model: nn.Module) -> list[str]:
    """Every ReLU output from the first convolution to the last hidden fully connected layer."""
    steps = walk(model)
    last_linear = max((i for i, s in enumerate(steps) if s.kind == "linear"), default=len(steps))
    names = [s.name for i, s in enumerate(steps) if s.kind == "relu" and i < last_linear]
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
    trace = record(model, images, upto=max(indices))
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
    there. FISTA on the Gram form ``f(w) = wᵀGw − 2wᵀXl + ‖l‖²`` (``G = XXᵀ``) with step ``1/(2σ_max(X)²)``,
    the exact L1-ball projection and an adaptive restart of each class's momentum. It stops when every class's
    duality gap is at most ``tol · max(f, ‖l‖²)``. ``W0`` warm-starts (a μ path reuses the previous ``W``).
    """
    _check_problem(X, L, mu)
    dtype = X.dtype
    x, lab = X.double(), L.to(X.device).double()
    gram, xl = x @ x.T, x @ lab.T
    l2 = lab.square().sum(1)
    step = 1 / (2 * torch.linalg.matrix_norm(x, ord=2).square().clamp_min(torch.finfo(torch.float64).tiny))
    w = project_l1(torch.zeros_like(xl) if W0 is None else W0.to(xl), mu, nonneg)
    y, t = w.clone(), torch.ones(1, xl.shape[1], dtype=xl.dtype, device=xl.device)
    scale = l2.clamp_min(torch.finfo(torch.float64).tiny)
    converged, it = False, 0
    for it in range(1, max_iter + 1):
        grad_y = 2 * (gram @ y - xl)
        w_next = project_l1(y - step * grad_y, mu, nonneg)
        restart = ((y - w_next) * (w_next - w)).sum(0, keepdim=True) > 0  # momentum points uphill: drop it
        t_next = torch.where(restart, 1.0, (1 + torch.sqrt(1 + 4 * t.square())) / 2)
        y = w_next + torch.where(restart, 0.0, (t - 1) / t_next) * (w_next - w)
        w, t = w_next, t_next
        if it % 10 == 0 or it == max_iter:
            grad = 2 * (gram @ w - xl)
            f = (w * (gram @ w)).sum(0) - 2 * (w * xl).sum(0) + l2
            if (duality_gap(grad, w, mu, nonneg) <= tol * torch.maximum(f, scale)).all():
                converged = True
                break
    grad = 2 * (gram @ w - xl)
    return LassoResult(
        w.to(dtype),
        lasso_objective(x, lab, w).to(dtype),
        duality_gap(grad, w, mu, nonneg).to(dtype),
        it,
        converged,
    )
