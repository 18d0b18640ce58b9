"""The μ-lasso of Oramas et al. (ICLR 2019, step 3 of their interpretation): for every class j,

    w_j* = argmin_w ‖Xᵀw − l_j‖²   s.t.  ‖w‖₁ ≤ μ,

with ``X ∈ R^{m×N}`` (one column of features per training image) and one-hot labels ``L ∈ {0,1}^{C×N}``: C
independent constrained least-squares problems, solved together by accelerated projected gradient (FISTA with
adaptive restart) with the exact sort-based projection onto the L1 ball (Duchi et al., ICML 2008).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["project_l1", "lasso_objective", "duality_gap", "LassoResult", "mu_lasso"]


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
