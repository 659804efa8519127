"""A durable, append-only record of finished dialogues, so a killed collection resumes where it stopped.

Each finished dialogue (kept or quarantined) is one JSON line, flushed and fsync'ed before the next is
counted as done. A kill -9 can at worst leave one torn last line: it is cut off on the next open, and
that dialogue is simply asked again. An id already in the journal is never written twice.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}
        self.repaired_bytes = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._load()
        self._handle = path.open("a", encoding="utf-8")

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        good_end = 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # torn by a kill mid-write
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                break
            self.entries.setdefault(entry["record"]["id"], entry)
            good_end += len(line)
        if good_end < len(data):
            self.repaired_bytes = len(data) - good_end
            with self.path.open("r+b") as handle:
                handle.truncate(good_end)
                handle.flush()
                os.fsync(handle.fileno())

    def __contains__(self, dialogue_id: str) -> bool:
        return dialogue_id in self.entries

    def append(self, status: str, record: dict[str, Any]) -> None:
        """status is "ok" or "quarantine"."""
        if record["id"] in self.entries:
            raise ValueError(f"dialogue {record['id']} is already in {self.path}")
        entry = {"status": status, "record": record}
        self._handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.entries[record["id"]] = entry

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
