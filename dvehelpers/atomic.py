"""Atomic writes: a file is written to a temporary name beside it and renamed into place, so that a reader (or a
later run) sees the old file or the new one, never half of one. Every file the package writes goes through here,
and so does the lock that keeps two processes from writing one folder at once (:func:`locked`)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock
    fcntl = None  # type: ignore[assignment]

__all__ = ["replacing", "write_bytes", "write_text", "save", "locked"]


@contextmanager
def replacing(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; on success it is renamed to ``path`` (atomically, also
    over an existing file), on an exception it is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with replacing(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes(path, text.encode())


def save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save(obj)`` to ``path`` atomically."""
    with replacing(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


@contextmanager
def locked(path: str | os.PathLike[str], waiting: Callable[[], None] | None = None) -> Iterator[Path]:
    """Hold an exclusive advisory lock on the file ``path`` (created if missing) for the ``with`` block; another
    process asking for it blocks until then (``waiting`` is called once if it has to wait). The operating system
    releases the lock when its holder dies, so a killed run never leaves a stale lock. POSIX ``flock``: it guards
    processes on one machine or a file system that honours it (not every network file system does)."""
    if fcntl is None:  # pragma: no cover - Windows
        raise OSError("dvehelpers' folder lock needs POSIX flock (Linux, macOS); run one evaluation per folder")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting is not None:
                waiting()
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield path
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
