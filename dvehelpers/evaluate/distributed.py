"""Running the evaluation on several processes with ``torch.distributed``, as launched by ``torchrun``.

``torchrun --nproc-per-node N -m dvehelpers evaluate …`` starts N processes with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and the rendezvous address in their environment; :func:`context` reads them, joins the process
group (NCCL when the processes have GPUs, gloo on CPUs) and gives each process its device (``cuda:LOCAL_RANK``).
Without those variables it is a one-process context and every collective below is the identity, so a plain
``python -m dvehelpers evaluate`` needs no ``torch.distributed`` at all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["Context", "context", "broadcast", "gather", "barrier", "close"]

#: How long a collective waits for the slowest process: a round is one batch of every missing job per process,
#: and rank 0 may first wait for another run's lock on the cache.
TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True)
class Context:
    """Where this process stands: ``rank`` of ``world`` processes (``local_rank`` on its machine), its ``device``,
    and whether it joined (and so must leave) the process group."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    owns_group: bool = False
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def leader(self) -> bool:
        return self.rank == 0


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} in the environment must be an integer (torchrun sets it)") from None


def context(device: str | torch.device | None, default: torch.device) -> Context:
    """This process's :class:`Context`. ``device``: as asked (``"cuda"`` becomes ``cuda:LOCAL_RANK`` under
    torchrun), else ``default`` (likewise). Joins the process group when ``WORLD_SIZE`` > 1 and it is not joined
    yet (gloo for CPU devices, NCCL for CUDA ones)."""
    world = _env_int("WORLD_SIZE") or 1
    rank, local = _env_int("RANK") or 0, _env_int("LOCAL_RANK") or 0
    dev = torch.device(device) if device is not None else default
    if world > 1 and dev.type == "cuda" and dev.index is not None and device is not None:
        raise ValueError(f"under torchrun each process takes cuda:LOCAL_RANK; pass --device cuda, not {dev}")
    if dev.type == "cuda":
        dev = torch.device("cuda", local % max(torch.cuda.device_count(), 1)) if world > 1 or dev.index is None else dev
    if world == 1:
        return Context(0, 1, dev, False, 0)
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} must be in 0..WORLD_SIZE-1={world - 1}")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)  # the object collectives and the barrier use the current device
    owns = not dist.is_initialized()
    if owns:
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=TIMEOUT)
    return Context(dist.get_rank(), dist.get_world_size(), dev, owns, local)


def broadcast(obj: Any, ctx: Context) -> Any:
    """Rank 0's ``obj`` on every rank (pickled)."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=ctx.device if ctx.device.type == "cuda" else None)
    return box[0]


def gather(obj: Any, ctx: Context) -> list[Any] | None:
    """Every rank's ``obj``, in rank order, on rank 0 (None on the others)."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] | None = [None] * ctx.world if ctx.leader else None
    dist.gather_object(obj, out, dst=0)
    return out


def barrier(ctx: Context) -> None:
    if ctx.distributed:
        dist.barrier(device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)


def close(ctx: Context) -> None:
    """Leave the process group if :func:`context` joined it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()
