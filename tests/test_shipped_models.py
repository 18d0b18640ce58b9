"""Every shipped an8Flower model is accurate on its test split and on a test split of another render seed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import dvehelpers as dh

SHIPPED = [(v, a) for v in dh.data.VARIANTS for a in ("vgg", "alexnet")]
PER_CLASS = 50  # 300 / 600 test images per split: 99 % allows 3 / 6 mistakes


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("an8flower")


@pytest.mark.parametrize(("variant", "arch"), SHIPPED)
@pytest.mark.parametrize("seed", [0, 1])
def test_shipped_model_is_accurate(variant: str, arch: str, seed: int, cache: Path) -> None:
    model = dh.models.load(dh.train.model_name(arch, variant))
    assert model.meta["variant"] == variant and model.meta["data_seed"] == 0
    test = dh.data.An8Flower(
        variant, "test", size=model.meta["image_size"], seed=seed, cache=cache, per_class=PER_CLASS, progress=False
    )
    x, y, _ = test.tensors()
    assert dh.train.accuracy(model, x, y) >= 0.99


@pytest.mark.parametrize(("variant", "arch"), SHIPPED)
def test_shipped_metadata_is_complete(variant: str, arch: str) -> None:
    path = dh.models.MODEL_DIR / f"{dh.train.model_name(arch, variant)}.pt"
    meta = dh.models.load(path).meta
    assert {"accuracy", "command", "version", "data_seed", "image_size", "epochs", "history"} <= set(meta)
    assert meta["accuracy"]["test"] >= 0.99 and meta["accuracy"]["test_seed1"] >= 0.99
    assert "train" in meta["command"] and path.with_suffix(".json").is_file()
    # the checkpoint is a weights-only file: loading it runs no pickled code
    assert isinstance(torch.load(path, weights_only=True)["state_dict"], dict)
