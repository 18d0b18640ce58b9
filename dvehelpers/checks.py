"""Input validation shared by every method, and the guarantee that a call leaves no trace on the model."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

__all__ = ["check_images", "resolve_targets", "check_targets", "preserved"]


def _reference_param(model: nn.Module) -> Tensor | None:
    return next(iter(model.parameters()), None)


def check_images(model: nn.Module, images: object) -> Tensor:
    """A float B×C×H×W tensor, finite, on the model's device and in its dtype — or a clear error."""
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor of shape B×C×H×W, got {type(images).__name__}")
    if images.ndim != 4:
        hint = " (for one image use images.unsqueeze(0))" if images.ndim == 3 else ""
        raise ValueError(f"images must have shape B×C×H×W, got {tuple(images.shape)}{hint}")
    if not images.is_floating_point():
        raise TypeError(f"images must be a floating-point tensor, got {images.dtype}")
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch (B = 0)")
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first_conv is not None and images.shape[1] != first_conv.in_channels:
        raise ValueError(
            f"images have {images.shape[1]} channels; the model's first convolution takes {first_conv.in_channels}"
        )
    p = _reference_param(model)
    if p is not None and images.device != p.device:
        raise ValueError(f"images are on {images.device} but the model is on {p.device}; move one of them")
    if p is not None and images.dtype != p.dtype:
        raise TypeError(f"images are {images.dtype} but the model's weights are {p.dtype}")
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN or infinite values")
    return images


def resolve_targets(target: int | Sequence[int] | Tensor | None, logits: Tensor) -> Tensor:
    """The explained class of every image: top-1 (None), one int for all, or one per image."""
    if target is None:
        return logits.argmax(1)
    return check_targets(target, *logits.shape, device=logits.device)


def check_targets(target: int | Sequence[int] | Tensor, b: int, k: int, device: torch.device) -> Tensor:
    """``target`` as a LongTensor of ``b`` class indices in 0..k−1, or a clear error (without any logits:
    class-agnostic methods check the classes they are asked about without running the classifier)."""
    if isinstance(target, bool) or (isinstance(target, Tensor) and target.dtype == torch.bool):
        raise TypeError("target must be None, an int or a LongTensor of class indices, not a bool")
    if isinstance(target, int):
        t = torch.full((b,), target, dtype=torch.long, device=device)
    elif isinstance(target, Tensor):
        if target.is_floating_point() or target.is_complex():
            raise TypeError(f"target must hold integer class indices, got {target.dtype}")
        t = target.to(device=device, dtype=torch.long).reshape(-1)
        if t.numel() == 1:
            t = t.expand(b)
    elif isinstance(target, Sequence) and all(isinstance(v, int) and not isinstance(v, bool) for v in target):
        t = torch.tensor(list(target), dtype=torch.long, device=device)
    else:
        raise TypeError(f"target must be None, an int or a LongTensor of B class indices, got {target!r}")
    if t.numel() != b:
        raise ValueError(f"target has {t.numel()} entries for a batch of {b} images")
    bad = (t < 0) | (t >= k)
    if bad.any():
        raise ValueError(f"class index {int(t[bad][0])} out of range: the model has {k} classes (0..{k - 1})")
    return t


@contextmanager
def preserved(model: nn.Module) -> Iterator[None]:
    """Restore every module's train/eval mode, ``requires_grad`` flags and ``.grad`` on exit, even on error.

    The engine changes none of these itself; this is the contract's safety net for every method.
    """
    modes = [(m, m.training) for m in model.modules()]
    params = [(p, p.requires_grad, p.grad) for p in model.parameters()]
    hooks = [(m, dict(m._forward_hooks), dict(m._forward_pre_hooks), dict(m._backward_hooks)) for m in model.modules()]
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
        for p, flag, grad in params:
            if p.requires_grad != flag:
                p.requires_grad_(flag)
            if p.grad is not grad:
                p.grad = grad
        for m, fwd, pre, bwd in hooks:
            for store, before in (
                (m._forward_hooks, fwd),
                (m._forward_pre_hooks, pre),
                (m._backward_hooks, bwd),
            ):
                for key in [k for k in store if k not in before]:
                    del store[key]
