"""an8Flower-synth: a procedural 3-D plant ray-cast in torch, so every pixel knows which part it shows.

The plant is a set of ellipsoids — pot, stem, leaves, flower centre, petals — each an affine image of the unit
sphere, ``{x : |diag(1/r) Rᵀ (x − c)| = 1}``. A ray ``o + t·d`` meets one where the quadratic
``|o' + t d'|² = 1`` (``o' = diag(1/r) Rᵀ (o − c)``, ``d' = diag(1/r) Rᵀ d``) has a positive root; the nearest
root over all ellipsoids is the visible surface and its part, and ``R (p'/r)`` is its normal (the gradient of
the implicit function). Shading is Lambertian with an ambient term. Images are anti-aliased by 2×2
supersampling; the part map takes the majority part of each pixel's four samples and the mask is exactly
the part map's coloured parts.

Everything that is not the class — angle about the vertical axis, elevation, scale, shift, light direction,
background, petal count and shape, leaf placement, pot — is drawn by :func:`sample_scenes` from a seed,
independently of the class, so two classes rendered from one scene differ only in the coloured part.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "VARIANTS",
    "PARTS",
    "COLOURS",
    "class_names",
    "coloured_parts",
    "Scenes",
    "sample_scenes",
    "render_scenes",
    "render",
    "render_classes",
    "rotation_sweep",
    "class_difference",
]

VARIANTS = {"single-6c": 6, "double-12c": 12}
#: Part ids in the part map (0 is the background).
PARTS = ("background", "pot", "stem", "leaves", "centre", "petals")
_POT, _STEM, _LEAF, _CENTRE, _PETAL = 1, 2, 3, 4, 5

#: Class colours, well apart in hue from each other and from the neutral parts (green stem, white petals).
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.10, 0.10),
    "orange": (0.98, 0.52, 0.06),
    "yellow": (0.95, 0.88, 0.12),
    "cyan": (0.08, 0.80, 0.85),
    "blue": (0.14, 0.26, 0.92),
    "magenta": (0.82, 0.12, 0.78),
}
_GREEN = (0.24, 0.52, 0.18)  # stem and leaves when they are not the coloured part
_WHITE = (0.88, 0.88, 0.84)  # petals when the stem carries the colour
_BROWN = (0.42, 0.28, 0.12)  # flower centre
_GREY = (0.46, 0.46, 0.52)  # pot

MAX_PETALS = 8
_N_PRIMS = 1 + 1 + 3 + 1 + MAX_PETALS  # pot, stem, 3 leaves, centre, petals


def class_names(variant: str) -> list[str]:
    """Class names in index order: ``single-6c`` by colour; ``double-12c`` index = part × 6 + colour."""
    _check_variant(variant)
    colours = list(COLOURS)
    if variant == "single-6c":
        return colours
    return [f"petals-{c}" for c in colours] + [f"stem-{c}" for c in colours]


def coloured_parts(variant: str, label: int) -> tuple[int, ...]:
    """The part ids that carry the class colour (the ground-truth mask) for a class of a variant."""
    _check_variant(variant)
    return (_STEM, _LEAF) if variant == "double-12c" and label >= 6 else (_PETAL,)


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")


@dataclass
class Scenes:
    """Nuisance parameters of ``n`` scenes (all tensors have a leading dimension n)."""

    angle: Tensor  # rotation about the vertical axis, degrees in [0, 360)
    elevation: Tensor  # camera elevation, degrees
    scale: Tensor
    shift: Tensor  # n×2, image-plane shift in scene units
    light: Tensor  # n×3 unit vector
    background: Tensor  # n, 0 plain, 1 gradient, 2 noise
    bg_colours: Tensor  # n×2×3
    bg_noise: Tensor  # n×3×8×8 low-frequency noise
    n_petals: Tensor  # n, 5..8
    petal_length: Tensor
    petal_width: Tensor
    petal_phase: Tensor  # radians
    head_tilt: Tensor  # radians: how far the flower head leans towards the camera side
    leaf_azimuth: Tensor  # radians
    leaf_heights: Tensor  # n×3
    n_leaves: Tensor  # 2 or 3
    has_pot: Tensor  # bool
    colour_jitter: Tensor  # n×3 multiplicative jitter of all colours, ±4 %

    def __len__(self) -> int:
        return self.angle.shape[0]

    def index(self, idx: Tensor | slice) -> Scenes:
        return Scenes(**{k: v[idx] for k, v in vars(self).items()})

    def to(self, device: torch.device | str) -> Scenes:
        return Scenes(**{k: v.to(device) for k, v in vars(self).items()})


def sample_scenes(n: int, seed: int) -> Scenes:
    """Draw ``n`` scenes' nuisance parameters from ``seed`` (CPU generator: identical on every device)."""
    g = torch.Generator().manual_seed(seed)

    def u(lo: float, hi: float, *shape: int) -> Tensor:
        return lo + (hi - lo) * torch.rand(n, *shape, generator=g)

    light = torch.stack([u(-0.8, 0.8), u(0.2, 1.0), u(0.3, 1.0)], 1)
    grey = u(0.25, 0.8, 2, 1)  # low-saturation backgrounds: a grey with a slight tint
    return Scenes(
        angle=u(0, 360),
        elevation=u(-5, 20),
        scale=u(0.85, 1.05),
        shift=u(-0.12, 0.12, 2),
        light=light / light.norm(dim=1, keepdim=True),
        background=torch.randint(0, 3, (n,), generator=g),
        bg_colours=(grey + u(-0.06, 0.06, 2, 3)).clamp(0, 1),
        bg_noise=torch.rand(n, 3, 8, 8, generator=g),
        n_petals=torch.randint(5, MAX_PETALS + 1, (n,), generator=g),
        petal_length=u(0.24, 0.34),
        petal_width=u(0.08, 0.13),
        petal_phase=u(0, 2 * math.pi),
        head_tilt=u(0.25, 0.6),
        leaf_azimuth=u(0, 2 * math.pi),
        leaf_heights=u(-0.5, 0.15, 3),
        n_leaves=torch.randint(2, 4, (n,), generator=g),
        has_pot=torch.rand(n, generator=g) < 0.5,
        colour_jitter=u(0.96, 1.04, 3),
    )


