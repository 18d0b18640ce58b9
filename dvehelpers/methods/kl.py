"""KL-divergence Deep Visual Explanation (Babiker & Goebel, NIPS 2017 Interpretable ML Symposium).

One forward pass gives the logits ``k ∈ R^K`` and the activations ``X`` of the explained layer. Then

* eq. 1 — ``Q``: Student-t joint probabilities of the scores,
  ``q_ij = (1 + (k_i − k_j)²)⁻¹ / Σ_{u≠v} (1 + (k_u − k_v)²)⁻¹``, ``q_ii = 0``;
* ``P``: t-SNE input affinities of the ground truth ``g`` (one-hot of the target class): Gaussian conditionals
  ``p_{j|i} ∝ exp(−β_i (g_i − g_j)²)`` with ``β_i`` bisected to the requested perplexity, symmetrised
  ``P = (P_cond + P_condᵀ) / 2K``;
* ``z = ∂KL(P‖Q)/∂k``, the t-SNE gradient ``z_i = 4 Σ_j (p_ij − q_ij)(k_i − k_j)(1 + (k_i − k_j)²)⁻¹``
  (exactly the derivative of ``Σ p_ij log(p_ij / q_ij)``);
* eq. 2 — ``α = (z − mean z) / std z``;
* eq. 3 — the map, by ``reading`` (METHODS.md §1):
  ``"literal"`` ``E = Σ_i Σ_j x_i |α_j| = (Σ_j |α_j|) · Σ_i x_i``: the channel sum of ``X`` times a scalar — after
  normalisation the map does not depend on the class (a finding about the paper, shown in notebook 01);
  ``"gradient"`` the KL loss back-propagated to ``X``, ``Z`` standardised over all its entries, channel weights
  ``w_i = mean_hw |Z_i|``, ``E = Σ_i w_i x_i``; ``"elementwise"`` ``E = Σ_i x_i ⊙ |Z_i|``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..engine import GRADIENT, capture, pool5_layer, propagate, resolve
from ..maps import normalize, upsample
from ..registry import Param, register
from .base import conv_maps, forward

__all__ = [
    "student_t_q",
    "tsne_p",
    "kl_gradient",
    "standardize",
    "KLIntermediates",
    "kl_intermediates",
    "kl_dve",
    "READINGS",
    "BISECTION_CAP",
    "default_pool_layer",
    "row_perplexity",
    "PerplexitySearch",
    "ZShares",
    "z_shares",
]

READINGS = ("literal", "gradient", "elementwise")
#: Bisection steps of the reference t-SNE code (``x2p``); a row still off target then is reported, not retried.
BISECTION_CAP = 50
_TOL = 1e-5


def _student_t(k: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Differences ``k_i − k_j``, the kernel ``(1 + (k_i − k_j)²)⁻¹`` with a zero diagonal, and ``Q`` (eq. 1)."""
    diff = k[:, :, None] - k[:, None, :]
    if k.requires_grad and torch.is_grad_enabled():  # differentiable (tests, users): no in-place steps
        kernel = (1 + diff.square()).reciprocal() * (1 - torch.eye(k.shape[1], dtype=k.dtype, device=k.device))
    else:
        kernel = diff.square().add_(1).reciprocal_()
        kernel.diagonal(dim1=1, dim2=2).zero_()
    return diff, kernel, kernel / kernel.sum((1, 2), keepdim=True)


def student_t_q(k: Tensor) -> Tensor:
    """Eq. 1: the B×K×K Student-t joint probabilities of the logits ``k`` (B×K), zero diagonal."""
    return _student_t(k)[2]


@dataclass
class PerplexitySearch:
    """The bisection's outcome per row: precision ``beta``, achieved ``perplexity``, ``converged`` flag."""

    beta: Tensor
    perplexity: Tensor
    converged: Tensor
    iterations: int


def _row_entropy(x: Tensor, beta: Tensor, skip_self: bool = True) -> tuple[Tensor, Tensor]:
    """Conditionals ``p_{j|i} ∝ exp(−β_i x_ij)`` over j ≠ i (``skip_self``) and their entropies (nats).

    ``x`` is the distance minus its row minimum (so ≥ 0 and 0 at the nearest points): the log-normaliser then
    lies in [0, log K] and ``H_i = log Z_i + β_i Σ_j p_{j|i} x_ij`` has no cancellation, even at β = 2⁵⁰.
    """
    logits = x * -beta[..., None]
    if skip_self:
        logits.diagonal(dim1=-2, dim2=-1).fill_(-math.inf)
    log_z = logits.logsumexp(-1, keepdim=True)
    p = logits.sub_(log_z).exp_()
    return p, log_z[..., 0] + beta * (p * x).sum(-1)


def _shifted(d: Tensor) -> tuple[Tensor, Tensor]:
    """``d`` minus its off-diagonal row minimum (diagonal set to 0), and the number of nearest points per row."""
    x = d.clone()
    x.diagonal(dim1=1, dim2=2).fill_(math.inf)
    x.sub_(x.amin(-1, keepdim=True))
    nearest = (x == 0).sum(-1)
    x.diagonal(dim1=1, dim2=2).zero_()
    return x, nearest


