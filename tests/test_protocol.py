"""The whole an8Flower evaluation: jobs, the cache (atomic, checked, resumable), the table, the command line."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import pytest
import torch

import dvehelpers as dh
from dvehelpers import protocol
from dvehelpers.evaluate import iou
from dvehelpers.evaluate.protocol import Cache, Sizes, run
from tests.conftest import export_folder

QUICK = Sizes.default(quick=True)


def test_default_jobs_cover_every_method_and_the_named_settings() -> None:
    jobs = protocol.default_jobs()
    assert {m for m, _ in jobs.values()} == set(dh.METHODS)
    assert jobs["kl_dve (reading=gradient)"] == ("kl_dve", {"reading": "gradient"})
    assert jobs["fbi (keep_fraction=0.3)"] == ("fbi", {"keep_fraction": 0.3})
    picked = protocol.select_jobs(["kl_dve", "gradcam"])
    assert set(picked) == {"kl_dve", "kl_dve (reading=gradient)", "kl_dve (reading=elementwise)", "gradcam"}
    assert protocol.select_jobs({"mine": ("fbi", {"mask": "none"})}) == {"mine": ("fbi", {"mask": "none"})}
    with pytest.raises(ValueError, match="unknown method 'gradcam\\+\\+'.*valid: "):
        protocol.select_jobs(["gradcam++"])
    with pytest.raises(TypeError, match="list of names"):
        protocol.select_jobs("gradcam")
    with pytest.raises(ValueError, match="unknown variant/model"):
        run(["gradcam"], variants=["triple-18c"], cache=False, progress=False)
    with pytest.raises(ValueError, match="unknown reference"):
        run(["gradcam"], references=["oracle"], cache=False, progress=False)


def test_cache_round_trip_and_nothing_half_written_is_trusted(tmp_path: Path) -> None:
    store = Cache(tmp_path)
    payload = {"iou": torch.rand(5, 3), "pointing": {"quantus": torch.tensor([True, False])}, "layers": ["fc8"]}
    store.put("k1", payload)
    got = store.get("k1")
    assert got is not None and torch.equal(got["iou"], payload["iou"]) and got["layers"] == ["fc8"]
    assert store.get("missing") is None
    path = tmp_path / "k1.pt"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])  # killed while writing (had it not been atomic)
    assert store.get("k1") is None
    path.write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))  # one flipped bit
    assert store.get("k1") is None
    (tmp_path / "k2.pt").write_bytes(raw)  # a sound entry under another key is not this key's
    assert store.get("k2") is None
    assert not list(tmp_path.glob("*.tmp"))


def _tiny_run(cache: Path | bool, **kw: object) -> protocol.Evaluation:
    return run(
        ["gradcam", "activation"],
        variants=["single-6c"],
        archs=["alexnet"],
        sizes=QUICK,
        references=("constant", "mask"),
        cache=cache,
        progress=False,
        **kw,
    )


def _numbers(ev: protocol.Evaluation) -> list[dict]:
    """Every number of the table but the wall time."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in ev.rows()]


def test_a_killed_run_resumes_from_its_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clean = _tiny_run(False)
    # 4 rows x 2 batches of 32 of the 60 quick test images, and each method's sanity checks on batch 0 (images 0-5)
    assert clean.parts == 4 * 2 + 2
    real = iou.explain  # the name the evaluation's loops call

    def dies_on_activation(name: str, *args: object, **kwargs: object) -> torch.Tensor:
        if name == "activation":
            raise KeyboardInterrupt  # the user pressed Ctrl-C during the second method of the first batch
        return real(name, *args, **kwargs)

    monkeypatch.setattr(iou, "explain", dies_on_activation)
    with pytest.raises(KeyboardInterrupt):
        _tiny_run(tmp_path)
    # the sanity units come first: gradcam's is kept, activation's was running
    assert not list(tmp_path.glob("*.pt")) and [p.name for p in tmp_path.glob("*.parts/*.pt")] == ["c0000000.pt"]
    monkeypatch.setattr(iou, "explain", real)

    resumed = _tiny_run(tmp_path)
    assert resumed.parts == 4 * 2 + 2 - 1  # everything but the part that was kept
    assert len(resumed.computed) == 4 and _numbers(resumed) == _numbers(clean)
    assert not list(tmp_path.glob("*.parts"))  # finished entries replace their parts
    # damage one finished entry: only it is recomputed, and the numbers come out the same
    victim = max(tmp_path.glob("*.pt"), key=lambda p: p.stat().st_mtime)
    victim.write_bytes(victim.read_bytes()[:100])
    again = _tiny_run(tmp_path)
    assert len(again.computed) == 1 and again.parts in (2, 3) and _numbers(again) == _numbers(clean)
    # a damaged part is not trusted either
    store = Cache(tmp_path)
    store.put_part("k", "b0000003", {"iou": torch.ones(2, 3)})
    part = tmp_path / "k.parts" / "b0000003.pt"
    assert torch.equal(store.get_part("k", "b0000003")["iou"], torch.ones(2, 3))  # type: ignore[index]
    part.write_bytes(part.read_bytes()[:-7])
    assert store.get_part("k", "b0000003") is None
    with pytest.raises(ValueError, match="letters and digits"):
        store.put_part("k", "../escape", {})
    assert _tiny_run(tmp_path).computed == []  # and a run with nothing missing computes nothing


