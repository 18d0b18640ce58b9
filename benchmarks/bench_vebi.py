"""Oramas et al.'s interpretation stage and explanation on the shipped an8Flower models.

* ``mu_lasso`` by homotopy (the default; all classes in lockstep) and by FISTA (all classes at once), float64,
  against SPAMS ``lasso`` mode 0 (LARS) solving the same constrained problems one class at a time, on the feature
  matrix of a shipped model's training split (μ = 5): the objectives must agree; medians of ``--repeats``
  interleaved rounds; and whether the shipped interpretation (fitted by FISTA) has the homotopy's relevant
  features.
* Fitting an interpretation: the features over the training split, then the solve (seconds).
* The ``vebi`` explanation (k = 3, batch 8, 112²) as a ratio to one forward+backward pass of the same model.

Run from the repository root: ``python benchmarks/bench_vebi.py [--device cuda] [--write]``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings

import numpy as np
import torch

import dvehelpers as dh
from dvehelpers.methods import vebi

try:  # run as a script from the repository root
    from bench_methods import machine, write_section
except ImportError:  # pragma: no cover
    from benchmarks.bench_methods import machine, write_section

SECTION = "## Relevant-filter interpretation (vebi)"
MODELS = ("an8flower-vgg-single-6c", "an8flower-alexnet-double-12c")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: object, device: torch.device) -> tuple[float, object]:
    _sync(device)
    t0 = time.perf_counter()
    out = fn()  # type: ignore[operator]
    _sync(device)
    return time.perf_counter() - t0, out


def spams_objective(x: np.ndarray, lab: np.ndarray, mu: float) -> tuple[float, np.ndarray]:
    import spams

    d = np.asfortranarray(x.T)
    t0 = time.perf_counter()
    cols = [
        spams.lasso(np.asfortranarray(lab[j : j + 1].T), D=d, lambda1=mu, mode=0, numThreads=1) for j in range(len(lab))
    ]
    seconds = time.perf_counter() - t0
    alpha = np.hstack([c.toarray() for c in cols])
    return seconds, ((d @ alpha - lab.T) ** 2).sum(0)


def lasso_rows(name: str, device: torch.device, repeats: int, mu: float) -> list[str]:
    model = dh.models.load(name).to(device)
    variant = model.meta["variant"]
    images, labels, _ = dh.data.An8Flower(variant, "train", per_class=250).tensors()
    t_feat, x = timed(lambda: vebi.features(model, images.to(device)), device)
    lab = torch.nn.functional.one_hot(labels.to(device), dh.models.num_classes(model)).T.to(x.dtype)
    times: dict[str, list[float]] = {"homotopy": [], "fista": [], "spams": []}
    res: dict[str, vebi.LassoResult] = {}
    for _ in range(repeats):  # interleaved rounds
        for solver in ("homotopy", "fista"):
            t, res[solver] = timed(lambda s=solver: vebi.mu_lasso(x.T, lab, mu, solver=s), device)
            times[solver].append(t)
        t_s, ref = spams_objective(x.T.double().cpu().numpy(), lab.double().cpu().numpy(), mu)
        times["spams"].append(t_s)
    med = {k: statistics.median(v) for k, v in times.items()}

    def rel(r: vebi.LassoResult) -> float:
        return float(np.max(np.abs(r.objective.double().cpu().numpy() - ref) / np.maximum(ref, 1e-12)))

    h, f = res["homotopy"], res["fista"]
    m, n, c = x.shape[1], x.shape[0], lab.shape[0]
    # the shipped interpretation was fitted on this split (data seed 0, 250 images per class) by FISTA
    shipped = vebi.Interpretation.load(vebi.shipped_path(name)).W.to(h.W)
    same = all(set(shipped[:, j].nonzero()[:, 0].tolist()) == set(h.W[:, j].nonzero()[:, 0].tolist()) for j in range(c))
    return [
        f"| {name}: μ-lasso by homotopy, {c} classes in lockstep (m={m}, N={n}, {min(h.breakpoints)}–"
        f"{max(h.breakpoints)} breakpoints per class, max gap/f {float((h.gap / h.objective).max()):.1e}) | "
        f"{med['homotopy']:.3f} | {med['homotopy'] / med['spams']:.2f} | {rel(h):.1e} |",
        f"| {name}: μ-lasso by FISTA, all {c} classes at once ({f.iterations} iterations, max gap/f "
        f"{float((f.gap / f.objective).max()):.1e}) | {med['fista']:.3f} | {med['fista'] / med['spams']:.1f} | "
        f"{rel(f):.1e} |",
        f"| {name}: SPAMS lasso mode 0, one class at a time | {med['spams']:.3f} | 1.00 | — |",
        f"| {name}: features of the {n} training images | {t_feat:.2f} | — | — |",
        f"| {name}: fit = features + μ-lasso (homotopy) | {t_feat + med['homotopy']:.2f} | — | — |",
        f"| {name}: shipped interpretation (FISTA) against the homotopy: same relevant features in every class: "
        f"{'yes' if same else 'NO'}; max abs weight difference {float((shipped - h.W).abs().max()):.1e} | — | — | — |",
    ]


def explain_rows(name: str, device: torch.device, repeats: int, batch: int) -> list[str]:
    model = dh.models.load(name).to(device)
    frozen = copy.deepcopy(model).requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, 112, 112, generator=g).to(device)
    targets = torch.arange(batch, device=device) % dh.models.num_classes(model)

    def fwd_bwd() -> object:
        xi = x.detach().requires_grad_(True)
        return torch.autograd.grad(frozen(xi).gather(1, targets[:, None]).sum(), xi)

    jobs = {
        "fwd+bwd": fwd_bwd,
        "vebi (k=3)": lambda: dh.explain("vebi", model, x, targets),
        "vebi (k=3, no strided fix)": lambda: dh.explain("vebi", model, x, targets, strided_fix=False),
        "guided_backprop": lambda: dh.explain("guided_backprop", model, x, targets),
    }
    times: dict[str, list[float]] = {k: [] for k in jobs}
    for fn in jobs.values():
        fn()
    for _ in range(repeats):
        for k, fn in jobs.items():
            times[k].append(timed(fn, device)[0])
    base = statistics.median(times["fwd+bwd"])
    return [
        f"| {name}: {k} | {statistics.median(t):.4f} | {statistics.median(t) / base:.2f} |" for k, t in times.items()
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=str(dh.device()))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--mu", type=float, default=5.0)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")  # k above a class's relevant features is said per call
    device = torch.device(args.device)
    lasso = [
        "| job | median s | × SPAMS (s / SPAMS s) | objective: max relative difference to SPAMS |",
        "|---|---|---|---|",
    ]
    expl = ["| job | median s / batch | × fwd+bwd |", "|---|---|---|"]
    for name in MODELS:
        lasso += lasso_rows(name, device, args.repeats, args.mu)
        expl += explain_rows(name, device, args.repeats, args.batch)
    title = f"{SECTION} ({device.type})"
    text = (
        f"{title}\n\nShipped models, μ = {args.mu:g}, {args.repeats} interleaved rounds, medians. Machine: "
        f"{machine(device)}. Date: {time.strftime('%Y-%m-%d')}.\n\n" + "\n".join(lasso) + "\n\n"
        f"Explanations, batch {args.batch}, 112², k = 3:\n\n" + "\n".join(expl) + "\n"
    )
    print(text)
    if args.write:
        write_section(title, text)


if __name__ == "__main__":
    main()
