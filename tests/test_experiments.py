"""The blur test and the timing helper of dvehelpers.experiments: torchvision, slow loops and hand-built results."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import pytest
import torch
import torchvision.transforms.v2.functional as TF

import dvehelpers as dh
from dvehelpers import experiments
from dvehelpers.evaluate import THRESHOLDS, per_image_iou
from dvehelpers.evaluate.experiments import BlurTest, blur_test, gaussian_blur, map_iou, median_seconds

from .conftest import decided_top1, small, snapshot

# ---------------------------------------------------------------- gaussian_blur


@pytest.mark.parametrize("sigma", [0.2, 1.0, 1.7, 2.0])
def test_gaussian_blur_equals_torchvision_with_a_3_sigma_kernel_and_reflect_padding(sigma: float) -> None:
    """Kernel truncated at ⌈3σ⌉, reflected borders: torchvision's gaussian_blur (reflect padding) to rounding."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 20, 7, generator=g, dtype=torch.float64)  # σ = 2: radius 6, one less than the width
    radius = max(1, math.ceil(3 * sigma))
    expected = TF.gaussian_blur(x, [2 * radius + 1] * 2, [sigma, sigma])
    torch.testing.assert_close(gaussian_blur(x, sigma), expected, rtol=0, atol=1e-12)


