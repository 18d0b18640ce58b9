"""The evaluation on several processes (torchrun, gloo on the CPU), streamed, killed and resumed, and run twice at
once on one folder: the results must not depend on any of it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dvehelpers.data import An8Flower
from dvehelpers.evaluate import distributed

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc to find a torchrun rank to kill")

# A small but real job mix: a CAM-style method, a backward walk, two reference rows; one variant, both models.
# Batches of 4 over the 60 quick test images: 15 batches per model, so two ranks share many rounds.
ARGS = [
    "evaluate",
    "--quick",
    "--methods",
    "gradcam,guided_backprop",
    "--variants",
    "single-6c",
    "--archs",
    "alexnet,vgg",
    "--references",
    "constant,random",
    "--batch-size",
    "4",
    "--workers",
    "1",
]
ENTRIES, BATCHES = 8, 15  # 4 rows x 2 models; 60 images / 4
# Parts (units of work) per model: every row's scores on every batch, and each method's sanity checks on each batch
# that holds images of the sanity subset (one per class: images 0-5, batches 0 and 1).
PARTS = 2 * (4 * BATCHES + 2 * 2)


def _parts(stdout: str) -> int:
    return int(re.search(r"entries computed \((\d+) parts of them now\)", stdout)[1])  # type: ignore[index]


def _env() -> dict[str, str]:
    # One intra-op thread per process in every run: torchrun gives each of its ranks one, and oneDNN's reductions
    # may round differently with another thread count (README, "Several processes").
    return {**os.environ, "OMP_NUM_THREADS": "1", "DVE_QUICK": "1", "PYTHONUNBUFFERED": "1"}


def _cmd(out: Path, nproc: int = 1) -> list[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    return [*(launcher if nproc > 1 else [sys.executable]), "-m", "dvehelpers", *ARGS, "--out", str(out)]


def _run(out: Path, nproc: int = 1) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(_cmd(out, nproc), env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _files(out: Path) -> dict[str, bytes]:
    """Every result file but the wall times, by name."""
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file() and p.name not in ("timing.csv",)}


def _cache_state(out: Path) -> tuple[list[str], list[Path]]:
    cache = out / "cache"
    return sorted(p.name for p in cache.glob("*.pt")), sorted(cache.glob("*.parts")) + sorted(cache.rglob("*.tmp"))


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One process, uninterrupted: the run every other must equal."""
    An8Flower("single-6c", "test", size=112, progress=False, stream=True)  # render before timing anything
    out = tmp_path_factory.mktemp("one")
    done = _run(out).stdout
    assert f"{ENTRIES} of {ENTRIES} entries computed" in done and _parts(done) == PARTS
    return out


def test_two_gloo_processes_write_the_same_files_as_one(clean: Path, tmp_path: Path) -> None:
    done = _run(tmp_path, nproc=2)
    # both ranks took units of both models, dealt round-robin: 19 per model (4 sanity, 15 batches), 10 to rank 0
    shares = sorted(re.findall(r"rank (\d) of 2 \(cpu\): (\d+) units", done.stderr))
    assert shares == [("0", "10"), ("0", "10"), ("1", "9"), ("1", "9")], done.stderr[-2000:]
    assert (tmp_path / "evaluation.csv").read_bytes() == (clean / "evaluation.csv").read_bytes()
    assert _files(tmp_path) == _files(clean)  # the tables, per-class scores and figures, byte for byte
    assert _cache_state(tmp_path) == (_cache_state(clean)[0], [])  # the same finished entries, no parts left


def _rank_pid(launcher: int, rank: int) -> int | None:
    """The pid of torchrun's worker ``rank`` (a child of the launcher with that LOCAL_RANK)."""
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            ppid = int(next(line for line in status.read_text().splitlines() if line.startswith("PPid:")).split()[1])
            env = (status.parent / "environ").read_bytes().split(b"\0")
        except (OSError, StopIteration):
            continue
        if ppid == launcher and f"LOCAL_RANK={rank}".encode() in env:
            return int(status.parent.name)
    return None


