"""Builders, paper layer names and safe checkpoint loading."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision import models as tvm

import dvehelpers as dh


@pytest.mark.parametrize(
    ("arch", "cls", "k", "size"),
    [
        ("vgg", tvm.VGG, 6, 112),
        ("alexnet", tvm.AlexNet, 12, 112),
        ("vgg16", tvm.VGG, 1000, 224),
        ("alexnet-imagenet", tvm.AlexNet, 1000, 224),
    ],
)
def test_build_uses_torchvision_classes(arch: str, cls: type, k: int, size: int) -> None:
    model = dh.models.build(arch, k)
    assert isinstance(model, cls) and not model.training
    with torch.no_grad():
        assert model(torch.rand(1, 3, size, size)).shape == (1, k)


def test_build_is_deterministic_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = dh.models.build("vgg", 6)
    assert torch.equal(torch.rand(3), expected)
    b = dh.models.build("vgg", 6)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_build_rejects_bad_arguments() -> None:
    with pytest.raises(
        ValueError, match="unknown arch 'resnet'; valid: vgg, alexnet, vgg16, alexnet-imagenet, efficientnet-lite0"
    ):
        dh.models.build("resnet", 6)
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        dh.models.build("vgg", 1)


def test_paper_layer_names_of_imagenet_models() -> None:
    vgg = dh.models.layer_names(dh.models.build("vgg16", 1000))
    assert vgg[:5] == ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1"]
    assert vgg[-10:] == [
        "conv5_3",
        "relu5_3",
        "pool5",
        "avgpool",
        "flatten",
        "fc6",
        "relu6",
        "fc7",
        "relu7",
        "fc8",
    ]  # dropout is a no-op in eval mode: no layer of the graph
    alex = dh.models.layer_names(dh.models.build("alexnet-imagenet", 1000))
    assert alex == [
        "conv1",
        "relu1",
        "pool1",
        "conv2",
        "relu2",
        "pool2",
        "conv3",
        "relu3",
        "conv4",
        "relu4",
        "conv5",
        "relu5",
        "pool5",
        "avgpool",
        "flatten",
        "fc6",
        "relu6",
        "fc7",
        "relu7",
        "fc8",
    ]
    assert len(set(vgg)) == len(vgg)


def test_layers_resolve_by_paper_name_module_path_and_index() -> None:
    model = dh.models.build("vgg16", 1000)
    i = dh.models.resolve_layer(model, "relu5_3")
    assert dh.models.resolve_layer(model, "features.29") == i == dh.models.resolve_layer(model, i - 38)
    assert dh.models.default_cam_layer(model) == "relu5_3"
    assert dh.models.default_cam_layer(dh.models.build("alexnet", 6)) == "relu5"
    # the same names drive the methods: relu5_3 by name and by module path give one map
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(
        dh.explain("gradcam", model, x, 3, layer="relu5_3"),
        dh.explain("gradcam", model, x, 3, layer="features.29"),
    )


def test_generic_sequential_gets_block_or_flat_names() -> None:
    blocks = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4, 2),
    )
    assert dh.models.layer_names(blocks) == [
        "conv1_1",
        "relu1_1",
        "conv1_2",
        "relu1_2",
        "pool1",
        "flatten",
        "fc2",
    ]
    flat = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Dropout(),
        nn.Linear(4, 2),
        nn.ReLU(),
        nn.Dropout(),
    )
    assert dh.models.layer_names(flat) == [  # the batch norm is folded into conv1, dropout is no layer
        "conv1",
        "relu1",
        "pool1",
        "conv2",
        "relu2",
        "flatten",
        "fc3",
        "relu3",
    ]


def test_save_and_load_round_trip(tmp_path) -> None:  # noqa: ANN001
    model = dh.models.build("alexnet", 6)
    with torch.no_grad():
        model.features[0].bias.fill_(0.25)
    path = dh.models.save(model, tmp_path / "m.pt", "alexnet", {"accuracy": 0.5})
    assert not list(tmp_path.glob("*.tmp"))
    loaded = dh.models.load(path)
    assert loaded.meta == {"accuracy": 0.5} and not loaded.training
    assert all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True)
    )


def test_load_by_name_from_the_model_dir(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(dh.models.checkpoints, "MODEL_DIR", tmp_path)
    dh.models.save(dh.models.build("vgg", 6), tmp_path / "an8flower-vgg-test.pt", "vgg")
    assert isinstance(dh.models.load("an8flower-vgg-test"), tvm.VGG)
    with pytest.raises(
        FileNotFoundError, match="no model named 'nope'; valid names: an8flower-vgg-test, efficientnet-lite0, vgg16"
    ):
        dh.models.load("nope")


def test_corrupt_checkpoint_gives_clear_error(tmp_path) -> None:  # noqa: ANN001
    path = dh.models.save(dh.models.build("vgg", 6), tmp_path / "m.pt", "vgg")
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    path.write_bytes(bytes(data[: len(data) - 100]))
    with pytest.raises(ValueError, match="cannot read checkpoint .*corrupt"):
        dh.models.load(path)


def test_unsafe_pickle_is_refused(tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "evil.pt"
    torch.save({"arch": "vgg", "num_classes": 6, "state_dict": {}, "meta": {"x": object()}}, path)
    with pytest.raises(ValueError, match="not a weights-only file"):
        dh.models.load(path)


def test_mismatched_checkpoint_gives_clear_error(tmp_path) -> None:  # noqa: ANN001
    path = dh.models.save(dh.models.build("vgg", 6), tmp_path / "m.pt", "alexnet")
    with pytest.raises(ValueError, match="does not match its architecture: missing"):
        dh.models.load(path)
    blob = torch.load(path, weights_only=True)
    blob["arch"], blob["num_classes"] = "vgg", 12
    torch.save(blob, path)
    with pytest.raises(ValueError, match="wrong shapes.*classifier.6"):
        dh.models.load(path)


def test_imagenet_weights_absent_is_a_clear_error_not_a_download(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for name, fn in (("vgg16", "vgg16"), ("alexnet-imagenet", "alexnet")):
        with pytest.raises(
            FileNotFoundError,
            match=rf"(?s)not in the torch hub cache.*models\.{fn}\(weights='IMAGENET1K_V1'\)",
        ):
            dh.models.load(name)
    assert not any(tmp_path.rglob("*.pth"))


def test_imagenet_weights_from_cache_and_from_path(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    ref = dh.models.build("alexnet-imagenet", 1000)
    with torch.no_grad():
        ref.classifier[-1].bias.fill_(0.5)
    cached = tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    cached.parent.mkdir(parents=True)
    torch.save(ref.state_dict(), cached)
    for source in ("alexnet-imagenet", cached):
        model = dh.models.load(source)
        assert isinstance(model, tvm.AlexNet) and torch.equal(model.classifier[-1].bias, ref.classifier[-1].bias)
        assert model.meta["categories"][0] == "tench"


def test_layer_shape_equals_the_module_outputs() -> None:
    from .conftest import small

    vgg, alex = small("vgg", dtype=torch.float32), small("alexnet", dtype=torch.float32)
    x = torch.zeros(1, 3, 112, 112)
    assert dh.models.layer_shape(vgg, "pool5") == tuple(vgg.features(x).shape[1:]) == (128, 3, 3)
    assert dh.models.layer_shape(alex, "pool5", size=112) == tuple(alex.features(x).shape[1:])
    relu5_2 = dh.models.resolve_layer(vgg, "relu5_2")
    assert dh.models.layer_shape(vgg, "relu5_2") == tuple(vgg.features[: relu5_2 + 1](x).shape[1:]) == (128, 7, 7)
    assert dh.models.layer_shape(vgg, "pool5", size=(64, 96)) == (128, 2, 3)
    assert dh.models.layer_shape(vgg, "fc7") == (256,)


def test_one_message_says_how_to_get_every_missing_imagenet_model(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert not dh.models.has_weights("vgg16") and not dh.models.has_weights("alexnet-imagenet")
    msg = dh.models.how_to_get(["vgg16", "alexnet-imagenet"])
    assert msg.count("python -c") == 1  # said once, for both
    assert "models.vgg16(weights='IMAGENET1K_V1'); torchvision.models.alexnet(weights='IMAGENET1K_V1')" in msg
    assert "vgg16-397923af.pth, alexnet-owt-7be5be79.pth" in msg
    cached = tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    cached.parent.mkdir(parents=True)
    cached.touch()
    assert dh.models.has_weights("alexnet-imagenet") and not dh.models.has_weights("vgg16")
    with pytest.raises(ValueError, match="valid: vgg16, alexnet-imagenet"):
        dh.models.has_weights("vgg")
