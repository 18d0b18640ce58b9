"""an8Flower-synth: exact masks, colour only in the coloured part, determinism, cache safety, official layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import dvehelpers as dh
from dvehelpers.data import an8flower, render
from dvehelpers.data.render import coloured_parts, render_scenes, sample_scenes
from tests.conftest import export_folder


@pytest.mark.parametrize("variant", ["single-6c", "double-12c"])
def test_mask_is_exactly_the_coloured_parts_of_the_part_map(variant: str) -> None:
    k = dh.data.VARIANTS[variant]
    labels = torch.arange(2 * k) % k
    images, parts, masks, coverage = render_scenes(sample_scenes(2 * k, 3), labels, variant, size=64)
    assert masks.dtype == torch.bool and images.shape == (2 * k, 3, 64, 64)
    for i, lab in enumerate(labels.tolist()):
        expected = torch.isin(parts[i], torch.tensor(coloured_parts(variant, lab)))
        assert torch.equal(masks[i], expected)
        assert masks[i].any() and (~masks[i]).any()
        # the mask holds the pixels that are mostly coloured part; coverage > 0 only near it
        assert (coverage[i][masks[i]] >= 0.5).all()


@pytest.mark.parametrize(("variant", "a", "b"), [("single-6c", 0, 4), ("double-12c", 2, 8), ("double-12c", 7, 11)])
def test_two_classes_of_one_scene_differ_only_where_coloured(variant: str, a: int, b: int) -> None:
    sc = sample_scenes(8, 11)
    img_a, _, mask_a, cov_a = render_scenes(sc, torch.full((8,), a), variant, size=80)
    img_b, _, mask_b, cov_b = render_scenes(sc, torch.full((8,), b), variant, size=80)
    touched = (cov_a > 0) | (cov_b > 0)  # every pixel with a coloured sample in either image
    diff = (img_a - img_b).abs().amax(1)
    assert torch.equal(diff[~touched], torch.zeros_like(diff[~touched]))
    assert (diff[mask_a | mask_b] > 0.05).float().mean() > 0.9  # and they do differ there
    # outside its mask a pixel is at most half coloured (anti-aliased borders, thin petal tips)
    for cov, mask in ((cov_a, mask_a), (cov_b, mask_b)):
        assert (cov[~mask] <= 0.5).all() and (cov[mask] >= 0.5).all()


def _colour_features(images: torch.Tensor, keep: torch.Tensor) -> np.ndarray:
    """A 4×4×4 colour histogram of the kept pixels of each image."""
    q = (images * 3.999).long()
    code = (q[:, 0] * 16 + q[:, 1] * 4 + q[:, 2]).flatten(1)
    hist = torch.zeros(images.shape[0], 64).scatter_add_(1, code, keep.flatten(1).float())
    return (hist / hist.sum(1, keepdim=True).clamp(min=1)).numpy()


@pytest.mark.parametrize("variant", ["single-6c", "double-12c"])
def test_only_the_coloured_part_carries_the_colour(variant: str) -> None:
    from sklearn.linear_model import LogisticRegression

    def split(seed: int, n: int) -> tuple[torch.Tensor, ...]:
        return render(variant, n, size=64, seed=seed)

    (xa, ya, ma), (xb, yb, mb) = split(1, 240), split(2, 120)
    colour_a, colour_b = (ya % 6).numpy(), (yb % 6).numpy()
    grown_a = F.max_pool2d(ma.float()[:, None], 5, 1, 2)[:, 0].bool()  # dilated by 2 px
    grown_b = F.max_pool2d(mb.float()[:, None], 5, 1, 2)[:, 0].bool()
    scores = {}
    for where, (ka, kb) in {"outside": (~grown_a, ~grown_b), "inside": (ma, mb)}.items():
        clf = LogisticRegression(max_iter=2000).fit(_colour_features(xa, ka), colour_a)
        scores[where] = clf.score(_colour_features(xb, kb), colour_b)
    assert scores["inside"] > 0.97
    assert scores["outside"] < 1 / 6 + 0.12  # chance is 1/6


def test_render_is_deterministic_and_seeded() -> None:
    a = render("double-12c", 12, size=48, seed=5)
    b = render("double-12c", 12, size=48, seed=5)
    c = render("double-12c", 12, size=48, seed=6)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])
    assert torch.equal(a[1], torch.arange(12) % 12)


def test_nuisances_vary_within_a_class() -> None:
    sc = sample_scenes(200, 0)
    assert set(sc.n_petals.tolist()) == {5, 6, 7, 8} and set(sc.background.tolist()) == {0, 1, 2}
    assert sc.angle.min() < 20 and sc.angle.max() > 340 and sc.has_pot.any() and (~sc.has_pot).any()


def test_class_names_follow_the_index_order() -> None:
    assert dh.data.class_names("single-6c") == ["red", "orange", "yellow", "cyan", "blue", "magenta"]
    names = dh.data.class_names("double-12c")
    assert names[0] == "petals-red" and names[6] == "stem-red" and names[11] == "stem-magenta"


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="unknown variant 'triple'; valid: single-6c, double-12c"):
        render("triple", 4)
    with pytest.raises(ValueError, match="unknown split 'dev'; valid: train, val, test"):
        dh.data.An8Flower("single-6c", "dev")


# ---------------------------------------------------------------- the cache


def test_dataset_renders_into_a_checked_cache(tmp_path: Path) -> None:
    ds = dh.data.An8Flower("single-6c", "val", size=48, cache=tmp_path, per_class=3, progress=False)
    assert len(ds) == 18 and ds.classes[0] == "red"
    image, label, mask = ds[7]
    assert image.shape == (3, 48, 48) and image.dtype == torch.float32 and label == 1 and mask.dtype == torch.bool
    files = sorted(p.name for p in (ds.dir / "val").iterdir())
    assert len(files) == 18 and all(an8flower._OFFICIAL.search(f) for f in files)
    assert sorted(p.name for p in (ds.dir / "val_MASK").iterdir()) == files
    manifest = json.loads(ds.manifest_path.read_text())
    assert len(manifest["items"]) == 18 and {"angle", "params", "sha256", "class"} <= set(manifest["items"][0])
    # the same seed gives identical bytes; the PNGs round-trip what the renderer made (to 8 bits)
    again = dh.data.An8Flower("single-6c", "val", size=48, cache=tmp_path / "b", per_class=3, progress=False)
    assert [i["sha256"] for i in again.info] == [i["sha256"] for i in ds.info]
    scenes = sample_scenes(18, an8flower._split_seed(0, "val"))
    x, _, m, _ = render_scenes(scenes, torch.arange(18) % 6, "single-6c", 48)
    assert (ds.tensors()[0] - x).abs().max() <= 0.5 / 255 + 1e-6 and torch.equal(ds.masks, m)
    other = dh.data.An8Flower("single-6c", "val", size=48, seed=1, cache=tmp_path, per_class=3, progress=False)
    assert not torch.equal(other.images, ds.images)


def test_interrupted_render_leaves_only_trusted_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = an8flower.render_scenes

    def dies_on_second_chunk(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated interruption")
        return real(*args, **kwargs)

    monkeypatch.setattr(an8flower, "render_scenes", dies_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        dh.data.An8Flower("double-12c", "test", size=32, cache=tmp_path, per_class=8, progress=False)  # 96 images
    root = tmp_path / "double-12c_s32_seed0"
    listed = json.loads((root / "test.json").read_text())["items"]
    assert len(listed) == 64  # the first chunk only, every file complete and checked
    for item in listed:
        assert an8flower._sha256(root / item["image"]) == item["sha256"]
    monkeypatch.setattr(an8flower, "render_scenes", real)
    repaired = dh.data.An8Flower("double-12c", "test", size=32, cache=tmp_path, per_class=8, progress=False)
    clean = dh.data.An8Flower("double-12c", "test", size=32, cache=tmp_path / "clean", per_class=8, progress=False)
    assert torch.equal(repaired.images, clean.images) and torch.equal(repaired.masks, clean.masks)


def test_corrupted_file_is_detected_and_rendered_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = dh.data.An8Flower("single-6c", "train", size=32, cache=tmp_path, per_class=2, progress=False)
    victim = ds.dir / ds.info[5]["image"]
    data = bytearray(victim.read_bytes())
    data[60:70] = bytes(b ^ 0xFF for b in data[60:70])
    victim.write_bytes(bytes(data))
    (ds.dir / ds.info[2]["mask"]).unlink()
    rendered: list[int] = []
    real = an8flower.render_scenes
    monkeypatch.setattr(
        an8flower,
        "render_scenes",
        lambda sc, labels, *a, **k: rendered.append(len(labels)) or real(sc, labels, *a, **k),
    )
    again = dh.data.An8Flower("single-6c", "train", size=32, cache=tmp_path, per_class=2, progress=False)
    assert rendered == [2]  # exactly the two damaged items
    assert torch.equal(again.images, ds.images) and torch.equal(again.masks, ds.masks)


@pytest.mark.parametrize("variant", ["single-6c", "double-12c"])
def test_an_image_depends_only_on_its_scene_not_on_its_batch(variant: str) -> None:
    # 192 scenes: before the fix, the anti-aliasing pass of a chunk re-rendered padding pixels of the scenes with
    # fewer edges than the chunk's most and kept them, so about one image in six changed with its batch-mates
    sc, k = sample_scenes(192, 7), dh.data.VARIANTS[variant]
    labels = torch.arange(192) % k
    together = render_scenes(sc, labels, variant, 64, chunk=192)
    shuffled = torch.randperm(192, generator=torch.Generator().manual_seed(0))
    apart = render_scenes(sc.index(shuffled), labels[shuffled], variant, 64, chunk=5)
    for a, b in zip(together, apart, strict=True):
        assert torch.equal(a[shuffled], b)  # bit for bit, in any order and any chunking


def test_repairing_one_image_gives_the_clean_render_byte_for_byte(tmp_path: Path) -> None:
    clean = dh.data.An8Flower("double-12c", "val", size=48, cache=tmp_path / "a", per_class=8, progress=False)
    damaged = dh.data.An8Flower("double-12c", "val", size=48, cache=tmp_path / "b", per_class=8, progress=False)
    for i in (3, 40, 95):  # one image in each of the two cache chunks, repaired alone or in a pair
        (damaged.dir / damaged.info[i]["image"]).write_bytes(b"not a png")
    repaired = dh.data.An8Flower("double-12c", "val", size=48, cache=tmp_path / "b", per_class=8, progress=False)
    for item in clean.info:
        assert (clean.dir / item["image"]).read_bytes() == (repaired.dir / item["image"]).read_bytes()
        assert (clean.dir / item["mask"]).read_bytes() == (repaired.dir / item["mask"]).read_bytes()


# ---------------------------------------------------------------- the official layout


def test_official_layout_is_read_with_labels_and_binary_masks(tmp_path: Path) -> None:
    root = tmp_path / "an8flower_single_6c"
    (root / "imgs").mkdir(parents=True)
    (tmp_path / "an8flower_single_6c_MASK" / "imgs").mkdir(parents=True)
    rng = np.random.default_rng(0)
    truth = {}
    for c in range(1, 7):
        for i in range(10):
            name = f"class{c}_img{i}_p0_r{i * 36}"
            img = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
            Image.fromarray(img).save(root / "imgs" / f"{name}.jpg")
            mask = np.full((40, 40), 255, np.uint8)  # inverted polarity: white background, black flower
            mask[4 * c : 4 * c + 8, 10:20] = 0
            Image.fromarray(mask).save(tmp_path / "an8flower_single_6c_MASK" / "imgs" / f"{name}.png")
            truth[(c, i)] = mask == 0
    parts = {s: dh.data.An8Flower("single-6c", s, size=40, root=root) for s in ("train", "val", "test")}
    assert [len(p) for p in parts.values()] == [42, 6, 12]
    train = parts["train"]
    assert sorted(set(train.labels.tolist())) == list(range(6))
    for k in range(len(train)):
        _, label, mask = train[k]
        assert mask.dtype == torch.bool and int(mask.sum()) == 80
        rows = mask.any(1).nonzero()[:, 0]
        assert int(rows.min()) == 4 * (label + 1)  # class c's square starts at row 4c: labels are c − 1
    with pytest.raises(ValueError, match="holds 6 classes"):
        dh.data.An8Flower("double-12c", "train", root=root)
    streamed = dh.data.An8Flower("single-6c", "test", size=40, root=root, stream=True)
    assert streamed.images is None and torch.equal(streamed.labels, parts["test"].labels)
    for got, want in zip(streamed.tensors(), parts["test"].tensors(), strict=True):
        assert torch.equal(got, want)  # read item by item from the files: the same split
    assert streamed.identity() == parts["test"].identity()


def test_an_image_folder_with_masks_streams_like_the_rendered_split(tmp_path: Path) -> None:
    split = dh.data.An8Flower("single-6c", "test", progress=False)
    root = export_folder(split, tmp_path / "mine")
    folder = dh.data.masked_folder(root, size=112)
    assert folder.classes == [f"{c:02d}_{n}" for c, n in enumerate(split.classes)]
    order = torch.sort(split.labels, stable=True).indices  # the folder lists class by class, in file-name order
    images, labels, masks = split.tensors()
    for i, j in enumerate(order[:: len(order) // 7].tolist()):
        image, label, mask = folder[int(i * (len(order) // 7))]
        assert label == int(labels[j]) and torch.equal(image, images[j]) and torch.equal(mask, masks[j])
    assert folder.identity() != split.identity() and len(folder.identity()) == 64
    (tmp_path / "mine_MASK" / folder.classes[0] / folder.pairs[0][0].name).unlink()
    with pytest.raises(FileNotFoundError, match="no mask for .*mine_MASK"):
        dh.data.masked_folder(root)
    with pytest.raises(ValueError, match="missing \\['zebra'\\]"):
        dh.data.masked_folder(root, classes=["zebra"])


def test_render_classes_share_one_scene_and_rotation_sweep_turns_it() -> None:
    images, labels, masks = dh.data.render_classes("double-12c", seed=4, size=48)
    assert torch.equal(labels, torch.arange(12))
    # petals-coloured classes share their mask (the petals), stem-coloured ones theirs
    assert all(torch.equal(masks[0], masks[k]) for k in range(6)) and not torch.equal(masks[0], masks[6])
    sweep, sweep_masks = dh.data.rotation_sweep("single-6c", 2, [0, 90, 180, 360], seed=4, size=48)
    assert torch.equal(sweep[0], sweep[3]) and not torch.equal(sweep[0], sweep[1])
    assert sweep_masks.shape == (4, 48, 48) and sweep_masks.any((1, 2)).all()


def test_class_difference_is_zero_outside_the_coloured_parts() -> None:
    diff, touched, outside = dh.data.class_difference("single-6c", 0, 3, seed=2, size=64)
    assert outside == 0.0 and diff[touched].max() > 0.3
    assert diff.shape == touched.shape == (64, 64)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_renderer_on_cuda_agrees_with_cpu() -> None:
    cpu = render("double-12c", 24, size=64, seed=9)
    gpu = render("double-12c", 24, size=64, seed=9, device="cuda")
    assert gpu[0].device.type == "cuda"
    torch.testing.assert_close(gpu[1].cpu(), cpu[1])
    assert (gpu[2].cpu() != cpu[2]).float().mean() < 1e-3  # a boundary pixel may round the other way
    assert ((gpu[0].cpu() - cpu[0]).abs() > 1e-3).float().mean() < 1e-2


def test_part_maps_reproduce_the_cached_masks(tmp_path: Path) -> None:
    ds = dh.data.An8Flower("double-12c", "val", size=40, cache=tmp_path, per_class=6, progress=False)  # 72: 2 batches
    parts = ds.part_maps()
    assert parts.shape == ds.masks.shape and parts.dtype == torch.long
    coloured = torch.zeros(len(ds), len(dh.data.PARTS), dtype=torch.bool)
    for i, label in enumerate(ds.labels.tolist()):
        coloured[i, list(dh.data.coloured_parts("double-12c", label))] = True
    assert torch.equal(coloured.gather(1, parts.flatten(1)).view_as(parts), ds.masks)
    assert set(parts.unique().tolist()) >= {0, 2, 3, 5}  # background, stem, leaves and petals all appear


def test_one_per_class_picks_the_kth_image_of_every_class() -> None:
    labels = torch.tensor([2, 0, 1, 0, 2, 1, 1])
    assert dh.data.one_per_class(labels).tolist() == [1, 2, 0]
    assert dh.data.one_per_class(labels, k=1).tolist() == [3, 5, 4]
    with pytest.raises(ValueError, match="class 0 has 2 images"):
        dh.data.one_per_class(labels, k=2)
