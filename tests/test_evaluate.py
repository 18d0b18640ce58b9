"""The localisation score on planted masks, hand-computed values and a slow reference."""

from __future__ import annotations

import pytest
import torch

from dvehelpers import evaluate


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
    expected = evaluate.per_image_iou(dh.explain("gradcam", model, images, labels), masks)
    torch.testing.assert_close(res["gradcam"], expected)
    assert evaluate.summary(res)["gradcam"] == pytest.approx(float(expected.mean() * 100))


def test_salient_area_counts_the_normalised_hot_pixels() -> None:
    heat = torch.zeros(2, 10, 10)
    heat[0, :2] = 1.0  # 20 % of the image at full heat
    heat[1] = torch.linspace(0, 1, 100).view(10, 10)  # half of the pixels at ≥ 0.5
    torch.testing.assert_close(evaluate.salient_area(heat), torch.tensor([0.2, 0.5]))
