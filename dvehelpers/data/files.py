"""Labelled images with masks read from files one at a time: the streamed form of a set, for the evaluation.

A :class:`MaskedImages` holds only the file paths and the labels; a ``DataLoader`` with workers reads the images
and masks in batches, so no split is ever held in memory whatever its size. It serves the rendered an8Flower-synth
cache, the official an8Flower layout (:class:`dvehelpers.data.An8Flower` with ``stream=True``) and any image
folder with masks (:func:`masked_folder`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["IMAGE_SUFFIXES", "MaskedImages", "find_mask", "masked_folder", "read_pair"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def find_mask(root: Path, image: Path) -> Path | None:
    """The mask of ``image`` (a file under ``root``) in a parallel ``…_MASK`` tree: ``<root>_MASK/<same path>`` or
    any folder of the path with ``_MASK`` appended; the same name, or the stem with ``.png``, ``.jpg`` or a ``_MASK``
    suffix."""
    rel = image.relative_to(root)
    candidates = [root.parent / f"{root.name}_MASK" / rel]
    for k in range(len(rel.parts) - 1):  # any folder of the path with _MASK appended
        parts = list(rel.parts)
        parts[k] += "_MASK"
        candidates.append(root.joinpath(*parts))
    for c in candidates:
        for name in (c.name, f"{c.stem}.png", f"{c.stem}.jpg", f"{c.stem}_MASK{c.suffix}", f"{c.stem}_MASK.png"):
            if (c.parent / name).is_file():
                return c.parent / name
    return None


def read_pair(image: Path, mask: Path, size: int | None = None, polarity: bool = False) -> tuple[Tensor, Tensor]:
    """An image (3×H×W uint8) and its mask (H×W bool, grey level > 127), resized to ``size``² when given (the image
    bilinearly with antialiasing, the mask by nearest neighbour). ``polarity``: make the masked part the minority of
    the image (the official masks come in either polarity)."""
    img = torch.from_numpy(np.asarray(Image.open(image).convert("RGB")).copy()).permute(2, 0, 1)
    m = torch.from_numpy(np.asarray(Image.open(mask).convert("L")).copy()) > 127
    if polarity and m.float().mean() > 0.5:
        m = ~m
    if size is not None and tuple(img.shape[1:]) != (size, size):
        img = F.interpolate(img[None].float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        img = img[0].round().clamp(0, 255).to(torch.uint8)
    if size is not None and tuple(m.shape) != (size, size):
        m = F.interpolate(m[None, None].float(), size=(size, size), mode="nearest")[0, 0] > 0.5
    return img, m


class MaskedImages(Dataset):
    """``(image 3×H×W float in [0, 1], label, mask H×W bool)`` read from ``pairs`` of (image, mask) files per item.

    ``labels`` are known up front (the protocol picks its balanced subsets from them without reading an image);
    ``size`` resizes on reading (None: as stored); ``identity``: a digest of the contents when the caller has one
    (the rendered cache's manifest), else :meth:`identity` hashes the files' bytes once.
    """

    def __init__(
        self,
        pairs: Sequence[tuple[Path, Path]],
        labels: Tensor,
        classes: Sequence[str],
        size: int | None = None,
        polarity: bool = False,
        identity: str | None = None,
    ) -> None:
        if len(pairs) != len(labels):
            raise ValueError(f"{len(pairs)} image/mask pairs but {len(labels)} labels")
        self.pairs = [(Path(a), Path(b)) for a, b in pairs]
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.classes = list(classes)
        self.size, self.polarity = size, polarity
        self._identity = identity

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[Tensor, int, Tensor]:
        img, m = read_pair(*self.pairs[i], self.size, self.polarity)
        return img.float() / 255, int(self.labels[i]), m

    def identity(self) -> str:
        """SHA-256 of every file's bytes, the labels and the reading settings (what the evaluation's cache keys on)."""
        if self._identity is None:
            h = hashlib.sha256(repr((self.size, self.polarity, self.labels.tolist())).encode())
            for pair in self.pairs:
                for p in pair:
                    h.update(hashlib.sha256(p.read_bytes()).digest())
            self._identity = h.hexdigest()
        return self._identity


def masked_folder(root: str | Path, size: int | None = None, classes: Sequence[str] | None = None) -> MaskedImages:
    """An image folder with masks: ``root/<class>/<image>.png|jpg`` with each mask in the parallel
    ``<root>_MASK/<class>/`` tree (see :func:`find_mask`); the classes are the sub-folders in sorted order (or
    ``classes``, in that order), as in torchvision's ``ImageFolder``. Masks are binarised (> 127) with the masked
    part the minority of the image."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} is not a folder")
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.endswith("_MASK"))
    classes = list(classes) if classes is not None else found
    missing = sorted(set(classes) - set(found))
    if missing or not classes:
        raise ValueError(f"{root} needs one sub-folder per class; missing {missing or 'all'}, found {found}")
    pairs, labels = [], []
    for k, name in enumerate(classes):
        for image in sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
            mask = find_mask(root, image)
            if mask is None:
                raise FileNotFoundError(f"no mask for {image} in a parallel {root.name}_MASK tree")
            pairs.append((image, mask))
            labels.append(k)
    if not pairs:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    return MaskedImages(pairs, torch.tensor(labels), classes, size, polarity=True)
