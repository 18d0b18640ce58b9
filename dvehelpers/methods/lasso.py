"""The μ-lasso of Oramas et al. (ICLR 2019, step 3 of their interpretation): for every class j,

    w_j* = argmin_w ‖Xᵀw − l_j‖²   s.t.  ‖w‖₁ ≤ μ,

with ``X ∈ R^{m×N}`` (one column of features per training image) and one-hot labels ``L ∈ {0,1}^{C×N}``: C
independent constrained least-squares problems.

The default solver is the homotopy (LARS-lasso; Osborne, Presnell & Turlach 2000, Efron et al. 2004 — the algorithm
SPAMS runs in its mode 0): each class's solution path from w = 0, one feature entering or leaving the active set per
breakpoint, stopped exactly where ‖w_j‖₁ = μ by linear interpolation inside the last segment. It is exact up to
rounding and touches only the columns of the Gram matrix ``G = XXᵀ`` of the features it activates (each ``X·x_a``,
cached across classes). The alternative, ``solver="fista"``, is accelerated projected gradient (FISTA with adaptive
restart) with the exact sort-based projection onto the L1 ball (Duchi et al., ICML 2008), kept as an independent
check and for warm starts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "project_l1",
    "lasso_objective",
    "duality_gap",
    "LassoResult",
    "SOLVERS",
    "mu_lasso",
    "homotopy_path",
    "lasso_path",
]


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
    last iterate, the ``iterations`` run (the homotopy: the most breakpoints of any class) and whether every class
    reached the tolerance (``converged``); the homotopy also gives each class's number of ``breakpoints``."""

    W: Tensor
    objective: Tensor
    gap: Tensor
    iterations: int
    converged: bool
    solver: str = "fista"
    breakpoints: list[int] = field(default_factory=list)


def _check_problem(X: Tensor, L: Tensor, mus: Sequence[float]) -> None:
    if X.ndim != 2 or L.ndim != 2 or X.shape[1] != L.shape[1]:
        raise ValueError(
            f"X must be m×N and L C×N (one column per training image), got {tuple(X.shape)} and {tuple(L.shape)}"
        )
    for mu in mus:
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


def _fista(X: Tensor, L: Tensor, mu: float, nonneg: bool, W0: Tensor | None, tol: float, max_iter: int) -> LassoResult:
    """FISTA on the Gram form ``f(w) = wᵀGw − 2wᵀXl + ‖l‖²`` (``G = XXᵀ``; products ``X(Xᵀw)`` when N < m) with
    step ``1/(2σ_max(X)²)`` (power iteration), the exact L1-ball projection and an adaptive restart of each
    class's momentum. It stops when every class's duality gap is at most ``tol · max(f, ‖l‖²)``. ``W0``
    warm-starts (a μ path reuses the previous ``W``)."""
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


# ---------------------------------------------------------------- the homotopy (LARS-lasso)

SOLVERS = ("homotopy", "fista")


class _GramColumns:
    """Columns of ``G = XXᵀ`` on demand, cached: ``G[:, a] = X·x_a`` costs m·N, the whole Gram matrix m²·N, and a
    homotopy at a small μ activates a handful of the m features."""

    def __init__(self, x: Tensor) -> None:
        self.x, self.cache = x, {}

    def __call__(self, a: int) -> Tensor:
        if a not in self.cache:
            self.cache[a] = self.x @ self.x[a]
        return self.cache[a]


def _cholesky_add(R: Tensor, g: Tensor, g_jj: float) -> Tensor | None:
    """The lower Cholesky factor of ``[[G_AA, g], [gᵀ, g_jj]]`` from that of ``G_AA`` (``R``), or None when the new
    feature lies (to 1e-10 relative) in the span of the active ones: entering it would make ``G_AA`` singular."""
    k = R.shape[0]
    z = torch.linalg.solve_triangular(R, g[:, None], upper=False)[:, 0] if k else g
    d2 = g_jj - float(z @ z)
    if d2 <= 1e-10 * max(g_jj, 0.0) or g_jj <= 0:
        return None
    new = R.new_zeros(k + 1, k + 1)
    new[:k, :k], new[k, :k], new[k, k] = R, z, math.sqrt(d2)
    return new


def _reentry(c_j: float, a_j: float, lam: float, nonneg: bool) -> float:
    """When a feature that has just left the active set (``|c_j| = λ``) meets ±(λ − γ) again: the smallest root
    clearly above 0 of ``c_j − γa_j = ±(λ − γ)``, or inf."""
    roots = [(lam - c_j) / (1 - a_j)] if 1 - a_j > 1e-12 else []
    if not nonneg and 1 + a_j > 1e-12:
        roots.append((lam + c_j) / (1 + a_j))
    return min((r for r in roots if r > 1e-9 * lam), default=math.inf)


