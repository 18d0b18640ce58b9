"""Shared fixtures: small float64 networks of every supported shape, and seeded inputs."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision import models as tvm

import dvehelpers as dh


def seeded_images(seed: int, b: int = 2, size: int = 112, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g, dtype=dtype)


def small(arch: str, num_classes: int = 6, seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """A built network with non-trivial random weights (biases too, so ReLUs gate both ways)."""
    model = dh.models.build(arch, num_classes)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            fan_in = p[0].numel() if p.ndim > 1 else 1
            p.copy_(torch.randn(p.shape, generator=g) * (2.0 / fan_in) ** 0.5 + (0.05 if p.ndim == 1 else 0.0))
    return model.to(dtype).eval()


def split_at(model: nn.Module, index: int) -> tuple[nn.Sequential, nn.Sequential]:
    """A torchvision VGG / AlexNet cut after ``features[index]`` into (body, head), from its own modules: an
    independent forward to check a layer's signal with autograd (the node index of a layer inside ``features`` is
    its position there)."""
    assert isinstance(model, (tvm.VGG, tvm.AlexNet)) and 0 <= index < len(model.features)
    body = model.features[: index + 1]
    head = nn.Sequential(model.features[index + 1 :], model.avgpool, nn.Flatten(), model.classifier)
    return body, head


def fitted_interpretation(model: nn.Module, seed: int = 100, n: int = 24) -> object:
    """A vebi interpretation of ``model`` fitted on ``n`` seeded images with labels 0, 1, …, C−1, 0, 1, …"""
    from dvehelpers.methods import vebi

    dtype = next(model.parameters()).dtype
    labels = torch.arange(n) % dh.models.num_classes(model)
    # few images for ~1000 features: the solution is far from unique and FISTA slow to certify it; a looser
    # stop is enough here (tests of the solver itself live in test_vebi.py)
    images = seeded_images(seed, b=n, dtype=dtype)
    return vebi.fit(model, (images, labels), mu=5.0, progress=False, tol=1e-5, max_iter=1500)


def method_params(name: str, model: nn.Module) -> dict:
    """What a test of every method passes besides the defaults: vebi needs an interpretation of ``model``."""
    return {"interpretation": fitted_interpretation(model)} if name == "vebi" else {}


def snapshot(model: nn.Module) -> tuple:
    """Everything a method call must leave as it was: modes, requires_grad, grads, hook counts, weights."""
    return (
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        [p.grad for p in model.parameters()],
        [len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()],
        {k: v.clone() for k, v in model.state_dict().items()},
    )


def odd_sequential(dtype: torch.dtype = torch.float64) -> nn.Sequential:
    """Every other supported layer kind: batch norm, average pooling, dilation, groups, padding, nesting."""
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 8, 5, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True)),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=2),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Conv2d(8, 12, 3, stride=2, padding="valid"),
        nn.Identity(),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d((2, 2)),
        nn.Flatten(),
        nn.Dropout(0.3),
        nn.Linear(48, 5),
    )
    bn = model[0][1]
    with torch.no_grad():
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.1, 0.1)
    return model.to(dtype).eval()


@pytest.fixture(params=["vgg", "alexnet"])
def arch(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def model(arch: str) -> nn.Module:
    return small(arch)


@pytest.fixture
def images() -> torch.Tensor:
    return seeded_images(0, b=3)


# ---------------------------------------------------------------- comparing thresholded results across runs
#
# Two runs of one computation in float32 that differ only in batch size (or device) agree to rounding, not bit for
# bit: a convolution sums in another order. A heat value within rounding of a threshold can then land on either
# side of it, and an arg-max between two logits within rounding can go either way. Such comparisons are made only
# where the inputs decide them: maps to float tolerance, thresholded scores where no value is that close to a
# threshold, arg-maxes where the top two are farther apart than that.


def assert_iou_agrees(
    heat_a: torch.Tensor,
    heat_b: torch.Tensor,
    iou_a: torch.Tensor,
    iou_b: torch.Tensor,
    thresholds: torch.Tensor | None = None,
    tol: float = 1e-5,
    min_share: float = 0.5,
) -> None:
    """``heat_a`` ≈ ``heat_b`` within ``tol``, and their per-image IoU curves (``iou_a``, ``iou_b``, B×T) equal for
    every (image, threshold) pair at which no pixel of either normalised map lies within ``tol`` of the threshold
    (there the two maps threshold identically, so their IoUs must be equal). At least ``min_share`` of the pairs
    must be compared, so that the check cannot pass vacuously."""
    from dvehelpers.evaluate import THRESHOLDS

    torch.testing.assert_close(heat_a, heat_b, rtol=0, atol=tol)
    t = (THRESHOLDS if thresholds is None else thresholds).to(torch.float64)
    near = torch.zeros(iou_a.shape, dtype=torch.bool)
    for heat in (heat_a, heat_b):
        h = dh.maps.normalize(heat.double()).flatten(1).cpu()
        near |= ((h[:, :, None] - t[None, None, :]).abs() <= 2 * tol).any(1)
    decided = ~near
    assert decided.double().mean() >= min_share, f"only {int(decided.sum())} of {decided.numel()} pairs decided"
    assert torch.equal(iou_a.cpu()[decided], iou_b.cpu()[decided]), "IoUs differ where no value is near a threshold"


def decided_top1(logits: torch.Tensor, tol: float = 1e-4) -> torch.Tensor:
    """Per row, whether the top-1 class leads the runner-up by more than ``tol`` (an arg-max that rounding in
    another batch size cannot flip)."""
    top2 = logits.topk(2, dim=1).values
    return (top2[:, 0] - top2[:, 1]) > tol


@pytest.fixture(autouse=True, scope="session")
def shipped_files_untouched() -> Iterator[None]:
    """No test may write into the shipped checkpoints and interpretations (data/models): a test that patched the
    wrong name once refitted them in place. Their bytes are compared before and after the whole session."""
    root = Path(dh.models.checkpoints.MODEL_DIR)
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}
    yield
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}
    assert after == before, "a test changed the shipped files in data/models"


def export_folder(split: object, root: Path) -> Path:
    """A rendered split copied into an image folder with masks: ``root/<kk>_<class>/`` and ``<root>_MASK/…``."""
    for c, name in enumerate(split.classes):  # type: ignore[attr-defined]
        for it in (it for it in split.info if it["label"] == c):  # type: ignore[attr-defined]
            for tree, rel in ((root, it["image"]), (root.with_name(f"{root.name}_MASK"), it["mask"])):
                (tree / f"{c:02d}_{name}").mkdir(parents=True, exist_ok=True)
                shutil.copy(split.dir / rel, tree / f"{c:02d}_{name}" / Path(rel).name)  # type: ignore[attr-defined]
    return root
