"""Fourier DVE: eqs. 3–4 against a slow float64 NumPy reference, the filters, the noise filter, the default
layer, class independence, errors, the σ sweep and the step-by-step intermediates."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dvehelpers as dh
from dvehelpers.methods import fourier

from .conftest import seeded_images, small, snapshot

#: Distinct widths, so that a swap of G₁ and G₂ (or σ₁ used twice) cannot pass.
SIGMAS: dict[str, float] = {"sigma_low": 0.8, "sigma_high": 2.0}

# ---------------------------------------------------------------- the slow reference (NumPy, float64)


def ref_centred_gaussian(h: int, w: int, sigma: float) -> np.ndarray:
    """G_σ laid out centred: integer frequencies −h//2 … with the zero frequency at pixel (h//2, w//2)."""
    u = np.arange(h) - h // 2
    v = np.arange(w) - w // 2
    return np.exp(-(u[:, None] ** 2 + v[None, :] ** 2) / (2.0 * sigma**2))


def ref_transfer(h: int, w: int, sigma: float) -> np.ndarray:
    """G_σ in the DFT's order (zero frequency at [0, 0]), to multiply ``np.fft.fft2`` output."""
    return np.fft.ifftshift(ref_centred_gaussian(h, w, sigma))


def ref_band(x: np.ndarray, sigma_low: float, sigma_high: float, highpass: str) -> np.ndarray:
    """Eq. 3's term for one 2-D map: F⁻¹(F(x)G₁) ⊙ (F⁻¹(F(x)(1 − G₂)) or, as printed, F⁻¹(F(x ⊙ (1 − G₂))))."""
    h, w = x.shape
    spectrum = np.fft.fft2(x)
    low = np.fft.ifft2(spectrum * ref_transfer(h, w, sigma_low)).real
    if highpass == "fourier":
        high = np.fft.ifft2(spectrum * (1 - ref_transfer(h, w, sigma_high))).real
    else:
        high = np.fft.ifft2(np.fft.fft2(x * (1 - ref_centred_gaussian(h, w, sigma_high)))).real
    return low * high


def ref_noise_filter(s: np.ndarray, a: float, v_sums: str) -> np.ndarray:
    """Eq. 4 written out entry by entry: S_ij (1 + v_i + v_j − a Σ_k S_ik S_jk)."""
    n = s.shape[0]
    assert s.shape == (n, n)
    out = np.empty_like(s)
    for i in range(n):
        for j in range(n):
            if v_sums == "rows":
                vi = sum(s[i, k] ** 2 for k in range(n))
                vj = sum(s[j, k] ** 2 for k in range(n))
            else:
                vi = sum(s[k, i] ** 2 for k in range(n))
                vj = sum(s[k, j] ** 2 for k in range(n))
            dot = sum(s[i, k] * s[j, k] for k in range(n))
            out[i, j] = s[i, j] * (1 + vi + vj - a * dot)
    return out


def ref_normalize(x: np.ndarray) -> np.ndarray:
    """Min-max of every image of a batch over all its other axes."""
    flat = x.reshape(x.shape[0], -1)
    lo, hi = flat.min(1, keepdims=True), flat.max(1, keepdims=True)
    return ((flat - lo) / (hi - lo)).reshape(x.shape)