def _one_class(
    columns: _GramColumns, c: Tensor, mus: Sequence[float], nonneg: bool, max_steps: int
) -> tuple[Tensor, int]:
    """The LARS-lasso path of one class from w = 0 (``c = X·l_j``, the correlations at w = 0), evaluated at every
    μ of ``mus`` (sorted): (len(mus)×m, breakpoints crossed).

    Along the path the active features keep ``c_A = λ·s_A`` (``c = X(l − Xᵀw)``, s the signs) while λ falls; a
    segment moves ``w_A`` by ``γ·d`` with ``G_AA d = s`` and ends where a free feature's correlation reaches ±λ
    (it enters), an active weight reaches 0 (it leaves) or λ reaches 0 (least squares). ``‖w‖₁ = sᵀw_A`` grows
    linearly within a segment (slope ``sᵀd > 0``), so each μ is met exactly inside one segment."""
    m = c.numel()
    out, c = c.new_zeros(len(mus), m), c.clone()
    score = c if nonneg else c.abs()
    lam = float(score.max()) if m else 0.0
    if lam <= 0:  # no feature correlates (positively, with nonneg) with the labels: w = 0 for every μ
        return out, 0
    w, active, signs = c.new_zeros(m), [], []
    R, GA = c.new_zeros(0, 0), c.new_zeros(m, 0)
    blocked = torch.zeros(m, dtype=torch.bool, device=c.device)  # active, or collinear with the active set
    entering: int | None = int(score.argmax())
    dropped: int | None = None
    l1, k, steps, lam0 = 0.0, 0, 0, lam
    inf = torch.tensor(math.inf, dtype=c.dtype, device=c.device)
    while steps < max_steps:
        if entering is not None:
            g = columns(entering)
            blocked[entering] = True
            grown = _cholesky_add(R, g[active], float(g[entering]))
            if grown is not None:
                R, GA = grown, torch.cat([GA, g[:, None]], 1)
                active.append(entering)
                signs.append(1.0 if nonneg or c[entering] > 0 else -1.0)
            entering = None
        s = torch.tensor(signs, dtype=c.dtype, device=c.device)
        d = torch.cholesky_solve(s[:, None], R)[:, 0]
        a, slope = GA @ d, float(s @ d)
        free = ~blocked
        # a free feature enters when c_j − γa_j = ±(λ − γ); rounding can leave |c_j| a hair above λ: clamp to 0
        up = torch.where(free & (1 - a > 1e-12), (lam - c).clamp_min(0) / (1 - a), inf)
        if not nonneg:
            up = torch.minimum(up, torch.where(free & (1 + a > 1e-12), (lam + c).clamp_min(0) / (1 + a), inf))
        if dropped is not None:  # it just left at |c_j| = λ: the γ = 0 root is that exit, not an entry; it may
            up[dropped] = _reentry(float(c[dropped]), float(a[dropped]), lam, nonneg)  # cross the other side later
            dropped = None
        w_a = w[active]
        down = torch.where(w_a * d < 0, -w_a / d, inf)  # an active weight reaches 0
        g_up, g_down = float(up.min()), float(down.min())
        gamma = min(g_up, g_down, lam)
        while k < len(mus) and l1 + slope * gamma >= mus[k]:  # a requested μ inside this segment: interpolate
            out[k] = w
            out[k, active] += (mus[k] - l1) / slope * d
            k += 1
        if k == len(mus):
            return out, steps
        w[active] += gamma * d
        c -= gamma * a
        lam, l1, steps = lam - gamma, l1 + slope * gamma, steps + 1
        if lam <= 1e-14 * lam0:  # λ reached 0: the least-squares solution, inside every larger ball
            break
        if g_down <= g_up:
            i = int(down.argmin())
            dropped = active[i]
            w[active[i]] = 0.0
            blocked[active[i]] = False
            keep = [n for n in range(len(active)) if n != i]
            active, signs, GA = [active[n] for n in keep], [signs[n] for n in keep], GA[:, keep]
            R = torch.linalg.cholesky(GA[active]) if active else c.new_zeros(0, 0)
            if not active:
                entering = int(torch.where(free, score, -inf).argmax())
        else:
            entering = int(up.argmin())
    out[k:] = w  # the rest of the μs lie beyond the least-squares solution (or the step cap was reached)
    return out, steps


