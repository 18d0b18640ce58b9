"""The localisation score on planted masks, hand-computed values and a slow reference."""

from __future__ import annotations

import math

import pytest
import torch

from dvehelpers import evaluate

from .conftest import assert_iou_agrees, decided_top1


def square(h0: int, h1: int, w0: int, w1: int, size: int = 20) -> torch.Tensor:
    m = torch.zeros(size, size, dtype=torch.bool)
    m[h0:h1, w0:w1] = True
    return m


def test_perfect_map_scores_100_and_inverted_map_0() -> None:
    mask = square(5, 15, 5, 15)[None]
    assert evaluate.mean_iou(mask.float() * 3 + 1, mask) == pytest.approx(100)
    assert evaluate.mean_iou((~mask).float(), mask) == 0
    assert torch.equal(evaluate.iou_curve(mask.float(), mask), torch.ones(19, dtype=torch.float64))


def test_half_overlapping_square_is_one_third() -> None:
    mask = square(0, 10, 0, 10)[None]  # area 100
    heat = square(0, 10, 5, 15)[None].float()  # area 100, overlap 50: IoU = 50 / 150
    torch.testing.assert_close(evaluate.iou_curve(heat, mask), torch.full((19,), 1 / 3, dtype=torch.float64))


def test_graded_map_hand_computed_per_threshold() -> None:
    mask = torch.tensor([[[1, 1, 0, 0]]], dtype=torch.bool)
    heat = torch.tensor([[[1.0, 0.5, 0.25, 0.0]]])  # normalised already
    got = evaluate.per_image_iou(heat, mask, torch.tensor([0.2, 0.3, 0.5, 0.9]))
    # t=0.2: pred {0,1,2} -> 2/3; t=0.3: {0,1} -> 1; t=0.5: {0,1} -> 1; t=0.9: {0} -> 1/2
    torch.testing.assert_close(got, torch.tensor([[2 / 3, 1.0, 1.0, 0.5]], dtype=torch.float64))


def test_constant_heatmap_scores_zero_not_nan() -> None:
    mask = square(2, 6, 2, 6)[None]
    assert torch.equal(evaluate.iou_curve(torch.full((1, 20, 20), 0.7), mask), torch.zeros(19, dtype=torch.float64))


