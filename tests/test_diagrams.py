"""The schematic figures: the strided-convolution example against a written-out reference, and the flowchart's parts."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from dvehelpers import diagrams  # noqa: E402


def _transposed(signal: list[float], kernel: list[float], stride: int, padding: int) -> list[float]:
    """A transposed 1-D convolution by hand: sample o scatters signal[o]·kernel[t] onto o·stride + t − padding."""
    n = (len(signal) - 1) * stride + len(kernel) - 2 * padding
    out = [0.0] * n
    for o, v in enumerate(signal):
        for t, w in enumerate(kernel):
            i = o * stride + t - padding
            if 0 <= i < n:
                out[i] += v * w
    return out


@pytest.mark.parametrize(("n_in", "k", "stride", "padding"), [(23, 3, 2, 1), (20, 5, 2, 2), (31, 7, 2, 3)])
def test_the_fix_is_resize_then_stride_one_and_removes_the_alternation(
    n_in: int, k: int, stride: int, padding: int
) -> None:
    g = torch.Generator().manual_seed(n_in)
    n_out = (n_in + 2 * padding - k) // stride + 1
    signal, kernel = (
        torch.rand(n_out, generator=g, dtype=torch.float64),
        torch.rand(k, generator=g, dtype=torch.float64),
    )
    n_prime = n_in + 2 * padding - k + 1
    nearest = [float(signal[min(n_out - 1, (i * n_out) // n_prime)]) for i in range(n_prime)]  # nearest resize
    fixed = diagrams.strided_backward_1d(signal, kernel, stride, padding, n_in, fix=True)
    assert fixed.tolist() == pytest.approx(_transposed(nearest, kernel.tolist(), 1, padding)[:n_in])
    plain = diagrams.strided_backward_1d(signal, kernel, stride, padding, n_in, fix=False)
    expected = _transposed(signal.tolist(), kernel.tolist(), stride, padding)
    assert plain.tolist() == pytest.approx((expected + [0.0] * n_in)[:n_in])
    ones = diagrams.strided_backward_1d(torch.ones(n_out), torch.ones(k), stride, padding, n_in, fix=False)
    inner = ones[k:-k]
    m = len(inner) // 2
    assert bool((inner[0 : 2 * m : 2] != inner[1 : 2 * m : 2]).all())  # neighbours always differ: the checkerboard
    even = diagrams.strided_backward_1d(torch.ones(n_out), torch.ones(k), stride, padding, n_in, fix=True)[k:-k]
    assert bool((even == even[0]).all())


def test_flowchart_draws_every_box_arrow_and_label() -> None:
    rows = [["a", "b", "c"], ["d", "e"]]
    fig = diagrams.flowchart(rows, row_titles=["one", "two"], links=[((0, 2), (1, 0), "link")], title="t")
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts if t.get_text()]  # the arrows are annotations without text
    assert sorted(texts) == sorted(["a", "b", "c", "d", "e", "one", "two", "link"])
    assert len(ax.patches) == 5  # one box per entry
    arrows = [c for c in ax.get_children() if type(c).__name__ == "Annotation" and c.get_text() == ""]
    assert len(arrows) == (3 - 1) + (2 - 1) + 1
    assert ax.get_title() == "t"
    right = [a.xy[0] > a.xyann[0] for a in arrows[:2]]  # row 0 is read left to right
    plt.close(fig)
    fig = diagrams.flowchart(rows, leftward=[0])
    arrows = [c for c in fig.axes[0].get_children() if type(c).__name__ == "Annotation" and c.get_text() == ""]
    assert right == [True, True] and [a.xy[0] > a.xyann[0] for a in arrows[:2]] == [False, False]
    plt.close(fig)
