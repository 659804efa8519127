"""Content hashes of files, model folders and prompts: how an adapter names the base it was trained on and
how the registry finds a logged model again. Light on purpose (no torch): register starts fast."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from tasks.core.errors import SelfchatError


class BaseMismatch(SelfchatError):
    pass


def _feed(digest: Any, path: Path) -> None:
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    _feed(digest, path)
    return digest.hexdigest()


def folder_sha256(folder: Path) -> str:
    """Content hash of a model folder (every file, by relative path): which base an adapter was trained on."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        _feed(digest, path)
    return digest.hexdigest()


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