def test_two_labels_of_one_setting_share_their_cached_entry(tmp_path: Path) -> None:
    jobs = {"mine": ("gradcam", {}), "same again": ("gradcam", {})}
    ev = run(jobs, variants=["single-6c"], archs=["alexnet"], sizes=QUICK, references=(), cache=tmp_path)
    a, b = (ev.entries[(k, "single-6c", "alexnet")] for k in jobs)
    assert torch.equal(a["iou"], b["iou"]) and len(list(tmp_path.glob("*.pt"))) == 1
    assert not list(tmp_path.glob("*.parts"))


def test_an_image_folder_with_masks_is_evaluated_like_the_split_it_holds(tmp_path: Path) -> None:
    split = dh.data.An8Flower("single-6c", "test", progress=False)
    folder = export_folder(split, tmp_path / "mine")
    rendered, mine = _tiny_run(False), _tiny_run(False, folders={"single-6c": folder})
    for a, b in zip(rendered.rows(), mine.rows(), strict=True):  # the same images, listed class by class
        assert a["method"] == b["method"] and a["mean_iou"] == pytest.approx(b["mean_iou"], abs=1e-9)
        assert a["pointing_torchray"] == pytest.approx(b["pointing_torchray"], abs=1e-9)
    with pytest.raises(ValueError, match="holds 6 classes; the double-12c models have 12"):
        run(["gradcam"], variants=["double-12c"], archs=["alexnet"], folders={"double-12c": folder}, cache=False)


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> protocol.Evaluation:
    """The whole protocol at DVE_QUICK sizes: every method and setting, both variants, both shipped models."""
    return run(sizes=QUICK, cache=tmp_path_factory.mktemp("cache"), progress=False)


def test_the_whole_protocol_runs_at_quick_sizes(quick: protocol.Evaluation) -> None:
    jobs = list(protocol.default_jobs()) + [f"reference: {r}" for r in protocol.REFERENCE_ROWS]
    assert set(quick.entries) == {(j, v, a) for j in jobs for v in dh.data.VARIANTS for a in protocol.ARCHS}
    rows = quick.rows()
    for r in rows:
        assert 0 <= r["ci_low"] <= r["mean_iou"] <= r["ci_high"] <= 100
        assert 0 <= r["deletion_auc"] <= 1 and 0 <= r["insertion_auc"] <= 1
        assert not math.isnan(r["random_r"]) or r["method"].startswith("reference")
    by = {(r["method"], r["variant"], r["model"]): r for r in rows}
    for v in dh.data.VARIANTS:
        for a in protocol.ARCHS:
            mask, const = by[("reference: mask", v, a)], by[("reference: constant", v, a)]
            # planted maps with known scores: the mask itself is perfect; a constant map finds nothing, and its
            # all-way tie in the pointing game scores the share of the image the mask covers, not a hit
            assert mask["mean_iou"] == 100 and mask["pointing_quantus"] == 100 and mask["pointing_torchray"] == 100
            masks = dh.data.An8Flower(v, "test", per_class=quick.sizes.per_class, progress=False).tensors()[2]
            area = float(masks.flatten(1).float().mean(1).mean() * 100)
            assert const["mean_iou"] == 0 and const["pointing_quantus"] == pytest.approx(area, rel=1e-4)
            assert 0 < area < 15
            assert by[("reference: centre", v, a)]["pointing_quantus"] <= 100
            # the literal KL-DVE reading does not depend on the class (notebook 01): flagged
            assert by[("kl_dve", v, a)]["class_r"] == pytest.approx(1.0) and by[("kl_dve", v, a)]["class_blind"]
            assert not by[("gradcam", v, a)]["class_blind"]
            assert math.isnan(by[("activation", v, a)]["class_r"])  # class-agnostic: not asked
    # per class: the mean over classes of balanced per-class means is the overall mean
    for (m, v, a), per in ((k[:3], quick.per_class(k[1], k[2])[k[0]]) for k in list(quick.entries)[:6]):
        assert per.mean().item() == pytest.approx(by[(m, v, a)]["mean_iou"], rel=1e-9)


