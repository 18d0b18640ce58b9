"""Model builders, safe checkpoint loading and the papers' layer names.

Every network is a torchvision ``VGG`` or ``AlexNet`` instance (or a plain ``nn.Sequential``), so one
layer walker (:mod:`dvehelpers.trace`) serves the small an8Flower-scale networks and the ImageNet ones.

Layer names follow the Caffe models the papers used: VGG ``conv1_1, relu1_1, …, conv5_3, relu5_3, pool5,
avgpool, flatten, fc6, relu6, drop6, fc7, relu7, drop7, fc8``; AlexNet ``conv1, relu1, pool1, …, conv5,
relu5, pool5, avgpool, flatten, drop5, fc6, relu6, drop6, fc7, relu7, fc8``. The torchvision module paths
(``"features.29"``) are accepted too, everywhere a layer is named.
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

__all__ = [
    "ARCHS",
    "MODEL_DIR",
    "build",
    "load",
    "save",
    "layer_names",
    "resolve_layer",
    "layer_shape",
    "has_weights",
    "how_to_get",
    "default_cam_layer",
    "num_classes",
    "without_inplace",
]

ARCHS = ("vgg", "alexnet", "vgg16", "alexnet-imagenet")

#: Shipped an8Flower checkpoints live here (``DVE_MODELS`` overrides).
MODEL_DIR = Path(os.environ.get("DVE_MODELS", Path(__file__).resolve().parent.parent / "data" / "models"))

# VGG-11 ("configuration A") layout with a quarter of the widths: five blocks, so the paper names
# conv1_1 … conv5_2 and pool5 exist; a 112×112 input gives 7×7 maps at conv5 and 3×3 at pool5.
_SMALL_VGG_CFG: list[int | str] = [16, "M", 32, "M", 64, 64, "M", 128, 128, "M", 128, 128, "M"]
_SMALL_HIDDEN = 256


def _small_vgg(num_classes: int) -> tvm.VGG:
    with torch.device("meta"):  # skip allocating and initialising the 120M-parameter ImageNet head
        model = tvm.VGG(nn.Sequential(), num_classes=num_classes, init_weights=False)
    model.features = tvm.vgg.make_layers(_SMALL_VGG_CFG, batch_norm=False)
    model.avgpool = nn.AdaptiveAvgPool2d((3, 3))
    model.classifier = _classifier(int(_SMALL_VGG_CFG[-2]) * 9, num_classes, dropout_first=False)
    for m in model.modules():  # torchvision's VGG initialisation
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
    return model


def _small_alexnet(num_classes: int) -> tvm.AlexNet:
    # AlexNet's structure (strided first conv, overlapping 3×3/2 max pooling, three stacked convs) with a
    # stride-2 first conv so that a 112×112 input keeps 6×6 maps at pool5, as AlexNet has at 224×224.
    with torch.device("meta"):
        model = tvm.AlexNet(num_classes=num_classes)
    model.features = nn.Sequential(
        nn.Conv2d(3, 32, kernel_size=7, stride=2, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(32, 64, kernel_size=5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 96, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(96, 64, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(64, 64, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )
    model.avgpool = nn.AdaptiveAvgPool2d((6, 6))
    model.classifier = _classifier(64 * 36, num_classes, dropout_first=True)
    return model


def _classifier(n_in: int, num_classes: int, dropout_first: bool) -> nn.Sequential:
    h = _SMALL_HIDDEN
    if dropout_first:  # torchvision AlexNet order
        layers = [nn.Dropout(0.5), nn.Linear(n_in, h), nn.ReLU(inplace=True), nn.Dropout(0.5)]
        layers += [nn.Linear(h, h), nn.ReLU(inplace=True), nn.Linear(h, num_classes)]
    else:  # torchvision VGG order
        layers = [nn.Linear(n_in, h), nn.ReLU(inplace=True), nn.Dropout(0.5)]
        layers += [nn.Linear(h, h), nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(h, num_classes)]
    return nn.Sequential(*layers)


def build(arch: str, num_classes: int) -> nn.Module:
    """A freshly initialised network (eval mode).

    ``"vgg"`` and ``"alexnet"`` are the an8Flower-scale networks (112×112 inputs); ``"vgg16"`` and
    ``"alexnet-imagenet"`` are torchvision's ImageNet architectures (224×224), without weights — use
    :func:`load` for the trained ones.
    """
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    builders = {
        "vgg": _small_vgg,
        "alexnet": _small_alexnet,
        "vgg16": lambda k: tvm.vgg16(weights=None, num_classes=k),
        "alexnet-imagenet": lambda k: tvm.alexnet(weights=None, num_classes=k),
    }
    if arch not in builders:
        raise ValueError(f"unknown arch {arch!r}; valid: {', '.join(ARCHS)}")
    with torch.random.fork_rng(devices=[]):  # deterministic init, global RNG state left untouched
        torch.manual_seed(0)
        return builders[arch](num_classes).eval()


# ---------------------------------------------------------------- checkpoints

_IMAGENET = {
    "vgg16": (tvm.VGG16_Weights.IMAGENET1K_V1, "vgg16"),
    "alexnet-imagenet": (tvm.AlexNet_Weights.IMAGENET1K_V1, "alexnet-imagenet"),
}


def save(model: nn.Module, path: str | os.PathLike, arch: str, meta: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint atomically (temporary file, then rename) that :func:`load` reads back."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"arch": arch, "num_classes": num_classes(model), "state_dict": model.state_dict(), "meta": meta or {}}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)
    return path


def num_classes(model: nn.Module) -> int:
    """The number of classes: the output width of the model's last linear layer."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no linear classifier layer")
    return linears[-1].out_features


