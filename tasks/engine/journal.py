"""A durable, append-only record of collection, so a killed run resumes where it stopped.

Each finished dialogue is one JSON line, flushed and fsync'ed before it counts as done. Its status says
what a rerun does with it:
- "ok" and "quarantine" are final: never asked again;
- "retry_later": quarantined for a transient teacher failure (retries ran out on 429/5xx/timeouts): in
  this run's quarantine, asked again by the next run;
- "abandoned": cut off by the budget halfway: not an outcome, but the tokens it spent count.
A later line for the same id supersedes an earlier non-final one; the tokens of every line count toward
the corpus budget.

Nothing in the file is ever thrown away: a line that is not valid JSON (torn by a kill mid-write, or
damaged) is moved to `<journal>.corrupt.jsonl` with its byte offset, the valid lines after it are kept,
and the repair is reported. One process at a time: an exclusive lock is held while the journal is open.

Collection sharded across workers (tasks/collect/shards.py) writes one journal per shard. Each journal
also reads its siblings (the same generation settings, another shard layout) without writing or repairing
them, so a corpus collected as 2 shards resumes as 3, or as one, without asking anything twice.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from operator import attrgetter
from pathlib import Path
from typing import Any, TypeVar

from tasks.core.errors import SelfchatError

OK, QUARANTINE, RETRY_LATER, ABANDONED = "ok", "quarantine", "retry_later", "abandoned"
FINAL = (OK, QUARANTINE)


T = TypeVar("T")


class JournalBusy(SelfchatError):
    """Another collection holds this journal."""


class JournalView:
    """The entries of journals read as they are: a line that does not parse is skipped, not repaired
    (its owner repairs it when it next opens its journal)."""

    def __init__(self, paths: Iterable[Path] = ()) -> None:
        self.entries: dict[str, dict[str, Any]] = {}  # the latest entry of each id
        self.lines: list[dict[str, Any]] = []  # every entry, superseded ones included (their tokens count)
        for path in paths:
            for line in path.read_bytes().splitlines(keepends=True) if path.exists() else ():
                if (entry := _parse(line)) is not None:
                    self._remember(entry["record"]["id"], entry)

    def _remember(self, record_id: str, entry: dict[str, Any]) -> None:
        self.lines.append(entry)
        previous = self.entries.get(record_id)
        # a final entry stays; of two unfinished ones (from journals of different shard layouts) the later
        if previous is None or (previous["status"] not in FINAL and
                                (entry["status"] in FINAL or entry.get("at", "") >= previous.get("at", ""))):
            self.entries[record_id] = entry

    def transient_failures(self, dialogue_id: str) -> int:
        """How many earlier runs ended this dialogue with a transient teacher failure."""
        return sum(1 for entry in self.lines if entry["record"]["id"] == dialogue_id and entry["status"] == RETRY_LATER)

    def done(self, dialogue_id: str) -> bool:
        """Finished for good: kept or quarantined for a reason that a rerun would not change."""
        entry = self.entries.get(dialogue_id)
        return entry is not None and entry["status"] in FINAL

    def pending(self, plan: Iterable[T], key: Callable[[T], str] = attrgetter("id")) -> list[T]:
        """The items of `plan` (jobs, or records by `key`) this journal has not finished for good, in plan order."""
        return [item for item in plan if not self.done(key(item))]


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        if not line.endswith(b"\n"):
            raise ValueError("torn")
        entry = json.loads(line)
        if not isinstance(entry["record"]["id"], str):
            raise ValueError("no id")
        if entry["status"] not in (*FINAL, RETRY_LATER, ABANDONED):
            raise ValueError(f"unknown status {entry['status']!r}")
    except (ValueError, KeyError, TypeError):
        return None
    return entry


def sibling_journals(path: Path) -> list[Path]:
    """The other journals of the same generation settings: `journal-<digest>.jsonl` and its shards'
    `journal-<digest>.shard-<i>-of-<n>.jsonl`, in name order."""
    digest = re.escape(path.name.split(".")[0])
    return sorted(other for other in path.parent.glob("*.jsonl")
                  if other != path and re.fullmatch(rf"{digest}(\.shard-\d+-of-\d+)?\.jsonl", other.name))


class Journal(JournalView):
    def __init__(self, path: Path, read_siblings: bool = True) -> None:
        self.path = path
        self.corrupt_path = path.with_name(path.stem + ".corrupt.jsonl")
        self.repairs: list[str] = []  # one line per repair, for the log
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = self._acquire_lock()
        try:
            super().__init__(sibling_journals(path) if read_siblings else ())
            self._load()
            self._handle = path.open("a", encoding="utf-8")
        except BaseException:
            self._lock.close()
            raise

    def _acquire_lock(self) -> Any:
        lock_path = self.path.with_name(self.path.name + ".lock")
        handle = lock_path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise JournalBusy(f"{self.path} is in use by another collection (pid {holder}); wait for it to finish "
                              "or stop it, then run again") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        return handle

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        good: list[bytes] = []
        bad: list[tuple[int, bytes]] = []
        offset = 0
        for line in data.splitlines(keepends=True):
            if (entry := _parse(line)) is None:
                bad.append((offset, line))
            else:
                good.append(line)
                self._remember(entry["record"]["id"], entry)
            offset += len(line)
        if not bad:
            return
        with self.corrupt_path.open("a", encoding="utf-8") as aside:
            for where, line in bad:
                aside.write(json.dumps({"journal": self.path.name, "offset": where,
                                        "line": line.decode("utf-8", errors="replace")}) + "\n")
            aside.flush()
            os.fsync(aside.fileno())
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("wb") as handle:
            handle.write(b"".join(good))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        torn = 1 if bad[-1][0] + len(bad[-1][1]) == len(data) and not data.endswith(b"\n") else 0
        damaged = len(bad) - torn
        what = ", ".join(part for part in (f"{damaged} damaged line(s)" if damaged else "",
                                           "a torn last line" if torn else "") if part)
        self.repairs.append(f"journal {self.path}: moved {what} (byte offset {bad[0][0]}"
                            f"{'...' if len(bad) > 1 else ''}) to {self.corrupt_path}; kept {len(good)} valid entries")

    def append(self, status: str, record: dict[str, Any]) -> None:
        if self.done(record["id"]):
            raise ValueError(f"dialogue {record['id']} is already in {self.path}")
        # when it was written belongs to the journal (a log), not to the record (DVC-tracked data)
        entry = {"status": status, "record": record, "at": datetime.now(UTC).isoformat(timespec="seconds")}
        self._handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._remember(record["id"], entry)

    def close(self) -> None:
        self._handle.close()
        self._lock.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
