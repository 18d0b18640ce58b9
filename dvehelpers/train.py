"""Training the an8Flower classifiers: deterministic, CPU-friendly, early stopping on validation accuracy.

``python -m dvehelpers train --variant single-6c --arch vgg`` trains one model and writes
``data/models/an8flower-<arch>-<variant>.pt`` with its metadata (``.json`` beside it).
"""

from __future__ import annotations

import copy
import json
import shlex
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import models
from .atomic import write_text
from .data import VARIANTS, An8Flower
from .devices import conv_layout
from .integrity import sha256
from .version import __version__

__all__ = [
    "train",
    "snapshots",
    "Snapshot",
    "logits",
    "predict",
    "probabilities",
    "accuracy",
    "model_name",
    "train_and_save",
]


def model_name(arch: str, variant: str) -> str:
    return f"an8flower-{arch}-{variant}"


@torch.no_grad()
def logits(model: nn.Module, images: Tensor, batch_size: int = 256) -> Tensor:
    """The logits (pre-softmax scores, N×K, on the CPU) with eval-mode semantics; the model's mode is restored."""
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    try:
        batches = (conv_layout(images[i : i + batch_size].to(dev)) for i in range(0, len(images), batch_size))
        return torch.cat([model(x).cpu() for x in batches])
    finally:
        model.train(was)


def probabilities(model: nn.Module, images: Tensor, batch_size: int = 256) -> Tensor:
    """Softmax class probabilities of every image (N×K, on the CPU), with eval-mode semantics."""
    return logits(model, images, batch_size).softmax(1)


def predict(model: nn.Module, images: Tensor, batch_size: int = 256) -> Tensor:
    """Top-1 class of every image (on the CPU), with eval-mode semantics (the model's mode is restored)."""
    return logits(model, images, batch_size).argmax(1)


@torch.no_grad()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 256) -> float:
    """Top-1 accuracy in eval mode (the model's mode is restored)."""
    return float((predict(model, images, batch_size) == labels.cpu()).float().mean())


@dataclass
class _Run:
    """One training run's state: model, data, optimiser and learning-rate schedule, and the shuffling generator."""

    model: nn.Module
    x: Tensor
    y: Tensor
    xv: Tensor
    yv: Tensor
    opt: torch.optim.Optimizer
    sched: Any
    g: torch.Generator
    batch_size: int
    loss: float = float("nan")

    def epoch(self, desc: str, progress: bool) -> Iterator[int]:
        """One epoch of Adam steps over a fresh shuffle; yields after every step (its index in the epoch)."""
        self.model.train()
        order = torch.randperm(len(self.y), generator=self.g).to(self.x.device)
        bar = tqdm(range(0, len(self.y), self.batch_size), desc=desc, disable=not progress, leave=False)
        for step, i in enumerate(bar):
            idx = order[i : i + self.batch_size]
            loss = F.cross_entropy(self.model(self.x[idx]), self.y[idx])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.loss = loss.item()
            bar.set_postfix(loss=f"{self.loss:.3f}")
            yield step
        self.sched.step()


def _start(
    variant: str,
    arch: str,
    seed: int,
    size: int,
    max_epochs: int,
    batch_size: int,
    lr: float,
    dev: torch.device,
    progress: bool,
    train_per_class: int | None = None,
) -> _Run:
    """The data (``train_per_class`` training images per class: None for the split's default), the freshly
    initialised model (``seed``), Adam and a cosine decay over ``max_epochs``."""
    per_class = {"train": train_per_class, "val": None}
    data = {
        s: An8Flower(variant, s, size=size, seed=seed, per_class=n, progress=progress).tensors()
        for s, n in per_class.items()
    }
    (x, y), (xv, yv) = (data["train"][:2], data["val"][:2])
    torch.manual_seed(seed)
    model = models.build(arch, VARIANTS[variant]).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    # cosine decay over max_epochs: large steps early, settled weights late (no BN in these nets)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max_epochs)
    g = torch.Generator().manual_seed(seed)
    return _Run(model, x.to(dev), y.to(dev), xv.to(dev), yv.to(dev), opt, sched, g, batch_size)


