"""Training is deterministic and learns; predictions and accuracy agree with the model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import dvehelpers as dh
from dvehelpers import train

from .conftest import decided_top1


def test_predict_and_accuracy_restore_mode() -> None:
    model = dh.models.build("alexnet", 6).train()
    x = torch.rand(5, 3, 112, 112)
    pred = train.predict(model, x, batch_size=2)
    assert model.training
    model.eval()
    with torch.no_grad():
        logits = model(x)  # in one batch of 5, predict in batches of 2: the premise is a decided top-1
    assert decided_top1(logits, 1e-5).all()
    assert torch.equal(pred, logits.argmax(1))
    assert train.accuracy(model, x, pred) == 1.0


def test_training_is_deterministic_and_learns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DVE_DATA", str(tmp_path))
    monkeypatch.setattr(dh.data.an8flower, "PER_CLASS", {"train": 12, "val": 4, "test": 4})
    monkeypatch.delenv("DVE_QUICK", raising=False)
    a, meta = train.train("single-6c", "alexnet", size=48, max_epochs=3, batch_size=16, progress=False)
    b, _ = train.train("single-6c", "alexnet", size=48, max_epochs=3, batch_size=16, progress=False)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert meta["epochs"] == len(meta["history"]) >= 1 and not a.training
    # early stopping keeps the best validation epoch
    x, y, _ = dh.data.An8Flower("single-6c", "val", size=48, progress=False).tensors()
    assert train.accuracy(a, x, y) == max(h["val_accuracy"] for h in meta["history"])
    fresh = dh.models.build("alexnet", 6)
    assert any(not torch.equal(p, q) for p, q in zip(a.state_dict().values(), fresh.state_dict().values(), strict=True))


def test_snapshots_are_taken_when_the_validation_accuracy_first_reaches_each_level() -> None:
    kw = {"size": 48, "check_every": 2, "batch_size": 16, "train_per_class": 60, "progress": False}
    snaps = train.snapshots("single-6c", "alexnet", [0.6, 0.3], **kw)
    assert [s.val_accuracy >= level for s, level in zip(snaps, (0.3, 0.6), strict=True)] == [True, True]
    assert snaps[0].steps < snaps[1].steps and snaps[0].steps % 2 == 0
    xv, yv, _ = dh.data.An8Flower("single-6c", "val", size=48, seed=0).tensors()
    for s in snaps:  # the recorded accuracy is the copy's own, and the copy is in eval mode
        assert train.accuracy(s.model, xv, yv) == s.val_accuracy and not s.model.training
    again = train.snapshots("single-6c", "alexnet", [0.3], **kw)[0]  # one run, deterministic
    assert again.steps == snaps[0].steps
    for a, b in zip(again.model.state_dict().values(), snaps[0].model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match=r"accuracies must be in \(0, 1\]"):
        train.snapshots("single-6c", "alexnet", [1.5], **kw)
