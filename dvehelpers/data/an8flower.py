"""The an8Flower dataset: rendered an8Flower-synth with a checked PNG cache, or the official layout.

Rendered (``root=None``): images and masks are rendered on first use into
``<cache>/<variant>_s<size>_seed<seed>/<split>/class{c}_img{i}_p{petals}_r{angle}.png`` with masks in the
parallel ``<split>_MASK/`` folder, and a manifest ``<split>.json`` that lists every finished file with its
SHA-256. Each file is written to a temporary name and renamed; the manifest is rewritten (atomically) only
after the files it lists are complete. On every load each file is checked against its checksum and whatever
is missing or does not match is rendered again — an interrupted or corrupted cache is repaired, never
trusted.

Official (``root=...``): images ``class{c}_img{i}_p{p}_r{r}.jpg`` anywhere under ``root`` with masks in a
parallel ``…_MASK`` tree; masks are binarised and their polarity fixed (the flower part is the minority).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..atomic import replacing, write_text
from ..devices import device as default_device
from .files import MaskedImages, find_mask, read_pair
from .render import VARIANTS, class_names, render_scenes, sample_scenes

__all__ = ["An8Flower", "SPLITS", "per_class_default", "default_cache", "RENDER_VERSION"]

SPLITS = ("train", "val", "test")
#: Images per class of each split; ``DVE_QUICK=1`` uses the small sizes (notebook CI runs).
PER_CLASS = {"train": 250, "val": 40, "test": 100}
PER_CLASS_QUICK = {"train": 20, "val": 5, "test": 10}
#: Bump when the renderer's output changes: caches of another version are re-rendered.
RENDER_VERSION = 2  # 2: batch-invariant anti-aliasing (an image no longer depends on its chunk)
_CHUNK = 64  # images rendered per batch into the cache
_OFFICIAL = re.compile(r"class(\d+)_img(\d+)_p(\d+)_r(\d+)\.(jpe?g|png)$", re.I)


def per_class_default(split: str) -> int:
    quick = os.environ.get("DVE_QUICK") == "1"
    return (PER_CLASS_QUICK if quick else PER_CLASS)[split]


def default_cache() -> Path:
    """``$DVE_DATA`` if set, else ``data/cache`` in the repository."""
    env = os.environ.get("DVE_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "data" / "cache"


def _split_seed(seed: int, split: str) -> int:
    return seed * 1009 + SPLITS.index(split) * 7919 + 17


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_png(path: Path, array: np.ndarray) -> str:
    with replacing(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG", optimize=False)
    return _sha256(path)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_text(path, json.dumps(data, indent=1))


def _digest_manifest(config: dict[str, Any], sums: list[tuple[str, str]]) -> str:
    return hashlib.sha256(json.dumps([config, sums]).encode()).hexdigest()


class An8Flower(Dataset):
    """``(image 3×H×W float in [0, 1], label, mask H×W bool)`` triples of an an8Flower variant and split.

    ``variant``: ``"single-6c"`` (mask = petals) or ``"double-12c"`` (index = part × 6 + colour; mask = the
    coloured part). ``per_class`` defaults to :data:`PER_CLASS` (or the quick sizes under ``DVE_QUICK=1``).
    ``stream``: hold only the file list and the labels, and read each image and mask when it is asked for (what
    the evaluation does, through a ``DataLoader`` with workers); ``images`` and ``masks`` are then None.
    """

    def __init__(
        self,
        variant: str,
        split: str,
        size: int = 112,
        seed: int = 0,
        root: str | Path | None = None,
        cache: str | Path | None = None,
        per_class: int | None = None,
        progress: bool = True,
        stream: bool = False,
    ) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        if size < 16:
            raise ValueError(f"size must be >= 16, got {size}")
        self.variant, self.split, self.size, self.seed = variant, split, size, seed
        self.render_device = default_device()  # rendering runs on the GPU when there is one
        self.classes = class_names(variant)
        self.official = root is not None
        if root is not None:
            pairs, self.labels = _official_files(Path(root), variant, split, seed)
            self.info: list[dict[str, Any]] = [{} for _ in range(len(self.labels))]
            self.files = MaskedImages(pairs, self.labels, self.classes, size, polarity=True)
        else:
            self.per_class = per_class_default(split) if per_class is None else per_class
            if self.per_class < 1:
                raise ValueError(f"per_class must be >= 1, got {self.per_class}")
            self.dir = Path(cache or default_cache()) / f"{variant}_s{size}_seed{seed}"
            self.labels, self.info = self._load_or_render(progress)
            pairs = [(self.dir / it["image"], self.dir / it["mask"]) for it in self.info]
            sums = [(it["sha256"], it["mask_sha256"]) for it in self.info]
            self.files = MaskedImages(pairs, self.labels, self.classes, identity=_digest_manifest(self._config(), sums))
        self.stream = stream
        self.images: Tensor | None = None
        self.masks: Tensor | None = None
        if not stream:
            images, masks = zip(*(read_pair(*pair, size, self.official) for pair in self.files.pairs), strict=True)
            self.images, self.masks = torch.stack(images), torch.stack(masks)

    # ------------------------------------------------------------ dataset protocol

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, int, Tensor]:
        if self.images is None or self.masks is None:  # streamed: read from the files
            return self.files[i]
        return self.images[i].float() / 255, int(self.labels[i]), self.masks[i]

    def identity(self) -> str:
        """A digest of the split's contents (the rendered cache's checksums, or the official files' bytes)."""
        return self.files.identity()

    def tensors(self, device: torch.device | str | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """The whole split at once: images N×3×H×W float in [0, 1], labels N, masks N×H×W bool (read from the
        files when streamed)."""
        if self.images is None or self.masks is None:
            images, labels, masks = zip(*(self.files[i] for i in range(len(self))), strict=True)
            return torch.stack(images).to(device), self.labels.to(device), torch.stack(masks).to(device)
        return (self.images.to(device).float() / 255, self.labels.to(device), self.masks.to(device))

    def part_maps(self, device: torch.device | str | None = None) -> Tensor:
        """N×H×W part ids (:data:`dvehelpers.data.PARTS`) of every image: which part each pixel shows.

        Rendered again from each image's scene, in the same batches as the cache (so ``part ∈ coloured
        parts`` reproduces the masks); not cached. Only the synthetic set has them.
        """
        if self.official:
            raise ValueError("part maps exist only for an8Flower-synth; the official set ships masks alone")
        n = len(self.labels)
        scenes = sample_scenes(n, _split_seed(self.seed, self.split))
        out = []
        for start in range(0, n, _CHUNK):
            idx = torch.arange(start, min(start + _CHUNK, n))
            _, parts, _, _ = render_scenes(
                scenes.index(idx), self.labels[idx], self.variant, self.size, device=self.render_device
            )
            out.append(parts.to(device or "cpu"))
        return torch.cat(out)

    # ------------------------------------------------------------ the rendered cache

    @property
    def manifest_path(self) -> Path:
        return self.dir / f"{self.split}.json"

    def _config(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "size": self.size,
            "seed": self.seed,
            "split": self.split,
            "per_class": self.per_class,
            "render_version": RENDER_VERSION,
        }

    def _load_or_render(self, progress: bool) -> tuple[Tensor, list[dict[str, Any]]]:
        """The labels and the manifest items of the split, rendering whatever is missing or damaged first."""
        n = self.per_class * len(self.classes)
        labels = torch.arange(n) % len(self.classes)
        scenes = sample_scenes(n, _split_seed(self.seed, self.split))
        items: list[dict[str, Any] | None] = [None] * n
        if self.manifest_path.exists():
            try:
                manifest = json.loads(self.manifest_path.read_text())
            except json.JSONDecodeError:
                manifest = {}
            if manifest.get("config") == self._config():
                for item in manifest.get("items", []):
                    if 0 <= item.get("index", -1) < n:
                        items[item["index"]] = item
        bad = [i for i, it in enumerate(items) if it is None or not self._intact(it)]
        if bad:
            self._render(bad, scenes, labels, items, progress)
        return labels, items  # type: ignore[return-value]

    def _intact(self, item: dict[str, Any]) -> bool:
        paths = self.dir / item["image"], self.dir / item["mask"]
        return all(p.is_file() for p in paths) and (_sha256(paths[0]), _sha256(paths[1])) == (
            item["sha256"],
            item["mask_sha256"],
        )

    def _render(
        self,
        todo: list[int],
        scenes: Any,
        labels: Tensor,
        items: list[dict[str, Any] | None],
        progress: bool,
        chunk: int = _CHUNK,
    ) -> None:
        (self.dir / self.split).mkdir(parents=True, exist_ok=True)
        (self.dir / f"{self.split}_MASK").mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=len(todo), desc=f"rendering {self.variant}/{self.split}", unit="img", disable=not progress)
        for start in range(0, len(todo), chunk):
            idx = torch.tensor(todo[start : start + chunk])
            sc = scenes.index(idx)
            images, _, masks, _ = render_scenes(sc, labels[idx], self.variant, self.size, device=self.render_device)
            pixels = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            mask_px = (masks.to(torch.uint8) * 255).cpu().numpy()
            for j, i in enumerate(idx.tolist()):
                name = f"class{int(labels[i])}_img{i:05d}_p{int(sc.n_petals[j])}_r{int(sc.angle[j]) % 360:03d}.png"
                image_rel, mask_rel = f"{self.split}/{name}", f"{self.split}_MASK/{name}"
                items[i] = {
                    "index": i,
                    "image": image_rel,
                    "mask": mask_rel,
                    "label": int(labels[i]),
                    "class": self.classes[int(labels[i])],
                    "angle": float(sc.angle[j]),
                    "params": {k: v[j].tolist() for k, v in vars(sc).items() if k not in ("bg_noise",)},
                    "sha256": _write_png(self.dir / image_rel, pixels[j]),
                    "mask_sha256": _write_png(self.dir / mask_rel, mask_px[j]),
                }
            # the manifest lists only files that are complete on disk
            done = [it for it in items if it is not None]
            _write_json(self.manifest_path, {"config": self._config(), "items": done})
            bar.update(len(idx))
        bar.close()