def train(
    variant: str,
    arch: str,
    seed: int = 0,
    size: int = 112,
    max_epochs: int = 20,
    batch_size: int = 32,
    lr: float = 1e-3,
    patience: int = 5,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train ``arch`` on ``variant`` (data seed ``seed``) with Adam; keep the best validation epoch.

    Adam with a cosine learning-rate decay over ``max_epochs``. Stops when validation accuracy has been
    100 % for two epochs, or after ``patience`` epochs without a better one. Returns the model (eval mode,
    on the CPU) and its metadata.
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    run = _start(variant, arch, seed, size, max_epochs, batch_size, lr, dev, progress)
    best, best_state, since, perfect, history = -1.0, None, 0, 0, []
    t0 = time.perf_counter()
    for epoch in range(max_epochs):
        for _ in run.epoch(f"{arch}/{variant} epoch {epoch + 1}", progress):
            pass
        val = accuracy(run.model, run.xv, run.yv)
        history.append({"epoch": epoch + 1, "loss": run.loss, "val_accuracy": val})
        if progress:
            print(f"{arch}/{variant} epoch {epoch + 1}: loss {run.loss:.4f}, val accuracy {val:.4f}")
        if val > best:
            best, since = val, 0
            best_state = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
        else:
            since += 1
        perfect = perfect + 1 if val == 1.0 else 0
        if perfect >= 2 or since >= patience:
            break
    assert best_state is not None
    model = run.model
    model.load_state_dict(best_state)
    model = model.eval().cpu()
    meta = {
        "arch": arch,
        "variant": variant,
        "data_seed": seed,
        "image_size": size,
        "epochs": len(history),
        "history": history,
        "train_seconds": round(time.perf_counter() - t0, 1),
        "lr": lr,
        "batch_size": batch_size,
        "device": str(dev),
    }
    return model, meta


@dataclass(frozen=True)
class Snapshot:
    """A copy of a model during training: after ``steps`` Adam steps, at validation accuracy ``val_accuracy``."""

    model: nn.Module
    steps: int
    val_accuracy: float


def snapshots(
    variant: str,
    arch: str,
    accuracies: Sequence[float],
    seed: int = 0,
    size: int = 112,
    check_every: int = 5,
    train_per_class: int | None = None,
    max_epochs: int = 20,
    batch_size: int = 32,
    lr: float = 1e-3,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> list[Snapshot]:
    """Copies of one training run — the recipe of :func:`train`, same seed, so the same trajectory — taken the first
    time the validation accuracy, measured every ``check_every`` steps, reaches each of ``accuracies`` (in [0, 1]).
    Training stops at the last one; a level never reached within ``max_epochs`` raises ``ValueError``. Models are in
    eval mode on the CPU. ``train_per_class`` sets the training split's size (None: its default, which
    ``DVE_QUICK=1`` shrinks to 20 per class — too few to reach 80 %). The an8Flower AlexNet-style net reaches 50 % and
    80 % within its first three epochs (seconds)."""
    levels = sorted(accuracies)
    if not levels or not all(0 < a <= 1 for a in levels):
        raise ValueError(f"accuracies must be in (0, 1], got {list(accuracies)}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    run = _start(variant, arch, seed, size, max_epochs, batch_size, lr, dev, progress, train_per_class)
    out: list[Snapshot] = []
    steps = 0
    for epoch in range(max_epochs):
        for _ in run.epoch(f"{arch}/{variant} epoch {epoch + 1}", progress):
            steps += 1
            if steps % check_every:
                continue
            val = accuracy(run.model, run.xv, run.yv)
            while levels and val >= levels[0]:
                levels.pop(0)
                out.append(Snapshot(copy.deepcopy(run.model).eval().cpu(), steps, val))
            if not levels:
                return out
    raise ValueError(f"{arch}/{variant} never reached validation accuracy {levels} in {max_epochs} epochs")


def train_and_save(variant: str, arch: str, seed: int = 0, out: Path | None = None, **kwargs: Any) -> Path:
    """Train, measure accuracy on every split and on a test split of another seed, save checkpoint + metadata."""
    model, meta = train(variant, arch, seed=seed, **kwargs)
    size = meta["image_size"]
    acc = {}
    for split in ("train", "val", "test"):
        x, y, _ = An8Flower(variant, split, size=size, seed=seed).tensors()
        acc[split] = accuracy(model, x, y)
    x, y, _ = An8Flower(variant, "test", size=size, seed=seed + 1).tensors()
    acc[f"test_seed{seed + 1}"] = accuracy(model, x, y)
    meta.update(
        accuracy=acc,
        version=__version__,
        command="python -m dvehelpers " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        if Path(sys.argv[0]).name == "__main__.py"
        else f"dvehelpers.train.train_and_save({variant!r}, {arch!r})",
    )
    out = out or models.checkpoints.MODEL_DIR
    path = models.save(model, Path(out) / f"{model_name(arch, variant)}.pt", arch, meta)
    write_text(path.with_suffix(".json"), json.dumps({**meta, "sha256": sha256(path)}, indent=1))
    return path
