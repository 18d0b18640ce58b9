"""The papers' experiments beyond the localisation score: the blur test, the ablation test and CPU time per image.

Babiker & Goebel (Fourier DVE, §4, Fig. 6) blur an image with a Gaussian of growing σ and report that "the
network is not able to predict the blurred images correctly … even though the network is looking at the right
region". :func:`blur_test` measures both halves of that sentence on a labelled set: when the prediction fails,
and how far the explanation has moved by then (IoU with the unblurred map, and with the mask).

Oramas et al. (the blog post's Figure 6 in `seeds/`) zero the filters their interpretation calls relevant and
compare the accuracy drop with zeroing as many random filters. :func:`ablate` does the zeroing on a copy;
:func:`ablation_test` runs the comparison over seeds, on all feature layers or on the convolutional ones alone.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..engine import capture
from ..maps import THRESHOLDS, gaussian_blur, normalize
from ..models import resolve_layer
from ..train import predict
from .iou import heatmaps, per_image_iou

__all__ = [
    "gaussian_blur",
    "map_iou",
    "BlurTest",
    "blur_test",
    "ablate",
    "balanced_accuracy",
    "Ablation",
    "ablation_test",
    "stride_grid",
    "median_seconds",
]


def map_iou(a: Tensor, b: Tensor, thresholds: Tensor | None = None) -> Tensor:
    """How much two heatmaps of each image agree: the IoU of ``{a ≥ τ}`` and ``{b ≥ τ}`` averaged over the
    evaluation's thresholds (B). Both empty at a threshold counts as agreement (1), one empty as 0.

    Vectorised like :func:`dvehelpers.evaluate.per_image_iou`: each pixel gets the pair of threshold levels
    it reaches in ``a`` and ``b``, and a B×(T+1)×(T+1) joint histogram gives every area at once.
    """
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"a and b must be B×H×W of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    t = (THRESHOLDS if thresholds is None else torch.as_tensor(thresholds, dtype=torch.float64)).to(a.device)
    t = t.sort().values
    n = t.numel() + 1
    la = torch.bucketize(normalize(a.double()).flatten(1), t, right=True)
    lb = torch.bucketize(normalize(b.double()).flatten(1), t, right=True)
    joint = torch.zeros(a.shape[0], n * n, dtype=torch.float64, device=a.device)
    joint.scatter_add_(1, la * n + lb, torch.ones_like(la, dtype=torch.float64))
    at_least = joint.view(-1, n, n).flip(1, 2).cumsum(1).cumsum(2).flip(1, 2)  # [i, j]: la ≥ i and lb ≥ j
    k = torch.arange(1, n, device=a.device)
    inter, area_a, area_b = at_least[:, k, k], at_least[:, k, 0], at_least[:, 0, k]
    union = area_a + area_b - inter
    return torch.where(union > 0, inter / union.clamp_min(1), 1.0).mean(1)


@dataclass
class BlurTest:
    """:func:`blur_test`'s result. ``sigmas`` (S) in pixels; per blur level and image (S×N): ``correct``
    (prediction = label), ``same_map`` (:func:`map_iou` with the unblurred map) and ``mask_iou`` (the
    evaluation's mean IoU with the ground-truth mask)."""

    sigmas: Tensor
    correct: Tensor
    same_map: Tensor
    mask_iou: Tensor

    def accuracy(self) -> Tensor:
        """Fraction of images classified correctly at each σ (S)."""
        return self.correct.double().mean(1)

    def flip_index(self) -> Tensor:
        """Per image, the index of the first σ at which the prediction is wrong; ``len(sigmas)`` if never."""
        wrong = ~self.correct
        first = wrong.double().argmax(0)
        return torch.where(wrong.any(0), first, len(self.sigmas))

    def at_flip(self) -> Tensor:
        """``same_map`` of every image at its first wrong σ (NaN for images that never flip)."""
        idx = self.flip_index()
        padded = torch.cat([self.same_map, self.same_map.new_full((1, self.same_map.shape[1]), math.nan)])
        return padded.gather(0, idx[None])[0]


def blur_test(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    masks: Tensor | None,
    sigmas: Sequence[float],
    method: str,
    params: Mapping[str, Any] | None = None,
    batch_size: int = 32,
    progress: bool = False,
) -> BlurTest:
    """The blur experiment (Fourier DVE's Fig. 6) on a labelled set: at every σ (pixels) the prediction and
    ``method``'s map (for the predicted class of the blurred image) against the unblurred map and the mask.
    Photos have no mask: with ``masks=None`` the mask IoU is NaN (and the label can be the unblurred top-1 class,
    so that "correct" reads "the prediction has not changed")."""
    dev = next(model.parameters()).device
    labels = labels.to(dev)
    masks = None if masks is None else masks.to(dev)
    base = heatmaps(model, images, method, params, batch_size=batch_size)
    correct, same, mask_iou = [], [], []
    for sigma in tqdm(list(sigmas), desc=f"blur: {method}", unit="σ", disable=not progress):
        blurred = gaussian_blur(images.to(dev), float(sigma))
        heat = heatmaps(model, blurred, method, params, batch_size=batch_size)
        correct.append(predict(model, blurred, batch_size).to(dev) == labels)
        same.append(map_iou(heat, base))
        mask_iou.append(
            per_image_iou(heat, masks).mean(1) if masks is not None else heat.new_full((len(heat),), math.nan)
        )
    return BlurTest(torch.as_tensor(list(sigmas), dtype=torch.float64), *map(torch.stack, (correct, same, mask_iou)))


def ablate(model: nn.Module, units: Sequence[tuple[str, int]]) -> nn.Module:
    """A copy of ``model`` in which every unit (``layer``, ``channel``) — an activation output, as the features of
    :mod:`dvehelpers.methods.vebi` name them — is zero for every input: the filter (weights and bias) of the
    convolution or linear layer feeding that activation is zeroed, and so is the channel of a batch norm folded
    into it. ``model`` itself is left unchanged."""
    out = copy.deepcopy(model)
    graph = capture(out)
    with torch.no_grad():
        for layer, channel in units:
            node = graph.nodes[resolve_layer(out, layer)]
            source = graph.nodes[node.inputs[0]] if node.inputs and node.inputs[0] >= 0 else None
            # zero filter and bias -> zero pre-activation -> zero output (nothing else may sit between them)
            if node.kind not in ("relu", "relu6") or source is None or source.kind not in ("conv", "linear"):
                raise ValueError(f"{layer} is not a ReLU right after a convolution or linear layer; ablate those")
            assert source.weights is not None
            weight = getattr(source.weights.module, source.weights.weight)
            if not 0 <= channel < weight.shape[0]:
                raise ValueError(f"channel {channel} out of range for {layer} with {weight.shape[0]} channels")
            weight[channel] = 0
            if source.weights.bias is not None:
                getattr(source.weights.module, source.weights.bias)[channel] = 0
            if source.weights.fold is not None:  # γ = β = 0: the folded batch norm's output is 0 too
                source.weights.fold.weight[channel] = 0
                source.weights.fold.bias[channel] = 0
    return out


def balanced_accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 256) -> float:
    """Mean per-class accuracy (the paper's "mean classification accuracy"): accuracy within each class present
    in ``labels``, averaged over those classes."""
    pred, labels = predict(model, images, batch_size), labels.cpu()
    classes = labels.unique()
    return float(torch.stack([(pred[labels == c] == c).double().mean() for c in classes]).mean())