# ---------------------------------------------------------------- geometry


def _rot_y(a: Tensor) -> Tensor:
    c, s, z, o = a.cos(), a.sin(), torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([torch.stack([c, z, s], -1), torch.stack([z, o, z], -1), torch.stack([-s, z, c], -1)], -2)


def _rot_z(a: Tensor) -> Tensor:
    c, s, z, o = a.cos(), a.sin(), torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([torch.stack([c, -s, z], -1), torch.stack([s, c, z], -1), torch.stack([z, z, o], -1)], -2)


def _rot_x(a: Tensor) -> Tensor:
    c, s, z, o = a.cos(), a.sin(), torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([torch.stack([o, z, z], -1), torch.stack([z, c, -s], -1), torch.stack([z, s, c], -1)], -2)


def _plant(sc: Scenes) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Ellipsoids of every scene: centres n×M×3, rotations n×M×3×3, radii n×M×3, parts M, present n×M."""
    n = len(sc)
    eye = torch.eye(3).expand(n, 3, 3)
    zero = torch.zeros(n)
    centres, rots, radii, parts, present = [], [], [], [], []

    def add(c: Tensor, r: Tensor, rad: Tensor, part: int, on: Tensor) -> None:
        centres.append(c)
        rots.append(r)
        radii.append(rad)
        parts.append(part)
        present.append(on)

    ones = torch.ones(n, dtype=torch.bool)
    add(
        torch.tensor([0.0, -0.78, 0.0]).expand(n, 3),
        eye,
        torch.tensor([0.36, 0.2, 0.36]).expand(n, 3),
        _POT,
        sc.has_pot,
    )
    add(torch.tensor([0.0, -0.12, 0.0]).expand(n, 3), eye, torch.tensor([0.045, 0.68, 0.045]).expand(n, 3), _STEM, ones)
    for k in range(3):  # leaves: long axis x, leaning 35° upwards, around the stem
        az = sc.leaf_azimuth + k * 2 * math.pi / sc.n_leaves.float()
        r = _rot_y(az) @ _rot_z(torch.full((n,), 0.6))
        c = torch.stack([zero, sc.leaf_heights[:, k], zero], 1) + r @ torch.tensor([0.3, 0.0, 0.0])
        add(c, r, torch.tensor([0.3, 0.1, 0.025]).expand(n, 3), _LEAF, sc.n_leaves > k)
    head_c = torch.tensor([0.0, 0.6, 0.0]).expand(n, 3)
    head_r = _rot_x(sc.head_tilt)  # the flower's face leans towards +z, then turns with the plant
    add(head_c, head_r, torch.tensor([0.1, 0.06, 0.1]).expand(n, 3), _CENTRE, ones)
    for k in range(MAX_PETALS):  # petals in the head's plane, slightly cupped
        az = sc.petal_phase + k * 2 * math.pi / sc.n_petals.float()
        r = head_r @ _rot_y(az) @ _rot_z(torch.full((n,), 0.18))
        c = head_c + (r @ torch.stack([sc.petal_length + 0.06, zero, zero], 1)[..., None])[..., 0]
        rad = torch.stack([sc.petal_length, sc.petal_width, torch.full((n,), 0.02)], 1)
        add(c, r, rad, _PETAL, sc.n_petals > k)
    centres_t = torch.stack(centres, 1)
    world = _rot_y(sc.angle * math.pi / 180)  # the turntable
    centres_t = torch.einsum("nij,nmj->nmi", world, centres_t)
    rots_t = torch.einsum("nij,nmjk->nmik", world, torch.stack(rots, 1))
    return centres_t, rots_t, torch.stack(radii, 1), torch.tensor(parts), torch.stack(present, 1)


def _camera(sc: Scenes) -> tuple[Tensor, Tensor]:
    """Camera origin n×3 and basis (forward, right, up) n×3×3 for every scene."""
    n = len(sc)
    elev = sc.elevation * math.pi / 180
    origin = torch.stack([torch.zeros(n), _DIST * elev.sin(), _DIST * elev.cos()], 1)
    forward = -origin / origin.norm(dim=1, keepdim=True)
    right = torch.tensor([1.0, 0.0, 0.0]).expand(n, 3)
    return origin, torch.stack([forward, right, torch.cross(right, forward, dim=1)], 1)


_DIST, _FOCAL = 4.6, 4.3  # the plant (height ~2) fills most of the frame


def _directions(sc: Scenes, basis: Tensor, u: Tensor, v: Tensor) -> Tensor:
    """Unit ray directions n×P×3 through image-plane points (u, v) ∈ [−1, 1]² (v up); scale zooms, shift moves."""
    u = u / sc.scale[:, None] - sc.shift[:, :1]
    v = v / sc.scale[:, None] - sc.shift[:, 1:]
    d = basis[:, None, 0] * _FOCAL + basis[:, None, 1] * u[..., None] + basis[:, None, 2] * v[..., None]
    return d / d.norm(dim=-1, keepdim=True)


def _intersect(
    origin: Tensor, dirs: Tensor, centres: Tensor, rots: Tensor, radii: Tensor, present: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Nearest hit per ray: depth n×P (inf = miss), primitive index n×P, and ``Q = AᵀA`` per primitive.

    With ``A = diag(1/r) Rᵀ`` and ``e = o − c`` the hit condition ``|A(e + t d)|² = 1`` is the quadratic
    ``a t² + 2 b' t + c = 0`` with ``a = dᵀQd``, ``b' = dᵀQe``, ``c = eᵀQe − 1``: two batched matrix products
    over (rays × primitives), no per-pair 3-vectors. ``Q (x − c)`` is also the surface normal at ``x``.
    """
    inv = rots.transpose(-1, -2) / radii[..., None]  # n×M×3×3
    q = inv.transpose(-1, -2) @ inv  # n×M×3×3, symmetric
    e = origin[:, None] - centres  # n×M×3
    qe = (q @ e[..., None])[..., 0]  # n×M×3
    q6 = torch.stack([q[..., 0, 0], q[..., 1, 1], q[..., 2, 2], q[..., 0, 1], q[..., 0, 2], q[..., 1, 2]], 1)
    dx, dy, dz = dirs.unbind(-1)
    d6 = torch.stack([dx * dx, dy * dy, dz * dz, 2 * dx * dy, 2 * dx * dz, 2 * dy * dz], -1)  # n×P×6
    a = d6 @ q6  # n×P×M
    half_b = dirs @ qe.transpose(1, 2)  # n×P×M
    c = (e * qe).sum(-1)[:, None] - 1  # n×1×M
    disc = half_b * half_b - a * c
    valid = (disc > 0) & present[:, None]
    t = half_b.neg_().sub_(disc.clamp_(min=0).sqrt_()).div_(a)  # the nearer root, in place
    valid &= t > 0
    depth, prim = t.masked_fill_(~valid, math.inf).min(-1)
    return depth, prim, q