def ref_upsample(s: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear, half-pixel centres (the only torch call in the reference besides the forward pass)."""
    return F.interpolate(torch.from_numpy(s)[:, None], size=size, mode="bilinear", align_corners=False)[:, 0].numpy()


def reference(
    maps: np.ndarray,
    images: np.ndarray,
    *,
    sigma_low: float = fourier.SIGMA_LOW,  # the package's chosen defaults: values, not logic
    sigma_high: float = fourier.SIGMA_HIGH,
    highpass: str = "fourier",
    denoise: bool = True,
    kernel_scale: float = 1,
    v_sums: str = "rows",
    targeted: bool = False,
    targeted_on: str = "map",
) -> tuple[np.ndarray, np.ndarray]:
    """(signed signal, heatmap) of Fourier DVE from the layer's maps, one map at a time."""
    b, c, h, w = maps.shape
    size = images.shape[-2:]
    s = np.zeros((b, h, w))
    for n in range(b):
        for i in range(c):
            s[n] += ref_band(maps[n, i], sigma_low, sigma_high, highpass)
        if denoise:
            s[n] = ref_noise_filter(s[n], kernel_scale, v_sums)
    signal = ref_upsample(s, size)
    if targeted and targeted_on == "map":
        signal = ref_upsample(np.stack([ref_band(s[n], sigma_low, sigma_high, highpass) for n in range(b)]), size)
    elif targeted:
        scale = size[0] / h
        weight = ref_normalize(signal)
        signal = np.stack(
            [
                [
                    ref_band(images[n, ch] * weight[n], sigma_low * scale, sigma_high * scale, highpass)
                    for ch in range(3)
                ]
                for n in range(b)
            ]
        )
    heat = ref_normalize(signal.sum(1) if signal.ndim == 4 else signal)
    return signal, heat


@functools.cache
def vgg() -> nn.Module:
    """The small float64 VGG, shared by the tests that only read it."""
    return small("vgg")


@functools.cache
def alexnet() -> nn.Module:
    """The small float64 AlexNet, shared by the tests that only read it."""
    return small("alexnet")


def layer_maps(model: nn.Module, x: torch.Tensor, layer: str) -> np.ndarray:
    """The explained layer's maps from the shared forward pass."""
    index = dh.models.resolve_layer(model, layer)
    return dh.engine.record(model, x, upto=index).output(index).numpy()


def assert_matches_reference(model: nn.Module, x: torch.Tensor, maps_of: str, **params: Any) -> None:
    """``dh.explain`` (signed and heatmap) equals the reference on the maps of layer ``maps_of``, to 1e-6."""
    ref_params = {k: v for k, v in params.items() if k != "layer"}
    signed, heat = reference(layer_maps(model, x, maps_of), x.numpy(), **ref_params)
    assert (signed.reshape(len(x), -1).std(1) > 0).all()  # a non-degenerate case
    got_signed = dh.explain("fourier_dve", model, x, output="signed", **params).numpy()
    got_heat = dh.explain("fourier_dve", model, x, **params).numpy()
    np.testing.assert_allclose(got_signed, signed, rtol=1e-6, atol=1e-6 * np.abs(signed).max())
    np.testing.assert_allclose(got_heat, heat, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- equality with the reference

NOISE: list[dict[str, Any]] = [
    {"highpass": "fourier", "denoise": False},
    {"highpass": "fourier", "denoise": True, "kernel_scale": 1, "v_sums": "rows"},
    {"highpass": "fourier", "denoise": True, "kernel_scale": 2, "v_sums": "rows"},
    {"highpass": "fourier", "denoise": True, "kernel_scale": 1, "v_sums": "columns"},
    {"highpass": "fourier", "denoise": True, "kernel_scale": 2, "v_sums": "columns"},
    {"highpass": "spatial", "denoise": False},
    {"highpass": "spatial", "denoise": True, "kernel_scale": 1, "v_sums": "rows"},
    {"highpass": "spatial", "denoise": True, "kernel_scale": 2, "v_sums": "columns"},
]


@pytest.mark.parametrize("params", NOISE, ids=lambda p: "-".join(str(v) for v in p.values()))
def test_dve_equals_the_slow_reference_on_odd_maps(params: dict[str, Any]) -> None:
    """Eqs. 3–4 on VGG's default layer at 56² (pool3, 7×7), both high-pass readings, every noise-filter variant."""
    assert_matches_reference(vgg(), seeded_images(10, b=2, size=56), "pool3", **SIGMAS, **params)


@pytest.mark.parametrize("highpass", fourier.HIGHPASS)
def test_dve_equals_the_slow_reference_on_even_maps(highpass: str) -> None:
    """AlexNet's pool5 is 6×6 at 112²: an even grid, where the centred layout differs from a symmetric one."""
    assert_matches_reference(alexnet(), seeded_images(11, b=2), "pool5", highpass=highpass, **SIGMAS)


def test_dve_equals_the_slow_reference_on_a_named_layer_and_default_sigmas() -> None:
    """An explicit layer (VGG's relu5_2 at 112², 128 maps of 7×7) and the default σ."""
    assert_matches_reference(vgg(), seeded_images(12, b=2), "relu5_2", layer="relu5_2")


@pytest.mark.parametrize("highpass", fourier.HIGHPASS)
def test_dve_equals_the_slow_reference_on_non_square_maps_without_denoising(highpass: str) -> None:
    """56×64 images give 7×8 maps: with denoise=False the filters must follow each axis's own length."""
    x = torch.rand(2, 3, 56, 64, generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    assert_matches_reference(vgg(), x, "pool3", highpass=highpass, denoise=False, **SIGMAS)


@pytest.mark.parametrize(
    ("arch", "size", "highpass", "targeted_on"),
    [
        ("vgg", 56, "fourier", "map"),
        ("vgg", 56, "spatial", "image"),
        ("alexnet", 112, "fourier", "image"),
        ("alexnet", 112, "spatial", "map"),
    ],
)
def test_targeted_dve_equals_the_slow_reference(arch: str, size: int, highpass: str, targeted_on: str) -> None:
    """§3.1: the band once more, on the map or per RGB channel on the masked image (σ × H/h), summed over RGB."""
    model, layer = (vgg(), "pool3") if arch == "vgg" else (alexnet(), "pool5")
    params = {"highpass": highpass, "targeted": True, "targeted_on": targeted_on, "v_sums": "columns"}
    assert_matches_reference(model, seeded_images(14, b=2, size=size), layer, **SIGMAS, **params)


# ---------------------------------------------------------------- the filters

SHAPES = [(7, 7), (6, 6), (5, 8), (8, 5), (1, 4), (112, 112)]


@pytest.mark.parametrize(("h", "w"), SHAPES)
def test_gaussian_transfer_is_one_at_zero_frequency_and_symmetric(h: int, w: int) -> None:
    """G(0, 0) = 1, G(u, v) = G(−u, −v) on the DFT grid, G = Gᵀ on square grids, and the reference's values."""
    for sigma in (0.5, 1.0, 3.0):
        g = fourier.gaussian_transfer(h, w, sigma, dtype=torch.float64)
        assert g[0, 0] == 1
        flipped = g[(-torch.arange(h)) % h][:, (-torch.arange(w)) % w]
        assert torch.equal(g, flipped)
        if h == w:
            assert torch.equal(g, g.T)
        np.testing.assert_allclose(g.numpy(), ref_transfer(h, w, sigma), rtol=1e-12, atol=1e-15)
    assert fourier.gaussian_transfer(h, w, 1.0).dtype == torch.float32


@pytest.mark.parametrize(("h", "w"), [*SHAPES, (2, 3), (9, 4)])
def test_centred_gaussian_peaks_at_the_middle_pixel(h: int, w: int) -> None:
    """The centred layout has its single maximum, 1, at (h//2, w//2), for odd and even sides."""
    g = fourier.centred_gaussian(h, w, 1.5, dtype=torch.float64)
    assert g[h // 2, w // 2] == 1
    assert (g.flatten() < 1).sum() == h * w - 1
    np.testing.assert_allclose(g.numpy(), ref_centred_gaussian(h, w, 1.5), rtol=1e-12, atol=1e-15)


def test_one_minus_g2_removes_the_mean() -> None:
    """The Fourier high-pass has zero mean for any map, so the band of a constant map is zero."""
    constant = torch.full((2, 3, 7, 8), 5.0, dtype=torch.float64)
    assert fourier.band(constant, 1.0, 2.0).abs().max() < 1e-12 * 25
    x = torch.randn(4, 9, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 3
    high = torch.fft.ifft2(torch.fft.fft2(x) * (1 - fourier.gaussian_transfer(9, 7, 2.0, dtype=x.dtype))).real
    assert high.mean((-2, -1)).abs().max() < 1e-12
    assert high.abs().max() > 0.1  # not zero altogether
    steps = fourier.fourier_steps(vgg(), seeded_images(1, b=2, size=56))
    assert steps.high.mean((-2, -1)).abs().max() < 1e-12 * steps.high.abs().max()
    # the printed (spatial-window) reading does not remove the mean: the readings really differ
    assert fourier.band(constant, 1.0, 2.0, "spatial").abs().max() > 1.0


@pytest.mark.parametrize("highpass", fourier.HIGHPASS)
@pytest.mark.parametrize("shape", [(2, 3, 7, 7), (1, 2, 6, 9), (3, 8, 5)])
def test_band_equals_the_printed_formula_per_map(shape: tuple[int, ...], highpass: str) -> None:
    """``band`` (vectorised, any leading dims, σ scaled) equals eq. 3's term map by map; "spatial" is literal."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for scale in (1.0, 2.5):
        got = fourier.band(x, 0.7, 1.6, highpass, scale=scale).numpy()
        flat = x.reshape(-1, *shape[-2:]).numpy()
        ref = np.stack([ref_band(m, 0.7 * scale, 1.6 * scale, highpass) for m in flat]).reshape(shape)
        np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------- the noise filter


@pytest.mark.parametrize("v_sums", fourier.V_SUMS)
@pytest.mark.parametrize("kernel_scale", [1.0, 2.0])
def test_noise_filter_is_its_matrix_form(kernel_scale: float, v_sums: str) -> None:
    """Eq. 4 equals the double loop over i, j for rows and columns, a = 1 and 2."""
    s = torch.randn(3, 6, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    s[:, 0] *= 3  # rows and columns of S² then sum differently
    got = fourier.noise_filter(s, kernel_scale, v_sums).numpy()
    ref = np.stack([ref_noise_filter(m, kernel_scale, v_sums) for m in s.numpy()])
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
    other = "columns" if v_sums == "rows" else "rows"
    assert (fourier.noise_filter(s, kernel_scale, other) - torch.from_numpy(ref)).abs().max() > 1e-3


def test_non_square_maps_get_a_clear_error_and_work_without_the_noise_filter() -> None:
    """Eq. 4 needs square maps: noise_filter and explain say so (and how out); denoise=False runs."""
    with pytest.raises(ValueError, match=r"square maps.*\(7, 8\).*denoise=False"):
        fourier.noise_filter(torch.zeros(1, 7, 8, dtype=torch.float64))
    model = vgg()
    x = torch.rand(2, 3, 112, 128, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with pytest.raises(ValueError, match=r"square maps.*denoise=False"):
        dh.explain("fourier_dve", model, x)
    heat = dh.explain("fourier_dve", model, x, denoise=False)
    assert heat.shape == (2, 112, 128) and (heat.flatten(1).amax(1) == 1).all()


# ---------------------------------------------------------------- class independence and the contract


def test_maps_are_identical_for_every_target() -> None:
    """Nothing in eqs. 3–4 uses the class: every target (int or per image) gives the same tensor bit for bit."""
    model, x = vgg(), seeded_images(4, b=2, size=56)
    for params in ({}, {"targeted": True, "targeted_on": "image", "output": "signed"}):
        base = dh.explain("fourier_dve", model, x, **params)
        for target in [0, 3, 5, torch.tensor([5, 0]), [2, 1]]:
            assert torch.equal(dh.explain("fourier_dve", model, x, target, **params), base)


def test_targets_are_still_checked() -> None:
    """A class the model does not have, or a wrong number of targets, is an error though the class is unused."""
    model, x = alexnet(), seeded_images(5, b=2)
    with pytest.raises(ValueError, match="class index 6 out of range"):
        dh.explain("fourier_dve", model, x, 6, targeted=True, targeted_on="image")
    with pytest.raises(ValueError, match="out of range"):
        dh.explain("fourier_dve", model, x, torch.tensor([0, -1]), denoise=False)
    with pytest.raises(ValueError, match="3 entries for a batch of 2"):
        dh.explain("fourier_dve", model, x, [0, 1, 2])


@pytest.mark.parametrize("output", fourier.OUTPUTS)
def test_targeted_image_batch_equals_one_by_one(output: str) -> None:
    """Targeted DVE on the image, every output form: a batch is its images explained one at a time."""
    model, x = vgg(), seeded_images(6, b=3, size=56)
    params = {"targeted": True, "targeted_on": "image", "output": output, **SIGMAS}
    batch = dh.explain("fourier_dve", model, x, **params)
    single = torch.cat([dh.explain("fourier_dve", model, x[i : i + 1], **params) for i in range(3)])
    torch.testing.assert_close(batch, single, rtol=1e-9, atol=1e-9 * single.abs().max().item())


def test_non_default_calls_leave_no_trace() -> None:
    """Targeted DVE on the image, and a call that raises (non-square maps), restore the model's state."""
    model = small("vgg").train()
    model.features[0].weight.requires_grad_(False)
    before = snapshot(model)
    dh.explain("fourier_dve", model, seeded_images(7, b=2), targeted=True, targeted_on="image", highpass="spatial")
    x = torch.rand(1, 3, 112, 128, dtype=torch.float64)
    with pytest.raises(ValueError, match="square"):
        dh.explain("fourier_dve", model, x, targeted=True)
    after = snapshot(model)
    assert before[:4] == after[:4] and all(g is None for g in after[2])
    assert all(torch.equal(before[4][k], after[4][k]) for k in before[4])


# ---------------------------------------------------------------- bad parameters


def test_bad_parameters_are_named() -> None:
    """σ ≤ 0, unknown choices, a fully connected or unknown layer: each error says what is valid."""
    model, x = vgg(), seeded_images(8, b=1, size=56)
    for name in ("sigma_low", "sigma_high"):
        for bad in (0.0, -1.0):
            with pytest.raises(ValueError, match=f"'{name}' = {bad} is outside its range"):
                dh.explain("fourier_dve", model, x, **{name: bad})
    maps = torch.rand(1, 2, 5, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match="sigma_low must be a positive width"):
        fourier.band(maps, 0.0, 1.0)
    with pytest.raises(ValueError, match="sigma_high must be a positive width"):
        fourier.band(maps, 1.0, -2.0)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="positive"):
            fourier.gaussian_transfer(5, 5, bad)
        with pytest.raises(ValueError, match="positive"):
            fourier.centred_gaussian(5, 5, bad)
    choices = {
        "highpass": "'fourier', 'spatial'",
        "targeted_on": "'map', 'image'",
        "output": "'heatmap', 'masked', 'signed'",
        "v_sums": "'rows', 'columns'",
        "kernel_scale": "1, 2",
    }
    for name, valid in choices.items():
        with pytest.raises(ValueError, match=f"'{name}' got 'both'; valid: {valid}"):
            dh.explain("fourier_dve", model, x, **{name: "both"})
    with pytest.raises(ValueError, match="highpass must be one of 'fourier', 'spatial', got 'both'"):
        fourier.band(maps, 1.0, 1.0, "both")
    with pytest.raises(ValueError, match="v_sums must be one of 'rows', 'columns', got 'both'"):
        fourier.noise_filter(maps[0], v_sums="both")
    with pytest.raises(ValueError, match=r"needs a layer with spatial maps.*fc6 gives shape \(1, 256\)"):
        dh.explain("fourier_dve", model, x, layer="fc6")
    with pytest.raises(ValueError, match="unknown layer 'pool9'; valid names: conv1_1"):
        dh.explain("fourier_dve", model, x, layer="pool9")


# ---------------------------------------------------------------- the default layer


def test_default_layer_is_the_last_pool_with_maps_of_at_least_six() -> None:
    """pool4 for the small VGG at 112 (pool5 is 3×3), pool5 for AlexNet (6×6) and VGG-16 at 224 (7×7)."""
    small_vgg, small_alexnet = vgg(), alexnet()
    with torch.device("meta"):  # the layer stack only: no weights allocated
        vgg16 = dh.models.build("vgg16", 1000)
    cases = [(small_vgg, 112, "pool4"), (small_alexnet, 112, "pool5"), (vgg16, 224, "pool5"), (small_vgg, 224, "pool5")]
    cases += [(small_vgg, 97, "pool4"), (small_vgg, (112, 128), "pool4"), (small_vgg, (224, 90), "pool3")]
    cases += [(small_vgg, 56, "pool3")]
    for model, size, expected in cases:
        assert fourier.default_fourier_layer(model, size) == expected, (size, expected)
        h, w = (size, size) if isinstance(size, int) else size
        ref = next(model.parameters())
        x = torch.zeros(1, 3, h, w, dtype=ref.dtype, device=ref.device)
        index = dh.models.resolve_layer(model, expected)
        later = [
            i for i, s in enumerate(dh.engine.capture(model).nodes) if i > index and s.kind in ("maxpool", "avgpool")
        ]
        trace = dh.engine.record(model, x, upto=later[0] if later else index)
        assert min(trace.output(index).shape[-2:]) >= fourier.MIN_SIDE
        if later:  # and the next pool's maps are too small
            assert min(trace.output(later[0]).shape[-2:]) < fourier.MIN_SIDE


def tiny_sequential(pool: bool = True) -> nn.Sequential:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()]
    layers += [nn.MaxPool2d(2)] if pool else []
    layers += [nn.Conv2d(4, 8, 3, padding=1), nn.ReLU()]
    layers += [nn.MaxPool2d(2)] if pool else []
    layers += [nn.Flatten(), nn.Linear(8 * (2 if pool else 8) ** 2, 3)]
    return nn.Sequential(*layers).double().eval()


def test_default_layer_falls_back_to_the_first_pool() -> None:
    """When every pool is under 6×6 (4×4 and 2×2 here) the first pool is explained; a net with no pool before its
    classifier (as a ResNet) explains its last layer with a spatial map."""
    model, x = tiny_sequential(), seeded_images(9, b=2, size=8)
    assert fourier.default_fourier_layer(model, 8) == "pool1"
    torch.testing.assert_close(dh.explain("fourier_dve", model, x), dh.explain("fourier_dve", model, x, layer="pool1"))
    assert (dh.explain("fourier_dve", model, x) - dh.explain("fourier_dve", model, x, layer="pool2")).abs().max() > 0.01
    assert (
        fourier.default_fourier_layer(tiny_sequential(pool=False), 8) == "relu1_2"
    )  # one block of two convs: paper names


# ---------------------------------------------------------------- σ sweep, outputs, intermediates


def planted_masks(b: int, size: int = 56) -> torch.Tensor:
    """One rectangle per image, at a different place in each."""
    masks = torch.zeros(b, size, size, dtype=torch.bool)
    boxes = [(10, 30, 15, 45), (25, 50, 5, 25), (3, 20, 30, 55), (15, 40, 15, 40)]
    for i in range(b):
        y0, y1, x0, x1 = boxes[i % len(boxes)]
        masks[i, y0:y1, x0:x1] = True
    return masks


@pytest.mark.parametrize(
    "params", [{}, {"highpass": "spatial", "targeted": True, "v_sums": "columns"}], ids=["default", "other"]
)
def test_sigma_sweep_equals_explain_at_every_grid_point(params: dict[str, Any]) -> None:
    """Every (σ₁, σ₂) cell is the mean IoU of dh.explain at those σ, over batches of unequal size."""
    model, x, masks = vgg(), seeded_images(15, b=3, size=56), planted_masks(3)
    lows, highs = [0.5, 2.0], [1.0, 4.0]
    sweep = fourier.sigma_sweep(model, x, masks, lows, highs, batch_size=2, **params)
    assert sweep.shape == (2, 2)
    for a, lo in enumerate(lows):
        for b, hi in enumerate(highs):
            heat = dh.explain("fourier_dve", model, x, sigma_low=lo, sigma_high=hi, **params)
            assert sweep[a, b].item() == pytest.approx(dh.evaluate.mean_iou(heat, masks), abs=1e-4), (lo, hi)
    assert sweep.max() - sweep.min() > 0.01  # the grid does matter


def test_sigma_sweep_rejects_non_positive_sigmas() -> None:
    """Every σ of the grid must be positive."""
    model, x, masks = vgg(), seeded_images(15, b=1, size=56), planted_masks(1)
    with pytest.raises(ValueError, match="every σ of the sweep must be a positive width"):
        fourier.sigma_sweep(model, x, masks, [1.0, 0.0], [1.0])
    with pytest.raises(ValueError, match="every σ of the sweep must be a positive width"):
        fourier.sigma_sweep(model, x, masks, [1.0], [-2.0])


def test_masked_output_is_the_images_times_the_heatmap() -> None:
    """output="masked" is the paper's "DVE" panel: images × heatmap, for plain and targeted DVE."""
    model, x = alexnet(), seeded_images(16, b=2)
    for params in ({}, {"targeted": True, "targeted_on": "image"}):
        heat = dh.explain("fourier_dve", model, x, **params)
        masked = dh.explain("fourier_dve", model, x, output="masked", **params)
        torch.testing.assert_close(masked, x * heat[:, None], rtol=1e-12, atol=1e-12)
        assert masked.shape == x.shape and (masked - x).abs().max() > 0.1


def test_steps_are_the_intermediates_of_the_method() -> None:
    """fourier_steps: the layer's maps, G₁ and 1 − G₂ centred, low/high per map, Σ, the noise filter, the map."""
    model, x = vgg(), seeded_images(17, b=2)
    steps = fourier.fourier_steps(model, x)
    assert steps.layer == "pool4"
    maps = layer_maps(model, x, "pool4")
    np.testing.assert_array_equal(steps.maps.numpy(), maps)
    h, w = maps.shape[-2:]
    for n in range(2):  # low and high against the reference, map by map
        for i in (0, 5, 100):
            spectrum = np.fft.fft2(maps[n, i])
            low = np.fft.ifft2(spectrum * ref_transfer(h, w, fourier.SIGMA_LOW)).real
            high = np.fft.ifft2(spectrum * (1 - ref_transfer(h, w, fourier.SIGMA_HIGH))).real
            np.testing.assert_allclose(steps.low[n, i].numpy(), low, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(steps.high[n, i].numpy(), high, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(steps.product, steps.low * steps.high)
    torch.testing.assert_close(steps.summed, steps.product.sum(1))
    torch.testing.assert_close(steps.S, fourier.noise_filter(steps.summed))
    heat = dh.maps.normalize(dh.maps.upsample(steps.S, x.shape[-2:]))
    torch.testing.assert_close(heat, dh.explain("fourier_dve", model, x), rtol=1e-9, atol=1e-9)
    assert int(steps.g_low.argmax()) == (h // 2) * w + w // 2 and steps.g_low[h // 2, w // 2] == 1
    assert int(steps.g_high.argmin()) == (h // 2) * w + w // 2 and steps.g_high[h // 2, w // 2] == 0
    centred = np.abs(np.fft.fftshift(np.fft.fft2(maps[1, 3])))
    np.testing.assert_allclose(steps.spectrum(1, 3).numpy(), centred, rtol=1e-9)
    assert steps.spectrum(1, 3)[h // 2, w // 2] == pytest.approx(abs(maps[1, 3].sum()))


def test_steps_pass_their_parameters_on() -> None:
    """σ, denoise, kernel_scale and v_sums reach the intermediates as they reach the method."""
    model, x = alexnet(), seeded_images(18, b=2)
    steps = fourier.fourier_steps(model, x, denoise=False, **SIGMAS)
    assert steps.layer == "pool5" and torch.equal(steps.S, steps.summed)
    signed = dh.explain("fourier_dve", model, x, denoise=False, output="signed", **SIGMAS)
    torch.testing.assert_close(dh.maps.upsample(steps.S, x.shape[-2:]), signed, rtol=1e-9, atol=1e-9)
    h, w = steps.maps.shape[-2:]
    np.testing.assert_allclose(steps.g_low.numpy(), ref_centred_gaussian(h, w, 0.8), rtol=1e-12)
    np.testing.assert_allclose(steps.g_high.numpy(), 1 - ref_centred_gaussian(h, w, 2.0), rtol=1e-12, atol=1e-15)
    denoised = fourier.fourier_steps(model, x, kernel_scale=2, v_sums="columns", **SIGMAS)
    torch.testing.assert_close(denoised.S, fourier.noise_filter(denoised.summed, 2, "columns"))