@dataclass
class Ablation:
    """:func:`ablation_test`'s answer for one pool of filters (``scope``: ``"all"`` feature layers or ``"conv"``
    only): the intact model's balanced accuracy, the drop when the ``n`` relevant filters are zeroed, and the
    drops for ``n`` random filters of the same pool, one per seed."""

    scope: str
    n: int
    baseline: float
    relevant: float
    random: Tensor

    @property
    def random_mean(self) -> float:
        return float(self.random.mean())

    @property
    def random_std(self) -> float:
        return float(self.random.std()) if len(self.random) > 1 else 0.0


def ablation_test(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    interpretation: Any,
    seeds: int = 10,
    scopes: Sequence[str] = ("all", "conv"),
    progress: bool = False,
) -> dict[str, Ablation]:
    """Oramas et al.'s ablation (§4.2): zero the relevant filters of ``interpretation`` (the union over classes
    of the non-zero rows of W), and ``seeds`` times as many filters drawn uniformly at random from the same
    pool; report the drop in balanced accuracy on (``images``, ``labels``). ``scope="conv"`` restricts both the
    relevant and the random filters to convolutional layers (the paper's second setting)."""
    layout, nodes = interpretation.layout, capture(model).nodes
    conv_layers = {n.name for n in nodes if n.inputs and n.inputs[0] >= 0 and nodes[n.inputs[0]].kind == "conv"}
    relevant = (interpretation.W != 0).any(1).nonzero()[:, 0].tolist()
    base = balanced_accuracy(model, images, labels)
    out = {}
    for scope in scopes:
        if scope not in ("all", "conv"):
            raise ValueError(f"scope must be 'all' or 'conv', got {scope!r}")
        pool = [n for n in range(layout.size) if scope == "all" or layout.locate(n)[0] in conv_layers]
        allowed = set(pool)
        chosen = [n for n in relevant if n in allowed]
        drop = base - balanced_accuracy(ablate(model, [layout.locate(n) for n in chosen]), images, labels)
        drops = []
        for seed in tqdm(range(seeds), desc=f"ablation ({scope})", disable=not progress):
            g = torch.Generator().manual_seed(seed)
            pick = [pool[int(j)] for j in torch.randperm(len(pool), generator=g)[: len(chosen)]]
            drops.append(base - balanced_accuracy(ablate(model, [layout.locate(n) for n in pick]), images, labels))
        out[scope] = Ablation(scope, len(chosen), base, drop, torch.tensor(drops, dtype=torch.float64))
    return out