def test_gaussian_blur_matches_a_slow_reflected_loop() -> None:
    """A float64 loop over the 2-D kernel exp(−(dy²+dx²)/2σ²)/Z with reflected indices (no shared code)."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 2, 9, 6, generator=g, dtype=torch.float64)
    sigma, r = 0.8, 3  # ⌈2.4⌉ = 3
    offsets = range(-r, r + 1)
    w = {(dy, dx): math.exp(-(dy * dy + dx * dx) / (2 * sigma**2)) for dy in offsets for dx in offsets}
    z = sum(w.values())

    def reflect(i: int, n: int) -> int:
        return -i if i < 0 else (2 * (n - 1) - i if i >= n else i)

    ref = torch.zeros_like(x)
    for c in range(2):
        for i in range(9):
            for j in range(6):
                ref[0, c, i, j] = (
                    sum(wt * x[0, c, reflect(i + dy, 9), reflect(j + dx, 6)] for (dy, dx), wt in w.items()) / z
                )
    torch.testing.assert_close(gaussian_blur(x, sigma), ref, rtol=0, atol=1e-12)


def test_gaussian_blur_of_an_impulse_is_the_normalised_kernel_and_keeps_the_sum() -> None:
    """Away from the borders the blur keeps the total and an impulse becomes the separable Gaussian."""
    x = torch.zeros(1, 1, 21, 21, dtype=torch.float64)
    x[0, 0, 10, 10] = 1.0
    sigma = 1.5
    out = gaussian_blur(x, sigma)
    t = torch.arange(-5, 6, dtype=torch.float64)  # radius ⌈4.5⌉ = 5
    k = torch.exp(-t.square() / (2 * sigma**2))
    k = k / k.sum()
    torch.testing.assert_close(out[0, 0, 5:16, 5:16], k[:, None] * k[None, :], rtol=0, atol=1e-15)
    assert out[0, 0, :5].abs().max() == 0 and out[0, 0, :, 16:].abs().max() == 0  # nothing beyond 3σ
    assert float(out.sum()) == pytest.approx(1.0, abs=1e-12)
    assert out[0, 0, 10, 10] == out.max() and out[0, 0, 10, 11] == out[0, 0, 11, 10]  # peak in place, symmetric


def test_gaussian_blur_keeps_a_constant_image_and_sigma_zero_is_the_identity() -> None:
    """A flat image stays flat (per channel, borders included); σ = 0 returns the images unchanged."""
    x = torch.tensor([0.25, 0.5, 1.0], dtype=torch.float64).view(1, 3, 1, 1).expand(2, 3, 10, 12).contiguous()
    torch.testing.assert_close(gaussian_blur(x, 2.0), x, rtol=0, atol=1e-15)
    noise = torch.rand(2, 3, 10, 12)
    assert torch.equal(gaussian_blur(noise, 0.0), noise)
    assert not torch.equal(gaussian_blur(noise, 0.5), noise)  # a small σ does blur


def test_gaussian_blur_rejects_negative_and_too_large_sigma() -> None:
    """σ < 0 is an error; so is a radius ⌈3σ⌉ reaching the shorter side, which reflection cannot pad."""
    x = torch.rand(1, 3, 20, 7)
    with pytest.raises(ValueError, match="sigma must be ≥ 0"):
        gaussian_blur(x, -0.1)
    with pytest.raises(ValueError, match=r"too large for \(20, 7\) images"):
        gaussian_blur(x, 2.1)  # radius 7 = the width
    assert gaussian_blur(x, 2.0).shape == x.shape  # radius 6: the largest that fits


# ---------------------------------------------------------------- map_iou


def slow_map_iou(a: torch.Tensor, b: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """Per image and threshold, IoU of {â ≥ τ} and {b̂ ≥ τ} (min-max normalised): both empty 1, one empty 0."""
    out = torch.zeros(a.shape[0], dtype=torch.float64)
    for i in range(a.shape[0]):
        na, nb = dh.maps.normalize(a[i : i + 1].double())[0], dh.maps.normalize(b[i : i + 1].double())[0]
        ious = []
        for t in thresholds.tolist():
            sa, sb = na >= t, nb >= t
            union = int((sa | sb).sum())
            ious.append(1.0 if union == 0 else int((sa & sb).sum()) / union)
        out[i] = sum(ious) / len(ious)
    return out


def test_map_iou_matches_a_slow_loop_over_thresholds() -> None:
    """Random maps, including a constant one against itself (1) and against a graded one (0)."""
    g = torch.Generator().manual_seed(0)
    a = torch.rand(6, 12, 9, generator=g) ** 2 * 3 - 1
    b = a + 0.4 * torch.randn(6, 12, 9, generator=g)
    a[4], b[4] = 2.0, 2.0  # both constant: empty at every τ > 0
    a[5] = 7.0  # constant against graded: empty against non-empty
    got = map_iou(a, b)
    torch.testing.assert_close(got, slow_map_iou(a, b, THRESHOLDS))
    assert got[4] == 1.0 and got[5] == 0.0 and (got[:4] < 1).all() and (got[:4] > 0).all()
    custom = torch.tensor([0.9, 0.1, 0.5])  # unsorted on purpose
    torch.testing.assert_close(map_iou(a, b, custom), slow_map_iou(a, b, custom))


def test_map_iou_hand_computed_on_tiny_maps() -> None:
    """Identical (or rescaled) maps agree fully; a 1×4 pair worked out threshold by threshold."""
    a = torch.tensor([[[0.0, 1.0, 2.0, 4.0]]])  # normalised 0, .25, .5, 1
    b = torch.tensor([[[4.0, 0.0, 2.0, 3.0]]])  # normalised 1, 0, .5, .75
    # τ=0.2: {1,2,3} vs {0,2,3} -> 2/4; τ=0.5 (reached exactly): {2,3} vs {0,2,3} -> 2/3; τ=0.8: {3} vs {0} -> 0
    got = map_iou(a, b, [0.2, 0.5, 0.8])
    torch.testing.assert_close(got, torch.tensor([(1 / 2 + 2 / 3 + 0.0) / 3], dtype=torch.float64))
    assert map_iou(a, b, [1.5]).item() == 1.0  # nothing reaches τ in either map: agreement
    assert map_iou(a, 10 * a + 3).item() == 1.0  # only the normalised maps count
    assert map_iou(a, a.flip(-1), [0.6]).item() == 0.0  # {3} vs {0}


def test_map_iou_rejects_mismatched_shapes() -> None:
    """Maps must be B×H×W and of one shape."""
    with pytest.raises(ValueError, match="B×H×W of one shape"):
        map_iou(torch.rand(2, 4, 4), torch.rand(2, 4, 5))
    with pytest.raises(ValueError, match="B×H×W of one shape"):
        map_iou(torch.rand(4, 4), torch.rand(4, 4))


# ---------------------------------------------------------------- BlurTest


def hand_built() -> BlurTest:
    """Four images at three σ: image 0 never flips, 1 flips at σ index 1, 2 is wrong at σ = 0 and right again at
    index 2 (only the first wrong σ counts), 3 flips at index 2."""
    correct = torch.tensor(
        [
            [True, True, False, True],
            [True, False, False, True],
            [True, False, True, False],
        ]
    )
    same_map = torch.tensor(
        [
            [1.0, 1.0, 1.0, 1.0],
            [0.9, 0.6, 0.8, 0.7],
            [0.8, 0.3, 0.5, 0.2],
        ],
        dtype=torch.float64,
    )
    mask_iou = torch.tensor([[0.5, 0.4, 0.3, 0.2], [0.4, 0.4, 0.2, 0.2], [0.1, 0.2, 0.3, 0.0]], dtype=torch.float64)
    return BlurTest(torch.tensor([0.0, 1.0, 3.0], dtype=torch.float64), correct, same_map, mask_iou)


def test_blur_test_result_flip_index_at_flip_and_accuracy_by_hand() -> None:
    """First wrong σ per image (len(sigmas) if never), the map agreement there (NaN if never), accuracy."""
    r = hand_built()
    assert r.flip_index().tolist() == [3, 1, 0, 2]
    at = r.at_flip()
    assert math.isnan(at[0]) and at[1:].tolist() == [0.6, 1.0, 0.2]
    torch.testing.assert_close(r.accuracy(), torch.tensor([0.75, 0.5, 0.5], dtype=torch.float64))
    never = BlurTest(r.sigmas, torch.ones(3, 2, dtype=torch.bool), r.same_map[:, :2], r.mask_iou[:, :2])
    assert never.flip_index().tolist() == [3, 3] and never.at_flip().isnan().all()


# ---------------------------------------------------------------- blur_test


def test_blur_test_equals_the_experiment_written_out_and_leaves_no_trace() -> None:
    """At every σ: prediction = label, map_iou with the unblurred map and mask IoU of the blurred image's own
    top-1 map, batch by batch; at σ = 0 the maps agree perfectly and only the planted wrong label is an error."""
    model = small("vgg", dtype=torch.float32)
    images, _, masks = dh.data.render("single-6c", 4, size=112, seed=3)
    labels = dh.train.predict(model, images)
    labels[0] = (labels[0] + 1) % 6  # one wrong label: correct compares with the labels, not the unblurred top-1
    params = {"layer": "relu4_2"}
    sigmas = [0.0, 1.5, 4.0]
    model.features[0].weight.requires_grad_(False)
    before = snapshot(model)
    got = blur_test(model, images, labels, masks, sigmas, "gradcam", params, batch_size=3)
    after = snapshot(model)
    assert before[:4] == after[:4] and all(torch.equal(before[4][k], after[4][k]) for k in before[4])

    def maps(x: torch.Tensor) -> torch.Tensor:  # the same batches as blur_test, one explain call each
        return torch.cat([dh.explain("gradcam", model, x[i : i + 3], **params) for i in range(0, 4, 3)])

    base = maps(images)
    torch.testing.assert_close(got.sigmas, torch.tensor(sigmas, dtype=torch.float64))
    for k, sigma in enumerate(sigmas):
        x = images if sigma == 0 else gaussian_blur(images, sigma)
        heat = maps(x)
        with torch.no_grad():
            logits = model(x)  # all 4 at once, blur_test's predict in one batch too: the premise is a decided top-1
        assert decided_top1(logits).all()
        assert torch.equal(got.correct[k], logits.argmax(1) == labels)
        torch.testing.assert_close(got.same_map[k], map_iou(heat, base))
        torch.testing.assert_close(got.mask_iou[k], per_image_iou(heat, masks).mean(1))
    assert got.accuracy()[0] == 0.75 and got.correct[0].tolist() == [False, True, True, True]
    assert torch.equal(got.same_map[0], torch.ones(4, dtype=torch.float64))  # maps follow the top-1, not the labels
    assert (got.same_map[1:] < 1).any() and (got.mask_iou > 0).any()  # blur does move the map; IoU is not 0
    assert not got.correct.all()  # some prediction flips, so the comparison with the labels is exercised
    unmasked = blur_test(model, images, labels, None, sigmas, "gradcam", params, batch_size=3)  # photos: no mask
    assert torch.equal(unmasked.correct, got.correct) and torch.equal(unmasked.same_map, got.same_map)
    assert unmasked.mask_iou.isnan().all()


# ---------------------------------------------------------------- median_seconds


def test_median_seconds_warms_up_interleaves_and_takes_the_median(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each job runs repeats + 1 times (one warm-up), rounds interleave the jobs, and only the timed calls
    count: the result is the median of the planted durations."""
    durations = {"a": [5.0, 1.0, 3.0, 100.0], "b": [2.0, 2.0, 9.0, 4.0]}
    clock = [0.0]
    calls: list[str] = []

    def job(name: str) -> Callable[[], None]:
        def run() -> None:
            calls.append(name)
            n = calls.count(name)
            clock[0] += 1000.0 if n == 1 else durations[name][n - 2]  # a slow warm-up, left out

        return run

    monkeypatch.setattr(experiments.time, "perf_counter", lambda: clock[0])
    got = median_seconds({"a": job("a"), "b": job("b")}, repeats=3)
    assert calls == ["a", "b"] * 4
    assert got == {"a": 3.0, "b": 2.0} and all(isinstance(v, float) for v in got.values())
    calls.clear()
    assert median_seconds({"a": job("a"), "b": job("b")}, repeats=4) == {"a": 4.0, "b": 3.0}  # mean of the middle two
    assert len(calls) == 10


def test_median_seconds_measures_real_time() -> None:
    """Unpatched, a 20 ms sleep reads about 20 ms and a no-op far less."""
    got = median_seconds({"sleep": lambda: time.sleep(0.02), "noop": lambda: None}, repeats=3)
    assert 0.019 < got["sleep"] < 0.5 and got["noop"] < 0.005


def test_median_seconds_needs_at_least_one_round() -> None:
    """No rounds means no median: a clear error instead of a statistics exception."""
    with pytest.raises(ValueError, match="at least 1"):
        dh.experiments.median_seconds({"a": lambda: None}, repeats=0)
