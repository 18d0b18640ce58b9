"""The evaluation's cache: one checked file per finished entry, and per-batch parts while an entry is being built.

``<folder>/<key>.pt`` holds a finished entry; ``<folder>/<key>.parts/<name>.pt`` the results of one unit of work
(a batch's scores, or its sanity checks) of an unfinished one, appended as units finish (so a killed run loses at
most the units in flight).
Every file is a SHA-256 line of the payload, then the payload (``torch.save`` of plain tensors, numbers, strings,
lists and dicts, read back with ``weights_only=True``), written to a temporary name and renamed: a file whose
checksum, key or format does not match is treated as missing, never trusted. ``<folder>/.lock`` is held by the
run that writes the folder (:meth:`Cache.lock`), so two runs on one folder take turns instead of interleaving.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..atomic import locked, write_bytes

__all__ = ["Cache", "digest"]


def digest(*parts: Any) -> str:
    """SHA-256 of tensors (their bytes) and JSON-able values, in order: a cache key."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, Tensor):
            h.update(p.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            h.update(json.dumps(p, sort_keys=True, default=repr).encode())
    return h.hexdigest()


def _pack(key: str, payload: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save({"key": key, "payload": payload}, buf)
    body = buf.getvalue()
    return hashlib.sha256(body).hexdigest().encode() + b"\n" + body


def _unpack(raw: bytes, key: str) -> dict[str, Any] | None:
    head, _, body = raw.partition(b"\n")
    if head.decode(errors="replace") != hashlib.sha256(body).hexdigest():
        return None  # half-written or damaged
    try:
        entry = torch.load(io.BytesIO(body), weights_only=True)
    except Exception:  # noqa: BLE001 - any unreadable entry is recomputed, never trusted
        return None
    return entry["payload"] if isinstance(entry, dict) and entry.get("key") == key else None


class Cache:
    """Entries and their per-batch parts under ``folder`` (None: entries are not kept, parts live in memory for
    the duration of the run)."""

    def __init__(self, folder: str | Path | None) -> None:
        self.folder = None if folder is None else Path(folder)
        self._memory: dict[tuple[str, str], dict[str, Any]] = {}

    def _path(self, key: str) -> Path:
        assert self.folder is not None
        return self.folder / f"{key}.pt"

    def _part_path(self, key: str, name: str) -> Path:
        assert self.folder is not None
        return self.folder / f"{key}.parts" / f"{name}.pt"

    def get(self, key: str) -> dict[str, Any] | None:
        if self.folder is None or not self._path(key).is_file():
            return None
        return _unpack(self._path(key).read_bytes(), key)

    def put(self, key: str, payload: dict[str, Any]) -> None:
        if self.folder is not None:
            write_bytes(self._path(key), _pack(key, payload))

    def get_part(self, key: str, name: str) -> dict[str, Any] | None:
        """The stored part ``name`` (one unit of work, e.g. a batch's results) of entry ``key``, or None (missing,
        half-written, damaged)."""
        if self.folder is None:
            return self._memory.get((key, name))
        path = self._part_path(key, name)
        return _unpack(path.read_bytes(), f"{key}/{name}") if path.is_file() else None

    def put_part(self, key: str, name: str, payload: dict[str, Any]) -> None:
        if not name.isalnum():
            raise ValueError(f"a part name is letters and digits, got {name!r}")
        if self.folder is None:
            self._memory[(key, name)] = payload
        else:
            write_bytes(self._part_path(key, name), _pack(f"{key}/{name}", payload))

    def drop_parts(self, key: str) -> None:
        """Forget the parts of ``key`` (its entry has been written)."""
        if self.folder is None:
            for k in [k for k in self._memory if k[0] == key]:
                del self._memory[k]
        else:
            shutil.rmtree(self.folder / f"{key}.parts", ignore_errors=True)

    def lock(self, waiting: Callable[[], None] | None = None) -> Any:
        """A context manager holding ``<folder>/.lock`` (nothing without a folder); see
        :func:`dvehelpers.atomic.locked`."""
        return nullcontext() if self.folder is None else locked(self.folder / ".lock", waiting)