def tsne_p(g: Tensor, perplexity: float, cap: int = BISECTION_CAP) -> tuple[Tensor, PerplexitySearch]:
    """t-SNE input affinities ``P`` (B×K×K) of the ground-truth vectors ``g`` (B×K), and the search report.

    Every row's ``β_i`` is bisected as in the reference code (start 1, double or halve until bracketed,
    at most ``cap`` steps) so that ``exp H(P_i) = perplexity`` (H in nats; 2^H in bits). A row's
    perplexity can only lie between its value at ``β → ∞`` (the number of nearest neighbours) and at
    ``β = 0`` (K − 1); outside that range the bisection would only double (or halve) ``β`` until the cap,
    so such rows are set to that end point at once and reported as not converged — for a one-hot ``g``
    this is every row unless ``perplexity`` is in [K − 2, K − 1].
    """
    b, k = g.shape
    x, nearest = _shifted((g[:, :, None] - g[:, None, :]).square_())  # nearest: the β → ∞ perplexity
    target = math.log(perplexity)
    h_flat = math.log(k - 1)  # β = 0: uniform over the K − 1 others, whatever the distances
    too_low = target < nearest.log() - _TOL
    too_high = torch.full_like(too_low, target > h_flat + _TOL)
    beta = torch.ones(b, k, dtype=g.dtype, device=g.device)
    beta = torch.where(too_low, 2.0**cap, torch.where(too_high, 2.0**-cap, beta))
    active = ~(too_low | too_high)
    lo = torch.full_like(beta, -math.inf)
    hi = torch.full_like(beta, math.inf)
    steps = 0
    while steps < cap and active.any():
        steps += 1
        _, h = _row_entropy(x, beta)
        diff = h - target
        active = active & (diff.abs() >= _TOL)
        up = active & (diff > 0)  # too flat: raise β
        down = active & (diff <= 0)
        lo = torch.where(up, beta, lo)
        hi = torch.where(down, beta, hi)
        beta = torch.where(up, torch.where(hi.isinf(), beta * 2, (beta + hi) / 2), beta)
        beta = torch.where(down, torch.where(lo.isinf(), beta / 2, (beta + lo) / 2), beta)
    p_cond, h = _row_entropy(x, beta)
    converged = (h - target).abs() < _TOL
    p = (p_cond + p_cond.transpose(1, 2)) / (2 * k)
    return p, PerplexitySearch(beta, h.exp(), converged, steps)


def row_perplexity(g: Tensor, row: int, betas: Tensor) -> Tensor:
    """Perplexity ``exp H`` of the conditional ``p_{j|row}`` of one ground-truth vector ``g`` (K) at each β."""
    d = torch.cat([g[:row], g[row + 1 :]]).sub(g[row]).square()
    _, h = _row_entropy((d - d.min()).expand(len(betas), -1), betas.to(g.dtype), skip_self=False)
    return h.exp()


def kl_gradient(p: Tensor, k: Tensor) -> Tensor:
    """``z = ∂KL(P‖Q)/∂k`` in closed form: ``4 Σ_j (p_ij − q_ij)(k_i − k_j)(1 + (k_i − k_j)²)⁻¹``."""
    return _kl_gradient(p, *_student_t(k))


def _kl_gradient(p: Tensor, diff: Tensor, kernel: Tensor, q: Tensor) -> Tensor:
    return 4 * (p - q).mul_(diff).mul_(kernel).sum(-1)


def standardize(z: Tensor) -> Tensor:
    """Eq. 2: zero mean and unit (population) standard deviation over all but the batch dimension."""
    flat = z.flatten(1)
    std = flat.std(1, unbiased=False, keepdim=True)
    out = (flat - flat.mean(1, keepdim=True)) / torch.where(std > 0, std, 1)
    return out.view_as(z)


@dataclass
class KLIntermediates:
    """Everything Algorithm 1 computes for a batch, for plots: logits, ``g``, ``P``, ``Q``, ``z``, ``α``."""

    logits: Tensor
    targets: Tensor
    g: Tensor
    P: Tensor
    Q: Tensor
    z: Tensor
    alpha: Tensor
    search: PerplexitySearch


def _perplexity(perplexity: float | None, k: int) -> float:
    if perplexity is None:  # t-SNE's 30 needs more than 30 classes; an8Flower has 6 or 12
        return 30.0 if k > 60 else k / 2
    if not 0 < perplexity < k:
        raise ValueError(f"perplexity must be in (0, K) = (0, {k}) for a model with {k} classes, got {perplexity}")
    return float(perplexity)


