"""The μ-lasso of Oramas et al. (ICLR 2019, step 3 of their interpretation): for every class j,

    w_j* = argmin_w ‖Xᵀw − l_j‖²   s.t.  ‖w‖₁ ≤ μ,

with ``X ∈ R^{m×N}`` (one column of features per training image) and one-hot labels ``L ∈ {0,1}^{C×N}``: C
independent constrained least-squares problems.

The default solver is the homotopy (LARS-lasso; Osborne, Presnell & Turlach 2000, Efron et al. 2004 — the algorithm
SPAMS runs in its mode 0): each class's solution path from w = 0, one feature entering or leaving the active set per
breakpoint, stopped exactly where ‖w_j‖₁ = μ by linear interpolation inside the last segment. It is exact up to
rounding and touches only the columns of the Gram matrix ``G = XXᵀ`` of the features it activates (each ``X·x_a``,
cached and shared by the classes). All classes follow their paths in lockstep, so that each step is a few tensor
operations over every class at once, on the CPU or the GPU. The alternative, ``solver="fista"``, is accelerated
projected gradient (FISTA with adaptive restart) with the exact sort-based projection onto the L1 ball (Duchi et
al., ICML 2008), kept as an independent check and for warm starts.
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


def _check_problem(X: Tensor, L: Tensor, mus: Sequence[float]) -> tuple[Tensor, Tensor]:
    """``Xᵀ`` (N×m, contiguous) and ``L`` in float64 on X's device, after checking the problem."""
    if X.ndim != 2 or L.ndim != 2 or X.shape[1] != L.shape[1]:
        raise ValueError(
            f"X must be m×N and L C×N (one column per training image), got {tuple(X.shape)} and {tuple(L.shape)}"
        )
    for mu in mus:
        if not mu > 0 or math.isinf(mu):
            raise ValueError(f"mu must be a positive, finite L1 radius, got {mu}")
    xt, lab = X.T.to(torch.float64).contiguous(), L.to(X.device, torch.float64)
    for t in (xt, lab):  # a finite float64 sum is a finite matrix (one pass, no m×N mask); else look closer
        if not (torch.isfinite(t.sum()) or torch.isfinite(t).all()):
            raise ValueError("X and L must be finite")
    return xt, lab


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
    xt, lab = _check_problem(X, L, [mu])
    x = xt.T
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
    """Rows of ``G = XXᵀ`` (its columns: G is symmetric) on demand, cached one under another in an n×m ``block``:
    ``G[a] = x_aᵀXᵀ`` costs m·N, the whole Gram matrix m²·N, and a homotopy at a small μ activates a handful of the
    m features. ``xt`` is ``Xᵀ`` (N×m), contiguous: the layout in which the product reads it in one sweep."""

    def __init__(self, xt: Tensor) -> None:
        self.xt, self.slot_of = xt, {}
        self.block = xt.new_zeros(0, xt.shape[1])
        self.rows = torch.zeros(0, dtype=torch.long, device=xt.device)  # the feature of each cached row
        self.slot = torch.full((xt.shape[1],), -1, dtype=torch.long, device=xt.device)  # feature → its row

    def fetch(self, features: Sequence[int]) -> None:
        missing = sorted({a for a in features if a not in self.slot_of})
        if missing:
            index = torch.tensor(missing, device=self.xt.device)
            self.slot[index] = torch.arange(len(missing), device=self.xt.device) + self.block.shape[0]
            self.slot_of.update({a: self.block.shape[0] + n for n, a in enumerate(missing)})
            # one vector-matrix product per feature: MKL's skinny matrix products read X once per column anyway
            self.block = torch.cat([self.block, torch.stack([self.xt[:, a] @ self.xt for a in missing])])
            self.rows = torch.cat([self.rows, index])

    def times(self, W: Tensor) -> Tensor:
        """``G·W`` for a ``W`` (m×C) whose non-zero rows are all cached features (a homotopy's iterates and
        directions are), with no m×N product."""
        return self.block.T @ W[self.rows]