def test_results_are_written_as_csv_markdown_and_figures(quick: protocol.Evaluation, tmp_path: Path) -> None:
    paths = quick.write(tmp_path)
    names = {p.name for p in paths}
    assert {"evaluation.csv", "evaluation.md", "per_class.csv", "ranking.png", "class_sensitivity.png"} <= names
    assert all(p.stat().st_size > 0 for p in paths)
    with (tmp_path / "evaluation.csv").open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(quick.entries)
    first = quick.rows()[0]
    assert float(table[0]["mean_iou"]) == pytest.approx(first["mean_iou"]) and table[0]["method"] == first["method"]
    md = (tmp_path / "evaluation.md").read_text()
    assert "| method |" in md and "reference: mask" in md
    text = str(quick.summary())
    assert text.splitlines()[2].split()[0] != "reference:"  # methods first, references last


def test_bootstrap_interval_matches_the_normal_approximation() -> None:
    g = torch.Generator().manual_seed(3)
    scores = torch.rand(400, generator=g, dtype=torch.float64) * 100
    lo, hi = protocol.bootstrap_interval(scores, 2000, seed=0)
    half = 1.96 * scores.std().item() / 400**0.5
    assert lo < scores.mean().item() < hi
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.1)
    assert protocol.bootstrap_interval(torch.full((50,), 7.0, dtype=torch.float64), 100, 0) == (7.0, 7.0)


def test_bootstrap_interval_in_chunks_equals_one_draw(monkeypatch: pytest.MonkeyPatch) -> None:
    scores = torch.rand(300, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    g = torch.Generator().manual_seed(0)  # the textbook form: every resample drawn at once
    means = scores[torch.randint(300, (1000, 300), generator=g)].mean(1)
    want = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    assert list(protocol.bootstrap_interval(scores, 1000, 0)) == want  # one chunk
    monkeypatch.setattr(protocol, "_RESAMPLED", 300 * 7)  # chunks of 7 resamples, the last one short
    assert list(protocol.bootstrap_interval(scores, 1000, 0)) == pytest.approx(want, abs=1e-12)


def test_command_line_writes_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dvehelpers.__main__ import main

    argv = ["evaluate", "--quick", "--methods", "gradcam", "--variants", "single-6c", "--archs", "alexnet"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "gradcam" in out and "reference: mask" in out and "entries computed" in out
    assert (tmp_path / "evaluation.csv").is_file() and list((tmp_path / "cache").glob("*.pt"))
    assert main([*argv, "--out", str(tmp_path)]) == 0
    assert "0 of 6 entries computed" in capsys.readouterr().out


def test_rescoring_on_a_sub_grid_and_the_curve_peaks(quick: protocol.Evaluation) -> None:
    key = ("fbi", "double-12c", "vgg")
    iou = quick.entries[key]["iou"].double()
    full = quick.mean_iou("double-12c", "vgg")
    assert full["fbi"] == pytest.approx(quick.row(*key)["mean_iou"], rel=1e-12)
    half = quick.mean_iou("double-12c", "vgg", [0.5, 0.1])  # 0.1 is column 1, 0.5 column 9 of 0.05 … 0.95
    assert half["fbi"] == pytest.approx(float(iou[:, [1, 9]].mean() * 100), rel=1e-12)
    assert half["reference: mask"] == 100 and half["reference: constant"] == 0
    with pytest.raises(ValueError, match="not evaluated"):
        quick.mean_iou("double-12c", "vgg", [0.33])
    tau, peak = quick.peaks("double-12c", "vgg")["fbi"]
    curve = iou.mean(0) * 100
    assert peak == pytest.approx(float(curve.max())) and tau == pytest.approx(0.05 * (int(curve.argmax()) + 1))
    row = quick.row(*key)
    assert row["deletion_ci_low"] <= row["deletion_auc"] <= row["deletion_ci_high"]
    assert row["faithfulness_images"] == len(quick.entries[key]["deletion"])


def test_default_folders_are_the_repository_s(monkeypatch: pytest.MonkeyPatch) -> None:
    """results/, data/cache and data/models sit at the repository's top, wherever the modules that name them live."""
    root = Path(__file__).resolve().parents[1]
    monkeypatch.delenv("DVE_RESULTS", raising=False)
    monkeypatch.delenv("DVE_DATA", raising=False)
    assert protocol.default_results() == root / "results"
    assert dh.data.default_cache() == root / "data" / "cache"
    assert Path(dh.models.checkpoints.MODEL_DIR).resolve() == root / "data" / "models" or "DVE_MODELS" in os.environ