def test_a_killed_rank_loses_only_its_batch_and_a_rerun_ends_equal(clean: Path, tmp_path: Path) -> None:
    job = subprocess.Popen(_cmd(tmp_path, nproc=2), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    parts = tmp_path / "cache"
    deadline = time.monotonic() + 300
    while len(list(parts.glob("*.parts/*.pt"))) < 6 and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    victim = _rank_pid(job.pid, 1)
    assert victim is not None and job.poll() is None, "the run ended before a rank could be killed"
    os.kill(victim, signal.SIGKILL)  # out of memory, or a node lost: no clean-up runs
    _, err = job.communicate(timeout=120)
    assert job.returncode != 0  # torchrun saw the rank die and stopped the other
    assert not (tmp_path / "evaluation.csv").exists()
    assert not list(parts.glob("*.pt"))  # killed before any entry was finished ...
    saved = len(list(parts.glob("*.parts/*.pt")))  # ... but these parts were kept
    assert saved >= 6
    rerun = _run(tmp_path)  # one process now: the cache does not care who computed what
    assert _parts(rerun.stdout) == PARTS - saved  # only what was lost (the units in flight) is computed again
    assert _files(tmp_path) == _files(clean)
    assert _cache_state(tmp_path) == (_cache_state(clean)[0], [])


def test_two_runs_at_once_on_one_folder_take_turns(clean: Path, tmp_path: Path) -> None:
    first, second = (
        subprocess.Popen(_cmd(tmp_path), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    )
    outs = [p.communicate(timeout=600) for p in (first, second)]
    assert first.returncode == second.returncode == 0, [e[-2000:] for _, e in outs]
    computed = sorted(_parts(o) for o, _ in outs)
    assert computed == [0, PARTS]  # one computed everything, the other waited for the lock and read it
    assert sum("waiting for it to finish" in e for _, e in outs) == 1
    assert _files(tmp_path) == _files(clean)
    assert _cache_state(tmp_path) == (_cache_state(clean)[0], [])
    assert not list(tmp_path.glob(".*.tmp"))


_PEAK = """
import resource, sys
from dvehelpers.__main__ import main
assert main(sys.argv[1:]) == 0
print("peak KiB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_memory_stays_flat_while_a_four_times_larger_set_is_streamed(tmp_path: Path) -> None:
    """Peak resident memory of the evaluation of the full-size test split (100 images per class) and of one four
    times larger (400 per class), both rendered into a fresh data cache and streamed from it."""

    def peak(per_class: int) -> int:
        args = ["evaluate", "--per-class", str(per_class), "--methods", "gradcam", "--variants", "single-6c"]
        args += ["--archs", "alexnet", "--references", "constant", "--no-cache", "--out", str(tmp_path / "out")]
        env = {**_env(), "DVE_DATA": str(tmp_path / "data")}
        done = subprocess.run([sys.executable, "-c", _PEAK, *args], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        return int(done.stdout.rsplit("peak KiB", 1)[1]) * 1024

    small, large = peak(100), peak(400)
    held = (400 - 100) * 6 * 3 * 112 * 112 * 4  # what holding the extra 1 800 images as float tensors would add
    assert large - small < held / 4, f"peak grew by {(large - small) / 2**20:.0f} MiB for {held / 2**20:.0f} MiB"


def test_without_torchrun_the_context_is_one_process_and_bad_variables_are_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ctx = distributed.context(None, torch.device("cpu"))
    assert (ctx.rank, ctx.world, ctx.distributed, ctx.owns_group) == (0, 1, False, False)
    assert distributed.gather("x", ctx) == ["x"] and distributed.broadcast({"a": 1}, ctx) == {"a": 1}
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two' in the environment must be an integer"):
        distributed.context(None, torch.device("cpu"))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="RANK=2 must be in 0..WORLD_SIZE-1=1"):
        distributed.context(None, torch.device("cpu"))
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match="each process takes cuda:LOCAL_RANK; pass --device cuda, not cuda:0"):
        distributed.context("cuda:0", torch.device("cpu"))