def _background(sc: Scenes, size: int) -> Tensor:
    n = len(sc)
    ramp = torch.linspace(0, 1, size).view(1, 1, size, 1)
    c0, c1 = sc.bg_colours[:, 0, :, None, None], sc.bg_colours[:, 1, :, None, None]
    plain = c0.expand(n, 3, size, size)
    gradient = c0 + (c1 - c0) * ramp
    noise = F.interpolate(sc.bg_noise, size=(size, size), mode="bicubic", align_corners=False)
    noisy = (c0 + 0.35 * (noise - 0.5) * (c1 - c0).abs().clamp(min=0.1)).clamp(0, 1)
    kind = sc.background.view(n, 1, 1, 1)
    return torch.where(kind == 0, plain, torch.where(kind == 1, gradient, noisy))


def _albedo(variant: str, labels: Tensor, parts: Tensor, jitter: Tensor) -> Tensor:
    """Colour per part (n×6×3): class colour on the coloured part, fixed neutral colours elsewhere."""
    n = labels.shape[0]
    table = torch.tensor([(0.0, 0.0, 0.0), _GREY, _GREEN, _GREEN, _BROWN, _WHITE]).expand(n, 6, 3).clone()
    colour = torch.tensor(list(COLOURS.values()))[labels % 6]
    on_stem = (labels >= 6) if variant == "double-12c" else torch.zeros(n, dtype=torch.bool)
    table[:, _PETAL] = torch.where(on_stem[:, None], table[:, _PETAL], colour)
    for part in (_STEM, _LEAF):
        table[:, part] = torch.where(on_stem[:, None], colour, table[:, part])
    return (table * jitter[:, None]).clamp(0, 1)


