"""Fourier-domain Deep Visual Explanation (Babiker & Goebel, "An Introduction to Deep Visual Explanation",
NIPS 2017), and its targeted variant (§3.1).

For every map ``x_i`` of the explained layer (eq. 3; ``F`` the 2-D DFT, eqs. 1–2):

    S = Σ_i  F⁻¹(F(x_i) · G₁) ⊙ F⁻¹(F(x_i) · (1 − G₂)),      G_σ(u, v) = exp(−D(u, v)² / 2σ²),

a low-spatial-scale activation times a high-spatial-scale one, ``D`` the distance to the zero frequency on
the centred frequency grid, σ in cycles per map, the real part after the inverse transform. The printed
high-pass factor, ``F⁻¹(F(x_i ⊙ (1 − G₂)))``, is a spatial window (``highpass="spatial"``). Then the noise
filter of eq. 4 (square maps only), the Student-t kernel of t-SNE applied to the rows of ``S``:

    v_i = Σ_n S_in²,   D_ij = v_i + v_j − a (S Sᵀ)_ij,   S ← S ⊙ (1 + D),

``a = 1`` as printed (``kernel_scale=2`` is t-SNE's true squared distance), ``v`` from the columns by
``v_sums="columns"`` (the paper's ``V = (1, …, 1) S²`` read literally). Targeted DVE applies the band product
once more to the result: ``S' = F⁻¹(F(S)·G₁) ⊙ F⁻¹(F(S)·(1 − G₂))``, on the map or on the image masked by it.
Nothing here uses the class: DVE explains what the layer holds, not why one class won.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..checks import check_images, check_targets, preserved
from ..engine import capture, head_chain, record, resolve
from ..engine.geometry import output_sizes
from ..evaluate.iou import per_image_iou
from ..maps import normalize, upsample
from ..models import num_classes
from ..registry import METHODS, Param, register
from .base import conv_maps

__all__ = [
    "HIGHPASS",
    "TARGETED_ON",
    "OUTPUTS",
    "V_SUMS",
    "MIN_SIDE",
    "SIGMA_LOW",
    "SIGMA_HIGH",
    "frequency_distance2",
    "gaussian_transfer",
    "centred_gaussian",
    "band",
    "noise_filter",
    "default_fourier_layer",
    "FourierSteps",
    "fourier_steps",
    "fourier_dve",
    "from_maps",
    "sigma_sweep",
]

HIGHPASS = ("fourier", "spatial")
TARGETED_ON = ("map", "image")
OUTPUTS = ("heatmap", "masked", "signed")
V_SUMS = ("rows", "columns")
#: The smallest map side the default layer may have: VGG-16's pool5 is 7×7 at 224², AlexNet's 6×6.
MIN_SIDE = 6
#: Our defaults (cycles per map; the paper gives no values): the best mean IoU over the four shipped models of a 9×9
#: sweep (σ from 0.25 to 4) on the an8Flower-synth validation splits. Any σ₂ ≤ 0.35 scores the same: 1 − G₂ then
#: removes the mean and little else. Notebook 02 shows the sweep on the test split.
SIGMA_LOW = 2.8
SIGMA_HIGH = 0.25


def frequency_distance2(h: int, w: int, *, device: Any = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """``D(u, v)²``, the squared distance to the zero frequency, in the DFT's own order (``fftfreq`` × n).

    This is the centred grid of the paper with ``fftshift`` undone, so filters multiply ``fft2`` output as is.
    """
    u = torch.fft.fftfreq(h, 1 / h, device=device, dtype=dtype)
    v = torch.fft.fftfreq(w, 1 / w, device=device, dtype=dtype)
    return u[:, None].square() + v[None, :].square()


def _check_sigma(name: str, sigma: float) -> None:
    if not sigma > 0:
        raise ValueError(f"{name} must be a positive width in cycles per map, got {sigma}")


def gaussian_transfer(
    h: int, w: int, sigma: float, *, device: Any = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """``G_σ(u, v) = exp(−D²/2σ²)`` on the h×w frequency grid (DFT order): 1 at zero frequency, symmetric."""
    _check_sigma("sigma", sigma)
    return torch.exp(frequency_distance2(h, w, device=device, dtype=dtype) / (-2 * sigma**2))


def centred_gaussian(h: int, w: int, sigma: float, *, device: Any = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """The same Gaussian laid out on the *centred* grid (``fftshift`` of :func:`gaussian_transfer`): as a
    spatial window it peaks at pixel (h//2, w//2). The printed eq. 3 multiplies ``x_i`` by ``1 −`` this."""
    return torch.fft.fftshift(gaussian_transfer(h, w, sigma, device=device, dtype=dtype), dim=(-2, -1))


def band(x: Tensor, sigma_low: float, sigma_high: float, highpass: str = "fourier", scale: float = 1.0) -> Tensor:
    """Eq. 3 for every map of ``x`` (…×h×w) at once, not summed: ``F⁻¹(F(x)·G₁) ⊙ F⁻¹(F(x)·(1 − G₂))``.

    ``highpass="spatial"`` takes the printed high-pass factor ``F⁻¹(F(x ⊙ (1 − G₂)))`` literally, round trip
    included. ``scale`` multiplies both σ (targeted DVE on the image keeps the layer's band in image pixels).
    """
    _check_sigma("sigma_low", sigma_low)
    _check_sigma("sigma_high", sigma_high)
    if highpass not in HIGHPASS:
        raise ValueError(f"highpass must be one of {', '.join(map(repr, HIGHPASS))}, got {highpass!r}")
    h, w = x.shape[-2:]
    grid = {"device": x.device, "dtype": x.dtype}
    g_low = gaussian_transfer(h, w, sigma_low * scale, **grid)
    spectrum = torch.fft.fft2(x)
    if highpass == "fourier":  # both filters in one inverse transform: …×2×h×w
        filters = torch.stack([g_low, 1 - gaussian_transfer(h, w, sigma_high * scale, **grid)])
        low, high = torch.fft.ifft2(spectrum.unsqueeze(-3) * filters).real.unbind(-3)
    else:
        low = torch.fft.ifft2(spectrum * g_low).real
        window = 1 - centred_gaussian(h, w, sigma_high * scale, **grid)
        high = torch.fft.ifft2(torch.fft.fft2(x * window)).real
    return low * high


def noise_filter(s: Tensor, kernel_scale: float = 1.0, v_sums: str = "rows") -> Tensor:
    """Eq. 4 on B×n×n maps: ``S ⊙ (1 + D)``, ``D_ij = v_i + v_j − a (S Sᵀ)_ij`` (``a`` = ``kernel_scale``).

    ``v`` holds the row sums of ``S²`` (t-SNE's code) or, with ``v_sums="columns"``, the column sums (the
    paper's ``(1, …, 1) S²``). ``S Sᵀ`` is n×n, so ``S ⊙ (1 + D)`` needs a square map.
    """
    if v_sums not in V_SUMS:
        raise ValueError(f"v_sums must be one of {', '.join(map(repr, V_SUMS))}, got {v_sums!r}")
    if s.shape[-1] != s.shape[-2]:
        raise ValueError(
            f"the noise filter (eq. 4) needs square maps, since S ⊙ (1 + D) pairs S (h×w) with D (h×h); got "
            f"{tuple(s.shape[-2:])}. Use denoise=False, or square images (a square input gives square maps)"
        )
    v = s.square().sum(-1 if v_sums == "rows" else -2)
    d = v[..., :, None] + v[..., None, :] - kernel_scale * (s @ s.transpose(-1, -2))
    return s * (1 + d)


def default_fourier_layer(model: nn.Module, size: int | tuple[int, int] = 224) -> str:
    """The last pooling layer before the classifier whose maps are at least :data:`MIN_SIDE` on a side.

    The paper explains VGG-16's pool5 (7×7 at 224²). Our small VGG's pool5 is 3×3 at 112², too small for a
    low and a high band, so there it is pool4 (7×7); AlexNet's pool5 is 6×6. A network that ends in global average
    pooling (ResNet, EfficientNet …) has no pool5: there it is the last layer with a spatial map (7×7 at 224²).
    """
    hw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    graph = capture(model)
    chain = head_chain(graph, hw)
    if not any(n.kind in ("maxpool", "avgpool") for n in chain):
        return chain[-1].name
    sizes = output_sizes(graph, hw)
    pools = [(n.name, sizes[n.index]) for n in graph.nodes if n.kind in ("maxpool", "avgpool") and sizes[n.index]]
    wide = [name for name, s in pools if min(s) >= MIN_SIDE]  # type: ignore[arg-type]
    return wide[-1] if wide else pools[0][0]


def _layer_maps(model: nn.Module, images: Tensor, target: Any, layer: str | int | None) -> tuple[str, Tensor]:
    """The explained layer's maps, from a forward pass that stops there; ``target`` is only checked."""
    images = check_images(model, images)
    graph = capture(model)
    index = resolve(graph, default_fourier_layer(model, images.shape[-2:]) if layer is None else layer)
    if target is not None:  # class-agnostic, but a wrong class is still an error
        check_targets(target, images.shape[0], num_classes(model), device=images.device)
    trace = record(graph, images, rules=(), keep=[index], upto=index)
    return graph.nodes[index].name, conv_maps(trace, index, "Fourier DVE")


@dataclass
class FourierSteps:
    """Every intermediate of eqs. 3–4 for a batch, for plots. ``maps``: B×C×h×w layer output; ``low``,
    ``high``, ``product``: per map; ``summed``: Σ over maps (S before the noise filter); ``S``: after it;
    ``g_low``, ``g_high``: the transfer functions G₁ and 1 − G₂ on the centred grid (zero frequency in the
    middle, as plotted); ``layer``: the explained layer's name."""

    layer: str
    maps: Tensor
    g_low: Tensor
    g_high: Tensor
    low: Tensor
    high: Tensor
    product: Tensor
    summed: Tensor
    S: Tensor

    def spectrum(self, i: int, channel: int) -> Tensor:
        """``|F(x)|`` of one map, centred (zero frequency in the middle)."""
        return torch.fft.fftshift(torch.fft.fft2(self.maps[i, channel]).abs())


def fourier_steps(
    model: nn.Module,
    images: Tensor,
    *,
    layer: str | int | None = None,
    sigma_low: float = SIGMA_LOW,
    sigma_high: float = SIGMA_HIGH,
    denoise: bool = True,
    kernel_scale: float = 1.0,
    v_sums: str = "rows",
) -> FourierSteps:
    """Eqs. 3–4 with every intermediate kept (Fourier high-pass), for the notebook's step-by-step figures."""
    name, x = _layer_maps(model, images, None, layer)
    h, w = x.shape[-2:]
    grid = {"device": x.device, "dtype": x.dtype}
    g_low = gaussian_transfer(h, w, sigma_low, **grid)
    g_high = 1 - gaussian_transfer(h, w, sigma_high, **grid)
    spectrum = torch.fft.fft2(x)
    low = torch.fft.ifft2(spectrum * g_low).real
    high = torch.fft.ifft2(spectrum * g_high).real
    product = low * high
    summed = product.sum(1)
    s = noise_filter(summed, kernel_scale, v_sums) if denoise else summed
    shift = torch.fft.fftshift
    return FourierSteps(name, x, shift(g_low), shift(g_high), low, high, product, summed, s)


@register(
    "fourier_dve",
    params=[
        Param(
            "layer",
            None,
            f"explained layer (None: the last pooling layer with maps ≥ {MIN_SIDE}×{MIN_SIDE})",
            kind="layer",
        ),
        Param(
            "sigma_low",
            SIGMA_LOW,
            "σ₁ of the low-pass G₁, cycles per map (ours, from a sweep)",
            range=(0.1, 20.0),
            log=True,
        ),
        Param(
            "sigma_high", SIGMA_HIGH, "σ₂ of the high-pass 1 − G₂, cycles per map (ours)", range=(0.1, 20.0), log=True
        ),
        Param(
            "highpass", "fourier", "'fourier': 1 − G₂ on the spectrum; 'spatial': eq. 3 as printed", "choice", HIGHPASS
        ),
        Param("denoise", True, "apply the noise filter of eq. 4 (square maps only)", "bool"),
        Param(
            "kernel_scale",
            1,
            "a in D = v_i + v_j − a·S Sᵀ: 1 as printed, 2 as in t-SNE",
            "choice",
            (1, 2),
            when={"denoise": (True,)},
        ),
        Param(
            "v_sums",
            "rows",
            "v of eq. 4 from the rows (t-SNE) or the columns (as printed) of S²",
            "choice",
            V_SUMS,
            when={"denoise": (True,)},
        ),
        Param("targeted", False, "targeted DVE (§3.1): the band product applied once more", "bool"),
        Param(
            "targeted_on",
            "map",
            "targeted DVE on the layer's map or on the image masked by it",
            "choice",
            TARGETED_ON,
            when={"targeted": (True,)},
        ),
        Param(
            "output",
            "heatmap",
            "'heatmap' (B×H×W in [0,1]), 'masked' (image × map, B×3×H×W) or 'signed' (before min-max)",
            "choice",
            OUTPUTS,
        ),
    ],
    paper="Babiker & Goebel 2017 (Fourier DVE)",
    class_specific=False,
)
def fourier_dve(
    model: nn.Module,
    images: Tensor,
    target: Any = None,
    *,
    layer: str | int | None = None,
    sigma_low: float = SIGMA_LOW,
    sigma_high: float = SIGMA_HIGH,
    highpass: str = "fourier",
    denoise: bool = True,
    kernel_scale: float = 1,
    v_sums: str = "rows",
    targeted: bool = False,
    targeted_on: str = "map",
    output: str = "heatmap",
) -> Tensor:
    """Fourier DVE: Σ_i F⁻¹(F(x_i)G₁) ⊙ F⁻¹(F(x_i)(1−G₂)) over the layer's maps (eq. 3), the noise filter (eq. 4).

    ``target`` is checked but not used: nothing in eqs. 3–4 depends on the class. ``output="signed"`` gives
    the signal before min-max: B×H×W upsampled, or B×3×H×W for targeted DVE on the image (its "targeted DVE"
    panels, to show centred on grey); ``"masked"`` the images times the heatmap (its "DVE" panels).
    """
    _, x = _layer_maps(model, images, target, layer)
    return from_maps(
        x,
        images,
        sigma_low=sigma_low,
        sigma_high=sigma_high,
        highpass=highpass,
        denoise=denoise,
        kernel_scale=kernel_scale,
        v_sums=v_sums,
        targeted=targeted,
        targeted_on=targeted_on,
        output=output,
    )


def from_maps(
    x: Tensor,
    images: Tensor,
    *,
    sigma_low: float = SIGMA_LOW,
    sigma_high: float = SIGMA_HIGH,
    highpass: str = "fourier",
    denoise: bool = True,
    kernel_scale: float = 1,
    v_sums: str = "rows",
    targeted: bool = False,
    targeted_on: str = "map",
    output: str = "heatmap",
) -> Tensor:
    """:func:`fourier_dve` from the explained layer's maps ``x`` (B×C×h×w) of ``images``: sweeps reuse them."""
    size = images.shape[-2:]
    s = band(x, sigma_low, sigma_high, highpass).sum(1)
    if denoise:
        s = noise_filter(s, kernel_scale, v_sums)
    signal = upsample(s, size)
    if targeted and targeted_on == "map":
        signal = upsample(band(s, sigma_low, sigma_high, highpass), size)
    elif targeted:  # the band, at the layer's scale in image pixels, on the image masked by the DVE map
        signal = band(images * normalize(signal)[:, None], sigma_low, sigma_high, highpass, scale=size[0] / s.shape[-2])
    if output == "signed":
        return signal
    heat = normalize(signal.sum(1) if signal.ndim == 4 else signal)
    return images * heat[:, None] if output == "masked" else heat


def sigma_sweep(
    model: nn.Module,
    images: Tensor,
    masks: Tensor,
    sigmas_low: Sequence[float],
    sigmas_high: Sequence[float],
    batch_size: int = 64,
    progress: bool = False,
    **params: Any,
) -> Tensor:
    """Mean IoU ×100 (over images and the evaluation's thresholds) of :func:`fourier_dve` at every
    (σ₁, σ₂) of the grid: a len(sigmas_low)×len(sigmas_high) tensor. The layer's maps are computed once per
    batch and reused for every pair; ``params`` are the method's other parameters (``output`` excepted)."""
    checked = METHODS["fourier_dve"].check({**params, "sigma_low": SIGMA_LOW, "sigma_high": SIGMA_HIGH})
    layer = checked.pop("layer")
    for name in ("sigma_low", "sigma_high", "output"):
        checked.pop(name)
    for s in [*sigmas_low, *sigmas_high]:
        _check_sigma("every σ of the sweep", s)
    dev = next(model.parameters()).device
    total = torch.zeros(len(sigmas_low), len(sigmas_high), dtype=torch.float64, device=dev)
    for i in tqdm(range(0, len(images), batch_size), desc="σ sweep", unit="batch", disable=not progress):
        batch = images[i : i + batch_size].to(dev)
        with preserved(model):
            _, x = _layer_maps(model, batch, None, layer)
        truth = masks[i : i + batch_size].to(dev)
        for a, lo in enumerate(sigmas_low):
            for b, hi in enumerate(sigmas_high):
                heat = from_maps(x, batch, sigma_low=lo, sigma_high=hi, **checked)
                total[a, b] += per_image_iou(heat, truth).mean(1).sum()
    return (total / len(images) * 100).to(images.dtype)