def test_empty_mask_and_bad_shapes_are_errors() -> None:
    with pytest.raises(ValueError, match="mask of image 1 is empty"):
        evaluate.mean_iou(torch.rand(2, 8, 8), torch.stack([square(0, 2, 0, 2, 8), square(0, 0, 0, 0, 8)]))
    with pytest.raises(ValueError, match="both be B×H×W"):
        evaluate.mean_iou(torch.rand(2, 8, 8), torch.ones(2, 8, 9, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"values in \(0, 1\]"):
        evaluate.iou_curve(torch.rand(1, 8, 8), square(0, 2, 0, 2, 8)[None], torch.tensor([0.0, 0.5]))


def test_matches_a_slow_reference_on_random_maps() -> None:
    g = torch.Generator().manual_seed(0)
    heat = torch.rand(7, 16, 16, generator=g) ** 3 * 5 - 1
    masks = torch.rand(7, 16, 16, generator=g) < 0.3
    t = evaluate.THRESHOLDS
    ref = torch.zeros(7, len(t), dtype=torch.float64)
    for i in range(7):
        h = heat[i].double()
        h = (h - h.min()) / (h.max() - h.min())
        for k, thr in enumerate(t):
            pred = h >= thr
            ref[i, k] = (pred & masks[i]).sum() / (pred | masks[i]).sum()
    torch.testing.assert_close(evaluate.per_image_iou(heat, masks), ref)
    assert evaluate.mean_iou(heat, masks) == pytest.approx(float(ref.mean(0).mean() * 100))


def test_evaluate_loop_equals_per_batch_scores_and_explain() -> None:
    import dvehelpers as dh

    from .conftest import small

    model = small("vgg", dtype=torch.float32)
    images, labels, masks = dh.data.render("single-6c", 10, size=112, seed=3)
    res = evaluate.evaluate(
        model, images, masks, ["gradcam", "activation"], target=labels, batch_size=4, progress=False
    )
    assert set(res) == {"gradcam", "activation"} and res["gradcam"].shape == (10, 19)
    # batches of 4 score exactly what explaining them gives (same batches, same arithmetic) ...
    batched = evaluate.heatmaps(model, images, "gradcam", target=labels, batch_size=4)
    torch.testing.assert_close(res["gradcam"], evaluate.per_image_iou(batched, masks), rtol=0, atol=0)
    # ... and agree with one batch of 10 wherever rounding cannot move a pixel across a threshold
    whole = dh.explain("gradcam", model, images, labels)
    expected = evaluate.per_image_iou(whole, masks)
    assert_iou_agrees(batched, whole, res["gradcam"], expected)
    assert evaluate.summary(res)["gradcam"] == pytest.approx(float(expected.mean() * 100), abs=0.05)


def test_salient_area_counts_the_normalised_hot_pixels() -> None:
    heat = torch.zeros(2, 10, 10)
    heat[0, :2] = 1.0  # 20 % of the image at full heat
    heat[1] = torch.linspace(0, 1, 100).view(10, 10)  # half of the pixels at ≥ 0.5
    torch.testing.assert_close(evaluate.salient_area(heat), torch.tensor([0.2, 0.5]))


def test_salient_parts_counts_where_the_hot_pixels_land() -> None:
    parts = torch.zeros(2, 4, 5, dtype=torch.long)
    parts[:, :, 3:] = 2  # columns 3-4 show part 2, the rest part 0
    heat = torch.zeros(2, 4, 5)
    heat[0, 0, 2:5] = 1.0  # three hot pixels: one on part 0, two on part 2
    got = evaluate.salient_parts(heat, parts, n_parts=3)
    torch.testing.assert_close(got[0], torch.tensor([1 / 3, 0.0, 2 / 3]))
    assert got[1].isnan().all()  # nothing is salient: no share is defined
    with pytest.raises(ValueError, match="parts must be shaped like the heatmaps"):
        evaluate.salient_parts(heat, parts[:, :3], n_parts=3)


def test_reference_maps_span_floor_to_ceiling() -> None:
    masks = torch.stack([square(2, 6, 10, 16), square(12, 18, 0, 4)])
    assert evaluate.mean_iou(evaluate.reference_maps("mask", masks), masks) == pytest.approx(100)
    assert evaluate.mean_iou(evaluate.reference_maps("constant", masks), masks) == 0
    torch.testing.assert_close(evaluate.reference_maps("mask_lowres", masks, grid=(20, 20)), masks.float())
    coarse = [evaluate.mean_iou(evaluate.reference_maps("mask_lowres", masks, grid=(g, g)), masks) for g in (2, 5, 10)]
    assert 0 < coarse[0] < coarse[1] < coarse[2] < 100  # the finer the layer, the better a perfect CAM can do
    centre = evaluate.reference_maps("centre", masks)[0]
    assert int(centre.argmax()) in {9 * 20 + 9, 9 * 20 + 10, 10 * 20 + 9, 10 * 20 + 10}
    torch.testing.assert_close(centre, centre.flip(0))
    torch.testing.assert_close(centre, centre.T)
    # pixel centres at 0.025 and 0.275 of the side from the middle; σ = 0.25
    assert float(centre[10, 10] / centre[10, 15]) == pytest.approx(math.exp((0.275**2 - 0.025**2) / (2 * 0.25**2)))
    r = evaluate.reference_maps("random", masks, seed=1)
    assert torch.equal(r, evaluate.reference_maps("random", masks, seed=1)) and r.min() >= 0 and r.max() < 1
    with pytest.raises(ValueError, match="needs grid"):
        evaluate.reference_maps("mask_lowres", masks)
    with pytest.raises(ValueError, match="valid: constant, centre"):
        evaluate.reference_maps("ones", masks)


def test_correlation_against_numpy_and_constant_maps() -> None:
    import numpy as np

    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(4, 6, 6, generator=g), torch.rand(4, 6, 6, generator=g)
    ref = [np.corrcoef(a[i].flatten().numpy(), b[i].flatten().numpy())[0, 1] for i in range(4)]
    torch.testing.assert_close(evaluate.correlation(a, b), torch.tensor(ref, dtype=torch.float64))
    torch.testing.assert_close(evaluate.correlation(a, 3 * a + 1), torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(evaluate.correlation(a, -a), -torch.ones(4, dtype=torch.float64))
    flat = torch.zeros(2, 6, 6)
    assert evaluate.correlation(flat, flat.clone()).tolist() == [1.0, 1.0]  # unchanged maps read 1
    assert evaluate.correlation(flat, a[:2]).tolist() == [0.0, 0.0]


def test_class_sensitivity_reads_one_for_a_class_agnostic_method_and_matches_a_loop() -> None:
    import dvehelpers as dh

    from .conftest import seeded_images, small

    model, x = small("vgg", dtype=torch.float32), seeded_images(2, b=3, dtype=torch.float32)
    agnostic = evaluate.class_sensitivity(model, x, "activation", progress=False)
    assert agnostic.r.shape == (3, 5) and torch.equal(agnostic.r, torch.ones(3, 5, dtype=torch.float64))
    assert not agnostic.empty.any() and agnostic.mean() == 1.0
    got = evaluate.class_sensitivity(model, x, "gradcam", {"layer": "relu4_2"}, batch_size=2, progress=False)
    # class_sensitivity takes the top-1 class in batches of 2, the loop below from all 3 at once: the premise is
    # that rounding cannot flip it
    assert decided_top1(dh.train.logits(model, x)).all()
    top1 = dh.train.predict(model, x)
    for i in range(3):  # one image and one class at a time, the other classes in offset order
        ref = dh.explain("gradcam", model, x[i : i + 1], int(top1[i]), layer="relu4_2")
        for o in range(1, 6):
            other = dh.explain("gradcam", model, x[i : i + 1], (int(top1[i]) + o) % 6, layer="relu4_2")
            assert got.r[i, o - 1].item() == pytest.approx(evaluate.correlation(ref, other).item(), abs=1e-5)
            assert got.empty[i, o - 1].item() == bool(other.max() == other.min())
    assert (got.r < 0.999).any()  # Grad-CAM does change with the class


def test_sensitivity_mean_can_skip_empty_maps() -> None:
    s = evaluate.Sensitivity(torch.tensor([[0.0, 0.8], [0.6, 0.0]]), torch.tensor([[True, False], [False, True]]))
    assert s.mean() == pytest.approx(0.35) and s.mean(skip_empty=True) == pytest.approx(0.7)


def test_salient_shares_group_the_parts() -> None:
    from dvehelpers.data import PARTS

    parts = torch.full((1, 2, 4), PARTS.index("background"))
    parts[0, 0, :2] = PARTS.index("stem")
    parts[0, 1, :1] = PARTS.index("leaves")
    heat = torch.ones(1, 2, 4)
    heat[0, 1, 3] = 0.0  # seven salient pixels: three on the plant, four on the background
    got = evaluate.salient_shares(heat, parts, {"plant": ["stem", "leaves"], "bg": ["background"]})
    assert got["plant"].tolist() == [pytest.approx(3 / 7)] and got["bg"].tolist() == [pytest.approx(4 / 7)]
    with pytest.raises(ValueError, match="unknown part"):
        evaluate.salient_shares(heat, parts, {"x": ["root"]})


def test_confusions_list_the_off_diagonal_counts_largest_first() -> None:
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2])
    preds = torch.tensor([0, 2, 1, 0, 0, 2, 2])
    assert evaluate.confusions(labels, preds, ["a", "b", "c"]) == [("b", "a", 2), ("a", "c", 1)]
    assert evaluate.confusions(labels, labels, ["a", "b", "c"]) == []


