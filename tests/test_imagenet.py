"""EfficientNet-Lite0 with its real ImageNet weights, offline: it classifies the shipped photos, and every file the
package trusts (those weights, the shipped checkpoints, their interpretations) is refused when its bytes change."""

from __future__ import annotations

import datetime
import io
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dvehelpers as dh


@pytest.fixture(scope="module")
def lite0() -> torch.nn.Module:
    return dh.models.load("efficientnet-lite0")


def top5(model: torch.nn.Module, names: list[str]) -> list[list[str]]:
    x = dh.images.preprocess(model, dh.images.photos(names))
    with torch.no_grad():
        idx = model(x).topk(5, dim=1).indices
    cats = model.meta["categories"]
    return [[cats[j] for j in row] for row in idx.tolist()]


def test_the_real_classifier_sees_a_cat_and_an_espresso(lite0: torch.nn.Module) -> None:
    cat, coffee = top5(lite0, ["chelsea", "coffee"])
    assert {"Egyptian cat", "tabby", "tiger cat"} & set(cat), cat
    assert "espresso" in coffee, coffee
    assert lite0.meta["image_size"] == 224 and len(lite0.meta["categories"]) == 1000
    assert sum(p.numel() for p in lite0.parameters()) == 4_652_008  # upstream: 4.7 M


def test_every_photo_with_an_expected_class_has_it_in_the_top5(lite0: torch.nn.Module) -> None:
    names = [n for n, p in dh.images.PHOTOS.items() if p.expected]
    for name, classes in zip(names, top5(lite0, names), strict=True):
        assert set(dh.images.PHOTOS[name].expected) & set(classes), (name, classes)


def test_preprocessing_is_the_weights_own() -> None:
    """(pixel − 127) / 128 on 0–255 pixels for EfficientNet-Lite0, torchvision's statistics for VGG-16, nothing for a
    model that records none (the an8Flower models take [0, 1] images)."""
    x = torch.tensor([0.0, 127 / 255, 1.0]).view(1, 3, 1, 1)
    lite = torch.nn.Module()
    lite.meta = {"normalize": {"mean": [127 / 255] * 3, "std": [128 / 255] * 3}}
    torch.testing.assert_close(dh.images.preprocess(lite, x).flatten(), torch.tensor([-127 / 128, 0.0, 1.0]))
    assert torch.equal(dh.images.preprocess(dh.models.build("vgg", 6), x), x)
    vgg = dh.images.imagenet_normalize(x).flatten()
    torch.testing.assert_close(vgg, torch.tensor([-0.485 / 0.229, (127 / 255 - 0.456) / 0.224, (1 - 0.406) / 0.225]))


def test_photos_are_square_rgb_in_unit_range_whatever_their_source() -> None:
    x = dh.images.photos(size=96)
    assert x.shape == (len(dh.images.PHOTOS), 3, 96, 96) and x.min() >= 0 and x.max() <= 1
    camera = dh.images.photos(["camera"], size=32)  # a greyscale source: three equal channels
    assert torch.equal(camera[0, 0], camera[0, 1]) and torch.equal(camera[0, 1], camera[0, 2])
    with pytest.raises(ValueError, match="unknown photo 'lena'; valid: chelsea, coffee"):
        dh.images.photos(["lena"])


# ---------------------------------------------------------------- damaged files are refused


def damage(path: Path, at: float = 0.6, n: int = 100) -> None:
    """Flip ``n`` bytes inside the file (in its tensor data, past the headers), leaving its length alone."""
    data = bytearray(path.read_bytes())
    start = int(len(data) * at)
    for i in range(start, start + n):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_damaged_efficientnet_lite0_weights_are_refused(tmp_path: Path) -> None:
    source = dh.models.checkpoints.lite0_weights_file()
    copy = tmp_path / source.name
    shutil.copy(source, copy)
    assert isinstance(dh.models.load(copy), torch.nn.Module)  # an intact copy loads by path
    damage(copy)
    torch.load(copy, weights_only=True)  # torch itself reads the damaged file without a word …
    with pytest.raises(ValueError, match=r"efficientnet-lite0-57934424\.pth is damaged.*pip install --force-reinstall"):
        dh.models.load(copy)  # … the loader does not


@pytest.mark.parametrize("name", ["an8flower-vgg-single-6c", "an8flower-alexnet-double-12c"])
def test_damaged_shipped_checkpoints_and_interpretations_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    shipped = Path(dh.models.checkpoints.MODEL_DIR)
    (tmp_path / "vebi").mkdir()
    for rel in (f"{name}.pt", f"{name}.json", f"vebi/{name}.pt"):
        shutil.copy(shipped / rel, tmp_path / rel)
    monkeypatch.setattr(dh.models.checkpoints, "MODEL_DIR", tmp_path)
    model = dh.models.load(name)
    x = dh.data.render(name.split("-", 2)[2], 1, size=112, seed=0)[0]
    assert dh.explain("vebi", model, x).shape == (1, 112, 112)  # intact copies: explained with the shipped fit
    damage(tmp_path / "vebi" / f"{name}.pt", at=0.8, n=20)
    with pytest.raises(ValueError, match=rf"{name}\.pt is damaged.*make models"):
        dh.explain("vebi", model, x)
    damage(tmp_path / f"{name}.pt")
    torch.load(tmp_path / f"{name}.pt", weights_only=True)  # readable, with wrong weights
    with pytest.raises(ValueError, match=rf"{name}\.pt is damaged.*git checkout data/models.*make models"):
        dh.models.load(name)