def without_inplace(model: nn.Module) -> nn.Module:
    """A deep copy whose ReLUs are not in place (hook-based peer libraries need that; dvehelpers does not)."""
    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
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


# ---------------------------------------------------------------- layer names


def layer_names(model: nn.Module) -> list[str]:
    """Paper (Caffe-style) names of every step of the model's forward pass, in order."""
    from .trace import walk

    return [step.name for step in walk(model)]


def resolve_layer(model: nn.Module, layer: str | int) -> int:
    """Index of a layer in :func:`dvehelpers.trace.walk` order, from a paper name or module path."""
    from .trace import walk

    steps = walk(model)
    if isinstance(layer, int) and not isinstance(layer, bool):
        if -len(steps) <= layer < len(steps):
            return layer % len(steps)
        raise ValueError(f"layer index {layer} out of range for a model with {len(steps)} layers")
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a name (str) or an index (int), got {type(layer).__name__}")
    for i, step in enumerate(steps):
        if layer in (step.name, step.path):
            return i
    raise ValueError(f"unknown layer {layer!r}; valid names: {', '.join(s.name for s in steps)}")


def layer_shape(model: nn.Module, layer: str | int, size: int | tuple[int, int] = 112) -> tuple[int, ...]:
    """The output shape of ``layer`` (C, h, w for a conv layer) for one ``size``×``size`` input.

    One image of zeros is run through the layers up to ``layer`` only, on the model's device.
    """
    from .trace import record

    index = resolve_layer(model, layer)
    h, w = (size, size) if isinstance(size, int) else size
    ref = next(model.parameters())
    trace = record(model, torch.zeros(1, 3, h, w, dtype=ref.dtype, device=ref.device), upto=index)
    return tuple(trace.output(index).shape[1:])


def default_cam_layer(model: nn.Module) -> str:
    """The last convolutional block's ReLU (``relu5_3`` for VGG-16, ``relu5`` for AlexNet)."""
    from .trace import walk

    name = None
    for step in walk(model):
        if isinstance(step.module, (nn.Linear, nn.Flatten)):
            break
        if isinstance(step.module, nn.ReLU):
            name = step.name
    if name is None:
        raise ValueError("model has no ReLU after a convolution before its classifier; pass layer=")
    return name


def paper_names(kinds: Sequence[str], block_style: bool) -> list[str]:
    """Caffe-style names for a sequence of layer kinds (``conv``, ``relu``, ``pool``, ``fc`` …).

    Blocks (VGG): a pooling layer closes a block, convs are ``conv{block}_{i}``. Flat (AlexNet): convs
    are numbered globally and pooling/ReLU take the number of the last conv. Fully connected layers
    continue the numbering (``fc6`` after five blocks); a dropout takes the number of the layer before it.
    """
    names: list[str] = []
    block, in_block, nconv, fc = 1, 0, 0, 0
    last = "0"  # the number of the last numbered layer, for relu/bn/drop
    for kind in kinds:
        if kind == "conv":
            nconv += 1
            in_block += 1
            last = f"{block}_{in_block}" if block_style else str(nconv)
            names.append(f"conv{last}")
        elif kind in ("relu", "bn"):
            names.append(f"{kind}{last}")
        elif kind == "pool":
            num = block if block_style else nconv
            names.append(f"pool{num}")
            last = str(num)
            block, in_block = block + 1, 0
        elif kind == "fc":
            fc = fc + 1 if fc else (block - 1 if block_style else nconv) + 1
            last = str(fc)
            names.append(f"fc{last}")
        elif kind == "drop":
            names.append(f"drop{last}")
        else:
            names.append(kind)
    return _unique(names)


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}_{seen[n]}")
    return out