def _homotopy(
    x: Tensor, lab: Tensor, mus: Sequence[float], nonneg: bool, max_steps: int | None
) -> tuple[Tensor, list[int], _GramColumns, Tensor]:
    """:func:`homotopy_path` on float64 ``x``, ``lab``, also returning the cached Gram columns and ``X·Lᵀ``."""
    order = sorted(range(len(mus)), key=lambda i: float(mus[i]))
    sorted_mus = [float(mus[i]) for i in order]
    corr = x @ lab.T
    columns = _GramColumns(x)
    out = x.new_zeros(len(mus), x.shape[0], lab.shape[0])
    steps = []
    for j in range(lab.shape[0]):
        path, n = _one_class(columns, corr[:, j], sorted_mus, nonneg, max_steps or 10 * x.shape[0])
        out[order, :, j] = path
        steps.append(n)
    return out, steps, columns, corr


def homotopy_path(
    X: Tensor, L: Tensor, mus: Sequence[float], nonneg: bool = False, max_steps: int | None = None
) -> tuple[Tensor, list[int]]:
    """The μ-lasso solutions at every μ of ``mus`` by one homotopy per class: (len(mus)×m×C, in the order of
    ``mus``; each class's breakpoints crossed). ``X`` m×N, ``L`` C×N, computed in float64 on their device. A μ
    path costs what its largest μ costs. ``max_steps`` caps each class's breakpoints (default 10·m)."""
    _check_problem(X, L, mus)
    path, steps, _, _ = _homotopy(X.double(), L.to(X.device).double(), mus, nonneg, max_steps)
    return path, steps


def _gram_times_sparse(columns: _GramColumns, W: Tensor) -> Tensor:
    """``G·W`` for a sparse ``W`` (m×C) from the Gram columns of its non-zero rows, which the homotopy has cached:
    no m×N product."""
    out = torch.zeros_like(W)
    for j in range(W.shape[1]):
        support = W[:, j].nonzero()[:, 0].tolist()
        if support:
            out[:, j] = torch.stack([columns(a) for a in support], 1) @ W[support, j]
    return out


def lasso_path(
    X: Tensor, L: Tensor, mus: Sequence[float], nonneg: bool = False, tol: float = 1e-9, max_steps: int | None = None
) -> list[LassoResult]:
    """The μ-lasso at every μ of ``mus`` from one homotopy per class (:func:`homotopy_path`), each with its
    objective ``f = wᵀGw − 2wᵀXl + ‖l‖²``, duality gap and ``converged`` (every gap at most ``tol · max(f, ‖l‖²)``),
    in the order of ``mus``; ``G·w`` comes from the Gram columns the path computed."""
    _check_problem(X, L, mus)
    lab = L.to(X.device).double()
    path, steps, columns, xl = _homotopy(X.double(), lab, mus, nonneg, max_steps)
    l2 = lab.square().sum(1)
    out = []
    for mu, w in zip(mus, path, strict=True):
        gw = _gram_times_sparse(columns, w)
        f = ((w * gw).sum(0) - 2 * (w * xl).sum(0) + l2).clamp_min(0)
        gap = duality_gap(2 * (gw - xl), w, float(mu), nonneg)
        converged = bool((gap <= tol * torch.maximum(f, l2.clamp_min(torch.finfo(torch.float64).tiny))).all())
        result = LassoResult(w.to(X.dtype), f.to(X.dtype), gap.to(X.dtype), max(steps), converged, "homotopy", steps)
        out.append(result)
    return out


def mu_lasso(
    X: Tensor,
    L: Tensor,
    mu: float,
    nonneg: bool = False,
    W0: Tensor | None = None,
    tol: float = 1e-9,
    max_iter: int = 20000,
    solver: str = "homotopy",
) -> LassoResult:
    """Solve ``min ‖XᵀW − Lᵀ‖²_F s.t. ‖w_j‖₁ ≤ μ`` (and ``W ≥ 0`` with ``nonneg``) for all C classes.

    ``X``: m×N features (one column per image), ``L``: C×N labels (one-hot), on any device; computed in float64
    there. ``solver="homotopy"`` (default): the exact LARS-lasso path of each class up to ‖w_j‖₁ = μ
    (:func:`homotopy_path`; ``max_iter`` caps its breakpoints per class; ``W0`` is not needed). ``solver="fista"``:
    accelerated projected gradient, warm-started from ``W0``, at most ``max_iter`` iterations. Either way the
    result carries each class's Frank–Wolfe duality gap, and ``converged`` says whether every gap is at most
    ``tol · max(f, ‖l‖²)``.
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(map(repr, SOLVERS))}, got {solver!r}")
    if solver == "fista":
        _check_problem(X, L, [mu])
        return _fista(X, L, mu, nonneg, W0, tol, max_iter)
    return lasso_path(X, L, [mu], nonneg, tol, max_iter)[0]