def kl_intermediates(logits: Tensor, targets: Tensor, perplexity: float | None = None) -> KLIntermediates:
    """Eqs. 1–2 for a batch of logits and explained classes (one-hot ground truth)."""
    k = logits.shape[1]
    g = torch.zeros_like(logits).scatter_(1, targets[:, None], 1.0)
    p, search = tsne_p(g, _perplexity(perplexity, k))
    diff, kernel, q = _student_t(logits)
    z = _kl_gradient(p, diff, kernel, q)
    return KLIntermediates(logits, targets, g, p, q, z, standardize(z), search)


@dataclass
class ZShares:
    """Where ``z`` puts its weight, per image: the ``closest`` pair of logits (B×2 class indices) and the
    fractions of ``Σ|z|`` on that pair (``pair``) and on the explained class (``target``)."""

    closest: Tensor
    pair: Tensor
    target: Tensor


def z_shares(steps: KLIntermediates) -> ZShares:
    """How concentrated ``z`` is. Q's kernel ``(1 + (k_i − k_j)²)⁻¹`` has width 1, so when the logits are
    spread over tens of units ``Q`` (and with it ``z``) sits on the closest pair of logits, which need not
    contain the explained class; ``P`` of a one-hot label is nearly flat and cannot compete."""
    k = steps.logits.shape[1]
    gap = (steps.logits[:, :, None] - steps.logits[:, None, :]).abs()
    gap.diagonal(dim1=1, dim2=2).fill_(math.inf)
    flat = gap.flatten(1).argmin(1)
    closest = torch.stack([flat // k, flat % k], 1)
    mass = steps.z.abs()
    total = mass.sum(1).clamp_min(torch.finfo(mass.dtype).tiny)
    return ZShares(
        closest, mass.gather(1, closest).sum(1) / total, mass.gather(1, steps.targets[:, None])[:, 0] / total
    )


def default_pool_layer(model: nn.Module, size: tuple[int, int] = (224, 224)) -> str:
    """The last pooling layer before the classifier (``pool5`` of VGG and AlexNet); for networks that end in global
    average pooling (ResNet, EfficientNet …), which have none, the last layer with a spatial map."""
    graph = capture(model)
    return graph.nodes[pool5_layer(graph, size)].name


@register(
    "kl_dve",
    params=[
        Param(
            "layer",
            None,
            "explained layer (None: the last pooling layer, pool5; the last spatial layer of a net without one)",
            kind="layer",
        ),
        Param(
            "perplexity",
            None,
            "t-SNE perplexity of P (None: 30, or K/2 for K ≤ 60 classes; a one-hot label reaches only K−2…K−1)",
            range=(0.5, 999),
        ),
        Param(
            "reading",
            "literal",
            "eq. 3 as printed ('literal'), or class-specific 'gradient'/'elementwise'",
            "choice",
            READINGS,
        ),
        Param(
            "temperature",
            1.0,
            "Q and z are computed from k / temperature (1: the paper; ours, to study the logit scale)",
            range=(0.1, 1000.0),
            log=True,
        ),
    ],
    paper="Babiker & Goebel 2017 (KL-divergence DVE)",
    class_specific=True,
)
def kl_dve(
    model: nn.Module,
    images: Tensor,
    target: Any = None,
    *,
    layer: str | int | None = None,
    perplexity: float | None = None,
    reading: str = "literal",
    temperature: float = 1.0,
) -> Tensor:
    """KL-divergence DVE: eq. 3 over the layer's maps with α from the KL(P‖Q) gradient (eqs. 1–2).

    ``temperature`` T divides the logits before eq. 1 (not in the paper, whose T is 1): Q's Student-t
    kernel has a fixed width of 1, so the scale of k decides which pairs of classes dominate z. The gradient
    w.r.t. k itself is z / T, a factor that standardisation removes.
    """
    graph = capture(model)
    size = tuple(images.shape[-2:])
    index = pool5_layer(graph, size, images.shape[1]) if layer is None else resolve(graph, layer)
    rules = () if reading == "literal" else GRADIENT
    trace, targets = forward(model, images, target, rules=rules, keep=[index], down_to=index)
    x = conv_maps(trace, index, "KL-DVE")
    kl = kl_intermediates(trace.logits / temperature, targets, perplexity)
    if perplexity is not None and not kl.search.converged.all():  # the default's shortfall is by design (doc)
        warnings.warn(
            f"t-SNE perplexity {_perplexity(perplexity, trace.logits.shape[1])} is unreachable for "
            f"{int((~kl.search.converged).sum())} of {kl.search.converged.numel()} rows of P (one-hot ground "
            f"truth); their β stopped at the bisection's end point after at most {BISECTION_CAP} steps",
            stacklevel=4,
        )
    if reading == "literal":
        emap = kl.alpha.abs().sum(1)[:, None, None] * x.sum(1)
    else:
        z = standardize(propagate(trace, kl.z, GRADIENT, to=index))
        emap = (z.abs().mean((2, 3))[:, :, None, None] * x).sum(1) if reading == "gradient" else (x * z.abs()).sum(1)
    return normalize(upsample(emap, images.shape[-2:]))