def stride_grid(maps: Tensor, stride: int, border: int = 8) -> Tensor:
    """How strongly B×H×W ``maps`` repeat with period ``stride`` (the checkerboard a strided transposed convolution
    leaves): average the interior (``border`` pixels cut) over each of the stride×stride phases, and return the
    standard deviation of those phase means over their mean magnitude, per map. 0 without such a grid; NaN for an
    empty map."""
    if maps.ndim != 3 or stride < 2 or 2 * border >= min(maps.shape[-2:]):
        raise ValueError(
            f"need B×H×W maps, a stride >= 2 and a border below half the size; got "
            f"{tuple(maps.shape)}, stride {stride}, border {border}"
        )
    inner = maps[:, border : maps.shape[1] - border, border : maps.shape[2] - border]
    h, w = (inner.shape[1] // stride) * stride, (inner.shape[2] // stride) * stride
    phases = inner[:, :h, :w].reshape(len(maps), h // stride, stride, w // stride, stride).mean((1, 3)).flatten(1)
    scale = phases.abs().mean(1)
    return torch.where(scale > 0, phases.std(1) / torch.where(scale > 0, scale, 1), math.nan)


def _sync() -> None:
    if torch.cuda.is_available():  # GPU work is asynchronous: wait for it inside the timed interval
        torch.cuda.synchronize()


def median_seconds(jobs: Mapping[str, Callable[[], object]], repeats: int = 5) -> dict[str, float]:
    """Median wall-clock seconds of each job over ``repeats`` interleaved rounds, after one warm-up round."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    times: dict[str, list[float]] = {name: [] for name in jobs}
    for fn in jobs.values():
        fn()
    for _ in range(repeats):
        for name, fn in jobs.items():
            _sync()
            start = time.perf_counter()
            fn()
            _sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}
