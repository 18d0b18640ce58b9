"""Real photographs that ship offline, the ImageNet classes they show, and each ImageNet classifier's own
preprocessing — nothing is downloaded.

The photos come with scikit-image, scikit-learn and matplotlib (all dependencies). :data:`PHOTOS` names each one,
where it comes from and the ImageNet classes a correct prediction may take (more than one where ImageNet itself
splits the object: a cat is an "Egyptian cat", a "tabby" or a "tiger cat"). They are few — nine — and were picked
because they are what ships offline, not as a sample of anything: read every number computed on them as an
illustration, not a benchmark.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib.cbook as cbook
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from skimage import data as skimage_data
from sklearn.datasets import load_sample_images
from torch import Tensor, nn

from .models import imagenet_categories
from .models.checkpoints import TORCHVISION_NORMALIZE

__all__ = [
    "MAX_BYTES",
    "MAX_PIXELS",
    "decode",
    "image_folder",
    "IMAGE_SUFFIXES",
    "Photo",
    "PHOTOS",
    "photo_array",
    "photos",
    "to_tensor",
    "preprocess",
    "imagenet_normalize",
    "imagenet_categories",
]


@dataclass(frozen=True)
class Photo:
    """An offline photo: its ``source`` (library and name) and the ImageNet classes a right answer may take."""

    name: str
    source: str
    expected: tuple[str, ...]


PHOTOS: dict[str, Photo] = {
    p.name: p
    for p in (
        Photo("chelsea", "scikit-image data.chelsea()", ("Egyptian cat", "tabby", "tiger cat")),
        Photo("coffee", "scikit-image data.coffee()", ("espresso", "cup", "coffee mug")),
        Photo("camera", "scikit-image data.camera() (greyscale)", ("tripod",)),
        Photo("rocket", "scikit-image data.rocket()", ("space shuttle", "missile", "projectile")),
        Photo("motorcycle", "scikit-image data.stereo_motorcycle() (left view)", ("moped", "motor scooter")),
        Photo("china", "scikit-learn load_sample_images(): china.jpg", ("palace", "bell cote", "monastery")),
        Photo("flower", "scikit-learn load_sample_images(): flower.jpg", ("daisy",)),
        Photo("grace_hopper", "matplotlib sample data: grace_hopper.jpg", ("military uniform", "Windsor tie", "suit")),
        Photo("astronaut", "scikit-image data.astronaut()", ()),  # no ImageNet class shows an astronaut
    )
}


def photo_array(name: str) -> np.ndarray:
    """The photo ``name`` of :data:`PHOTOS` as the library ships it: H×W×3 uint8 (greyscale made RGB)."""
    if name not in PHOTOS:
        raise ValueError(f"unknown photo {name!r}; valid: {', '.join(PHOTOS)}")
    if name == "china" or name == "flower":
        array = load_sample_images().images[0 if name == "china" else 1]
    elif name == "grace_hopper":
        with cbook.get_sample_data("grace_hopper.jpg") as f:
            array = np.asarray(Image.open(f).convert("RGB"))
    elif name == "motorcycle":
        array = skimage_data.stereo_motorcycle()[0]
    else:
        array = getattr(skimage_data, name)()
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    return np.ascontiguousarray(array[..., :3])


def to_tensor(array: np.ndarray, size: int = 224) -> Tensor:
    """An H×W×3 (or H×W) uint8 image as a 1×3×size×size float tensor in [0, 1]: the central square, resized with
    anti-aliasing."""
    img = torch.tensor(np.asarray(array), dtype=torch.float32)  # a copy: photo arrays may be read-only
    if img.ndim == 2:
        img = img[..., None].expand(-1, -1, 3)
    img = img[..., :3].permute(2, 0, 1) / 255
    h, w = img.shape[1:]
    s = min(h, w)
    img = img[:, (h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    out = F.interpolate(img[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.clamp(0, 1)


def photos(names: Sequence[str] | None = None, size: int = 224) -> Tensor:
    """The named photos of :data:`PHOTOS` (default: all) as a B×3×size×size float tensor in [0, 1] (central square,
    resized)."""
    return torch.cat([to_tensor(photo_array(n), size) for n in (names or list(PHOTOS))])


def preprocess(model: nn.Module, images: Tensor) -> Tensor:
    """Images in [0, 1] as ``model`` takes them: its ``meta["normalize"]`` mean and standard deviation per channel
    (EfficientNet-Lite0: (x − 127/255)/(128/255); torchvision's VGG-16 and AlexNet: ImageNet statistics), or as they
    are for a model that records none (the an8Flower models take [0, 1] images)."""
    norm = (getattr(model, "meta", None) or {}).get("normalize")
    return images if norm is None else _normalize(images, norm)


def imagenet_normalize(images: Tensor) -> Tensor:
    """torchvision's ImageNet preprocessing (VGG-16, AlexNet): subtract the mean and divide by the standard
    deviation per channel."""
    return _normalize(images, TORCHVISION_NORMALIZE)


def _normalize(images: Tensor, spec: dict[str, Sequence[float]]) -> Tensor:
    mean = torch.tensor(spec["mean"], dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(spec["std"], dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images - mean) / std


#: The largest upload :func:`decode` accepts, in bytes and in pixels (a photo of 4000×3000 is 12 megapixels).
MAX_BYTES = 50 * 2**20
MAX_PIXELS = 100_000_000


def decode(data: bytes, size: int = 224) -> Tensor:
    """Any JPEG / PNG / … file's bytes as a 1×3×size×size tensor in [0, 1] (central square, resized): greyscale made
    RGB, transparency laid on white, the EXIF orientation applied. A file that is empty, too large, not an image,
    or truncated gets a ``ValueError`` that says which."""
    if not data:
        raise ValueError("the file is empty (0 bytes)")
    if len(data) > MAX_BYTES:
        raise ValueError(f"the file is {len(data) / 2**20:.0f} MiB; at most {MAX_BYTES // 2**20} MiB")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ValueError("not an image file that can be read (JPEG, PNG, GIF, BMP, TIFF, WebP …)") from None
    if img.width * img.height > MAX_PIXELS:
        raise ValueError(f"the image has {img.width}×{img.height} pixels; at most {MAX_PIXELS // 10**6} megapixels")
    try:
        img.load()
    except (OSError, SyntaxError) as err:
        raise ValueError(f"the image data is truncated or damaged ({err})") from None
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return to_tensor(np.asarray(img.convert("RGB")), size)


#: The file endings :func:`image_folder` reads (case-insensitive).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def image_folder(root: str | Path, classes: Sequence[str], size: int = 224) -> tuple[Tensor, Tensor]:
    """A labelled image folder — one subfolder per class, named exactly as in ``classes`` (for an ImageNet model:
    ``model.meta["categories"]``, e.g. ``Egyptian cat/``) — as images B×3×size×size in [0, 1] and labels B (indices
    into ``classes``), files in sorted order. Every file goes through :func:`decode`; an unknown subfolder, an
    empty folder or an unreadable file is a ``ValueError`` that names it."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder; expected one subfolder of images per class")
    index = {name: k for k, name in enumerate(classes)}
    folders = sorted(d for d in root.iterdir() if d.is_dir())
    unknown = [d.name for d in folders if d.name not in index]
    if unknown:
        raise ValueError(f"subfolders {unknown} of {root} are not class names (e.g. {', '.join(list(index)[:3])} …)")
    images, labels = [], []
    for d in folders:
        for f in sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES):
            try:
                images.append(decode(f.read_bytes(), size))
            except ValueError as err:
                raise ValueError(f"{f}: {err}") from None
            labels.append(index[d.name])
    if not images:
        raise ValueError(f"{root} holds no images ({', '.join(IMAGE_SUFFIXES)}) in class subfolders")
    return torch.cat(images), torch.tensor(labels)
