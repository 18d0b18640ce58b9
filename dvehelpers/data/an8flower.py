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
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..atomic import replacing, write_text
from ..devices import device as default_device
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


class An8Flower(Dataset):
    """``(image 3×H×W float in [0, 1], label, mask H×W bool)`` triples of an an8Flower variant and split.

    ``variant``: ``"single-6c"`` (mask = petals) or ``"double-12c"`` (index = part × 6 + colour; mask = the
    coloured part). ``per_class`` defaults to :data:`PER_CLASS` (or the quick sizes under ``DVE_QUICK=1``).
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
            self.images, self.labels, self.masks = _read_official(Path(root), variant, split, size, seed)
            self.info: list[dict[str, Any]] = [{} for _ in range(len(self.labels))]
        else:
            self.per_class = per_class_default(split) if per_class is None else per_class
            if self.per_class < 1:
                raise ValueError(f"per_class must be >= 1, got {self.per_class}")
            self.dir = Path(cache or default_cache()) / f"{variant}_s{size}_seed{seed}"
            self.images, self.labels, self.masks, self.info = self._load_or_render(progress)

    # ------------------------------------------------------------ dataset protocol

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, int, Tensor]:
        return self.images[i].float() / 255, int(self.labels[i]), self.masks[i]

    def tensors(self, device: torch.device | str | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """The whole split at once: images N×3×H×W float in [0, 1], labels N, masks N×H×W bool."""
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

    def _load_or_render(self, progress: bool) -> tuple[Tensor, Tensor, Tensor, list[dict[str, Any]]]:
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
        images = torch.stack([self._read(it["image"], rgb=True) for it in items])  # type: ignore[index]
        masks = torch.stack([self._read(it["mask"], rgb=False) > 127 for it in items])  # type: ignore[index]
        return images, labels, masks, items  # type: ignore[return-value]

    def _intact(self, item: dict[str, Any]) -> bool:
        paths = self.dir / item["image"], self.dir / item["mask"]
        return all(p.is_file() for p in paths) and (_sha256(paths[0]), _sha256(paths[1])) == (
            item["sha256"],
            item["mask_sha256"],
        )

    def _read(self, rel: str, rgb: bool) -> Tensor:
        arr = np.asarray(Image.open(self.dir / rel).convert("RGB" if rgb else "L"))
        t = torch.from_numpy(arr.copy())
        return t.permute(2, 0, 1) if rgb else t

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


def _find_mask(root: Path, image: Path) -> Path | None:
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


def _read_official(root: Path, variant: str, split: str, size: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
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
    chosen: list[Path] = []
    for cid in ids:
        own = [p for p in files if int(_OFFICIAL.search(p.name).group(1)) == cid]  # type: ignore[union-attr]
        order = torch.randperm(len(own), generator=torch.Generator().manual_seed(seed * 31 + cid)).tolist()
        n_train, n_val = round(0.7 * len(own)), round(0.1 * len(own))
        bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, len(own))}
        lo, hi = bounds[split]
        chosen += [own[i] for i in sorted(order[lo:hi])]
    images, labels, masks = [], [], []
    for p in chosen:
        mask_path = _find_mask(root, p)
        if mask_path is None:
            raise FileNotFoundError(f"no mask for {p} in a parallel …_MASK tree")
        img = torch.from_numpy(np.asarray(Image.open(p).convert("RGB")).copy()).permute(2, 0, 1)
        m = torch.from_numpy(np.asarray(Image.open(mask_path).convert("L")).copy()) > 127
        if m.float().mean() > 0.5:  # polarity: the coloured part is the minority of the image
            m = ~m
        images.append(
            F.interpolate(img[None].float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
            .round()
            .clamp(0, 255)
            .to(torch.uint8)
        )
        masks.append(F.interpolate(m[None, None].float(), size=(size, size), mode="nearest")[0, 0] > 0.5)
        labels.append(ids.index(int(_OFFICIAL.search(p.name).group(1))))  # type: ignore[union-attr]
    return torch.stack(images), torch.tensor(labels), torch.stack(masks)