def test_heatmaps_and_labelled_jobs_equal_explain_on_the_whole_set() -> None:
    import dvehelpers as dh

    from .conftest import small

    model = small("alexnet", dtype=torch.float32)
    images, labels, masks = dh.data.render("single-6c", 7, size=112, seed=4)
    heat = evaluate.heatmaps(model, images, "gradcam", {"layer": "relu4"}, target=labels, batch_size=3)
    torch.testing.assert_close(heat, dh.explain("gradcam", model, images, labels, layer="relu4"))
    fixed = evaluate.heatmaps(model, images, "gradcam", target=2, batch_size=3)  # one class for every image
    torch.testing.assert_close(fixed, dh.explain("gradcam", model, images, 2))
    jobs = {"cam 4": ("gradcam", {"layer": "relu4"}), "cam 5": ("gradcam", {})}
    res = evaluate.evaluate(model, images, masks, jobs, target=labels, batch_size=3, progress=False)
    assert list(res) == ["cam 4", "cam 5"]
    scores = evaluate.summary(res)
    assert list(scores.values()) == sorted(scores.values(), reverse=True)  # best first
    # the same batches of 3: the same arithmetic, so the very same IoUs
    torch.testing.assert_close(res["cam 4"], evaluate.per_image_iou(heat, masks), rtol=0, atol=0)
    # batches of 3 against one batch of 7: the maps agree to rounding, and so do the IoUs wherever rounding cannot
    # move a pixel across a threshold (a heat value on a threshold may land on either side of it)
    batched = evaluate.heatmaps(model, images, "gradcam", target=labels, batch_size=3)
    whole = dh.explain("gradcam", model, images, labels)
    torch.testing.assert_close(res["cam 5"], evaluate.per_image_iou(batched, masks), rtol=0, atol=0)
    assert_iou_agrees(batched, whole, res["cam 5"], evaluate.per_image_iou(whole, masks))


def test_per_class_means_by_hand() -> None:
    values = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 4.0], [7.0, 6.0]])
    got = evaluate.per_class(values, torch.tensor([2, 0, 2, 0]), n_classes=3)
    torch.testing.assert_close(got[[0, 2]], torch.tensor([[5.0, 4.0], [3.0, 2.0]]))
    assert got[1].isnan().all()  # a class without images has no mean
    values[1, 0] = torch.nan  # an undefined value is left out of its class's mean
    torch.testing.assert_close(evaluate.per_class(values, torch.tensor([2, 0, 2, 0]), 3)[0], torch.tensor([7.0, 4.0]))