def render_scenes(
    sc: Scenes,
    labels: Tensor,
    variant: str,
    size: int = 112,
    supersample: int = 2,
    chunk: int = 8,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Render scenes with given class labels, on ``device`` (default: where the scenes are, the CPU).

    Returns images n×3×size×size in [0, 1], part maps n×size×size (the majority part of each pixel's
    samples, ids of :data:`PARTS`), masks n×size×size (bool: the part map's coloured parts) and coverage
    n×size×size (the fraction of each pixel's samples that show a coloured part; > 0 on anti-aliased borders).
    """
    _check_variant(variant)
    dev = torch.device(device) if device is not None else sc.angle.device
    labels = labels.long().to(dev)
    k = VARIANTS[variant]
    if ((labels < 0) | (labels >= k)).any():
        raise ValueError(f"labels must be in 0..{k - 1} for {variant}")
    sc = sc.to(dev)
    with torch.device(dev):  # every constant built while rendering lands on the render device
        table = torch.zeros(k, len(PARTS), dtype=torch.bool)  # class -> its coloured parts
        for lab in range(k):
            table[lab, list(coloured_parts(variant, lab))] = True
        coloured = table[labels]
        outs = [
            _render_chunk(
                sc.index(slice(i, i + chunk)),
                labels[i : i + chunk],
                coloured[i : i + chunk],
                variant,
                size,
                supersample,
            )
            for i in range(0, len(sc), chunk)
        ]
    images, parts, coverage = (torch.cat(x) for x in zip(*outs, strict=True))
    masks = coloured.gather(1, parts.flatten(1)).view_as(parts)
    return images, parts, masks, coverage


def _shade(
    sc: Scenes, geometry: tuple[Tensor, ...], albedo: Tensor, origin: Tensor, basis: Tensor, u: Tensor, v: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Cast rays through (u, v): Lambert colour n×P×3 (no background), hit n×P, part id n×P."""
    centres, rots, radii, part_of, present = geometry
    dirs = _directions(sc, basis, u, v)
    depth, prim, q = _intersect(origin, dirs, centres, rots, radii, present)
    hit = torch.isfinite(depth)
    part = torch.where(hit, part_of[prim], 0)
    # normal ∝ Q (x − c) at the hit point x, one gather of (Q, c); thin petals and leaves lit from both sides
    qc = torch.cat([q.flatten(2), centres], 2).gather(1, prim[..., None].expand(-1, -1, 12))
    x = origin[:, None] + depth.clamp(max=1e3)[..., None] * dirs
    normal = (qc[..., :9].view(*prim.shape, 3, 3) @ (x - qc[..., 9:])[..., None])[..., 0]
    lambert = (normal * sc.light[:, None]).sum(-1).abs() / normal.norm(dim=-1).clamp(min=1e-9)
    colour = albedo.gather(1, part[..., None].expand(-1, -1, 3)) * (0.35 + 0.65 * lambert[..., None])
    return colour, hit, part


def _render_chunk(
    sc: Scenes, labels: Tensor, coloured: Tensor, variant: str, size: int, ss: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Pixel centres first; then every pixel on a part boundary (its 3×3 neighbourhood shows more than one
    part) again with ss×ss samples, which replace its colour and its part votes (adaptive anti-aliasing)."""
    n, p = len(sc), size * size
    geometry = _plant(sc)
    albedo = _albedo(variant, labels, geometry[3], sc.colour_jitter)
    origin, basis = _camera(sc)
    centre = (torch.arange(size) + 0.5) / size * 2 - 1
    vv, uu = torch.meshgrid(-centre, centre, indexing="ij")
    u, v = uu.reshape(1, -1).expand(n, p), vv.reshape(1, -1).expand(n, p)
    bg = _background(sc, size).flatten(2).transpose(1, 2)  # n×P×3
    colour, hit, part = _shade(sc, geometry, albedo, origin, basis, u, v)
    image = torch.where(hit[..., None], colour, bg)
    votes = F.one_hot(part, len(PARTS)).float()  # n×P×parts
    grid = part.view(n, 1, size, size).float()
    edge = (F.max_pool2d(grid, 3, 1, 1) != -F.max_pool2d(-grid, 3, 1, 1)).flatten(1)
    n_edge = int(edge.sum(1).max())
    if ss > 1 and n_edge:
        # edge pixels first in every row; the padding (rows with fewer edges than the chunk's most) is rendered
        # but not kept, so a pixel's value never depends on which other scenes share its chunk
        idx = edge.float().argsort(dim=1, descending=True, stable=True)[:, :n_edge]
        real = edge.gather(1, idx)[..., None]
        offsets = ((torch.arange(ss) + 0.5) / ss - 0.5) * 2 / size
        ou, ov = (o.reshape(-1) for o in torch.meshgrid(offsets, -offsets, indexing="xy"))
        su = (u.gather(1, idx)[..., None] + ou).flatten(1)
        sv = (v.gather(1, idx)[..., None] + ov).flatten(1)
        c2, h2, p2 = _shade(sc, geometry, albedo, origin, basis, su, sv)
        bg2 = bg.gather(1, idx[..., None].expand(-1, -1, 3)).repeat_interleave(ss * ss, 1)
        c2 = torch.where(h2[..., None], c2, bg2).view(n, n_edge, ss * ss, 3).mean(2)
        v2 = F.one_hot(p2, len(PARTS)).float().view(n, n_edge, ss * ss, -1).mean(2)
        c2 = torch.where(real, c2, image.gather(1, idx[..., None].expand(-1, -1, 3)))
        v2 = torch.where(real, v2, votes.gather(1, idx[..., None].expand(-1, -1, len(PARTS))))
        image = image.scatter(1, idx[..., None].expand(-1, -1, 3), c2)
        votes = votes.scatter(1, idx[..., None].expand(-1, -1, len(PARTS)), v2)
    coverage = (votes * coloured[:, None]).sum(-1).view(n, size, size)
    parts = votes.argmax(-1).view(n, size, size)  # the majority part of each pixel's samples
    return image.transpose(1, 2).reshape(n, 3, size, size).clamp(0, 1), parts, coverage


def render(
    variant: str, n: int, size: int = 112, seed: int = 0, device: torch.device | str | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """``n`` images of ``variant`` with balanced labels (``i % K``): images n×3×size×size, labels n, masks n×H×W.

    Deterministic in ``seed``; touches no cache (``An8Flower`` stores what this returns).
    """
    _check_variant(variant)
    if n < 1 or size < 16:
        raise ValueError(f"need n >= 1 and size >= 16, got n={n}, size={size}")
    labels = torch.arange(n) % VARIANTS[variant]
    images, _, masks, _ = render_scenes(sample_scenes(n, seed), labels, variant, size, device=device)
    return images, labels.to(images.device), masks


def render_classes(variant: str, seed: int = 0, size: int = 112) -> tuple[Tensor, Tensor, Tensor]:
    """Every class of ``variant`` rendered from one and the same scene: images K×3×H×W, labels K, masks K×H×W."""
    _check_variant(variant)
    k = VARIANTS[variant]
    scene = sample_scenes(1, seed).index(torch.zeros(k, dtype=torch.long))
    labels = torch.arange(k)
    images, _, masks, _ = render_scenes(scene, labels, variant, size)
    return images, labels, masks


def rotation_sweep(
    variant: str, label: int, angles: Tensor | list[float], seed: int = 0, size: int = 112
) -> tuple[Tensor, Tensor]:
    """One scene of class ``label`` turned through ``angles`` (degrees): images A×3×H×W and masks A×H×W."""
    _check_variant(variant)
    angles = torch.as_tensor(angles, dtype=torch.float32)
    scene = sample_scenes(1, seed).index(torch.zeros(len(angles), dtype=torch.long))
    scene.angle = angles % 360
    images, _, masks, _ = render_scenes(scene, torch.full((len(angles),), label), variant, size)
    return images, masks


def class_difference(variant: str, a: int, b: int, seed: int = 0, size: int = 112) -> tuple[Tensor, Tensor, float]:
    """One scene rendered as class ``a`` and as class ``b``: the difference map ``max_RGB |x_a − x_b|`` (H×W),
    the pixels showing a coloured sample in either image, and the largest difference outside those pixels
    (0 when the class lives only in the coloured part)."""
    _check_variant(variant)
    scene = sample_scenes(1, seed).index(torch.zeros(2, dtype=torch.long))
    images, _, _, coverage = render_scenes(scene, torch.tensor([a, b]), variant, size)
    diff = (images[0] - images[1]).abs().amax(0)
    touched = (coverage > 0).any(0)
    return diff, touched, float(diff[~touched].max()) if (~touched).any() else 0.0
