"""Checksums of the files the package trusts: the shipped checkpoints, their interpretations and the installed
EfficientNet-Lite0 weights. A file whose SHA-256 differs from the one recorded for it is refused by name, with what
to do — a damaged file is never loaded in silence (``torch.load`` reads a checkpoint with flipped bytes inside
its weights without a word)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .atomic import write_text

__all__ = ["sha256", "verify", "recorded", "record"]


def sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: str | os.PathLike[str], expected: str, remedy: str) -> None:
    """Refuse ``path`` unless its SHA-256 is ``expected``: the error names the file, both checksums and ``remedy``."""
    got = sha256(path)
    if got != expected:
        raise ValueError(
            f"{Path(path).name} is damaged or not the file it should be: its SHA-256 is {got[:16]}…, the "
            f"checksum recorded for it is {expected[:16]}…. {remedy}"
        )


def recorded(metadata: str | os.PathLike[str], key: str = "sha256") -> str | None:
    """The checksum a metadata JSON file records under ``key`` (None when the file or the key is missing)."""
    path = Path(metadata)
    if not path.is_file():
        return None
    value: Any = json.loads(path.read_text()).get(key)
    return str(value) if value else None


def record(metadata: str | os.PathLike[str], key: str, file: str | os.PathLike[str]) -> str:
    """Write ``file``'s SHA-256 into the metadata JSON under ``key`` (atomically); returns the checksum."""
    path = Path(metadata)
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[key] = sha256(file)
    write_text(path, json.dumps(data, indent=1))
    return data[key]