def test_the_recorded_checksums_are_those_of_the_shipped_files() -> None:
    shipped = Path(dh.models.checkpoints.MODEL_DIR)
    for pt in sorted(shipped.glob("*.pt")):
        meta = pt.with_suffix(".json")
        assert dh.integrity.recorded(meta) == dh.integrity.sha256(pt), pt.name
        assert dh.integrity.recorded(meta, "interpretation_sha256") == dh.integrity.sha256(shipped / "vebi" / pt.name)


# ---------------------------------------------------------------- your own photo


def encoded(array: np.ndarray, fmt: str = "PNG", mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, fmt)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width``×``height`` (no pixel data): what a decoder reads before any pixel."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the file is empty"),
        (b"this is not a picture" * 10, "not an image file that can be read"),
        ("truncated", "truncated or damaged"),
        ("huge", r"12000×9000 pixels; at most 100 megapixels"),
        ("heavy", r"the file is 51 MiB; at most 50 MiB"),
    ],
)
def test_a_file_that_cannot_be_used_is_named_with_the_reason(data: object, message: str) -> None:
    if data == "truncated":
        jpeg = encoded(dh.images.photo_array("chelsea"), "JPEG")
        data = jpeg[: len(jpeg) // 2]
    elif data == "huge":
        data = png_header_only(12000, 9000)
    elif data == "heavy":
        data = b"\0" * (51 * 2**20)
    with pytest.raises(ValueError, match=message):
        dh.images.decode(data)  # type: ignore[arg-type]


def test_a_large_photo_is_resized_and_greyscale_or_transparent_ones_are_made_rgb() -> None:
    big = np.asarray(Image.fromarray(dh.images.photo_array("chelsea")).resize((4000, 3000)))
    x = dh.images.decode(encoded(big, "JPEG"))
    assert x.shape == (1, 3, 224, 224) and x.min() >= 0 and x.max() <= 1
    grey = dh.images.decode(encoded(np.full((30, 40), 128, np.uint8)), size=16)
    assert torch.allclose(grey, torch.full_like(grey, 128 / 255), atol=1e-6)
    rgba = np.zeros((20, 20, 4), np.uint8)  # black, but fully transparent on the left half
    rgba[:, 10:, 3] = 255
    img = dh.images.decode(encoded(rgba), size=20)
    assert torch.allclose(img[0, :, :, :8], torch.ones(3, 20, 8)) and img[0, :, :, 12:].max() == 0


def upload(name: str, kind: str, data: bytes) -> dict:
    """One file as ipywidgets 8's FileUpload holds it."""
    return {
        "name": name,
        "type": kind,
        "size": len(data),
        "content": memoryview(data),
        "last_modified": datetime.datetime(2026, 1, 1),
    }


def test_the_photo_explorer_explains_an_upload_and_reports_a_bad_one(lite0: torch.nn.Module) -> None:
    ex = dh.widgets.photo_explorer(lite0, method="gradcam")
    n = len(ex.names)
    assert ex.explorer.figure is not None and ex.top()[0][0] == "Egyptian cat"  # starts on the offline photos
    cat = encoded(dh.images.photo_array("coffee"), "JPEG")
    ex.upload.value = (upload("mine.jpg", "image/jpeg", cat),)
    assert ex.explorer.index.value == n and ex.names[-1] == "mine.jpg" and "espresso" in ex.top5.value
    assert "mine.jpg: shown as image" in ex.message.value and ex.explorer.error.value == ""
    ex.explorer.target.value = 281  # any class can be the target: "tabby"
    assert "target: tabby" in ex.explorer.title()
    ex.upload.value = (upload("notes.txt", "text/plain", b"hello"),)
    assert "notes.txt: not an image file" in ex.message.value and len(ex.names) == n + 1  # nothing added


def test_an_image_folder_reads_as_labelled_tensors_and_names_what_is_wrong(
    tmp_path: Path, lite0: torch.nn.Module
) -> None:
    cats = lite0.meta["categories"]
    for cls, photo in (("Egyptian cat", "chelsea"), ("espresso", "coffee")):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / f"{photo}.JPG").write_bytes(encoded(dh.images.photo_array(photo), "JPEG"))
        (tmp_path / cls / "notes.txt").write_text("not read: only image endings are")
    x, y = dh.images.image_folder(tmp_path, cats)
    assert [cats[int(k)] for k in y] == ["Egyptian cat", "espresso"]
    ref = dh.images.photos(["chelsea", "coffee"])
    assert x.shape == ref.shape and (x - ref).abs().mean() < 0.02  # the same photos, through a JPEG round trip
    (tmp_path / "kitten").mkdir()
    with pytest.raises(ValueError, match=r"\['kitten'\].*not class names"):
        dh.images.image_folder(tmp_path, cats)
    (tmp_path / "kitten").rmdir()
    (tmp_path / "espresso" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match=r"broken.png: not an image file"):
        dh.images.image_folder(tmp_path, cats)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        dh.images.image_folder(tmp_path / "empty", cats)
