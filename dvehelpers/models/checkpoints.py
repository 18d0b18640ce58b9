"""Checkpoints: safe loading (``weights_only``), atomic saving, and torchvision's ImageNet weights when present.

Checkpoints are read with ``torch.load(weights_only=True)``; a corrupt, unsafe or mismatched file gets a clear
error. ImageNet weights for VGG-16 and AlexNet are taken from the torch hub cache (or a path) and never downloaded.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision import models as tvm

from ..atomic import save as atomic_save
from .builders import build

__all__ = ["MODEL_DIR", "load", "save", "has_weights", "how_to_get", "num_classes", "without_inplace"]

#: Shipped an8Flower checkpoints live here (``DVE_MODELS`` overrides).
MODEL_DIR = Path(os.environ.get("DVE_MODELS", Path(__file__).resolve().parents[2] / "data" / "models"))

_IMAGENET = {
    "vgg16": (tvm.VGG16_Weights.IMAGENET1K_V1, "vgg16"),
    "alexnet-imagenet": (tvm.AlexNet_Weights.IMAGENET1K_V1, "alexnet-imagenet"),
}


def save(model: nn.Module, path: str | os.PathLike, arch: str, meta: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint atomically (temporary file, then rename) that :func:`load` reads back."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"arch": arch, "num_classes": num_classes(model), "state_dict": model.state_dict(), "meta": meta or {}}
    return atomic_save(blob, path)


def num_classes(model: nn.Module) -> int:
    """The number of classes: the output width of the model's last linear layer."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no linear classifier layer")
    return linears[-1].out_features


def without_inplace(model: nn.Module) -> nn.Module:
    """A deep copy whose activations are not in place (hook-based peer libraries need that; dvehelpers does not)."""
    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(getattr(m, "inplace", None), bool):
            m.inplace = False  # type: ignore[assignment]
    return model


def load(name_or_path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Load a model by name (``"an8flower-vgg-single-6c"``, ``"vgg16"``, ``"alexnet-imagenet"``) or file.

    Checkpoints are read with ``torch.load(weights_only=True)``. ImageNet weights are taken from the
    torch hub cache (or a file path given here); they are never downloaded.
    """
    key = str(name_or_path)
    if key in _IMAGENET:
        return _load_imagenet(key, None, map_location)
    path = Path(key)
    if not path.suffix and not path.exists():
        path = MODEL_DIR / f"{key}.pt"
        if not path.exists():
            shipped = sorted(p.stem for p in MODEL_DIR.glob("*.pt")) if MODEL_DIR.is_dir() else []
            raise FileNotFoundError(
                f"no model named {key!r}; valid names: {', '.join([*shipped, *_IMAGENET]) or '(none)'}"
                f", or a path to a checkpoint file"
            )
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    blob = _read(path, map_location)
    if isinstance(blob, dict) and {"arch", "num_classes", "state_dict"} <= blob.keys():
        model = build(blob["arch"], int(blob["num_classes"]))
        _load_state(model, blob["state_dict"], path)
        model.meta = dict(blob.get("meta", {}))  # type: ignore[attr-defined]
        return model.eval()
    # A bare state dict: an ImageNet file such as vgg16-397923af.pth given by path.
    for arch in _IMAGENET:
        if isinstance(blob, dict) and _fits(_skeleton(arch), blob):
            return _load_imagenet(arch, path, map_location)
    raise ValueError(
        f"{path} is not a dvehelpers checkpoint (keys arch, num_classes, state_dict) nor a torchvision "
        f"VGG-16 / AlexNet ImageNet state dict"
    )


def _read(path: Path, map_location: str | torch.device) -> Any:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # pickle, zip and unsafe-global errors all mean "do not trust this file"
        raise ValueError(f"cannot read checkpoint {path}: corrupt or not a weights-only file ({err})") from err


def _skeleton(arch: str) -> nn.Module:
    """The architecture on the meta device: shapes without the cost of allocating and initialising."""
    with torch.device("meta"):
        return build(arch, 1000)


def _fits(model: nn.Module, state: dict[str, Any]) -> bool:
    own = model.state_dict()
    return own.keys() == state.keys() and all(getattr(state[k], "shape", None) == v.shape for k, v in own.items())


def _load_state(model: nn.Module, state: dict[str, Any], path: Path) -> None:
    if not _fits(model, state):
        own = model.state_dict()
        missing = sorted(own.keys() - state.keys())[:5]
        unexpected = sorted(state.keys() - own.keys())[:5]
        shapes = [k for k in own.keys() & state.keys() if getattr(state[k], "shape", None) != own[k].shape]
        raise ValueError(
            f"checkpoint {path} does not match its architecture: missing {missing}, unexpected "
            f"{unexpected}, wrong shapes {sorted(shapes)[:5]}"
        )
    # assign: a meta-device skeleton takes the loaded tensors as they are
    model.load_state_dict(state, assign=True)


def _cached_weights(arch: str) -> Path:
    weights, _ = _IMAGENET[arch]
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


def has_weights(name: str) -> bool:
    """Whether the ImageNet weights of ``name`` (``"vgg16"``, ``"alexnet-imagenet"``) are in the torch hub cache."""
    if name not in _IMAGENET:
        raise ValueError(f"{name!r} has no ImageNet weights; valid: {', '.join(_IMAGENET)}")
    return _cached_weights(name).is_file()


def how_to_get(names: Sequence[str]) -> str:
    """One message that says how to get the ImageNet weights of every model in ``names`` (nothing is downloaded)."""
    unknown = [n for n in names if n not in _IMAGENET]
    if unknown:
        raise ValueError(f"{unknown} have no ImageNet weights; valid: {', '.join(_IMAGENET)}")
    files = [_cached_weights(n) for n in names]
    calls = "; ".join(
        f"torchvision.models.{_IMAGENET[n][0].__class__.__name__[:-8].lower()}(weights='IMAGENET1K_V1')" for n in names
    )
    return (
        f"ImageNet weights for {', '.join(map(repr, names))} are not in the torch hub cache ({files[0].parent}). "
        f"Nothing is downloaded automatically. To get them, with internet, run once:\n"
        f'    python -c "import torchvision; {calls}"\n'
        f"or copy {', '.join(f.name for f in files)} into {files[0].parent}, or pass a file's path to "
        f"dh.models.load()."
    )


def _load_imagenet(arch: str, path: Path | None, map_location: str | torch.device) -> nn.Module:
    weights, _ = _IMAGENET[arch]
    if path is None:
        path = _cached_weights(arch)
        if not path.is_file():
            raise FileNotFoundError(how_to_get([arch]))
    model = _skeleton(arch)
    _load_state(model, _read(path, map_location), path)
    model.meta = {"weights": str(weights), "categories": list(weights.meta["categories"])}  # type: ignore[attr-defined]
    return model.eval()
