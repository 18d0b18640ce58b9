"""Real photographs that ship offline (scikit-image) and ImageNet preprocessing without any download."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["PHOTOS", "photos", "imagenet_normalize", "imagenet_categories"]

#: scikit-image sample photos used by the notebooks (all ship with scikit-image).
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")

_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def photos(names: tuple[str, ...] = PHOTOS, size: int = 224) -> Tensor:
    """The named scikit-image photos as a B×3×size×size float tensor in [0, 1] (centre crop, then resize)."""
    from skimage import data

    out = []
    for name in names:
        if name not in PHOTOS:
            raise ValueError(f"unknown photo {name!r}; valid: {', '.join(PHOTOS)}")
        img = torch.from_numpy(getattr(data, name)()).permute(2, 0, 1).float() / 255
        h, w = img.shape[1:]
        s = min(h, w)
        img = img[:, (h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
        out.append(F.interpolate(img[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False))
    return torch.cat(out).clamp(0, 1)


def imagenet_normalize(images: Tensor) -> Tensor:
    """Subtract the ImageNet mean and divide by its standard deviation, per channel (torchvision's)."""
    mean = torch.tensor(_MEAN, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(_STD, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names, from torchvision's weight metadata (no weights needed)."""
    from torchvision.models import VGG16_Weights

    return list(VGG16_Weights.IMAGENET1K_V1.meta["categories"])