def _entry(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` where ``den > 0`` (the segment approaches ±λ), else inf; ``num`` (``λ ∓ c_j``) is clamped at 0,
    since rounding can leave ``|c_j|`` a hair above λ."""
    return torch.where(den > 1e-12, num.clamp_min_(0).div_(den), math.inf)


def _reentry(c: Tensor, a: Tensor, lam: Tensor, nonneg: bool) -> Tensor:
    """When features that have just left the active set (``|c_j| = λ``) meet ±(λ − γ) again: the smallest root
    clearly above 0 of ``c_j − γa_j = ±(λ − γ)``, or inf (elementwise)."""
    inf = torch.full_like(c, math.inf)
    roots = torch.where(1 - a > 1e-12, (lam - c) / (1 - a), inf)
    if not nonneg:
        roots = torch.minimum(roots, torch.where(1 + a > 1e-12, (lam + c) / (1 + a), inf))
    return torch.where(roots > 1e-9 * lam, roots, inf)


class _LarsLasso:
    """The LARS-lasso paths of all C classes at once, from W = 0 (``c = X·Lᵀ``, the correlations at W = 0), read
    at every μ of ``mus`` (sorted).

    Along class j's path its active features keep ``c_A = λ_j·s_A`` (``c = X(l_j − Xᵀw_j)``, s the signs) while
    λ_j falls; a segment moves ``w_A`` by ``γ·d`` with ``G_AA d = s`` and ends where a free feature's correlation
    reaches ±λ_j (it enters), an active weight reaches 0 (it leaves) or λ_j reaches 0 (least squares).
    ``‖w_j‖₁ = sᵀw_A`` grows linearly within a segment (slope ``sᵀd > 0``), so each μ is met exactly inside one
    segment. The classes move in lockstep, one segment each per round: the m×C updates are single tensor
    operations, the active sets are padded to the largest (identity rows, zero signs) and solved as one batch,
    and a Gram column is computed once, for every class that activates its feature."""

    def __init__(self, columns: _GramColumns, c: Tensor, mus: Sequence[float], nonneg: bool, max_steps: int) -> None:
        self.columns, self.c, self.mus, self.nonneg, self.max_steps = columns, c.clone(), list(mus), nonneg, max_steps
        m, n_cls = c.shape
        self.w, self.out = c.new_zeros(m, n_cls), c.new_zeros(len(mus), m, n_cls)
        self.blocked = torch.zeros(m, n_cls, dtype=torch.bool, device=c.device)  # active, or collinear with them
        self.active: list[list[int]] = [[] for _ in range(n_cls)]
        self.signs: list[list[float]] = [[] for _ in range(n_cls)]
        score = self._score()
        lam0, first = score.max(0) if m else (c.new_zeros(n_cls), c.new_zeros(n_cls, dtype=torch.long))
        self.lam, self.l1 = lam0.clone(), c.new_zeros(n_cls)
        self.lam0 = lam0.tolist()
        # no feature correlates (positively, with nonneg) with a class's labels: w = 0 for every μ
        self.live = [j for j in range(n_cls) if self.lam0[j] > 0]
        self.finished = lam0 <= 0
        self.entering: dict[int, int] = {j: int(first[j]) for j in self.live}
        self.dropped: dict[int, int] = {}
        self.next_mu, self.steps = [0] * n_cls, [0] * n_cls

    def _score(self) -> Tensor:
        return self.c if self.nonneg else self.c.abs()

    def run(self) -> tuple[Tensor, list[int]]:
        while self.live:
            d, slope = self._direction(*self._enter())
            self._segment(d, slope)
        return self.out, self.steps

    def _padded(self) -> tuple[Tensor, Tensor, Tensor]:
        """The active sets as C×K feature indices, their validity and their signs (0 in the padding)."""
        k = max([1, *map(len, self.active)])
        index = [a + [0] * (k - len(a)) for a in self.active]
        signs = [s + [0.0] * (k - len(s)) for s in self.signs]
        feats = torch.tensor(index, dtype=torch.long, device=self.c.device)
        valid = torch.tensor([[n < len(a) for n in range(k)] for a in self.active], device=self.c.device)
        return feats, valid, torch.tensor(signs, dtype=self.c.dtype, device=self.c.device)

    def _factor(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """The Cholesky factors of the padded ``G_AA`` (C×K×K) and their LAPACK ``info`` (0: positive definite),
        with the padded active sets."""
        feats, valid, s = self._padded()
        gram = self.columns.block[self.columns.slot[feats][:, :, None], feats[:, None, :]]
        pair = valid[:, :, None] & valid[:, None, :]
        eye = torch.eye(feats.shape[1], dtype=gram.dtype, device=gram.device).expand_as(gram)
        factor, info = torch.linalg.cholesky_ex(torch.where(pair, gram, eye))
        return factor, info, feats, valid, s

    def _enter(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Add each class's entering feature, unless it lies (to 1e-10 relative) in the span of the class's active
        features: its pivot in the Cholesky factor of ``G_AA`` (the Schur complement) would be ~0 or negative,
        and ``G_AA`` singular. It stays blocked either way. Returns the factors of the new active sets."""
        if not self.entering:
            factor, _, *padded = self._factor()
            return factor, *padded
        self.columns.fetch(list(self.entering.values()))
        cls, feats = (torch.tensor(v, device=self.c.device) for v in zip(*self.entering.items(), strict=True))
        self.blocked[feats, cls] = True
        for j, f, c_e in zip(self.entering, feats.tolist(), self.c[feats, cls].tolist(), strict=True):
            self.active[j].append(f)
            self.signs[j].append(1.0 if self.nonneg or c_e > 0 else -1.0)
        factor, info, *padded = self._factor()
        last = torch.tensor([len(self.active[j]) - 1 for j in self.entering], device=self.c.device)
        g_ee = self.columns.block[self.columns.slot[feats], feats]
        pivots = torch.stack([factor[cls, last, last].square(), g_ee, info[cls].to(g_ee.dtype)], 1).tolist()
        rejected = [
            j for j, (p2, g, fail) in zip(self.entering, pivots, strict=True) if fail or not 1e-10 * g < p2 or g <= 0
        ]
        for j in rejected:
            self.active[j].pop()
            self.signs[j].pop()
        self.entering = {}
        if rejected:
            factor, info, *padded = self._factor()
        return factor, *padded

    def _direction(self, factor: Tensor, feats: Tensor, valid: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        """Every class's segment direction ``d`` (m×C, zero off the active set) and ``sᵀd`` (C)."""
        d_act = torch.cholesky_solve(s[:, :, None], factor)[:, :, 0]
        cls = torch.arange(feats.shape[0], device=feats.device)[:, None].expand_as(feats)
        d = torch.zeros_like(self.w)
        d[feats[valid], cls[valid]] = d_act[valid]
        return d, (s * d_act).sum(1)

    def _segment(self, d: Tensor, slope: Tensor) -> None:
        """Follow every live class's segment to its next breakpoint, or to the μs inside it."""
        a, lam, c = self.columns.times(d), self.lam, self.c
        up = _entry(lam - c, 1 - a)  # a free feature enters when c_j − γa_j = ±(λ − γ)
        if not self.nonneg:
            up = torch.minimum(up, _entry(lam + c, 1 + a))
        up.masked_fill_(self.blocked, math.inf)
        if self.dropped:  # just left at |c_j| = λ: the γ = 0 root is that exit, not an entry; it may cross the
            cls = torch.tensor(list(self.dropped), device=d.device)  # other side within this segment
            feats = torch.tensor(list(self.dropped.values()), device=d.device)
            up[feats, cls] = _reentry(c[feats, cls], a[feats, cls], lam[cls], self.nonneg)
            self.dropped = {}
        down = torch.where(self.w * d < 0, -self.w / d, math.inf)  # an active weight reaches 0
        g_up, i_up = up.min(0)
        g_down, i_down = down.min(0)
        gamma = torch.minimum(torch.minimum(g_up, g_down), lam).masked_fill_(self.finished, 0)
        self.lam = lam - gamma
        rows = [g_up, g_down, gamma, self.l1, slope, self.lam, i_up.to(d.dtype), i_down.to(d.dtype)]
        stats = torch.stack(rows, 1).tolist()
        self._record(stats, d)
        self.w.addcmul_(d, gamma.expand_as(d))
        self.c.addcmul_(a, gamma.expand_as(a), value=-1)
        self.l1 = self.l1 + slope * gamma
        self._events(stats)

    def _record(self, stats: list[list[float]], d: Tensor) -> None:
        """Interpolate every requested μ inside this segment (``‖w_j + td‖₁ = l1 + t·sᵀd``); a class whose μs are
        all met is finished."""
        ks, js, ts = [], [], []
        for j in list(self.live):
            _, _, gamma, l1, slope, _, _, _ = stats[j]
            while self.next_mu[j] < len(self.mus) and l1 + slope * gamma >= self.mus[self.next_mu[j]]:
                ks.append(self.next_mu[j])
                js.append(j)
                ts.append((self.mus[self.next_mu[j]] - l1) / slope)
                self.next_mu[j] += 1
            if self.next_mu[j] == len(self.mus):
                self._finish(j)
        if ks:
            t = torch.tensor(ts, dtype=d.dtype, device=d.device)
            self.out[ks, :, js] = (self.w[:, js] + t * d[:, js]).T

    def _finish(self, j: int) -> None:
        self.live.remove(j)
        self.finished[j] = True
        self.active[j], self.signs[j] = [], []  # out of the padded solves

    def _events(self, stats: list[list[float]]) -> None:
        """What ends each live class's segment: λ at 0 or the step cap (finished: the rest of its μs lie beyond
        the least-squares solution), an active weight at 0 (that feature leaves) or a free feature at ±λ (it
        enters at the next round)."""
        leave: list[tuple[int, int]] = []
        for j in list(self.live):
            g_up, g_down, _, _, _, lam, i_up, i_down = stats[j]
            self.steps[j] += 1
            if lam <= 1e-14 * self.lam0[j] or self.steps[j] >= self.max_steps:
                self.out[self.next_mu[j] :, :, j] = self.w[:, j]
                self._finish(j)
            elif g_down <= g_up:
                leave.append((int(i_down), j))
            else:
                self.entering[j] = int(i_up)
        if leave:
            feats, cls = (torch.tensor(v, device=self.w.device) for v in zip(*leave, strict=True))
            self.w[feats, cls] = 0.0
            self.blocked[feats, cls] = False
        for f, j in leave:
            n = self.active[j].index(f)
            del self.active[j][n], self.signs[j][n]
            self.dropped[j] = f
            if not self.active[j]:  # back at w = 0 (a safety net: λ only falls): the strongest free feature enters
                score = torch.where(self.blocked[:, j], -math.inf, self._score()[:, j])
                score[f] = -math.inf
                self.entering[j] = int(score.argmax())


def _homotopy(
    X: Tensor, L: Tensor, mus: Sequence[float], nonneg: bool, max_steps: int | None
) -> tuple[Tensor, list[int], _GramColumns, Tensor, Tensor]:
    """:func:`homotopy_path`, also returning the cached Gram columns, ``X·Lᵀ`` and L in float64."""
    xt, lab = _check_problem(X, L, mus)
    order = sorted(range(len(mus)), key=lambda i: float(mus[i]))
    corr = xt.T @ lab.T
    columns = _GramColumns(xt)
    sorted_mus = [float(mus[i]) for i in order]
    path, steps = _LarsLasso(columns, corr, sorted_mus, nonneg, max_steps or 10 * xt.shape[1]).run()
    out = torch.empty_like(path)
    out[order] = path
    return out, steps, columns, corr, lab


def homotopy_path(
    X: Tensor, L: Tensor, mus: Sequence[float], nonneg: bool = False, max_steps: int | None = None
) -> tuple[Tensor, list[int]]:
    """The μ-lasso solutions at every μ of ``mus`` by one homotopy per class: (len(mus)×m×C, in the order of
    ``mus``; each class's breakpoints crossed). ``X`` m×N, ``L`` C×N, computed in float64 on their device. A μ
    path costs what its largest μ costs. ``max_steps`` caps each class's breakpoints (default 10·m)."""
    path, steps, *_ = _homotopy(X, L, mus, nonneg, max_steps)
    return path, steps


def lasso_path(
    X: Tensor, L: Tensor, mus: Sequence[float], nonneg: bool = False, tol: float = 1e-9, max_steps: int | None = None
) -> list[LassoResult]:
    """The μ-lasso at every μ of ``mus`` from one homotopy per class (:func:`homotopy_path`), each with its
    objective ``f = wᵀGw − 2wᵀXl + ‖l‖²``, duality gap and ``converged`` (every gap at most ``tol · max(f, ‖l‖²)``),
    in the order of ``mus``; ``G·w`` comes from the Gram columns the path computed."""
    path, steps, columns, xl, lab = _homotopy(X, L, mus, nonneg, max_steps)
    l2 = lab.square().sum(1)
    out = []
    for mu, w in zip(mus, path, strict=True):
        gw = columns.times(w)
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
        return _fista(X, L, mu, nonneg, W0, tol, max_iter)
    return lasso_path(X, L, [mu], nonneg, tol, max_iter)[0]