def one_per_class(labels: Tensor, k: int = 0) -> Tensor:
    """Indices of the ``k``-th image of every class, in class order: a figure that shows each class once."""
    labels = torch.as_tensor(labels).cpu()
    out = []
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero()[:, 0]
        if k >= len(idx):
            raise ValueError(f"class {c} has {len(idx)} images; k must be below that, got {k}")
        out.append(idx[k])
    return torch.stack(out)


# ---------------------------------------------------------------- the official layout


def _official_files(root: Path, variant: str, split: str, seed: int) -> tuple[list[tuple[Path, Path]], Tensor]:
    """The (image, mask) files and labels of one split of the official layout under ``root``."""
    if not root.is_dir():
        raise FileNotFoundError(f"an8Flower root {root} is not a folder")
    files = sorted(
        p
        for p in root.rglob("*")
        if _OFFICIAL.search(p.name) and not any(part.endswith("_MASK") for part in p.relative_to(root).parts)
    )
    if not files:
        raise FileNotFoundError(f"no images named like class{{c}}_img{{i}}_p{{p}}_r{{r}}.jpg under {root}")
    ids = sorted({int(_OFFICIAL.search(p.name).group(1)) for p in files})  # type: ignore[union-attr]
    if len(ids) != VARIANTS[variant]:
        raise ValueError(f"{root} holds {len(ids)} classes ({ids}); {variant} has {VARIANTS[variant]}")
    # The official split is not published with the files: a fixed 70/10/20 split per class by seed.
    pairs: list[tuple[Path, Path]] = []
    labels: list[int] = []
    for k, cid in enumerate(ids):
        own = [p for p in files if int(_OFFICIAL.search(p.name).group(1)) == cid]  # type: ignore[union-attr]
        order = torch.randperm(len(own), generator=torch.Generator().manual_seed(seed * 31 + cid)).tolist()
        n_train, n_val = round(0.7 * len(own)), round(0.1 * len(own))
        bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, len(own))}
        lo, hi = bounds[split]
        for p in (own[i] for i in sorted(order[lo:hi])):
            mask = find_mask(root, p)
            if mask is None:
                raise FileNotFoundError(f"no mask for {p} in a parallel …_MASK tree")
            pairs.append((p, mask))
            labels.append(k)
    return pairs, torch.tensor(labels)
